#include "daemon/coordinator.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>

#include "absl/strings/str_cat.h"
#include "common/check.h"
#include "common/log.h"
#include "common/process.h"
#include "common/segment_layout.h"
#include "common/status.h"

namespace paged {
namespace {

using Clock = std::chrono::steady_clock;
constexpr TimeUs kRateWindowUs = 10'000'000;  // tokens/s and bytes/s over the last 10 s
constexpr auto kTimerPeriod = std::chrono::milliseconds(100);
constexpr size_t kMaxWorkerIdBytes = 128;

struct Drain {};
using Outgoing = std::variant<StepPlan, Drain>;

v1::CoordinatorMessage StepMessage(const StepPlan& p) {
  v1::CoordinatorMessage m;
  v1::Step* s = m.mutable_step();
  s->set_step_id(p.step_id);
  for (const SeqStep& q : p.batch.seqs) {
    v1::SeqStep* o = s->add_sequences();
    o->set_sequence_id(uint64_t(q.seq_id));
    o->mutable_tokens()->Add(q.tokens.begin(), q.tokens.end());
    o->set_start_pos(q.start_pos);
    o->mutable_block_table()->Add(q.block_table.begin(), q.block_table.end());
    v1::SamplingParams* sp = o->mutable_sampling();
    sp->set_temperature(q.sampling.temperature);
    sp->set_top_k(q.sampling.top_k);
    sp->set_top_p(q.sampling.top_p);
    sp->set_seed(q.sampling.seed);
  }
  return m;
}

// Microseconds on the wall clock: journaled deadlines outlive the process.
int64_t UnixNowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Ends the journal leaves to the client: the restored sequence derives them
// from its tokens, and the client that missed the last ones can still
// resume and take them.
bool EndsNaturally(FinishReason r) {
  return r == FinishReason::kEos || r == FinishReason::kStop || r == FinishReason::kLength;
}

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = char(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

struct Coordinator::Link {
  Link(absl::Mutex* coordinator_mu, std::function<void()> close_stream)
      : mu(coordinator_mu), close(std::move(close_stream)) {}
  absl::Mutex* const mu;  // the coordinator's mutex: guards the fields marked so
  // From the hello, set by AttachWorker before the link is published (in
  // live_), constant after.
  std::string worker_id;
  std::string device;
  v1::MemoryPlan plan;
  int64_t pid = 0;  // the worker's process (hello); 0: unknown
  uint64_t process_start = 0;
  v1::WorkerCounters counters ABSL_GUARDED_BY(mu);  // the latest totals the worker reported
  std::string state ABSL_GUARDED_BY(mu) = "ATTACHED";
  bool open ABSL_GUARDED_BY(mu) = true;          // false: closed, NextMessage answers kClosed
  bool in_scheduler ABSL_GUARDED_BY(mu) = true;  // the scheduler knows the worker as this link
  std::deque<Outgoing> outbox ABSL_GUARDED_BY(mu);
  absl::CondVar cv;  // with *mu: outbox or open changed
  // Cancels the worker's stream. Guarded by its own mutex so that it is never
  // called after DetachWorker (the stream's handler may have returned).
  absl::Mutex close_mu;
  std::function<void()> close ABSL_GUARDED_BY(close_mu);
};

int32_t DefaultStepKvBlocks(int32_t block_tokens) {
  return (kDefaultMaxStepKvTokens + block_tokens - 1) / std::max(block_tokens, 1);
}

TimeUs Coordinator::Now() {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    CoordinatorOptions options, std::unique_ptr<const Tokenizer> tokenizer) {
  absl::StatusOr<Scheduler> s = Scheduler::Create(options.scheduler);
  if (!s.ok()) return s.status();
  if (!options.chat_format.empty()) {
    absl::StatusOr<ChatTemplate> t = ChatTemplate::FromName(options.chat_format);
    if (!t.ok()) return Annotate(t.status(), "--chat-template");
  }
  std::unique_ptr<Coordinator> c(
      new Coordinator(std::move(options), std::move(tokenizer), std::move(*s)));
  if (!c->chat_.ok() && !c->options_.chat_template.empty()) {
    // Serving goes on: only chat prompts are refused.
    Log(LogLevel::kWarning, "chat", "%s; chat prompts will be refused",
        std::string(c->chat_.status().message()).c_str());
  }
  if (!c->options_.journal_path.empty()) {
    absl::MutexLock lock(&c->mu_);
    RETURN_IF_ERROR(c->RestoreFromJournalLocked());
  }
  if (c->options_.store_probe) {  // the first look before anyone asks
    StoreHealth h = c->options_.store_probe();
    absl::MutexLock lock(&c->mu_);
    c->store_ = std::move(h);
    c->store_probed_at_ = Now();
  }
  c->timer_ = std::thread([p = c.get()] { p->TimerLoop(); });
  return c;
}

Coordinator::Coordinator(CoordinatorOptions options, std::unique_ptr<const Tokenizer> tokenizer,
                         Scheduler scheduler)
    : options_(std::move(options)),
      tokenizer_(std::move(tokenizer)),
      scheduler_(std::move(scheduler)),
      rates_{RateSample{Now(), 0, 0}},  // the rates' first base
      rng_(std::random_device{}()),
      last_tick_(Now()) {}  // live from the start; the loop keeps it so

Coordinator::~Coordinator() { Shutdown(); }

template <class T>
void Coordinator::AssertHeldFor(const T& x) const {
  // Cannot fail: Admit and AttachWorker make them with &mu_.
  PAGED_CHECK(x.mu == &mu_, "a channel or link of another coordinator");
}

const SchedulerConfig& Coordinator::scheduler_config() const { return scheduler_.config(); }

uint64_t Coordinator::RandomSeed() {
  absl::MutexLock lock(&mu_);
  uint64_t s = 0;
  while (s == 0) s = rng_();
  return s;
}

absl::StatusOr<ParsedGenerate> Coordinator::ParseRequest(const v1::GenerateRequest& req) {
  PromptContext ctx;
  ctx.tokenizer = tokenizer();
  ctx.chat = chat_template();
  if (!chat_.ok()) ctx.no_chat = chat_.status();
  return ParseGenerateRequest(req, ctx, RandomSeed());
}

bool Coordinator::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void Coordinator::RunClosers(Closers& closers) {
  for (const std::shared_ptr<Link>& l : closers) {
    absl::MutexLock lock(&l->close_mu);
    if (l->close) l->close();
  }
  closers.clear();
}

// ---- The loop: schedule, dispatch, deliver ----

void Coordinator::PumpLocked(TimeUs now, Closers* closers) {
  // After a restart, no block is handed out while a worker process of the
  // last coordinator may still write KV rows (restart_fences_).
  if (!restart_fences_.empty()) return;
  ScheduleResult r = scheduler_.Schedule(now);
  for (StepPlan& plan : r.steps) {
    auto it = live_.find(plan.worker_id);
    if (it == live_.end()) continue;  // cannot happen: every scheduler worker has a live link
    Link& l = *it->second;
    AssertHeldFor(l);
    l.outbox.emplace_back(std::move(plan));
    l.cv.SignalAll();
  }
  DeliverLocked(r.events, 0.0, closers);
}

void Coordinator::DeliverLocked(const std::vector<Event>& events, double step_s, Closers* closers) {
  // Journaled and synced before any client can take a token (they take them
  // under mu_, which is held until the end).
  if (journal_) JournalLocked(events);
  for (const Event& e : events) {
    switch (e.kind) {
      case EventKind::kToken: {
        ++tokens_committed_;
        metrics_.generated_tokens.Inc();
        auto it = channels_.find(e.seq_id);
        if (it == channels_.end()) break;  // its stream left already
        Channel& ch = *it->second;
        AssertHeldFor(ch);
        ch.tokens.push_back(e.token);
        ch.step_s.push_back(step_s);
        // Back-pressure: a client that does not take its tokens stops its
        // sequence from being scheduled (Wait resumes it).
        if (!ch.paused && int64_t(ch.tokens.size()) >= options_.max_stream_backlog &&
            scheduler_.SetPaused(e.seq_id, true).ok()) {
          ch.paused = true;
          Log(LogLevel::kDebug, "coordinator",
              "sequence %lld paused: its client has not taken %zu tokens",
              static_cast<long long>(e.seq_id), ch.tokens.size());
        }
        ch.cv.SignalAll();
        if (ch.on_update) ch.on_update();
        break;
      }
      case EventKind::kFinished: {
        auto it = channels_.find(e.seq_id);
        if (it == channels_.end()) break;
        Channel& ch = *it->second;
        AssertHeldFor(ch);
        ch.finished = true;
        ch.reason = e.reason;
        ch.cv.SignalAll();
        if (ch.on_update) ch.on_update();
        break;
      }
      case EventKind::kWorkerDrained: {
        auto it = live_.find(e.worker_id);
        if (it == live_.end()) break;
        Link& l = *it->second;
        AssertHeldFor(l);
        l.state = "DRAINED";
        l.outbox.emplace_back(Drain{});
        l.cv.SignalAll();
        break;
      }
      case EventKind::kWorkerFailed: {
        // The scheduler removed the worker already (as by WorkerGone).
        Log(LogLevel::kWarning, "coordinator", "worker %s failed: %s", e.worker_id.c_str(),
            e.detail.c_str());
        auto it = live_.find(e.worker_id);
        if (it == live_.end()) break;
        std::shared_ptr<Link> l = it->second;
        live_.erase(it);
        AssertHeldFor(*l);
        l->in_scheduler = false;
        RemoveLinkLocked(*l, "GONE", closers);
        ReapRequeuedLocked(closers);
        break;
      }
    }
  }
}

void Coordinator::RemoveLinkLocked(Link& link, const char* state, Closers* closers) {
  AssertHeldFor(link);
  if (link.in_scheduler) {
    link.in_scheduler = false;
    auto it = live_.find(link.worker_id);
    if (it != live_.end() && it->second.get() == &link) live_.erase(it);
    const SchedulerStats before = scheduler_.Stats();
    // A process that lives on may still be writing its step's KV rows: hold
    // that step's sequences until it ends or comes back (the fence).
    std::string hold;
    if (link.pid > 0 && ProcessAlive(int(link.pid), link.process_start))
      hold = absl::StrCat(link.worker_id, "#", link.pid, "@", link.process_start);
    DeliverLocked(scheduler_.WorkerGone(link.worker_id, hold), 0.0, closers);
    const SchedulerStats after = scheduler_.Stats();
    const int32_t held = after.held - before.held;
    Log(LogLevel::kWarning, "coordinator", "worker %s gone; %lld sequences re-queued",
        link.worker_id.c_str(), static_cast<long long>(after.requeued - before.requeued - held));
    if (held > 0) {
      fences_.push_back({hold, link.pid, link.process_start, Now()});
      Log(LogLevel::kWarning, "coordinator",
          "worker %s's process %lld lives on: %d sequences of its last step held until it ends or "
          "attaches again",
          link.worker_id.c_str(), static_cast<long long>(link.pid), held);
    }
    ReapRequeuedLocked(closers);
  }
  if (link.open) {
    link.open = false;
    link.outbox.clear();
    link.cv.SignalAll();
    auto rec = records_.find(link.worker_id);
    if (rec != records_.end() && rec->second.link.get() == &link)
      closers->push_back(rec->second.link);
  }
  if (link.state != "DRAINED") link.state = state;
}

void Coordinator::ReapRequeuedLocked(Closers* closers) {
  if (options_.max_requeues <= 0) return;
  std::vector<int64_t> doomed;
  for (const SequenceInfo& s : scheduler_.Sequences()) {
    if (s.state != SeqState::kFinished && s.requeues >= options_.max_requeues && !s.cancel_pending)
      doomed.push_back(s.seq_id);
  }
  for (int64_t id : doomed) {
    auto it = channels_.find(id);
    if (it != channels_.end()) {
      Channel& ch = *it->second;
      AssertHeldFor(ch);
      ch.error =
          absl::StrCat("the sequence lost its worker ", options_.max_requeues, " times; giving up");
    }
    absl::StatusOr<std::vector<Event>> ev = scheduler_.Cancel(id);
    if (ev.ok()) DeliverLocked(*ev, 0.0, closers);
  }
}

void Coordinator::SampleRatesLocked(TimeUs now) {
  rates_.push_back({now, tokens_committed_, paged_bytes_});
  while (rates_.size() > 1 && rates_.front().at < now - kRateWindowUs) rates_.pop_front();
}

// ---- The journal ----

absl::Status Coordinator::RestoreFromJournalLocked() {
  JournalOptions jo;
  jo.fsync = options_.journal_fsync;
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(options_.journal_path, jo);
  if (!j.ok()) return Annotate(j.status(), "the sequence journal (--journal)");
  const JournalRecovery& rec = j->recovery();
  if (rec.bytes_dropped > 0)
    Log(LogLevel::kWarning, "journal", "%s: %lld bytes dropped from offset %lld: %s (%s)",
        options_.journal_path.c_str(), static_cast<long long>(rec.bytes_dropped),
        static_cast<long long>(rec.dropped_at), rec.drop_reason.c_str(),
        rec.torn_tail ? "a write cut short" : "corruption");
  const TimeUs now = Now();
  const int64_t unix_now = UnixNowUs();
  // The block lists index the KV pool of the segment they were written for:
  // another generation (the store rebuilt it) means the rows are gone.
  const bool same_store = j->store_generation() == options_.segment_generation;
  std::vector<RestoredSequence> in;
  for (const auto& [id, js] : j->live()) {
    RestoredSequence r;
    r.seq_id = id;
    r.request = js.request;
    if (js.deadline_unix_us != 0)
      r.request.deadline = std::max<TimeUs>(now + (js.deadline_unix_us - unix_now), 1);
    r.generated = js.generated;
    if (same_store) {
      r.committed_len = js.committed_len;
      r.blocks = js.blocks;
    }
    in.push_back(std::move(r));
  }
  ASSIGN_OR_RETURN(Scheduler::RestoreResult restored, scheduler_.Restore(std::move(in), now));
  for (const auto& [id, why] : restored.skipped) {
    Log(LogLevel::kWarning, "journal", "sequence %lld not restored: %s", static_cast<long long>(id),
        why.c_str());
    RETURN_IF_ERROR(j->Finish(id, FinishReason::kError));
  }
  std::vector<int64_t> ids;
  for (const auto& [id, js] : j->live()) ids.push_back(id);
  for (int64_t id : ids) {
    const JournaledSequence& js = j->live().at(id);
    auto ch = std::make_shared<Channel>(&mu_);
    AssertHeldFor(*ch);
    ch->seq_id = id;
    ch->admitted_at = now;
    ch->request_id = js.request.request_id;
    ch->restored_prompt = js.request.prompt;
    ch->orphan = true;
    ch->last_take = now;
    ch->tokens = js.generated;
    ch->step_s.assign(js.generated.size(), 0.0);
    channels_[id] = ch;
    // The journal now says what the scheduler holds (no blocks when the
    // rows were not kept), so that a later restart reads the truth.
    if (std::optional<SequenceKv> kv = scheduler_.LiveKv(id)) {
      RETURN_IF_ERROR(j->Commit(id, kv->committed_len, {}, kv->blocks));
      if (int64_t(ch->tokens.size()) >= options_.max_stream_backlog &&
          scheduler_.SetPaused(id, true).ok())
        ch->paused = true;
    }
  }
  if (options_.segment_generation != 0) RETURN_IF_ERROR(j->SetStore(options_.segment_generation));
  for (const auto& [id, w] : j->workers()) {
    if (ProcessAlive(int(w.pid), w.process_start)) restart_fences_.push_back(w);
  }
  RETURN_IF_ERROR(j->Sync());
  journal_ = std::move(*j);
  restarted_at_ = now;
  restored_sequences_ = int64_t(ids.size());
  Closers none;  // no link exists yet
  DeliverLocked(restored.events, 0.0, &none);
  if (!ids.empty() || !restart_fences_.empty())
    Log(LogLevel::kInfo, "journal",
        "%s: restored %zu sequences (KV rows %s); waiting for %zu worker processes of the last "
        "coordinator",
        options_.journal_path.c_str(), ids.size(),
        restored.kv_adopted ? "kept" : "to be computed again", restart_fences_.size());
  return absl::OkStatus();
}

void Coordinator::JournalFailedLocked(const absl::Status& s) {
  Log(LogLevel::kError, "journal",
      "%s; sequences are no longer journaled: a coordinator restart will drop them",
      std::string(s.message()).c_str());
  journal_.reset();
}

void Coordinator::JournalLocked(const std::vector<Event>& events) {
  bool appended = false;
  for (const Event& e : events) {
    auto it = journal_->live().find(e.seq_id);
    if (it == journal_->live().end()) continue;  // not journaled, or its end recorded
    absl::Status st;
    if (e.kind == EventKind::kToken) {
      // What the scheduler holds, read in place; else what was journaled.
      int32_t committed = it->second.committed_len;
      std::span<const int32_t> blocks = it->second.blocks;
      if (std::optional<SequenceKv> kv = scheduler_.LiveKv(e.seq_id)) {
        committed = kv->committed_len;
        blocks = kv->blocks;
      }
      st = journal_->Commit(e.seq_id, committed, std::span(&e.token, 1), blocks);
    } else if (e.kind == EventKind::kFinished && !EndsNaturally(e.reason)) {
      st = journal_->Finish(e.seq_id, e.reason);
    } else {
      continue;
    }
    if (!st.ok()) {  // a record the journal refuses: that sequence only
      Log(LogLevel::kWarning, "journal", "sequence %lld: %s", static_cast<long long>(e.seq_id),
          std::string(st.message()).c_str());
      continue;
    }
    appended = true;
  }
  if (!appended) return;
  if (absl::Status st = journal_->Sync(); !st.ok()) JournalFailedLocked(st);
}

void Coordinator::JournalReleasedLocked(int64_t seq_id, FinishReason reason) {
  if (!journal_ || !journal_->live().count(seq_id)) return;
  // Not synced now: if it is lost, a restart restores the sequence, which
  // ends at once (or is cancelled) and is given up after resume_timeout_s.
  if (absl::Status st = journal_->Finish(
          seq_id, reason == FinishReason::kNone ? FinishReason::kCancelled : reason);
      !st.ok())
    Log(LogLevel::kWarning, "journal", "sequence %lld: %s", static_cast<long long>(seq_id),
        std::string(st.message()).c_str());
}

void Coordinator::ReapOrphansLocked(TimeUs now, Closers* closers) {
  const auto limit = TimeUs(options_.resume_timeout_s * 1e6);
  std::vector<std::shared_ptr<Channel>> doomed;
  for (auto& [id, ch] : channels_) {
    AssertHeldFor(*ch);
    if (ch->orphan && now - ch->admitted_at > limit) doomed.push_back(ch);
  }
  for (const std::shared_ptr<Channel>& ch : doomed) {
    AssertHeldFor(*ch);
    Log(LogLevel::kWarning, "journal",
        "sequence %lld (request_id '%s'): no client resumed it within %g s; cancelled",
        static_cast<long long>(ch->seq_id), ch->request_id.c_str(), options_.resume_timeout_s);
    channels_.erase(ch->seq_id);
    if (!ch->finished) {
      absl::StatusOr<std::vector<Event>> ev = scheduler_.Cancel(ch->seq_id);
      if (ev.ok()) DeliverLocked(*ev, 0.0, closers);
    }
    JournalReleasedLocked(ch->seq_id, ch->finished ? ch->reason : FinishReason::kCancelled);
  }
}

void Coordinator::CheckFencesLocked(TimeUs now, int64_t returned_pid, uint64_t returned_start) {
  for (auto it = restart_fences_.begin(); it != restart_fences_.end();) {
    const char* why = nullptr;
    if (returned_pid != 0 && it->pid == returned_pid && it->process_start == returned_start) {
      why = "attached again";
    } else if (!ProcessAlive(int(it->pid), it->process_start)) {
      why = "ended";
    } else if (double(now - restarted_at_) / 1e6 > options_.fence_timeout_s) {
      why = "still lives after the fence timeout; going on anyway";
    }
    if (why == nullptr) {
      ++it;
      continue;
    }
    Log(LogLevel::kInfo, "journal", "worker %s of the last coordinator (process %lld) %s",
        it->worker_id.c_str(), static_cast<long long>(it->pid), why);
    it = restart_fences_.erase(it);
  }
  for (auto it = fences_.begin(); it != fences_.end();) {
    const char* why = nullptr;
    LogLevel level = LogLevel::kInfo;
    if (returned_pid != 0 && it->pid == returned_pid && it->process_start == returned_start) {
      why = "attached again";
    } else if (!ProcessAlive(int(it->pid), it->process_start)) {
      why = "ended";
    } else if (double(now - it->since) / 1e6 > options_.fence_timeout_s) {
      why = "still lives after the fence timeout; releasing anyway";
      level = LogLevel::kWarning;
    }
    if (why == nullptr) {
      ++it;
      continue;
    }
    const int32_t n = scheduler_.ReleaseHeld(it->hold_key);
    Log(level, "coordinator", "process %lld %s: %d held sequences re-queued",
        static_cast<long long>(it->pid), why, n);
    it = fences_.erase(it);
  }
}

void Coordinator::CancelStalledLocked(TimeUs now, std::vector<std::shared_ptr<Channel>>* stalled) {
  const auto limit = TimeUs(options_.stalled_stream_timeout_s * 1e6);
  std::vector<std::shared_ptr<Channel>> doomed;
  for (auto& [id, ch] : channels_) {
    AssertHeldFor(*ch);
    if (ch->paused && !ch->finished && now - ch->last_take > limit) doomed.push_back(ch);
  }
  for (const std::shared_ptr<Channel>& ch : doomed) {
    Log(LogLevel::kWarning, "coordinator",
        "sequence %lld: its client took no tokens for %.0f s; cancelled (its KV blocks freed)",
        static_cast<long long>(ch->seq_id), options_.stalled_stream_timeout_s);
    AssertHeldFor(*ch);
    ch->paused = false;
    absl::StatusOr<std::vector<Event>> ev = scheduler_.Cancel(ch->seq_id);
    Closers ignored;  // cancelling a sequence closes no link
    if (ev.ok()) DeliverLocked(*ev, 0.0, &ignored);
    stalled->push_back(ch);
  }
}

void Coordinator::TickUnlocked(TimeUs now) {
  if (options_.on_tick) options_.on_tick();
  if (options_.store_probe) {
    bool due;
    {
      absl::MutexLock lock(&mu_);
      due = now - store_probed_at_ >= 1'000'000;
      if (due) store_probed_at_ = now;
    }
    if (due) {
      StoreHealth h = options_.store_probe();
      absl::MutexLock lock(&mu_);
      if (h.alive != store_.alive || h.state != store_.state)
        Log(h.alive && h.state == "READY" ? LogLevel::kInfo : LogLevel::kWarning, "coordinator",
            "store: segment %s %s, %s", options_.segment.c_str(), h.state.c_str(),
            h.alive ? absl::StrCat("held by process ", h.pid).c_str()
                    : "no store process holds it");
      store_ = std::move(h);
    }
  }
  Readiness r;
  {
    absl::MutexLock lock(&mu_);
    r = ReadinessLocked();
  }
  absl::MutexLock lock(&listener_mu_);
  if (on_readiness_ && last_ready_ != int(r.ready)) {
    if (last_ready_ != -1)
      Log(LogLevel::kInfo, "coordinator", "%s",
          r.ready ? "ready" : ("not ready: " + r.reason).c_str());
    last_ready_ = int(r.ready);
    on_readiness_(r.ready);
  }
}

void Coordinator::TimerLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    auto wait = std::chrono::duration_cast<std::chrono::microseconds>(kTimerPeriod);
    if (!fences_.empty() || !restart_fences_.empty())
      wait = std::min(wait, std::chrono::microseconds(20000));
    if (const TimeUs d = scheduler_.NextDeadline(); d != 0)
      wait = std::min(wait, std::chrono::microseconds(std::max<TimeUs>(d - Now(), 0) + 1));
    timer_cv_.WaitWithTimeout(&mu_, absl::FromChrono(wait));  // or woken, or spuriously
    if (stopping_) break;
    Closers closers;
    std::vector<std::shared_ptr<Channel>> stalled;
    const TimeUs now = Now();
    SampleRatesLocked(now);
    if (!fences_.empty() || !restart_fences_.empty()) CheckFencesLocked(now);
    CancelStalledLocked(now, &stalled);
    ReapOrphansLocked(now, &closers);
    PumpLocked(now, &closers);
    last_tick_.store(now, std::memory_order_relaxed);
    mu_.Unlock();
    RunClosers(closers);
    for (const std::shared_ptr<Channel>& ch : stalled) {
      absl::MutexLock l(&ch->stalled_mu);
      if (ch->on_stalled) ch->on_stalled();
      ch->on_stalled = nullptr;
    }
    TickUnlocked(now);
    mu_.Lock();
  }
}

Readiness Coordinator::ReadinessLocked() const {
  Readiness r;
  if (stopping_) {
    r.reason = "the coordinator is shutting down";
    return r;
  }
  if (options_.store_probe) {
    if (store_.state != "READY") {
      r.reason = absl::StrCat("the store's segment ", options_.segment, " is ", store_.state);
      return r;
    }
    if (options_.segment_generation != 0 && store_.generation != 0 &&
        store_.generation != options_.segment_generation) {
      r.reason = absl::StrCat("the store rebuilt segment ", options_.segment, " (generation ",
                              store_.generation, ", this coordinator mapped ",
                              options_.segment_generation, "): restart the coordinator");
      return r;
    }
    if (!store_.alive) {
      r.reason = absl::StrCat("no paged-store process holds segment ", options_.segment);
      return r;
    }
  }
  if (!restart_fences_.empty()) {
    r.reason = absl::StrCat("restarted: waiting for ", restart_fences_.size(),
                            " worker process(es) of the last coordinator to end or attach again "
                            "(their steps may still write KV rows)");
    return r;
  }
  for (const auto& [id, l] : live_) {
    AssertHeldFor(*l);
    if (l->state == "ATTACHED") {
      r.ready = true;
      return r;
    }
  }
  r.reason = "no worker is attached";
  return r;
}

Readiness Coordinator::GetReadiness() {
  absl::MutexLock lock(&mu_);
  return ReadinessLocked();
}

bool Coordinator::Live(double max_age_s) const {
  const TimeUs t = last_tick_.load(std::memory_order_relaxed);
  return t != 0 && double(Now() - t) / 1e6 <= max_age_s;
}

void Coordinator::SetReadinessListener(std::function<void(bool)> fn) {
  const bool ready = GetReadiness().ready;
  absl::MutexLock lock(&listener_mu_);
  on_readiness_ = std::move(fn);
  last_ready_ = int(ready);
  if (on_readiness_) on_readiness_(ready);
}

void Coordinator::ClearReadinessListener() {
  absl::MutexLock lock(&listener_mu_);
  on_readiness_ = nullptr;
  last_ready_ = -1;
}

// ---- Sequences ----

absl::StatusOr<std::shared_ptr<Coordinator::Channel>> Coordinator::Admit(
    Request r, std::function<void()> on_update, std::function<void()> on_stalled) {
  Closers closers;
  std::shared_ptr<Channel> ch;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the coordinator is shutting down");
    const TimeUs now = Now();
    const bool has_deadline = r.deadline != 0;
    std::optional<Request> journaled;
    if (journal_) journaled = r;
    std::string request_id = r.request_id;
    absl::StatusOr<int64_t> id = scheduler_.Admit(std::move(r), now);
    if (!id.ok()) return id.status();
    if (journal_) {
      // Synced with the first step result that commits anything: no client
      // sees a token of it before.
      const int64_t deadline_unix =
          journaled->deadline == 0 ? 0 : UnixNowUs() + (journaled->deadline - now);
      if (absl::Status st = journal_->Admit(*id, *journaled, std::max<int64_t>(deadline_unix, 0));
          !st.ok())
        Log(LogLevel::kWarning, "journal", "sequence %lld not journaled: %s",
            static_cast<long long>(*id), std::string(st.message()).c_str());
    }
    ch = std::make_shared<Channel>(&mu_);
    AssertHeldFor(*ch);
    ch->seq_id = *id;
    ch->request_id = std::move(request_id);
    ch->admitted_at = now;
    ch->on_update = std::move(on_update);
    ch->last_take = now;
    {
      absl::MutexLock l(&ch->stalled_mu);
      ch->on_stalled = std::move(on_stalled);
    }
    channels_[*id] = ch;
    PumpLocked(now, &closers);
    if (has_deadline) timer_cv_.SignalAll();
  }
  RunClosers(closers);
  return ch;
}

bool Coordinator::Wait(Channel& ch, std::chrono::milliseconds timeout, Update* out) {
  Closers closers;
  absl::MutexLock lock(&mu_);
  AssertHeldFor(ch);
  ch.last_take = Now();
  // Until tokens, the end or shutdown, or `timeout` on the steady clock
  // (as condition_variable::wait_for with a predicate).
  const Clock::time_point deadline = Clock::now() + timeout;
  while (ch.tokens.empty() && !ch.finished && !stopping_) {
    const Clock::duration left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) break;
    ch.cv.WaitWithTimeout(&mu_, absl::FromChrono(left));
  }
  out->tokens.insert(out->tokens.end(), ch.tokens.begin(), ch.tokens.end());
  out->step_s.insert(out->step_s.end(), ch.step_s.begin(), ch.step_s.end());
  ch.tokens.clear();
  ch.step_s.clear();
  out->finished = ch.finished;
  out->reason = ch.reason;
  out->error = ch.error;
  ch.last_take = Now();
  if (ch.paused && !ch.finished) {
    // The client took its backlog: the sequence is scheduled again.
    ch.paused = false;
    if (scheduler_.SetPaused(ch.seq_id, false).ok()) PumpLocked(Now(), &closers);
  }
  if (!closers.empty()) {
    mu_.Unlock();
    RunClosers(closers);
    mu_.Lock();
  }
  return !stopping_;
}

void Coordinator::Release(Channel& ch) {
  {
    absl::MutexLock l(&ch.stalled_mu);
    ch.on_stalled = nullptr;
  }
  Closers closers;
  {
    absl::MutexLock lock(&mu_);
    AssertHeldFor(ch);
    auto it = channels_.find(ch.seq_id);
    if (it != channels_.end() && it->second.get() == &ch) channels_.erase(it);
    ch.on_update = nullptr;
    if (!ch.finished) {
      // A queued or idle sequence ends now; one in flight when its step resolves.
      absl::StatusOr<std::vector<Event>> ev = scheduler_.Cancel(ch.seq_id);
      if (ev.ok()) DeliverLocked(*ev, 0.0, &closers);
      PumpLocked(Now(), &closers);
    }
    // A stream ended by the shutdown stays journaled: the next coordinator
    // resumes it for a client that reconnects.
    if (!stopping_)
      JournalReleasedLocked(ch.seq_id, ch.finished ? ch.reason : FinishReason::kCancelled);
  }
  RunClosers(closers);
}

absl::StatusOr<std::shared_ptr<Coordinator::Channel>> Coordinator::Resume(
    const std::string& request_id, const std::vector<int32_t>& prompt, int32_t received,
    std::function<void()> on_update, std::function<void()> on_stalled) {
  if (request_id.empty())
    return absl::InvalidArgumentError("resuming a stream needs its request_id");
  std::shared_ptr<Channel> ch;
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the coordinator is shutting down");
  for (auto& [id, c] : channels_) {
    AssertHeldFor(*c);
    if (c->orphan && c->request_id == request_id) {
      ch = c;
      break;
    }
  }
  if (!ch)
    return absl::NotFoundError(absl::StrCat(
        "no sequence to resume under request_id '", request_id,
        "': none was journaled under it, it was resumed already, or no client came back within ",
        options_.resume_timeout_s, " s of the restart"));
  AssertHeldFor(*ch);
  if (ch->restored_prompt != prompt)
    return absl::InvalidArgumentError(
        absl::StrCat("request_id '", request_id,
                     "' was admitted with another prompt: resume with the same request"));
  if (received < 0 || size_t(received) > ch->tokens.size())
    return absl::OutOfRangeError(absl::StrCat("resume.received ", received, ": request_id '",
                                              request_id, "' has committed ", ch->tokens.size(),
                                              " tokens so far"));
  ch->orphan = false;
  ch->on_update = std::move(on_update);
  ch->last_take = Now();
  absl::MutexLock l(&ch->stalled_mu);
  ch->on_stalled = std::move(on_stalled);
  return ch;
}

// ---- Workers ----

absl::StatusOr<std::shared_ptr<Coordinator::Link>> Coordinator::AttachWorker(
    const v1::Hello& hello, std::function<void()> close) {
  const std::string& id = hello.worker_id();
  if (id.empty()) return absl::InvalidArgumentError("hello: worker_id is empty");
  if (id.size() > kMaxWorkerIdBytes)
    return absl::InvalidArgumentError(
        absl::StrCat("hello: worker_id is over ", kMaxWorkerIdBytes, " bytes"));
  if (hello.max_step_seqs() < 0 || hello.max_step_tokens() < 0 || hello.max_step_kv_blocks() < 0)
    return absl::InvalidArgumentError("hello: step limits must be >= 0 (0: unknown)");
  if (!hello.segment().empty() && hello.segment() != options_.segment)
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", id, " maps segment '", hello.segment(),
                     "'; this coordinator serves '", options_.segment, "'"));
  if (options_.segment_generation != 0 && hello.segment_generation() != 0 &&
      hello.segment_generation() != options_.segment_generation)
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", id, " maps generation ", hello.segment_generation(), " of segment '",
        options_.segment, "'; this coordinator maps generation ", options_.segment_generation,
        " (the store rebuilt it: restart the coordinator)"));

  // The scheduler needs tokens per step >= sequences per step.
  const SchedulerConfig& cfg = scheduler_config();
  WorkerLimits limits;
  const int32_t tokens = hello.max_step_tokens() > 0
                             ? std::min(hello.max_step_tokens(), cfg.max_step_tokens)
                             : cfg.max_step_tokens;
  const int32_t seqs = hello.max_step_seqs() > 0
                           ? std::min(hello.max_step_seqs(), cfg.max_seqs_per_step)
                           : cfg.max_seqs_per_step;
  limits.max_step_tokens = tokens;
  limits.max_seqs = std::min(seqs, tokens);
  limits.max_step_kv_blocks = hello.max_step_kv_blocks() > 0
                                  ? hello.max_step_kv_blocks()
                                  : DefaultStepKvBlocks(cfg.block_tokens);

  Closers closers;
  std::shared_ptr<Link> link;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the coordinator is shutting down");
    if (auto old = live_.find(id); old != live_.end()) {
      Log(LogLevel::kWarning, "coordinator", "worker %s attached again; its previous link is gone",
          id.c_str());
      std::shared_ptr<Link> keep = old->second;
      RemoveLinkLocked(*keep, "GONE", &closers);
    }
    // The same process attaching again has finished the step it was in.
    if (hello.pid() > 0 && (!fences_.empty() || !restart_fences_.empty()))
      CheckFencesLocked(Now(), hello.pid(), hello.process_start_time());
    status = scheduler_.AddWorker(id, limits);
    if (status.ok() && journal_ && hello.pid() > 0) {
      // Durable before the worker gets a step: a restarted coordinator waits
      // for this process before handing out blocks it may still write.
      absl::Status st = journal_->Worker({id, hello.pid(), hello.process_start_time()});
      if (st.ok()) st = journal_->Sync();
      if (!st.ok()) JournalFailedLocked(st);
    }
    if (status.ok()) {
      link = std::make_shared<Link>(&mu_, std::move(close));
      link->worker_id = id;
      link->pid = hello.pid();
      link->process_start = hello.process_start_time();
      link->device = hello.device();
      link->plan = hello.plan();
      WorkerRecord& rec = records_[id];
      if (rec.metrics.steps == nullptr) rec.metrics = metrics_.ForWorker(id);
      if (hello.plan().expert_slots() > 0) metrics_.AddExpertMetrics(rec.metrics);
      rec.link_h2d_bytes_per_s = hello.plan().link_h2d_bytes_per_s();
      if (rec.link) {
        ++rec.restarts;
        rec.metrics.restarts->Inc();
      }
      rec.link = link;
      live_[id] = link;
      Log(LogLevel::kInfo, "coordinator",
          "worker %s attached (%s, %d seqs, %d tokens, %d KV blocks per step)", id.c_str(),
          hello.device().c_str(), limits.max_seqs, limits.max_step_tokens,
          limits.max_step_kv_blocks);
    }
    PumpLocked(Now(), &closers);
  }
  RunClosers(closers);
  if (!status.ok()) return status;
  return link;
}

Coordinator::Next Coordinator::NextMessage(Link& link, v1::CoordinatorMessage* out,
                                           std::chrono::milliseconds timeout) {
  Outgoing next;
  {
    absl::MutexLock lock(&mu_);
    AssertHeldFor(link);
    // Until closed or a message, or `timeout` on the steady clock (as
    // condition_variable::wait_for with a predicate).
    const Clock::time_point deadline = Clock::now() + timeout;
    while (link.open && link.outbox.empty()) {
      const Clock::duration left = deadline - Clock::now();
      if (left <= Clock::duration::zero()) break;
      link.cv.WaitWithTimeout(&mu_, absl::FromChrono(left));
    }
    if (!link.open) return Next::kClosed;
    if (link.outbox.empty()) return Next::kTimeout;
    next = std::move(link.outbox.front());
    link.outbox.pop_front();
  }
  if (const StepPlan* p = std::get_if<StepPlan>(&next)) {
    *out = StepMessage(*p);
  } else {
    out->Clear();
    out->set_drain(true);
  }
  return Next::kMessage;
}

absl::Status Coordinator::OnWorkerMessage(Link& link, const v1::WorkerMessage& msg) {
  Closers closers;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    AssertHeldFor(link);
    if (!link.open || !link.in_scheduler) return absl::CancelledError("the link is closed");
    if (!msg.has_result()) {
      status = absl::InvalidArgumentError(msg.has_hello()
                                              ? "a second hello on an attached link"
                                              : "a message that is neither hello nor result");
      RemoveLinkLocked(link, "GONE", &closers);
    } else {
      const v1::StepResult& r = msg.result();
      const WorkerCountersDelta d = CountersDelta(link.counters, r.counters());
      paged_bytes_ += d.h2d_bytes;  // a restarted worker counts from 0
      link.counters = r.counters();
      if (auto rec = records_.find(link.worker_id);
          rec != records_.end() && rec->second.link.get() == &link)
        metrics_.OnWorkerCounters(rec->second.metrics, d, Now());
      if (!r.error().empty()) {
        Log(LogLevel::kWarning, "coordinator", "worker %s failed step %llu: %s",
            link.worker_id.c_str(), static_cast<unsigned long long>(r.step_id()),
            r.error().c_str());
        status = absl::UnavailableError(absl::StrCat("step ", r.step_id(), " failed: ", r.error()));
        RemoveLinkLocked(link, "GONE", &closers);
      } else {
        metrics_.step_seconds.Observe(r.step_s());
        const std::vector<int32_t> tokens(r.next_tokens().begin(), r.next_tokens().end());
        DeliverLocked(scheduler_.OnStepResult(link.worker_id, r.step_id(), tokens), r.step_s(),
                      &closers);
        if (!link.in_scheduler) status = absl::InvalidArgumentError("malformed step result");
      }
    }
    PumpLocked(Now(), &closers);
  }
  RunClosers(closers);
  return status;
}

void Coordinator::DetachWorker(Link& link) {
  Closers closers;
  {
    absl::MutexLock lock(&mu_);
    RemoveLinkLocked(link, "GONE", &closers);
    PumpLocked(Now(), &closers);
  }
  RunClosers(closers);
  // Cancel the stream (a writer blocked on it returns), then never again.
  absl::MutexLock lock(&link.close_mu);
  if (link.close) link.close();
  link.close = nullptr;
}

// ---- Admin ----

v1::StatusResponse Coordinator::Status() {
  absl::MutexLock lock(&mu_);
  v1::StatusResponse r;
  r.set_model(DescribeConfig(options_.model));
  r.set_segment(options_.segment);
  r.set_store_state(options_.store_state);
  std::map<std::string, WorkerInfo> sched;
  for (WorkerInfo& w : scheduler_.Workers()) sched[w.worker_id] = std::move(w);
  for (const auto& [id, rec] : records_) {
    const Link& l = *rec.link;
    AssertHeldFor(l);
    v1::WorkerInfo* w = r.add_workers();
    w->set_worker_id(id);
    w->set_device(l.device);
    w->set_state(l.state);
    *w->mutable_plan() = l.plan;
    if (auto it = sched.find(id); it != sched.end() && l.in_scheduler)
      w->set_running_sequences(int32_t(it->second.leased.size()));
    *w->mutable_counters() = l.counters;
    w->set_restarts(rec.restarts);
  }
  const SchedulerStats st = scheduler_.Stats();
  r.set_queue_depth(st.queue_depth);
  r.set_running_sequences(st.running);
  r.set_kv_blocks_total(uint64_t(st.blocks_total));
  r.set_kv_blocks_used(uint64_t(st.blocks_used));
  r.set_kv_blocks_cached(uint64_t(st.blocks_cached));
  r.set_waiting_for_kv(st.waiting_for_kv);
  r.set_kv_preemptions(st.preemptions);
  r.set_prompt_tokens(st.prompt_tokens);
  r.set_cached_prompt_tokens(st.cached_prompt_tokens);
  r.set_kv_cache_evictions(st.cache_evictions);
  const TimeUs now = Now();
  if (options_.store_probe) r.set_store_state(store_.state);
  r.set_store_alive(store_.alive);
  r.set_store_pid(store_.pid);
  const Readiness ready = ReadinessLocked();
  r.set_ready(ready.ready);
  r.set_not_ready_reason(ready.reason);
  if (supervision_at_ != 0) {
    *r.mutable_supervised() = supervision_.processes();
    r.set_supervised_report_age_s(double(now - supervision_at_) * 1e-6);
  }
  SampleRatesLocked(now);
  const RateSample& base = rates_.front();
  const double dt = double(now - base.at) * 1e-6;
  if (dt > 0) {
    r.set_tokens_per_s(double(tokens_committed_ - base.tokens) / dt);
    r.set_bytes_paged_per_s(double(paged_bytes_ - base.paged_bytes) / dt);
  }
  return r;
}

int32_t Coordinator::CachedPromptTokens(int64_t seq_id) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<SequenceInfo> s = scheduler_.GetSequence(seq_id);
  return s.ok() ? s->cached_tokens : 0;
}

v1::ListSequencesResponse Coordinator::ListSequences() {
  absl::MutexLock lock(&mu_);
  v1::ListSequencesResponse r;
  for (const SequenceInfo& s : scheduler_.Sequences()) {
    v1::SequenceInfo* o = r.add_sequences();
    o->set_sequence_id(uint64_t(s.seq_id));
    o->set_request_id(s.request_id);
    o->set_state(s.held.empty() ? Upper(SeqStateName(s.state)) : "HELD");
    o->set_worker_id(s.worker_id);
    o->set_prompt_tokens(s.prompt_tokens);
    o->set_generated_tokens(s.generated);
  }
  return r;
}

absl::Status Coordinator::CancelSequence(int64_t seq_id) {
  Closers closers;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::vector<Event>> ev = scheduler_.Cancel(seq_id);
    if (!ev.ok()) return ev.status();
    DeliverLocked(*ev, 0.0, &closers);
    PumpLocked(Now(), &closers);
  }
  RunClosers(closers);
  return absl::OkStatus();
}

absl::Status Coordinator::DrainWorker(const std::string& worker_id) {
  Closers closers;
  {
    absl::MutexLock lock(&mu_);
    auto it = live_.find(worker_id);
    if (it == live_.end())
      return absl::NotFoundError(absl::StrCat("worker '", worker_id, "' is not attached"));
    Link& l = *it->second;
    AssertHeldFor(l);
    if (l.state == "ATTACHED") l.state = "DRAINING";
    absl::StatusOr<std::vector<Event>> ev = scheduler_.Drain(worker_id);
    if (!ev.ok()) return ev.status();
    DeliverLocked(*ev, 0.0, &closers);
    PumpLocked(Now(), &closers);
  }
  RunClosers(closers);
  return absl::OkStatus();
}

v1::ListModelsResponse Coordinator::ListModels() const {
  v1::ListModelsResponse r;
  v1::ModelInfo* m = r.add_models();
  const ModelConfig& c = options_.model;
  m->set_name(options_.model_name);
  m->set_architecture(std::string(ArchName(c.arch)));
  m->set_n_layers(c.n_layers);
  m->set_hidden_size(c.hidden);
  m->set_vocab_size(c.vocab);
  m->set_max_context(c.max_context);
  m->set_weight_format(options_.weight_format);
  if (chat_.ok()) m->set_chat_template(std::string(chat_->name()));
  return r;
}

void Coordinator::ReportSupervision(const v1::ReportSupervisionRequest& report) {
  absl::MutexLock lock(&mu_);
  for (const v1::SupervisedProcess& p : report.processes()) {
    bool changed = true;
    for (const v1::SupervisedProcess& q : supervision_.processes()) {
      if (q.name() == p.name()) changed = q.state() != p.state();
    }
    if (changed && p.state() != "RUNNING")
      Log(LogLevel::kWarning, "coordinator", "%s says: %s is %s (%d restarts; last: %s)",
          report.supervisor().c_str(), p.name().c_str(), p.state().c_str(), p.restarts(),
          p.last_exit().c_str());
  }
  supervision_ = report;
  supervision_at_ = Now();
}

void Coordinator::Shutdown() {
  Closers closers;
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      stopping_ = true;
      for (auto& [id, l] : live_) {
        AssertHeldFor(*l);
        l->open = false;
        l->cv.SignalAll();
        closers.push_back(l);
      }
      for (auto& [id, ch] : channels_) {
        AssertHeldFor(*ch);
        ch->cv.SignalAll();
        if (ch->on_update) ch->on_update();
      }
      timer_cv_.SignalAll();
      if (journal_) {
        if (absl::Status st = journal_->Sync(); !st.ok()) JournalFailedLocked(st);
      }
    }
  }
  RunClosers(closers);
  if (timer_.joinable() && timer_.get_id() != std::this_thread::get_id()) timer_.join();
}

}  // namespace paged
