// The worker's side of paged.v1.WorkerLink: attach to the coordinator with
// one bidirectional stream, say hello (device, segment, memory plan), then
// run every Step the coordinator sends through the engine and answer with
// its tokens — only after the step's KV write-back has completed (the
// engine returns then). The stream ending means the coordinator is gone or
// asked this worker to drain.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "paged/v1/admin.pb.h"
#include "proto/channel.h"
#include "worker/pager/worker_runtime.h"

namespace paged {

struct LinkOptions {
  std::string coordinator;  // gRPC target: unix:///run/paged/paged.sock or host:port
  std::string worker_id;    // stable across restarts (e.g. "cuda:0")
  std::string token;        // bearer token, when the coordinator wants one
  ClientTls tls;            // TLS to the coordinator (its CA; this worker's certificate)
  std::string segment;
  int max_step_tokens = 2048;
  int max_step_seqs = 64;
  // Called once the coordinator accepted the hello (its Attached message),
  // for each attachment (readiness: sd_notify). Never for a refused hello.
  std::function<void()> on_attached;
};

// Stops a running link from another thread (a signal handler thread):
// cancels the call in flight, so a worker blocked waiting for the next step
// exits at once.
class LinkStopper {
 public:
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);
  bool stopped() const { return stopped_.load(); }
  // The link registers its current call (nullptr when none).
  void SetCall(void* client_context) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Atomic: set before mu_ is taken, read with or without it.
  std::atomic<bool> stopped_{false};
  absl::Mutex mu_;
  void* call_ ABSL_GUARDED_BY(mu_) = nullptr;  // grpc::ClientContext*
};

// What a worker reports: its memory plan (in its hello) and, after each
// step, its pager's totals so far and the hybrid step's host share
// (HostShareOf; steps, tokens and busy time are the link's own and left as
// they are).
v1::MemoryPlan PlanProto(const MemoryPlan& plan);
void SetPagerCounters(const PagerStats& stats, double host_share, v1::WorkerCounters* counters);
// The host share a worker reports (WorkerCounters.host_share): the tuner's
// share at one token row (Pager::tuned_share(1)) once it holds one (>= 0),
// else the last step's (Pager::step_share(); 0 without the hybrid step).
double HostShareOf(double tuned_share, double step_share);

// Asks the coordinator for its caps on a step (WorkerLink.GetStepCaps), once.
// UNIMPLEMENTED: a coordinator older than the call; UNAVAILABLE: unreachable;
// the coordinator's refusal (UNAUTHENTICATED, ...) otherwise.
absl::StatusOr<StepCaps> GetStepCaps(const LinkOptions& opts, LinkStopper& stop);

// Asks until answered, as RunWorkerLink attaches: with backoff while the
// coordinator is unreachable, slowly (logged) while it refuses. Returns
// UNIMPLEMENTED at once (an older coordinator: the caller plans without
// caps) and CANCELLED when stopped.
absl::StatusOr<StepCaps> WaitForStepCaps(const LinkOptions& opts, LinkStopper& stop);

// Serves one attachment. Returns OK when the coordinator asked for a drain,
// UNAVAILABLE when the connection failed or broke (the caller reconnects),
// and the coordinator's status (UNAUTHENTICATED, FAILED_PRECONDITION, ...)
// when it refused the hello.
absl::Status ServeWorkerLink(WorkerRuntime& runtime, const LinkOptions& opts, LinkStopper& stop);

// Serves until stopped or drained, reconnecting with backoff when the
// coordinator is unreachable or restarts.
absl::Status RunWorkerLink(WorkerRuntime& runtime, const LinkOptions& opts, LinkStopper& stop);

// paged-worker's serving loop: RunWorkerLink until SIGTERM / SIGINT (blocked
// by the caller with BlockTerminationSignals) or a drain, telling systemd
// READY=1 once attached and STOPPING=1 on the signal.
absl::Status ServeUntilSignalled(WorkerRuntime& runtime, LinkOptions opts);

// paged-worker's step limits, before it plans: `flags` checked
// (INVALID_ARGUMENT), then, with a coordinator (opts.coordinator) and any
// flag at auto, its caps asked (WaitForStepCaps until SIGTERM / SIGINT:
// CANCELLED then; telling systemd what it waits for) and applied
// (ApplyStepFlags). A coordinator too old to answer leaves auto at the
// standalone defaults, logged. Returns whether the caps were applied.
absl::StatusOr<bool> ResolveStepLimitsUntilSignalled(const StepFlags& flags,
                                                     const LinkOptions& opts, PlanLimits* limits);

}  // namespace paged
