// The model forward pass of llama-family architectures (llama, mistral,
// qwen2: qwen2 differs only by q/k/v biases, which LayerWeights carries) over
// a batch mixing prefill chunks and decode tokens with paged KV. Written once
// in terms of Backend ops; weights and KV come from a WeightProvider.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/backend.h"
#include "worker/engine/types.h"
#include "worker/engine/weight_provider.h"

namespace paged {

class Engine {
 public:
  Engine(Backend* backend, WeightProvider* provider, const ModelConfig& config, int block_tokens);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs one step: writes the new tokens' KV rows, returns one sampled token
  // per sequence (at its last new position) and, where asked, its logits.
  // Bad input (token ids, positions, block tables, sampling) is
  // INVALID_ARGUMENT and nothing runs.
  absl::StatusOr<StepOutput> Step(const StepBatch& batch);

  // Allocates the scratch of the largest step up front (the memory plan's
  // workspace), so steps within these limits never allocate.
  absl::Status Reserve(int max_tokens, int max_seqs, int max_table_entries);

  const ModelConfig& config() const { return config_; }
  int block_tokens() const { return block_tokens_; }

 private:
  absl::Status Validate(const StepBatch& batch, uint64_t kv_blocks) const;
  absl::Status EnsureScratch(int n_tokens, int n_seqs, int n_table);
  absl::Status RunLayers(int n);
  void PlanChunks();

  Backend* backend_;
  WeightProvider* provider_;
  ModelConfig config_;
  int block_tokens_;
  RopeParams rope_;

  // Scratch in backend memory, grown on demand.
  struct Scratch {
    int cap_tokens = 0, cap_seqs = 0, cap_table = 0;
    float *x = nullptr, *h = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *attn = nullptr;
    float *o = nullptr, *gate = nullptr, *up = nullptr, *last = nullptr, *logits = nullptr;
    int32_t *ids = nullptr, *pos = nullptr, *slots = nullptr, *tables = nullptr,
            *last_rows = nullptr;
    int32_t *sample_pos = nullptr, *out_tokens = nullptr;
    AttnSeq* seqs = nullptr;
    SamplingParams* params = nullptr;
  } s_;
  std::vector<void*> owned_;
  // Host staging of the step's metadata.
  std::vector<int32_t> h_ids_, h_pos_, h_slots_, h_tables_, h_last_rows_, h_sample_pos_;
  std::vector<AttnSeq> h_seqs_;
  std::vector<SamplingParams> h_params_;
  // The step's rows in chunks; each chunk's attention descriptors (the parts
  // of sequences that fall in it, q_offset relative to the chunk) are
  // consecutive in h_chunk_seqs_.
  struct Chunk {
    int row0 = 0, rows = 0;
    int seq0 = 0, n_seqs = 0;
    int max_ctx = 0;
  };
  std::vector<Chunk> chunks_;
  std::vector<AttnSeq> h_chunk_seqs_;
};

RopeParams RopeParamsOf(const ModelConfig& c);

}  // namespace paged
