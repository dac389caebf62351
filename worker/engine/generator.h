// Generating one sequence with an Engine (paged-run, tests): prefill in
// chunks, then decode token by token until max_new_tokens or EOS. Blocks
// [0, n) of the KV pool hold the sequence.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/engine.h"

namespace paged {

struct GenerateRequest {
  std::vector<int32_t> prompt;  // non-empty (usually starts with BOS)
  int max_new_tokens = 16;
  SamplingParams sampling;
  bool stop_at_eos = true;
  int prefill_chunk = 256;     // prompt tokens per step
  bool record_logits = false;  // keep each step's logits of the chosen token
};

struct GenerateResult {
  std::vector<int32_t> tokens;       // generated (the EOS that stopped it included)
  std::vector<float> chosen_logits;  // with record_logits: logit of each chosen token
  std::string finish_reason;         // "length" or "eos"
};

// kv_blocks: the pool's blocks available to this sequence.
absl::StatusOr<GenerateResult> Generate(
    Engine& engine, const GenerateRequest& req, uint64_t kv_blocks,
    const std::function<void(int32_t token)>& on_token = nullptr);

// Teacher forcing: feeds `tokens` one decode step at a time and returns the
// logits after each (position i's logits predict tokens[i + 1]).
absl::StatusOr<std::vector<std::vector<float>>> TeacherForcedLogits(
    Engine& engine, const std::vector<int32_t>& tokens, uint64_t kv_blocks);

}  // namespace paged
