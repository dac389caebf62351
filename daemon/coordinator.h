// The coordinator: the pure Scheduler behind one mutex, the workers' links
// (an outbox of steps per worker) and the sequences' channels (the committed
// tokens waiting for their Generate stream). The gRPC services
// (daemon/services.h) are thin adapters over this class; tests drive it
// directly with a fake worker.
//
// Locking: mu_ guards the scheduler and every map below; each Channel and
// Link names mu_ as its `mu` and marks the fields it guards, so clang's
// -Wthread-safety (scripts/check_thread_safety.sh) checks them too.
//
// Every input — an admission, a cancel, a worker's hello or step result, a
// broken worker stream, a drain, the deadline timer — runs under the mutex
// and ends with Pump(): Schedule(now), each StepPlan into its worker's
// outbox, each event to its sequence's channel. A token reaches a channel
// only from OnStepResult, i.e. after the worker reported that the step's KV
// write-back is complete (the commit protocol, docs/serving.md).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/model_config.h"
#include "daemon/generate_request.h"
#include "daemon/scheduler.h"
#include "daemon/sequence_journal.h"
#include "daemon/serving_metrics.h"
#include "daemon/store_probe.h"
#include "paged/v1/admin.pb.h"
#include "paged/v1/worker_link.pb.h"
#include "tokenizer/tokenizer.h"

namespace paged {

struct CoordinatorOptions {
  std::string segment;     // for Admin
  std::string model_name;  // for ListModels
  std::string store_state = "READY";
  uint64_t segment_generation = 0;  // 0: not checked against the workers' hello
  std::string weight_format;
  // The checkpoint's chat template source (Jinja, from tokenizer_config.json
  // or GGUF tokenizer.chat_template); "" when it has none.
  std::string chat_template;
  // The operator's --chat-template NAME ("chatml", "llama2", ...): chat
  // prompts use that format instead of the checkpoint's template.
  std::string chat_format;
  ModelConfig model;
  SchedulerConfig scheduler;
  // A sequence whose worker went away under it this many times finishes with
  // an error instead of being retried again (a step that kills every worker).
  int32_t max_requeues = 8;
  // A worker whose stream broke while its process lives on may still be
  // writing the KV rows of its step: that step's sequences are held until
  // the process ends or attaches again, or this long has passed.
  double fence_timeout_s = 30;
  // Back-pressure from clients that do not read: a sequence whose stream
  // holds this many committed tokens its client has not taken is paused (not
  // scheduled, its worker seat given up) until the client takes them.
  int32_t max_stream_backlog = 256;
  // A paused sequence whose client has taken nothing for this long is
  // cancelled (its KV blocks freed) and its stream aborted.
  double stalled_stream_timeout_s = 30;
  // The sequence journal (daemon/sequence_journal.h; docs/reliability.md):
  // "" for none. With one, a coordinator that restarts resumes every
  // sequence the last one left from its committed tokens, and a client that
  // reconnects with its request_id (Resume) continues its stream.
  std::string journal_path;
  // fdatasync each step's records. Off by default: the journal lives beside
  // the segment on tmpfs, and what a write puts in the page cache survives
  // the coordinator's process; a machine crash loses the store's KV rows
  // and the clients' connections anyway.
  bool journal_fsync = false;
  // A restored sequence whose client has not reconnected within this long
  // is cancelled (its KV blocks freed).
  double resume_timeout_s = 30;
  // How the store is (daemon/store_probe.h), asked about once a second from
  // the timer loop; null: always READY and alive (tests with fake workers).
  std::function<StoreHealth()> store_probe;
  // Called on every turn of the timer loop (about every 100 ms), without the
  // mutex: paged pings the systemd watchdog from here, so that a loop that
  // stops turning (a wedged mutex) stops the pings.
  std::function<void()> on_tick;
};

// Whether the coordinator can serve generations now, and why not.
struct Readiness {
  bool ready = false;
  std::string reason;  // when not ready: "no worker is attached", ...
};

// A worker's KV room per step when its hello does not say
// (kDefaultMaxStepKvTokens: what paged-workers planned before they sized
// their KV area from the caps; every paged-worker says).
int32_t DefaultStepKvBlocks(int32_t block_tokens);

class Coordinator {
 public:
  // One Generate stream's view of its sequence.
  struct Channel {
    explicit Channel(absl::Mutex* coordinator_mu) : mu(coordinator_mu) {}
    absl::Mutex* const mu;  // the coordinator's mutex: guards the fields marked so
    // Set by Admit before the channel is handed out, constant after: read
    // without the lock.
    int64_t seq_id = 0;
    TimeUs admitted_at = 0;
    // A sequence restored from the journal: its request_id and prompt (Resume
    // checks them) and whether no client has claimed it yet (orphan). Its
    // pending tokens start with every token generated before the restart.
    std::string request_id;
    std::vector<int32_t> restored_prompt;
    bool orphan ABSL_GUARDED_BY(mu) = false;
    absl::CondVar cv;  // with *mu
    // Pending, not yet taken by the stream:
    std::vector<int32_t> tokens ABSL_GUARDED_BY(mu);
    std::vector<double> step_s ABSL_GUARDED_BY(mu);  // per token: the time of its step
    bool finished ABSL_GUARDED_BY(mu) = false;
    FinishReason reason ABSL_GUARDED_BY(mu) = FinishReason::kNone;
    std::string error ABSL_GUARDED_BY(mu);  // set: finished by the coordinator for this reason
    // Called (under the coordinator's mutex: it may only schedule work, e.g.
    // post to an event loop) when tokens or the end arrive and at shutdown;
    // for front ends that do not block in Wait. Cleared by Release.
    std::function<void()> on_update ABSL_GUARDED_BY(mu);
    // Back-pressure: the client's last Wait, and whether its sequence is
    // paused because it holds max_stream_backlog tokens not taken.
    TimeUs last_take ABSL_GUARDED_BY(mu) = 0;
    bool paused ABSL_GUARDED_BY(mu) = false;
    // Called once, without the coordinator's mutex, when the coordinator gives
    // up on a client that stopped reading (its sequence is cancelled): it
    // aborts the client's call. Guarded by its own mutex so that it is never
    // called after Release returns.
    absl::Mutex stalled_mu;
    std::function<void()> on_stalled ABSL_GUARDED_BY(stalled_mu);
  };
  struct Update {
    std::vector<int32_t> tokens;
    std::vector<double> step_s;
    bool finished = false;
    FinishReason reason = FinishReason::kNone;
    std::string error;
  };

  // One worker attachment (a WorkerLink stream).
  struct Link;
  enum class Next { kMessage, kTimeout, kClosed };

  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(
      CoordinatorOptions options, std::unique_ptr<const Tokenizer> tokenizer);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Microseconds on the steady clock (the scheduler's time).
  static TimeUs Now();
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const CoordinatorOptions& options() const { return options_; }
  // A random nonzero seed for a request that gives none.
  uint64_t RandomSeed() ABSL_LOCKS_EXCLUDED(mu_);
  // A paged.v1.GenerateRequest checked and tokenized with this model's
  // tokenizer (and chat template), as the gRPC and HTTP front ends admit it.
  absl::StatusOr<ParsedGenerate> ParseRequest(const v1::GenerateRequest& req)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The chat template chat prompts are rendered with; null when they are
  // refused (no template, or one we do not support: chat_status() says why).
  const ChatTemplate* chat_template() const { return chat_.ok() ? &*chat_ : nullptr; }
  absl::Status chat_status() const { return chat_.status(); }

  // ---- Sequences (Inference.Generate) ----
  // Admits `r` (the scheduler's errors as they are) and opens its channel
  // (`on_update`, `on_stalled`: see Channel).
  absl::StatusOr<std::shared_ptr<Channel>> Admit(Request r,
                                                 std::function<void()> on_update = nullptr,
                                                 std::function<void()> on_stalled = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A client reconnecting after a coordinator restart: claims the restored
  // sequence admitted under `request_id` with this `prompt`. Its channel's
  // pending tokens start with every token generated so far (the stream
  // skips the `received` its client had). NOT_FOUND: no such restored
  // sequence (never journaled, claimed already, or given up after
  // resume_timeout_s); INVALID_ARGUMENT: the prompt differs from the
  // journaled one; OUT_OF_RANGE: more received than committed.
  absl::StatusOr<std::shared_ptr<Channel>> Resume(const std::string& request_id,
                                                  const std::vector<int32_t>& prompt,
                                                  int32_t received,
                                                  std::function<void()> on_update = nullptr,
                                                  std::function<void()> on_stalled = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Waits up to `timeout` for tokens or the end and moves them into `out`
  // (a paused sequence whose tokens are taken resumes). Returns false when
  // the coordinator is shutting down.
  bool Wait(Channel& ch, std::chrono::milliseconds timeout, Update* out) ABSL_LOCKS_EXCLUDED(mu_);
  // The prompt tokens of a sequence whose KV rows came from the prefix cache
  // (0 for an unknown sequence or one that has not started).
  int32_t CachedPromptTokens(int64_t seq_id) ABSL_LOCKS_EXCLUDED(mu_);
  // The stream is done with its sequence: cancels it if it is still live
  // (client gone, stop string) and closes the channel.
  void Release(Channel& ch) ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Workers (WorkerLink.Attach) ----
  // A worker said hello. A worker of that id still attached is treated as
  // gone first. `close` cancels the worker's stream (called without the lock).
  absl::StatusOr<std::shared_ptr<Link>> AttachWorker(const v1::Hello& hello,
                                                     std::function<void()> close)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The next message for the worker: a step or the drain.
  Next NextMessage(Link& link, v1::CoordinatorMessage* out, std::chrono::milliseconds timeout)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A message from the worker. Not OK when the link must close (an error in
  // a step, a malformed result, a second hello); the worker is then gone.
  absl::Status OnWorkerMessage(Link& link, const v1::WorkerMessage& msg) ABSL_LOCKS_EXCLUDED(mu_);
  // The worker's stream ended or broke: the worker is gone (its sequences go
  // back to the queue), unless it was replaced already.
  void DetachWorker(Link& link) ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Admin ----
  v1::StatusResponse Status() ABSL_LOCKS_EXCLUDED(mu_);
  v1::ListSequencesResponse ListSequences() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status CancelSequence(int64_t seq_id) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status DrainWorker(const std::string& worker_id) ABSL_LOCKS_EXCLUDED(mu_);
  v1::ListModelsResponse ListModels() const;
  // A supervisor's report of its children (paged-up), shown by Status.
  void ReportSupervision(const v1::ReportSupervisionRequest& report) ABSL_LOCKS_EXCLUDED(mu_);

  // ---- Health ----
  // Ready: the store's segment READY (the generation mapped at start) with
  // its process alive, at least one worker ATTACHED, and not stopping.
  Readiness GetReadiness() ABSL_LOCKS_EXCLUDED(mu_);
  // Live: the timer loop turned within `max_age_s` (a wedged coordinator is
  // not live).
  bool Live(double max_age_s = 10) const;
  // `fn(ready)` is called now and (from the timer loop, without the mutex)
  // whenever readiness changes, until ClearReadinessListener returns.
  void SetReadinessListener(std::function<void(bool ready)> fn) ABSL_LOCKS_EXCLUDED(mu_);
  void ClearReadinessListener();

  // ---- Metrics (daemon/coordinator_metrics.cc) ----
  // Counters the front ends update (requests by status, time to first token).
  ServingMetrics& metrics() { return metrics_; }
  // Every metric in the Prometheus text format, the gauges read now.
  std::string RenderMetrics() ABSL_LOCKS_EXCLUDED(mu_);

  // Stops the timer, closes every worker link and wakes every stream.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);
  bool stopping() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct WorkerRecord {
    std::shared_ptr<Link> link;       // the latest attachment
    int32_t restarts = 0;             // re-attachments after the first
    WorkerMetrics metrics;            // its labelled metrics, over its restarts
    double link_h2d_bytes_per_s = 0;  // measured by the worker (its hello's plan); 0: unknown
  };
  struct RateSample {
    TimeUs at = 0;
    int64_t tokens = 0;
    uint64_t paged_bytes = 0;
  };
  // Links whose streams to cancel once the mutex is released.
  using Closers = std::vector<std::shared_ptr<Link>>;

  explicit Coordinator(CoordinatorOptions options, std::unique_ptr<const Tokenizer> tokenizer,
                       Scheduler scheduler);

  // Opens the journal, restores its sequences into the scheduler with
  // orphan channels, and fences the workers of the last coordinator.
  absl::Status RestoreFromJournalLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records the events' commits and ends in the journal (natural ends wait
  // for the client: JournalReleasedLocked) and syncs it, before any client
  // can see them.
  void JournalLocked(const std::vector<Event>& events) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The client is done with the sequence: it leaves the journal.
  void JournalReleasedLocked(int64_t seq_id, FinishReason reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A journal append or sync failed: logged once, the journal dropped.
  void JournalFailedLocked(const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Cancels restored sequences no client claimed within resume_timeout_s.
  void ReapOrphansLocked(TimeUs now, Closers* closers) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Schedule, dispatch plans, deliver events. Under mu_.
  void PumpLocked(TimeUs now, Closers* closers) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DeliverLocked(const std::vector<Event>& events, double step_s, Closers* closers)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes `link` from the scheduler (WorkerGone) and closes it.
  void RemoveLinkLocked(Link& link, const char* state, Closers* closers)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finishes sequences that failed on too many workers.
  void ReapRequeuedLocked(Closers* closers) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SampleRatesLocked(TimeUs now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Cancels the sequences of clients that stopped reading; their on_stalled
  // are moved into `stalled` (called without the lock).
  void CancelStalledLocked(TimeUs now, std::vector<std::shared_ptr<Channel>>* stalled)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Readiness ReadinessLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The store probe once a second, and readiness listeners; without mu_.
  void TickUnlocked(TimeUs now) ABSL_LOCKS_EXCLUDED(mu_);
  // Releases the held sequences of fences whose process ended, or that came
  // back (`returned_pid`/`returned_start`: a hello), or that timed out.
  void CheckFencesLocked(TimeUs now, int64_t returned_pid = 0, uint64_t returned_start = 0)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TimerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Calls each link's `close` (under its close_mu); without mu_.
  static void RunClosers(Closers& closers);
  // Under mu_: tells the analysis that `x.mu` (a Channel's or Link's pointer
  // to mu_) is held too, and checks that it points to mu_.
  template <class T>
  void AssertHeldFor(const T& x) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_)
      ABSL_ASSERT_EXCLUSIVE_LOCK(x.mu);
  // The scheduler's config, read without mu_: it is set at creation and never
  // changes, which the analysis cannot know.
  const SchedulerConfig& scheduler_config() const ABSL_NO_THREAD_SAFETY_ANALYSIS;

  const CoordinatorOptions options_;
  const std::unique_ptr<const Tokenizer> tokenizer_;
  // From options_.chat_format or options_.chat_template (run with the
  // tokenizer's BOS and EOS); else why not.
  const absl::StatusOr<ChatTemplate> chat_ = ResolveChatTemplate(
      options_.chat_template, options_.chat_format, ChatTemplateOptionsFor(tokenizer_.get()));

  mutable absl::Mutex mu_;
  Scheduler scheduler_ ABSL_GUARDED_BY(mu_);
  // Open streams by sequence id.
  std::map<int64_t, std::shared_ptr<Channel>> channels_ ABSL_GUARDED_BY(mu_);
  // Attached links, by worker id.
  std::map<std::string, std::shared_ptr<Link>> live_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, WorkerRecord> records_ ABSL_GUARDED_BY(mu_);  // every worker ever seen
  std::deque<RateSample> rates_ ABSL_GUARDED_BY(mu_);
  // Gone workers whose processes may still write their step's KV rows.
  struct Fence {
    std::string hold_key;
    int64_t pid = 0;
    uint64_t process_start = 0;
    TimeUs since = 0;
  };
  std::vector<Fence> fences_ ABSL_GUARDED_BY(mu_);
  // The sequence journal; empty without one or after it failed.
  std::optional<SequenceJournal> journal_ ABSL_GUARDED_BY(mu_);
  // The worker processes of the coordinator before a restart that still
  // live: nothing is scheduled (no block handed out) until each has ended,
  // attached again or passed fence_timeout_s, since one may still be
  // writing the KV rows of a step the last coordinator planned.
  std::vector<JournaledWorker> restart_fences_ ABSL_GUARDED_BY(mu_);
  TimeUs restarted_at_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t restored_sequences_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t tokens_committed_ ABSL_GUARDED_BY(mu_) = 0;
  // Sum of the workers' H2D counter increments.
  uint64_t paged_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Not guarded: its counters and families synchronize themselves (atomics,
  // the registry's own mutexes), so the front ends update it without mu_.
  ServingMetrics metrics_;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  StoreHealth store_ ABSL_GUARDED_BY(mu_);  // the last probe
  TimeUs store_probed_at_ ABSL_GUARDED_BY(mu_) = 0;
  v1::ReportSupervisionRequest supervision_ ABSL_GUARDED_BY(mu_);
  TimeUs supervision_at_ ABSL_GUARDED_BY(mu_) = 0;
  // The timer loop's last turn (Live); atomic: read without mu_.
  std::atomic<TimeUs> last_tick_{0};
  // Readiness listener: called by the timer loop with listener_mu_ held.
  absl::Mutex listener_mu_;
  std::function<void(bool)> on_readiness_ ABSL_GUARDED_BY(listener_mu_);
  int last_ready_ ABSL_GUARDED_BY(listener_mu_) = -1;  // -1: not told yet
  absl::CondVar timer_cv_;                             // with mu_: stopping_ or a new deadline
  // Started by Create, joined by Shutdown; not under mu_.
  std::thread timer_;
};

}  // namespace paged
