#include "daemon/scheduler.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/check.h"

namespace paged {
namespace {

constexpr size_t kMaxStopIds = 64;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::string_view SeqStateName(SeqState s) {
  switch (s) {
    case SeqState::kQueued:
      return "queued";
    case SeqState::kRunning:
      return "running";
    case SeqState::kFinished:
      return "finished";
    case SeqState::kPaused:
      return "paused";
  }
  return "";
}

SchedulerConfig SchedulerConfigForModel(const ModelConfig& model) {
  SchedulerConfig c;
  c.max_context = model.max_context;
  c.vocab = model.vocab;
  for (int i = 0; i < model.n_eos && i < kMaxEosIds; ++i) {
    if (model.eos_ids[i] >= 0) c.eos_ids.push_back(model.eos_ids[i]);
  }
  return c;
}

absl::Status ValidateSchedulerConfig(const SchedulerConfig& c) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("scheduler config: ", parts...));
  };
  if (c.block_tokens < 1) return bad("block_tokens ", c.block_tokens, " must be >= 1");
  if (c.total_blocks < 1) return bad("total_blocks ", c.total_blocks, " must be >= 1");
  if (c.max_context < 1) return bad("max_context ", c.max_context, " must be >= 1");
  if (c.vocab < 1) return bad("vocab ", c.vocab, " must be >= 1");
  for (int32_t e : c.eos_ids) {
    if (e < 0 || e >= c.vocab)
      return bad("eos id ", e, " outside the vocabulary [0, ", c.vocab, ")");
  }
  if (c.max_seqs_per_step < 1)
    return bad("max_seqs_per_step ", c.max_seqs_per_step, " must be >= 1");
  if (c.max_step_tokens < c.max_seqs_per_step)
    return bad("max_step_tokens ", c.max_step_tokens, " must be >= max_seqs_per_step ",
               c.max_seqs_per_step, " (every decoding sequence needs its token each step)");
  if (c.max_queue < 1) return bad("max_queue ", c.max_queue, " must be >= 1");
  if (c.prefill_chunk < 1) return bad("prefill_chunk ", c.prefill_chunk, " must be >= 1");
  if (c.finished_history < 0) return bad("finished_history ", c.finished_history, " must be >= 0");
  if (c.max_overtake < 0) return bad("max_overtake ", c.max_overtake, " must be >= 0");
  return absl::OkStatus();
}

absl::StatusOr<Scheduler> Scheduler::Create(const SchedulerConfig& config) {
  if (absl::Status s = ValidateSchedulerConfig(config); !s.ok()) return s;
  return Scheduler(config);
}

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(config), pool_(config.total_blocks, config.block_tokens, config.prefix_cache) {}

// ---- Admission ----

int32_t Scheduler::BlocksFor(const Request& r) const {
  return int32_t(CeilDiv(int64_t(r.prompt.size()) + r.max_tokens, config_.block_tokens));
}

absl::Status Scheduler::Validate(const Request& r, TimeUs now) const {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  const int32_t vocab = config_.vocab;
  if (r.prompt.empty()) return bad("prompt is empty");
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    const int32_t t = r.prompt[i];
    if (t < 0 || t >= vocab)
      return bad("prompt token ", i, " (id ", t, ") is outside the vocabulary [0, ", vocab, ")");
  }
  if (r.max_tokens <= 0) return bad("max_tokens ", r.max_tokens, " must be >= 1");
  if (r.max_tokens > config_.max_context)
    return bad("max_tokens ", r.max_tokens, " exceeds the model's context of ",
               config_.max_context);
  if (r.stop_ids.size() > kMaxStopIds)
    return bad(r.stop_ids.size(), " stop ids; at most ", kMaxStopIds);
  for (int32_t t : r.stop_ids) {
    if (t < 0 || t >= vocab)
      return bad("stop id ", t, " is outside the vocabulary [0, ", vocab, ")");
  }
  const SamplingParams& p = r.sampling;
  if (!std::isfinite(p.temperature) || p.temperature < 0.f)
    return bad("temperature ", p.temperature, " must be finite and >= 0");
  if (!(p.top_p > 0.f && p.top_p <= 1.f)) return bad("top_p ", p.top_p, " must be in (0, 1]");
  if (p.top_k < 0) return bad("top_k ", p.top_k, " must be >= 0 (0: off)");
  if (r.deadline < 0) return bad("deadline ", r.deadline, " must be >= 0 (0: none)");
  const int64_t positions = int64_t(r.prompt.size()) + r.max_tokens;
  if (positions > config_.max_context)
    return bad("prompt (", r.prompt.size(), " tokens) + max_tokens (", r.max_tokens,
               ") = ", positions, " exceeds the model's context of ", config_.max_context,
               "; the request can never fit");
  const int64_t need = CeilDiv(positions, config_.block_tokens);
  if (need > config_.total_blocks)
    return bad("the request needs ", need, " KV blocks of ", config_.block_tokens,
               " tokens; the pool holds ", config_.total_blocks, "; it can never fit");
  if (r.deadline != 0 && r.deadline <= now)
    return absl::DeadlineExceededError(
        absl::StrCat("deadline ", r.deadline, " is already past (now ", now, ")"));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Scheduler::Admit(Request request, TimeUs now) {
  if (absl::Status s = Validate(request, now); !s.ok()) {
    ++counters_.rejected;
    return s;
  }
  if (int64_t(queue_.size()) >= config_.max_queue) {
    ++counters_.rejected;
    return absl::ResourceExhaustedError(
        absl::StrCat("the queue is full (", queue_.size(), " requests waiting); retry later"));
  }
  const int64_t id = next_seq_id_++;
  Sequence& s = seqs_[id];
  s.id = id;
  s.req = std::move(request);
  s.generated.reserve(size_t(s.req.max_tokens));
  s.admitted_at = now;
  queue_.push_back(id);
  ++counters_.admitted;
  return id;
}

absl::StatusOr<Scheduler::RestoreResult> Scheduler::Restore(std::vector<RestoredSequence> seqs,
                                                            TimeUs now) {
  if (!seqs_.empty() || !history_.empty() || next_seq_id_ != 1)
    return absl::FailedPreconditionError("sequences are restored before anything is admitted");
  RestoreResult out;
  const int32_t T = config_.block_tokens;
  std::sort(seqs.begin(), seqs.end(), [](const RestoredSequence& a, const RestoredSequence& b) {
    return a.seq_id < b.seq_id;
  });
  std::vector<RestoredSequence> valid;
  for (RestoredSequence& r : seqs) {
    Request check = r.request;
    check.deadline = 0;  // an expired one is restored and dropped by Schedule
    absl::Status st = Validate(check, now);
    if (st.ok() && r.seq_id < 1) st = absl::InvalidArgumentError("seq id < 1");
    if (st.ok() && !valid.empty() && valid.back().seq_id == r.seq_id)
      st = absl::InvalidArgumentError("seq id twice");
    if (st.ok() && int64_t(r.generated.size()) > r.request.max_tokens)
      st = absl::InvalidArgumentError("more generated tokens than max_tokens");
    for (int32_t t : r.generated) {
      if (st.ok() && (t < 0 || t >= config_.vocab))
        st = absl::InvalidArgumentError(
            absl::StrCat("generated token ", t, " outside the vocabulary"));
    }
    if (!st.ok()) {
      out.skipped.emplace_back(r.seq_id, std::string(st.message()));
      continue;
    }
    valid.push_back(std::move(r));
  }
  // Rows are kept only if every table is consistent: committed rows inside
  // its blocks, no more blocks than its whole length, and the pool adopts
  // them all. Otherwise every sequence computes its rows again.
  bool keep_kv = !valid.empty();
  std::vector<std::vector<int32_t>> tables;
  for (const RestoredSequence& r : valid) {
    const int32_t known = int32_t(r.request.prompt.size() + r.generated.size());
    // No blocks: it had not started (it starts afresh, its tokens recomputed).
    if (r.blocks.empty() ? r.committed_len != 0
                         : r.committed_len < 0 || r.committed_len > known - 1 ||
                               int64_t(r.blocks.size()) * T < r.committed_len ||
                               int32_t(r.blocks.size()) > BlocksFor(r.request))
      keep_kv = false;
    tables.push_back(r.blocks);
  }
  if (keep_kv) keep_kv = pool_.Adopt(tables);
  for (const std::vector<int32_t>& t : tables) out.kv_adopted |= keep_kv && !t.empty();

  for (RestoredSequence& r : valid) {
    Sequence& s = seqs_[r.seq_id];
    s.id = r.seq_id;
    s.req = std::move(r.request);
    s.generated = std::move(r.generated);
    s.generated.reserve(size_t(s.req.max_tokens));
    s.admitted_at = now;
    if (keep_kv && !r.blocks.empty()) {
      s.blocks = std::move(r.blocks);
      s.committed = r.committed_len;
      s.waiting_for_kv = true;  // queued holding its blocks, as a preempted one
      PublishCommitted(s);
    }
    queue_.push_back(s.id);
    ++counters_.admitted;
    next_seq_id_ = std::max(next_seq_id_, s.id + 1);
    if (!s.generated.empty()) {
      if (const FinishReason why = StopReason(s, s.generated.back()); why != FinishReason::kNone)
        Finish(s, why, &out.events);
    }
  }
  return out;
}

// ---- Finishing and cancelling ----

void Scheduler::Finish(Sequence& s, FinishReason reason, std::vector<Event>* events) {
  PAGED_CHECK(!s.in_flight, "finishing a sequence that an in-flight step holds");
  if (s.state == SeqState::kQueued) {
    auto it = std::find(queue_.begin(), queue_.end(), s.id);
    PAGED_CHECK(it != queue_.end(), "queued sequence missing from the queue");
    queue_.erase(it);
  } else if (s.state == SeqState::kRunning) {
    Unlease(s);
  }
  if (!s.blocks.empty()) pool_.Release(&s.blocks);
  // Every ending counts: a reply a client cancels or a deadline cuts holds
  // its blocks for just as long.
  NoteReply(int32_t(s.generated.size()));
  Event e;
  e.kind = EventKind::kFinished;
  e.seq_id = s.id;
  e.reason = reason;
  e.n_generated = int32_t(s.generated.size());
  events->push_back(std::move(e));
  ++counters_.finished;
  s.state = SeqState::kFinished;
  s.worker.clear();
  if (config_.finished_history > 0) {
    SequenceInfo info = Info(s);
    info.finish_reason = reason;
    history_.push_back(std::move(info));
    while (int64_t(history_.size()) > config_.finished_history) history_.pop_front();
  }
  const int64_t id = s.id;
  seqs_.erase(id);  // `s` dangles from here on
}

void Scheduler::NoteReply(int32_t tokens) {
  constexpr size_t kWindow = 64, kEnough = 8;
  if (recent_replies_.size() == kWindow) recent_replies_.pop_front();
  recent_replies_.push_back(tokens);
  if (recent_replies_.size() < kEnough) return;
  std::vector<int32_t> sorted(recent_replies_.begin(), recent_replies_.end());
  const size_t k = sorted.size() * 9 / 10;
  std::nth_element(sorted.begin(), sorted.begin() + ptrdiff_t(k), sorted.end());
  reply_p90_ = sorted[k];
}

void Scheduler::Unlease(Sequence& s) {
  auto w = workers_.find(s.worker);
  PAGED_CHECK(w != workers_.end(), "running sequence leased to an unknown worker");
  auto& leased = w->second.leased;
  auto it = std::find(leased.begin(), leased.end(), s.id);
  PAGED_CHECK(it != leased.end(), "running sequence missing from its worker's leases");
  leased.erase(it);
  s.worker.clear();
}

void Scheduler::Park(Sequence& s) {
  PAGED_CHECK(s.paused && !s.in_flight, "parking a sequence that is not paused or is in flight");
  if (s.state == SeqState::kRunning) {
    Unlease(s);
  } else if (s.state == SeqState::kQueued) {
    auto it = std::find(queue_.begin(), queue_.end(), s.id);
    PAGED_CHECK(it != queue_.end(), "queued sequence missing from the queue");
    queue_.erase(it);
  }
  s.state = SeqState::kPaused;
}

absl::Status Scheduler::SetPaused(int64_t seq_id, bool paused) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("no live sequence ", seq_id));
  Sequence& s = it->second;
  if (s.paused == paused) return absl::OkStatus();
  s.paused = paused;
  if (paused) {
    // In flight (or held): parked when its step resolves or it is re-queued.
    if (!s.in_flight) Park(s);
  } else if (s.state == SeqState::kPaused) {
    s.state = SeqState::kQueued;
    queue_.push_front(s.id);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Event>> Scheduler::Cancel(int64_t seq_id) {
  std::vector<Event> events;
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) {
    for (const SequenceInfo& h : history_) {
      if (h.seq_id == seq_id) return events;  // already finished
    }
    return absl::NotFoundError(absl::StrCat("no sequence ", seq_id));
  }
  Sequence& s = it->second;
  if (s.cancelled) return events;
  if (s.in_flight) {
    s.cancelled = true;  // finished when its step resolves
    return events;
  }
  Finish(s, FinishReason::kCancelled, &events);
  CollectDrained(&events);
  return events;
}

// ---- Workers ----

absl::Status Scheduler::AddWorker(const std::string& worker_id, const WorkerLimits& limits) {
  if (worker_id.empty()) return absl::InvalidArgumentError("worker id is empty");
  if (limits.max_seqs < 0 || limits.max_step_tokens < 0 || limits.max_step_kv_blocks < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("worker ", worker_id, ": limits must be >= 0 (0: the default)"));
  if (workers_.count(worker_id))
    return absl::AlreadyExistsError(
        absl::StrCat("worker ", worker_id, " is already live; declare it gone before it rejoins"));
  Worker w;
  w.id = worker_id;
  w.max_seqs = limits.max_seqs > 0 ? std::min(limits.max_seqs, config_.max_seqs_per_step)
                                   : config_.max_seqs_per_step;
  w.max_step_tokens = limits.max_step_tokens > 0
                          ? std::min(limits.max_step_tokens, config_.max_step_tokens)
                          : config_.max_step_tokens;
  w.max_step_kv_blocks = limits.max_step_kv_blocks;
  if (w.max_step_tokens < w.max_seqs)
    return absl::InvalidArgumentError(absl::StrCat("worker ", worker_id, ": max_step_tokens ",
                                                   w.max_step_tokens, " must be >= max_seqs ",
                                                   w.max_seqs));
  workers_.emplace(worker_id, std::move(w));
  return absl::OkStatus();
}

void Scheduler::RemoveWorker(const std::string& worker_id, const std::string& hold_key,
                             std::vector<Event>* events) {
  auto wit = workers_.find(worker_id);
  if (wit == workers_.end()) return;
  Worker& w = wit->second;
  if (w.in_flight) {
    for (const StepEntry& e : w.in_flight->entries) {
      Sequence& s = seqs_.at(e.seq_id);
      if (hold_key.empty())
        s.in_flight = false;
      else
        s.held = hold_key;  // stays in flight: nothing schedules or finishes it
    }
    w.in_flight.reset();
    ++counters_.steps_discarded;
  }
  // Back to the front of the queue in lease order (pushed front in reverse);
  // held ones wait apart, in lease order too.
  const std::vector<int64_t> leased = w.leased;
  for (int64_t id : leased) {
    if (!seqs_.at(id).held.empty()) held_[hold_key].push_back(id);
  }
  for (auto it = leased.rbegin(); it != leased.rend(); ++it) {
    Sequence& s = seqs_.at(*it);
    s.state = SeqState::kQueued;
    s.worker.clear();
    ++s.requeues;
    ++counters_.requeued;
    if (!s.held.empty()) continue;
    queue_.push_front(s.id);
    if (s.cancelled) {
      Finish(s, FinishReason::kCancelled, events);
    } else if (s.paused) {
      Park(s);
    }
  }
  w.leased.clear();
  workers_.erase(wit);
}

std::vector<Event> Scheduler::WorkerGone(const std::string& worker_id,
                                         const std::string& hold_key) {
  std::vector<Event> events;
  RemoveWorker(worker_id, hold_key, &events);
  return events;
}

int32_t Scheduler::ReleaseHeld(const std::string& hold_key) {
  auto it = held_.find(hold_key);
  if (hold_key.empty() || it == held_.end()) return 0;
  const std::vector<int64_t> ids = std::move(it->second);
  held_.erase(it);
  for (auto r = ids.rbegin(); r != ids.rend(); ++r) {
    Sequence& s = seqs_.at(*r);
    s.held.clear();
    s.in_flight = false;
    queue_.push_front(s.id);
  }
  return int32_t(ids.size());
}

absl::StatusOr<std::vector<Event>> Scheduler::Drain(const std::string& worker_id) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return absl::NotFoundError(absl::StrCat("no live worker ", worker_id));
  it->second.draining = true;
  std::vector<Event> events;
  CollectDrained(&events);
  return events;
}

void Scheduler::CollectDrained(std::vector<Event>* events) {
  for (auto& [id, w] : workers_) {
    if (!w.draining || w.drained_reported || !w.leased.empty() || w.in_flight) continue;
    w.drained_reported = true;
    Event e;
    e.kind = EventKind::kWorkerDrained;
    e.worker_id = id;
    events->push_back(std::move(e));
  }
}

// ---- Scheduling ----

int32_t Scheduler::StepBlocks(int32_t start, int32_t n) const {
  return int32_t(CeilDiv(int64_t(start) + n, config_.block_tokens));
}

int32_t Scheduler::NextChunk(const Sequence& s, int32_t start) const {
  const int32_t k = KnownTokens(s);
  return start < k ? std::min(config_.prefill_chunk, k - start) : 1;
}

std::unordered_set<int32_t> Scheduler::LeasedBlocks(const Worker& w) const {
  std::unordered_set<int32_t> distinct;  // a shared prefix's blocks count once
  for (int64_t id : w.leased) {
    for (int32_t b : seqs_.at(id).blocks) distinct.insert(b);
  }
  return distinct;
}

Scheduler::Worker* Scheduler::LeastLoaded(std::span<const int32_t> held, int32_t fresh,
                                          int32_t whole) {
  Worker* best = nullptr;
  for (auto& [id, w] : workers_) {
    if (w.draining || int32_t(w.leased.size()) >= w.max_seqs) continue;
    if (w.max_step_kv_blocks > 0) {
      if (whole > w.max_step_kv_blocks) continue;
      // Distinct blocks, as a step counts them: a block the worker's
      // sequences already name (a shared prefix) costs nothing more.
      const std::unordered_set<int32_t> distinct = LeasedBlocks(w);
      int32_t more = fresh;
      for (int32_t b : held) more += distinct.count(b) ? 0 : 1;
      if (int32_t(distinct.size()) + more > w.max_step_kv_blocks) continue;
    }
    if (!best || w.leased.size() < best->leased.size()) best = &w;  // ties: lowest id
  }
  return best;
}

bool Scheduler::AnySeat() const {
  for (const auto& [id, w] : workers_) {
    if (!w.draining && int32_t(w.leased.size()) < w.max_seqs) return true;
  }
  return false;
}

bool Scheduler::AnyWorkerCouldHold(int32_t blocks) const {
  for (const auto& [id, w] : workers_) {
    if (!w.draining && (w.max_step_kv_blocks == 0 || blocks <= w.max_step_kv_blocks)) return true;
  }
  return false;
}

// The banker's test for one resource: sort the sequences holding blocks by
// what they may still need; each in turn must fit in what is available, and
// then gives back what only it references. Shared blocks are not counted as
// given back (another sequence may keep them): the test errs on the safe side.
bool Scheduler::SafeAfter(int64_t seq_id, int32_t extra) const {
  int64_t avail = int64_t(pool_.available()) - extra;
  if (avail < 0) return false;
  struct Entry {
    int32_t need = 0, release = 0;
  };
  std::vector<Entry> entries;
  int64_t total_need = 0;
  for (const auto& [id, s] : seqs_) {
    const int32_t mine = id == seq_id ? extra : 0;
    if (s.blocks.empty() && mine == 0) continue;
    Entry e;
    e.need = std::max(0, BlocksFor(s.req) - int32_t(s.blocks.size()) - mine);
    e.release = mine;
    for (int32_t b : s.blocks) e.release += pool_.refs(b) == 1 ? 1 : 0;
    total_need += e.need;
    entries.push_back(e);
  }
  if (total_need <= avail) return true;  // everyone can grow at once
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.need < b.need; });
  for (const Entry& e : entries) {
    if (e.need > avail) return false;
    avail += e.release;
  }
  return true;
}

bool Scheduler::Grow(Sequence& s, int32_t n) {
  const int32_t extra = n - int32_t(s.blocks.size());
  if (extra <= 0) return true;
  if (!SafeAfter(s.id, extra)) return false;
  return pool_.Allocate(extra, &s.blocks);
}

int32_t Scheduler::ExpectedBlocks(const Sequence& s) const {
  const int32_t whole = BlocksFor(s.req);
  if (reply_p90_ < 0) return whole;
  const double tokens = double(s.req.prompt.size()) + reply_p90_;
  const int32_t expected = int32_t(std::ceil(tokens / config_.block_tokens));
  return std::min(whole, std::max(expected, int32_t(s.blocks.size()) + 1));
}

bool Scheduler::ExpectedToFit(const Sequence& fresh) const {
  int64_t demand = ExpectedBlocks(fresh);
  for (const auto& [id, s] : seqs_) {
    if (!s.blocks.empty()) demand += ExpectedBlocks(s);
  }
  return demand <= config_.total_blocks;
}

bool Scheduler::Start(Sequence& s, Worker& w, int32_t step_blocks) {
  const bool fresh = s.blocks.empty();
  if (fresh && !ExpectedToFit(s)) return false;
  if (fresh) {
    const int32_t T = config_.block_tokens;
    s.blocks = pool_.Acquire(s.req.prompt, std::span(s.chain));
    s.committed = int32_t(s.blocks.size()) * T;
    s.published = s.blocks.size();
    s.cached_tokens = s.committed;
  }
  if (!Grow(s, step_blocks)) {
    if (fresh) {
      pool_.Release(&s.blocks);
      s.committed = 0;
      s.published = 0;
      s.cached_tokens = 0;
    }
    return false;
  }
  if (fresh) {
    counters_.prompt_tokens += int64_t(s.req.prompt.size());
    counters_.cached_prompt_tokens += s.cached_tokens;
  }
  s.waiting_for_kv = false;
  s.state = SeqState::kRunning;
  s.worker = w.id;
  w.leased.push_back(s.id);
  return true;
}

void Scheduler::PublishCommitted(Sequence& s) {
  if (!pool_.caching()) return;
  const int32_t full = s.committed / config_.block_tokens;
  if (size_t(full) <= s.published) return;
  std::vector<int32_t> tokens = s.req.prompt;
  tokens.insert(tokens.end(), s.generated.begin(), s.generated.end());
  pool_.ExtendChain(tokens, full, &s.chain);
  s.published =
      pool_.Publish(s.blocks, tokens, std::span(s.chain).first(size_t(full)), s.published);
}

void Scheduler::Route() {
  const int32_t T = config_.block_tokens;
  std::vector<Sequence*> blocked;  // new requests passed over in this pass
  bool admit_new = true;
  // Prompt blocks some live sequence is computing and will publish: a new
  // request whose prompt continues with one waits for it instead of
  // computing its own copy (users arriving together with one system prompt
  // compute it once). Only sequences that will make progress count: not a
  // client-paused one, not one held for a gone worker.
  std::unordered_set<PrefixKey, PrefixKeyHash> coming;
  auto add_coming = [&coming](const Sequence& s) {
    for (size_t i = s.published; i < s.chain.size(); ++i) coming.insert(s.chain[i]);
  };
  if (pool_.caching()) {
    for (const auto& [id, s] : seqs_) {
      if (!s.blocks.empty() && !s.paused && s.held.empty()) add_coming(s);
    }
  }
  for (size_t i = 0; i < queue_.size();) {
    Sequence& s = seqs_.at(queue_[i]);
    if (s.paused) {  // released from a hold meanwhile: it waits for its client
      Park(s);
      continue;
    }
    const bool fresh = s.blocks.empty();
    if (fresh && !admit_new) {
      ++i;
      continue;
    }
    if (!AnyWorkerCouldHold(BlocksFor(s.req))) {  // passed over until a worker can
      ++i;
      continue;
    }
    int32_t start = s.committed;
    std::vector<int32_t> held;  // the blocks its next step names that exist already
    if (fresh) {
      // Every full block before the last prompt token may come from the
      // cache: that token is computed to sample the first generated one.
      const int32_t shareable = (int32_t(s.req.prompt.size()) - 1) / T;
      if (pool_.caching()) pool_.ExtendChain(s.req.prompt, shareable, &s.chain);
      held = pool_.Peek(s.req.prompt, s.chain);
      start = int32_t(held.size()) * T;
      if (held.size() < s.chain.size() && coming.count(s.chain[held.size()])) {
        ++i;  // its next prompt block is being computed: take it when published
        continue;
      }
    }
    const int32_t need = StepBlocks(start, NextChunk(s, start));
    if (!fresh)
      held.assign(s.blocks.begin(),
                  s.blocks.begin() + std::min<ptrdiff_t>(need, ptrdiff_t(s.blocks.size())));
    Worker* w = LeastLoaded(held, need - int32_t(held.size()), BlocksFor(s.req));
    if (!w && !AnySeat()) break;  // everyone waits for a seat
    if (!w || !Start(s, *w, need)) {
      if (fresh) {
        blocked.push_back(&s);
        if (s.overtaken >= config_.max_overtake) admit_new = false;
      }
      ++i;
      continue;
    }
    queue_.erase(queue_.begin() + ptrdiff_t(i));
    if (fresh) {
      if (pool_.caching()) add_coming(s);
      for (Sequence* b : blocked) {
        if (++b->overtaken >= config_.max_overtake) admit_new = false;
      }
    }
  }
}

std::optional<StepPlan> Scheduler::BuildStep(Worker& w, std::vector<int64_t>* preempted) {
  StepPlan plan;
  plan.worker_id = w.id;
  InFlight flight;
  int32_t budget = w.max_step_tokens;
  int32_t kv_room = w.max_step_kv_blocks > 0 ? w.max_step_kv_blocks : INT32_MAX;
  const int32_t T = config_.block_tokens;

  auto preempt = [&](Sequence& s) {
    Unlease(s);
    s.state = SeqState::kQueued;
    s.waiting_for_kv = true;
    ++s.preemptions;
    ++counters_.preemptions;
    preempted->push_back(s.id);
  };
  auto add = [&](Sequence& s, std::vector<int32_t> tokens, bool samples) {
    SeqStep step;
    step.seq_id = s.id;
    step.start_pos = s.committed;
    const int32_t need = StepBlocks(s.committed, int32_t(tokens.size()));
    PAGED_CHECK(size_t(need) <= s.blocks.size(), "a step reaches past the sequence's blocks");
    step.block_table.assign(s.blocks.begin(), s.blocks.begin() + ptrdiff_t(need));
    step.sampling = s.req.sampling;
    flight.entries.push_back({s.id, int32_t(tokens.size()), samples});
    step.tokens = std::move(tokens);
    plan.batch.seqs.push_back(std::move(step));
    s.in_flight = true;
  };

  // Blocks go to the worker's sequences oldest first (admission order), so a
  // short pool serves them first-come first-served; the batch then lists
  // the decodes (one token each: budget >= max_seqs >= leased, so all fit)
  // before the prefill chunks, which share what is left of the budget.
  std::vector<int64_t> order = w.leased;  // preempting edits w.leased
  std::sort(order.begin(), order.end());
  int32_t prefill_budget = budget;
  for (int64_t id : order) {
    if (Decoding(seqs_.at(id))) --prefill_budget;
  }
  struct Pick {
    Sequence* s;
    int32_t n;
  };
  std::vector<Pick> decodes, prefills;
  // A step's KV room counts DISTINCT blocks: the worker copies a block that
  // several of its sequences name (a shared prefix) once.
  std::unordered_set<int32_t> in_step;
  auto InStep = [&in_step](const Sequence& s, int32_t n) {
    int32_t k = 0;
    for (int32_t i = 0; i < n && i < int32_t(s.blocks.size()); ++i)
      k += in_step.count(s.blocks[size_t(i)]) ? 1 : 0;
    return k;
  };
  auto take = [&](const Sequence& s, int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
      if (in_step.insert(s.blocks[size_t(i)]).second) --kv_room;
    }
  };
  for (int64_t id : order) {
    Sequence& s = seqs_.at(id);
    const int32_t p = KnownTokens(s);  // a prefill feeds known tokens up to here
    if (Decoding(s)) {
      const int32_t need = StepBlocks(s.committed, 1);
      if (need - InStep(s, need) > kv_room || !Grow(s, need)) {
        preempt(s);
        continue;
      }
      take(s, need);
      decodes.push_back({&s, 1});
      continue;
    }
    if (prefill_budget <= 0) continue;  // waits for the next step, keeping its seat
    // A chunk shrinks to the blocks the sequence can have.
    int32_t n = std::min({config_.prefill_chunk, p - s.committed, prefill_budget});
    n = int32_t(std::min<int64_t>(
        n, (int64_t(kv_room) + InStep(s, int32_t(s.blocks.size()))) * T - s.committed));
    if (n > 0 && !Grow(s, StepBlocks(s.committed, n)))
      n = std::min<int32_t>(n, int32_t(s.blocks.size()) * T - s.committed);
    if (n <= 0) {
      preempt(s);
      continue;
    }
    take(s, StepBlocks(s.committed, n));
    prefill_budget -= n;
    prefills.push_back({&s, n});
  }
  for (const Pick& d : decodes) add(*d.s, {d.s->generated.back()}, /*samples=*/true);
  for (const Pick& f : prefills) {
    Sequence& s = *f.s;
    // The known tokens [committed, committed + n): the prompt's, then (a
    // restored sequence computing its rows again) the generated ones.
    std::vector<int32_t> chunk;
    chunk.reserve(size_t(f.n));
    const int32_t p = int32_t(s.req.prompt.size());
    for (int32_t i = s.committed; i < s.committed + f.n; ++i)
      chunk.push_back(i < p ? s.req.prompt[size_t(i)] : s.generated[size_t(i - p)]);
    add(s, std::move(chunk), /*samples=*/s.committed + f.n == KnownTokens(s));
  }
  if (plan.batch.seqs.empty()) return std::nullopt;
  plan.step_id = next_step_id_++;
  flight.step_id = plan.step_id;
  w.in_flight = std::move(flight);
  ++counters_.steps_planned;
  return plan;
}

ScheduleResult Scheduler::Schedule(TimeUs now) {
  ScheduleResult out;
  // 1. Drop cancelled and expired sequences that no step holds. (Cancel
  // finishes those at once; a cancel pending here came through a worker.)
  std::vector<int64_t> drop;
  for (const auto& [id, s] : seqs_) {
    if (s.in_flight) continue;
    if (s.cancelled || (s.req.deadline != 0 && now >= s.req.deadline)) drop.push_back(id);
  }
  for (int64_t id : drop) {
    Sequence& s = seqs_.at(id);
    Finish(s, s.cancelled ? FinishReason::kCancelled : FinishReason::kDeadline, &out.events);
  }
  CollectDrained(&out.events);

  // 2. Route queued sequences to workers, then 3. plan a step for every
  // worker with sequences and no step in flight. Sequences preempted while
  // planning go back to the queue's front (in lease order) and routing runs
  // again: one that could not grow on one worker may run on another, and
  // the seats they left may take the sequence the pool can grow.
  for (int pass = 0; pass < 4; ++pass) {
    Route();
    std::vector<int64_t> preempted;
    for (auto& [id, w] : workers_) {
      if (w.in_flight || w.leased.empty()) continue;
      if (auto plan = BuildStep(w, &preempted)) out.steps.push_back(std::move(*plan));
    }
    if (preempted.empty()) break;
    for (auto it = preempted.rbegin(); it != preempted.rend(); ++it) queue_.push_front(*it);
  }
  return out;
}

// ---- Results ----

FinishReason Scheduler::StopReason(const Sequence& s, int32_t token) const {
  if (!s.req.ignore_eos &&
      std::find(config_.eos_ids.begin(), config_.eos_ids.end(), token) != config_.eos_ids.end())
    return FinishReason::kEos;
  if (std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), token) != s.req.stop_ids.end())
    return FinishReason::kStop;
  if (int64_t(s.generated.size()) >= s.req.max_tokens) return FinishReason::kLength;
  return FinishReason::kNone;
}

std::vector<Event> Scheduler::OnStepResult(const std::string& worker_id, uint64_t step_id,
                                           const std::vector<int32_t>& next_tokens) {
  std::vector<Event> events;
  auto wit = workers_.find(worker_id);
  if (wit == workers_.end()) return events;
  Worker& w = wit->second;
  if (!w.in_flight || w.in_flight->step_id != step_id) return events;  // stale

  // A malformed answer means the worker cannot be trusted: drop it.
  std::string fault;
  const auto& entries = w.in_flight->entries;
  if (next_tokens.size() != entries.size()) {
    fault = absl::StrCat("step ", step_id, ": ", next_tokens.size(), " tokens for ", entries.size(),
                         " sequences");
  } else {
    for (size_t i = 0; i < entries.size() && fault.empty(); ++i) {
      const int32_t t = next_tokens[i];
      if (entries[i].samples && (t < 0 || t >= config_.vocab))
        fault = absl::StrCat("step ", step_id, ": token ", t, " for sequence ", entries[i].seq_id,
                             " is outside the vocabulary [0, ", config_.vocab, ")");
    }
  }
  if (!fault.empty()) {
    Event e;
    e.kind = EventKind::kWorkerFailed;
    e.worker_id = worker_id;
    e.detail = std::move(fault);
    events.push_back(std::move(e));
    RemoveWorker(worker_id, "", &events);
    CollectDrained(&events);
    return events;
  }

  // The step is resolved: its sequences advance, cancelled ones finish.
  InFlight flight = std::move(*w.in_flight);
  w.in_flight.reset();
  ++w.steps_completed;
  ++counters_.steps_completed;
  for (size_t i = 0; i < flight.entries.size(); ++i) {
    const StepEntry& e = flight.entries[i];
    Sequence& s = seqs_.at(e.seq_id);
    s.in_flight = false;
    w.tokens_processed += e.n_fed;
    if (s.cancelled) {
      Finish(s, FinishReason::kCancelled, &events);
      continue;
    }
    s.committed += e.n_fed;
    PublishCommitted(s);
    if (!e.samples) {
      if (s.paused) Park(s);
      continue;
    }
    const int32_t token = next_tokens[i];
    s.generated.push_back(token);
    ++counters_.tokens_committed;
    Event te;
    te.kind = EventKind::kToken;
    te.seq_id = s.id;
    te.token = token;
    te.index = int32_t(s.generated.size()) - 1;
    events.push_back(std::move(te));
    if (const FinishReason r = StopReason(s, token); r != FinishReason::kNone) {
      Finish(s, r, &events);
    } else if (s.paused) {
      Park(s);
    }
  }
  CollectDrained(&events);
  return events;
}

// ---- Introspection ----

SequenceInfo Scheduler::Info(const Sequence& s) const {
  SequenceInfo i;
  i.seq_id = s.id;
  i.request_id = s.req.request_id;
  i.state = s.state;
  i.worker_id = s.worker;
  i.prompt_tokens = int32_t(s.req.prompt.size());
  i.max_tokens = s.req.max_tokens;
  i.generated = int32_t(s.generated.size());
  i.committed_len = s.committed;
  i.blocks = int32_t(s.blocks.size());
  i.cached_tokens = s.cached_tokens;
  i.preemptions = s.preemptions;
  i.in_flight = s.in_flight && s.held.empty();
  i.cancel_pending = s.cancelled;
  i.paused = s.paused;
  i.held = s.held;
  i.requeues = s.requeues;
  i.admitted_at = s.admitted_at;
  i.deadline = s.req.deadline;
  return i;
}

SchedulerStats Scheduler::Stats() const {
  SchedulerStats st = counters_;
  st.queue_depth = int32_t(queue_.size());
  for (const auto& [key, ids] : held_) st.held += int32_t(ids.size());
  for (const auto& [id, s] : seqs_) {
    st.paused += s.state == SeqState::kPaused ? 1 : 0;
    st.waiting_for_kv += s.state == SeqState::kQueued && s.waiting_for_kv ? 1 : 0;
  }
  st.running = int32_t(seqs_.size() - queue_.size()) - st.held - st.paused;
  st.live_workers = int32_t(workers_.size());
  st.draining_workers = 0;
  st.steps_in_flight = 0;
  for (const auto& [id, w] : workers_) {
    st.draining_workers += w.draining ? 1 : 0;
    st.steps_in_flight += w.in_flight ? 1 : 0;
  }
  st.blocks_total = pool_.total();
  st.blocks_used = pool_.referenced();
  st.blocks_free = pool_.available();
  st.blocks_cached = pool_.cached();
  st.cache_evictions = pool_.evictions();
  return st;
}

std::vector<WorkerInfo> Scheduler::Workers() const {
  std::vector<WorkerInfo> out;
  for (const auto& [id, w] : workers_) {
    WorkerInfo i;
    i.worker_id = id;
    i.max_seqs = w.max_seqs;
    i.max_step_tokens = w.max_step_tokens;
    i.max_step_kv_blocks = w.max_step_kv_blocks;
    i.leased_blocks = int32_t(LeasedBlocks(w).size());
    i.draining = w.draining;
    i.drained = w.draining && w.leased.empty() && !w.in_flight;
    i.step_in_flight = w.in_flight ? w.in_flight->step_id : 0;
    i.leased = w.leased;
    i.steps_completed = w.steps_completed;
    i.tokens_processed = w.tokens_processed;
    out.push_back(std::move(i));
  }
  return out;
}

std::vector<SequenceInfo> Scheduler::Sequences() const {
  std::vector<SequenceInfo> out;
  out.reserve(seqs_.size() + history_.size());
  for (const auto& [id, s] : seqs_) out.push_back(Info(s));
  out.insert(out.end(), history_.begin(), history_.end());
  return out;
}

absl::StatusOr<SequenceInfo> Scheduler::GetSequence(int64_t seq_id) const {
  if (auto it = seqs_.find(seq_id); it != seqs_.end()) return Info(it->second);
  for (const SequenceInfo& h : history_) {
    if (h.seq_id == seq_id) return h;
  }
  return absl::NotFoundError(absl::StrCat("no sequence ", seq_id));
}

absl::StatusOr<std::vector<int32_t>> Scheduler::GeneratedTokens(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("no live sequence ", seq_id));
  return it->second.generated;
}

absl::StatusOr<std::vector<int32_t>> Scheduler::BlockTable(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("no live sequence ", seq_id));
  return it->second.blocks;
}

std::optional<SequenceKv> Scheduler::LiveKv(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end() || it->second.state == SeqState::kFinished) return std::nullopt;
  return SequenceKv{it->second.committed, it->second.blocks};
}

TimeUs Scheduler::NextDeadline() const {
  TimeUs next = 0;
  for (const auto& [id, s] : seqs_) {
    if (s.req.deadline != 0 && (next == 0 || s.req.deadline < next)) next = s.req.deadline;
  }
  return next;
}

}  // namespace paged
