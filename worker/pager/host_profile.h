// Measuring the host executor for the hybrid step's split
// (worker/pager/hybrid_plan.h): the weight GB per second it reads from one
// layer of the segment, in place, at a few batch sizes.
#pragma once

#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/host_executor.h"
#include "worker/engine/model_image.h"

namespace paged {

// Runs every matrix of layer `layer` of `image` through `host` at each n of
// `rows` (token rows), best of `repeats`, and returns (n, GB/s of weight
// bytes) in the order of `rows`. UNIMPLEMENTED when the executor cannot read
// the layer's dtype.
absl::StatusOr<std::vector<std::pair<int, double>>> MeasureHostExecutor(
    HostExecutor& host, const ModelImage& image, int layer, const std::vector<int>& rows,
    int repeats = 2);

}  // namespace paged
