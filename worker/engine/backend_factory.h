// Picks a backend from a device string: "cpu", "cuda" (= cuda:0), "cuda:N".
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "worker/engine/backend.h"

namespace paged {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(std::string_view device, int cpu_threads = 0);

}  // namespace paged
