// `pagectl make-model`: writes an HF checkpoint of random weights in the
// shapes of a preset (client/pagectl/presets.h), for tests and benchmarks
// without downloading a model.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"

namespace paged {

struct MakeModelOptions {
  std::string preset;         // a name from AllPresets()
  std::string out_dir;        // created when missing
  int layers = 0;             // 0: the preset's number of layers
  uint64_t seed = 1;          // same seed, same bytes
  std::string dtype = "f16";  // "f16" or "bf16"
  // Mixtures of experts: how unevenly the random routers route, >= 0. Row e
  // of each layer's router is scaled by r^-S, r the expert's rank in a
  // random order of the layer's experts (a Zipf law of exponent S): the
  // experts with large rows win the top-k far more often, as trained
  // routers' favourite experts do. 0: every row alike (uniform routing,
  // the worst case for an expert cache).
  double router_skew = 0;
  // Above this many bytes of tensor data, the tensors go to HF-style shards
  // model-0000K-of-0000N.safetensors plus model.safetensors.index.json.
  uint64_t max_shard_bytes = 4ull << 30;
  // Called as tensor bytes are written (and once with done == total); may be empty.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// Writes out_dir/config.json and the weights (model.safetensors, or shards
// and their index). Values are deterministic in the seed and scaled so that a
// forward pass stays finite: matrices uniform in +-sqrt(3 / fan_in) (unit
// variance preserved), embeddings ~N(0, 0.02), norms 1 +- 0.05, biases
// +-0.02. Checkpoint files already in out_dir (config.json, model*.safetensors,
// the index) are replaced; config.json is written last, so an interrupted run
// leaves no directory that looks complete.
absl::Status MakeModel(const MakeModelOptions& opts);

}  // namespace paged
