#include "worker/engine/generator.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paged {

absl::StatusOr<GenerateResult> Generate(Engine& engine, const GenerateRequest& req,
                                        uint64_t kv_blocks,
                                        const std::function<void(int32_t)>& on_token) {
  const ModelConfig& c = engine.config();
  if (req.prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  if (req.max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens < 0");
  if (req.prefill_chunk < 1) return absl::InvalidArgumentError("prefill_chunk < 1");
  const int64_t total = int64_t(req.prompt.size()) + req.max_new_tokens;
  if (total > c.max_context)
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", req.prompt.size(), ") + max tokens (", req.max_new_tokens,
                     ") exceed the model's context of ", c.max_context));
  const int bt = engine.block_tokens();
  const uint64_t need = uint64_t((total + bt - 1) / bt);
  if (need > kv_blocks)
    return absl::ResourceExhaustedError(absl::StrCat(
        "the sequence needs ", need, " KV blocks, the pool has ", kv_blocks, " (raise --kv-gib)"));
  SeqStep seq;
  seq.seq_id = 0;
  seq.sampling = req.sampling;
  seq.block_table.resize(need);
  std::iota(seq.block_table.begin(), seq.block_table.end(), 0);

  GenerateResult result;
  result.finish_reason = "length";
  if (req.max_new_tokens == 0) return result;
  // Prefill: chunks of the prompt; the last chunk's sample is the first token.
  int32_t next = -1;
  auto run = [&](std::vector<int32_t> tokens, int32_t start, bool want_logits) -> absl::Status {
    seq.tokens = std::move(tokens);
    seq.start_pos = start;
    seq.return_logits = want_logits;
    StepBatch batch;
    batch.seqs.push_back(seq);
    ASSIGN_OR_RETURN(StepOutput out, engine.Step(batch));
    next = out.next_tokens[0];
    if (want_logits) result.chosen_logits.push_back(out.logits[0][size_t(next)]);
    return absl::OkStatus();
  };
  int32_t pos = 0;
  const int32_t prompt_len = int32_t(req.prompt.size());
  while (pos < prompt_len) {
    const int32_t end = std::min<int32_t>(prompt_len, pos + req.prefill_chunk);
    RETURN_IF_ERROR(run(std::vector<int32_t>(req.prompt.begin() + pos, req.prompt.begin() + end),
                        pos, req.record_logits && end == prompt_len));
    pos = end;
  }
  auto is_eos = [&](int32_t t) {
    for (int i = 0; i < c.n_eos; ++i) {
      if (c.eos_ids[i] == t) return true;
    }
    return false;
  };
  while (true) {
    result.tokens.push_back(next);
    if (on_token) on_token(next);
    if (req.stop_at_eos && is_eos(next)) {
      result.finish_reason = "eos";
      break;
    }
    if (int(result.tokens.size()) >= req.max_new_tokens) break;
    RETURN_IF_ERROR(run({next}, pos, req.record_logits));
    ++pos;
  }
  return result;
}

absl::StatusOr<std::vector<std::vector<float>>> TeacherForcedLogits(
    Engine& engine, const std::vector<int32_t>& tokens, uint64_t kv_blocks) {
  const int bt = engine.block_tokens();
  const uint64_t need = (tokens.size() + uint64_t(bt) - 1) / uint64_t(bt);
  if (need > kv_blocks)
    return absl::ResourceExhaustedError(
        absl::StrCat(tokens.size(), " tokens need ", need, " KV blocks, the pool has ", kv_blocks));
  SeqStep s;
  s.seq_id = 0;
  s.return_logits = true;
  s.block_table.resize(need);
  std::iota(s.block_table.begin(), s.block_table.end(), 0);
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    s.tokens = {tokens[i]};
    s.start_pos = int32_t(i);
    StepBatch batch;
    batch.seqs.push_back(s);
    ASSIGN_OR_RETURN(StepOutput r, engine.Step(batch));
    out.push_back(std::move(r.logits[0]));
  }
  return out;
}

}  // namespace paged
