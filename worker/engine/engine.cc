#include "worker/engine/engine.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paged {
namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

RopeParams RopeParamsOf(const ModelConfig& c, bool sliding) {
  RopeParams r;
  r.head_dim = c.head_dim;
  if (sliding && c.rope_local_theta > 0.f) {  // gemma3's local layers: plain RoPE
    r.theta = c.rope_local_theta;
    return r;
  }
  r.theta = c.rope_theta;
  r.scaling = c.rope_scaling;
  r.factor = c.rope_factor;
  r.low_freq_factor = c.rope_low_freq_factor;
  r.high_freq_factor = c.rope_high_freq_factor;
  r.original_max_pos = c.rope_original_max_pos;
  r.beta_fast = c.rope_beta_fast;
  r.beta_slow = c.rope_beta_slow;
  r.yarn_truncate = c.rope_yarn_truncate != 0;
  r.attn_factor = c.rope_attn_factor;
  for (int i = 0; i < c.n_rope_factors && i < kMaxRopeFactors; ++i)
    r.ext_factors[i] = c.rope_factors[i];
  return r;
}

Engine::Engine(Backend* backend, WeightProvider* provider, const ModelConfig& config,
               int block_tokens)
    : backend_(backend),
      provider_(provider),
      config_(config),
      block_tokens_(block_tokens),
      rope_{RopeParamsOf(config, false), RopeParamsOf(config, true)} {
  // Each layer's attention and RoPE, derived once from the config.
  layers_.resize(size_t(std::max(config.n_layers, 0)));
  for (int l = 0; l < config.n_layers; ++l) {
    const bool sliding = config.IsSlidingLayer(l);
    LayerPlan& p = layers_[size_t(l)];
    p.attn.scale = config.AttnScale();
    p.attn.softcap = config.attn_softcap;
    p.attn.window = sliding ? config.sliding_window : 0;
    p.rope = sliding ? 1 : 0;
  }
}

Engine::~Engine() = default;

absl::Status Engine::Validate(const StepBatch& batch, uint64_t kv_blocks) const {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (batch.seqs.empty()) return bad("empty batch");
  std::set<int64_t> ids;
  for (const SeqStep& s : batch.seqs) {
    if (!ids.insert(s.seq_id).second)
      return bad("sequence ", s.seq_id, " appears twice in one step");
    if (s.tokens.empty()) return bad("sequence ", s.seq_id, ": no tokens");
    for (int32_t t : s.tokens) {
      if (t < 0 || t >= config_.vocab)
        return bad("sequence ", s.seq_id, ": token id ", t, " outside the vocabulary [0, ",
                   config_.vocab, ")");
    }
    const int64_t end = int64_t(s.start_pos) + int64_t(s.tokens.size());
    if (s.start_pos < 0 || end > config_.max_context)
      return bad("sequence ", s.seq_id, ": positions [", s.start_pos, ", ", end,
                 ") outside the context of ", config_.max_context);
    const int64_t need = (end + block_tokens_ - 1) / block_tokens_;
    if (int64_t(s.block_table.size()) < need)
      return bad("sequence ", s.seq_id, ": ", s.block_table.size(), " KV blocks for ", end,
                 " positions (needs ", need, ")");
    for (int64_t i = 0; i < need; ++i) {
      const int32_t b = s.block_table[size_t(i)];
      if (b < 0 || uint64_t(b) >= kv_blocks)
        return bad("sequence ", s.seq_id, ": KV block id ", b, " outside the pool of ", kv_blocks);
    }
    const SamplingParams& p = s.sampling;
    if (!(p.temperature >= 0.f) || !std::isfinite(p.temperature))
      return bad("sequence ", s.seq_id, ": temperature ", p.temperature,
                 " must be finite and >= 0");
    if (p.top_k < 0) return bad("sequence ", s.seq_id, ": top_k ", p.top_k, " must be >= 0");
    if (!(p.top_p > 0.f && p.top_p <= 1.f))
      return bad("sequence ", s.seq_id, ": top_p ", p.top_p, " must be in (0, 1]");
  }
  return absl::OkStatus();
}

absl::Status Engine::EnsureScratch(int n, int n_seqs, int n_table) {
  if (n <= s_.cap_tokens && n_seqs <= s_.cap_seqs && n_table <= s_.cap_table)
    return absl::OkStatus();
  // Recorded steps name the buffers about to go.
  backend_->DropGraphs();
  graph_seen_.clear();
  owned_.clear();
  // Each dimension grows on its own (doubling, so a growing batch does not
  // reallocate every step); the others keep their capacity.
  auto grow = [](int need, int cap, int floor) {
    return need <= cap ? cap : std::max({need, cap * 2, floor});
  };
  n = grow(n, s_.cap_tokens, 16);
  n_seqs = grow(n_seqs, s_.cap_seqs, 4);
  n_table = grow(n_table, s_.cap_table, 64);
  const ModelConfig& c = config_;
  auto alloc = [&](auto** out, uint64_t count) -> absl::Status {
    ASSIGN_OR_RETURN(BackendBuffer b,
                     backend_->Allocate(std::max<uint64_t>(count, 1) * sizeof(**out)));
    *out = b.as<std::remove_pointer_t<std::remove_reference_t<decltype(*out)>>>();
    owned_.push_back(std::move(b));
    return absl::OkStatus();
  };
  const uint64_t N = uint64_t(n), S = uint64_t(n_seqs);
  // The residual stream holds every row; the rest one chunk of rows.
  const uint64_t C = std::min<uint64_t>(N, kEngineChunkTokens);
  RETURN_IF_ERROR(alloc(&s_.x, N * c.hidden));
  RETURN_IF_ERROR(alloc(&s_.h, std::max(C, S) * c.hidden));
  RETURN_IF_ERROR(alloc(&s_.q, C * c.q_dim()));
  RETURN_IF_ERROR(alloc(&s_.k, C * c.kv_dim()));
  RETURN_IF_ERROR(alloc(&s_.v, C * c.kv_dim()));
  RETURN_IF_ERROR(alloc(&s_.attn, C * c.q_dim()));
  RETURN_IF_ERROR(alloc(&s_.o, C * c.hidden));
  RETURN_IF_ERROR(alloc(&s_.gate, C * uint64_t(c.MaxFfn())));
  RETURN_IF_ERROR(alloc(&s_.up, C * uint64_t(c.MaxFfn())));
  if (c.n_experts > 0) {
    // The router's logits and the shared expert's gate logit (one column
    // more), then the next sparse layer's (expert prefetch).
    RETURN_IF_ERROR(alloc(&s_.router, C * uint64_t(2 * c.n_experts + 1)));
    RETURN_IF_ERROR(alloc(&s_.moe_x, C * c.hidden));
    // The rows and their weights in one buffer (one upload per layer).
    const uint64_t routed = C * uint64_t(c.n_experts_used + 1);
    RETURN_IF_ERROR(alloc(&s_.moe_rows, 2 * routed));
    s_.moe_w = reinterpret_cast<float*>(s_.moe_rows + routed);
    s_.cap_routed = int(routed);
    RETURN_IF_ERROR(alloc(&s_.moe_comb, 3 * C + 1));
  }
  RETURN_IF_ERROR(alloc(&s_.last, S * c.hidden));
  RETURN_IF_ERROR(alloc(&s_.logits, S * c.vocab));
  RETURN_IF_ERROR(alloc(&s_.ids, N));
  RETURN_IF_ERROR(alloc(&s_.pos, N));
  RETURN_IF_ERROR(alloc(&s_.slots, N));
  RETURN_IF_ERROR(alloc(&s_.tables, uint64_t(n_table)));
  RETURN_IF_ERROR(alloc(&s_.last_rows, S));
  RETURN_IF_ERROR(alloc(&s_.sample_pos, S));
  RETURN_IF_ERROR(alloc(&s_.out_tokens, S));
  RETURN_IF_ERROR(alloc(&s_.seqs, S + (N + kEngineChunkTokens - 1) / kEngineChunkTokens));
  RETURN_IF_ERROR(alloc(&s_.params, S));
  s_.cap_tokens = n;
  s_.cap_seqs = n_seqs;
  s_.cap_table = n_table;
  return absl::OkStatus();
}

absl::Status Engine::Reserve(int max_tokens, int max_seqs, int max_table) {
  return EnsureScratch(max_tokens, max_seqs, max_table);
}

absl::StatusOr<StepOutput> Engine::Step(const StepBatch& batch) {
  RETURN_IF_ERROR(Validate(batch, provider_->pool_blocks()));
  const int n_seqs = int(batch.seqs.size());

  // Host metadata: token rows, positions, KV slots, attention descriptors.
  h_ids_.clear(), h_pos_.clear(), h_slots_.clear(), h_tables_.clear();
  h_last_rows_.clear(), h_sample_pos_.clear(), h_seqs_.clear(), h_params_.clear();
  for (const SeqStep& s : batch.seqs) {
    const int n_new = int(s.tokens.size());
    const int need = (s.start_pos + n_new + block_tokens_ - 1) / block_tokens_;
    h_seqs_.push_back(
        AttnSeq{int32_t(h_ids_.size()), n_new, s.start_pos, int32_t(h_tables_.size())});
    h_tables_.insert(h_tables_.end(), s.block_table.begin(), s.block_table.begin() + need);
    for (int i = 0; i < n_new; ++i) {
      h_ids_.push_back(s.tokens[size_t(i)]);
      h_pos_.push_back(s.start_pos + i);
    }
    h_last_rows_.push_back(int32_t(h_ids_.size()) - 1);
    h_sample_pos_.push_back(s.start_pos + n_new);
    h_params_.push_back(s.sampling);
  }
  // The provider maps pool block ids to the ids of its KV views; new rows'
  // slots follow from the mapped tables.
  RETURN_IF_ERROR(provider_->BeginStep(batch, &h_tables_));
  for (const AttnSeq& a : h_seqs_) {
    for (int i = 0; i < a.n_new; ++i) {
      const int32_t p = a.start_pos + i;
      h_slots_.push_back(h_tables_[size_t(a.table_offset + p / block_tokens_)] * block_tokens_ +
                         p % block_tokens_);
    }
  }
  const int n = int(h_ids_.size());
  PlanChunks();
  RETURN_IF_ERROR(EnsureScratch(n, n_seqs, int(h_tables_.size())));
  backend_->Upload(s_.ids, h_ids_.data(), h_ids_.size() * 4);
  backend_->Upload(s_.pos, h_pos_.data(), h_pos_.size() * 4);
  backend_->Upload(s_.slots, h_slots_.data(), h_slots_.size() * 4);
  backend_->Upload(s_.tables, h_tables_.data(), h_tables_.size() * 4);
  backend_->Upload(s_.last_rows, h_last_rows_.data(), h_last_rows_.size() * 4);
  backend_->Upload(s_.sample_pos, h_sample_pos_.data(), h_sample_pos_.size() * 4);
  backend_->Upload(s_.seqs, h_chunk_seqs_.data(), h_chunk_seqs_.size() * sizeof(AttnSeq));
  backend_->Upload(s_.params, h_params_.data(), h_params_.size() * sizeof(SamplingParams));

  RETURN_IF_ERROR(Forward(n, n_seqs));

  const ModelConfig& c = config_;
  StepOutput out;
  out.next_tokens.resize(size_t(n_seqs));
  out.logits.resize(size_t(n_seqs));
  for (int i = 0; i < n_seqs; ++i) {
    if (!batch.seqs[size_t(i)].return_logits) continue;
    out.logits[size_t(i)].resize(size_t(c.vocab));
    backend_->Download(out.logits[size_t(i)].data(), s_.logits + int64_t(i) * c.vocab,
                       uint64_t(c.vocab) * 4);
  }
  backend_->Download(out.next_tokens.data(), s_.out_tokens, uint64_t(n_seqs) * 4);
  RETURN_IF_ERROR(provider_->FinishStep());
  RETURN_IF_ERROR(backend_->Synchronize());
  return out;
}

absl::Status Engine::Forward(int n, int n_seqs) {
  if (!Graphable(n, n_seqs)) return Layers(n, n_seqs);
  // A recording replays for every context up to its bucket: the attention
  // sizes its work by the bound it is given and each row reads its own
  // length from s_.seqs.
  Chunk& ch = chunks_[0];
  ch.max_ctx = (ch.max_ctx + kGraphCtxBucket - 1) / kGraphCtxBucket * kGraphCtxBucket;
  const uint64_t key = uint64_t(n_seqs) << 32 | uint32_t(ch.max_ctx);
  if (graph_seen_.size() >= kMaxGraphs && !graph_seen_.contains(key)) {
    backend_->DropGraphs();
    graph_seen_.clear();
  }
  uint8_t& seen = graph_seen_[key];
  if (seen == 2) {
    if (backend_->LaunchGraph(key)) {
      ++graph_stats_.replayed;
      return absl::OkStatus();
    }
    seen = 0;  // the backend's scratch moved: as if new
  }
  if (seen == 0) {
    // A shape's first step runs plainly, so that any scratch the backend
    // grows for it has grown before a recording names it.
    seen = 1;
    return Layers(n, n_seqs);
  }
  backend_->BeginGraph();
  const absl::Status run = Layers(n, n_seqs);
  const absl::Status recorded = backend_->EndGraph(key);
  RETURN_IF_ERROR(run);
  if (recorded.ok()) {
    seen = 2;
    ++graph_stats_.recorded;
    return absl::OkStatus();
  }
  // Nothing ran: run it plainly, and record no more.
  graphs_off_ = true;
  graph_stats_.error = recorded;
  return Layers(n, n_seqs);
}

bool Engine::Graphable(int n, int n_seqs) const {
  if (graphs_off_ || !backend_->graphs_supported() || !provider_->fixed()) return false;
  // Decode steps (a row per sequence, one chunk) of a dense model whose
  // embedding table is in backend memory: nothing on the host mid-step.
  return n == n_seqs && chunks_.size() == 1 && config_.n_experts == 0 &&
         provider_->globals().tok_embd.data != nullptr;
}

absl::Status Engine::Layers(int n, int n_seqs) {
  RETURN_IF_ERROR(RunLayers(n));
  // Final norm and lm_head on the last row of each sequence, then sampling.
  const ModelConfig& c = config_;
  const GlobalWeights& g = provider_->globals();
  backend_->GatherRows(s_.x, s_.last_rows, n_seqs, c.hidden, s_.last);
  const Backend::MatMulJob lm_head{&g.output, nullptr, s_.logits};
  backend_->NormMatMulMany(s_.last, {g.output_norm, c.hidden, c.norm_eps, s_.h}, n_seqs, &lm_head,
                           1);
  if (c.final_softcap > 0.f)
    backend_->SoftCap(s_.logits, int64_t(n_seqs) * c.vocab, c.final_softcap);
  backend_->Sample(s_.logits, n_seqs, c.vocab, s_.params, s_.sample_pos, s_.out_tokens);
  return absl::OkStatus();
}

void Engine::PlanChunks() {
  chunks_.clear();
  h_chunk_seqs_.clear();
  const int n = int(h_ids_.size());
  for (int row0 = 0; row0 < n; row0 += kEngineChunkTokens) {
    Chunk ch;
    ch.row0 = row0;
    ch.rows = std::min(kEngineChunkTokens, n - row0);
    ch.seq0 = int(h_chunk_seqs_.size());
    for (const AttnSeq& a : h_seqs_) {
      const int lo = std::max(a.q_offset, row0),
                hi = std::min(a.q_offset + a.n_new, row0 + ch.rows);
      if (lo >= hi) continue;
      const int32_t start = a.start_pos + (lo - a.q_offset);
      h_chunk_seqs_.push_back(AttnSeq{lo - row0, hi - lo, start, a.table_offset});
      ch.max_ctx = std::max(ch.max_ctx, start + (hi - lo));
    }
    ch.n_seqs = int(h_chunk_seqs_.size()) - ch.seq0;
    chunks_.push_back(ch);
  }
}

absl::Status Engine::Products(const float* x, int m, int cols,
                              std::initializer_list<Product> products, const float* norm_w) {
  bool split = false;
  for (const Product& p : products) split |= p.host.any();
  if (products.size() > 4) return absl::InternalError("Engine::Products: more than 4 products");
  if (!split) {
    Backend::MatMulJob jobs[4];
    int n_jobs = 0;
    for (const Product& p : products) jobs[n_jobs++] = {&p.dev, p.bias, p.out, p.add_to};
    if (norm_w != nullptr) {
      backend_->NormMatMulMany(x, {norm_w, cols, config_.norm_eps, s_.h}, m, jobs, n_jobs);
    } else {
      backend_->MatMulMany(x, m, jobs, n_jobs);
    }
    return absl::OkStatus();
  }
  if (norm_w != nullptr) {
    backend_->RmsNorm(x, norm_w, m, cols, config_.norm_eps, s_.h);
    x = s_.h;
  }
  if (host_ == nullptr)
    return absl::FailedPreconditionError("a hybrid step's host rows, but no host executor");
  // The input to the host (waits for the ops before it), then the backend's
  // rows are enqueued and computed while the host computes its own.
  auto t0 = Clock::now();
  const float* hx = x;
  if (!backend_->shares_host_memory()) {
    h_x_.resize(size_t(m) * size_t(cols));
    backend_->Download(h_x_.data(), x, h_x_.size() * sizeof(float));
    hx = h_x_.data();
  }
  host_times_.wait_s += SecondsSince(t0);
  uint64_t host_elems = 0;
  for (const Product& p : products) {
    const int64_t rows = p.host.any() ? p.host.w.rows : p.dev.rows;
    if (p.dev.rows > 0) backend_->MatMul(x, m, p.dev, p.bias, p.out, rows);
    if (p.host.any()) host_elems += uint64_t(m) * uint64_t(p.host.w.rows - p.host.row0);
  }
  h_out_.resize(host_elems);
  // The host's rows of every product in one dispatch, then each uploaded
  // into its columns of the product's output.
  HostExecutor::Product jobs[4];
  float* dev_out[4];  // each job's product's output (backend memory)
  int n_jobs = 0;
  float* ho = h_out_.data();
  for (const Product& p : products) {
    if (!p.host.any()) continue;
    const HostRows& h = p.host;
    if (h.w.cols != cols || h.row0 != p.dev.rows)
      return absl::InternalError("host rows do not match the device view of a matrix");
    if (n_jobs == 4) return absl::InternalError("more than 4 products of one input");
    const int64_t k = h.w.rows - h.row0;
    dev_out[n_jobs] = p.out;
    jobs[n_jobs++] = HostExecutor::Product{&h.w, h.row0, h.w.rows, h.bias, ho, k};
    ho += uint64_t(m) * uint64_t(k);
  }
  t0 = Clock::now();
  host_->MatMulMany(hx, m, jobs, n_jobs);
  host_times_.compute_s += SecondsSince(t0);
  ++host_times_.products;
  t0 = Clock::now();
  for (int j = 0; j < n_jobs; ++j) {
    const HostExecutor::Product& q = jobs[j];
    const int64_t k = q.r1 - q.r0;
    backend_->Upload2D(dev_out[j] + q.r0, uint64_t(q.r1) * sizeof(float), q.out,
                       uint64_t(k) * sizeof(float), uint64_t(k) * sizeof(float), uint64_t(m));
  }
  host_times_.upload_s += SecondsSince(t0);
  for (const Product& p : products) {
    const int64_t rows = p.host.any() ? p.host.w.rows : p.dev.rows;
    if (p.add_to != nullptr) backend_->Add(p.add_to, p.out, int64_t(m) * rows);
  }
  return absl::OkStatus();
}

// The weights a layer must have for this config (a provider or a segment
// that lacks them is a fault, not bad input).
absl::Status Engine::CheckLayer(int l, const LayerWeights& w) const {
  const ModelConfig& c = config_;
  if ((c.qk_norm && (w.q_norm == nullptr || w.k_norm == nullptr)) ||
      (c.sandwich_norm && (w.post_attn_norm == nullptr || w.post_ffn_norm == nullptr)))
    return absl::InternalError(
        absl::StrCat("layer ", l, " lacks the q/k or sandwich norms its config needs"));
  auto has = [](const WeightRef& r, int64_t rows, int64_t cols) {
    return r.data != nullptr && r.rows == rows && r.cols == cols;
  };
  // Experts handed out per chunk (expert-level paging): shapes only here.
  auto has_expert = [&](const WeightRef& r, int64_t rows, int64_t cols) {
    return w.experts.by_request ? r.rows == rows && r.cols == cols : has(r, rows, cols);
  };
  if ((c.o_bias && w.bo == nullptr) || (c.attn_sinks && w.attn_sinks == nullptr))
    return absl::InternalError(
        absl::StrCat("layer ", l, " lacks the o bias or attention sinks its config needs"));
  if (!c.IsMoeLayer(l)) {
    // (A hybrid step's device views hold only some of the rows.)
    if (w.w_gate.cols != c.hidden || w.w_up.cols != c.hidden || w.w_down.cols != c.ffn)
      return absl::InternalError(absl::StrCat("layer ", l, " lacks its MLP"));
    return absl::OkStatus();
  }
  const ExpertWeights& x = w.experts;
  if (!has(w.router, c.n_experts, c.hidden) || w.router.dtype != DType::kF32 ||
      x.n != c.n_experts || !has_expert(x.gate, c.expert_ffn, c.hidden) ||
      !has_expert(x.up, c.expert_ffn, c.hidden) || !has_expert(x.down, c.hidden, c.expert_ffn))
    return absl::InternalError(
        absl::StrCat("layer ", l, " lacks the router or experts its config needs"));
  if ((c.router_bias && w.router_b == nullptr) ||
      (c.expert_bias &&
       (w.exp_gate_b == nullptr || w.exp_up_b == nullptr || w.exp_down_b == nullptr)))
    return absl::InternalError(
        absl::StrCat("layer ", l, " lacks the router or expert biases its config needs"));
  if (c.shared_expert_ffn > 0 &&
      (!has(w.shexp_gate_inp, 1, c.hidden) || w.shexp_gate_inp.dtype != DType::kF32 ||
       !has(w.shexp_gate, c.shared_expert_ffn, c.hidden) ||
       !has(w.shexp_up, c.shared_expert_ffn, c.hidden) ||
       !has(w.shexp_down, c.hidden, c.shared_expert_ffn)))
    return absl::InternalError(absl::StrCat("layer ", l, " lacks its shared expert"));
  return absl::OkStatus();
}

absl::Status Engine::RunLayers(int n) {
  const ModelConfig& c = config_;
  Backend& b = *backend_;
  const GlobalWeights& g = provider_->globals();
  if (g.tok_embd.data == nullptr && g.tok_embd_host.data != nullptr) {
    // The table stays on the host: its rows of this step come up.
    if (host_ == nullptr)
      return absl::FailedPreconditionError("the embedding table is on the host: no host executor");
    h_x_.resize(size_t(n) * size_t(c.hidden));
    host_->Embedding(g.tok_embd_host, h_ids_.data(), n, h_x_.data());
    b.Upload(s_.x, h_x_.data(), h_x_.size() * sizeof(float));
  } else {
    b.Embedding(g.tok_embd, s_.ids, n, s_.x);
  }
  if (c.embed_scale != 1.f) b.Scale(s_.x, int64_t(n) * c.hidden, c.embed_scale);
  for (int l = 0; l < c.n_layers; ++l) {
    ASSIGN_OR_RETURN(const LayerWeights w, provider_->AcquireLayer(l));
    RETURN_IF_ERROR(CheckLayer(l, w));
    const LayerPlan& lp = layers_[size_t(l)];
    KvLayerView kv;
    for (size_t ci = 0; ci < chunks_.size(); ++ci) {
      const Chunk& ch = chunks_[ci];
      const int m = ch.rows;
      float* x = s_.x + int64_t(ch.row0) * c.hidden;
      const auto t0 = Clock::now();
      // Attention block: q, k, v of the normed x.
      RETURN_IF_ERROR(Products(x, m, c.hidden,
                               {{w.wq, w.bq, w.host.wq, s_.q},
                                {w.wk, w.bk, w.host.wk, s_.k},
                                {w.wv, w.bv, w.host.wv, s_.v}},
                               w.attn_norm));
      if (c.qk_norm) {  // each head of q and k, in place
        b.RmsNorm(s_.q, w.q_norm, m * c.n_heads, c.head_dim, c.norm_eps, s_.q);
        b.RmsNorm(s_.k, w.k_norm, m * c.n_kv_heads, c.head_dim, c.norm_eps, s_.k);
      }
      b.Rope(s_.q, s_.k, s_.pos + ch.row0, m, c.n_heads, c.n_kv_heads, rope_[lp.rope]);
      if (ci == 0) {
        // Asked after the first projections, so that they overlap the KV
        // arriving for this layer.
        ASSIGN_OR_RETURN(kv, provider_->AcquireKv(l));
      }
      // Earlier chunks of this layer wrote their rows already: a chunk sees
      // every position before it.
      b.KvWrite(s_.k, s_.v, s_.slots + ch.row0, m, kv);
      AttnParams ap = lp.attn;
      ap.sinks = w.attn_sinks;  // gpt-oss's per-head sink logits, or null
      ap.decode_rows = ch.rows == ch.n_seqs;
      b.Attention(s_.q, s_.seqs + ch.seq0, ch.n_seqs, s_.tables, c.n_heads, c.n_kv_heads,
                  c.head_dim, ch.max_ctx, kv, ap, s_.attn);
      if (ci + 1 == chunks_.size()) provider_->ReleaseKv(l, h_slots_.data(), n);
      // The output projection goes into the residual stream (added there
      // by the product where the backend can), after its own norm in
      // sandwich-norm models.
      const bool sandwich = c.sandwich_norm;
      RETURN_IF_ERROR(
          Products(s_.attn, m, c.q_dim(), {{w.wo, w.bo, w.host.wo, s_.o, sandwich ? nullptr : x}}));
      if (sandwich) {
        b.RmsNorm(s_.o, w.post_attn_norm, m, c.hidden, c.norm_eps, s_.o);
        b.Add(x, s_.o, int64_t(m) * c.hidden);
      }
      // MLP block (sparse: on the normed x in s_.h).
      if (w.experts.n > 0) {
        b.RmsNorm(x, w.ffn_norm, m, c.hidden, c.norm_eps, s_.h);
        host_times_.attention_s += SecondsSince(t0);
        RETURN_IF_ERROR(MoeBlock(l, w, x, m));
        continue;
      }
      RETURN_IF_ERROR(Products(
          x, m, c.hidden,
          {{w.w_gate, nullptr, w.host.w_gate, s_.gate}, {w.w_up, nullptr, w.host.w_up, s_.up}},
          w.ffn_norm));
      if (c.mlp_act == MlpActivation::kGeluTanh) {
        b.GeGlu(s_.gate, s_.up, m, c.ffn, s_.gate);
      } else {
        b.SwiGlu(s_.gate, s_.up, m, c.ffn, s_.gate);
      }
      RETURN_IF_ERROR(Products(s_.gate, m, c.ffn,
                               {{w.w_down, nullptr, w.host.w_down, s_.o, sandwich ? nullptr : x}}));
      if (sandwich) {
        b.RmsNorm(s_.o, w.post_ffn_norm, m, c.hidden, c.norm_eps, s_.o);
        b.Add(x, s_.o, int64_t(m) * c.hidden);
      }
    }
    provider_->ReleaseLayer(l);
  }
  return absl::OkStatus();
}

absl::Status Engine::MoeBlock(int l, const LayerWeights& w, float* x, int m) {
  const ModelConfig& c = config_;
  Backend& b = *backend_;
  const int n_exp = c.n_experts, k = c.n_experts_used;
  const bool shared = c.shared_expert_ffn > 0;
  // The router's logits [m, n_exp] (and the shared expert's gate logit
  // [m, 1] after them) come to the host, which routes.
  b.MatMul(s_.h, m, w.router, w.router_b, s_.router);
  if (shared) b.MatMul(s_.h, m, w.shexp_gate_inp, nullptr, s_.router + int64_t(m) * n_exp);
  // Expert prefetch: the next sparse layer's router on the same rows
  // predicts its experts; its logits come down with these.
  int next = l + 1;
  while (next < c.n_layers && !c.IsMoeLayer(next)) ++next;
  const WeightRef next_router =
      next < c.n_layers && w.experts.by_request ? provider_->PrefetchRouter(next) : WeightRef{};
  // Its bias (gpt-oss), in host memory: added below to the logits that
  // come down.
  const float* next_router_b = next_router.rows > 0 ? provider_->PrefetchRouterBias(next) : nullptr;
  const size_t own = size_t(m) * size_t(n_exp + (shared ? 1 : 0));
  if (next_router.rows > 0) b.MatMul(s_.h, m, next_router, nullptr, s_.router + own);
  h_router_.resize(own + (next_router.rows > 0 ? size_t(m) * size_t(n_exp) : 0));
  // With a host executor beside paged experts, the normed rows come down
  // with the logits (one wait): the host computes the experts it is given.
  const bool rows_down = w.experts.by_request && host_ != nullptr;
  if (rows_down) {
    h_x_.resize(size_t(m) * size_t(c.hidden));
    // Its threads up while the logits come and the experts are placed.
    host_->Wake();
  }
  const Backend::DownloadPart down[2] = {
      {h_router_.data(), s_.router, h_router_.size() * sizeof(float)},
      {h_x_.data(), s_.h, rows_down ? h_x_.size() * sizeof(float) : 0}};
  auto t0 = Clock::now();
  b.DownloadMany(down, rows_down ? 2 : 1);
  host_times_.route_s += SecondsSince(t0);
  t0 = Clock::now();
  if (uniform_routing_) {  // benchmarks: random logits, so k random experts per row
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (size_t i = 0; i < size_t(m) * size_t(n_exp); ++i) h_router_[i] = u(routing_rng_);
  }
  RouteTopK(h_router_.data(), m, n_exp, k, c.norm_topk_prob != 0, &routing_);
  // Expert-level paging: the provider says where each routed expert is
  // (the device expert cache, a copy just made, or host memory for the
  // host executor); else the layer's weights hold every expert.
  const ExpertWeights& xw = w.experts;
  bool any_host = false;
  if (xw.by_request) {
    h_expert_rows_.resize(size_t(n_exp));
    for (int e = 0; e < n_exp; ++e)
      h_expert_rows_[size_t(e)] = routing_.begin[size_t(e) + 1] - routing_.begin[size_t(e)];
    experts_.assign(size_t(n_exp), ExpertRef{});
    RETURN_IF_ERROR(provider_->AcquireExperts(l, h_expert_rows_.data(), n_exp, experts_.data()));
    for (int e = 0; e < n_exp; ++e)
      any_host |= h_expert_rows_[size_t(e)] > 0 && experts_[size_t(e)].on_host;
    if (next_router.rows > 0) {
      // The predicted routing of the next sparse layer (with its router's
      // bias, where it has one): its copies start behind this layer's own.
      float* pred = h_router_.data() + own;
      if (next_router_b != nullptr) {
        for (size_t i = 0; i < size_t(m); ++i)
          for (size_t j = 0; j < size_t(n_exp); ++j)
            pred[i * size_t(n_exp) + j] += next_router_b[j];
      }
      RouteTopK(pred, m, n_exp, k, false, &predicted_);
      for (int e = 0; e < n_exp; ++e)
        h_expert_rows_[size_t(e)] = predicted_.begin[size_t(e) + 1] - predicted_.begin[size_t(e)];
      provider_->PrefetchExperts(next, h_expert_rows_.data(), n_exp);
    }
  }
  if (any_host && !rows_down)
    return absl::FailedPreconditionError("experts computed on the host, but no host executor");
  // The routed rows in waves of whole experts that fit the scratch's rows
  // (one wave unless a step's rows times experts-per-token exceed a chunk).
  const int wave_cap = std::min(s_.cap_tokens, kEngineChunkTokens);
  waves_.clear();
  for (int e0 = 0; e0 < n_exp;) {
    const int p0 = routing_.begin[size_t(e0)];
    int e1 = e0 + 1;
    while (e1 < n_exp && routing_.begin[size_t(e1) + 1] - p0 <= wave_cap) ++e1;
    if (routing_.begin[size_t(e1)] > p0) waves_.push_back({e0, e1});
    e0 = e1;
  }
  // Where each routed row sits in the uploaded lists: within its wave the
  // device's experts first, then the host's (whose output rows are then one
  // block, one upload), each expert's rows together, in expert order.
  const int routed = routing_.begin[size_t(n_exp)];
  h_place_.resize(size_t(routed));
  for (const auto& [e0, e1] : waves_) {
    int at = routing_.begin[size_t(e0)];
    for (const bool host_pass : {false, true}) {
      for (int e = e0; e < e1; ++e) {
        if ((any_host && experts_[size_t(e)].on_host) != host_pass) continue;
        for (int p = routing_.begin[size_t(e)]; p < routing_.begin[size_t(e) + 1]; ++p)
          h_place_[size_t(p)] = at++;
      }
    }
  }
  // The rows and their weights (the shared expert's after the routed
  // ones: every row, weighted by sigmoid of its gate logit), one upload.
  const int n_rows = routed + (shared ? m : 0);
  h_moe_meta_.resize(2 * size_t(n_rows));
  int32_t* rows = h_moe_meta_.data();
  int32_t* weights = rows + n_rows;
  for (int p = 0; p < routed; ++p) {
    rows[h_place_[size_t(p)]] = routing_.rows[size_t(p)];
    weights[h_place_[size_t(p)]] = std::bit_cast<int32_t>(routing_.weights[size_t(p)]);
  }
  if (shared) {
    const float* g = h_router_.data() + size_t(m) * size_t(n_exp);
    for (int i = 0; i < m; ++i) {
      rows[routed + i] = i;
      weights[routed + i] = std::bit_cast<int32_t>(float(1 / (1 + std::exp(-double(g[i])))));
    }
  }
  b.Upload2D(s_.moe_rows, uint64_t(s_.cap_routed) * sizeof(int32_t), rows,
             uint64_t(n_rows) * sizeof(int32_t), uint64_t(n_rows) * sizeof(int32_t), 2);
  host_times_.acquire_s += SecondsSince(t0);
  for (const auto& [e0, e1] : waves_) RETURN_IF_ERROR(ExpertWave(l, w, x, m, e0, e1));
  if (xw.by_request) provider_->ReleaseExperts(l);
  if (shared) {
    const int r0 = routing_.begin[size_t(n_exp)];
    b.MatMul(s_.h, m, w.shexp_gate, nullptr, s_.gate);
    b.MatMul(s_.h, m, w.shexp_up, nullptr, s_.up);
    b.SwiGlu(s_.gate, s_.up, m, c.shared_expert_ffn, s_.gate);
    b.MatMul(s_.gate, m, w.shexp_down, nullptr, s_.o);
    b.ScatterAddRows(s_.o, s_.moe_rows + r0, s_.moe_w + r0, m, c.hidden, x);
  }
  return absl::OkStatus();
}

absl::Status Engine::ExpertWave(int l, const LayerWeights& w, float* x, int m, int e0, int e1) {
  const ModelConfig& c = config_;
  Backend& b = *backend_;
  const ExpertWeights& xw = w.experts;
  const int p0 = routing_.begin[size_t(e0)], rows = routing_.begin[size_t(e1)] - p0;
  auto t0 = Clock::now();
  b.GatherRows(s_.h, s_.moe_rows + p0, rows, c.hidden, s_.moe_x);
  // The device's experts, together. gpt-oss: expert e's biases are row e of
  // the layer's bias tables.
  auto bias = [](const float* t, int e, int width) {
    return t == nullptr ? nullptr : t + int64_t(e) * width;
  };
  tasks_.clear();
  for (int e = e0; e < e1; ++e) {
    const int r0 = routing_.begin[size_t(e)], n = routing_.begin[size_t(e) + 1] - r0;
    if (n == 0 || (xw.by_request && experts_[size_t(e)].on_host)) continue;
    ExpertTask t;
    t.gate = xw.by_request ? experts_[size_t(e)].gate : xw.Gate(e);
    t.up = xw.by_request ? experts_[size_t(e)].up : xw.Up(e);
    t.down = xw.by_request ? experts_[size_t(e)].down : xw.Down(e);
    t.gate_b = bias(w.exp_gate_b, e, c.expert_ffn);
    t.up_b = bias(w.exp_up_b, e, c.expert_ffn);
    t.down_b = bias(w.exp_down_b, e, c.hidden);
    t.row0 = h_place_[size_t(r0)] - p0;
    t.n = n;
    tasks_.push_back(t);
  }
  const GluAct act{c.swiglu_alpha, c.swiglu_limit > 0.f ? c.swiglu_limit : 0.f};
  b.ExpertFfn(s_.moe_x, tasks_.data(), int(tasks_.size()), act, s_.gate, s_.up, s_.o);
  host_times_.launch_s += SecondsSince(t0);
  // The host's experts while the device runs those, their rows uploaded
  // into the same output.
  if (xw.by_request) RETURN_IF_ERROR(HostExperts(l, e0, e1));
  t0 = Clock::now();
  // Each token's rows of the wave, in expert order: tokens, begin, pos.
  h_count_.assign(size_t(m), 0);
  for (int p = p0; p < p0 + rows; ++p) ++h_count_[size_t(routing_.rows[size_t(p)])];
  int n_tokens = 0;
  for (int32_t k : h_count_) n_tokens += k > 0;
  h_comb_.resize(size_t(2 * n_tokens + 1 + rows));
  int32_t* tokens = h_comb_.data();
  int32_t* begin = tokens + n_tokens;
  int32_t* pos = begin + n_tokens + 1;
  int i = 0, at = 0;
  for (size_t t = 0; t < h_count_.size(); ++t) {
    if (h_count_[t] == 0) continue;
    tokens[i] = int32_t(t);
    begin[i] = at;
    at += h_count_[t];
    h_count_[t] = begin[i];  // now the token's next free place in pos
    ++i;
  }
  begin[n_tokens] = at;
  for (int p = p0; p < p0 + rows; ++p)
    pos[h_count_[size_t(routing_.rows[size_t(p)])]++] = h_place_[size_t(p)] - p0;
  b.Upload(s_.moe_comb, h_comb_.data(), h_comb_.size() * sizeof(int32_t));
  b.CombineRows(s_.o, s_.moe_w + p0, s_.moe_comb, s_.moe_comb + n_tokens,
                s_.moe_comb + 2 * n_tokens + 1, n_tokens, c.hidden, x);
  host_times_.launch_s += SecondsSince(t0);
  return absl::OkStatus();
}

absl::Status Engine::HostExperts(int l, int e0, int e1) {
  const ModelConfig& c = config_;
  const size_t hidden = size_t(c.hidden), ffn = size_t(c.expert_ffn);
  const int p0 = routing_.begin[size_t(e0)];
  // Packed in expert order: each host expert's rows of the normed input
  // (h_x_), then gate and up for all of them in one dispatch, the GLU, down
  // in another, all in place on the segment's mapping (the same products and
  // element-wise ops as the device's).
  host_experts_.clear();
  int total = 0;
  for (int e = e0; e < e1; ++e) {
    const int n = routing_.begin[size_t(e) + 1] - routing_.begin[size_t(e)];
    const ExpertRef& ex = experts_[size_t(e)];
    if (n == 0 || !ex.on_host) continue;
    if (c.expert_bias && (ex.gate_b == nullptr || ex.up_b == nullptr || ex.down_b == nullptr))
      return absl::InternalError(
          absl::StrCat("layer ", l, " expert ", e, ": a host expert without its biases"));
    host_experts_.push_back(e);
    total += n;
  }
  if (total == 0) return absl::OkStatus();
  h_ex_.resize(size_t(total) * hidden);
  h_gate_.resize(size_t(total) * ffn);
  h_up_.resize(size_t(total) * ffn);
  h_y_.resize(size_t(total) * hidden);
  host_jobs_.clear();
  host_down_jobs_.clear();
  int at = 0;
  for (int e : host_experts_) {
    const int r0 = routing_.begin[size_t(e)], n = routing_.begin[size_t(e) + 1] - r0;
    const ExpertRef& ex = experts_[size_t(e)];
    // One row (most experts at small batch) is read where it is: the
    // experts of one token then share their input, which the executor
    // prepares once (8-bit activations: quantized once).
    const float* x = h_x_.data() + size_t(routing_.rows[size_t(r0)]) * hidden;
    if (n > 1) {
      for (int i = 0; i < n; ++i)
        std::copy_n(h_x_.data() + size_t(routing_.rows[size_t(r0 + i)]) * hidden, hidden,
                    h_ex_.data() + size_t(at + i) * hidden);
      x = h_ex_.data() + size_t(at) * hidden;
    }
    float* g = h_gate_.data() + size_t(at) * ffn;
    float* u = h_up_.data() + size_t(at) * ffn;
    host_jobs_.push_back({&ex.gate, 0, ex.gate.rows, ex.gate_b, g, ex.gate.rows, x, n});
    host_jobs_.push_back({&ex.up, 0, ex.up.rows, ex.up_b, u, ex.up.rows, x, n});
    host_down_jobs_.push_back({&ex.down, 0, ex.down.rows, ex.down_b,
                               h_y_.data() + size_t(at) * hidden, ex.down.rows, g, n});
    at += n;
  }
  auto t0 = Clock::now();
  host_->MatMulMany(nullptr, 0, host_jobs_.data(), int(host_jobs_.size()));
  const int64_t count = int64_t(total) * int64_t(ffn);
  if (c.swiglu_limit > 0.f) {
    host_->SwiGluOai(h_gate_.data(), h_up_.data(), count, c.swiglu_alpha, c.swiglu_limit,
                     h_gate_.data());
  } else {
    host_->SwiGlu(h_gate_.data(), h_up_.data(), count, h_gate_.data());
  }
  host_->MatMulMany(nullptr, 0, host_down_jobs_.data(), int(host_down_jobs_.size()));
  host_times_.compute_s += SecondsSince(t0);
  host_times_.products += 2;
  // Their rows are the last of the wave's output (MoeBlock places them
  // so): one upload.
  t0 = Clock::now();
  const int first = h_place_[size_t(routing_.begin[size_t(host_experts_[0])])];
  backend_->Upload(s_.o + int64_t(first - p0) * c.hidden, h_y_.data(),
                   size_t(total) * hidden * sizeof(float));
  host_times_.upload_s += SecondsSince(t0);
  return absl::OkStatus();
}

}  // namespace paged
