// The coordinator options of a tiny llama-shaped model, for tests that drive
// a Coordinator with fake workers (no segment, no tokenizer).
#pragma once

#include "daemon/coordinator.h"

namespace paged::testing {

inline constexpr int kFakeBlockTokens = 4;
inline constexpr int kFakeBlocks = 64;
inline constexpr int kFakeVocab = 64;
inline constexpr int kFakeEos = 2;

inline CoordinatorOptions FakeCoordinatorOptions(int max_queue = 16) {
  CoordinatorOptions o;
  o.segment = "fake-segment";
  o.model_name = "fake";
  o.weight_format = "f32";
  o.model.n_layers = 2;
  o.model.hidden = 8;
  o.model.ffn = 16;
  o.model.n_heads = 2;
  o.model.n_kv_heads = 2;
  o.model.head_dim = 4;
  o.model.vocab = kFakeVocab;
  o.model.max_context = 128;
  o.model.bos_id = 1;
  o.model.n_eos = 1;
  o.model.eos_ids[0] = kFakeEos;
  o.scheduler = SchedulerConfigForModel(o.model);
  o.scheduler.block_tokens = kFakeBlockTokens;
  o.scheduler.total_blocks = kFakeBlocks;
  o.scheduler.max_step_tokens = 64;
  o.scheduler.max_seqs_per_step = 8;
  o.scheduler.prefill_chunk = 8;
  o.scheduler.max_queue = max_queue;
  return o;
}

}  // namespace paged::testing
