// The scheduler tests' fake model and driver (tests/unit/scheduler_test.cc,
// scheduler_kv_test.cc).
//
// The "workers" here are a FakeModel: a fake KV pool (one cell per token row,
// holding its token and the hash of its context as the writer saw it) and
// next_token = f(context), where the context is read back from the pool
// through the step's block table. So a wrong position, a wrong block table, a
// wrongly shared block or a resume from the wrong length changes the output
// or fails a check, and the right output is known in advance
// (FakeModel::Reference).
//
// The Driver checks invariants on every plan and event: a sequence is in at
// most one in-flight step and stays on its worker until that worker is gone
// or it is preempted; its block table only grows; a block a step writes is
// named by no other live sequence; token events arrive with consecutive
// indices (no gap, no duplicate) and none after kFinished; a sequence
// finishes only when no in-flight step holds it.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/scheduler.h"

namespace paged::scheduler_testing {

constexpr int32_t kVocab = 1000;
constexpr int32_t kEos = 999;

inline SchedulerConfig BaseConfig() {
  SchedulerConfig c;
  c.block_tokens = 4;
  c.total_blocks = 64;
  c.max_context = 128;
  c.vocab = kVocab;
  c.eos_ids = {kEos};
  c.max_step_tokens = 16;
  c.max_seqs_per_step = 4;
  c.max_queue = 8;
  c.prefill_chunk = 8;
  return c;
}

inline Scheduler MustCreate(const SchedulerConfig& c) {
  auto s = Scheduler::Create(c);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(s).value();
}

// Prompt tokens base, base+1, ..., n of them.
inline std::vector<int32_t> Prompt(int n, int32_t base = 1) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(base + i);
  return p;
}

inline Request Req(std::vector<int32_t> prompt, int32_t max_tokens) {
  Request r;
  r.request_id = "r";
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  return r;
}

// ---- The fake model and its KV pool ----

class FakeModel {
 public:
  explicit FakeModel(const SchedulerConfig& c)
      : block_tokens_(c.block_tokens), cells_(size_t(c.total_blocks) * size_t(c.block_tokens)) {}

  static int32_t Next(const std::vector<int32_t>& context) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int32_t t : context) h = (h ^ uint64_t(uint32_t(t))) * 0x100000001b3ull;
    h ^= h >> 29;
    return int32_t(h % uint64_t(kVocab - 1));  // never kEos
  }

  // What a sequence must generate, computed without any scheduler.
  static std::vector<int32_t> Reference(std::vector<int32_t> context, int32_t max_tokens) {
    std::vector<int32_t> out;
    for (int32_t i = 0; i < max_tokens; ++i) {
      out.push_back(Next(context));
      context.push_back(out.back());
    }
    return out;
  }

  // Reads each sequence's committed rows through its block table, writes the
  // step's rows, then samples every sequence from its context. A row holds
  // its token and the hash of every token up to it, as its writer saw them;
  // a reader checks every row it reads against its own context so far, so a
  // row from a different context (a stale block, a crashed step's garbage, a
  // wrongly shared prefix) fails, while a shared prefix written by another
  // sequence with the same tokens passes.
  std::vector<int32_t> Run(const StepBatch& batch) {
    std::vector<int32_t> next;
    for (const SeqStep& s : batch.seqs) {
      std::vector<int32_t> context;
      uint64_t h = kChainStart;
      for (int32_t p = 0; p < s.start_pos; ++p) {
        const Cell& c = At(s, p);
        h = Chain(h, c.token);
        EXPECT_EQ(c.context, h) << "sequence " << s.seq_id << " position " << p
                                << " reads a row of another context (written by " << c.writer
                                << ")";
        context.push_back(c.token);
      }
      for (size_t i = 0; i < s.tokens.size(); ++i) {
        h = Chain(h, s.tokens[i]);
        At(s, s.start_pos + int32_t(i)) = Cell{s.seq_id, s.tokens[i], h};
        context.push_back(s.tokens[i]);
      }
      next.push_back(Next(context));
    }
    return next;
  }

  // A worker that dies mid-step: part of its write-back landed, as garbage.
  void Crash(const StepBatch& batch) {
    for (const SeqStep& s : batch.seqs) {
      for (size_t i = 0; i < s.tokens.size(); ++i)
        At(s, s.start_pos + int32_t(i)) = Cell{s.seq_id, (s.tokens[i] + 7) % kVocab, 0};
    }
  }

 private:
  static constexpr uint64_t kChainStart = 0x84222325cbf29ce4ull;
  static uint64_t Chain(uint64_t h, int32_t t) {
    return (h ^ uint64_t(uint32_t(t))) * 0x100000001b3ull + 0x9e3779b97f4a7c15ull;
  }
  struct Cell {
    int64_t writer = -1;
    int32_t token = -1;
    uint64_t context = 1;  // never a chain value in practice: an unwritten row fails
  };
  Cell& At(const SeqStep& s, int32_t pos) {
    const size_t b = size_t(pos / block_tokens_);
    EXPECT_LT(b, s.block_table.size()) << "position " << pos << " past the block table";
    if (b >= s.block_table.size()) return dummy_;
    return cells_.at(size_t(s.block_table[b]) * size_t(block_tokens_) +
                     size_t(pos % block_tokens_));
  }
  int32_t block_tokens_;
  std::vector<Cell> cells_;
  Cell dummy_;
};

// ---- The driver: the scheduler, the fake workers and the invariant checks ----

struct Driver {
  explicit Driver(const SchedulerConfig& c = BaseConfig())
      : cfg(c), sched(MustCreate(c)), model(c) {}

  int64_t Admit(Request r, TimeUs now = 0) {
    auto id = sched.Admit(std::move(r), now);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.ok() ? *id : -1;
  }
  void AddWorker(const std::string& w, WorkerLimits limits = {}) {
    ASSERT_TRUE(sched.AddWorker(w, limits).ok());
    limits_[w] = limits;
  }

  std::vector<StepPlan> Schedule(TimeUs now = 0) {
    ScheduleResult r = sched.Schedule(now);
    Record(r.events);
    for (const StepPlan& p : r.steps) {
      CheckPlan(p);
      in_flight[p.worker_id] = p;
    }
    return r.steps;
  }

  // The worker answers its in-flight step.
  std::vector<Event> Deliver(std::string w) {  // by value: it erases in_flight[w]
    EXPECT_TRUE(in_flight.count(w)) << w;
    const StepPlan plan = in_flight.at(w);
    in_flight.erase(w);
    const std::vector<int32_t> next = model.Run(plan.batch);
    std::vector<Event> ev = sched.OnStepResult(w, plan.step_id, next);
    Record(ev);
    return ev;
  }
  void DeliverAll() {
    std::vector<std::string> ws;
    for (const auto& [w, p] : in_flight) ws.push_back(w);
    for (const auto& w : ws) Deliver(w);
  }

  // The worker dies mid-step (garbage rows written) and its stream breaks.
  // Returns the discarded plan (its late result must be ignored).
  std::optional<StepPlan> Crash(std::string w) {
    std::optional<StepPlan> plan;
    if (in_flight.count(w)) {
      plan = in_flight.at(w);
      model.Crash(plan->batch);
      in_flight.erase(w);
    }
    for (auto it = worker_of.begin(); it != worker_of.end();) {
      it = it->second == w ? worker_of.erase(it) : std::next(it);
    }
    Record(sched.WorkerGone(w));
    return plan;
  }

  // The worker's stream breaks but its process lives on (it may still write
  // its step's rows): the step's sequences are held under `key`.
  std::vector<int64_t> Hold(std::string w, const std::string& key) {
    std::vector<int64_t> held;
    if (in_flight.count(w)) {
      for (const SeqStep& s : in_flight.at(w).batch.seqs) held.push_back(s.seq_id);
      model.Crash(in_flight.at(w).batch);  // whatever it still writes is past the committed rows
      in_flight.erase(w);
    }
    for (auto it = worker_of.begin(); it != worker_of.end();) {
      it = it->second == w ? worker_of.erase(it) : std::next(it);
    }
    Record(sched.WorkerGone(w, key));
    return held;
  }

  // The sequence's client stops (or resumes) taking its tokens. A paused
  // sequence gives up its worker: it may resume on another.
  void Pause(int64_t id, bool paused) {
    ASSERT_TRUE(sched.SetPaused(id, paused).ok());
    if (paused) worker_of.erase(id);
  }

  void Cancel(int64_t id) {
    auto ev = sched.Cancel(id);
    ASSERT_TRUE(ev.ok()) << ev.status();
    Record(*ev);
  }

  // Schedules and delivers every step until nothing is left.
  void RunToIdle(TimeUs now = 0) {
    for (int round = 0; round < 10000 && !sched.Idle(); ++round) {
      Schedule(now);
      if (in_flight.empty()) {
        ADD_FAILURE() << "stuck: work left and no step planned";
        return;
      }
      DeliverAll();
    }
  }

  void Record(const std::vector<Event>& events) {
    for (const Event& e : events) {
      switch (e.kind) {
        case EventKind::kToken:
          EXPECT_FALSE(finished.count(e.seq_id)) << "token after finish, sequence " << e.seq_id;
          EXPECT_EQ(e.index, int32_t(tokens[e.seq_id].size()))
              << "gap or duplicate, sequence " << e.seq_id;
          tokens[e.seq_id].push_back(e.token);
          break;
        case EventKind::kFinished:
          EXPECT_FALSE(finished.count(e.seq_id)) << "finished twice: " << e.seq_id;
          EXPECT_EQ(e.n_generated, int32_t(tokens[e.seq_id].size()));
          for (const auto& [w, p] : in_flight) {
            for (const SeqStep& s : p.batch.seqs)
              EXPECT_NE(s.seq_id, e.seq_id) << "finished (blocks freed) while in flight on " << w;
          }
          finished[e.seq_id] = e.reason;
          worker_of.erase(e.seq_id);
          break;
        case EventKind::kWorkerDrained:
          drained.push_back(e.worker_id);
          break;
        case EventKind::kWorkerFailed:
          failed.push_back(e.worker_id);
          break;
      }
    }
  }

  void CheckPlan(const StepPlan& p) {
    EXPECT_FALSE(in_flight.count(p.worker_id)) << "second step in flight on " << p.worker_id;
    const WorkerLimits& l = limits_[p.worker_id];
    const int32_t max_seqs =
        l.max_seqs > 0 ? std::min(l.max_seqs, cfg.max_seqs_per_step) : cfg.max_seqs_per_step;
    const int32_t max_tokens = l.max_step_tokens > 0
                                   ? std::min(l.max_step_tokens, cfg.max_step_tokens)
                                   : cfg.max_step_tokens;
    EXPECT_FALSE(p.batch.seqs.empty());
    EXPECT_LE(int32_t(p.batch.seqs.size()), max_seqs);
    EXPECT_LE(p.batch.total_tokens(), max_tokens);
    if (l.max_step_kv_blocks > 0) {  // distinct blocks: the worker copies a shared one once
      std::set<int32_t> blocks;
      for (const SeqStep& s : p.batch.seqs)
        blocks.insert(s.block_table.begin(), s.block_table.end());
      EXPECT_LE(int32_t(blocks.size()), l.max_step_kv_blocks)
          << "KV blocks of one step on " << p.worker_id;
    }
    // Blocks are shared only read-only: a block a step writes (from its
    // start position on) belongs to that sequence alone among the live ones.
    std::map<int32_t, std::set<int64_t>> readers;  // block -> live sequences naming it
    for (const auto& [id, t] : tables) {
      if (finished.count(id)) continue;
      for (int32_t b : t) readers[b].insert(id);
    }
    for (const auto& [w, q] : in_flight) {
      for (const SeqStep& s : q.batch.seqs) {
        for (int32_t b : s.block_table) readers[b].insert(s.seq_id);
      }
    }
    for (const SeqStep& s : p.batch.seqs) {
      for (int32_t b : s.block_table) readers[b].insert(s.seq_id);
    }
    for (const SeqStep& s : p.batch.seqs) {
      EXPECT_FALSE(finished.count(s.seq_id)) << "finished sequence scheduled: " << s.seq_id;
      EXPECT_FALSE(s.tokens.empty());
      EXPECT_LE(int32_t(s.tokens.size()), cfg.prefill_chunk);
      const size_t need = size_t((s.start_pos + int32_t(s.tokens.size()) + cfg.block_tokens - 1) /
                                 cfg.block_tokens);
      EXPECT_EQ(s.block_table.size(), need) << "block table covers exactly the step's positions";
      for (size_t i = size_t(s.start_pos / cfg.block_tokens); i < s.block_table.size(); ++i) {
        const std::set<int64_t>& r = readers[s.block_table[i]];
        EXPECT_TRUE(r.size() == 1 && *r.begin() == s.seq_id)
            << "sequence " << s.seq_id << " writes block " << s.block_table[i]
            << " which other live sequences name (" << r.size() << ")";
      }
      // The table only grows: the same blocks for the same positions.
      std::vector<int32_t>& seen = tables[s.seq_id];
      const size_t common = std::min(seen.size(), s.block_table.size());
      EXPECT_TRUE(std::equal(seen.begin(), seen.begin() + ptrdiff_t(common), s.block_table.begin()))
          << "sequence " << s.seq_id << " changed blocks";
      if (s.block_table.size() > seen.size()) seen = s.block_table;
      // Affinity: a sequence stays on its worker until that worker is gone,
      // or it was preempted to wait for KV blocks.
      ran_on[s.seq_id].insert(p.worker_id);
      const auto info = sched.GetSequence(s.seq_id);
      const int32_t preemptions = info.ok() ? info->preemptions : 0;
      auto [wit, fresh] = worker_of.emplace(s.seq_id, p.worker_id);
      EXPECT_TRUE(wit->second == p.worker_id || preemptions > preempted_seen[s.seq_id])
          << "sequence " << s.seq_id << " moved while its worker lives";
      wit->second = p.worker_id;
      preempted_seen[s.seq_id] = preemptions;
    }
  }

  SchedulerConfig cfg;
  Scheduler sched;
  FakeModel model;
  std::map<std::string, StepPlan> in_flight;       // worker -> its step
  std::map<int64_t, std::vector<int32_t>> tokens;  // emitted, per sequence
  std::map<int64_t, FinishReason> finished;
  std::map<int64_t, std::string> worker_of;
  std::map<int64_t, std::vector<int32_t>> tables;
  std::map<int64_t, std::set<std::string>> ran_on;
  std::map<int64_t, int32_t> preempted_seen;  // preemptions when last planned
  std::vector<std::string> drained, failed;
  std::map<std::string, WorkerLimits> limits_;
};

struct Row {
  int64_t seq;
  int32_t n_tokens;
  int32_t start_pos;
};

inline void ExpectRows(const StepBatch& b, const std::vector<Row>& want, const std::string& where) {
  ASSERT_EQ(b.seqs.size(), want.size()) << where;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(b.seqs[i].seq_id, want[i].seq) << where << " entry " << i;
    EXPECT_EQ(int32_t(b.seqs[i].tokens.size()), want[i].n_tokens) << where << " entry " << i;
    EXPECT_EQ(b.seqs[i].start_pos, want[i].start_pos) << where << " entry " << i;
  }
}

}  // namespace paged::scheduler_testing
