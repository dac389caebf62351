// What one step of the model computes, as the coordinator's scheduler plans
// it and a worker's engine runs it: the sequences, their new tokens, KV
// block tables and sampling. Plain host data shared by daemon/ and worker/
// (the wire form is paged.v1.StepRequest; worker/link converts).
#pragma once

#include <cstdint>
#include <vector>

namespace paged {

// The largest step a worker plans its memory for when nothing says more:
// paged-worker's --max-step-tokens / --max-step-seqs at auto without a
// coordinator's caps (paged-bench and the tests plan their own). KV rows: a
// worker's KV area before it was sized from the context (--max-step-kv-tokens
// is auto now); the coordinator assumes it for a worker that announces none.
inline constexpr int kDefaultMaxStepTokens = 2048;
inline constexpr int kDefaultMaxStepSeqs = 64;
inline constexpr int kDefaultMaxStepKvTokens = 16384;

// Per-request sampling. temperature 0 = greedy (argmax, lowest id on ties).
struct SamplingParams {
  float temperature = 0.f;
  int top_k = 0;      // 0: off
  float top_p = 1.f;  // 1: off
  uint64_t seed = 0;
};

// What one sequence contributes to a step (host data).
struct SeqStep {
  int64_t seq_id = 0;
  std::vector<int32_t> tokens;       // new tokens: a prefill chunk or one decode token
  int32_t start_pos = 0;             // position of tokens[0] (the committed length)
  std::vector<int32_t> block_table;  // block ids for positions [0, start_pos + tokens.size())
  SamplingParams sampling;
  bool return_logits = false;  // copy the last position's logits back
};

struct StepBatch {
  std::vector<SeqStep> seqs;
  int total_tokens() const {
    int n = 0;
    for (const auto& s : seqs) n += int(s.tokens.size());
    return n;
  }
};

struct StepOutput {
  std::vector<int32_t> next_tokens;        // one per sequence, sampled at its last position
  std::vector<std::vector<float>> logits;  // per sequence; empty unless return_logits
};

}  // namespace paged
