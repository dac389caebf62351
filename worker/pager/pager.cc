#include "worker/pager/pager.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"

namespace paged {

using Q = Backend::Queue;

Pager::Pager(Backend* backend, const ModelImage& host, const MemoryPlan& plan, PagerOptions options)
    : backend_(backend),
      host_(host),
      plan_(plan),
      options_(options),
      n_layers_(host.header->model.n_layers) {}

Pager::~Pager() {
  // Nothing may still read or write what is freed below.
  (void)backend_->Synchronize();
  if (wb_done_) {
    backend_->Record(Q::kWriteBack, wb_done_);
    (void)backend_->HostWait(wb_done_);
  }
  if (!slot_copied_.empty()) {
    for (const BackendEvent& e : slot_copied_) (void)backend_->HostWait(e);
  }
  for (const BackendEvent& e : area_ready_) (void)backend_->HostWait(e);
  if (experts_copied_) {  // expert copies made ahead (preload, admissions, prefetch)
    backend_->Record(Q::kCopyIn, experts_copied_);
    (void)backend_->HostWait(experts_copied_);
  }
  for (void* p : imported_) backend_->CloseImported(p);
  owned_.clear();
  for (void* p : registered_) backend_->UnregisterHost(p);
  board_.reset();  // after the memory it describes is let go
}

absl::StatusOr<std::unique_ptr<Pager>> Pager::Create(Backend* backend, const ModelImage& host,
                                                     const MemoryPlan& plan, PagerOptions options) {
  if (plan.resident.size() != size_t(host.header->model.n_layers))
    return absl::InvalidArgumentError("memory plan does not match the model's layers");
  std::unique_ptr<Pager> p(new Pager(backend, host, plan, options));
  RETURN_IF_ERROR(p->Init());
  return p;
}

absl::StatusOr<void*> Pager::Alloc(uint64_t bytes) {
  ASSIGN_OR_RETURN(BackendBuffer b, backend_->Allocate(bytes));
  void* p = b.get();
  owned_.push_back(std::move(b));
  device_bytes_ += bytes;
  return p;
}

absl::StatusOr<const uint8_t*> Pager::Obtain(int id, const uint8_t* src, uint64_t bytes, bool make,
                                             bool* imported) {
  *imported = false;
  if (board_) {
    if (std::optional<std::string> handle = board_->LiveHandle(id)) {
      absl::StatusOr<void*> p = backend_->ImportMemory(*handle);
      if (p.ok()) {
        board_->AddHolder(id);
        imported_.push_back(*p);
        *imported = true;
        return static_cast<const uint8_t*>(*p);
      }
      Log(LogLevel::kWarning, "pager", "cannot use the shared copy of block %d (%s); making one",
          id, std::string(p.status().message()).c_str());
      board_->Invalidate(id);
    }
  }
  if (!make) return nullptr;
  ASSIGN_OR_RETURN(void* m, Alloc(bytes));
  backend_->Upload(m, src, bytes);
  if (board_) {
    // Another process may read it as soon as it is published.
    RETURN_IF_ERROR(backend_->Synchronize());
    absl::StatusOr<std::string> handle = backend_->ExportMemory(m);
    if (handle.ok()) {
      RETURN_IF_ERROR(board_->Publish(id, *handle, bytes));
      if (id < n_layers_) ++sharing_.layers_published;
    }
  }
  return static_cast<const uint8_t*>(m);
}

absl::StatusOr<double> Pager::TimeLayerCopy(const uint8_t* peer, int layer) {
  // Best of three copies of one layer into slot 0 on the copy-in queue.
  const SegmentHeader& h = *host_.header;
  const uint64_t bytes = CopyBytes(layer);
  const BackendEvent done = backend_->MakeEvent();
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    if (peer != nullptr)
      backend_->CopyDevice(Q::kCopyIn, slot_mem_[0], peer, bytes);
    else
      backend_->CopyIn(Q::kCopyIn, slot_mem_[0], host_.weights + h.LayerOffset(layer), bytes);
    backend_->Record(Q::kCopyIn, done);
    RETURN_IF_ERROR(backend_->HostWait(done));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(bytes) / std::max(s, 1e-9) / 1e9);
  }
  return best;
}

absl::Status Pager::SetUpPeers() {
  // The same device's shared layers that are not used in place (tests).
  for (int l : paged_layers_) sharing_.peer_layers += peer_block_[size_t(l)] != nullptr;
  if (board_ && options_.peer_copies != PagerOptions::PeerCopies::kOff) {
    for (std::unique_ptr<ShareBoard>& peer :
         ShareBoard::OpenPeers(options_.share_segment, options_.share_generation,
                               backend_->device_uuid(), n_layers_ + 1)) {
      ShareBoard::Lock lock(*peer);
      for (int l : paged_layers_) {
        if (peer_block_[size_t(l)] != nullptr) continue;
        std::optional<std::string> handle = peer->LiveHandle(l);
        if (!handle) continue;
        absl::StatusOr<void*> p = backend_->ImportMemory(*handle);
        if (!p.ok()) continue;  // no peer access between these devices: page from the host
        imported_.push_back(*p);
        peer_block_[size_t(l)] = static_cast<const uint8_t*>(*p);
        ++sharing_.peer_layers;
      }
      // The imports keep the memory alive; the board need not stay open.
    }
  }
  if (sharing_.peer_layers == 0 || options_.peer_copies == PagerOptions::PeerCopies::kOff)
    return absl::OkStatus();
  int probe = -1;
  for (int l : paged_layers_) {
    if (peer_block_[size_t(l)] != nullptr) probe = l;
  }
  sharing_.host_gbps = link_gbps_;
  ASSIGN_OR_RETURN(sharing_.peer_gbps, TimeLayerCopy(peer_block_[size_t(probe)], probe));
  sharing_.peer_used = options_.peer_copies == PagerOptions::PeerCopies::kForce ||
                       sharing_.peer_gbps > sharing_.host_gbps;
  return absl::OkStatus();
}

std::string SharingReport::Describe() const {
  if (!enabled) return "sharing: off";
  std::string s = absl::StrCat("sharing: globals ", globals_shared ? "shared" : "own", ", ",
                               layers_shared, " layers used in place (", shared_bytes >> 20,
                               " MiB), ", layers_published, " published");
  if (peer_layers > 0) {
    absl::StrAppend(&s, "; ", peer_layers,
                    " paged layers on a peer: ", peer_used ? "copied from it" : "not used",
                    " (peer ", absl::SixDigits(peer_gbps), " GB/s, host ",
                    absl::SixDigits(host_gbps), " GB/s)");
  }
  return s;
}

int64_t Pager::DeviceRows(int64_t rows, double share) {
  if (!(share > 0)) return rows;
  if (share >= 1) return 0;
  // The device's rows in whole tiles; the host takes the rest.
  constexpr int64_t kSplitRows = 32;
  const int64_t dev = int64_t(double(rows) * (1 - share)) / kSplitRows * kSplitRows;
  return std::clamp<int64_t>(dev, 0, rows);
}

uint64_t Pager::CopyLayerRows(int s, int layer, double have_share, double share) {
  const SegmentHeader& h = *host_.header;
  const uint8_t* peer = sharing_.peer_used ? peer_block_[size_t(layer)] : nullptr;
  const uint8_t* src = peer != nullptr ? peer : host_.weights + h.LayerOffset(layer);
  uint64_t total = 0;
  auto copy = [&](uint64_t off, uint64_t bytes) {
    if (bytes == 0) return;
    if (peer != nullptr)
      backend_->CopyDevice(Q::kCopyIn, slot_mem_[size_t(s)] + off, src + off, bytes);
    else
      backend_->CopyIn(Q::kCopyIn, slot_mem_[size_t(s)] + off, src + off, bytes);
    total += bytes;
  };
  const bool fresh = have_share < 0;
  const LayerTable& table = h.Layer(layer);
  if (fresh && !(share > 0)) {  // the whole block (or dense part) in one copy
    copy(0, CopyBytes(layer));
    return total;
  }
  // Tensor by tensor, from the layer's own table. Rows are contiguous in
  // every dtype (a block-format row is its blocks), so a row prefix is one
  // run of bytes.
  for (uint32_t i = 0; i < table.n_tensors; ++i) {
    const TensorEntry& t = table.tensors[i];
    // Vectors (norms, biases) and the matrices a hybrid step does not split
    // (a sparse layer's router and shared expert) are always on the device.
    const std::string_view name = t.Name();
    const bool split = name == "wq" || name == "wk" || name == "wv" || name == "wo" ||
                       name == "w_gate" || name == "w_up" || name == "w_down";
    if (t.rows <= 1 || !split) {
      if (fresh) {
        copy(t.offset, t.bytes);
        copy(t.scale_offset, t.scale_bytes);
      }
      continue;
    }
    const int64_t from = fresh ? 0 : DeviceRows(t.rows, have_share);
    const int64_t to = DeviceRows(t.rows, share);
    if (to <= from) continue;
    const uint64_t row_bytes = t.bytes / uint64_t(t.rows);
    copy(t.offset + uint64_t(from) * row_bytes, uint64_t(to - from) * row_bytes);
    if (t.scale_bytes > 0) {
      const uint64_t scale_row = t.scale_bytes / uint64_t(t.rows);
      copy(t.scale_offset + uint64_t(from) * scale_row, uint64_t(to - from) * scale_row);
    }
  }
  // A sparse layer's experts are not split: all on the device, in one copy
  // (unless they are paged one by one, through the expert cache).
  const ExpertTable& x = table.experts;
  if (fresh && x.n_experts > 0 && !experts_paged_) copy(x.offset, uint64_t(x.n_experts) * x.stride);
  return total;
}

uint64_t Pager::CopyBytes(int layer) const {
  return experts_paged_ ? LayerCopyBytes(*host_.header, layer)
                        : host_.header->LayerUsedBytes(layer);
}

LayerWeights Pager::WeightsAt(int layer, const uint8_t* block) const {
  // The layer's device copy has its host block's layout (its own table).
  LayerWeights w = host_.LayerAt(layer, block);
  if (experts_paged_ && w.experts.n > 0) {
    // The copy ends before the experts: they come by AcquireExperts.
    w.experts.by_request = true;
    w.experts.stride = 0;
    for (WeightRef* r : {&w.experts.gate, &w.experts.up, &w.experts.down})
      r->data = r->scales = nullptr;
  }
  return w;
}

absl::Status Pager::Init() {
  const SegmentHeader& h = *host_.header;
  // DMA straight from the segment: weights read-only, the KV pool read-write.
  RETURN_IF_ERROR(
      backend_->RegisterHost(const_cast<uint8_t*>(host_.weights), h.kv_offset, /*read_only=*/true));
  registered_.push_back(const_cast<uint8_t*>(host_.weights));
  if (h.kv_bytes > 0) {
    RETURN_IF_ERROR(backend_->RegisterHost(host_.kv, h.kv_bytes, /*read_only=*/false));
    registered_.push_back(host_.kv);
  }

  // Sharing: the board of this device, locked while the resident blocks are
  // set up so that workers starting together take turns. Not with experts
  // paged (its blocks are whole layers).
  experts_paged_ = plan_.experts_paged;
  if (!options_.share_segment.empty() && !backend_->device_uuid().empty() && !experts_paged_) {
    ASSIGN_OR_RETURN(board_, ShareBoard::Open(options_.share_segment, options_.share_generation,
                                              backend_->device_uuid(), n_layers_ + 1));
    sharing_.enabled = true;
  }
  std::optional<ShareBoard::Lock> lock;
  if (board_) lock.emplace(*board_);

  // Globals: one upload of their region (or another worker's), pointers
  // rebased. With the embedding on the host, the region after its table,
  // this worker's own (a shared block holds the whole region).
  const DeviceGlobals dg = DeviceGlobalsOf(h, plan_.embedding_on_host);
  bool imported = false;
  const uint8_t* g = nullptr;
  if (dg.embedding_excluded) {
    ASSIGN_OR_RETURN(void* m, Alloc(dg.bytes));
    backend_->Upload(m, host_.weights + dg.offset, dg.bytes);
    g = static_cast<const uint8_t*>(m);
  } else {
    ASSIGN_OR_RETURN(
        g, Obtain(n_layers_, host_.weights + dg.offset, dg.bytes, /*make=*/true, &imported));
  }
  sharing_.globals_shared = imported;
  auto rebase_global = [&](WeightRef w) {
    auto rb = [&](const void* p) -> const void* {
      return p == nullptr ? nullptr
                          : g + (static_cast<const uint8_t*>(p) - (host_.weights + dg.offset));
    };
    w.data = rb(w.data);
    w.scales = rb(w.scales);
    return w;
  };
  if (dg.embedding_excluded) {
    globals_.tok_embd_host = host_.Global("tok_embd");
    globals_.tok_embd = globals_.tok_embd_host;
    globals_.tok_embd.data = nullptr;
    globals_.tok_embd.scales = nullptr;
  } else {
    globals_.tok_embd = rebase_global(host_.Global("tok_embd"));
  }
  globals_.output_norm = static_cast<const float*>(rebase_global(host_.Global("output_norm")).data);
  globals_.output =
      h.model.tied_embeddings ? globals_.tok_embd : rebase_global(host_.Global("output"));

  // Resident layers: uploaded once. A layer another worker of this device
  // holds is used in place, resident in the plan or not.
  resident_block_.assign(size_t(n_layers_), nullptr);
  peer_block_.assign(size_t(n_layers_), nullptr);
  for (int l = 0; l < n_layers_; ++l) {
    const bool want = plan_.resident[size_t(l)];
    ASSIGN_OR_RETURN(const uint8_t* b,
                     Obtain(l, host_.weights + h.LayerOffset(l), CopyBytes(l), want, &imported));
    if (b != nullptr && imported && !want && !options_.shared_in_place) {
      peer_block_[size_t(l)] = b;  // taken into the slots like a peer's copy
      b = nullptr;
    }
    if (b == nullptr) {
      paged_layers_.push_back(l);
      continue;
    }
    resident_block_[size_t(l)] = b;
    if (imported) {
      ++sharing_.layers_shared;
      sharing_.shared_bytes += h.LayerUsedBytes(l);
    }
  }
  lock.reset();
  if (sharing_.layers_shared > 0) {
    // Layers used in place count as resident in the plan this worker reports
    // (its own allocations, resident_bytes, stay as planned).
    for (int l = 0; l < n_layers_; ++l)
      plan_.resident[size_t(l)] = resident_block_[size_t(l)] != nullptr;
    plan_.n_resident = n_layers_ - int(paged_layers_.size());
    plan_.paged_weight_bytes_per_step = 0;
    for (int l : paged_layers_) plan_.paged_weight_bytes_per_step += h.LayerUsedBytes(l);
  }

  // Weight slots.
  if (!paged_layers_.empty()) {
    uint64_t slot_bytes = 0;  // a slot holds the largest layer (dense part)
    for (int l = 0; l < n_layers_; ++l) slot_bytes = std::max(slot_bytes, CopyBytes(l));
    for (int s = 0; s < plan_.slots; ++s) {
      ASSIGN_OR_RETURN(void* m, Alloc(slot_bytes));
      slot_mem_.push_back(static_cast<uint8_t*>(m));
      slot_layer_.push_back(-1);
      slot_from_peer_.push_back(false);
      slot_share_.push_back(0);
      slot_bytes_.push_back(0);
      slot_copied_.push_back(backend_->MakeEvent());
      slot_free_.push_back(backend_->MakeEvent());
    }
    // The host link as this worker sees it, for the PCIe-bound metrics.
    if (!options_.compute_only) {
      ASSIGN_OR_RETURN(link_gbps_, TimeLayerCopy(nullptr, paged_layers_[0]));
    }
    RETURN_IF_ERROR(SetUpPeers());
    if (options_.hybrid_policy && !options_.host_share) {
      profile_.link_gbps = link_gbps_;
      profile_.host_gbps = options_.host_gbps;
      profile_.memory_gbps = options_.memory_gbps;
      options_.host_share = [this](int n) {
        return HostShare(profile_, *options_.hybrid_policy, n);
      };
      tune_share_ =
          options_.hybrid_policy->mode == HybridPolicy::Mode::kAuto && options_.hybrid_policy->tune;
    }
    // The first copies are made for a decode step (one token row).
    step_share_ = options_.host_share ? std::clamp(options_.host_share(1), 0.0, 1.0) : 0.0;
    for (int s = 0; s < plan_.slots; ++s) IssueWeightCopy(next_issue_++);
  }
  if (experts_paged_) RETURN_IF_ERROR(InitExperts());

  // KV: per-layer areas (always, for steps the cache cannot hold) and the cache.
  const int areas = std::max(plan_.slots, 2);
  for (int a = 0; a < areas; ++a) {
    ASSIGN_OR_RETURN(void* m,
                     Alloc(std::max<uint64_t>(plan_.slot_kv_blocks, 1) * h.kv_block_bytes));
    kv_areas_.push_back(static_cast<uint8_t*>(m));
    area_ready_.push_back(backend_->MakeEvent());
    area_free_.push_back(backend_->MakeEvent());
  }
  if (plan_.kv_cache_blocks > 0) {
    ASSIGN_OR_RETURN(void* m, Alloc(plan_.kv_cache_bytes));
    kv_cache_ = static_cast<uint8_t*>(m);
    for (int64_t b = int64_t(plan_.kv_cache_blocks) - 1; b >= 0; --b)
      cache_free_.push_back(int32_t(b));
  }
  cache_filled_ = backend_->MakeEvent();
  kv_written_ = backend_->MakeEvent();
  wb_done_ = backend_->MakeEvent();
  return backend_->Synchronize();
}

absl::Status Pager::InitExperts() {
  const SegmentHeader& h = *host_.header;
  const ModelConfig& c = h.model;
  if (plan_.expert_slots < uint64_t(c.n_experts) || plan_.expert_slot_bytes == 0)
    return absl::InternalError("the plan's expert cache holds less than one layer's experts");
  ASSIGN_OR_RETURN(void* m, Alloc(plan_.expert_slots * plan_.expert_slot_bytes));
  expert_mem_ = static_cast<uint8_t*>(m);
  // LFU's counts halve after every expert has been used about 4 times.
  expert_cache_ = std::make_unique<ExpertCache>(int(plan_.expert_slots), n_layers_, c.n_experts,
                                                options_.expert_eviction, 4 * plan_.total_experts);
  experts_copied_ = backend_->MakeEvent();
  experts_free_ = backend_->MakeEvent();
  backend_->Record(Q::kCompute, experts_free_);
  host_experts_ = options_.expert_host_rows != 0 && !options_.compute_only;
  if (options_.expert_misses_mapped && !options_.compute_only) {
    mapped_weights_ = static_cast<const uint8_t*>(backend_->MappedHostView(host_.weights));
    if (mapped_weights_ == nullptr)
      return absl::InvalidArgumentError(
          absl::StrCat("experts read in place (expert_misses_mapped): ", backend_->name(),
                       " cannot read the segment's host memory in place"));
  }
  if (link_gbps_ == 0 && !options_.compute_only) {
    // No layer is paged: the link as one expert copy sees it (best of 3).
    int layer = 0;
    while (h.Layer(layer).experts.n_experts == 0) ++layer;
    const uint64_t bytes = h.Layer(layer).experts.expert_bytes;
    const uint8_t* src = host_.weights + h.LayerOffset(layer) + h.Layer(layer).experts.offset;
    const BackendEvent done = backend_->MakeEvent();
    for (int r = 0; r < 3; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      backend_->CopyIn(Q::kCopyIn, expert_mem_, src, bytes);
      backend_->Record(Q::kCopyIn, done);
      RETURN_IF_ERROR(backend_->HostWait(done));
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      link_gbps_ = std::max(link_gbps_, double(bytes) / std::max(secs, 1e-9) / 1e9);
    }
  }
  if (host_experts_ && options_.expert_host_rows < 0) {
    profile_.link_gbps = link_gbps_;
    profile_.host_gbps = options_.host_gbps;
    profile_.memory_gbps = options_.memory_gbps;
    // Any share from none to all, probed a tenth at a time.
    ShareTuner::Options o;
    o.lo = 0;
    o.hi = 1;
    o.delta = 0.1;
    expert_tuner_ = ShareTuner(o);
    tune_experts_ = options_.tune_expert_share;
  }
  if (plan_.expert_prefetch) {
    // Every sparse layer's router on the device, for the engine's
    // predictions one layer early.
    ASSIGN_OR_RETURN(void* r, Alloc(std::max<uint64_t>(plan_.router_bytes, 1)));
    uint8_t* at = static_cast<uint8_t*>(r);
    routers_.assign(size_t(n_layers_), WeightRef{});
    for (int l = 0; l < n_layers_; ++l) {
      const TensorEntry* t = h.LayerTensor(l, "router");
      if (h.Layer(l).experts.n_experts == 0 || t == nullptr) continue;
      WeightRef w = host_.LayerTensor(l, "router");
      backend_->Upload(at, w.data, t->bytes);
      w.data = at;
      routers_[size_t(l)] = w;
      at += AlignUp(t->bytes, kTensorAlign);
    }
  }
  if (options_.preload_experts && !options_.compute_only) {
    // Layer by layer, as far as the cache holds: what fits is never copied
    // again (every expert, when the budget holds them all).
    for (int l = 0; l < n_layers_; ++l) {
      for (int e = 0; e < int(h.Layer(l).experts.n_experts); ++e) {
        if (expert_cache_->used() == expert_cache_->slots()) break;
        const int s = expert_cache_->Insert(l, e);
        CopyExpert(l, e, s);
      }
    }
    expert_cache_->UnpinAll();
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ParseExpertMisses(std::string_view s) {
  if (s == "copy" || s == "mapped") return s == "mapped";
  return absl::InvalidArgumentError(
      absl::StrCat("--expert-misses=", std::string(s), ": expected copy or mapped"));
}

absl::Status CheckExpertHostShare(double share) {
  if (share == -1 || (share >= 0 && share <= 1)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("--expert-host-share=", share, ": expected 0..1, or -1 (by bandwidth)"));
}

bool Pager::HostTakes(int rows) const {
  if (!host_experts_) return false;
  if (options_.expert_host_rows > 0) return rows <= options_.expert_host_rows;
  // Auto: the host's throughput at this many rows against the link's.
  return profile_.link_gbps > 0 && !profile_.host_gbps.empty() &&
         HostGbps(profile_, rows) >= profile_.link_gbps;
}

double Pager::expert_step_share() const {
  return tune_experts_ ? expert_share_ : ExpertHostShare();
}

double Pager::ExpertHostShare() const {
  if (options_.expert_host_share >= 0) return options_.expert_host_share;
  const double host = HostGbps(profile_, 1), link = profile_.link_gbps;
  return host > 0 && link > 0 ? host / (host + link) : 1.0;
}

void Pager::CopyExpert(int layer, int e, int slot) {
  const SegmentHeader& h = *host_.header;
  const ExpertTable& x = h.Layer(layer).experts;
  backend_->CopyIn(Q::kCopyIn, expert_mem_ + uint64_t(slot) * plan_.expert_slot_bytes,
                   host_.weights + h.LayerOffset(layer) + x.ExpertOffset(e), x.expert_bytes);
}

absl::Status Pager::AcquireExperts(int layer, const int32_t* rows, int n_experts, ExpertRef* out) {
  if (!experts_paged_ || layer < 0 || layer >= n_layers_)
    return absl::InternalError(absl::StrCat("pager: no paged experts for layer ", layer));
  const SegmentHeader& h = *host_.header;
  const ExpertTable& x = h.Layer(layer).experts;
  if (n_experts != int(x.n_experts))
    return absl::InternalError(absl::StrCat("pager: layer ", layer, " has ", x.n_experts,
                                            " experts, asked for ", n_experts));
  ExpertCache& cache = *expert_cache_;
  const uint8_t* host_block = host_.weights + h.LayerOffset(layer);
  // gpt-oss: a host expert's biases, its row of each of the layer's tables
  // in the segment (null when the layer has none), looked up once a call.
  const float* gate_b = host_experts_ ? host_.LayerVector(layer, "exp_gate_b") : nullptr;
  const float* up_b = host_experts_ ? host_.LayerVector(layer, "exp_up_b") : nullptr;
  const float* down_b = host_experts_ ? host_.LayerVector(layer, "exp_down_b") : nullptr;
  auto host_bias = [](const float* t, int e, int width) -> const float* {
    return t == nullptr ? nullptr : t + int64_t(e) * width;
  };
  auto device_view = [&](int slot) {
    return host_.ExpertAt(layer, expert_mem_ + uint64_t(slot) * plan_.expert_slot_bytes);
  };
  // Hits first, pinned so that the misses below do not take their slots.
  cache.UnpinAll();
  expert_need_.clear();
  for (int e = 0; e < n_experts; ++e) {
    if (rows[e] <= 0) continue;
    cache.Use(layer, e);
    const int s = cache.Find(layer, e);
    if (s >= 0) {
      cache.Pin(s);
      out[e] = device_view(s);
      ++stats_.expert_hits;
    } else {
      expert_need_.push_back(e);
    }
  }
  // Misses: the host computes those with few rows in place; the others are
  // copied into a slot (a free one, else the policy's victim). Every earlier
  // chunk's experts have been computed before any slot is overwritten.
  // Auto: the host takes only its share of the misses it could take (by
  // bandwidth, fewest rows first), so that its products and the link's
  // copies of the others end together; a fixed row limit gives it all.
  int host_quota = INT_MAX;
  if (host_experts_ && options_.expert_host_rows < 0) {
    int could = 0;
    for (int32_t e : expert_need_) could += HostTakes(rows[e]);
    // The fraction left over carries to the next call (at one miss a
    // layer, rounding alone would give the host all or none of them).
    const double want = could * expert_step_share() + host_carry_;
    host_quota = int(std::floor(want));
    host_carry_ = want - host_quota;
    if (host_quota < could)
      std::stable_sort(expert_need_.begin(), expert_need_.end(),
                       [&](int32_t a, int32_t b) { return rows[a] < rows[b]; });
  }
  bool copied = false;
  std::vector<int32_t> admit;
  for (int32_t e : expert_need_) {
    if (options_.compute_only) {  // benchmarks: compute on whatever a slot holds
      const int s = cache.Find(layer, e) >= 0 ? cache.Find(layer, e) : cache.Insert(layer, e);
      if (s < 0) return absl::InternalError("pager: the expert cache is smaller than a layer");
      out[e] = device_view(s);
      continue;
    }
    if (host_quota > 0 && HostTakes(rows[e])) {
      --host_quota;
      out[e] = host_.ExpertAt(layer, host_block + x.ExpertOffset(e));
      out[e].on_host = true;
      out[e].gate_b = host_bias(gate_b, e, h.model.expert_ffn);
      out[e].up_b = host_bias(up_b, e, h.model.expert_ffn);
      out[e].down_b = host_bias(down_b, e, h.model.hidden);
      ++stats_.expert_host;
      stats_.host_expert_bytes += x.expert_bytes;
      stats_.host_weight_bytes += x.expert_bytes;
      if (cache.WorthAdmitting(layer, e)) admit.push_back(e);
      continue;
    }
    if (mapped_weights_ != nullptr) {  // the device reads it where it is
      out[e] = host_.ExpertAt(layer, mapped_weights_ + h.LayerOffset(layer) + x.ExpertOffset(e));
      ++stats_.expert_mapped;
      stats_.mapped_expert_bytes += x.expert_bytes;
      stats_.h2d_weight_bytes += x.expert_bytes;
      if (cache.WorthAdmitting(layer, e)) admit.push_back(e);
      continue;
    }
    ExpertCache::Key evicted;
    const int s = cache.Insert(layer, e, &evicted);
    if (s < 0) return absl::InternalError("pager: the expert cache is smaller than a layer");
    if (!copied) backend_->Wait(Q::kCopyIn, experts_free_);
    copied = true;
    CopyExpert(layer, e, s);
    out[e] = device_view(s);
    ++stats_.expert_misses;
    stats_.expert_evictions += evicted.layer >= 0;
    stats_.h2d_expert_bytes += x.expert_bytes;
    stats_.h2d_weight_bytes += x.expert_bytes;
  }
  // The chunk's own copies (and any earlier admissions) before its products.
  backend_->Record(Q::kCopyIn, experts_copied_);
  backend_->Wait(Q::kCompute, experts_copied_);
  // Host-computed (or read in place) experts hot enough to be worth a slot
  // come in behind, for later steps (nothing waits for them now).
  for (int32_t e : admit) {
    if (!cache.WorthAdmitting(layer, e)) continue;
    ExpertCache::Key evicted;
    const int s = cache.Insert(layer, e, &evicted);
    if (s < 0) break;
    if (!copied) backend_->Wait(Q::kCopyIn, experts_free_);
    copied = true;
    CopyExpert(layer, e, s);
    ++stats_.expert_admitted;
    stats_.expert_evictions += evicted.layer >= 0;
    stats_.h2d_expert_bytes += x.expert_bytes;
    stats_.h2d_weight_bytes += x.expert_bytes;
  }
  return absl::OkStatus();
}

WeightRef Pager::PrefetchRouter(int layer) {
  return layer >= 0 && size_t(layer) < routers_.size() ? routers_[size_t(layer)] : WeightRef{};
}

const float* Pager::PrefetchRouterBias(int layer) {
  if (PrefetchRouter(layer).rows == 0) return nullptr;
  return host_.LayerVector(layer, "router_b");  // the segment's (host memory)
}

void Pager::PrefetchExperts(int layer, const int32_t* rows, int n_experts) {
  if (!experts_paged_ || options_.compute_only || layer < 0 || layer >= n_layers_) return;
  const ExpertTable& x = host_.header->Layer(layer).experts;
  if (n_experts != int(x.n_experts)) return;
  // Predicted experts not cached, that the host would not compute, into
  // slots the current chunk does not use; nothing waits for them until the
  // layer's own AcquireExperts.
  ExpertCache& cache = *expert_cache_;
  // When the prediction covers half the layer or more (a large batch), the
  // layer will need nearly all of it: copy it a layer ahead like a whole
  // layer, whatever the counts say.
  int predicted = 0;
  for (int e = 0; e < n_experts; ++e) predicted += rows[e] > 0;
  const bool bulk = 2 * predicted >= n_experts;
  bool waited = false;
  for (int e = 0; e < n_experts; ++e) {
    if (rows[e] <= 0 || cache.Find(layer, e) >= 0 || HostTakes(rows[e])) continue;
    // A guess may be wrong: under LFU it takes a slot only from a colder
    // expert (or a free slot), unless it is most of the layer.
    if (!bulk && cache.policy() == ExpertEviction::kLfu && !cache.WorthAdmitting(layer, e))
      continue;
    ExpertCache::Key evicted;
    const int s = cache.Insert(layer, e, &evicted);
    if (s < 0) break;
    if (!waited) backend_->Wait(Q::kCopyIn, experts_free_);
    waited = true;
    CopyExpert(layer, e, s);
    ++stats_.expert_prefetched;
    stats_.expert_evictions += evicted.layer >= 0;
    stats_.h2d_expert_bytes += x.expert_bytes;
    stats_.h2d_weight_bytes += x.expert_bytes;
  }
}

void Pager::ReleaseExperts(int layer) {
  // The chunk's expert products are enqueued: its slots may be overwritten
  // once they have run.
  backend_->Record(Q::kCompute, experts_free_);
  expert_cache_->UnpinAll();
}

void Pager::IssueWeightCopy(uint64_t g) {
  const int s = int(g % slot_mem_.size());
  const int layer = paged_layers_[size_t(g % paged_layers_.size())];
  // The slot's previous layer must be done computing before it is overwritten.
  backend_->Wait(Q::kCopyIn, slot_free_[size_t(s)]);
  const uint8_t* peer = sharing_.peer_used ? peer_block_[size_t(layer)] : nullptr;
  slot_bytes_[size_t(s)] =
      options_.compute_only ? 0 : CopyLayerRows(s, layer, /*have_share=*/-1, step_share_);
  backend_->Record(Q::kCopyIn, slot_copied_[size_t(s)]);
  slot_layer_[size_t(s)] = layer;
  slot_from_peer_[size_t(s)] = peer != nullptr;
  slot_share_[size_t(s)] = step_share_;
}

absl::StatusOr<LayerWeights> Pager::AcquireLayer(int layer) {
  if (layer < 0 || layer >= n_layers_) return absl::OutOfRangeError(absl::StrCat("layer ", layer));
  if (const uint8_t* b = resident_block_[size_t(layer)]) return WeightsAt(layer, b);
  const int s = int(next_use_ % slot_mem_.size());
  if (slot_layer_[size_t(s)] != layer)
    return absl::InternalError(absl::StrCat("pager: layer ", layer,
                                            " asked out of order (slot holds layer ",
                                            slot_layer_[size_t(s)], ")"));
  ++next_use_;
  current_slot_ = s;
  // A slot copied for a larger host share than this step's (a prefill after
  // decode steps) gets the missing device rows first.
  double share = slot_share_[size_t(s)];
  if (step_share_ < share) {
    if (!options_.compute_only)
      slot_bytes_[size_t(s)] += CopyLayerRows(s, layer, share, step_share_);
    backend_->Record(Q::kCopyIn, slot_copied_[size_t(s)]);
    share = slot_share_[size_t(s)] = step_share_;
  }
  backend_->Wait(Q::kCompute, slot_copied_[size_t(s)]);
  (slot_from_peer_[size_t(s)] ? stats_.peer_weight_bytes : stats_.h2d_weight_bytes) +=
      slot_bytes_[size_t(s)];
  LayerWeights w = WeightsAt(layer, slot_mem_[size_t(s)]);
  if (share > 0) {
    // The host's rows of each matrix, read in place from the segment.
    const LayerWeights host = WeightsAt(layer, host_.weights + host_.header->LayerOffset(layer));
    auto split = [&](WeightRef& dev, const WeightRef& whole, const float* bias, HostRows* out) {
      const int64_t rows = DeviceRows(whole.rows, share);
      if (rows == whole.rows) return;
      *out = HostRows{whole, rows, bias};
      dev.rows = rows;
      stats_.host_weight_bytes +=
          PayloadBytes(whole.dtype, uint64_t(whole.rows - rows), uint64_t(whole.cols));
    };
    split(w.wq, host.wq, host.bq, &w.host.wq);
    split(w.wk, host.wk, host.bk, &w.host.wk);
    split(w.wv, host.wv, host.bv, &w.host.wv);
    split(w.wo, host.wo, host.bo, &w.host.wo);
    split(w.w_gate, host.w_gate, nullptr, &w.host.w_gate);
    split(w.w_up, host.w_up, nullptr, &w.host.w_up);
    split(w.w_down, host.w_down, nullptr, &w.host.w_down);
  }
  return w;
}

void Pager::ReleaseLayer(int layer) {
  if (resident_block_[size_t(layer)] != nullptr || current_slot_ < 0) return;
  backend_->Record(Q::kCompute, slot_free_[size_t(current_slot_)]);
  current_slot_ = -1;
  // Refill the slot with the paged layer S positions ahead (this step's or
  // the next step's: the order of paged layers repeats every step).
  IssueWeightCopy(next_issue_++);
}

absl::Status Pager::BeginStep(const StepBatch& batch, std::vector<int32_t>* block_ids) {
  const SegmentHeader& h = *host_.header;
  // The tuners (dense share, experts' share) time the whole step.
  step_rows_ = batch.total_tokens();
  step_begin_ = std::chrono::steady_clock::now();
  if (options_.host_share) {
    step_share_ = std::clamp(options_.host_share(step_rows_), 0.0, 1.0);
    if (tune_share_) step_share_ = tuner_.Next(step_rows_, step_share_);
  }
  if (tune_experts_)
    expert_share_ = std::clamp(expert_tuner_.Next(step_rows_, ExpertHostShare()), 0.0, 1.0);
  const int bt = int(h.block_tokens);
  // Distinct pool blocks of the step and the pool slots of its new rows.
  step_host_blocks_.clear();
  step_host_slots_.clear();
  std::unordered_map<int32_t, int32_t> index;  // pool block -> position in step_host_blocks_
  for (int32_t b : *block_ids) {
    if (index.emplace(b, int32_t(step_host_blocks_.size())).second) step_host_blocks_.push_back(b);
  }
  // Blocks holding committed rows (positions < start_pos) must be brought in;
  // blocks only this step writes need no copy.
  std::unordered_map<int32_t, bool> has_rows;
  for (const SeqStep& s : batch.seqs) {
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      const int32_t p = s.start_pos + int32_t(i);
      step_host_slots_.push_back(s.block_table[size_t(p / bt)] * bt + p % bt);
    }
    const int32_t committed = (s.start_pos + bt - 1) / bt;
    for (int32_t b = 0; b < committed; ++b) has_rows[s.block_table[size_t(b)]] = true;
  }
  const uint64_t n = step_host_blocks_.size();
  kv_cached_ = kv_cache_ != nullptr && n <= plan_.kv_cache_blocks;
  if (!kv_cached_ && n > plan_.slot_kv_blocks)
    return absl::ResourceExhaustedError(
        absl::StrCat("step reads ", n, " KV blocks per layer; this worker's plan holds ",
                     std::max(plan_.slot_kv_blocks, plan_.kv_cache_blocks)));
  step_dev_blocks_.assign(n, 0);
  if (kv_cached_) {
    ++stats_.kv_cached_steps;
    // Keep only blocks this step uses, and only those of sequences that
    // continue exactly where this pager's previous step left them: a block
    // unused for a step, or a sequence that advanced elsewhere meanwhile (it
    // moved to another worker and came back), may have been rewritten in the
    // host pool. Then fill the missing ones for every layer.
    std::unordered_map<int32_t, bool> continuing;
    for (const SeqStep& s : batch.seqs) {
      auto it = prev_next_pos_.find(s.seq_id);
      if (it == prev_next_pos_.end() || it->second != s.start_pos) continue;
      for (int32_t b : s.block_table) continuing[b] = true;
    }
    for (auto it = cache_ids_.begin(); it != cache_ids_.end();) {
      if (index.count(it->first) == 0 || continuing.count(it->first) == 0) {
        cache_free_.push_back(it->second);
        it = cache_ids_.erase(it);
      } else {
        ++it;
      }
    }
    std::vector<int32_t> fill_host, fill_dev;
    for (uint64_t i = 0; i < n; ++i) {
      auto [it, inserted] = cache_ids_.emplace(step_host_blocks_[i], 0);
      if (inserted) {
        it->second = cache_free_.back();
        cache_free_.pop_back();
        if (has_rows.count(step_host_blocks_[i])) {
          fill_host.push_back(step_host_blocks_[i]);
          fill_dev.push_back(it->second);
        }
      }
      step_dev_blocks_[i] = it->second;
    }
    if (options_.compute_only) fill_host.clear();
    cache_fill_pending_ = !fill_host.empty();
    if (cache_fill_pending_) {
      for (int l = 0; l < n_layers_; ++l) {
        backend_->GatherBlocksIn(Q::kCopyIn, DeviceKv(l).base, host_.KvLayer(l).base,
                                 h.kv_block_bytes, fill_host.data(), fill_dev.data(),
                                 int(fill_host.size()), h.kv_block_bytes);
      }
      backend_->Record(Q::kCopyIn, cache_filled_);
      stats_.h2d_kv_bytes += fill_host.size() * h.kv_block_bytes * uint64_t(n_layers_);
    }
  } else {
    ++stats_.kv_paged_steps;
    step_gather_host_.clear();
    step_gather_dev_.clear();
    for (uint64_t i = 0; i < n; ++i) {
      step_dev_blocks_[i] = int32_t(i);
      if (has_rows.count(step_host_blocks_[i])) {
        step_gather_host_.push_back(step_host_blocks_[i]);
        step_gather_dev_.push_back(int32_t(i));
      }
    }
    const int ahead = std::min<int>(int(kv_areas_.size()), n_layers_);
    for (int l = 0; l < ahead; ++l) IssueKvGather(l);
  }
  for (int32_t& b : *block_ids) b = step_dev_blocks_[size_t(index[b])];
  prev_next_pos_.clear();
  for (const SeqStep& s : batch.seqs)
    prev_next_pos_[s.seq_id] = s.start_pos + int32_t(s.tokens.size());
  return absl::OkStatus();
}

KvLayerView Pager::DeviceKv(int layer) const {
  KvLayerView v = host_.KvLayer(layer);
  if (kv_cached_) {
    v.base = kv_cache_ + uint64_t(layer) * plan_.kv_cache_blocks * v.block_bytes;
    v.n_blocks = plan_.kv_cache_blocks;
  } else {
    v.base = kv_areas_[size_t(KvArea(layer))];
    v.n_blocks = plan_.slot_kv_blocks;
  }
  return v;
}

void Pager::IssueKvGather(int layer) {
  const int a = KvArea(layer);
  const uint64_t bb = host_.header->kv_block_bytes;
  backend_->Wait(Q::kCopyIn, area_free_[size_t(a)]);
  if (!options_.compute_only && !step_gather_host_.empty()) {
    backend_->GatherBlocksIn(Q::kCopyIn, kv_areas_[size_t(a)], host_.KvLayer(layer).base, bb,
                             step_gather_host_.data(), step_gather_dev_.data(),
                             int(step_gather_host_.size()), bb);
    stats_.h2d_kv_bytes += step_gather_host_.size() * bb;
  }
  backend_->Record(Q::kCopyIn, area_ready_[size_t(a)]);
}

absl::StatusOr<KvLayerView> Pager::AcquireKv(int layer) {
  if (layer < 0 || layer >= n_layers_) return absl::OutOfRangeError(absl::StrCat("layer ", layer));
  if (kv_cached_) {
    if (cache_fill_pending_) {
      backend_->Wait(Q::kCompute, cache_filled_);
      cache_fill_pending_ = false;
    }
  } else {
    backend_->Wait(Q::kCompute, area_ready_[size_t(KvArea(layer))]);
  }
  return DeviceKv(layer);
}

void Pager::ReleaseKv(int layer, const int32_t* slots, int n) {
  // Only the step's new rows go back, once the compute queue has written them.
  backend_->Record(Q::kCompute, kv_written_);
  backend_->Wait(Q::kWriteBack, kv_written_);
  const KvLayerView dev = DeviceKv(layer);
  if (!options_.compute_only) {
    backend_->ScatterKvRowsOut(Q::kWriteBack, dev, host_.KvLayer(layer), slots,
                               step_host_slots_.data(), n);
    const uint64_t row = uint64_t(dev.kv_dim) * (dev.dtype == DType::kF32 ? 4 : 2);
    stats_.d2h_kv_bytes += uint64_t(n) * row * 2;
  }
  if (!kv_cached_) {
    // The area is free once its rows are written back (which follows the
    // attention that read it); gather the layer `areas` ahead into it.
    backend_->Record(Q::kWriteBack, area_free_[size_t(KvArea(layer))]);
    if (layer + int(kv_areas_.size()) < n_layers_) IssueKvGather(layer + int(kv_areas_.size()));
  }
}

absl::Status Pager::FinishStep() {
  // The step's result counts only once every write-back has reached the host.
  backend_->Record(Q::kWriteBack, wb_done_);
  RETURN_IF_ERROR(backend_->HostWait(wb_done_));
  if (!kv_cached_) kv_seq_base_ += uint64_t(n_layers_);
  ++stats_.steps;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - step_begin_).count();
  // A tuner is told the step's time; when that settles it, the share is logged.
  auto observe = [&](ShareTuner& t, const char* steps, const char* share) {
    const bool settled = t.Settled(step_rows_);
    t.Observe(seconds);
    if (!settled && t.Settled(step_rows_))
      Log(LogLevel::kInfo, "pager", "%s of %d rows: %s settled at %.0f%%", steps, step_rows_, share,
          100 * t.Current(step_rows_));
  };
  if (tune_share_) observe(tuner_, "hybrid steps", "the host share");
  if (tune_experts_) observe(expert_tuner_, "steps", "the host's share of the missing experts");
  return absl::OkStatus();
}

}  // namespace paged
