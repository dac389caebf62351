#include "bench/bench_runner.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/segment.h"
#include "common/size_flag.h"
#include "common/status.h"
#include "store/store_service.h"
#include "worker/backends/cpu_exec/host_executor.h"
#include "worker/device.h"
#include "worker/engine/backend_factory.h"
#include "worker/engine/engine.h"
#include "worker/engine/resident_provider.h"
#include "worker/pager/host_profile.h"
#include "worker/pager/hybrid_plan.h"
#include "worker/pager/pager.h"

namespace paged {
namespace {

using Clock = std::chrono::steady_clock;
using Q = Backend::Queue;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Link bandwidth as this process sees it: the best of a few copies of up to
// 1 GiB between registered host memory and the device, each way.
absl::Status MeasureLink(Backend& b, const ModelImage& host, double* h2d_gbs, double* d2h_gbs) {
  const uint64_t bytes = std::min<uint64_t>(host.header->kv_offset, 1ull << 30);
  ASSIGN_OR_RETURN(BackendBuffer buffer, b.Allocate(bytes));
  void* dev = buffer.get();
  void* pinned = std::aligned_alloc(4096, AlignUp(bytes, 4096));
  RETURN_IF_ERROR(b.RegisterHost(const_cast<uint8_t*>(host.weights), host.header->kv_offset, true));
  RETURN_IF_ERROR(b.RegisterHost(pinned, AlignUp(bytes, 4096), false));
  const BackendEvent ev = b.MakeEvent();
  double best_in = 1e30, best_out = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    auto t0 = Clock::now();
    b.CopyIn(Q::kCopyIn, dev, host.weights, bytes);
    b.Record(Q::kCopyIn, ev);
    RETURN_IF_ERROR(b.HostWait(ev));
    auto t1 = Clock::now();
    b.CopyOut(Q::kWriteBack, pinned, dev, bytes);
    b.Record(Q::kWriteBack, ev);
    RETURN_IF_ERROR(b.HostWait(ev));
    auto t2 = Clock::now();
    if (rep > 0) {  // the first is a warm-up
      best_in = std::min(best_in, Seconds(t0, t1));
      best_out = std::min(best_out, Seconds(t1, t2));
    }
  }
  b.UnregisterHost(pinned);
  b.UnregisterHost(const_cast<uint8_t*>(host.weights));
  std::free(pinned);
  *h2d_gbs = double(bytes) / best_in / 1e9;
  *d2h_gbs = double(bytes) / best_out / 1e9;
  return absl::OkStatus();
}

struct Workload {
  std::vector<SeqStep> seqs;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> decode;  // --decode-tokens=random: each step's token
};

Workload MakeWorkload(const BenchOptions& o, const ModelConfig& c, int block_tokens) {
  Workload w;
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> tok(3, c.vocab - 1);
  const int bps = (o.prompt_len + o.gen_len + block_tokens - 1) / block_tokens;
  for (int i = 0; i < o.batch; ++i) {
    SeqStep s;
    s.seq_id = i;
    for (int b = 0; b < bps; ++b) s.block_table.push_back(i * bps + b);
    std::vector<int32_t> p(size_t(o.prompt_len));
    for (auto& t : p) t = tok(rng);
    w.prompts.push_back(p);
    w.seqs.push_back(s);
  }
  if (o.decode_tokens == "random") {
    for (int i = 0; i < o.batch; ++i) {
      std::vector<int32_t> d(size_t(o.gen_len));
      for (auto& t : d) t = tok(rng);
      w.decode.push_back(std::move(d));
    }
  }
  return w;
}

// Runs prefill then decode through `engine`; fills the two rows' times.
struct PhaseTimes {
  double prefill_s = 0;
  int prefill_steps = 0;
  std::vector<double> decode_s;
};

absl::StatusOr<PhaseTimes> RunPhases(const BenchOptions& o, Engine& engine, Workload w, Backend& b,
                                     uint64_t mem0, uint64_t* peak,
                                     const std::function<void(bool decode)>& at_phase) {
  PhaseTimes t;
  auto sample_mem = [&] {
    *peak = std::max(*peak, b.DeviceMemoryUsed() - std::min(mem0, b.DeviceMemoryUsed()));
  };
  // Warm-up (kernels loaded, scratch grown, caches primed): one prefill
  // step and one decode step of the first sequence, overwritten below.
  {
    SeqStep s = w.seqs[0];
    s.tokens.assign(
        w.prompts[0].begin(),
        w.prompts[0].begin() + std::min<long>(long(w.prompts[0].size()), o.max_step_tokens));
    ASSIGN_OR_RETURN(StepOutput warm, engine.Step(StepBatch{{s}}));
    StepBatch decode;
    for (size_t i = 0; i < w.seqs.size(); ++i) {
      SeqStep d = w.seqs[i];
      d.start_pos = 0;
      d.tokens = {warm.next_tokens[0]};
      decode.seqs.push_back(std::move(d));
    }
    RETURN_IF_ERROR(engine.Step(decode).status());
  }
  if (at_phase) at_phase(false);
  // Prefill: pack prompt chunks into steps of at most max_step_tokens.
  std::vector<size_t> done(w.seqs.size(), 0);
  std::vector<int32_t> last(w.seqs.size(), 0);
  auto t0 = Clock::now();
  while (true) {
    StepBatch batch;
    std::vector<size_t> which;
    int budget = o.max_step_tokens;
    for (size_t i = 0; i < w.seqs.size() && budget > 0; ++i) {
      const size_t left = w.prompts[i].size() - done[i];
      if (left == 0) continue;
      const size_t take = std::min<size_t>(left, size_t(budget));
      SeqStep s = w.seqs[i];
      s.start_pos = int32_t(done[i]);
      s.tokens.assign(w.prompts[i].begin() + long(done[i]),
                      w.prompts[i].begin() + long(done[i] + take));
      batch.seqs.push_back(std::move(s));
      which.push_back(i);
      budget -= int(take);
    }
    if (batch.seqs.empty()) break;
    ASSIGN_OR_RETURN(StepOutput out, engine.Step(batch));
    for (size_t k = 0; k < which.size(); ++k) {
      done[which[k]] += batch.seqs[k].tokens.size();
      last[which[k]] = out.next_tokens[k];
    }
    ++t.prefill_steps;
    sample_mem();
  }
  t.prefill_s = Seconds(t0, Clock::now());
  if (at_phase) at_phase(true);
  // Decode: every sequence one token per step.
  for (int step = 0; step + 1 < o.gen_len; ++step) {
    StepBatch batch;
    for (size_t i = 0; i < w.seqs.size(); ++i) {
      SeqStep s = w.seqs[i];
      s.start_pos = int32_t(w.prompts[i].size()) + step;
      s.tokens = {w.decode.empty() ? last[i] : w.decode[i][size_t(step)]};
      batch.seqs.push_back(std::move(s));
    }
    auto s0 = Clock::now();
    ASSIGN_OR_RETURN(StepOutput out, engine.Step(batch));
    t.decode_s.push_back(Seconds(s0, Clock::now()));
    for (size_t i = 0; i < w.seqs.size(); ++i) last[i] = out.next_tokens[i];
    sample_mem();
  }
  return t;
}

void FillBound(BenchRow& r, double h2d_gbs, double d2h_gbs) {
  const double h2d_ms = r.h2d_mb * 1e6 / (h2d_gbs * 1e9) * 1e3;
  const double d2h_ms = r.d2h_mb * 1e6 / (d2h_gbs * 1e9) * 1e3;
  r.bound_ms = std::max(h2d_ms, d2h_ms);
  r.bound_fraction = r.step_ms > 0 ? r.bound_ms / r.step_ms : 0;
  r.achieved_gbs = r.step_ms > 0 ? r.h2d_mb * 1e6 / (r.step_ms * 1e-3) / 1e9 : 0;
  if (r.compute_ms > 0 && r.bound_ms > 0) {
    const double overlap = r.compute_ms + r.bound_ms - r.step_ms;
    r.hidden_fraction = std::clamp(overlap / std::min(r.compute_ms, r.bound_ms), 0.0, 1.0);
  }
}

}  // namespace

nlohmann::json BenchRow::ToJson() const {
  return {{"mode", mode},
          {"phase", phase},
          {"batch", batch},
          {"step_ms", step_ms},
          {"tokens_per_s", tokens_per_s},
          {"h2d_mb_per_step", h2d_mb},
          {"d2h_mb_per_step", d2h_mb},
          {"achieved_gbs", achieved_gbs},
          {"bound_ms", bound_ms},
          {"bound_fraction", bound_fraction},
          {"compute_ms", compute_ms},
          {"hidden_fraction", hidden_fraction},
          {"device_peak_gib", device_peak_gib},
          {"host_mb_per_step", host_mb},
          {"host_share", host_share},
          {"h2d_mb_per_token", h2d_mb_per_token},
          {"experts_paged", experts_paged},
          {"expert_hit_rate", expert_hit_rate},
          {"expert_host_rate", expert_host_rate},
          {"expert_mapped_rate", expert_mapped_rate},
          {"host_products_per_step", host_products},
          {"host_wait_ms", host_wait_ms},
          {"host_compute_ms", host_compute_ms},
          {"host_upload_ms", host_upload_ms},
          {"host_attention_ms", host_attention_ms},
          {"host_route_ms", host_route_ms},
          {"host_acquire_ms", host_acquire_ms},
          {"host_launch_ms", host_launch_ms}};
}

absl::StatusOr<BenchReport> RunBench(const BenchOptions& o) {
  if (o.batch < 1 || o.prompt_len < 1 || o.gen_len < 2)
    return absl::InvalidArgumentError("--batch and --prompt-len must be >= 1, --gen-len >= 2");
  if (o.decode_tokens != "sampled" && o.decode_tokens != "random")
    return absl::InvalidArgumentError(
        absl::StrCat("--decode-tokens=", o.decode_tokens, ": expected sampled or random"));
  RETURN_IF_ERROR(CheckExpertHostShare(o.expert_host_share));
  ASSIGN_OR_RETURN(const bool misses_mapped, ParseExpertMisses(o.expert_misses));
  if (o.routing != "model" && o.routing != "uniform")
    return absl::InvalidArgumentError(
        absl::StrCat("--routing=", o.routing, ": expected model or uniform"));
  // Every engine of the run routes alike (0: the router's choice).
  const uint64_t routing_seed = o.routing == "uniform" ? 0x5eed : 0;
  const int bt = 16;
  std::unique_ptr<Store> store;
  std::string segment = o.segment;
  if (segment.empty()) {
    ASSIGN_OR_RETURN(auto src, OpenModel(o.model_path));
    const ModelConfig& c = src->config;
    const uint64_t blocks = uint64_t(o.batch) * uint64_t((o.prompt_len + o.gen_len + bt - 1) / bt);
    const double kv_bytes = double(blocks) * bt * 2.0 * c.kv_dim() * 4.0 * c.n_layers + (4 << 20);
    src.reset();
    StoreOptions so;
    so.model_path = o.model_path;
    so.segment = segment = absl::StrCat("paged-bench-", ::getpid());
    so.layout.weight_format = o.weight_format;
    so.layout.kv_gib = kv_bytes / double(1ull << 30);
    so.layout.block_tokens = bt;
    so.remove_on_exit = true;
    so.quiet = true;
    so.threads = o.threads;
    ASSIGN_OR_RETURN(store, Store::Start(so));
  }
  ASSIGN_OR_RETURN(auto seg, SegmentMapping::Open(segment, SegmentMapping::Access::kWorker));
  const ModelImage host = ImageOf(*seg);
  const SegmentHeader& h = *host.header;
  if (int(h.block_tokens) != bt)
    return absl::InvalidArgumentError("paged-bench needs a segment with 16-token blocks");
  const uint64_t blocks = uint64_t(o.batch) * uint64_t((o.prompt_len + o.gen_len + bt - 1) / bt);
  if (blocks > h.kv_n_blocks)
    return absl::ResourceExhaustedError(absl::StrCat("the workload needs ", blocks,
                                                     " KV blocks, segment ", segment, " has ",
                                                     h.kv_n_blocks, " (raise --kv-gib)"));

  ASSIGN_OR_RETURN(auto backend, MakeBackend(o.device, o.threads));
  const uint64_t mem0 = backend->DeviceMemoryUsed();
  BenchReport report;
  RETURN_IF_ERROR(MeasureLink(*backend, host, &report.h2d_gbs, &report.d2h_gbs));

  const Workload work = MakeWorkload(o, h.model, int(h.block_tokens));
  auto add_rows = [&](const std::string& mode, const PhaseTimes& t, const PagerStats& s0,
                      const PagerStats& s1, const PagerStats& s2, const PhaseTimes* compute,
                      uint64_t peak) {
    BenchRow pre;
    pre.mode = mode;
    pre.phase = "prefill";
    pre.batch = o.batch;
    pre.step_ms = t.prefill_s / std::max(1, t.prefill_steps) * 1e3;
    pre.tokens_per_s = double(o.batch) * o.prompt_len / t.prefill_s;
    const double pre_steps = std::max(1, t.prefill_steps);
    pre.h2d_mb =
        double(s1.h2d_weight_bytes - s0.h2d_weight_bytes + s1.h2d_kv_bytes - s0.h2d_kv_bytes) /
        pre_steps / 1e6;
    pre.d2h_mb = double(s1.d2h_kv_bytes - s0.d2h_kv_bytes) / pre_steps / 1e6;
    if (compute != nullptr)
      pre.compute_ms = compute->prefill_s / std::max(1, compute->prefill_steps) * 1e3;
    pre.device_peak_gib = double(peak) / double(1ull << 30);
    FillBound(pre, report.h2d_gbs, report.d2h_gbs);
    BenchRow dec = pre;
    dec.phase = "decode";
    dec.step_ms = Median(t.decode_s) * 1e3;
    dec.tokens_per_s = double(o.batch) / Median(t.decode_s);
    const double dec_steps = double(t.decode_s.size());
    dec.h2d_mb =
        double(s2.h2d_weight_bytes - s1.h2d_weight_bytes + s2.h2d_kv_bytes - s1.h2d_kv_bytes) /
        dec_steps / 1e6;
    dec.d2h_mb = double(s2.d2h_kv_bytes - s1.d2h_kv_bytes) / dec_steps / 1e6;
    dec.compute_ms = compute != nullptr ? Median(compute->decode_s) * 1e3 : 0;
    dec.hidden_fraction = 0;
    FillBound(dec, report.h2d_gbs, report.d2h_gbs);
    // Per token, and what the expert cache did in each phase.
    pre.h2d_mb_per_token = pre.h2d_mb * pre_steps / (double(o.batch) * o.prompt_len);
    dec.h2d_mb_per_token = dec.h2d_mb / double(o.batch);
    auto experts = [](BenchRow& r, const PagerStats& a, const PagerStats& b) {
      const double hits = double(b.expert_hits - a.expert_hits),
                   misses = double(b.expert_misses - a.expert_misses),
                   host = double(b.expert_host - a.expert_host),
                   mapped = double(b.expert_mapped - a.expert_mapped);
      const double all = hits + misses + host + mapped;
      r.experts_paged = all > 0;
      r.expert_hit_rate = all > 0 ? hits / all : 0;
      r.expert_host_rate = all > 0 ? host / all : 0;
      r.expert_mapped_rate = all > 0 ? mapped / all : 0;
    };
    experts(pre, s0, s1);
    experts(dec, s1, s2);
    report.rows.push_back(pre);
    report.rows.push_back(dec);
  };

  const bool paged_mode = o.mode == "paged" || o.mode == "both" || o.mode == "all";
  const bool hybrid_mode = o.mode == "hybrid" || o.mode == "all";
  if (!paged_mode && !hybrid_mode && o.mode != "resident")
    return absl::InvalidArgumentError(
        absl::StrCat("--mode=", o.mode, ": expected paged, hybrid, resident, both or all"));
  if (paged_mode || hybrid_mode) {
    PlanLimits limits;
    limits.budget_bytes = o.gpu_budget;
    limits.slots = o.slots;
    limits.resident = o.resident;
    // Planned for this workload, not for a worker's defaults: the largest
    // step it feeds (a prefill step of prompt chunks, or one decode token per
    // sequence), its sequences and their full contexts, on this backend.
    limits.max_step_tokens =
        std::max({std::min(o.max_step_tokens, o.batch * o.prompt_len), o.batch, 1});
    limits.max_step_seqs = std::max(o.batch, 1);
    limits.max_step_kv_tokens =
        std::max(limits.max_step_tokens, o.batch * (o.prompt_len + o.gen_len));
    limits.backend = backend->shares_host_memory() ? PlanBackend::kCpu : PlanBackend::kCuda;
    if (o.experts != "on" && o.experts != "off" && o.experts != "both")
      return absl::InvalidArgumentError(
          absl::StrCat("--experts=", o.experts, ": expected on, off or both"));
    ASSIGN_OR_RETURN(const ExpertEviction eviction, ParseExpertEviction(o.expert_eviction));
    limits.expert_paging = o.experts != "off";
    limits.expert_prefetch = o.expert_prefetch;
    ASSIGN_OR_RETURN(MemoryPlan plan, PlanMemory(h, limits));
    report.plan = plan.Describe();
    PhaseTimes compute;
    {
      // Compute alone: the same steps with no copies.
      PagerOptions compute_only;
      compute_only.compute_only = true;
      ASSIGN_OR_RETURN(auto pager, Pager::Create(backend.get(), host, plan, compute_only));
      Engine engine(backend.get(), pager.get(), h.model, int(h.block_tokens));
      engine.set_uniform_routing(routing_seed);
      RETURN_IF_ERROR(
          engine.Reserve(limits.max_step_tokens, limits.max_step_seqs, int(plan.slot_kv_blocks)));
      uint64_t peak = 0;
      ASSIGN_OR_RETURN(compute, RunPhases(o, engine, work, *backend, mem0, &peak, nullptr));
    }
    auto run = [&](const std::string& mode, const MemoryPlan& plan, const PagerOptions& po,
                   HostExecutor* host_exec) -> absl::Status {
      ASSIGN_OR_RETURN(auto pager, Pager::Create(backend.get(), host, plan, po));
      Engine engine(backend.get(), pager.get(), h.model, int(h.block_tokens));
      engine.set_host_executor(host_exec);
      engine.set_uniform_routing(routing_seed);
      RETURN_IF_ERROR(
          engine.Reserve(limits.max_step_tokens, limits.max_step_seqs, int(plan.slot_kv_blocks)));
      uint64_t peak = 0;
      PagerStats s0, s1;
      Engine::HostPathTimes e0, e1;
      double prefill_share = 0;
      ASSIGN_OR_RETURN(PhaseTimes t,
                       RunPhases(o, engine, work, *backend, mem0, &peak, [&](bool decode) {
                         (decode ? s1 : s0) = pager->stats();
                         (decode ? e1 : e0) = engine.host_path_times();
                         if (decode) prefill_share = pager->step_share();
                       }));
      const PagerStats s2 = pager->stats();
      const Engine::HostPathTimes e2 = engine.host_path_times();
      add_rows(mode, t, s0, s1, s2, &compute, peak);
      const auto path = [](BenchRow& r, const Engine::HostPathTimes& a,
                           const Engine::HostPathTimes& b, double steps) {
        steps = std::max(steps, 1.0);
        r.host_products = double(b.products - a.products) / steps;
        r.host_wait_ms = (b.wait_s - a.wait_s) / steps * 1e3;
        r.host_compute_ms = (b.compute_s - a.compute_s) / steps * 1e3;
        r.host_upload_ms = (b.upload_s - a.upload_s) / steps * 1e3;
        r.host_attention_ms = (b.attention_s - a.attention_s) / steps * 1e3;
        r.host_route_ms = (b.route_s - a.route_s) / steps * 1e3;
        r.host_acquire_ms = (b.acquire_s - a.acquire_s) / steps * 1e3;
        r.host_launch_ms = (b.launch_s - a.launch_s) / steps * 1e3;
      };
      path(report.rows[report.rows.size() - 2], e0, e1, double(t.prefill_steps));
      path(report.rows.back(), e1, e2, double(t.decode_s.size()));
      if (host_exec != nullptr) {
        // The rows the host read in place, and a bound that counts both paths.
        BenchRow& pre = report.rows[report.rows.size() - 2];
        BenchRow& dec = report.rows.back();
        pre.host_share = prefill_share;
        dec.host_share = pager->step_share();
        pre.host_mb = double(s1.host_weight_bytes - s0.host_weight_bytes) /
                      std::max(1, t.prefill_steps) / 1e6;
        dec.host_mb =
            double(s2.host_weight_bytes - s1.host_weight_bytes) / double(t.decode_s.size()) / 1e6;
        const HybridProfile& prof = pager->hybrid_profile();
        for (BenchRow* r : {&pre, &dec}) {
          const int rows =
              r == &pre ? std::min(o.batch * o.prompt_len, o.max_step_tokens) : o.batch;
          const double host_gbps = HostGbps(prof, rows);
          const double host_ms = host_gbps > 0 ? r->host_mb * 1e6 / (host_gbps * 1e9) * 1e3 : 0;
          // Both paths read one memory: where its budget is given, their
          // bytes together over it.
          const double memory_ms = prof.memory_gbps > 0 && r->host_mb > 0
                                       ? (r->h2d_mb + r->host_mb) / prof.memory_gbps
                                       : 0;
          r->bound_ms = std::max({r->bound_ms, host_ms, memory_ms});
          r->bound_fraction = r->step_ms > 0 ? r->bound_ms / r->step_ms : 0;
        }
        report.hybrid =
            DescribeHybrid(prof, *po.hybrid_policy, double(plan.paged_weight_bytes_per_step));
        if (const double tuned = pager->tuned_expert_share(o.batch); tuned >= 0)
          absl::StrAppend(
              &report.hybrid,
              absl::StrFormat("  tuned on the decode steps: the host's share of the "
                              "missing experts %.0f%% (%s)\n",
                              100 * tuned,
                              pager->expert_share_settled(o.batch) ? "settled" : "probing"));
        if (const double tuned = pager->tuned_share(o.batch); tuned >= 0)
          absl::StrAppend(
              &report.hybrid,
              absl::StrFormat("  tuned on the decode steps: host share %.0f%% (%s)\n", 100 * tuned,
                              pager->share_settled(o.batch) ? "settled" : "probing"));
        pager.reset();
      }
      return absl::OkStatus();
    };
    PagerOptions paged_options;
    paged_options.expert_eviction = eviction;
    paged_options.expert_misses_mapped = misses_mapped;
    if (paged_mode) RETURN_IF_ERROR(run("paged", plan, paged_options, nullptr));
    if (paged_mode && o.experts == "both" && plan.experts_paged) {
      // The same model paged as whole layers, experts included.
      PlanLimits whole = limits;
      whole.expert_paging = false;
      absl::StatusOr<MemoryPlan> wplan = PlanMemory(h, whole);
      if (wplan.ok()) {
        absl::StrAppend(&report.plan, "layers mode's plan (whole layers, experts included):\n",
                        wplan->Describe());
        RETURN_IF_ERROR(run("layers", *wplan, PagerOptions{}, nullptr));
      } else {  // whole layers may not fit where experts do
        absl::StrAppend(&report.plan, "layers mode: ", wplan.status().message(), "\n");
      }
    }
    // The hybrid worker's plan: an untied model's embedding table stays on
    // the host, which may buy a resident layer.
    MemoryPlan hplan;
    if (hybrid_mode) {
      PlanLimits hybrid_limits = limits;
      hybrid_limits.embedding_on_host = true;
      ASSIGN_OR_RETURN(hplan, PlanMemory(h, hybrid_limits));
      if (hplan.n_paged() == 0 && !hplan.experts_paged && o.mode == "hybrid")
        return absl::InvalidArgumentError("--mode=hybrid: nothing is paged");
    }
    if (hybrid_mode && hplan.n_paged() == 0 && !hplan.experts_paged) {
      // --mode=all: with the embedding table on the host every layer fits,
      // so the hybrid worker runs resident (the resident rows).
      absl::StrAppend(&report.plan, "hybrid mode's plan: every layer resident\n");
    } else if (hybrid_mode) {
      ASSIGN_OR_RETURN(HybridPolicy policy, ParseHybridPolicy(o.host_compute));
      ASSIGN_OR_RETURN(
          cpu_exec::ExecPoolOptions eo,
          cpu_exec::HostExecutorOptions(o.host_threads, o.host_pin, o.host_activations));
      std::unique_ptr<HostExecutor> host_exec = cpu_exec::MakeHostExecutor(eo);
      int layer = 0;
      while (layer < h.model.n_layers && hplan.resident[size_t(layer)]) ++layer;
      if (layer == h.model.n_layers) layer = 0;  // only experts are paged
      PagerOptions po;
      po.hybrid_policy = policy;
      po.memory_gbps = o.memory_gbps;
      po.expert_eviction = eviction;
      // Missing experts with few rows: on the host where it is faster.
      if (hplan.experts_paged) po.expert_host_rows = -1;
      po.expert_host_share = o.expert_host_share;
      po.expert_misses_mapped = misses_mapped;
      po.tune_expert_share = o.tune_expert_share;
      ASSIGN_OR_RETURN(po.host_gbps, MeasureHostExecutor(*host_exec, host, layer, {1, 4, 16, 64}));
      report.hybrid = host_exec->Describe();
      absl::StrAppend(&report.plan, "hybrid mode's plan: ", hplan.n_resident,
                      " resident layers (the embedding table ",
                      hplan.embedding_on_host ? "on the host)\n" : "on the device)\n");
      RETURN_IF_ERROR(run("hybrid", hplan, po, host_exec.get()));
    }
  }
  if (o.mode == "resident" || o.mode == "both" || o.mode == "all") {
    const auto gpus = ListGpus();
    const uint64_t need =
        h.kv_offset + blocks * h.kv_block_bytes * uint64_t(h.model.n_layers) + (4ull << 30);
    const bool fits =
        o.device.rfind("cpu", 0) == 0 || (!gpus.empty() && need < gpus[0].total_bytes);
    if (fits) {
      ASSIGN_OR_RETURN(auto provider, ResidentProvider::Create(backend.get(), host, blocks));
      Engine engine(backend.get(), provider.get(), h.model, int(h.block_tokens));
      engine.set_uniform_routing(routing_seed);
      engine.set_graphs(o.graphs);
      uint64_t peak = 0;
      ASSIGN_OR_RETURN(PhaseTimes t, RunPhases(o, engine, work, *backend, mem0, &peak, nullptr));
      const Engine::GraphStats& g = engine.graph_stats();
      absl::StrAppend(&report.plan, "resident step graphs: ",
                      !o.graphs ? "off"
                      : !backend->graphs_supported()
                          ? "not on this backend"
                          : absl::StrCat(g.recorded, " recorded, ", g.replayed, " steps replayed"),
                      g.error.ok() ? "" : absl::StrCat(" (", g.error.ToString(), ")"), "\n");
      PagerStats zero;
      add_rows("resident", t, zero, zero, zero, nullptr, peak);
    } else if (o.mode == "resident") {
      return absl::ResourceExhaustedError("the model does not fit the device for --mode=resident");
    }
  }
  return report;
}

std::string FormatReport(const BenchOptions& o, const BenchReport& r) {
  std::string s =
      absl::StrFormat("link: H2D %.1f GB/s, D2H %.1f GB/s (measured)\n", r.h2d_gbs, r.d2h_gbs);
  if (!r.plan.empty()) absl::StrAppend(&s, r.plan);
  if (!r.hybrid.empty()) absl::StrAppend(&s, r.hybrid);
  absl::StrAppend(
      &s, absl::StrFormat(
              "%-8s %-7s %5s %9s %9s %9s %9s %9s %6s %7s %9s %7s %9s %7s %7s %9s %6s %6s %6s\n",
              "mode", "phase", "batch", "step ms", "tok/s", "H2D MB", "host MB", "D2H MB", "host%",
              "GB/s", "bound ms", "bound%", "comp ms", "hidden", "dev GiB", "MB/token", "e-hit",
              "e-host", "e-map"));
  for (const BenchRow& x : r.rows) {
    absl::StrAppend(
        &s, absl::StrFormat(
                "%-8s %-7s %5d %9.2f %9.1f %9.1f %9.1f %9.2f %5.0f%% %7.1f %9.2f %6.1f%% %9.2f "
                "%6.0f%% %7.2f %9.2f %6s %6s %6s\n",
                x.mode, x.phase, x.batch, x.step_ms, x.tokens_per_s, x.h2d_mb, x.host_mb, x.d2h_mb,
                100 * x.host_share, x.achieved_gbs, x.bound_ms, 100 * x.bound_fraction,
                x.compute_ms, 100 * x.hidden_fraction, x.device_peak_gib, x.h2d_mb_per_token,
                x.experts_paged ? absl::StrFormat("%.0f%%", 100 * x.expert_hit_rate) : "-",
                x.experts_paged ? absl::StrFormat("%.0f%%", 100 * x.expert_host_rate) : "-",
                x.experts_paged ? absl::StrFormat("%.0f%%", 100 * x.expert_mapped_rate) : "-"));
  }
  for (const BenchRow& x : r.rows) {
    if (x.host_route_ms > 0)
      absl::StrAppend(
          &s,
          absl::StrFormat("%s %s sparse layers per step (mean): %.2f ms enqueueing their "
                          "attention, %.2f ms waiting for the routers' logits, %.2f ms routing "
                          "and placing the experts, %.2f ms enqueueing the device's experts and "
                          "the combines\n",
                          x.mode, x.phase, x.host_attention_ms, x.host_route_ms, x.host_acquire_ms,
                          x.host_launch_ms));
    if (x.host_products <= 0) continue;
    absl::StrAppend(
        &s,
        absl::StrFormat("%s %s host path per step (mean): %.0f dispatches, %.2f ms waiting for "
                        "inputs, %.2f ms computing (%.1f GB/s of host rows), %.2f ms enqueueing "
                        "uploads; median step %.2f ms\n",
                        x.mode, x.phase, x.host_products, x.host_wait_ms, x.host_compute_ms,
                        x.host_compute_ms > 0 ? x.host_mb / x.host_compute_ms : 0, x.host_upload_ms,
                        x.step_ms));
  }
  // The process's own host memory: private pages vs the shared segment.
  const std::string status = [] {
    std::FILE* f = std::fopen("/proc/self/status", "r");
    std::string out;
    if (f == nullptr) return out;
    char line[256];
    while (std::fgets(line, sizeof(line), f)) {
      if (std::strncmp(line, "RssAnon:", 8) == 0 || std::strncmp(line, "RssShmem:", 9) == 0)
        out += line;
    }
    std::fclose(f);
    return out;
  }();
  if (!status.empty()) absl::StrAppend(&s, "host memory of this process:\n", status);
  (void)o;
  return s;
}

}  // namespace paged
