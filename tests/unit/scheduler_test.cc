// The coordinator's scheduler, a step at a time, no threads, no GPU, driven
// by the fake model and invariant-checking driver of scheduler_driver.h.
#include "daemon/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <tuple>

#include "tests/unit/scheduler_driver.h"

namespace paged {
namespace {

using namespace scheduler_testing;  // NOLINT: the test's own harness
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// ---- The block allocator ----

TEST(BlockAllocatorTest, AllOrNothingAndLifoReuse) {
  BlockAllocator a(5);
  std::vector<int32_t> x, y;
  ASSERT_TRUE(a.Allocate(3, &x));
  EXPECT_THAT(x, ElementsAre(0, 1, 2));
  EXPECT_FALSE(a.Allocate(3, &y)) << "only 2 free";
  EXPECT_TRUE(y.empty());
  ASSERT_TRUE(a.Allocate(2, &y));
  EXPECT_THAT(y, ElementsAre(3, 4));
  EXPECT_EQ(a.free_count(), 0);
  a.Free(&x);
  EXPECT_TRUE(x.empty());
  EXPECT_EQ(a.used_count(), 2);
  EXPECT_FALSE(a.in_use(1));
  EXPECT_TRUE(a.in_use(4));
  ASSERT_TRUE(a.Allocate(2, &x));
  EXPECT_THAT(x, ElementsAre(0, 1)) << "freed blocks come back in their order";
}

// ---- Configuration and admission ----

TEST(SchedulerConfigTest, RejectsUnusableConfigs) {
  struct Case {
    const char* name;
    void (*mutate)(SchedulerConfig&);
    const char* message;
  };
  const Case cases[] = {
      {"block_tokens", [](SchedulerConfig& c) { c.block_tokens = 0; }, "block_tokens"},
      {"total_blocks", [](SchedulerConfig& c) { c.total_blocks = 0; }, "total_blocks"},
      {"max_context", [](SchedulerConfig& c) { c.max_context = 0; }, "max_context"},
      {"vocab", [](SchedulerConfig& c) { c.vocab = 0; }, "vocab"},
      {"eos", [](SchedulerConfig& c) { c.eos_ids = {kVocab}; }, "eos id"},
      {"seqs", [](SchedulerConfig& c) { c.max_seqs_per_step = 0; }, "max_seqs_per_step"},
      {"tokens<seqs", [](SchedulerConfig& c) { c.max_step_tokens = c.max_seqs_per_step - 1; },
       "max_step_tokens"},
      {"queue", [](SchedulerConfig& c) { c.max_queue = 0; }, "max_queue"},
      {"chunk", [](SchedulerConfig& c) { c.prefill_chunk = 0; }, "prefill_chunk"},
      {"history", [](SchedulerConfig& c) { c.finished_history = -1; }, "finished_history"},
  };
  for (const Case& k : cases) {
    SchedulerConfig c = BaseConfig();
    k.mutate(c);
    auto s = Scheduler::Create(c);
    ASSERT_FALSE(s.ok()) << k.name;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << k.name;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(k.message)) << k.name;
  }
  EXPECT_TRUE(Scheduler::Create(BaseConfig()).ok());
}

TEST(SchedulerConfigTest, FromModel) {
  ModelConfig m;
  m.vocab = 32000;
  m.max_context = 2048;
  m.n_eos = 2;
  m.eos_ids[0] = 2;
  m.eos_ids[1] = 32001 - 1;
  const SchedulerConfig c = SchedulerConfigForModel(m);
  EXPECT_EQ(c.vocab, 32000);
  EXPECT_EQ(c.max_context, 2048);
  EXPECT_THAT(c.eos_ids, ElementsAre(2, 32000));
}

TEST(SchedulerAdmitTest, EachBadFieldIsAClearError) {
  struct Case {
    const char* name;
    void (*mutate)(Request&);
    absl::StatusCode code;
    const char* message;
  };
  constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  using C = absl::StatusCode;
  const Case cases[] = {
      {"empty prompt", [](Request& r) { r.prompt.clear(); }, C::kInvalidArgument,
       "prompt is empty"},
      {"negative token", [](Request& r) { r.prompt[1] = -1; }, C::kInvalidArgument,
       "prompt token 1 (id -1)"},
      {"token = vocab", [](Request& r) { r.prompt[0] = kVocab; }, C::kInvalidArgument,
       "outside the vocabulary"},
      {"max_tokens 0", [](Request& r) { r.max_tokens = 0; }, C::kInvalidArgument,
       "max_tokens 0 must be >= 1"},
      {"max_tokens < 0", [](Request& r) { r.max_tokens = -5; }, C::kInvalidArgument,
       "max_tokens -5"},
      {"max_tokens huge", [](Request& r) { r.max_tokens = std::numeric_limits<int32_t>::max(); },
       C::kInvalidArgument, "exceeds the model's context"},
      {"stop id",
       [](Request& r) {
         r.stop_ids = {5, kVocab + 3};
       },
       C::kInvalidArgument, "stop id 1003"},
      {"temperature < 0", [](Request& r) { r.sampling.temperature = -0.5f; }, C::kInvalidArgument,
       "temperature"},
      {"temperature nan", [](Request& r) { r.sampling.temperature = kNan; }, C::kInvalidArgument,
       "temperature"},
      {"temperature inf", [](Request& r) { r.sampling.temperature = kInf; }, C::kInvalidArgument,
       "temperature"},
      {"top_p 0", [](Request& r) { r.sampling.top_p = 0.f; }, C::kInvalidArgument, "top_p"},
      {"top_p > 1", [](Request& r) { r.sampling.top_p = 1.5f; }, C::kInvalidArgument, "top_p"},
      {"top_p nan", [](Request& r) { r.sampling.top_p = kNan; }, C::kInvalidArgument, "top_p"},
      {"top_k < 0", [](Request& r) { r.sampling.top_k = -1; }, C::kInvalidArgument, "top_k"},
      {"deadline < 0", [](Request& r) { r.deadline = -1; }, C::kInvalidArgument, "deadline"},
      {"over context",
       [](Request& r) {
         r.prompt = Prompt(100);
         r.max_tokens = 29;
       },
       C::kInvalidArgument, "can never fit"},
      {"over the pool",
       [](Request& r) {
         r.prompt = Prompt(60);
         r.max_tokens = 20;
       },
       C::kInvalidArgument, "the pool holds 16; it can never fit"},
      {"deadline past", [](Request& r) { r.deadline = 1000; }, C::kDeadlineExceeded,
       "already past"},
  };
  SchedulerConfig cfg = BaseConfig();
  cfg.total_blocks = 16;  // 64 positions
  Scheduler s = MustCreate(cfg);
  const TimeUs now = 1000;
  int64_t rejected = 0;
  for (const Case& k : cases) {
    Request r = Req(Prompt(4), 4);
    k.mutate(r);
    auto id = s.Admit(r, now);
    ++rejected;
    ASSERT_FALSE(id.ok()) << k.name;
    EXPECT_EQ(id.status().code(), k.code) << k.name << ": " << id.status();
    EXPECT_THAT(std::string(id.status().message()), HasSubstr(k.message)) << k.name;
  }
  // The limits themselves are fine: exactly the context, exactly the pool.
  EXPECT_TRUE(s.Admit(Req(Prompt(60), 4), now).ok());  // 64 positions = 16 blocks
  EXPECT_TRUE(s.Admit(Req(Prompt(1), 63), now).ok());
  Request sampled = Req(Prompt(2), 2);
  sampled.sampling = {0.7f, 40, 1.0f, 1234};
  sampled.deadline = now + 1;
  EXPECT_TRUE(s.Admit(sampled, now).ok());
  EXPECT_EQ(s.Stats().rejected, rejected);
  EXPECT_EQ(s.Stats().admitted, 3);
  EXPECT_EQ(s.Stats().queue_depth, 3);
  EXPECT_EQ(s.Stats().blocks_used, 0) << "blocks are reserved at start, not at Admit";
}

TEST(SchedulerAdmitTest, FullQueueIsResourceExhaustedUntilItMoves) {
  SchedulerConfig cfg = BaseConfig();
  cfg.max_queue = 2;
  Driver d(cfg);
  d.Admit(Req(Prompt(3), 2));
  d.Admit(Req(Prompt(3), 2));
  auto third = d.sched.Admit(Req(Prompt(3), 2), 0);
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.status().message()), HasSubstr("queue is full"));
  d.AddWorker("w0");
  d.Schedule();  // both leave the queue
  EXPECT_EQ(d.sched.Stats().queue_depth, 0);
  EXPECT_TRUE(d.sched.Admit(Req(Prompt(3), 2), 0).ok());
}

// ---- One sequence: chunked prefill, then decode to length ----

TEST(SchedulerStepTest, ChunkedPrefillThenDecodeToLength) {
  SchedulerConfig cfg = BaseConfig();
  cfg.prefill_chunk = 4;
  Driver d(cfg);
  d.AddWorker("w0");
  const std::vector<int32_t> prompt = Prompt(10, 11);
  const std::vector<int32_t> gen = FakeModel::Reference(prompt, 5);
  const int64_t id = d.Admit(Req(prompt, 5));
  auto slice = [&](int a, int b) {
    return std::vector<int32_t>(prompt.begin() + a, prompt.begin() + b);
  };

  struct StepRow {
    std::vector<int32_t> tokens;
    int32_t start_pos;
    std::vector<int32_t> table;
    int emits;     // index of the token emitted, -1: none
    int32_t used;  // blocks the pool has given out while the step is in flight
  };
  // 10 + 5 positions -> 4 blocks of 4, taken as the sequence grows.
  const std::vector<StepRow> rows = {
      {slice(0, 4), 0, {0}, -1, 1},
      {slice(4, 8), 4, {0, 1}, -1, 2},
      {slice(8, 10), 8, {0, 1, 2}, 0, 3},  // the prompt's last chunk samples gen[0]
      {{gen[0]}, 10, {0, 1, 2}, 1, 3},
      {{gen[1]}, 11, {0, 1, 2}, 2, 3},
      {{gen[2]}, 12, {0, 1, 2, 3}, 3, 4},
      {{gen[3]}, 13, {0, 1, 2, 3}, 4, 4},  // gen[4] is the 5th: length
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "step " << i);
    const std::vector<StepPlan> plans = d.Schedule();
    ASSERT_EQ(plans.size(), 1u);
    EXPECT_EQ(plans[0].worker_id, "w0");
    ASSERT_EQ(plans[0].batch.seqs.size(), 1u);
    const SeqStep& s = plans[0].batch.seqs[0];
    EXPECT_EQ(s.seq_id, id);
    EXPECT_EQ(s.tokens, rows[i].tokens);
    EXPECT_EQ(s.start_pos, rows[i].start_pos);
    EXPECT_EQ(s.block_table, rows[i].table);
    EXPECT_EQ(d.sched.Stats().blocks_used, rows[i].used);
    EXPECT_TRUE(d.sched.Schedule(0).steps.empty()) << "one step in flight per worker";
    const std::vector<Event> ev = d.Deliver("w0");
    if (rows[i].emits < 0) {
      EXPECT_TRUE(ev.empty());
    } else {
      ASSERT_GE(ev.size(), 1u);
      EXPECT_EQ(ev[0].kind, EventKind::kToken);
      EXPECT_EQ(ev[0].index, rows[i].emits);
      EXPECT_EQ(ev[0].token, gen[size_t(rows[i].emits)]);
    }
  }
  EXPECT_EQ(d.tokens[id], gen);
  EXPECT_EQ(d.finished[id], FinishReason::kLength);
  EXPECT_TRUE(d.sched.Idle());
  EXPECT_TRUE(d.Schedule().empty());
  const SchedulerStats st = d.sched.Stats();
  EXPECT_EQ(st.blocks_used, 0);
  EXPECT_EQ(st.blocks_free, cfg.total_blocks);
  EXPECT_EQ(st.tokens_committed, 5);
  EXPECT_EQ(st.steps_completed, 7);
  auto info = d.sched.GetSequence(id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, SeqState::kFinished);
  EXPECT_EQ(info->finish_reason, FinishReason::kLength);
  EXPECT_EQ(info->generated, 5);
  EXPECT_EQ(info->committed_len, 14);
}

TEST(SchedulerStepTest, StaleAndMalformedResults) {
  Driver d;
  d.AddWorker("w0");
  d.AddWorker("w1");
  const int64_t a = d.Admit(Req(Prompt(3), 3));
  d.Admit(Req(Prompt(3), 3));
  auto plans = d.Schedule();
  ASSERT_EQ(plans.size(), 2u);
  const StepPlan p0 = d.in_flight.at("w0");
  // Wrong step id, wrong worker, unknown worker: ignored.
  EXPECT_TRUE(d.sched.OnStepResult("w0", p0.step_id + 100, {1}).empty());
  EXPECT_TRUE(d.sched.OnStepResult("w1", p0.step_id, {1}).empty());
  EXPECT_TRUE(d.sched.OnStepResult("nobody", p0.step_id, {1}).empty());
  EXPECT_EQ(d.sched.Stats().steps_in_flight, 2);
  // The real answer counts once; a duplicate of it is stale.
  d.Deliver("w0");
  EXPECT_EQ(d.tokens[a].size(), 1u);
  EXPECT_TRUE(d.sched.OnStepResult("w0", p0.step_id, {1}).empty());
  EXPECT_EQ(d.tokens[a].size(), 1u);

  // Malformed: the wrong count of tokens. The worker is dropped, its sequence
  // re-queued with its committed state.
  const StepPlan p1 = d.in_flight.at("w1");
  d.in_flight.erase("w1");
  std::vector<Event> ev = d.sched.OnStepResult("w1", p1.step_id, {1, 2});
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev[0].kind, EventKind::kWorkerFailed);
  EXPECT_EQ(ev[0].worker_id, "w1");
  EXPECT_THAT(ev[0].detail, HasSubstr("2 tokens for 1 sequences"));
  d.Record(ev);
  d.worker_of.clear();
  EXPECT_EQ(d.sched.Workers().size(), 1u);
  EXPECT_EQ(d.sched.Stats().queue_depth, 1);
  // A token outside the vocabulary is a fault too.
  d.Schedule();
  const StepPlan p2 = d.in_flight.at("w0");
  d.in_flight.erase("w0");
  ev = d.sched.OnStepResult("w0", p2.step_id, std::vector<int32_t>(p2.batch.seqs.size(), kVocab));
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev[0].kind, EventKind::kWorkerFailed);
  EXPECT_THAT(ev[0].detail, HasSubstr("outside the vocabulary"));
  d.Record(ev);
  d.worker_of.clear();
  EXPECT_TRUE(d.sched.Workers().empty());
  EXPECT_EQ(d.sched.Stats().queue_depth, 2);
  // A healthy worker finishes both, exactly as the reference says.
  d.AddWorker("w2");
  d.RunToIdle();
  for (const auto& [id, toks] : d.tokens) EXPECT_EQ(toks, FakeModel::Reference(Prompt(3), 3)) << id;
}

// ---- Continuous batching ----

TEST(SchedulerBatchTest, NewRequestsJoinWhileOthersDecode) {
  SchedulerConfig cfg = BaseConfig();
  cfg.max_step_tokens = 8;
  cfg.max_seqs_per_step = 3;
  cfg.prefill_chunk = 8;
  Driver d(cfg);
  d.AddWorker("w0");
  struct Spec {
    int prompt;
    int32_t max_tokens;
  };
  const Spec A{6, 4}, B{5, 3}, C{9, 2}, D{2, 2};
  const std::map<char, Spec> specs = {{'A', A}, {'B', B}, {'C', C}, {'D', D}};
  std::map<char, int64_t> id;
  auto admit = [&](char n) {
    id[n] = d.Admit(Req(Prompt(specs.at(n).prompt, 10 * (n - 'A') + 1), specs.at(n).max_tokens));
  };

  struct StepCase {
    std::string admit_before;                              // requests admitted before this step
    std::vector<std::tuple<char, int32_t, int32_t>> rows;  // seq, tokens, start_pos
  };
  // Budget 8 tokens, 3 sequences: decodes first, then prefill chunks.
  const std::vector<StepCase> steps = {
      {"A", {{'A', 6, 0}}},
      {"B", {{'A', 1, 6}, {'B', 5, 0}}},                // B joins while A decodes
      {"CD", {{'A', 1, 7}, {'B', 1, 5}, {'C', 6, 0}}},  // C's chunk cut by the budget; D: batch cap
      {"", {{'A', 1, 8}, {'B', 1, 6}, {'C', 3, 6}}},    // A and B finish (length)
      {"", {{'C', 1, 9}, {'D', 2, 0}}},                 // D takes the freed seat and blocks
      {"", {{'D', 1, 2}}},
  };
  for (size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "step " << i);
    for (char n : steps[i].admit_before) admit(n);
    const auto plans = d.Schedule();
    ASSERT_EQ(plans.size(), 1u);
    std::vector<Row> want;
    for (const auto& [n, k, pos] : steps[i].rows) want.push_back({id.at(n), k, pos});
    ExpectRows(plans[0].batch, want, "step");
    d.Deliver("w0");
  }
  EXPECT_TRUE(d.sched.Idle());
  for (const auto& [n, s] : specs) {
    EXPECT_EQ(d.tokens[id[n]],
              FakeModel::Reference(Prompt(s.prompt, 10 * (n - 'A') + 1), s.max_tokens))
        << n;
    EXPECT_EQ(d.finished[id[n]], FinishReason::kLength) << n;
  }
  // Blocks are taken as each sequence reaches them: A's prompt [0, 1), B's
  // [2, 3), C's prompt [4, 5), then A's 9th position 6 and C's 7. A and B
  // finish: their full committed blocks (A's 0 and 1, B's 2) stay cached, the
  // partly filled ones go back to the free list, and D takes the last freed.
  EXPECT_THAT(d.tables[id['A']], ElementsAre(0, 1, 6));
  EXPECT_THAT(d.tables[id['B']], ElementsAre(2, 3));
  EXPECT_THAT(d.tables[id['C']], ElementsAre(4, 5, 7));
  EXPECT_THAT(d.tables[id['D']], ElementsAre(3));
}

TEST(SchedulerBatchTest, SmallPoolIsSharedOnDemandAndNeverDeadlocks) {
  SchedulerConfig cfg = BaseConfig();
  cfg.total_blocks = 6;  // 24 positions
  Driver d(cfg);
  d.AddWorker("w0");
  d.AddWorker("w1");
  // Until 8 replies have finished, a request starts only when every live
  // one fits at its whole length. Eight 2-token replies teach the scheduler
  // that replies are short.
  for (int i = 0; i < 8; ++i) d.Admit(Req(Prompt(2, 100 + 10 * i), 2));
  d.RunToIdle();
  const int64_t a = d.Admit(Req(Prompt(8), 8));  // up to 4 blocks, 3 expected
  const int64_t b = d.Admit(Req(Prompt(4), 8));  // up to 3, 2 expected
  const int64_t c = d.Admit(Req(Prompt(2), 2));  // 1
  // Reserving whole lengths would hold 4 + 3 + 1 > 6 blocks: A and C only.
  // On demand all three start; when A and B outgrow what was expected, the
  // one that cannot safely grow waits in the queue keeping its blocks, and
  // there is always an order in which all can finish.
  auto plans = d.Schedule();
  ASSERT_EQ(plans.size(), 2u);
  EXPECT_EQ(d.sched.Stats().queue_depth, 0);
  d.RunToIdle();
  EXPECT_EQ(d.tokens[a], FakeModel::Reference(Prompt(8), 8));
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(Prompt(4), 8));
  EXPECT_EQ(d.tokens[c], FakeModel::Reference(Prompt(2), 2));
  const SchedulerStats st = d.sched.Stats();
  EXPECT_GT(st.preemptions, 0) << "A or B waited in the queue for a block, keeping its own";
  EXPECT_EQ(st.blocks_free, cfg.total_blocks);
}

// ---- Routing ----

TEST(SchedulerRoutingTest, LeastLoadedWorkerAndAffinity) {
  Driver d;
  d.AddWorker("w0");
  d.AddWorker("w1");
  const int64_t a = d.Admit(Req(Prompt(3), 4));
  const int64_t b = d.Admit(Req(Prompt(3, 5), 4));
  const int64_t c = d.Admit(Req(Prompt(3, 9), 4));
  auto plans = d.Schedule();
  ASSERT_EQ(plans.size(), 2u);
  EXPECT_EQ(plans[0].worker_id, "w0");
  ExpectRows(plans[0].batch, {{a, 3, 0}, {c, 3, 0}}, "w0");  // ties go to the lower id
  EXPECT_EQ(plans[1].worker_id, "w1");
  ExpectRows(plans[1].batch, {{b, 3, 0}}, "w1");
  // Only w1 answers: only w1 gets a next step.
  d.Deliver("w1");
  plans = d.Schedule();
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].worker_id, "w1");
  // D goes to the less loaded w1 although both are busy, and joins its next step.
  const int64_t dd = d.Admit(Req(Prompt(2), 2));
  EXPECT_TRUE(d.Schedule().empty());
  const std::vector<WorkerInfo> ws = d.sched.Workers();
  ASSERT_EQ(ws.size(), 2u);
  EXPECT_THAT(ws[0].leased, ElementsAre(a, c));
  EXPECT_THAT(ws[1].leased, ElementsAre(b, dd));
  EXPECT_NE(ws[0].step_in_flight, 0u);
  d.Deliver("w1");
  plans = d.Schedule();
  ASSERT_EQ(plans.size(), 1u);
  ExpectRows(plans[0].batch, {{b, 1, 4}, {dd, 2, 0}}, "w1 continues B, D joins");
  d.RunToIdle();  // the Driver checks affinity on every plan
  EXPECT_EQ(d.finished.size(), 4u);
}

TEST(SchedulerRoutingTest, WorkerLimitsAndErrors) {
  Driver d;
  EXPECT_EQ(d.sched.AddWorker("", {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d.sched.AddWorker("w", {-1, 0}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d.sched.AddWorker("w", {4, 2}).code(), absl::StatusCode::kInvalidArgument);
  d.AddWorker("small", {1, 4});
  EXPECT_EQ(d.sched.AddWorker("small", {}).code(), absl::StatusCode::kAlreadyExists);
  const auto ws = d.sched.Workers();
  ASSERT_EQ(ws.size(), 1u);
  EXPECT_EQ(ws[0].max_seqs, 1);
  EXPECT_EQ(ws[0].max_step_tokens, 4);
  for (int i = 0; i < 3; ++i) d.Admit(Req(Prompt(6, 1 + i), 2));
  d.RunToIdle();  // CheckPlan enforces <= 1 sequence and <= 4 tokens per step
  for (int i = 0; i < 3; ++i) EXPECT_EQ(d.tokens[i + 1], FakeModel::Reference(Prompt(6, 1 + i), 2));
}

TEST(SchedulerRoutingTest, StepKvBlockLimitHoldsEveryStep) {
  Driver d;
  d.AddWorker("w0", {0, 0, 5});                     // a step may reference 5 KV blocks
  const int64_t a = d.Admit(Req(Prompt(8), 4));     // 2 blocks for its prompt, 3 at most
  const int64_t b = d.Admit(Req(Prompt(8, 3), 4));  // the same
  auto plans = d.Schedule();
  ASSERT_EQ(plans.size(), 1u);
  ExpectRows(plans[0].batch, {{a, 8, 0}, {b, 8, 0}}, "both prompts: 4 blocks");
  EXPECT_EQ(d.sched.Workers()[0].leased_blocks, 4);
  d.DeliverAll();
  // Their first decodes reach a third block each: 6 > 5. B waits in the
  // queue, keeping its blocks.
  plans = d.Schedule();
  ASSERT_EQ(plans.size(), 1u);
  ExpectRows(plans[0].batch, {{a, 1, 8}}, "A alone");
  EXPECT_EQ(d.sched.GetSequence(b)->state, SeqState::kQueued);
  EXPECT_EQ(d.sched.GetSequence(b)->blocks, 2);
  EXPECT_EQ(d.sched.Stats().waiting_for_kv, 1);
  // A worker joins: B goes there at once and goes on from its committed rows.
  d.AddWorker("w1");
  plans = d.Schedule();
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].worker_id, "w1");
  ExpectRows(plans[0].batch, {{b, 1, 8}}, "B on w1");
  // A request no live worker can hold (w1 drains; 6 blocks > 5) is passed
  // over; a small one behind it still runs.
  ASSERT_TRUE(d.sched.Drain("w1").ok());
  const int64_t big = d.Admit(Req(Prompt(20), 4));   // 6 blocks
  const int64_t small = d.Admit(Req(Prompt(2), 2));  // 1 block
  while (!d.finished.count(a)) {
    d.DeliverAll();
    d.Schedule();
  }
  d.DeliverAll();
  d.Schedule();
  EXPECT_EQ(d.ran_on[small].count("w0"), 1u);
  EXPECT_EQ(d.sched.GetSequence(big)->state, SeqState::kQueued);
  // A big worker joins and takes it.
  d.AddWorker("w2", {0, 0, 8});
  d.RunToIdle();
  EXPECT_THAT(d.ran_on[big], ElementsAre("w2"));
  EXPECT_EQ(d.tokens[big], FakeModel::Reference(Prompt(20), 4));
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(Prompt(8, 3), 4));
}

// ---- Worker failure: resume exactly from the committed state ----

struct CrashScenario {
  std::vector<std::pair<int, int32_t>> requests = {{10, 6}, {3, 5}, {7, 4}, {5, 3}, {2, 3}};
  SchedulerConfig Config() const {
    SchedulerConfig c = BaseConfig();
    c.max_step_tokens = 8;
    c.max_seqs_per_step = 2;
    c.prefill_chunk = 4;
    return c;
  }
  std::vector<int32_t> PromptOf(size_t i) const {
    return Prompt(requests[i].first, 100 * int32_t(i) + 1);
  }

  // Runs every request on w0 and w1. At round `crash_round` (0: never) w0
  // dies mid-step; its late result arrives after WorkerGone and must be
  // ignored; w0 rejoins two rounds later.
  std::map<int64_t, std::vector<int32_t>> Run(int crash_round) const {
    Driver d(Config());
    d.AddWorker("w0");
    d.AddWorker("w1");
    for (size_t i = 0; i < requests.size(); ++i) d.Admit(Req(PromptOf(i), requests[i].second));
    std::optional<StepPlan> crashed;
    for (int round = 1; round < 200 && !d.sched.Idle(); ++round) {
      d.Schedule();
      if (round == crash_round) {
        const int32_t used = d.sched.Stats().blocks_used;
        crashed = d.Crash("w0");
        EXPECT_EQ(d.sched.Stats().blocks_used, used) << "re-queued sequences keep their blocks";
        EXPECT_EQ(d.sched.Stats().steps_discarded, crashed ? 1 : 0);
      }
      if (crashed && round == crash_round + 1) {
        // The dead worker's answer arrives late: nothing changes.
        const auto before = d.sched.Stats();
        const std::vector<int32_t> late(crashed->batch.seqs.size(), 1);
        EXPECT_TRUE(d.sched.OnStepResult("w0", crashed->step_id, late).empty());
        EXPECT_EQ(d.sched.Stats().tokens_committed, before.tokens_committed);
      }
      if (crash_round && round == crash_round + 2) d.AddWorker("w0");
      d.DeliverAll();
    }
    EXPECT_TRUE(d.sched.Idle());
    for (const auto& [id, r] : d.finished) EXPECT_EQ(r, FinishReason::kLength) << id;
    EXPECT_EQ(d.sched.Stats().blocks_used, 0);
    return d.tokens;
  }
};

TEST(SchedulerFaultTest, CrashAtAnyRoundGivesTheSameTokens) {
  const CrashScenario sc;
  const auto clean = sc.Run(0);
  ASSERT_EQ(clean.size(), sc.requests.size());
  for (size_t i = 0; i < sc.requests.size(); ++i)
    EXPECT_EQ(clean.at(int64_t(i) + 1), FakeModel::Reference(sc.PromptOf(i), sc.requests[i].second))
        << i;
  for (int crash_round = 1; crash_round <= 10; ++crash_round) {
    SCOPED_TRACE(testing::Message() << "w0 dies in round " << crash_round);
    EXPECT_EQ(sc.Run(crash_round), clean);
  }
}

TEST(SchedulerFaultTest, WorkerGoneRequeuesAtTheFrontFromTheCommittedLength) {
  const CrashScenario sc;
  Driver d(sc.Config());
  d.AddWorker("w0");
  d.AddWorker("w1");
  std::vector<int64_t> id;
  for (size_t i = 0; i < sc.requests.size(); ++i)
    id.push_back(d.Admit(Req(sc.PromptOf(i), sc.requests[i].second)));
  const int64_t A = id[0], B = id[1], C = id[2], D = id[3], E = id[4];
  // Round 1: w0 prefills A[0,4) and C[0,4); w1 B (whole) and D[0,4) (budget 8: 3 + 4... chunk 4).
  auto plans = d.Schedule();
  ASSERT_EQ(plans.size(), 2u);
  ExpectRows(plans[0].batch, {{A, 4, 0}, {C, 4, 0}}, "w0 round 1");
  ExpectRows(plans[1].batch, {{B, 3, 0}, {D, 4, 0}}, "w1 round 1");
  d.DeliverAll();
  // Round 2: w0 dies with A[4,8) and C[4,7) in flight.
  plans = d.Schedule();
  ExpectRows(d.in_flight.at("w0").batch, {{A, 4, 4}, {C, 3, 4}}, "w0 round 2");
  d.Crash("w0");
  EXPECT_TRUE(d.tokens[C].empty()) << "C's prefill completed only in the discarded step";
  // A and C are queued ahead of E, with their blocks, from committed length 4.
  auto ia = d.sched.GetSequence(A);
  ASSERT_TRUE(ia.ok());
  EXPECT_EQ(ia->state, SeqState::kQueued);
  EXPECT_EQ(ia->committed_len, 4);
  EXPECT_EQ(ia->blocks, 2) << "the blocks of the positions its discarded step reached";
  EXPECT_EQ(ia->requeues, 1);
  EXPECT_EQ(d.sched.Stats().queue_depth, 3);
  d.DeliverAll();  // w1 round 2
  // w0 restarts and rejoins: it takes A and C (the front), not E.
  d.AddWorker("w0");
  plans = d.Schedule();
  ASSERT_EQ(plans.size(), 2u);
  EXPECT_EQ(plans[0].worker_id, "w0");
  ExpectRows(plans[0].batch, {{A, 4, 4}, {C, 3, 4}}, "w0 resumes");
  EXPECT_EQ(plans[0].batch.seqs[0].block_table, d.tables[A]);
  auto ie = d.sched.GetSequence(E);
  ASSERT_TRUE(ie.ok());
  EXPECT_EQ(ie->state, SeqState::kQueued);
  d.RunToIdle();
  for (size_t i = 0; i < id.size(); ++i)
    EXPECT_EQ(d.tokens[id[i]], FakeModel::Reference(sc.PromptOf(i), sc.requests[i].second)) << i;
  EXPECT_EQ(d.sched.Stats().requeued, 2);
}

TEST(SchedulerFaultTest, ALiveProcessesStepIsHeldUntilReleased) {
  Driver d;
  d.AddWorker("w0");
  d.AddWorker("w1");
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(d.Admit(Req(Prompt(3, 8 + i), 6)));
  d.Schedule();
  d.DeliverAll();
  d.Schedule();  // both workers have a step in flight
  const std::vector<int64_t> held = d.Hold("w0", "w0#42");
  ASSERT_FALSE(held.empty());
  const SchedulerStats st = d.sched.Stats();
  EXPECT_EQ(st.held, int32_t(held.size()));
  EXPECT_EQ(st.queue_depth, 0);
  for (int64_t id : held) {
    auto info = d.sched.GetSequence(id);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->held, "w0#42");
    EXPECT_GT(info->blocks, 0) << "its blocks stay reserved";
  }
  // Nothing plans them while held, even with a worker free, and a cancel or
  // a deadline waits for the release.
  d.Cancel(held[0]);
  for (int round = 0; round < 20 && !d.in_flight.empty(); ++round) {
    d.DeliverAll();
    for (const StepPlan& p : d.Schedule(1'000'000'000))
      for (const SeqStep& s : p.batch.seqs)
        EXPECT_EQ(std::count(held.begin(), held.end(), s.seq_id), 0)
            << "held sequence " << s.seq_id << " planned";
  }
  EXPECT_FALSE(d.finished.count(held[0]));
  EXPECT_EQ(d.sched.ReleaseHeld("another key"), 0);
  // The process ended: back to the front, the cancelled one finishes, the
  // others resume from their committed rows and give the reference tokens.
  EXPECT_EQ(d.sched.ReleaseHeld("w0#42"), int32_t(held.size()));
  EXPECT_EQ(d.sched.ReleaseHeld("w0#42"), 0);
  EXPECT_EQ(d.sched.Stats().held, 0);
  d.RunToIdle();
  EXPECT_EQ(d.finished.at(held[0]), FinishReason::kCancelled);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == held[0]) continue;
    EXPECT_EQ(d.tokens[ids[i]], FakeModel::Reference(Prompt(3, 8 + int(i)), 6)) << i;
  }
  EXPECT_EQ(d.sched.Stats().blocks_used, 0);
}

TEST(SchedulerFaultTest, SamplingParamsTravelWithTheSequenceAcrossAResume) {
  Driver d;
  d.AddWorker("w0");
  d.AddWorker("w1");
  Request r = Req(Prompt(5), 4);
  r.sampling = {0.8f, 50, 0.9f, 0xfeedull};
  const int64_t a = d.Admit(r);
  auto check = [&](const std::vector<StepPlan>& plans) {
    for (const StepPlan& p : plans) {
      for (const SeqStep& s : p.batch.seqs) {
        EXPECT_EQ(s.sampling.temperature, 0.8f);
        EXPECT_EQ(s.sampling.top_k, 50);
        EXPECT_EQ(s.sampling.top_p, 0.9f);
        EXPECT_EQ(s.sampling.seed, 0xfeedull);
      }
    }
  };
  check(d.Schedule());
  d.DeliverAll();
  check(d.Schedule());
  ASSERT_TRUE(d.in_flight.count("w0"));
  d.Crash("w0");
  auto plans = d.Schedule();
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].worker_id, "w1");
  ExpectRows(plans[0].batch, {{a, 1, 5}}, "resumed decode at the committed length");
  check(plans);
  d.RunToIdle();
  EXPECT_EQ(d.tokens[a], FakeModel::Reference(Prompt(5), 4));
}

TEST(SchedulerFaultTest, AllWorkersGoneThenOneReturns) {
  Driver d;
  d.AddWorker("w0");
  const int64_t a = d.Admit(Req(Prompt(5), 6));
  for (int i = 0; i < 3; ++i) {
    d.Schedule();
    d.DeliverAll();
  }
  d.Schedule();
  d.Crash("w0");
  EXPECT_TRUE(d.Schedule().empty()) << "no worker: the sequence waits";
  d.AddWorker("w0");
  d.RunToIdle();
  EXPECT_EQ(d.tokens[a], FakeModel::Reference(Prompt(5), 6));
  EXPECT_TRUE(d.sched.WorkerGone("nobody").empty());
}

// ---- Drain ----

TEST(SchedulerDrainTest, DrainFinishesItsSequencesAndTakesNoNewOnes) {
  Driver d;
  d.AddWorker("w0");
  d.AddWorker("w1");
  const int64_t a = d.Admit(Req(Prompt(3), 3));
  const int64_t b = d.Admit(Req(Prompt(3, 7), 6));
  d.Schedule();  // A -> w0, B -> w1
  auto ev = d.sched.Drain("w0");
  ASSERT_TRUE(ev.ok());
  EXPECT_TRUE(ev->empty()) << "w0 still holds A";
  const int64_t c = d.Admit(Req(Prompt(2), 2));  // w0 has the lower load, but drains
  while (!d.finished.count(a)) {
    d.DeliverAll();
    d.Schedule();
  }
  EXPECT_THAT(d.drained, ElementsAre("w0"));
  auto ic = d.sched.GetSequence(c);
  ASSERT_TRUE(ic.ok());
  EXPECT_TRUE(ic->state == SeqState::kFinished || ic->worker_id == "w1");
  d.RunToIdle();
  EXPECT_THAT(d.drained, ElementsAre("w0")) << "reported once";
  EXPECT_THAT(d.ran_on[c], ElementsAre("w1"));
  EXPECT_THAT(d.ran_on[a], ElementsAre("w0"));
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(Prompt(3, 7), 6));
  EXPECT_EQ(d.tokens[c], FakeModel::Reference(Prompt(2), 2));
  const auto ws = d.sched.Workers();
  ASSERT_EQ(ws.size(), 2u);
  EXPECT_TRUE(ws[0].draining && ws[0].drained);
  EXPECT_EQ(d.sched.Stats().draining_workers, 1);
  // An idle worker drains at once; unknown workers are NOT_FOUND.
  ev = d.sched.Drain("w1");
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ((*ev)[0].kind, EventKind::kWorkerDrained);
  EXPECT_EQ((*ev)[0].worker_id, "w1");
  EXPECT_EQ(d.sched.Drain("nobody").status().code(), absl::StatusCode::kNotFound);
  // With every worker draining, new requests wait in the queue.
  d.Admit(Req(Prompt(2), 2));
  EXPECT_TRUE(d.Schedule().empty());
  EXPECT_EQ(d.sched.Stats().queue_depth, 1);
}

// ---- Cancel ----

TEST(SchedulerCancelTest, QueuedIsRemovedAtOnce) {
  Driver d;
  const int64_t a = d.Admit(Req(Prompt(3), 3));
  const int64_t b = d.Admit(Req(Prompt(3), 3));
  auto ev = d.sched.Cancel(b);
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ((*ev)[0].kind, EventKind::kFinished);
  EXPECT_EQ((*ev)[0].seq_id, b);
  EXPECT_EQ((*ev)[0].reason, FinishReason::kCancelled);
  EXPECT_EQ(FinishReasonName((*ev)[0].reason), "cancelled");
  EXPECT_EQ(d.sched.Stats().queue_depth, 1);
  ev = d.sched.Cancel(b);  // again: already finished
  ASSERT_TRUE(ev.ok());
  EXPECT_TRUE(ev->empty());
  EXPECT_EQ(d.sched.Cancel(12345).status().code(), absl::StatusCode::kNotFound);
  d.AddWorker("w0");
  d.RunToIdle();
  EXPECT_EQ(d.tokens[a].size(), 3u);
  EXPECT_EQ(d.tokens.count(b), 0u);
}

TEST(SchedulerCancelTest, InFlightFinishesWhenItsStepResolvesAndFreesBlocksOnlyThen) {
  SchedulerConfig cfg = BaseConfig();
  cfg.total_blocks = 3;
  Driver d(cfg);
  d.AddWorker("w0");
  d.AddWorker("w1");
  const int64_t a = d.Admit(Req(Prompt(4), 6));  // up to 3 blocks: the whole pool
  d.Schedule();
  d.Deliver("w0");
  d.Schedule();  // A's first decode in flight
  ASSERT_EQ(d.tokens[a].size(), 1u);
  d.Cancel(a);
  EXPECT_FALSE(d.finished.count(a)) << "in flight: marked only";
  auto ia = d.sched.GetSequence(a);
  ASSERT_TRUE(ia.ok());
  EXPECT_TRUE(ia->cancel_pending);
  // A holds 2 blocks and may need a 3rd; B may need 2. Starting B would
  // leave no order in which both can finish: it waits although w1 is idle.
  const int64_t b = d.Admit(Req(Prompt(2), 6));
  EXPECT_TRUE(d.Schedule().empty());
  EXPECT_EQ(d.sched.Stats().blocks_free, 1);
  // The step resolves: no token for A, A finished, blocks free, B starts.
  const std::vector<Event> ev = d.Deliver("w0");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, EventKind::kFinished);
  EXPECT_EQ(ev[0].reason, FinishReason::kCancelled);
  EXPECT_EQ(d.tokens[a].size(), 1u);
  EXPECT_EQ(d.sched.Stats().blocks_free, 3);
  d.RunToIdle();
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(Prompt(2), 6));
  // A's full block 0 stays cached; its partly filled block 1 was freed last.
  EXPECT_THAT(d.tables[b], ElementsAre(1, 2)) << "B reuses A's freed block";
}

TEST(SchedulerCancelTest, RunningBetweenStepsAndInFlightOnAWorkerThatDies) {
  Driver d;
  d.AddWorker("w0");
  const int64_t a = d.Admit(Req(Prompt(3), 5));
  const int64_t b = d.Admit(Req(Prompt(3, 8), 5));
  d.Schedule();
  d.Deliver("w0");
  // Between steps (leased, nothing in flight): finished at once.
  d.Cancel(a);
  EXPECT_EQ(d.finished.at(a), FinishReason::kCancelled);
  // In flight, then the worker dies: finished at WorkerGone, not re-queued.
  d.Schedule();
  d.Cancel(b);
  EXPECT_FALSE(d.finished.count(b));
  d.Crash("w0");
  EXPECT_EQ(d.finished.at(b), FinishReason::kCancelled);
  EXPECT_EQ(d.tokens[a].size(), 1u);
  EXPECT_EQ(d.tokens[b].size(), 1u);
  EXPECT_TRUE(d.sched.Idle());
  EXPECT_EQ(d.sched.Stats().blocks_used, 0);
}

// ---- Deadlines ----

// Issue 15, defect 2: a sequence whose client does not read is paused: it
// gives up its seat (others take it) but keeps its blocks and committed
// tokens, and resumes where it stopped with the same output.
TEST(SchedulerPauseTest, APausedSequenceGivesUpItsSeatAndResumesUnchanged) {
  SchedulerConfig cfg = BaseConfig();
  cfg.max_seqs_per_step = 2;
  Driver d(cfg);
  d.AddWorker("w0");
  const int64_t a = d.Admit(Req(Prompt(3), 20));
  const int64_t b = d.Admit(Req(Prompt(3), 6));
  const int64_t c = d.Admit(Req(Prompt(5), 6));
  d.Schedule();  // a and b take both seats; c waits
  d.DeliverAll();
  d.Schedule();
  d.Pause(a, true);  // in flight: parked once its step resolves
  auto ia = d.sched.GetSequence(a);
  ASSERT_TRUE(ia.ok());
  EXPECT_TRUE(ia->paused);
  EXPECT_EQ(ia->state, SeqState::kRunning);
  d.DeliverAll();
  ia = d.sched.GetSequence(a);
  EXPECT_EQ(ia->state, SeqState::kPaused);
  EXPECT_EQ(SeqStateName(ia->state), "paused");
  EXPECT_GT(ia->blocks, 0) << "a paused sequence keeps its KV blocks";
  const size_t a_tokens = d.tokens[a].size();
  EXPECT_EQ(d.sched.Stats().paused, 1);
  // c takes a's seat; b and c finish while a is parked.
  for (int i = 0; i < 100 && !(d.finished.count(b) && d.finished.count(c)); ++i) {
    for (const StepPlan& p : d.Schedule())
      for (const SeqStep& s : p.batch.seqs) EXPECT_NE(s.seq_id, a) << "a paused sequence ran";
    d.DeliverAll();
  }
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(Prompt(3), 6));
  EXPECT_EQ(d.tokens[c], FakeModel::Reference(Prompt(5), 6));
  EXPECT_EQ(d.tokens[a].size(), a_tokens);
  EXPECT_TRUE(d.Schedule().empty());
  EXPECT_FALSE(d.sched.Idle());
  // The client reads again: a resumes from its committed length.
  d.Pause(a, false);
  d.RunToIdle();
  EXPECT_EQ(d.tokens[a], FakeModel::Reference(Prompt(3), 20));
  EXPECT_EQ(d.sched.SetPaused(a, true).code(), absl::StatusCode::kNotFound);
}

TEST(SchedulerPauseTest, PausedQueuedCancelledAndExpired) {
  Driver d;
  const int64_t a = d.Admit(Req(Prompt(3), 4));
  const int64_t b = d.Admit(Req(Prompt(3), 4), /*now=*/0);
  Request timed = Req(Prompt(3), 4);
  timed.deadline = 1000;
  const int64_t c = d.Admit(std::move(timed));
  d.Pause(a, true);  // queued: leaves the queue
  d.Pause(c, true);
  EXPECT_EQ(d.sched.Stats().queue_depth, 1);
  d.Cancel(a);
  EXPECT_EQ(d.finished[a], FinishReason::kCancelled);
  d.AddWorker("w0");
  d.Schedule(/*now=*/2000);  // c expires while paused
  EXPECT_EQ(d.finished[c], FinishReason::kDeadline);
  d.RunToIdle();
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(Prompt(3), 4));
  EXPECT_EQ(d.sched.Stats().blocks_used, 0);
}

// A paused sequence whose worker dies is parked, not re-queued.
TEST(SchedulerPauseTest, APausedSequenceOnAWorkerThatDiesStaysParked) {
  Driver d;
  d.AddWorker("w0");
  const int64_t a = d.Admit(Req(Prompt(3), 8));
  d.Schedule();
  d.Pause(a, true);
  d.Crash("w0");
  EXPECT_EQ(d.sched.GetSequence(a)->state, SeqState::kPaused);
  d.AddWorker("w1");
  EXPECT_TRUE(d.Schedule().empty());
  d.Pause(a, false);
  d.RunToIdle();
  EXPECT_EQ(d.tokens[a], FakeModel::Reference(Prompt(3), 8));
}

TEST(SchedulerDeadlineTest, QueuedAndRunningAreDroppedAtTheNextSchedule) {
  Driver d;
  Request ra = Req(Prompt(3), 10);
  ra.deadline = 100;
  Request rb = Req(Prompt(3), 3);
  rb.deadline = 500;
  Request rc = Req(Prompt(3), 4);  // no deadline
  const int64_t a = d.Admit(ra, 0);
  const int64_t b = d.Admit(rb, 0);
  const int64_t c = d.Admit(rc, 0);
  EXPECT_EQ(d.sched.NextDeadline(), 100);
  EXPECT_TRUE(d.Schedule(50).empty());  // no worker yet
  EXPECT_TRUE(d.finished.empty());
  d.Schedule(100);  // A expires in the queue
  EXPECT_EQ(d.finished.at(a), FinishReason::kDeadline);
  EXPECT_EQ(d.sched.NextDeadline(), 500);
  d.AddWorker("w0");
  d.Schedule(200);
  d.Deliver("w0");  // B and C get their first token
  EXPECT_EQ(d.tokens[b].size(), 1u);
  // B's deadline passes while its step is in flight: the step's token still
  // counts; the next Schedule drops it instead of sending it.
  d.Schedule(400);
  d.Deliver("w0");
  EXPECT_EQ(d.tokens[b].size(), 2u);
  const auto plans = d.Schedule(600);
  EXPECT_EQ(d.finished.at(b), FinishReason::kDeadline);
  ASSERT_EQ(plans.size(), 1u);
  for (const SeqStep& s : plans[0].batch.seqs) EXPECT_NE(s.seq_id, b);
  d.RunToIdle(600);
  EXPECT_EQ(d.finished.at(c), FinishReason::kLength);
  EXPECT_EQ(d.sched.NextDeadline(), 0);
  EXPECT_EQ(d.sched.Stats().blocks_used, 0);
}

// ---- Stop conditions ----

TEST(SchedulerStopTest, EosStopIdsIgnoreEosAndLength) {
  struct Case {
    const char* name;
    bool ignore_eos;
    std::vector<int32_t> stop_ids;
    int32_t max_tokens;
    std::vector<int32_t> script;  // the worker's sampled tokens, one per step
    std::vector<int32_t> want;
    FinishReason reason;
  };
  const std::vector<Case> cases = {
      {"eos", false, {}, 5, {5, kEos, 6}, {5, kEos}, FinishReason::kEos},
      {"second eos id", false, {}, 5, {998}, {998}, FinishReason::kEos},
      {"ignore_eos",
       true,
       {},
       5,
       {kEos, kEos, 5, 6, 7},
       {kEos, kEos, 5, 6, 7},
       FinishReason::kLength},
      {"stop id", false, {42, 43}, 5, {5, 43}, {5, 43}, FinishReason::kStop},
      {"eos as stop id with ignore_eos",
       true,
       {kEos},
       5,
       {1, kEos},
       {1, kEos},
       FinishReason::kStop},
      {"length", false, {}, 5, {1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}, FinishReason::kLength},
      {"one token", false, {}, 1, {7}, {7}, FinishReason::kLength},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    SchedulerConfig cfg = BaseConfig();
    cfg.eos_ids = {kEos, 998};
    Scheduler s = MustCreate(cfg);
    ASSERT_TRUE(s.AddWorker("w0").ok());
    Request r = Req(Prompt(2), k.max_tokens);
    r.ignore_eos = k.ignore_eos;
    r.stop_ids = k.stop_ids;
    auto id = s.Admit(r, 0);
    ASSERT_TRUE(id.ok());
    std::vector<int32_t> got;
    FinishReason reason = FinishReason::kNone;
    for (size_t step = 0; step < k.script.size() && reason == FinishReason::kNone; ++step) {
      ScheduleResult plan = s.Schedule(0);
      ASSERT_EQ(plan.steps.size(), 1u);
      for (const Event& e : s.OnStepResult("w0", plan.steps[0].step_id, {k.script[step]})) {
        if (e.kind == EventKind::kToken) got.push_back(e.token);
        if (e.kind == EventKind::kFinished) reason = e.reason;
      }
    }
    EXPECT_EQ(got, k.want);
    EXPECT_EQ(reason, k.reason);
    EXPECT_TRUE(s.Idle());
    EXPECT_EQ(s.Stats().blocks_used, 0);
  }
}

// ---- Introspection ----

TEST(SchedulerIntrospectionTest, StatsWorkersAndSequences) {
  Driver d;
  d.AddWorker("w0");
  Request r = Req(Prompt(5), 3);
  r.request_id = "client-7";
  const int64_t a = d.Admit(r, 42);
  const int64_t b = d.Admit(Req(Prompt(2), 2), 43);
  d.Schedule();
  SchedulerStats st = d.sched.Stats();
  EXPECT_EQ(st.running, 2);
  EXPECT_EQ(st.queue_depth, 0);
  EXPECT_EQ(st.live_workers, 1);
  EXPECT_EQ(st.steps_in_flight, 1);
  EXPECT_EQ(st.blocks_used, 2 + 1);
  EXPECT_EQ(st.blocks_used + st.blocks_free, st.blocks_total);
  const auto seqs = d.sched.Sequences();
  ASSERT_EQ(seqs.size(), 2u);
  EXPECT_EQ(seqs[0].seq_id, a);
  EXPECT_EQ(seqs[0].request_id, "client-7");
  EXPECT_EQ(seqs[0].state, SeqState::kRunning);
  EXPECT_EQ(SeqStateName(seqs[0].state), "running");
  EXPECT_EQ(seqs[0].worker_id, "w0");
  EXPECT_EQ(seqs[0].prompt_tokens, 5);
  EXPECT_EQ(seqs[0].admitted_at, 42);
  EXPECT_TRUE(seqs[0].in_flight);
  d.Deliver("w0");
  auto gen = d.sched.GeneratedTokens(a);
  ASSERT_TRUE(gen.ok());
  EXPECT_EQ(*gen, d.tokens[a]);
  d.RunToIdle();
  EXPECT_EQ(d.sched.GeneratedTokens(a).status().code(), absl::StatusCode::kNotFound);
  const auto done = d.sched.Sequences();
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].state, SeqState::kFinished);
  EXPECT_EQ(done[1].seq_id, a) << "b finished first (shorter)";
  EXPECT_EQ(done[0].seq_id, b);
  st = d.sched.Stats();
  EXPECT_EQ(st.finished, 2);
  EXPECT_EQ(st.tokens_committed, 5);
  EXPECT_EQ(d.sched.Workers()[0].tokens_processed, 5 + 2 + 2 + 1);
}

TEST(SchedulerIntrospectionTest, FinishedHistoryIsBounded) {
  SchedulerConfig cfg = BaseConfig();
  cfg.finished_history = 2;
  Driver d(cfg);
  d.AddWorker("w0");
  for (int i = 0; i < 5; ++i) {
    d.Admit(Req(Prompt(2), 1));
    d.RunToIdle();
  }
  const auto seqs = d.sched.Sequences();
  ASSERT_EQ(seqs.size(), 2u);
  EXPECT_EQ(seqs[0].seq_id, 4);
  EXPECT_EQ(seqs[1].seq_id, 5);
  EXPECT_EQ(d.sched.GetSequence(1).status().code(), absl::StatusCode::kNotFound);
}

// ---- Everything at once, from a seeded random schedule of events ----

TEST(SchedulerSoakTest, RandomEventsKeepEveryInvariant) {
  for (uint32_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    SchedulerConfig cfg = BaseConfig();
    cfg.total_blocks = 24;
    cfg.max_step_tokens = 10;
    cfg.max_seqs_per_step = 3;
    cfg.prefill_chunk = 5;
    cfg.max_queue = 6;
    Driver d(cfg);
    std::mt19937 rng(seed);
    auto pick = [&](int n) { return int(rng() % uint32_t(n)); };
    const std::vector<std::string> names = {"w0", "w1", "w2"};
    std::set<std::string> live;
    std::map<int64_t, std::pair<std::vector<int32_t>, int32_t>> reqs;
    std::set<int64_t> cancelled;
    std::vector<StepPlan> zombies;
    for (const auto& w : names) {
      d.AddWorker(w);
      live.insert(w);
    }
    for (int op = 0; op < 600; ++op) {
      switch (pick(10)) {
        case 0:
        case 1: {
          const auto prompt = Prompt(1 + pick(12), 1 + pick(500));
          const int32_t max_tokens = 1 + pick(8);
          auto id = d.sched.Admit(Req(prompt, max_tokens), 0);
          if (id.ok())
            reqs[*id] = {prompt, max_tokens};
          else
            EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
          break;
        }
        case 2:
        case 3:
          d.Schedule();
          break;
        case 4:
        case 5:
        case 6:
          if (!d.in_flight.empty()) {
            auto it = d.in_flight.begin();
            std::advance(it, pick(int(d.in_flight.size())));
            d.Deliver(it->first);
          }
          break;
        case 7:
          if (!live.empty() && pick(3) == 0) {
            auto it = live.begin();
            std::advance(it, pick(int(live.size())));
            if (auto z = d.Crash(*it)) zombies.push_back(*z);
            live.erase(it);
          } else {
            for (const auto& w : names) {
              if (!live.count(w)) {
                d.AddWorker(w);
                live.insert(w);
              }
            }
          }
          break;
        case 8:
          if (!zombies.empty()) {  // a dead worker's late answer
            const StepPlan z = zombies.back();
            zombies.pop_back();
            EXPECT_TRUE(d.sched
                            .OnStepResult(z.worker_id, z.step_id,
                                          std::vector<int32_t>(z.batch.seqs.size(), 1))
                            .empty());
          }
          break;
        case 9:
          if (!reqs.empty() && pick(4) == 0) {
            auto it = reqs.begin();
            std::advance(it, pick(int(reqs.size())));
            if (!d.finished.count(it->first)) {
              cancelled.insert(it->first);
              d.Cancel(it->first);
            }
          }
          break;
      }
      const SchedulerStats st = d.sched.Stats();
      int32_t held = 0;
      for (const SequenceInfo& s : d.sched.Sequences()) {
        if (s.state != SeqState::kFinished) held += s.blocks;
      }
      ASSERT_LE(st.blocks_used, held) << "shared blocks count once";
      ASSERT_EQ(held == 0, st.blocks_used == 0);
      ASSERT_EQ(st.blocks_used + st.blocks_free, cfg.total_blocks);
    }
    for (const auto& w : names) {
      if (!live.count(w)) d.AddWorker(w);
    }
    d.RunToIdle();
    EXPECT_EQ(d.sched.Stats().blocks_used, 0);
    for (const auto& [id, r] : reqs) {
      const std::vector<int32_t> want = FakeModel::Reference(r.first, r.second);
      ASSERT_TRUE(d.finished.count(id)) << id;
      const std::vector<int32_t>& got = d.tokens[id];
      if (d.finished[id] == FinishReason::kCancelled) {
        EXPECT_TRUE(cancelled.count(id));
        EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin()))
            << "a prefix, sequence " << id;
      } else {
        EXPECT_EQ(d.finished[id], FinishReason::kLength) << id;
        EXPECT_EQ(got, want) << id;
      }
    }
  }
}

}  // namespace
}  // namespace paged
