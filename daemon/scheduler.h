// The coordinator's scheduler: a pure state machine. State + inputs -> step
// plans and events. No threads, no clocks (time is an argument, int64
// microseconds on any monotonic clock the caller picks), no I/O. The gRPC
// layer calls it under one mutex and turns its outputs into messages.
//
// Inputs                                   Outputs
//   Admit(request, now)                      seq id, or INVALID_ARGUMENT /
//   Cancel(seq id), SetPaused(seq id, bool)    RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED
//   AddWorker / WorkerGone / Drain           Events: kToken, kFinished,
//   Schedule(now)                              kWorkerDrained, kWorkerFailed
//   OnStepResult(worker, step id, tokens)    StepPlans (one StepBatch per idle worker)
//
// The call pattern (docs/scheduler.md): after any input, call Schedule(now)
// and send each StepPlan to its worker; when a worker answers, call
// OnStepResult and stream the events; when its stream breaks, WorkerGone.
// Call Schedule again at NextDeadline() so that expired requests are dropped
// even when nothing else happens.
//
// Invariants (checked by tests/unit/scheduler_test.cc):
//  - A sequence is leased to at most one worker and is in at most one
//    in-flight step. Only OnStepResult advances it: the committed length grows
//    by the tokens the step fed; a sampled token is committed (and emitted
//    exactly once) only when the step completed the prompt or was a decode.
//  - KV blocks are taken as a sequence grows (docs/scheduler.md, "KV on
//    demand"): a step's positions have blocks before it is planned, and a
//    sequence's blocks are released when it finishes; a sequence never
//    finishes while a step that references its blocks is in flight, so a
//    block is reused only after no in-flight step references it.
//  - Every block grant keeps the pool SAFE: there is an order in which every
//    sequence holding blocks can grow to prompt + max_tokens, each using the
//    blocks left free plus those released by the ones before it. A sequence
//    that cannot grow safely (or past its worker's step KV limit) is
//    preempted: it leaves its worker for the queue's front, keeping its
//    blocks and committed rows, and resumes when it can. So the pool never
//    deadlocks, and nothing is recomputed.
//  - Prefix cache (daemon/kv_pool.h): full blocks whose rows are committed
//    are published under the hash of their tokens and every token before;
//    a starting sequence takes the published blocks its prompt begins with
//    (all but its last prompt token's block) and prefills only the rest.
//    Steps write only positions at or past a sequence's committed length, so
//    no step ever writes a shared block.
//  - A result for a step that is not the worker's current in-flight step
//    (stale, or from a worker declared gone) changes nothing.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/finish_reason.h"
#include "common/model_config.h"
#include "common/step.h"
#include "daemon/kv_pool.h"

namespace paged {

using TimeUs = int64_t;  // microseconds on the caller's monotonic clock

struct SchedulerConfig {
  int32_t block_tokens = 16;       // tokens per KV block (the store's geometry)
  int32_t total_blocks = 0;        // KV pool blocks per layer; ids [0, total_blocks)
  int32_t max_context = 0;         // the model's positions
  int32_t vocab = 0;               // token ids are [0, vocab)
  std::vector<int32_t> eos_ids;    // end of sequence, unless a request ignores eos
  int32_t max_step_tokens = 512;   // tokens of one step (all sequences); >= max_seqs_per_step
  int32_t max_seqs_per_step = 32;  // sequences of one step (= sequences leased to one worker)
  int32_t max_queue = 256;         // waiting requests; Admit beyond it is RESOURCE_EXHAUSTED
  int32_t prefill_chunk = 256;     // prompt tokens of one sequence in one step
  int32_t finished_history = 256;  // finished sequences kept for introspection
  bool prefix_cache = true;        // share committed prompt blocks between sequences
  // A queued request that cannot start (KV blocks or its worker's step KV
  // limit) lets at most this many later requests start before it; then the
  // requests behind it wait for it.
  int32_t max_overtake = 32;
};

// Fills max_context, vocab and eos ids from the model; the rest keeps its
// defaults (block_tokens and total_blocks come from the segment's KV geometry).
SchedulerConfig SchedulerConfigForModel(const ModelConfig& model);

absl::Status ValidateSchedulerConfig(const SchedulerConfig& c);

// A generation request as the service hands it over.
struct Request {
  std::string request_id;         // the client's id, kept for introspection and logs
  std::vector<int32_t> prompt;    // token ids, not empty
  int32_t max_tokens = 0;         // tokens to generate, >= 1
  std::vector<int32_t> stop_ids;  // finishing tokens besides eos (reason "stop")
  SamplingParams sampling;        // the seed must be fixed here: resume replays it
  TimeUs deadline = 0;            // 0: none; otherwise dropped at the first Schedule at/after it
  bool ignore_eos = false;
};

enum class EventKind {
  kToken,          // seq_id, token, index: a committed token, emitted exactly once
  kFinished,       // seq_id, reason, n_generated: the sequence is over, its blocks freed
  kWorkerDrained,  // worker_id: a draining worker holds no sequence and no step
  kWorkerFailed,   // worker_id, detail: its result was malformed; it has been
                   // removed as by WorkerGone. Close its stream.
};

struct Event {
  EventKind kind = EventKind::kToken;
  int64_t seq_id = 0;
  int32_t token = -1;                         // kToken
  int32_t index = 0;                          // kToken: index in the generated tokens, 0-based
  FinishReason reason = FinishReason::kNone;  // kFinished
  int32_t n_generated = 0;                    // kFinished: tokens emitted in total
  std::string worker_id;                      // kWorkerDrained, kWorkerFailed
  std::string detail;                         // kWorkerFailed
};

// One worker's next step. The worker runs `batch` and answers with one
// sampled token per batch.seqs entry, in order, quoting step_id.
struct StepPlan {
  uint64_t step_id = 0;
  std::string worker_id;
  StepBatch batch;
};

struct ScheduleResult {
  std::vector<StepPlan> steps;  // at most one per worker, none for a worker with a step in flight
  std::vector<Event> events;    // kFinished for dropped sequences, kWorkerDrained
};

// What a worker can take per step (its memory plan: worker/pager/planner.h).
// max_seqs and max_step_tokens: 0 = the config's value, else the smaller of
// the two; tokens per step must cover sequences per step (every leased
// decoding sequence gets its token each step). max_step_kv_blocks: KV blocks
// one step may reference (0: no limit); every step the scheduler plans fits
// it (a sequence that would grow past it waits in the queue for room), and a
// request whose whole length exceeds every worker's limit waits for a worker
// that can hold it.
struct WorkerLimits {
  int32_t max_seqs = 0;
  int32_t max_step_tokens = 0;
  int32_t max_step_kv_blocks = 0;
};

// A live sequence of a coordinator that restarted, from its journal
// (daemon/sequence_journal.h): Scheduler::Restore.
struct RestoredSequence {
  int64_t seq_id = 0;
  Request request;                 // deadline on the scheduler's clock (0: none)
  std::vector<int32_t> generated;  // committed generated tokens
  int32_t committed_len = 0;       // KV rows [0, committed_len) written and committed
  std::vector<int32_t> blocks;     // its KV blocks; empty: its rows did not survive
};

// kPaused: its client stopped taking its tokens (SetPaused): it keeps its KV
// blocks and committed state but no worker seat, and is not scheduled.
enum class SeqState { kQueued, kRunning, kFinished, kPaused };
std::string_view SeqStateName(SeqState s);  // "queued", "running", "finished", "paused"

// ---- Introspection (Admin) ----

struct SequenceInfo {
  int64_t seq_id = 0;
  std::string request_id;
  SeqState state = SeqState::kQueued;
  std::string worker_id;  // running: its worker; else ""
  int32_t prompt_tokens = 0;
  int32_t max_tokens = 0;
  int32_t generated = 0;        // committed tokens
  int32_t committed_len = 0;    // KV rows written and committed
  int32_t blocks = 0;           // KV blocks held (0 while first queued)
  int32_t cached_tokens = 0;    // prompt tokens taken from the prefix cache
  int32_t preemptions = 0;      // times it left its worker to wait for KV blocks
  bool in_flight = false;       // part of a step in flight
  bool cancel_pending = false;  // cancelled while in flight
  bool paused = false;          // SetPaused(true): parked once no step holds it
  std::string held;             // held under this key (its worker went away mid-step)
  int32_t requeues = 0;         // times its worker went away under it
  TimeUs admitted_at = 0;
  TimeUs deadline = 0;
  FinishReason finish_reason = FinishReason::kNone;  // finished only
};

// A live sequence's KV state as a journal records it (Scheduler::LiveKv),
// read in place: `blocks` points into the scheduler and holds until its next
// call that changes anything.
struct SequenceKv {
  int32_t committed_len = 0;        // KV rows written and committed
  std::span<const int32_t> blocks;  // the KV blocks it holds, in position order
};

struct WorkerInfo {
  std::string worker_id;
  int32_t max_seqs = 0;  // effective limits
  int32_t max_step_tokens = 0;
  int32_t max_step_kv_blocks = 0;  // 0: no limit
  int32_t leased_blocks = 0;       // blocks held by its leased sequences
  bool draining = false;
  bool drained = false;         // draining and empty
  uint64_t step_in_flight = 0;  // 0: none
  std::vector<int64_t> leased;  // its sequences, in lease order (load = leased.size())
  int64_t steps_completed = 0;
  int64_t tokens_processed = 0;  // tokens fed by its completed steps
};

struct SchedulerStats {
  int32_t queue_depth = 0;
  int32_t running = 0;  // leased to a worker
  int32_t held = 0;     // waiting for a gone worker's process (WorkerGone with a hold key)
  int32_t paused = 0;   // parked: their clients are not reading (SetPaused)
  int32_t live_workers = 0;
  int32_t draining_workers = 0;
  int32_t steps_in_flight = 0;
  int32_t blocks_total = 0;
  int32_t blocks_used = 0;     // referenced by live sequences
  int32_t blocks_free = 0;     // free or cached and unreferenced (evictable)
  int32_t blocks_cached = 0;   // published in the prefix cache (referenced or not)
  int32_t waiting_for_kv = 0;  // preempted: queued, holding blocks, waiting to grow
  int64_t admitted = 0;
  int64_t rejected = 0;  // Admit errors of any kind
  int64_t finished = 0;
  int64_t requeued = 0;  // sequences put back by WorkerGone / a failed worker
  int64_t steps_planned = 0;
  int64_t steps_completed = 0;
  int64_t steps_discarded = 0;       // in flight when their worker went away
  int64_t tokens_committed = 0;      // generated tokens emitted
  int64_t prompt_tokens = 0;         // prompt tokens of sequences that started
  int64_t cached_prompt_tokens = 0;  // of those, taken from the prefix cache
  int64_t preemptions = 0;           // sequences that left a worker to wait for KV blocks
  int64_t cache_evictions = 0;       // cached blocks taken back for new rows
};

class Scheduler {
 public:
  // INVALID_ARGUMENT naming the bad field when the config is unusable.
  static absl::StatusOr<Scheduler> Create(const SchedulerConfig& config);

  // Validates and queues a request (FIFO). Errors:
  //  INVALID_ARGUMENT: empty prompt, a token or stop id outside the vocabulary,
  //    max_tokens <= 0 or over the context, bad sampling parameters, a negative
  //    deadline, or a request that can never fit (prompt + max_tokens over the
  //    context, or more KV blocks than the whole pool; the message says so);
  //  DEADLINE_EXCEEDED: the deadline is already at or before `now`;
  //  RESOURCE_EXHAUSTED: the queue holds max_queue requests.
  absl::StatusOr<int64_t> Admit(Request request, TimeUs now);

  // Restores the live sequences of a coordinator that restarted, under their
  // old ids, before anything is admitted (FAILED_PRECONDITION otherwise);
  // new ids continue after the largest. Each goes to the queue in id order.
  // With its blocks (the store's KV rows survived; every table is adopted
  // or none is) it resumes from its committed length; without, it computes
  // its rows again from its prompt and generated tokens, feeding them as a
  // prompt, and emits only the tokens after them. One whose last generated
  // token already ends it (eos, a stop id, max_tokens) finishes at once:
  // the returned events. A sequence that fails validation (a token outside
  // the vocabulary, a request that no longer fits the config) is skipped and
  // named in *skipped with the reason; its blocks are not taken.
  struct RestoreResult {
    std::vector<Event> events;
    std::vector<std::pair<int64_t, std::string>> skipped;
    bool kv_adopted = false;  // the block tables were taken (else rows are recomputed)
  };
  absl::StatusOr<RestoreResult> Restore(std::vector<RestoredSequence> seqs, TimeUs now);

  // Client disconnect or an explicit cancel. Queued, or running with no step
  // in flight: finished at once (the returned kFinished "cancelled"). In
  // flight: marked; finished when that step resolves (its token is not
  // emitted). Finished or already cancelled: no events. NOT_FOUND for an id
  // that was never admitted or has left the finished history.
  absl::StatusOr<std::vector<Event>> Cancel(int64_t seq_id);

  // A worker joined (or rejoined after a restart). ALREADY_EXISTS while a
  // worker of that id is live: call WorkerGone for the old one first.
  absl::Status AddWorker(const std::string& worker_id, const WorkerLimits& limits = {});

  // The worker's stream broke. Its in-flight step is discarded (nothing of it
  // is committed); its sequences go back to the FRONT of the queue in lease
  // order, keeping their blocks and committed state, with no affinity; those
  // cancelled meanwhile finish. Unknown ids: no events.
  // With `hold_key` empty the caller asserts the worker no longer writes to
  // the KV pool (its process is gone). Otherwise its process may still be
  // finishing that step: the sequences of the step are HELD under
  // `hold_key`: their blocks stay reserved and they are neither scheduled nor
  // finished (a cancel or deadline waits) until ReleaseHeld(hold_key).
  std::vector<Event> WorkerGone(const std::string& worker_id, const std::string& hold_key = "");

  // The process behind `hold_key` can no longer write the KV pool (it ended,
  // or came back and so finished its step): its held sequences go back to
  // the FRONT of the queue in lease order (the next Schedule finishes those
  // cancelled or expired meanwhile). Returns how many were released.
  int32_t ReleaseHeld(const std::string& hold_key);

  // Back-pressure from a client that does not take its tokens. Paused: the
  // sequence is not scheduled; once no step holds it, it gives up its worker
  // seat (state kPaused) but keeps its KV blocks and committed tokens, and a
  // deadline or Cancel still ends it. Unpaused: it goes back to the FRONT of
  // the queue and resumes from its committed length. NOT_FOUND for a
  // sequence that is not live.
  absl::Status SetPaused(int64_t seq_id, bool paused);

  // The worker finishes its sequences and takes no new ones; kWorkerDrained
  // once it holds none (maybe at once). NOT_FOUND for an unknown worker.
  absl::StatusOr<std::vector<Event>> Drain(const std::string& worker_id);

  // Drops cancelled and expired sequences that no step holds, routes queued
  // sequences to workers and plans the next step of every live worker with
  // none in flight. Routing: queue order; preempted sequences (holding
  // blocks) resume whenever they can; a new request that cannot start (KV
  // blocks, or its worker's step KV limit) is overtaken by at most
  // max_overtake later ones; all wait while no worker has a seat; a request
  // too big for every live worker's max_step_kv_blocks is passed over until
  // such a worker joins.
  ScheduleResult Schedule(TimeUs now);

  // The worker's answer to its in-flight step: one sampled token per
  // sequence of the step, in order. Advances the step's sequences and returns
  // their kToken / kFinished events. A stale step id or unknown worker: no
  // events, nothing changes. A malformed result (wrong count, a token outside
  // the vocabulary): the worker is removed as by WorkerGone and a
  // kWorkerFailed event comes first.
  std::vector<Event> OnStepResult(const std::string& worker_id, uint64_t step_id,
                                  const std::vector<int32_t>& next_tokens);

  // ---- Introspection ----
  const SchedulerConfig& config() const { return config_; }
  SchedulerStats Stats() const;
  std::vector<WorkerInfo> Workers() const;
  // Live sequences by id, then the finished history, oldest first.
  std::vector<SequenceInfo> Sequences() const;
  absl::StatusOr<SequenceInfo> GetSequence(int64_t seq_id) const;
  // The committed tokens of a live sequence (NOT_FOUND once finished).
  absl::StatusOr<std::vector<int32_t>> GeneratedTokens(int64_t seq_id) const;
  // The KV blocks a live sequence holds, in position order (NOT_FOUND once
  // finished): with GetSequence's committed_len, what a journal records.
  absl::StatusOr<std::vector<int32_t>> BlockTable(int64_t seq_id) const;
  // The same two without GetSequence's and BlockTable's copies, for every
  // committed token (nullopt once finished).
  std::optional<SequenceKv> LiveKv(int64_t seq_id) const;
  // The earliest deadline of a live sequence (0: none): call Schedule then.
  TimeUs NextDeadline() const;
  // Nothing queued and nothing running.
  bool Idle() const { return seqs_.empty(); }

 private:
  struct Sequence {
    int64_t id = 0;
    Request req;
    SeqState state = SeqState::kQueued;
    std::vector<int32_t> generated;  // committed tokens
    int32_t committed = 0;           // KV rows committed (positions [0, committed))
    std::vector<int32_t> blocks;     // held, empty until it first leaves the queue
    std::vector<PrefixKey> chain;    // prefix keys of its full blocks (as far as computed)
    size_t published = 0;            // blocks [0, published) are published or shared
    int32_t cached_tokens = 0;       // prompt rows it took from the prefix cache
    int32_t preemptions = 0;
    bool waiting_for_kv = false;  // preempted, in the queue with its blocks
    int32_t overtaken = 0;        // later requests that started while it could not
    std::string worker;           // running: the lease
    bool in_flight = false;
    bool cancelled = false;
    bool paused = false;  // SetPaused: parked (kPaused) once no step holds it
    std::string held;     // hold key while held (in_flight stays set)
    int32_t requeues = 0;
    TimeUs admitted_at = 0;
  };
  struct StepEntry {
    int64_t seq_id = 0;
    int32_t n_fed = 0;     // tokens the step feeds
    bool samples = false;  // its sampled token is committed (prompt done or decode)
  };
  struct InFlight {
    uint64_t step_id = 0;
    std::vector<StepEntry> entries;  // in batch order
  };
  struct Worker {
    std::string id;
    int32_t max_seqs = 0;
    int32_t max_step_tokens = 0;
    int32_t max_step_kv_blocks = 0;  // 0: no limit
    bool draining = false;
    bool drained_reported = false;
    std::vector<int64_t> leased;  // lease order
    std::optional<InFlight> in_flight;
    int64_t steps_completed = 0;
    int64_t tokens_processed = 0;
  };

  explicit Scheduler(const SchedulerConfig& config);

  int32_t BlocksFor(const Request& r) const;
  // Blocks a step of `n` tokens from `start` needs.
  int32_t StepBlocks(int32_t start, int32_t n) const;
  // The tokens whose rows the sequence has or needs: prompt + generated.
  static int32_t KnownTokens(const Sequence& s) {
    return int32_t(s.req.prompt.size() + s.generated.size());
  }
  // Decoding: every known token but the last has its row; its next step
  // feeds that one. Otherwise it is (re)computing rows from the known tokens.
  static bool Decoding(const Sequence& s) {
    return !s.generated.empty() && s.committed == KnownTokens(s) - 1;
  }
  // Tokens of the sequence's next step if it starts at `start`, unlimited by a budget.
  int32_t NextChunk(const Sequence& s, int32_t start) const;
  // Whether the pool stays safe (see the invariants) if `extra` more blocks
  // go to sequence `seq_id`.
  bool SafeAfter(int64_t seq_id, int32_t extra) const;
  // Grows the sequence's blocks to `n`, keeping the pool safe; false if it cannot.
  bool Grow(Sequence& s, int32_t n);
  // A queued sequence takes its first blocks (the cached prefix, then what its
  // first step needs) and its seat on `w`; false (nothing taken) if the pool
  // cannot safely give them.
  bool Start(Sequence& s, Worker& w, int32_t step_blocks);
  // The blocks a sequence will probably reach: prompt + the 90th percentile
  // of the last 64 reply lengths (all of prompt + max_tokens until 8 have
  // finished), at least one more than it holds, at most its whole length.
  int32_t ExpectedBlocks(const Sequence& s) const;
  // Whether the live sequences and `fresh` are expected to fit the pool
  // together: a new request starts only then, so that the pool is not filled
  // with sequences that must then wait for each other.
  bool ExpectedToFit(const Sequence& fresh) const;
  // Records a finished sequence's reply length for ExpectedBlocks.
  void NoteReply(int32_t tokens);
  // Publishes the sequence's full committed blocks in the prefix cache.
  void PublishCommitted(Sequence& s);
  // The distinct blocks held by the worker's leased sequences.
  std::unordered_set<int32_t> LeasedBlocks(const Worker& w) const;
  // Routes queued sequences to workers (Schedule's step 2).
  void Route();
  absl::Status Validate(const Request& r, TimeUs now) const;
  // Ends a sequence that no in-flight step holds: releases its lease or queue
  // slot, frees its blocks, emits kFinished, moves it to the history.
  void Finish(Sequence& s, FinishReason reason, std::vector<Event>* events);
  // Removes a worker: discards its step (holding its sequences under
  // `hold_key` when set), re-queues or finishes its other sequences.
  void RemoveWorker(const std::string& worker_id, const std::string& hold_key,
                    std::vector<Event>* events);
  // The least loaded live, non-draining worker with a seat, step KV room for
  // a sequence whose next step names the existing blocks `held` and `fresh`
  // new ones (distinct blocks, as a step counts them), and a limit that
  // holds `whole` (the sequence at its full length; ties: the lowest id);
  // null if none.
  Worker* LeastLoaded(std::span<const int32_t> held, int32_t fresh, int32_t whole);
  // Takes a running sequence off its worker's leases.
  void Unlease(Sequence& s);
  // A paused sequence that no step holds leaves its seat or the queue.
  void Park(Sequence& s);
  // Whether some live, non-draining worker has a free seat.
  bool AnySeat() const;
  // Whether some live, non-draining worker could hold it when empty.
  bool AnyWorkerCouldHold(int32_t blocks) const;
  // The worker's next step; preempts (to *preempted) leased sequences that
  // cannot grow. Empty when none of its sequences can run.
  std::optional<StepPlan> BuildStep(Worker& w, std::vector<int64_t>* preempted);
  void CollectDrained(std::vector<Event>* events);
  FinishReason StopReason(const Sequence& s, int32_t token) const;
  SequenceInfo Info(const Sequence& s) const;

  SchedulerConfig config_;
  KvPool pool_;
  std::map<int64_t, Sequence> seqs_;                  // live: queued and running
  std::deque<int64_t> queue_;                         // waiting, front first
  std::map<std::string, Worker> workers_;             // live workers, by id
  std::deque<SequenceInfo> history_;                  // finished, oldest first
  std::map<std::string, std::vector<int64_t>> held_;  // hold key -> sequences, lease order
  int64_t next_seq_id_ = 1;
  uint64_t next_step_id_ = 1;
  std::deque<int32_t> recent_replies_;  // generated tokens of the last finished sequences
  double reply_p90_ = -1;               // their 90th percentile; -1: too few yet
  SchedulerStats counters_;             // the cumulative counters only
};

}  // namespace paged
