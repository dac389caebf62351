// paged-run: load a model in this process (no store, no coordinator),
// generate, print. The logic behind worker/run/main.cc.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/engine/types.h"

namespace paged {

struct OfflineRunOptions {
  std::string model_path;
  std::string device = "cpu";
  std::string weight_format = "native";
  std::string prompt;                  // text (needs a tokenizer in the model)
  std::vector<int32_t> prompt_tokens;  // ids; used when non-empty
  int max_new_tokens = 64;
  SamplingParams sampling;
  bool print_tokens = false;  // ids instead of text
  bool add_bos = true;
  double kv_gib = 0;  // 0: enough for prompt + max_new_tokens
  int threads = 0;
};

// Generates and writes to `out` as tokens arrive; timing to `err`.
absl::Status RunOffline(const OfflineRunOptions& opts, std::FILE* out, std::FILE* err);

// "1,2,3" -> {1, 2, 3}; a clear error for anything else.
absl::StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text);

}  // namespace paged
