// The scheduler's KV policy: the prefix cache and KV blocks on demand
// (docs/scheduler.md), driven by the fake model and invariant-checking driver
// of scheduler_driver.h: every row a sequence reads is checked against its own
// context, so a wrongly shared block fails there, and every output is checked
// against FakeModel::Reference.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "daemon/scheduler.h"
#include "tests/unit/scheduler_driver.h"

namespace paged {
namespace {

using namespace scheduler_testing;  // NOLINT: the test's own harness

// Prompt `shared` followed by `tail` tokens from `tail_base`.
std::vector<int32_t> WithTail(std::vector<int32_t> shared, int tail, int32_t tail_base) {
  for (int i = 0; i < tail; ++i) shared.push_back(tail_base + i);
  return shared;
}

// ---- Prefix cache ----

TEST(PrefixCacheTest, ALaterPromptTakesTheCachedPrefixAndPrefillsOnlyTheRest) {
  Driver d;  // blocks of 4 tokens
  d.AddWorker("w0");
  const auto system = Prompt(10);
  const int64_t a = d.Admit(Req(system, 3));
  d.RunToIdle();
  // A committed 10 + 3 - 1 = 12 rows: blocks 0..2 are full and published.
  const auto pb = WithTail(system, 6, 500);  // 16 tokens: blocks 0, 1 shared, 2 differs
  const int64_t b = d.Admit(Req(pb, 4));
  auto plans = d.Schedule();
  ASSERT_EQ(plans.size(), 1u);
  ExpectRows(plans[0].batch, {{b, 8, 8}}, "B prefills from position 8");
  EXPECT_EQ(plans[0].batch.seqs[0].block_table[0], d.tables[a][0]);
  EXPECT_EQ(plans[0].batch.seqs[0].block_table[1], d.tables[a][1]);
  EXPECT_NE(plans[0].batch.seqs[0].block_table[2], d.tables[a][2]);
  EXPECT_EQ(d.sched.GetSequence(b)->cached_tokens, 8);
  d.RunToIdle();
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(pb, 4));
  const SchedulerStats st = d.sched.Stats();
  EXPECT_EQ(st.prompt_tokens, 26);
  EXPECT_EQ(st.cached_prompt_tokens, 8);
}

TEST(PrefixCacheTest, TheLastPromptTokenIsAlwaysComputed) {
  Driver d;
  d.AddWorker("w0");
  const auto p = Prompt(8);  // exactly two blocks
  d.Admit(Req(p, 2));
  d.RunToIdle();
  const int64_t b = d.Admit(Req(p, 2));
  auto plans = d.Schedule();
  ASSERT_EQ(plans.size(), 1u);
  // Block 1 holds the last prompt token, whose logits sample the first
  // token: it is recomputed into a block of B's own.
  ExpectRows(plans[0].batch, {{b, 4, 4}}, "B recomputes the last block");
  d.RunToIdle();
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(p, 2));
}

TEST(PrefixCacheTest, RunningSequencesShareTheirCommittedBlocks) {
  Driver d;
  d.AddWorker("w0");
  d.AddWorker("w1");
  const auto system = Prompt(12, 100);
  const int64_t a = d.Admit(Req(system, 20));
  for (int i = 0; i < 2; ++i) {  // A's prompt in two chunks of 8: committed, A decodes from here
    d.Schedule();
    d.DeliverAll();
  }
  ASSERT_EQ(d.tokens[a].size(), 1u);
  std::vector<int64_t> users;
  for (int u = 0; u < 4; ++u) users.push_back(d.Admit(Req(WithTail(system, 3, 200 + 10 * u), 6)));
  d.RunToIdle();  // the driver fails any write to a block another live sequence names
  EXPECT_EQ(d.tokens[a], FakeModel::Reference(system, 20));
  for (int u = 0; u < 4; ++u) {
    EXPECT_EQ(d.tokens[users[size_t(u)]],
              FakeModel::Reference(WithTail(system, 3, 200 + 10 * u), 6));
    EXPECT_EQ(d.sched.GetSequence(users[size_t(u)])->cached_tokens, 12) << u;
  }
}

TEST(PrefixCacheTest, MultiTurnConversationsReuseTheirWholeHistory) {
  Driver d;
  d.AddWorker("w0");
  std::vector<int32_t> convo = Prompt(9, 300);
  int32_t cached = 0;
  for (int turn = 0; turn < 4; ++turn) {
    const int64_t id = d.Admit(Req(convo, 5));
    d.RunToIdle();
    const auto want = FakeModel::Reference(convo, 5);
    ASSERT_EQ(d.tokens[id], want) << "turn " << turn;
    if (turn > 0) {
      EXPECT_GE(d.sched.GetSequence(id)->cached_tokens, cached) << turn;
    }
    // What the next turn can take: every full block before its last token.
    cached = int32_t(convo.size() + want.size() - 1) / 4 * 4;
    convo.insert(convo.end(), want.begin(), want.end());
    for (int i = 0; i < 3; ++i) convo.push_back(400 + 10 * turn + i);  // the user's next words
  }
  EXPECT_GT(d.sched.Stats().cached_prompt_tokens, 0);
}

TEST(PrefixCacheTest, EvictedWhenThePoolNeedsRoomAndStillCorrect) {
  SchedulerConfig cfg = BaseConfig();
  cfg.total_blocks = 12;
  Driver d(cfg);
  d.AddWorker("w0");
  std::map<int64_t, std::vector<int32_t>> prompts;
  // Three prompts twice (3 cached blocks each: the second round hits), then
  // six new ones: the pool of 12 must evict cached blocks to hold them.
  for (int i = 0; i < 12; ++i) {
    auto p = Prompt(13, 1 + 40 * (i < 6 ? i % 3 : i));
    prompts[d.Admit(Req(p, 3))] = p;
    d.RunToIdle();
  }
  for (const auto& [id, p] : prompts) EXPECT_EQ(d.tokens[id], FakeModel::Reference(p, 3)) << id;
  const SchedulerStats st = d.sched.Stats();
  EXPECT_GT(st.cache_evictions, 0);
  EXPECT_GT(st.cached_prompt_tokens, 0);
  EXPECT_LE(st.blocks_cached, cfg.total_blocks);
  EXPECT_EQ(st.blocks_used, 0);
  EXPECT_EQ(st.blocks_free, cfg.total_blocks);
}

TEST(PrefixCacheTest, ACrashedStepPublishesNothing) {
  Driver d;
  d.AddWorker("w0");
  d.AddWorker("w1");
  const auto p = Prompt(16, 50);
  const int64_t a = d.Admit(Req(p, 2));  // prefill chunks of 8
  d.Schedule();
  d.DeliverAll();  // rows [0, 8) committed
  d.Schedule();    // rows [8, 16) in flight on w0
  d.Crash("w0");   // garbage lands in A's blocks 2 and 3
  const int64_t b = d.Admit(Req(p, 2));
  d.RunToIdle();  // B would read garbage if A's uncommitted blocks were shared
  EXPECT_EQ(d.tokens[a], FakeModel::Reference(p, 2));
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(p, 2));
}

TEST(PrefixCacheTest, SharedBlocksCountOnceInAStepsKvRoom) {
  Driver d;
  d.AddWorker("w0", {0, 0, 10});        // a step may name 10 distinct blocks
  const auto system = Prompt(20, 600);  // 5 blocks
  d.Admit(Req(WithTail(system, 1, 900), 2));
  d.RunToIdle();  // publishes the system prompt's 5 blocks
  std::vector<int64_t> users;
  for (int u = 0; u < 3; ++u) users.push_back(d.Admit(Req(WithTail(system, 2, 700 + 10 * u), 2)));
  // Each user's table is 6 blocks (18 in all), but 5 are the same: 8 distinct.
  auto plans = d.Schedule();
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].batch.seqs.size(), 3u) << "all three fit: the shared blocks count once";
  d.RunToIdle();  // the driver checks every step's distinct blocks against the limit
  for (int u = 0; u < 3; ++u)
    EXPECT_EQ(d.tokens[users[size_t(u)]],
              FakeModel::Reference(WithTail(system, 2, 700 + 10 * u), 2));
}

TEST(PrefixCacheTest, RequestsArrivingTogetherComputeASharedPromptOnce) {
  Driver d;  // blocks of 4, prefill chunks of 8
  d.AddWorker("w0");
  const auto system = Prompt(16, 300);  // 4 blocks
  std::vector<int64_t> users;
  for (int u = 0; u < 6; ++u) users.push_back(d.Admit(Req(WithTail(system, 3, 500 + 10 * u), 2)));
  // The first computes the system prompt; the others wait for its blocks
  // rather than computing five more copies.
  auto plans = d.Schedule();
  ASSERT_EQ(plans.size(), 1u);
  ExpectRows(plans[0].batch, {{users[0], 8, 0}}, "only the first prefills");
  d.RunToIdle();
  for (int u = 0; u < 6; ++u) {
    EXPECT_EQ(d.tokens[users[size_t(u)]],
              FakeModel::Reference(WithTail(system, 3, 500 + 10 * u), 2))
        << u;
    EXPECT_EQ(d.sched.GetSequence(users[size_t(u)])->cached_tokens, u == 0 ? 0 : 16) << u;
  }
  EXPECT_EQ(d.sched.Stats().cached_prompt_tokens, 5 * 16);
}

TEST(PrefixCacheTest, NobodyWaitsForAPausedProducer) {
  Driver d;
  d.AddWorker("w0");
  const auto system = Prompt(16, 300);
  const int64_t a = d.Admit(Req(WithTail(system, 3, 500), 2));
  d.Schedule();  // A's first chunk in flight
  const int64_t b = d.Admit(Req(WithTail(system, 3, 600), 2));
  d.Pause(a, true);  // A's client stops reading: A will not finish its prompt soon
  d.DeliverAll();
  d.Schedule();
  EXPECT_EQ(d.sched.GetSequence(b)->state, SeqState::kRunning)
      << "B computes the rest itself instead of waiting for a paused A";
  d.Pause(a, false);
  d.RunToIdle();
  EXPECT_EQ(d.tokens[a], FakeModel::Reference(WithTail(system, 3, 500), 2));
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(WithTail(system, 3, 600), 2));
}

TEST(PrefixCacheTest, OffSharesNothing) {
  SchedulerConfig cfg = BaseConfig();
  cfg.prefix_cache = false;
  Driver d(cfg);
  d.AddWorker("w0");
  const auto p = Prompt(12);
  d.Admit(Req(p, 2));
  d.RunToIdle();
  const int64_t b = d.Admit(Req(p, 2));
  d.RunToIdle();
  EXPECT_EQ(d.sched.GetSequence(b)->cached_tokens, 0);
  EXPECT_EQ(d.sched.Stats().blocks_cached, 0);
  EXPECT_EQ(d.tokens[b], FakeModel::Reference(p, 2));
}

// ---- KV on demand ----

// The reference output of a request that stops at any of `stops`.
std::vector<int32_t> ReferenceWithStops(const std::vector<int32_t>& prompt, int32_t max_tokens,
                                        const std::vector<int32_t>& stops) {
  std::vector<int32_t> out = FakeModel::Reference(prompt, max_tokens);
  for (size_t i = 0; i < out.size(); ++i) {
    if (std::find(stops.begin(), stops.end(), out[i]) != stops.end()) {
      out.resize(i + 1);
      break;
    }
  }
  return out;
}

// The bounded test: 64 chat requests that omit max_tokens (so each
// may run to the end of the context) on a pool of 8 full contexts. Reserving
// whole contexts would run 8 at a time; on demand they all start, the pool
// fills, sequences wait for blocks keeping their rows, and every one
// completes with exactly its reference output.
TEST(KvOnDemandTest, SixtyFourOpenEndedChatsOnAPoolOfEightContextsAllComplete) {
  SchedulerConfig cfg = BaseConfig();
  cfg.max_context = 128;                                      // 32 blocks of 4
  cfg.total_blocks = 8 * cfg.max_context / cfg.block_tokens;  // 8 full contexts
  cfg.max_seqs_per_step = 16;
  cfg.max_step_tokens = 64;
  cfg.max_queue = 64;
  Driver d(cfg);
  for (const char* w : {"w0", "w1", "w2", "w3"}) d.AddWorker(w);
  std::vector<int32_t> stops;  // ~1 in 60 tokens ends a reply: replies of every length
  for (int32_t t = 0; t < kVocab; t += 60) stops.push_back(t);
  std::mt19937 rng(7);
  std::map<int64_t, std::vector<int32_t>> prompts;
  for (int i = 0; i < 64; ++i) {
    auto p = Prompt(8 + int(rng() % 24), 1 + int32_t(rng() % 900));
    Request r = Req(p, cfg.max_context - int32_t(p.size()));  // what an omitted max_tokens means
    r.stop_ids = stops;
    prompts[d.Admit(r)] = p;
  }
  std::map<int64_t, int> first_token_round;
  int peak_running = 0, rounds = 0;
  for (; rounds < 20000 && !d.sched.Idle(); ++rounds) {
    d.Schedule();
    ASSERT_FALSE(d.in_flight.empty()) << "stuck at round " << rounds;
    peak_running = std::max(peak_running, d.sched.Stats().running);
    d.DeliverAll();
    for (const auto& [id, toks] : d.tokens)
      if (!toks.empty()) first_token_round.emplace(id, rounds);
  }
  ASSERT_TRUE(d.sched.Idle());
  int at_context_end = 0;
  for (const auto& [id, p] : prompts) {
    const auto want = ReferenceWithStops(p, cfg.max_context - int32_t(p.size()), stops);
    EXPECT_EQ(d.tokens[id], want) << id;
    at_context_end += d.finished[id] == FinishReason::kLength;
  }
  const SchedulerStats st = d.sched.Stats();
  EXPECT_GT(peak_running, 8) << "more than the 8 whole-context reservations would allow";
  EXPECT_GT(at_context_end, 0) << "some replies ran to the end of the context";
  // Any policy that holds 8 whole contexts at a time needs at least
  // (generated tokens) / 8 rounds: a round gives a running sequence one
  // token. On demand is faster, and nobody waits that long for a first token.
  int64_t generated = 0;
  for (const auto& [id, t] : d.tokens) generated += int64_t(t.size());
  const int64_t reservation_bound = (generated + 7) / 8;
  EXPECT_LT(rounds, reservation_bound);
  int last_first = 0;
  for (const auto& [id, r] : first_token_round) last_first = std::max(last_first, r);
  EXPECT_EQ(first_token_round.size(), prompts.size());
  EXPECT_LT(last_first, reservation_bound) << "none starves";
  EXPECT_EQ(st.blocks_used, 0);
  std::printf(
      "64 open-ended chats, pool of 8 contexts: %d rounds (8 whole contexts at a time: >= %lld), "
      "peak %d running, %lld preemptions, %d ran to the context end, last first token at "
      "round %d\n",
      rounds, static_cast<long long>(reservation_bound), peak_running,
      static_cast<long long>(st.preemptions), at_context_end, last_first);
}

TEST(KvOnDemandTest, ALargeRequestDoesNotBlockTheSmallOnesBehindIt) {
  SchedulerConfig cfg = BaseConfig();
  cfg.max_context = 64;
  cfg.total_blocks = 26;  // big1's whole length (16 blocks) and 5 small ones; not big2 too
  cfg.max_overtake = 4;
  cfg.max_seqs_per_step = 8;
  Driver d(cfg);
  d.AddWorker("w0");
  const int64_t big1 = d.Admit(Req(Prompt(8, 1), 56));    // may need the whole context
  const int64_t big2 = d.Admit(Req(Prompt(8, 100), 56));  // cannot safely start beside big1
  std::vector<int64_t> small;
  for (int i = 0; i < 5; ++i) small.push_back(d.Admit(Req(Prompt(3, 200 + 10 * i), 2)));
  d.Schedule();
  EXPECT_EQ(d.sched.GetSequence(big1)->state, SeqState::kRunning);
  EXPECT_EQ(d.sched.GetSequence(big2)->state, SeqState::kQueued);
  // The first max_overtake small ones start past big2; the fifth waits for it.
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(d.sched.GetSequence(small[size_t(i)])->state, SeqState::kRunning) << i;
  EXPECT_EQ(d.sched.GetSequence(small[4])->state, SeqState::kQueued);
  d.RunToIdle();
  EXPECT_EQ(d.tokens[big1], FakeModel::Reference(Prompt(8, 1), 56));
  EXPECT_EQ(d.tokens[big2], FakeModel::Reference(Prompt(8, 100), 56));
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(d.tokens[small[size_t(i)]], FakeModel::Reference(Prompt(3, 200 + 10 * i), 2));
}

TEST(KvOnDemandTest, RandomLoadsWithTinyPoolsNeverDeadlock) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    std::mt19937 rng(seed);
    SchedulerConfig cfg = BaseConfig();
    cfg.max_context = 32;
    cfg.total_blocks = 8 + int32_t(rng() % 12);
    cfg.max_queue = 32;
    cfg.max_overtake = int32_t(rng() % 3);
    Driver d(cfg);
    d.AddWorker("w0", {0, 0, int32_t(rng() % 2) ? 0 : 10});
    d.AddWorker("w1");
    std::map<int64_t, std::pair<std::vector<int32_t>, int32_t>> reqs;
    const auto shared = Prompt(6, 700);
    for (int i = 0; i < 24; ++i) {
      auto p = rng() % 2 ? WithTail(shared, 1 + int(rng() % 6), 800 + 10 * i)
                         : Prompt(1 + int(rng() % 12), 1 + int32_t(rng() % 500));
      const int32_t max_tokens = 1 + int32_t(rng() % uint32_t(cfg.max_context - int(p.size())));
      auto id = d.sched.Admit(Req(p, max_tokens), 0);
      if (id.ok()) reqs[*id] = {p, max_tokens};
    }
    d.RunToIdle();
    for (const auto& [id, r] : reqs)
      EXPECT_EQ(d.tokens[id], FakeModel::Reference(r.first, r.second)) << id;
    EXPECT_EQ(d.sched.Stats().blocks_used, 0);
  }
}

// ---- Restore: a coordinator restarted from its journal ----

// What the coordinator journals of a sequence: its request, and at each
// committed token its generated tokens, committed length and blocks.
struct Journaled {
  Request req;
  std::vector<int32_t> generated;
  int32_t committed = 0;
  std::vector<int32_t> blocks;
};

// Runs a mixed load (shared prefixes, two workers) for `deliveries` step
// results, journaling as the coordinator does, then "kills the coordinator":
// the steps in flight write garbage past the committed rows and are lost.
std::map<int64_t, Journaled> RunAndKill(Driver& d, int deliveries, std::mt19937& rng) {
  std::map<int64_t, Journaled> journal;
  d.AddWorker("w0");
  d.AddWorker("w1");
  const auto system = Prompt(9, 300);
  for (int i = 0; i < 6; ++i) {
    Request r = Req(i % 2 ? WithTail(system, 1 + i, 600 + 10 * i) : Prompt(3 + 2 * i, 40 * i + 1),
                    6 + 3 * i);
    const int64_t id = d.Admit(r);
    journal[id].req = r;
  }
  for (int n = 0; n < deliveries && !d.sched.Idle();) {
    d.Schedule();
    std::vector<std::string> ws;
    for (const auto& [w, p] : d.in_flight) ws.push_back(w);
    std::shuffle(ws.begin(), ws.end(), rng);
    for (const std::string& w : ws) {
      if (n++ >= deliveries) break;
      for (const Event& e : d.Deliver(w)) {
        if (e.kind != EventKind::kToken) continue;
        Journaled& j = journal[e.seq_id];
        j.generated.push_back(e.token);
        if (auto info = d.sched.GetSequence(e.seq_id);
            info.ok() && info->state != SeqState::kFinished) {
          j.committed = info->committed_len;
          j.blocks = *d.sched.BlockTable(e.seq_id);
        }
      }
    }
  }
  for (const auto& [w, p] : d.in_flight) d.model.Crash(p.batch);
  return journal;
}

std::vector<RestoredSequence> ToRestore(const std::map<int64_t, Journaled>& journal, bool kv) {
  std::vector<RestoredSequence> out;
  for (const auto& [id, j] : journal) {
    RestoredSequence r;
    r.seq_id = id;
    r.request = j.req;
    r.generated = j.generated;
    if (kv) {
      r.committed_len = j.committed;
      r.blocks = j.blocks;
    }
    out.push_back(std::move(r));
  }
  return out;
}

TEST(RestoreTest, WithItsBlocksEverySequenceResumesAndEndsAsIfNothingHappened) {
  for (int trial = 0; trial < 40; ++trial) {
    std::mt19937 rng{uint32_t(trial)};
    Driver before;
    const std::map<int64_t, Journaled> journal = RunAndKill(before, 3 + trial, rng);
    Driver after;
    after.model = before.model;  // the store's KV rows survived
    for (const auto& [id, j] : journal) {
      after.tokens[id] = j.generated;
      after.tables[id] = j.blocks;
    }
    auto restored = after.sched.Restore(ToRestore(journal, true), 0);
    ASSERT_TRUE(restored.ok()) << restored.status();
    EXPECT_TRUE(restored->kv_adopted);
    EXPECT_TRUE(restored->skipped.empty());
    after.Record(restored->events);
    after.AddWorker("w0");
    after.AddWorker("w1");
    // Nothing committed is computed again: each first step starts at the
    // journaled committed length.
    std::map<int64_t, int32_t> first_start;
    for (int round = 0; round < 10000 && !after.sched.Idle(); ++round) {
      for (const StepPlan& p : after.Schedule()) {
        for (const SeqStep& s : p.batch.seqs) first_start.emplace(s.seq_id, s.start_pos);
      }
      ASSERT_FALSE(after.in_flight.empty()) << "stuck";
      after.DeliverAll();
    }
    for (const auto& [id, j] : journal) {
      EXPECT_EQ(after.tokens[id], FakeModel::Reference(j.req.prompt, j.req.max_tokens))
          << "trial " << trial << " sequence " << id;
      if (first_start.count(id) && !j.blocks.empty()) {
        EXPECT_EQ(first_start[id], j.committed) << "trial " << trial << " sequence " << id;
      }
    }
    const SchedulerStats st = after.sched.Stats();
    EXPECT_EQ(st.blocks_used, 0) << "trial " << trial;
    // New ids continue after the restored ones.
    EXPECT_GT(after.Admit(Req(Prompt(3), 2)), journal.rbegin()->first);
  }
}

TEST(RestoreTest, WithoutItsRowsASequenceComputesThemAgainFromItsTokens) {
  for (int trial = 0; trial < 20; ++trial) {
    std::mt19937 rng{uint32_t(100 + trial)};
    Driver before;
    const std::map<int64_t, Journaled> journal = RunAndKill(before, 4 + 2 * trial, rng);
    Driver after;  // a fresh pool: the store's rows are gone
    for (const auto& [id, j] : journal) after.tokens[id] = j.generated;
    auto restored = after.sched.Restore(ToRestore(journal, false), 0);
    ASSERT_TRUE(restored.ok()) << restored.status();
    EXPECT_FALSE(restored->kv_adopted);
    after.Record(restored->events);
    after.AddWorker("w0");
    after.RunToIdle();
    for (const auto& [id, j] : journal)
      EXPECT_EQ(after.tokens[id], FakeModel::Reference(j.req.prompt, j.req.max_tokens))
          << "trial " << trial << " sequence " << id;
    EXPECT_EQ(after.sched.Stats().blocks_used, 0);
  }
}

TEST(RestoreTest, EndedSequencesFinishAtOnceAndBadOnesAreSkipped) {
  Driver d;
  std::vector<RestoredSequence> in(4);
  in[0].seq_id = 7;  // all its tokens: finished by length
  in[0].request = Req(Prompt(5), 2);
  in[0].generated = FakeModel::Reference(Prompt(5), 2);
  in[1].seq_id = 3;  // its last token is a stop id
  in[1].request = Req(Prompt(5), 9);
  in[1].request.stop_ids = {FakeModel::Reference(Prompt(5), 1)[0]};
  in[1].generated = FakeModel::Reference(Prompt(5), 1);
  in[2].seq_id = 5;  // a token outside the vocabulary
  in[2].request = Req(Prompt(5), 9);
  in[2].generated = {kVocab + 3};
  in[3].seq_id = 9;  // goes on, its rows computed again (a bad table drops every table)
  in[3].request = Req(Prompt(6, 50), 5);
  in[3].generated = FakeModel::Reference(Prompt(6, 50), 2);
  in[3].committed_len = 40;
  in[3].blocks = {1};
  d.tokens[7] = in[0].generated;
  d.tokens[3] = in[1].generated;
  d.tokens[9] = in[3].generated;
  auto r = d.sched.Restore(in, 0);
  ASSERT_TRUE(r.ok()) << r.status();
  d.Record(r->events);
  EXPECT_FALSE(r->kv_adopted);
  ASSERT_EQ(r->skipped.size(), 1u);
  EXPECT_EQ(r->skipped[0].first, 5);
  EXPECT_THAT(r->skipped[0].second, ::testing::HasSubstr("vocabulary"));
  EXPECT_EQ(d.finished[7], FinishReason::kLength);
  EXPECT_EQ(d.finished[3], FinishReason::kStop);
  d.AddWorker("w0");
  d.RunToIdle();
  EXPECT_EQ(d.tokens[9], FakeModel::Reference(Prompt(6, 50), 5));
  EXPECT_EQ(d.Admit(Req(Prompt(2), 1)), 10);
  // Only before anything is admitted.
  EXPECT_EQ(d.sched.Restore({}, 0).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace paged
