#include "client/pagectl/commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "client/pagectl/dump_tensor.h"
#include "client/pagectl/inspect.h"
#include "client/pagectl/make_model.h"
#include "client/pagectl/verify.h"
#include "common/segment.h"
#include "common/size_flag.h"
#include "store/segment_builder.h"
#include "worker/backends/cpu_exec/host_executor.h"
#include "worker/engine/model_image.h"
#include "worker/pager/host_profile.h"
#include "worker/pager/hybrid_plan.h"
#include "worker/pager/planner.h"

namespace paged::pagectl {
namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "pagectl: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace

int RunCommand(const std::string& command, const Flags& f, const char* usage) {
  struct Entry {
    const char* name;
    int (*run)(const Flags&);
    size_t n_args;  // positional arguments after the command
  };
  static constexpr Entry kCommands[] = {
      {"make-model", MakeModelCommand, 0},
      {"inspect", InspectCommand, 0},
      {"verify", VerifyCommand, 0},
      {"plan", PlanCommand, 0},
      {"dump-tensor", DumpTensorCommand, 0},
      {"generate", GenerateCommand, 0},
      {"status", StatusCommand, 0},
      {"workers", WorkersCommand, 0},
      {"sequences", SequencesCommand, 0},
      {"cancel", CancelCommand, 1},
      {"drain", DrainCommand, 1},
      {"models", ModelsCommand, 0},
      {"chat", ChatCommand, 0},
  };
  for (const Entry& e : kCommands) {
    if (command != e.name) continue;
    if (f.args.size() != e.n_args) {
      std::fprintf(stderr, "pagectl %s: expected %zu argument%s, got %zu\n%s\n", e.name, e.n_args,
                   e.n_args == 1 ? "" : "s", f.args.size(), usage);
      return 2;
    }
    return e.run(f);
  }
  std::fprintf(stderr, "pagectl: unknown command '%s'\n%s\n", command.c_str(), usage);
  return 2;
}

int MakeModelCommand(const Flags& f) {
  if (f.preset.empty() || f.out.empty()) {
    std::fprintf(stderr, "pagectl make-model: --preset and --out are required\n");
    return 2;
  }
  MakeModelOptions opts;
  opts.preset = f.preset;
  opts.out_dir = f.out;
  opts.layers = f.layers;
  opts.seed = f.seed;
  opts.dtype = f.dtype;
  opts.router_skew = f.router_skew;
  const bool tty = ::isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  opts.progress = [&](uint64_t done, uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last < std::chrono::milliseconds(500)) return;
    last = now;
    const double s = std::chrono::duration<double>(now - start).count();
    std::fprintf(stderr, "%smake-model: %s / %s (%.0f MB/s)%s", tty ? "\r" : "",
                 FormatBytes(done).c_str(), FormatBytes(total).c_str(),
                 s > 0 ? double(done) / 1e6 / s : 0.0, tty && done < total ? "" : "\n");
  };
  if (absl::Status s = MakeModel(opts); !s.ok()) return Fail(s);
  std::printf("wrote %s (%s)\n", f.out.c_str(), f.preset.c_str());
  return 0;
}

int InspectCommand(const Flags& f) {
  if (f.segment.empty() == f.model.empty()) {
    std::fprintf(stderr, "pagectl inspect: give exactly one of --segment NAME or --model PATH\n");
    return 2;
  }
  auto d = f.segment.empty() ? InspectModel(f.model, f.weight_format) : InspectSegment(f.segment);
  if (!d.ok()) return Fail(d.status());
  if (f.json) {
    std::printf("%s\n", d->dump(2).c_str());
  } else {
    std::printf("%s", FormatSegmentTable(*d).c_str());
  }
  return 0;
}

int VerifyCommand(const Flags& f) {
  if (f.segment.empty()) {
    std::fprintf(stderr, "pagectl verify: --segment is required\n");
    return 2;
  }
  auto r = VerifySegment(f.segment, f.model);
  if (!r.ok()) return Fail(r.status());
  std::printf("verified %d tensors (%s): all match the model file\n", r->tensors_checked,
              FormatBytes(r->bytes_checked).c_str());
  return 0;
}

int DumpTensorCommand(const Flags& f) {
  DumpTensorOptions o;
  o.model = f.model;
  o.segment = f.segment;
  o.tensor = f.tensor;
  o.layer = f.layer;
  o.rows = f.rows;
  o.out = f.out;
  auto d = DumpTensor(o);
  if (!d.ok()) return Fail(d.status());
  std::printf("wrote rows %lld:%lld of %s (%s [%lld, %lld]) to %s as f32\n",
              static_cast<long long>(d->row0), static_cast<long long>(d->row1), d->label.c_str(),
              d->type.c_str(), static_cast<long long>(d->rows), static_cast<long long>(d->cols),
              f.out.c_str());
  return 0;
}

int PlanCommand(const Flags& f) {
  if (f.segment.empty() == f.model.empty()) {
    std::fprintf(stderr, "pagectl plan: give exactly one of --segment NAME or --model PATH\n");
    return 2;
  }
  auto budget = ParseByteSize(f.gpu_budget, "gpu-budget");
  if (!budget.ok()) return Fail(budget.status());
  std::unique_ptr<SegmentHeader> header;
  if (!f.segment.empty()) {
    uint64_t size = 0;
    auto peek = PeekSegmentHeader(f.segment, &size);
    if (!peek.ok()) return Fail(peek.status());
    if (absl::Status s = ValidateHeader(**peek, size); !s.ok()) return Fail(s);
    header = *std::move(peek);
  } else {
    auto src = OpenModel(f.model);
    if (!src.ok()) return Fail(src.status());
    LayoutOptions layout;
    layout.weight_format = f.weight_format;
    auto plan = PlanSegment(**src, layout);
    if (!plan.ok()) return Fail(plan.status());
    header = *std::move(plan);
  }
  const SegmentHeader& h = *header;
  PlanLimits limits;
  limits.budget_bytes = *budget;
  limits.slots = f.slots;
  limits.resident = f.resident;
  auto p = PlanMemory(h, limits);
  if (!p.ok()) return Fail(p.status());
  // Performance model (docs/pager.md): a decode pass is bound by the paged
  // bytes over the link; compute is small next to it at these sizes. The
  // hybrid step reads them over the link and from host memory at once
  // (hybrid_plan.h), with the host executor measured here on the segment.
  auto policy = ParseHybridPolicy(f.host_compute);
  if (!policy.ok()) return Fail(policy.status());
  HybridProfile hybrid;
  hybrid.link_gbps = f.link_gbs;
  if (f.memory_gbs < 0) return Fail(absl::InvalidArgumentError("--memory-gbs must be >= 0"));
  hybrid.memory_gbps = f.memory_gbs;
  if (f.host_gbs > 0) {
    hybrid.host_gbps = {{1, f.host_gbs}};
  } else if (!f.segment.empty() && p->n_paged() > 0 && policy->mode != HybridPolicy::Mode::kOff) {
    auto seg = SegmentMapping::Open(f.segment, SegmentMapping::Access::kReadOnly);
    if (!seg.ok()) return Fail(seg.status());
    cpu_exec::ExecPoolOptions eo;
    std::unique_ptr<HostExecutor> host = cpu_exec::MakeHostExecutor(eo);
    int layer = 0;
    while (layer < h.model.n_layers && p->resident[size_t(layer)]) ++layer;
    auto gbps = MeasureHostExecutor(*host, ImageOf(**seg), layer, {1, 4, 16, 64});
    if (!gbps.ok()) return Fail(gbps.status());
    hybrid.host_gbps = *gbps;
  }
  const double paged_bytes = double(p->paged_weight_bytes_per_step);
  const double step_s = paged_bytes / (f.link_gbs * 1e9);
  const double share = HostShare(hybrid, *policy, 1);
  const double hybrid_s = PagedSeconds(hybrid, share, 1, paged_bytes);
  if (f.json) {
    nlohmann::json j = {{"budget_bytes", p->budget_bytes},
                        {"planned_bytes", p->total_bytes},
                        {"globals_bytes", p->globals_bytes},
                        {"workspace_bytes", p->workspace_bytes},
                        {"slots", p->slots},
                        {"slot_bytes", p->slot_bytes},
                        {"slot_kv_blocks", p->slot_kv_blocks},
                        {"kv_area", p->kv_area_reason},
                        {"resident_layers", p->n_resident},
                        {"paged_layers", p->n_paged()},
                        {"kv_cache_blocks", p->kv_cache_blocks},
                        {"paged_bytes_per_step", p->paged_weight_bytes_per_step},
                        {"link_gbs", f.link_gbs},
                        {"predicted_decode_step_s", step_s},
                        {"host_gbs_at_1_row", HostGbps(hybrid, 1)},
                        {"memory_gbs", f.memory_gbs},
                        {"hybrid_host_share_at_1_row", share},
                        {"hybrid_predicted_decode_step_s", hybrid_s}};
    // Expert-level paging (docs/pager.md, "Experts"): the device expert
    // cache, all 0 when whole layers are paged.
    j["experts_paged"] = p->experts_paged;
    j["expert_slots"] = p->expert_slots;
    j["total_experts"] = p->total_experts;
    j["expert_slot_bytes"] = p->expert_slot_bytes;
    j["expert_cache_bytes"] = p->expert_cache_bytes;
    j["expert_cache_share"] =
        p->total_experts > 0 ? double(p->expert_slots) / double(p->total_experts) : 0.0;
    j["expert_prefetch"] = p->expert_prefetch;
    j["router_bytes"] = p->router_bytes;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s", p->Describe().c_str());
    if (step_s > 0) {
      std::printf(
          "predicted decode at batch 1: %.1f ms per step, %.1f tokens/s over a %.0f GB/s link\n",
          step_s * 1e3, 1.0 / step_s, f.link_gbs);
      if (HostGbps(hybrid, 1) > 0) {
        std::printf("%s", DescribeHybrid(hybrid, *policy, paged_bytes).c_str());
        std::printf(
            "predicted hybrid decode at batch 1: %.1f ms of paged weights per step, "
            "%.1f tokens/s\n",
            hybrid_s * 1e3, hybrid_s > 0 ? 1.0 / hybrid_s : 0.0);
      } else if (policy->mode != HybridPolicy::Mode::kOff) {
        std::printf("hybrid step: give --segment (measured here) or --host-gbs to predict it\n");
      }
    } else {
      std::printf("predicted decode: every layer resident, no paging\n");
    }
  }
  return 0;
}

}  // namespace paged::pagectl
