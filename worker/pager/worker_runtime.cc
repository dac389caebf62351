#include "worker/pager/worker_runtime.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "worker/backends/cpu_exec/host_executor.h"
#include "worker/device.h"
#include "worker/engine/backend_factory.h"
#include "worker/engine/generator.h"
#include "worker/engine/model_image.h"
#include "worker/pager/host_profile.h"

namespace paged {
namespace {

// N of "cuda:N"; -1 otherwise.
int CudaDeviceIndex(const std::string& device) {
  int index = -1;
  if (device.rfind("cuda:", 0) != 0 || !absl::SimpleAtoi(device.substr(5), &index)) return -1;
  return index;
}

}  // namespace

absl::Status ApplyStepFlags(const StepFlags& flags, const StepCaps* caps, PlanLimits* limits) {
  // "auto" -> 0; a positive count as it is.
  auto parse = [](const std::string& value, const char* flag, int* out) -> absl::Status {
    if (value == "auto") {
      *out = 0;
      return absl::OkStatus();
    }
    if (!absl::SimpleAtoi(value, out) || *out < 1)
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, "=", value, ": expected auto or a positive count"));
    return absl::OkStatus();
  };
  int tokens = 0, seqs = 0, kv_tokens = 0;
  RETURN_IF_ERROR(parse(flags.tokens, "max-step-tokens", &tokens));
  RETURN_IF_ERROR(parse(flags.seqs, "max-step-seqs", &seqs));
  RETURN_IF_ERROR(parse(flags.kv_tokens, "max-step-kv-tokens", &kv_tokens));
  auto cap = [](int cap, int standalone) { return cap > 0 ? cap : standalone; };
  limits->max_step_tokens =
      tokens > 0 ? tokens : cap(caps ? caps->max_step_tokens : 0, kDefaultMaxStepTokens);
  limits->max_step_seqs =
      seqs > 0 ? seqs : cap(caps ? caps->max_step_seqs : 0, kDefaultMaxStepSeqs);
  limits->max_step_kv_tokens = kv_tokens;
  limits->max_context = caps != nullptr ? std::max(caps->max_context, 0) : 0;
  return absl::OkStatus();
}

absl::StatusOr<PagerOptions::PeerCopies> ParsePeerCopies(const std::string& s) {
  if (s == "auto") return PagerOptions::PeerCopies::kAuto;
  if (s == "off") return PagerOptions::PeerCopies::kOff;
  if (s == "force") return PagerOptions::PeerCopies::kForce;
  return absl::InvalidArgumentError(
      absl::StrCat("--peer-copies must be auto, off or force, not \"", s, "\""));
}

WorkerRuntime::~WorkerRuntime() {
  // Engine and pager first: they free backend memory and unregister the mapping.
  engine_.reset();
  pager_.reset();
  host_.reset();
  backend_.reset();
}

std::string WorkerRuntime::DescribeHybrid() const {
  if (host_ == nullptr || pager_ == nullptr || pager_->hybrid_profile().host_gbps.empty())
    return host_ != nullptr ? host_->Describe() + " (the embedding table on the host)\n" : "";
  return absl::StrCat(host_->Describe(), "\n",
                      paged::DescribeHybrid(pager_->hybrid_profile(), policy_,
                                            double(pager_->plan().paged_weight_bytes_per_step)));
}

absl::StatusOr<std::vector<int32_t>> WorkerRuntime::SelfCheck(int n) {
  GenerateRequest req;
  req.prompt = {header().model.bos_id >= 0 ? header().model.bos_id : 0};
  req.max_new_tokens = n;
  req.stop_at_eos = false;
  ASSIGN_OR_RETURN(GenerateResult r, Generate(*engine_, req, header().kv_n_blocks));
  return r.tokens;
}

absl::StatusOr<std::unique_ptr<WorkerRuntime>> WorkerRuntime::Start(const WorkerOptions& opts) {
  std::unique_ptr<WorkerRuntime> w(new WorkerRuntime());
  ASSIGN_OR_RETURN(w->segment_,
                   SegmentMapping::Open(opts.segment, SegmentMapping::Access::kWorker));
  const SegmentHeader& h = w->segment_->header();
  PlanLimits limits = opts.limits;
  limits.budget_bytes = opts.gpu_budget > 0 ? opts.gpu_budget : (4ull << 30);
  if (opts.share != "auto" && opts.share != "on" && opts.share != "off")
    return absl::InvalidArgumentError(
        absl::StrCat("--share must be auto, on or off, not \"", opts.share, "\""));
  // The CPU device's products are the CPU executor's: --host-activations
  // applies to them as to the hybrid step's host side.
  ASSIGN_OR_RETURN(const bool q8, cpu_exec::ParseHostActivations(opts.host_activations));
  ASSIGN_OR_RETURN(w->backend_, MakeBackend(opts.device, opts.threads, q8));
  PagerOptions po;
  // Experts paged one by one: the share board holds whole layers, so such a
  // worker does not share (docs/pager.md, "Experts").
  bool sparse = false;
  for (int l = 0; l < h.model.n_layers; ++l) sparse |= h.Layer(l).experts.n_experts > 0;
  const bool experts_paged = sparse && limits.expert_paging;
  if ((opts.share == "on" || (opts.share == "auto" && opts.device.rfind("cuda", 0) == 0)) &&
      !w->backend_->device_uuid().empty() && !experts_paged) {
    po.share_segment = opts.segment;
    po.share_generation = h.generation;
    // What another worker of this device holds already costs this plan
    // nothing (the pager imports it; should its holder vanish meanwhile, the
    // pager makes its own copy).
    const int L = h.model.n_layers;
    ASSIGN_OR_RETURN(auto board, ShareBoard::Open(opts.segment, h.generation,
                                                  w->backend_->device_uuid(), L + 1));
    ShareBoard::Lock lock(*board);  // released before the pager takes it
    limits.globals_shared = board->IsLive(L);
    limits.layers_shared.assign(size_t(L), false);
    if (opts.shared_in_place) {
      for (int l = 0; l < L; ++l) limits.layers_shared[size_t(l)] = board->IsLive(l);
    }
  }
  if (!po.share_segment.empty() && opts.peer_copies != PagerOptions::PeerCopies::kOff) {
    // Layers peer GPUs hold: this worker keeps others resident first.
    const int L = h.model.n_layers;
    limits.layers_on_peers.assign(size_t(L), false);
    for (auto& peer :
         ShareBoard::OpenPeers(opts.segment, h.generation, w->backend_->device_uuid(), L + 1)) {
      ShareBoard::Lock lock(*peer);
      for (int l = 0; l < L; ++l)
        limits.layers_on_peers[size_t(l)] = limits.layers_on_peers[size_t(l)] || peer->IsLive(l);
    }
  }
  // GPU k of n starts its spread of resident layers k/n of the way down, so
  // that workers of different GPUs starting together hold different layers.
  if (const int index = CudaDeviceIndex(opts.device); index > 0) {
    const size_t gpus = ListGpus().size();
    if (size_t(index) < gpus) limits.rotation = double(index) / double(gpus);
  }
  // The host side (a device of its own memory, --host-compute not off): the
  // host executor keeps the embedding table of an untied model in host
  // memory, and computes its share of the paged layers (the hybrid step).
  ASSIGN_OR_RETURN(w->policy_, ParseHybridPolicy(opts.host_compute));
  const bool host_side =
      !w->backend_->shares_host_memory() && w->policy_.mode != HybridPolicy::Mode::kOff;
  if (host_side) {
    ASSIGN_OR_RETURN(
        cpu_exec::ExecPoolOptions eo,
        cpu_exec::HostExecutorOptions(opts.host_threads, opts.host_pin, opts.host_activations));
    w->host_ = cpu_exec::MakeHostExecutor(eo);
  }
  limits.embedding_on_host = host_side;
  limits.backend = w->backend_->shares_host_memory() ? PlanBackend::kCpu : PlanBackend::kCuda;
  ASSIGN_OR_RETURN(MemoryPlan plan, PlanMemory(h, limits));
  const ModelImage host = ImageOf(*w->segment_);
  po.shared_in_place = opts.shared_in_place;
  po.expert_eviction = opts.expert_eviction;
  po.expert_host_share = opts.expert_host_share;
  po.expert_misses_mapped = opts.expert_misses_mapped;
  po.tune_expert_share = opts.tune_expert_share;
  po.peer_copies = opts.peer_copies;
  if (host_side && (plan.n_paged() > 0 || plan.experts_paged)) {
    int layer = 0;
    while (layer < h.model.n_layers && plan.resident[size_t(layer)]) ++layer;
    if (layer == h.model.n_layers) layer = 0;  // only experts are paged
    absl::StatusOr<std::vector<std::pair<int, double>>> gbps =
        MeasureHostExecutor(*w->host_, host, layer, {1, 4, 16, 64});
    if (gbps.ok()) {
      po.hybrid_policy = w->policy_;
      po.host_gbps = *gbps;
      // Missing experts with few rows: computed where the host is faster.
      bool readable = true;  // the host reads the experts' types
      for (int l = 0; l < h.model.n_layers; ++l) {
        const ExpertTable& x = h.Layer(l).experts;
        for (uint32_t t = 0; t < x.n_tensors && x.n_experts > 0; ++t)
          readable = readable && w->host_->Supports(x.tensors[t].Type());
      }
      if (plan.experts_paged && readable) po.expert_host_rows = -1;
    } else {
      Log(LogLevel::kWarning, "pager", "no hybrid step: %s",
          std::string(gbps.status().message()).c_str());
    }
  }
  if (!po.hybrid_policy && !plan.embedding_on_host) w->host_.reset();  // nothing for it to do
  ASSIGN_OR_RETURN(w->pager_, Pager::Create(w->backend_.get(), host, plan, po));
  w->engine_ = std::make_unique<Engine>(w->backend_.get(), w->pager_.get(), host.config(),
                                        int(host.header->block_tokens));
  w->engine_->set_host_executor(w->host_.get());
  RETURN_IF_ERROR(
      w->engine_->Reserve(limits.max_step_tokens, limits.max_step_seqs, int(plan.slot_kv_blocks)));
  return w;
}

}  // namespace paged
