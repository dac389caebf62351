// The model forward pass of every architecture we support (llama, mistral,
// qwen2/3, gemma2/3, phi3) over a batch mixing prefill chunks and decode
// tokens with paged KV. Written once in terms of Backend ops; what differs
// between architectures is data of the ModelConfig (q/k biases and norms,
// sandwich norms, the MLP activation, scales, soft-caps, sliding windows, the
// RoPE of each layer type; docs/models.md). Weights and KV come from a
// WeightProvider.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <random>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/backend.h"
#include "worker/engine/host_executor.h"
#include "worker/engine/moe_routing.h"
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

  // The host executor for the rows of a matrix that a hybrid step computes
  // on the host (LayerWeights::host); null: every row on the backend, and a
  // provider that hands out host rows is an error. Not owned.
  void set_host_executor(HostExecutor* host) { host_ = host; }

  // Benchmarks only (paged-bench --routing=uniform): each sparse layer
  // routes every row to k experts drawn uniformly at random (seeded), not
  // the router's choice: the worst case for an expert cache and for the
  // prefetch, whose prediction still comes from the next router. A model
  // with random weights routes most rows alike (its residual stream is
  // dominated by what every token shares), which flatters a cache. 0: off.
  void set_uniform_routing(uint64_t seed) {
    uniform_routing_ = seed != 0;
    routing_rng_.seed(seed);
  }

  // Where a hybrid step's host rows spend their time, summed over steps
  // (paged-bench prints it per decode step): waiting for a product's input
  // to come down (the device's ops before it included), the host executor's
  // products (host experts: with their GLU), and enqueueing their rows'
  // uploads. Sparse layers, in any step: enqueueing the attention block
  // before them, waiting for the router's logits (the device's ops before
  // them included), routing and placing the experts (the provider's part
  // included), enqueueing the device's experts and the combine.
  struct HostPathTimes {
    int64_t products = 0;  // dispatches of the host executor
    double wait_s = 0, compute_s = 0, upload_s = 0;
    double attention_s = 0, route_s = 0, acquire_s = 0, launch_s = 0;
  };
  const HostPathTimes& host_path_times() const { return host_times_; }

  // Step graphs (docs/engine.md): decode steps on a fixed provider
  // (WeightProvider::fixed) are recorded once per batch size and context
  // bucket on a backend that records graphs, then replayed with one launch.
  // The first failed recording turns them off (error says why).
  struct GraphStats {
    int64_t recorded = 0, replayed = 0;
    absl::Status error;
  };
  const GraphStats& graph_stats() const { return graph_stats_; }
  // Off: every step runs op by op (paged-bench --graphs=false).
  void set_graphs(bool on) { graphs_off_ = !on; }

  const ModelConfig& config() const { return config_; }
  int block_tokens() const { return block_tokens_; }

 private:
  absl::Status Validate(const StepBatch& batch, uint64_t kv_blocks) const;
  absl::Status EnsureScratch(int n_tokens, int n_seqs, int n_table);
  // The step's ops after its metadata is uploaded: the layers, the final
  // norm, lm_head and sampling; recorded and replayed where Graphable.
  absl::Status Forward(int n, int n_seqs);
  absl::Status Layers(int n, int n_seqs);
  bool Graphable(int n, int n_seqs) const;
  absl::Status RunLayers(int n);
  absl::Status CheckLayer(int l, const LayerWeights& w) const;
  // A sparse layer's MLP on the chunk's m rows: s_.h holds their normed
  // input; the experts' weighted outputs (and the shared expert's) are
  // added into x [m, hidden], the residual stream.
  absl::Status MoeBlock(int l, const LayerWeights& w, float* x, int m);
  // The experts [e0, e1) of a wave that the host executor computes (their
  // rows' normed input is in h_x_), in two dispatches; their output rows
  // uploaded to their places in s_.o.
  absl::Status HostExperts(int l, int e0, int e1);
  // The routed experts [e0, e1) of a sparse layer on the chunk's m rows,
  // their rows of the routing fitting the scratch: gathered once, the device's experts in one
  // Backend::ExpertFfn, the host's on the host meanwhile, then every row
  // added into x in expert order (Backend::CombineRows).
  absl::Status ExpertWave(int l, const LayerWeights& w, float* x, int m, int e0, int e1);
  void PlanChunks();

  // One matrix product of a group that shares its input: out[m, rows] =
  // x @ W^T (+ bias), the backend's rows from `dev`, the host's from `host`.
  struct Product {
    const WeightRef& dev;
    const float* bias;  // backend memory, [dev.rows], or null
    const HostRows& host;
    float* out;
    float* add_to = nullptr;  // or: the product is added here (MatMulJob::add_to)
  };
  // Runs products that share x [m, cols] (backend memory). With host rows,
  // x crosses to the host once; the backend computes its rows meanwhile and
  // each host share comes back into its columns of `out` (then added to
  // add_to, where given). With norm_w, the products are of RmsNorm(x) by
  // norm_w (Backend::NormMatMulMany: the backend may fold the norm in; s_.h
  // is its scratch).
  absl::Status Products(const float* x, int m, int cols, std::initializer_list<Product> products,
                        const float* norm_w = nullptr);

  Backend* backend_;
  WeightProvider* provider_;
  HostExecutor* host_ = nullptr;
  HostPathTimes host_times_;
  ModelConfig config_;
  int block_tokens_;
  RopeParams rope_[2];  // full-attention layers, sliding-window layers
  // Per layer: its attention (window, scale, soft-cap) and which RoPE.
  struct LayerPlan {
    AttnParams attn;
    int rope = 0;
  };
  std::vector<LayerPlan> layers_;

  // Scratch in backend memory, grown on demand (views into owned_). N: the
  // step's token rows (cap_tokens), C = min(N, kEngineChunkTokens): the rows
  // of one chunk, S: its sequences (cap_seqs), T: block-table entries.
  struct Scratch {
    int cap_tokens = 0, cap_seqs = 0, cap_table = 0;
    float* x = nullptr;     // [N, hidden] the residual stream of every row
    float* h = nullptr;     // [max(C, S), hidden] normed input of a block
    float* q = nullptr;     // [C, q_dim]
    float* k = nullptr;     // [C, kv_dim]
    float* v = nullptr;     // [C, kv_dim]
    float* attn = nullptr;  // [C, q_dim] attention output
    float* o = nullptr;     // [C, hidden] o / down projection output
    float* gate = nullptr;  // [C, max ffn] (then silu(gate) * up)
    float* up = nullptr;    // [C, max ffn]
    // Sparse layers (n_experts > 0): R = C * (n_experts_used + 1) routed rows.
    float* router = nullptr;           // [C, 2 * n_experts + 1] router logits (see EnsureScratch)
    float* moe_x = nullptr;            // [C, hidden] a wave's gathered rows (ExpertWave)
    int32_t* moe_rows = nullptr;       // [R] rows of every expert, then the shared expert's
    float* moe_w = nullptr;            // [R] their weights (moe_rows + R, one buffer)
    int cap_routed = 0;                // R
    int32_t* moe_comb = nullptr;       // [3 C + 1] a wave's CombineRows tokens, begin, pos
    float* last = nullptr;             // [S, hidden] each sequence's last row
    float* logits = nullptr;           // [S, vocab]
    int32_t* ids = nullptr;            // [N] token ids
    int32_t* pos = nullptr;            // [N] positions
    int32_t* slots = nullptr;          // [N] KV slots of the new rows
    int32_t* tables = nullptr;         // [T] the block tables, concatenated
    int32_t* last_rows = nullptr;      // [S] row of each sequence's last token
    int32_t* sample_pos = nullptr;     // [S] position sampled (feeds the RNG)
    int32_t* out_tokens = nullptr;     // [S] sampled tokens
    AttnSeq* seqs = nullptr;           // [S + chunks] attention descriptors, chunk by chunk
    SamplingParams* params = nullptr;  // [S]
  } s_;
  std::vector<BackendBuffer> owned_;
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
  // Host copies of a product group's input and of its host shares.
  std::vector<float> h_x_, h_out_;
  // Sparse layers: the router's logits (and the shared expert's gate logit
  // after them) on the host, the routing, the rows and weights uploaded.
  std::vector<float> h_router_;
  MoeRouting routing_;
  // The routed rows in waves [e0, e1) of whole experts; where each routed
  // entry p (routing_'s order) sits in the uploaded lists; those lists
  // (rows, then the weights' bits).
  std::vector<std::pair<int, int>> waves_;
  std::vector<int32_t> h_place_;
  std::vector<int32_t> h_moe_meta_;
  // Expert-level paging: rows routed to each expert, where the provider put
  // each, and the host executor's buffers for the experts it computes.
  std::vector<int32_t> h_expert_rows_;
  std::vector<ExpertRef> experts_;
  MoeRouting predicted_;  // the next sparse layer's routing as predicted (prefetch)
  std::vector<float> h_ex_, h_gate_, h_up_, h_y_;
  // A wave's host experts, and their products: gate and up, then down.
  std::vector<int> host_experts_;
  std::vector<HostExecutor::Product> host_jobs_, host_down_jobs_;
  // A wave's device experts and its CombineRows lists (tokens, begin, pos).
  std::vector<ExpertTask> tasks_;
  // Step graphs: per (sequences << 32 | context bucket), 1 once run
  // plainly, 2 once recorded.
  static constexpr int kGraphCtxBucket = 256;
  static constexpr size_t kMaxGraphs = 64;
  std::unordered_map<uint64_t, uint8_t> graph_seen_;
  bool graphs_off_ = false;
  GraphStats graph_stats_;
  bool uniform_routing_ = false;
  std::mt19937_64 routing_rng_;
  std::vector<int32_t> h_comb_, h_count_;
};

// The RoPE of a full-attention (sliding = false) or sliding-window layer.
RopeParams RopeParamsOf(const ModelConfig& c, bool sliding);

}  // namespace paged
