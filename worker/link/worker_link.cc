#include "worker/link/worker_link.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/process.h"
#include "common/sd_notify.h"
#include "common/signals.h"
#include "common/status.h"
#include "paged/v1/worker_link.grpc.pb.h"

namespace paged {
namespace {

using Clock = std::chrono::steady_clock;

StepBatch BatchOf(const v1::Step& step) {
  StepBatch b;
  b.seqs.reserve(size_t(step.sequences_size()));
  for (const v1::SeqStep& s : step.sequences()) {
    SeqStep q;
    q.seq_id = int64_t(s.sequence_id());
    q.tokens.assign(s.tokens().begin(), s.tokens().end());
    q.start_pos = s.start_pos();
    q.block_table.assign(s.block_table().begin(), s.block_table().end());
    q.sampling.temperature = s.sampling().temperature();
    q.sampling.top_k = s.sampling().top_k();
    q.sampling.top_p = s.sampling().top_p() > 0.f ? s.sampling().top_p() : 1.f;
    q.sampling.seed = s.sampling().seed();
    b.seqs.push_back(std::move(q));
  }
  return b;
}

// Unregisters the call when the attachment ends.
struct CallRegistration {
  LinkStopper& stop;
  ~CallRegistration() { stop.SetCall(nullptr); }
};

// The coordinator's refusal of this worker, as an absl status with its code
// (UNAVAILABLE for anything that is not a refusal: the caller retries).
absl::Status Refusal(const grpc::Status& s, const LinkOptions& opts) {
  const std::string why = absl::StrCat(
      "coordinator ", opts.coordinator, " refused worker ", opts.worker_id, ": ",
      absl::StatusCodeToString(absl::StatusCode(int(s.error_code()))), ": ", s.error_message());
  switch (s.error_code()) {
    case grpc::StatusCode::UNAUTHENTICATED:
      return absl::UnauthenticatedError(why);
    case grpc::StatusCode::FAILED_PRECONDITION:
      return absl::FailedPreconditionError(why);
    case grpc::StatusCode::INVALID_ARGUMENT:
      return absl::InvalidArgumentError(why);
    case grpc::StatusCode::PERMISSION_DENIED:
      return absl::PermissionDeniedError(why);
    default:
      return absl::UnavailableError(
          absl::StrCat("coordinator ", opts.coordinator, ": ", s.error_message()));
  }
}

// Sleeps `seconds` in steps, returning early once stopped.
void Backoff(double seconds, const LinkStopper& stop) {
  for (double waited = 0; waited < seconds && !stop.stopped(); waited += 0.05) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// paged-worker's stopper: stopped by SIGTERM / SIGINT (blocked by the
// caller), which a thread started on first use waits for.
LinkStopper& SignalStopper() {
  static LinkStopper stop;
  static const bool started = [] {
    std::thread signals([] {
      WaitForTerminationSignal();
      SdNotifyOrLog("STOPPING=1");
      stop.Stop();
    });
    signals.detach();
    return true;
  }();
  (void)started;
  return stop;
}

}  // namespace

v1::MemoryPlan PlanProto(const MemoryPlan& p) {
  v1::MemoryPlan m;
  m.set_budget_bytes(p.budget_bytes);
  m.set_planned_bytes(p.total_bytes);
  m.set_slots(p.slots);
  m.set_resident_layers(p.n_resident);
  m.set_paged_layers(p.n_paged());
  m.set_kv_cache_blocks(p.kv_cache_blocks);
  m.set_paged_bytes_per_step(p.paged_weight_bytes_per_step);
  m.set_text(p.Describe());
  if (p.experts_paged) {
    m.set_expert_slots(p.expert_slots);
    m.set_total_experts(p.total_experts);
    m.set_expert_cache_bytes(p.expert_cache_bytes);
  }
  return m;
}

void SetPagerCounters(const PagerStats& ps, double host_share, v1::WorkerCounters* c) {
  c->set_h2d_bytes(ps.h2d_weight_bytes + ps.h2d_kv_bytes);
  c->set_d2h_bytes(ps.d2h_kv_bytes);
  c->set_expert_hits(ps.expert_hits);
  c->set_expert_misses(ps.expert_misses);
  c->set_expert_host(ps.expert_host);
  c->set_expert_evictions(ps.expert_evictions);
  c->set_expert_admitted(ps.expert_admitted);
  c->set_expert_prefetched(ps.expert_prefetched);
  c->set_h2d_expert_bytes(ps.h2d_expert_bytes);
  c->set_host_expert_bytes(ps.host_expert_bytes);
  c->set_host_weight_bytes(ps.host_weight_bytes);
  c->set_host_share(host_share);
}

double HostShareOf(double tuned_share, double step_share) {
  return tuned_share >= 0 ? tuned_share : step_share;
}

absl::StatusOr<StepCaps> GetStepCaps(const LinkOptions& opts, LinkStopper& stop) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      CreateClientChannel(opts.coordinator, opts.tls);
  if (!channel.ok()) return channel.status();
  auto stub = v1::WorkerLink::NewStub(*channel);
  grpc::ClientContext ctx;
  if (!opts.token.empty()) ctx.AddMetadata("authorization", "Bearer " + opts.token);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  stop.SetCall(&ctx);
  CallRegistration registration{stop};
  v1::StepCapsRequest req;
  req.set_worker_id(opts.worker_id);
  v1::StepCaps caps;
  const grpc::Status s = stub->GetStepCaps(&ctx, req, &caps);
  if (s.error_code() == grpc::StatusCode::UNIMPLEMENTED)
    return absl::UnimplementedError(
        absl::StrCat("coordinator ", opts.coordinator, " does not say its step caps"));
  if (!s.ok()) return Refusal(s, opts);
  if (caps.max_step_tokens() < 1 || caps.max_step_seqs() < 1 || caps.max_context() < 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "coordinator ", opts.coordinator, " sent step caps out of range: ", caps.max_step_tokens(),
        " tokens, ", caps.max_step_seqs(), " sequences, ", caps.max_context(), " positions"));
  return StepCaps{caps.max_step_tokens(), caps.max_step_seqs(), caps.max_context()};
}

absl::StatusOr<StepCaps> WaitForStepCaps(const LinkOptions& opts, LinkStopper& stop) {
  double backoff = 0.1;
  while (!stop.stopped()) {
    absl::StatusOr<StepCaps> caps = GetStepCaps(opts, stop);
    if (caps.ok() || caps.status().code() == absl::StatusCode::kUnimplemented) return caps;
    if (stop.stopped()) break;
    // Refused (a wrong token): an error, retried slowly, as the attachment.
    const bool refused = caps.status().code() != absl::StatusCode::kUnavailable;
    if (refused) backoff = std::max(backoff, 2.0);
    Log(refused ? LogLevel::kError : LogLevel::kWarning, "link", "%s; asking again in %.1f s",
        std::string(caps.status().message()).c_str(), backoff);
    Backoff(backoff, stop);
    backoff = std::min(backoff * 2, 5.0);
  }
  return absl::CancelledError("stopped");
}

absl::StatusOr<bool> ResolveStepLimitsUntilSignalled(const StepFlags& flags,
                                                     const LinkOptions& opts, PlanLimits* limits) {
  RETURN_IF_ERROR(ApplyStepFlags(flags, nullptr, limits));  // before waiting for anyone
  if (opts.coordinator.empty() || !flags.any_auto()) return false;
  SdNotifyOrLog("STATUS=attaching to " + opts.coordinator + " (asking its step caps)");
  absl::StatusOr<StepCaps> caps = WaitForStepCaps(opts, SignalStopper());
  if (caps.status().code() == absl::StatusCode::kUnimplemented) {
    Log(LogLevel::kWarning, "link", "%s; auto step limits take their defaults",
        std::string(caps.status().message()).c_str());
    return false;
  }
  if (!caps.ok()) return caps.status();
  RETURN_IF_ERROR(ApplyStepFlags(flags, &*caps, limits));
  return true;
}

void LinkStopper::Stop() {
  stopped_ = true;
  absl::MutexLock l(&mu_);
  if (call_ != nullptr) static_cast<grpc::ClientContext*>(call_)->TryCancel();
}

void LinkStopper::SetCall(void* client_context) {
  absl::MutexLock l(&mu_);
  call_ = client_context;
  if (call_ != nullptr && stopped_) static_cast<grpc::ClientContext*>(call_)->TryCancel();
}

absl::Status ServeWorkerLink(WorkerRuntime& rt, const LinkOptions& opts, LinkStopper& stop) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      CreateClientChannel(opts.coordinator, opts.tls);
  if (!channel.ok()) return channel.status();
  auto stub = v1::WorkerLink::NewStub(*channel);
  grpc::ClientContext ctx;
  if (!opts.token.empty()) ctx.AddMetadata("authorization", "Bearer " + opts.token);
  stop.SetCall(&ctx);
  CallRegistration registration{stop};
  auto stream = stub->Attach(&ctx);

  v1::WorkerMessage hello;
  v1::Hello* h = hello.mutable_hello();
  h->set_worker_id(opts.worker_id);
  h->set_device(rt.backend().name());
  h->set_segment(opts.segment);
  h->set_segment_generation(rt.header().generation);
  *h->mutable_plan() = PlanProto(rt.plan());
  // The host link's H2D bandwidth as the pager measured it at start (0 when
  // nothing is paged); the coordinator's /metrics reports achieved H2D over it.
  h->mutable_plan()->set_link_h2d_bytes_per_s(rt.pager().link_gbps() * 1e9);
  // This process, for the coordinator's fence (worker_link.proto Hello).
  h->set_pid(getpid());
  h->set_process_start_time(ProcessStartTime(getpid()).value_or(0));
  h->set_max_step_tokens(opts.max_step_tokens);
  h->set_max_step_seqs(opts.max_step_seqs);
  h->set_max_step_kv_blocks(int32_t(rt.plan().slot_kv_blocks));
  if (!stream->Write(hello)) {
    const grpc::Status s = stream->Finish();
    return absl::UnavailableError(
        absl::StrCat("coordinator ", opts.coordinator, ": ", s.error_message()));
  }
  // Attached only once the coordinator says so: a refused hello (a wrong
  // token, another segment) ends the stream with its reason instead.
  v1::CoordinatorMessage msg;
  if (!stream->Read(&msg)) return Refusal(stream->Finish(), opts);
  Log(LogLevel::kInfo, "link", "attached to %s as %s", opts.coordinator.c_str(),
      opts.worker_id.c_str());
  if (opts.on_attached) opts.on_attached();
  const bool first_is_ack = msg.has_attached();

  v1::WorkerCounters counters;
  bool drained = false;
  bool have = !first_is_ack;  // an older coordinator sends no Attached: its first message is work
  while (!stop.stopped() && (have || stream->Read(&msg))) {
    have = false;
    if (msg.has_drain()) {
      drained = true;
      break;
    }
    if (!msg.has_step()) continue;
    const auto t0 = Clock::now();
    const StepBatch batch = BatchOf(msg.step());
    absl::StatusOr<StepOutput> out = rt.engine().Step(batch);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    v1::WorkerMessage reply;
    v1::StepResult* r = reply.mutable_result();
    r->set_step_id(msg.step().step_id());
    r->set_step_s(secs);
    if (out.ok()) {
      for (int32_t t : out->next_tokens) r->add_next_tokens(t);
      counters.set_steps(counters.steps() + 1);
      counters.set_tokens(counters.tokens() + uint64_t(batch.total_tokens()));
    } else {
      r->set_error(std::string(out.status().message()));
    }
    const Pager& pager = rt.pager();
    SetPagerCounters(pager.stats(), HostShareOf(pager.tuned_share(1), pager.step_share()),
                     &counters);
    counters.set_busy_s(counters.busy_s() + secs);
    *r->mutable_counters() = counters;
    if (!stream->Write(reply)) break;
  }
  stream->WritesDone();
  const grpc::Status s = stream->Finish();
  if (drained) return absl::OkStatus();
  if (stop.stopped()) return absl::CancelledError("stopped");
  return absl::UnavailableError(
      absl::StrCat("coordinator ", opts.coordinator, ": ",
                   s.ok() ? std::string("stream ended") : s.error_message()));
}

absl::Status ServeUntilSignalled(WorkerRuntime& rt, LinkOptions opts) {
  SdNotifyOrLog("STATUS=attaching to " + opts.coordinator);
  opts.on_attached = [coordinator = opts.coordinator] {
    SdNotifyOrLog("READY=1\nSTATUS=attached to " + coordinator);
  };
  return RunWorkerLink(rt, opts, SignalStopper());
}

absl::Status RunWorkerLink(WorkerRuntime& rt, const LinkOptions& opts, LinkStopper& stop) {
  double backoff = 0.1;
  while (!stop.stopped()) {
    const auto t0 = Clock::now();
    absl::Status s = ServeWorkerLink(rt, opts, stop);
    if (s.ok()) return s;  // drained
    if (stop.stopped()) return absl::OkStatus();
    // A connection that lived a while resets the backoff.
    if (Clock::now() - t0 > std::chrono::seconds(5)) backoff = 0.1;
    // Refused (a wrong token, another segment): an error, retried slowly.
    const bool refused = s.code() != absl::StatusCode::kUnavailable;
    if (refused) backoff = std::max(backoff, 2.0);
    Log(refused ? LogLevel::kError : LogLevel::kWarning, "link", "%s; %s in %.1f s",
        std::string(s.message()).c_str(), refused ? "trying again" : "reconnecting", backoff);
    Backoff(backoff, stop);
    backoff = std::min(backoff * 2, 5.0);
  }
  return absl::OkStatus();
}

}  // namespace paged
