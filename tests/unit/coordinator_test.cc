// The coordinator in-process: fake workers driven through its API (and once
// through a real gRPC server on a unix socket) that "compute" a next token as
// a hash of the context they read back from a fake KV pool through the block
// tables, so that a resumed sequence that read a wrong row would diverge.
// Also the request parsing and the text stream (stop strings, UTF-8).
#include "daemon/coordinator.h"

#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/process.h"
#include "daemon/generate_request.h"
#include "daemon/server.h"
#include "daemon/services.h"
#include "daemon/text_stream.h"
#include "paged/v1/admin.grpc.pb.h"
#include "paged/v1/inference.grpc.pb.h"
#include "paged/v1/worker_link.grpc.pb.h"
#include "tests/unit/fake_coordinator.h"
#include "tests/unit/test_util.h"

extern char** environ;

namespace paged {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

constexpr int kBlockTokens = testing::kFakeBlockTokens;
constexpr int kBlocks = testing::kFakeBlocks;
constexpr int kVocab = testing::kFakeVocab;
constexpr int kEos = testing::kFakeEos;

// ---- A fake model over a fake KV pool ----

struct FakePool {
  std::mutex mu;
  std::vector<int32_t> rows = std::vector<int32_t>(size_t(kBlocks * kBlockTokens), -1);
};

int32_t HashToToken(const std::vector<int32_t>& context) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : context) h = (h ^ uint64_t(uint32_t(t))) * 1099511628211ull;
  return 3 + int32_t(h % 50);  // never bos, eos or unk
}

// Writes the step's rows, reads the whole context back, returns its token.
// `garbage`: a crash mid write-back (rows written wrong, no answer).
int32_t FakeCompute(FakePool& pool, const v1::SeqStep& s, bool garbage = false) {
  std::lock_guard<std::mutex> lock(pool.mu);
  auto row = [&](int pos) -> int32_t& {
    return pool.rows[size_t(s.block_table(pos / kBlockTokens) * kBlockTokens + pos % kBlockTokens)];
  };
  for (int i = 0; i < s.tokens_size(); ++i) row(s.start_pos() + i) = garbage ? 999 : s.tokens(i);
  std::vector<int32_t> context;
  for (int p = 0; p < s.start_pos() + s.tokens_size(); ++p) context.push_back(row(p));
  return HashToToken(context);
}

// What a clean run generates.
std::vector<int32_t> Reference(std::vector<int32_t> prompt, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(HashToToken(prompt));
    prompt.push_back(out.back());
  }
  return out;
}

v1::Hello MakeHello(const std::string& id, int seqs = 8, int tokens = 64) {
  v1::Hello h;
  h.set_worker_id(id);
  h.set_device("fake");
  h.set_segment("fake-segment");
  h.set_max_step_seqs(seqs);
  h.set_max_step_tokens(tokens);
  h.mutable_plan()->set_text("fake plan");
  return h;
}

// A worker driven by the test thread.
struct FakeWorker {
  Coordinator* c = nullptr;
  FakePool* pool = nullptr;
  std::shared_ptr<Coordinator::Link> link;
  std::atomic<int> closes{0};
  int drains = 0;
  int steps = 0;
  bool experts = false;  // reports expert-level paging's counters too
  bool hybrid = false;   // reports the hybrid step's host bytes and share too

  // Its "stream" ends: the coordinator must not call `close` after this.
  ~FakeWorker() {
    if (link) c->DetachWorker(*link);
  }

  void Attach(Coordinator& coord, FakePool& p, const v1::Hello& hello) {
    c = &coord;
    pool = &p;
    auto l = coord.AttachWorker(hello, [this] { ++closes; });
    ASSERT_TRUE(l.ok()) << l.status();
    link = *l;
  }
  // Answers one pending message, if any: true when it did something.
  bool ServeOne() {
    v1::CoordinatorMessage m;
    if (c->NextMessage(*link, &m, milliseconds(0)) != Coordinator::Next::kMessage) return false;
    if (m.has_drain()) {
      ++drains;
      return true;
    }
    v1::WorkerMessage reply;
    v1::StepResult* r = reply.mutable_result();
    r->set_step_id(m.step().step_id());
    r->set_step_s(0.001);
    for (const v1::SeqStep& s : m.step().sequences()) r->add_next_tokens(FakeCompute(*pool, s));
    r->mutable_counters()->set_steps(uint64_t(++steps));
    r->mutable_counters()->set_h2d_bytes(uint64_t(steps) * 1000);
    if (experts) {
      // Per step: 3 hits, 1 copied, and an eviction every other step.
      v1::WorkerCounters* k = r->mutable_counters();
      k->set_expert_hits(uint64_t(steps) * 3);
      k->set_expert_misses(uint64_t(steps));
      k->set_expert_evictions(uint64_t(steps / 2));
      k->set_h2d_expert_bytes(uint64_t(steps) * 400);
    }
    if (hybrid) {
      // Per step: 700 bytes read in place; the share tuned from 60% to 84%.
      v1::WorkerCounters* k = r->mutable_counters();
      k->set_host_weight_bytes(uint64_t(steps) * 700);
      k->set_host_share(steps < 3 ? 0.6 : 0.84);
    }
    EXPECT_TRUE(c->OnWorkerMessage(*link, reply).ok());
    return true;
  }
  // Its stream ends now (its process or its coordinator goes away).
  void Detach() {
    c->DetachWorker(*link);
    link.reset();
  }
  // Takes a step and dies in the middle of its write-back.
  bool CrashMidStep() {
    v1::CoordinatorMessage m;
    if (c->NextMessage(*link, &m, milliseconds(0)) != Coordinator::Next::kMessage || !m.has_step())
      return false;
    for (const v1::SeqStep& s : m.step().sequences()) FakeCompute(*pool, s, /*garbage=*/true);
    c->DetachWorker(*link);
    return true;
  }
};

Request Req(std::vector<int32_t> prompt, int max_tokens, std::string request_id = "") {
  Request r;
  r.request_id = std::move(request_id);
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

// Serves every worker until every channel of `c` finished; a failure once
// nothing moved `max_idle` times in a row.
void ServeUntilDone(Coordinator& c, std::vector<FakeWorker*> workers,
                    std::vector<std::shared_ptr<Coordinator::Channel>> chans,
                    std::vector<Coordinator::Update>* out, int max_idle = 200) {
  out->assign(chans.size(), Coordinator::Update());
  for (int idle = 0; idle < max_idle;) {
    bool moved = false;
    for (FakeWorker* w : workers) moved |= w->ServeOne();
    bool all = true;
    for (size_t i = 0; i < chans.size(); ++i) {
      c.Wait(*chans[i], milliseconds(0), &(*out)[i]);
      all &= (*out)[i].finished;
    }
    if (all) return;
    if (moved) {
      idle = 0;
    } else {
      ++idle;
      std::this_thread::sleep_for(milliseconds(1));
    }
  }
  FAIL() << "no progress";
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(); }

  void Make(int max_queue = 16, int max_requeues = 8, double fence_timeout_s = 30) {
    CoordinatorOptions o = testing::FakeCoordinatorOptions(max_queue);
    o.max_requeues = max_requeues;
    o.fence_timeout_s = fence_timeout_s;
    coord_.reset();
    auto c = Coordinator::Create(std::move(o), nullptr);
    ASSERT_TRUE(c.ok()) << c.status();
    coord_ = std::move(*c);
  }

  // Serves every worker until every channel finished (or nothing moves).
  void RunUntilDone(std::vector<FakeWorker*> workers,
                    std::vector<std::shared_ptr<Coordinator::Channel>> chans,
                    std::vector<Coordinator::Update>* out) {
    ServeUntilDone(*coord_, std::move(workers), std::move(chans), out);
  }

  FakePool pool_;
  std::unique_ptr<Coordinator> coord_;
};

TEST_F(CoordinatorTest, ATokenReachesTheStreamOnlyAfterItsStepResult) {
  FakeWorker w;
  ASSERT_NO_FATAL_FAILURE(w.Attach(*coord_, pool_, MakeHello("w0")));
  auto ch = coord_->Admit(Req({1, 5, 6}, 6));
  ASSERT_TRUE(ch.ok()) << ch.status();

  v1::CoordinatorMessage m;
  ASSERT_EQ(coord_->NextMessage(*w.link, &m, milliseconds(1000)), Coordinator::Next::kMessage);
  ASSERT_TRUE(m.has_step());
  ASSERT_EQ(m.step().sequences_size(), 1);
  const v1::SeqStep& s = m.step().sequences(0);
  EXPECT_EQ(s.start_pos(), 0);
  EXPECT_THAT(std::vector<int32_t>(s.tokens().begin(), s.tokens().end()),
              ::testing::ElementsAre(1, 5, 6));
  EXPECT_EQ(s.block_table_size(), 1);

  Coordinator::Update u;
  coord_->Wait(**ch, milliseconds(20), &u);
  EXPECT_TRUE(u.tokens.empty());  // nothing before the worker's answer

  v1::WorkerMessage reply;
  reply.mutable_result()->set_step_id(m.step().step_id());
  reply.mutable_result()->add_next_tokens(FakeCompute(pool_, s));
  reply.mutable_result()->set_step_s(0.25);
  ASSERT_TRUE(coord_->OnWorkerMessage(*w.link, reply).ok());
  coord_->Wait(**ch, milliseconds(0), &u);
  ASSERT_EQ(u.tokens.size(), 1u);
  EXPECT_EQ(u.tokens[0], Reference({1, 5, 6}, 1)[0]);
  EXPECT_EQ(u.step_s, std::vector<double>{0.25});

  std::vector<Coordinator::Update> out;
  RunUntilDone({&w}, {*ch}, &out);
  EXPECT_EQ(out[0].reason, FinishReason::kLength);
  std::vector<int32_t> all = u.tokens;
  all.insert(all.end(), out[0].tokens.begin(), out[0].tokens.end());
  EXPECT_EQ(all, Reference({1, 5, 6}, 6));
  coord_->Release(**ch);
  EXPECT_EQ(coord_->Status().kv_blocks_used(), 0u);
}

TEST_F(CoordinatorTest, SequencesOfAWorkerThatDiesMidStepFinishElsewhereUnchanged) {
  // Clean outputs for 6 sequences of different prompts.
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) prompts.push_back({1, 10 + i, 20 + i, 30 + i, 40 + i, 3 + i});
  for (int crash_round = 0; crash_round < 6; ++crash_round) {
    SCOPED_TRACE(crash_round);
    Make();
    FakeWorker a, b;
    ASSERT_NO_FATAL_FAILURE(a.Attach(*coord_, pool_, MakeHello("a")));
    ASSERT_NO_FATAL_FAILURE(b.Attach(*coord_, pool_, MakeHello("b")));
    std::vector<std::shared_ptr<Coordinator::Channel>> chans;
    for (const auto& p : prompts) chans.push_back(*coord_->Admit(Req(p, 12)));
    // Both take steps, then b dies in the middle of one.
    for (int r = 0; r < crash_round; ++r) {
      a.ServeOne();
      b.ServeOne();
    }
    ASSERT_TRUE(b.CrashMidStep());
    std::vector<Coordinator::Update> out;
    RunUntilDone({&a}, chans, &out);
    // Tokens taken before the crash were drained by RunUntilDone's Waits too.
    for (size_t i = 0; i < chans.size(); ++i) {
      EXPECT_EQ(out[i].tokens, Reference(prompts[i], 12)) << "sequence " << i;
      EXPECT_EQ(out[i].reason, FinishReason::kLength);
      coord_->Release(*chans[i]);
    }
    v1::StatusResponse st = coord_->Status();
    EXPECT_EQ(st.kv_blocks_used(), 0u);
    ASSERT_EQ(st.workers_size(), 2);
    EXPECT_EQ(st.workers(1).worker_id(), "b");
    EXPECT_EQ(st.workers(1).state(), "GONE");
    EXPECT_EQ(st.workers(0).state(), "ATTACHED");
  }
}

// A worker whose stream breaks while its process lives on may still be
// writing its step's KV rows: that step's sequences wait (their blocks
// reserved) until the process ends or attaches again; the others go on.
TEST_F(CoordinatorTest, ACutOffWorkersLiveProcessIsFencedUntilItEndsOrReturns) {
  for (const char* how : {"ends", "attaches again", "outlives the timeout"}) {
    SCOPED_TRACE(how);
    const bool returns = std::string(how) == "attaches again";
    const bool times_out = std::string(how) == "outlives the timeout";
    Make(16, 8, times_out ? 0.15 : 30);
    // The "worker process": a real process the test can end.
    pid_t proc = 0;
    std::string sleep_bin = "/bin/sleep", secs = "60";
    char* argv[] = {sleep_bin.data(), secs.data(), nullptr};
    ASSERT_EQ(posix_spawn(&proc, "/bin/sleep", nullptr, nullptr, argv, environ), 0);
    const uint64_t start = ProcessStartTime(proc).value_or(0);
    ASSERT_NE(start, 0u);
    v1::Hello hello_b = MakeHello("b", /*seqs=*/2);
    hello_b.set_pid(proc);
    hello_b.set_process_start_time(start);
    FakeWorker a, b;
    ASSERT_NO_FATAL_FAILURE(a.Attach(*coord_, pool_, MakeHello("a", /*seqs=*/2)));
    ASSERT_NO_FATAL_FAILURE(b.Attach(*coord_, pool_, hello_b));
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::shared_ptr<Coordinator::Channel>> chans;
    for (int i = 0; i < 4; ++i) {
      prompts.push_back({1, 10 + i, 20 + i});
      chans.push_back(*coord_->Admit(Req(prompts.back(), 8)));
    }
    ASSERT_TRUE(b.CrashMidStep());  // its stream breaks mid-step; the process lives
    auto n_held = [&] {
      const v1::ListSequencesResponse list = coord_->ListSequences();
      int n = 0;
      for (const v1::SequenceInfo& s : list.sequences()) n += s.state() == "HELD";
      return n;
    };
    const int held = n_held();  // the sequences of b's step (its others are re-queued)
    EXPECT_GE(held, 1);
    // a serves all it can and is then idle: the held ones are not given to it.
    for (int i = 0; i < 100; ++i) a.ServeOne();
    if (!times_out) {
      EXPECT_EQ(n_held(), held);
    }
    if (returns) {
      FakeWorker b2;  // the same process, reconnected: its step is over
      ASSERT_NO_FATAL_FAILURE(b2.Attach(*coord_, pool_, hello_b));
      std::vector<Coordinator::Update> out;
      RunUntilDone({&a, &b2}, chans, &out);
      for (size_t i = 0; i < chans.size(); ++i)
        EXPECT_EQ(out[i].tokens, Reference(prompts[i], 8)) << i;
      kill(proc, SIGKILL);
      waitpid(proc, nullptr, 0);
    } else {
      if (!times_out) {
        kill(proc, SIGKILL);
        waitpid(proc, nullptr, 0);
      }
      std::vector<Coordinator::Update> out;
      RunUntilDone({&a}, chans, &out);  // the timer notices within ~20 ms (or at the timeout)
      if (times_out) {
        kill(proc, SIGKILL);
        waitpid(proc, nullptr, 0);
      }
      for (size_t i = 0; i < chans.size(); ++i)
        EXPECT_EQ(out[i].tokens, Reference(prompts[i], 8)) << i;
    }
    for (auto& ch : chans) coord_->Release(*ch);
    EXPECT_EQ(coord_->Status().kv_blocks_used(), 0u);
  }
}

// ---- A coordinator restart (the sequence journal) ----

// Coordinators over one journal, one after the other, as paged-up restarts
// them: sequences journaled by the first are resumed by the second.
class CoordinatorRestartTest : public ::testing::Test {
 protected:
  std::unique_ptr<Coordinator> MakeWithJournal(uint64_t generation, double resume_timeout_s = 30) {
    CoordinatorOptions o = testing::FakeCoordinatorOptions();
    o.journal_path = dir_.File("journal");
    o.segment_generation = generation;
    o.resume_timeout_s = resume_timeout_s;
    auto c = Coordinator::Create(std::move(o), nullptr);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  // A "worker process" the test can end (the restart fence watches it).
  static pid_t SpawnSleep() {
    pid_t proc = 0;
    std::string sleep_bin = "/bin/sleep", secs = "60";
    char* argv[] = {sleep_bin.data(), secs.data(), nullptr};
    EXPECT_EQ(posix_spawn(&proc, "/bin/sleep", nullptr, nullptr, argv, environ), 0);
    return proc;
  }
  testing::TempDir dir_;
};

TEST_F(CoordinatorRestartTest, EverySequenceResumesFromTheJournalWithTheSameTokens) {
  constexpr int kTokens = 10;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 5; ++i) prompts.push_back({1, 10 + i, 20 + i, 30 + i, 4 + i, 5 + 2 * i});
  for (bool rows_kept : {true, false}) {
    for (int rounds : {0, 1, 3, 6}) {
      SCOPED_TRACE(
          absl::StrCat(rows_kept ? "rows kept" : "rows lost", ", killed after ", rounds, " steps"));
      ::unlink(dir_.File("journal").c_str());
      FakePool pool;
      std::vector<std::vector<int32_t>> received(prompts.size());
      const pid_t proc = SpawnSleep();
      {
        std::unique_ptr<Coordinator> first = MakeWithJournal(7);
        ASSERT_TRUE(first);
        v1::Hello hello = MakeHello("w0");
        hello.set_pid(proc);
        hello.set_process_start_time(ProcessStartTime(proc).value_or(0));
        FakeWorker w;
        ASSERT_NO_FATAL_FAILURE(w.Attach(*first, pool, hello));
        std::vector<std::shared_ptr<Coordinator::Channel>> chans;
        for (size_t i = 0; i < prompts.size(); ++i)
          chans.push_back(*first->Admit(Req(prompts[i], kTokens + int(i), absl::StrCat("r", i))));
        for (int r = 0; r < rounds; ++r) {
          w.ServeOne();
          for (size_t i = 0; i < chans.size(); ++i) {
            Coordinator::Update u;
            first->Wait(*chans[i], milliseconds(0), &u);
            received[i].insert(received[i].end(), u.tokens.begin(), u.tokens.end());
          }
        }
        // It dies with a step in flight, whose worker writes garbage rows
        // past the committed ones (the process lives on, as a worker would).
        v1::CoordinatorMessage m;
        if (first->NextMessage(*w.link, &m, milliseconds(0)) == Coordinator::Next::kMessage &&
            m.has_step()) {
          for (const v1::SeqStep& s : m.step().sequences()) FakeCompute(pool, s, true);
        }
        w.Detach();
      }  // destroyed: its clients' streams are gone, its journal stays
      if (!rows_kept) std::fill(pool.rows.begin(), pool.rows.end(), -1);
      std::unique_ptr<Coordinator> second = MakeWithJournal(rows_kept ? 7 : 8);
      ASSERT_TRUE(second);
      EXPECT_EQ(second->ListSequences().sequences_size(), int(prompts.size()));
      // Nothing is scheduled while the last coordinator's worker process lives.
      FakeWorker w2;
      ASSERT_NO_FATAL_FAILURE(w2.Attach(*second, pool, MakeHello("w1")));
      v1::CoordinatorMessage m;
      EXPECT_EQ(second->NextMessage(*w2.link, &m, milliseconds(60)), Coordinator::Next::kTimeout);
      const Readiness fenced = second->GetReadiness();
      EXPECT_FALSE(fenced.ready);
      EXPECT_THAT(fenced.reason, HasSubstr("worker process(es) of the last coordinator"));
      kill(proc, SIGKILL);
      waitpid(proc, nullptr, 0);
      for (int i = 0; i < 200 && !second->GetReadiness().ready; ++i)
        std::this_thread::sleep_for(milliseconds(5));
      EXPECT_TRUE(second->GetReadiness().ready) << second->GetReadiness().reason;
      // Clients reconnect with their request_id, the prompt and what they had.
      EXPECT_EQ(second->Resume("nobody", prompts[0], 0).status().code(),
                absl::StatusCode::kNotFound);
      EXPECT_EQ(second->Resume("r0", prompts[1], 0).status().code(),
                absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(second->Resume("r0", prompts[0], 1000).status().code(),
                absl::StatusCode::kOutOfRange);
      std::vector<std::shared_ptr<Coordinator::Channel>> chans;
      for (size_t i = 0; i < prompts.size(); ++i) {
        auto ch = second->Resume(absl::StrCat("r", i), prompts[i], int32_t(received[i].size()));
        ASSERT_TRUE(ch.ok()) << ch.status();
        chans.push_back(*ch);
      }
      EXPECT_EQ(second->Resume("r0", prompts[0], 0).status().code(), absl::StatusCode::kNotFound);
      std::vector<Coordinator::Update> out;
      ServeUntilDone(*second, {&w2}, chans, &out, /*max_idle=*/2000);
      for (size_t i = 0; i < chans.size(); ++i) {
        const std::vector<int32_t> want = Reference(prompts[i], kTokens + int(i));
        EXPECT_EQ(out[i].tokens, want) << "sequence " << i;
        EXPECT_EQ(out[i].reason, FinishReason::kLength) << "sequence " << i;
        // What the client had is the start of it: it skips those.
        ASSERT_LE(received[i].size(), want.size());
        EXPECT_TRUE(std::equal(received[i].begin(), received[i].end(), want.begin()));
        second->Release(*chans[i]);
      }
      EXPECT_EQ(second->Status().kv_blocks_used(), 0u);
      w2.Detach();
      second.reset();
      // Everything released: the journal holds nothing more.
      absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(dir_.File("journal"));
      ASSERT_TRUE(j.ok()) << j.status();
      EXPECT_TRUE(j->live().empty());
    }
  }
}

TEST_F(CoordinatorRestartTest, ASequenceNobodyResumesIsGivenUpAfterTheTimeout) {
  FakePool pool;
  {
    std::unique_ptr<Coordinator> first = MakeWithJournal(3);
    ASSERT_TRUE(first);
    FakeWorker w;
    ASSERT_NO_FATAL_FAILURE(w.Attach(*first, pool, MakeHello("w0")));
    ASSERT_TRUE(first->Admit(Req({1, 9, 9}, 40, "r0")).ok());
    w.ServeOne();
    w.Detach();
  }
  std::unique_ptr<Coordinator> second = MakeWithJournal(3, /*resume_timeout_s=*/0.2);
  ASSERT_TRUE(second);
  FakeWorker w;
  ASSERT_NO_FATAL_FAILURE(w.Attach(*second, pool, MakeHello("w0")));
  for (int i = 0; i < 100; ++i) {
    w.ServeOne();
    const v1::ListSequencesResponse list = second->ListSequences();
    bool live = false;
    for (const v1::SequenceInfo& s : list.sequences()) live |= s.state() != "FINISHED";
    if (!live) break;
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(second->Resume("r0", {1, 9, 9}, 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(second->Status().kv_blocks_used(), 0u);
  w.Detach();
}

TEST_F(CoordinatorTest, AWorkerThatAttachesAgainReplacesItsOldLink) {
  FakeWorker old_w, new_w;
  ASSERT_NO_FATAL_FAILURE(old_w.Attach(*coord_, pool_, MakeHello("w")));
  auto ch = *coord_->Admit(Req({1, 7}, 5));
  v1::CoordinatorMessage m;
  ASSERT_EQ(coord_->NextMessage(*old_w.link, &m, milliseconds(1000)), Coordinator::Next::kMessage);
  // The same id attaches again (the process restarted): the old link closes,
  // its step is discarded, the sequence resumes on the new one.
  ASSERT_NO_FATAL_FAILURE(new_w.Attach(*coord_, pool_, MakeHello("w")));
  EXPECT_EQ(old_w.closes.load(), 1);
  EXPECT_EQ(coord_->NextMessage(*old_w.link, &m, milliseconds(0)), Coordinator::Next::kClosed);
  v1::WorkerMessage late;
  late.mutable_result()->set_step_id(m.step().step_id());
  late.mutable_result()->add_next_tokens(5);
  EXPECT_FALSE(coord_->OnWorkerMessage(*old_w.link, late).ok());
  coord_->DetachWorker(*old_w.link);  // the old stream's handler ends: changes nothing

  std::vector<Coordinator::Update> out;
  RunUntilDone({&new_w}, {ch}, &out);
  EXPECT_EQ(out[0].tokens, Reference({1, 7}, 5));
  v1::StatusResponse st = coord_->Status();
  ASSERT_EQ(st.workers_size(), 1);
  EXPECT_EQ(st.workers(0).restarts(), 1);
  EXPECT_EQ(st.workers(0).state(), "ATTACHED");
  EXPECT_EQ(st.workers(0).plan().text(), "fake plan");
  EXPECT_EQ(st.workers(0).counters().steps(), uint64_t(new_w.steps));
  coord_->Release(*ch);
}

TEST_F(CoordinatorTest, AStepErrorOrAMalformedResultRemovesTheWorker) {
  for (bool malformed : {false, true}) {
    SCOPED_TRACE(malformed);
    Make();
    FakeWorker bad, good;
    ASSERT_NO_FATAL_FAILURE(bad.Attach(*coord_, pool_, MakeHello("bad")));
    auto ch = *coord_->Admit(Req({1, 9, 9}, 4));
    v1::CoordinatorMessage m;
    ASSERT_EQ(coord_->NextMessage(*bad.link, &m, milliseconds(1000)), Coordinator::Next::kMessage);
    v1::WorkerMessage reply;
    reply.mutable_result()->set_step_id(m.step().step_id());
    if (malformed) {
      reply.mutable_result()->add_next_tokens(kVocab + 5);  // outside the vocabulary
    } else {
      reply.mutable_result()->set_error("device lost");
    }
    EXPECT_FALSE(coord_->OnWorkerMessage(*bad.link, reply).ok());
    EXPECT_EQ(bad.closes.load(), 1);
    EXPECT_EQ(coord_->Status().workers(0).state(), "GONE");
    ASSERT_NO_FATAL_FAILURE(good.Attach(*coord_, pool_, MakeHello("good")));
    std::vector<Coordinator::Update> out;
    RunUntilDone({&good}, {ch}, &out);
    EXPECT_EQ(out[0].tokens, Reference({1, 9, 9}, 4));
    coord_->Release(*ch);
  }
}

TEST_F(CoordinatorTest, ASequenceThatKillsEveryWorkerEndsWithAnError) {
  Make(16, /*max_requeues=*/3);
  auto ch = *coord_->Admit(Req({1, 4}, 4));
  for (int i = 0; i < 3; ++i) {
    FakeWorker w;
    ASSERT_NO_FATAL_FAILURE(w.Attach(*coord_, pool_, MakeHello("w" + std::to_string(i))));
    ASSERT_TRUE(w.CrashMidStep());
  }
  Coordinator::Update u;
  coord_->Wait(*ch, milliseconds(1000), &u);
  EXPECT_TRUE(u.finished);
  EXPECT_THAT(u.error, HasSubstr("3 times"));
  coord_->Release(*ch);
  EXPECT_EQ(coord_->Status().kv_blocks_used(), 0u);
}

TEST_F(CoordinatorTest, DrainSendsTheDrainOnceTheWorkerIsEmpty) {
  FakeWorker w, other;
  ASSERT_NO_FATAL_FAILURE(w.Attach(*coord_, pool_, MakeHello("w")));
  auto ch = *coord_->Admit(Req({1, 8}, 6));
  ASSERT_TRUE(w.ServeOne());  // the prefill
  ASSERT_TRUE(coord_->DrainWorker("w").ok());
  EXPECT_EQ(coord_->Status().workers(0).state(), "DRAINING");
  EXPECT_EQ(coord_->DrainWorker("nope").code(), absl::StatusCode::kNotFound);
  // New work waits for another worker; the drained one finishes its own.
  auto ch2 = *coord_->Admit(Req({1, 9}, 3));
  std::vector<Coordinator::Update> out;
  RunUntilDone({&w}, {ch}, &out);
  EXPECT_EQ(out[0].tokens, Reference({1, 8}, 6));
  while (w.ServeOne()) {
  }
  EXPECT_EQ(w.drains, 1);
  EXPECT_EQ(coord_->Status().workers(0).state(), "DRAINED");
  coord_->DetachWorker(*w.link);  // the worker exits
  EXPECT_EQ(coord_->Status().workers(0).state(), "DRAINED");
  ASSERT_NO_FATAL_FAILURE(other.Attach(*coord_, pool_, MakeHello("other")));
  RunUntilDone({&other}, {ch2}, &out);
  EXPECT_EQ(out[0].tokens, Reference({1, 9}, 3));
  coord_->Release(*ch);
  coord_->Release(*ch2);
}

TEST_F(CoordinatorTest, CancelAndReleaseFreeTheSequence) {
  FakeWorker w;
  ASSERT_NO_FATAL_FAILURE(w.Attach(*coord_, pool_, MakeHello("w")));
  auto a = *coord_->Admit(Req({1, 2, 3}, 50));
  auto b = *coord_->Admit(Req({1, 2, 3}, 50));
  w.ServeOne();
  w.ServeOne();
  ASSERT_TRUE(coord_->CancelSequence(a->seq_id).ok());
  coord_->Release(*b);  // the client went away
  while (w.ServeOne()) {
  }
  Coordinator::Update u;
  coord_->Wait(*a, milliseconds(1000), &u);
  EXPECT_TRUE(u.finished);
  EXPECT_EQ(u.reason, FinishReason::kCancelled);
  coord_->Release(*a);
  v1::StatusResponse st = coord_->Status();
  EXPECT_EQ(st.kv_blocks_used(), 0u);
  EXPECT_EQ(st.running_sequences(), 0);
  EXPECT_EQ(coord_->CancelSequence(12345).code(), absl::StatusCode::kNotFound);
  v1::ListSequencesResponse ls = coord_->ListSequences();
  ASSERT_EQ(ls.sequences_size(), 2);
  EXPECT_EQ(ls.sequences(0).state(), "FINISHED");
}

TEST_F(CoordinatorTest, AdmissionErrorsAndDeadlines) {
  Make(/*max_queue=*/2);
  // No worker: requests queue (a worker may attach later) up to max_queue.
  auto a = coord_->Admit(Req({1}, 4));
  auto b = coord_->Admit(Req({1}, 4));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(coord_->Admit(Req({1}, 4)).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(coord_->Admit(Req({1, kVocab}, 4)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(coord_->Admit(Req({1}, 0)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(coord_->Status().queue_depth(), 2);
  coord_->Release(**a);
  coord_->Release(**b);
  // A deadline passes while queued: the timer drops it.
  Request r = Req({1}, 4);
  r.deadline = Coordinator::Now() + 30'000;
  auto d = coord_->Admit(std::move(r));
  ASSERT_TRUE(d.ok());
  Coordinator::Update u;
  for (int i = 0; i < 100 && !u.finished; ++i) coord_->Wait(**d, milliseconds(20), &u);
  EXPECT_TRUE(u.finished);
  EXPECT_EQ(u.reason, FinishReason::kDeadline);
  coord_->Release(**d);
}

TEST_F(CoordinatorTest, HelloIsValidated) {
  auto bad = [&](v1::Hello h) { return coord_->AttachWorker(h, [] {}).status().code(); };
  EXPECT_EQ(bad(MakeHello("")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(MakeHello(std::string(500, 'x'))), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad(MakeHello("w", -1)), absl::StatusCode::kInvalidArgument);
  v1::Hello other = MakeHello("w");
  other.set_segment("another-segment");
  EXPECT_EQ(bad(other), absl::StatusCode::kFailedPrecondition);
  // Limits below the coordinator's are honoured; tokens must cover seats.
  FakeWorker w;
  ASSERT_NO_FATAL_FAILURE(w.Attach(*coord_, pool_, MakeHello("w", 64, 4)));
  std::vector<std::shared_ptr<Coordinator::Channel>> chans;
  for (int i = 0; i < 6; ++i) chans.push_back(*coord_->Admit(Req({1, 3 + i}, 3)));
  v1::CoordinatorMessage m;
  ASSERT_EQ(coord_->NextMessage(*w.link, &m, milliseconds(1000)), Coordinator::Next::kMessage);
  int tokens = 0;
  for (const auto& s : m.step().sequences()) tokens += s.tokens_size();
  EXPECT_LE(tokens, 4);
  for (auto& c : chans) coord_->Release(*c);
}

TEST_F(CoordinatorTest, StatusRatesAndModels) {
  FakeWorker w;
  ASSERT_NO_FATAL_FAILURE(w.Attach(*coord_, pool_, MakeHello("w")));
  auto ch = *coord_->Admit(Req({1, 3}, 20));
  std::vector<Coordinator::Update> out;
  RunUntilDone({&w}, {ch}, &out);
  coord_->Release(*ch);
  std::this_thread::sleep_for(milliseconds(250));  // a rate sample or two
  v1::StatusResponse st = coord_->Status();
  EXPECT_EQ(st.segment(), "fake-segment");
  EXPECT_EQ(st.store_state(), "READY");
  EXPECT_THAT(st.model(), HasSubstr("2 layers"));
  EXPECT_EQ(st.kv_blocks_total(), uint64_t(kBlocks));
  EXPECT_GT(st.tokens_per_s(), 0);
  EXPECT_GT(st.bytes_paged_per_s(), 0);
  // A worker that pages whole layers: no expert counters, no expert metrics.
  ASSERT_EQ(st.workers_size(), 1);
  EXPECT_EQ(st.workers(0).counters().expert_hits(), 0u);
  EXPECT_THAT(coord_->RenderMetrics(),
              ::testing::Not(HasSubstr("paged_worker_expert_cache_hits_total{")));
  v1::ListModelsResponse models = coord_->ListModels();
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).name(), "fake");
  EXPECT_EQ(models.models(0).vocab_size(), kVocab);
}

// Issue 14: a worker's expert cache (its plan) and its hit counters reach
// Status as the worker reported them, and /metrics as per-worker totals.
TEST_F(CoordinatorTest, ExpertCountersReachStatusAndMetrics) {
  FakeWorker w;
  w.experts = true;
  v1::Hello hello = MakeHello("moe");
  hello.mutable_plan()->set_expert_slots(18);
  hello.mutable_plan()->set_total_experts(32);
  hello.mutable_plan()->set_expert_cache_bytes(18 * 4096);
  ASSERT_NO_FATAL_FAILURE(w.Attach(*coord_, pool_, hello));
  // Attached with an expert cache: the families are there before any step.
  EXPECT_THAT(coord_->RenderMetrics(),
              HasSubstr("paged_worker_expert_cache_hits_total{worker=\"moe\"} 0\n"));
  auto ch = *coord_->Admit(Req({1, 3}, 20));
  std::vector<Coordinator::Update> out;
  RunUntilDone({&w}, {ch}, &out);
  coord_->Release(*ch);
  ASSERT_GT(w.steps, 1);
  const uint64_t steps = uint64_t(w.steps);
  v1::StatusResponse st = coord_->Status();
  ASSERT_EQ(st.workers_size(), 1);
  EXPECT_EQ(st.workers(0).plan().expert_slots(), 18u);
  EXPECT_EQ(st.workers(0).plan().total_experts(), 32u);
  EXPECT_EQ(st.workers(0).plan().expert_cache_bytes(), 18u * 4096);
  const v1::WorkerCounters& c = st.workers(0).counters();
  EXPECT_EQ(c.expert_hits(), 3 * steps);
  EXPECT_EQ(c.expert_misses(), steps);
  EXPECT_EQ(c.expert_evictions(), steps / 2);
  EXPECT_EQ(c.h2d_expert_bytes(), 400 * steps);
  const std::string text = coord_->RenderMetrics();
  EXPECT_THAT(text, HasSubstr(absl::StrCat("paged_worker_expert_cache_hits_total{worker=\"moe\"} ",
                                           3 * steps, "\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat(
                        "paged_worker_expert_cache_misses_total{worker=\"moe\"} ", steps, "\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("paged_worker_expert_cache_evictions_total{worker="
                                           "\"moe\"} ",
                                           steps / 2, "\n")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat("paged_worker_h2d_expert_bytes_total{worker=\"moe\"} ",
                                           400 * steps, "\n")));
  EXPECT_THAT(text, HasSubstr("paged_worker_expert_host_total{worker=\"moe\"} 0\n"));
  // No hybrid step: none of its series.
  EXPECT_THAT(text, ::testing::Not(HasSubstr("paged_worker_host_share{")));
}

// The hybrid step's host bytes and share reach Status as the worker reported
// them, and /metrics as a per-worker total and gauge.
TEST_F(CoordinatorTest, HybridCountersReachStatusAndMetrics) {
  FakeWorker w;
  w.hybrid = true;
  ASSERT_NO_FATAL_FAILURE(w.Attach(*coord_, pool_, MakeHello("hyb")));
  auto ch = *coord_->Admit(Req({1, 3}, 20));
  std::vector<Coordinator::Update> out;
  RunUntilDone({&w}, {ch}, &out);
  coord_->Release(*ch);
  ASSERT_GE(w.steps, 3);
  const uint64_t steps = uint64_t(w.steps);
  v1::StatusResponse st = coord_->Status();
  ASSERT_EQ(st.workers_size(), 1);
  const v1::WorkerCounters& c = st.workers(0).counters();
  EXPECT_EQ(c.host_weight_bytes(), 700 * steps);
  EXPECT_DOUBLE_EQ(c.host_share(), 0.84);
  const std::string text = coord_->RenderMetrics();
  EXPECT_THAT(text, HasSubstr(absl::StrCat("paged_worker_host_weight_bytes_total{worker=\"hyb\"} ",
                                           700 * steps, "\n")));
  EXPECT_THAT(text, HasSubstr("paged_worker_host_share{worker=\"hyb\"} 0.84\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("paged_worker_expert_cache_hits_total{")));
}

// ---- Over gRPC: the services with a fake worker on the WorkerLink stub ----

TEST_F(CoordinatorTest, ServesOverGrpcWithAFakeWorkerAndAToken) {
  testing::TempDir dir;
  const std::string addr = "unix://" + dir.File("c.sock");
  auto server = Server::Start(coord_.get(), addr, "tok");
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());

  // The fake worker: hello, then answer every step.
  std::thread worker([&] {
    auto stub = v1::WorkerLink::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer tok");
    auto stream = stub->Attach(&ctx);
    v1::WorkerMessage hello;
    *hello.mutable_hello() = MakeHello("grpc-worker");
    ASSERT_TRUE(stream->Write(hello));
    v1::CoordinatorMessage m;
    ASSERT_TRUE(stream->Read(&m));
    EXPECT_TRUE(m.has_attached());  // the hello was accepted
    EXPECT_EQ(m.attached().segment(), "fake-segment");
    while (stream->Read(&m)) {
      if (m.has_drain()) break;
      if (!m.has_step()) continue;
      v1::WorkerMessage reply;
      reply.mutable_result()->set_step_id(m.step().step_id());
      for (const v1::SeqStep& s : m.step().sequences())
        reply.mutable_result()->add_next_tokens(FakeCompute(pool_, s));
      if (!stream->Write(reply)) break;
    }
    stream->WritesDone();
    stream->Finish();
  });

  auto inference = v1::Inference::NewStub(channel);
  auto admin = v1::Admin::NewStub(channel);
  v1::GenerateRequest req;
  req.mutable_tokens()->add_ids(1);
  req.mutable_tokens()->add_ids(11);
  req.set_max_tokens(10);
  req.set_ignore_eos(true);
  req.set_request_id("r1");
  {
    grpc::ClientContext ctx;  // no token
    auto reader = inference->Generate(&ctx, req);
    v1::GenerateResponse msg;
    EXPECT_FALSE(reader->Read(&msg));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer tok");
    v1::TokenizeResponse resp;
    EXPECT_EQ(inference->Tokenize(&ctx, v1::TokenizeRequest(), &resp).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);  // no tokenizer in this coordinator
  }
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer tok");
  auto reader = inference->Generate(&ctx, req);
  v1::GenerateResponse msg;
  std::vector<int32_t> ids;
  v1::GenerateResponse last;
  while (reader->Read(&msg)) {
    ids.insert(ids.end(), msg.token_ids().begin(), msg.token_ids().end());
    EXPECT_EQ(msg.request_id(), "r1");
    if (msg.finish_reason() != v1::GenerateResponse::FINISH_REASON_UNSPECIFIED) last = msg;
  }
  grpc::Status s = reader->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(ids, Reference({1, 11}, 10));
  EXPECT_EQ(last.finish_reason(), v1::GenerateResponse::LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 2);
  EXPECT_EQ(last.usage().generated_tokens(), 10);

  {
    grpc::ClientContext dctx;
    dctx.AddMetadata("authorization", "Bearer tok");
    v1::DrainWorkerRequest dreq;
    dreq.set_worker_id("grpc-worker");
    v1::DrainWorkerResponse dresp;
    ASSERT_TRUE(admin->DrainWorker(&dctx, dreq, &dresp).ok());
  }
  worker.join();  // the worker got its drain and left
  channel.reset();
  inference.reset();
  admin.reset();
  (*server)->Shutdown();
  EXPECT_EQ(coord_->Status().workers(0).state(), "DRAINED");
}

bool WaitFor(const std::function<bool()>& pred, double timeout_s = 20) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

int CountState(Coordinator& c, const std::string& state) {
  int n = 0;
  const v1::ListSequencesResponse seqs = c.ListSequences();
  for (const v1::SequenceInfo& s : seqs.sequences()) n += s.state() == state;
  return n;
}

// Issue 15, defect 2, in-process: a client that takes none of its tokens is
// paused after max_stream_backlog of them (its seat goes to others, its KV
// stays), and after the stall timeout its sequence is cancelled, its blocks
// freed and its call aborted (on_stalled).
TEST_F(CoordinatorTest, AClientThatDoesNotReadIsPausedThenCancelled) {
  CoordinatorOptions o = testing::FakeCoordinatorOptions();
  o.max_stream_backlog = 4;
  o.stalled_stream_timeout_s = 0.5;
  auto c = Coordinator::Create(std::move(o), nullptr);
  ASSERT_TRUE(c.ok());
  coord_ = std::move(*c);
  FakeWorker w;
  w.Attach(*coord_, pool_, MakeHello("w0", /*seqs=*/1));  // one seat
  std::atomic<int> stalled{0};
  auto slow = coord_->Admit(Req({1, 7}, 60), nullptr, [&] { ++stalled; });
  ASSERT_TRUE(slow.ok());
  ASSERT_TRUE(WaitFor([&] {
    w.ServeOne();
    return CountState(*coord_, "PAUSED") == 1;
  }));
  const v1::ListSequencesResponse seqs = coord_->ListSequences();
  ASSERT_EQ(seqs.sequences_size(), 1);
  EXPECT_EQ(seqs.sequences(0).generated_tokens(), 4);
  // Another client is served meanwhile, on the seat the paused one left.
  auto other = coord_->Admit(Req({1, 9}, 10));
  ASSERT_TRUE(other.ok());
  std::vector<Coordinator::Update> out;
  RunUntilDone({&w}, {*other}, &out);
  EXPECT_EQ(out[0].tokens, Reference({1, 9}, 10));
  EXPECT_GT(coord_->Status().kv_blocks_used(), 0u);  // the paused one keeps its KV
  // It never reads: cancelled, its blocks freed, its call aborted.
  ASSERT_TRUE(WaitFor([&] { return stalled.load() == 1; }, 30));
  Coordinator::Update u;
  coord_->Wait(**slow, milliseconds(0), &u);
  EXPECT_TRUE(u.finished);
  EXPECT_EQ(u.reason, FinishReason::kCancelled);
  EXPECT_EQ(u.tokens.size(), 4u);
  EXPECT_EQ(coord_->Status().kv_blocks_used(), 0u);
  coord_->Release(**slow);
}

TEST_F(CoordinatorTest, AClientThatReadsAgainResumesWithTheSameTokens) {
  CoordinatorOptions o = testing::FakeCoordinatorOptions();
  o.max_stream_backlog = 3;
  auto c = Coordinator::Create(std::move(o), nullptr);
  ASSERT_TRUE(c.ok());
  coord_ = std::move(*c);
  FakeWorker w;
  w.Attach(*coord_, pool_, MakeHello("w0"));
  auto ch = coord_->Admit(Req({1, 7}, 40));
  ASSERT_TRUE(ch.ok());
  ASSERT_TRUE(WaitFor([&] {
    w.ServeOne();
    return CountState(*coord_, "PAUSED") == 1;
  }));
  std::vector<Coordinator::Update> out;
  RunUntilDone({&w}, {*ch}, &out);  // takes its tokens: resumes
  EXPECT_EQ(out[0].tokens, Reference({1, 7}, 40));
  EXPECT_EQ(out[0].reason, FinishReason::kLength);
}

// Issue 15, defect 9: ready only with a worker attached and the store READY
// with its process alive; live while the timer loop turns, which is also
// where the watchdog is pinged: a loop that hangs stops both.
TEST_F(CoordinatorTest, ReadinessLivenessAndTheLoopsPings) {
  // What the coordinator's loop reads, shared with it: the fixture's
  // coordinator outlives this body's locals, and its loop keeps calling
  // the probe until it is destroyed (a reference to a local here once read
  // a dead stack slot as `wedged` and hung the fixture's teardown).
  struct Loop {
    std::atomic<int> ticks{0};
    std::atomic<bool> store_alive{true}, wedge{false};
  };
  const auto loop = std::make_shared<Loop>();
  std::atomic<int>& ticks = loop->ticks;
  std::atomic<bool>& store_alive = loop->store_alive;
  std::atomic<bool>& wedge = loop->wedge;
  CoordinatorOptions o = testing::FakeCoordinatorOptions();
  o.on_tick = [loop] { ++loop->ticks; };
  o.store_probe = [loop] {
    while (loop->wedge.load()) std::this_thread::sleep_for(milliseconds(5));  // a hung loop
    StoreHealth h;
    h.alive = loop->store_alive.load();
    h.pid = h.alive ? 42 : 0;
    return h;
  };
  auto c = Coordinator::Create(std::move(o), nullptr);
  ASSERT_TRUE(c.ok());
  coord_ = std::move(*c);
  ASSERT_TRUE(WaitFor([&] { return coord_->Live(1.0) && ticks.load() > 2; }));
  Readiness r = coord_->GetReadiness();
  EXPECT_FALSE(r.ready);
  EXPECT_EQ(r.reason, "no worker is attached");
  std::vector<bool> told;
  coord_->SetReadinessListener([&](bool ready) { told.push_back(ready); });
  FakeWorker w;
  w.Attach(*coord_, pool_, MakeHello("w0"));
  ASSERT_TRUE(WaitFor([&] { return coord_->GetReadiness().ready; }));
  ASSERT_TRUE(WaitFor([&] { return told.size() >= 2; }));
  EXPECT_EQ(told, (std::vector<bool>{false, true}));
  v1::StatusResponse st = coord_->Status();
  EXPECT_TRUE(st.ready());
  EXPECT_TRUE(st.store_alive());
  EXPECT_EQ(st.store_pid(), 42);
  // The store process dies: not ready (within the probe's second), saying why.
  store_alive = false;
  ASSERT_TRUE(WaitFor([&] { return !coord_->GetReadiness().ready; }, 10));
  EXPECT_THAT(coord_->GetReadiness().reason, HasSubstr("no paged-store process holds segment"));
  EXPECT_FALSE(coord_->Status().store_alive());
  // The loop hangs: no more ticks (no watchdog pings), not live.
  wedge = true;
  std::this_thread::sleep_for(milliseconds(1200));  // inside the wedged probe by now
  const int frozen = ticks.load();
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(ticks.load(), frozen);
  EXPECT_FALSE(coord_->Live(0.2));
  wedge = false;
  ASSERT_TRUE(WaitFor([&] { return coord_->Live(0.5); }));
  coord_->ClearReadinessListener();
}

// grpc.health.v1.Health/Check of `service` through a generic call: 1 SERVING,
// 2 NOT_SERVING, 0 unknown service, -1 another error.
int HealthOf(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  grpc::GenericStub stub(channel);
  std::string req;
  if (!service.empty()) req = std::string(1, '\x0a') + char(service.size()) + service;
  grpc::Slice slice(req);
  grpc::ByteBuffer in(&slice, 1), out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &in, &out,
                 [&](grpc::Status s) { done.set_value(s); });
  const grpc::Status s = done.get_future().get();
  if (!s.ok()) return s.error_code() == grpc::StatusCode::NOT_FOUND ? 0 : -1;
  std::vector<grpc::Slice> slices;
  if (!out.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const grpc::Slice& x : slices)
    bytes.append(reinterpret_cast<const char*>(x.begin()), x.size());
  return bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : -1;
}

// Issue 15, defects 2, 9 and 10 over a real gRPC server: streams whose
// clients never read are paused and then cancelled while a reading client
// is served; health per service follows readiness; a string field with
// invalid UTF-8 is INVALID_ARGUMENT naming the field.
TEST(CoordinatorGrpcTest, UnreadStreamsHealthAndInvalidUtf8) {
  CoordinatorOptions o = testing::FakeCoordinatorOptions(/*max_queue=*/64);
  o.model.max_context = 8192;
  o.scheduler = SchedulerConfigForModel(o.model);
  o.scheduler.block_tokens = 16;
  o.scheduler.total_blocks = 2048;
  o.scheduler.max_step_tokens = 64;
  o.scheduler.max_seqs_per_step = 8;
  o.max_stream_backlog = 64;
  o.stalled_stream_timeout_s = 1.0;
  auto coord = Coordinator::Create(std::move(o), nullptr);
  ASSERT_TRUE(coord.ok());
  testing::TempDir dir;
  const std::string addr = "unix://" + dir.File("c.sock");
  auto server = Server::Start(coord->get(), addr, "");
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  EXPECT_EQ(HealthOf(channel, "paged.v1.Admin"), 1);
  EXPECT_EQ(HealthOf(channel, "paged.v1.WorkerLink"), 1);
  EXPECT_EQ(HealthOf(channel, "paged.v1.Inference"), 2);  // no worker yet
  EXPECT_EQ(HealthOf(channel, ""), 2);

  // A worker answering every token with 5 (no pool: long sequences).
  std::atomic<bool> stop{false};
  grpc::ClientContext wctx;
  struct Joiner {
    std::atomic<bool>& stop;
    grpc::ClientContext& ctx;
    std::thread& t;
    ~Joiner() {
      stop = true;
      ctx.TryCancel();
      if (t.joinable()) t.join();
    }
  };
  std::thread worker;
  Joiner joiner{stop, wctx, worker};
  worker = std::thread([&] {
    auto stub = v1::WorkerLink::NewStub(channel);
    auto stream = stub->Attach(&wctx);
    v1::WorkerMessage hello;
    *hello.mutable_hello() = MakeHello("w0", 8, 64);
    ASSERT_TRUE(stream->Write(hello));
    v1::CoordinatorMessage m;
    while (!stop && stream->Read(&m)) {
      if (!m.has_step()) continue;
      v1::WorkerMessage reply;
      reply.mutable_result()->set_step_id(m.step().step_id());
      for (int i = 0; i < m.step().sequences_size(); ++i)
        reply.mutable_result()->add_next_tokens(5);
      if (!stream->Write(reply)) break;
    }
  });
  ASSERT_TRUE(WaitFor([&] { return HealthOf(channel, "paged.v1.Inference") == 1; }));
  EXPECT_EQ(HealthOf(channel, ""), 1);

  // Clients that do not read: a small receive window that does not grow
  // (no BDP probing), so the server's writes block after a few kB.
  grpc::ChannelArguments small;
  small.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  small.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8192);
  auto unread_channel = grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), small);
  auto unread_stub = v1::Inference::NewStub(unread_channel);
  auto inference = v1::Inference::NewStub(channel);
  v1::GenerateRequest big;
  big.mutable_tokens()->add_ids(1);
  big.set_max_tokens(6000);
  big.set_ignore_eos(true);
  // Every message carries the request id: large messages fill gRPC's
  // buffers (flow-control window and write buffer) after a few hundred.
  big.set_request_id(std::string(256, 'r'));
  constexpr int kUnread = 4;
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> unread;
  for (int i = 0; i < kUnread; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    unread.push_back(unread_stub->Generate(ctxs.back().get(), big));  // never Read
  }
  ASSERT_TRUE(WaitFor([&] { return CountState(**coord, "PAUSED") == kUnread; }, 60))
      << (*coord)->ListSequences().DebugString();
  // A reading client is served while they hold their KV.
  {
    v1::GenerateRequest req;
    req.mutable_tokens()->add_ids(1);
    req.set_max_tokens(10);
    req.set_ignore_eos(true);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto reader = inference->Generate(&ctx, req);
    v1::GenerateResponse msg;
    int tokens = 0;
    while (reader->Read(&msg)) tokens += msg.token_ids_size();
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_EQ(tokens, 10);
  }
  // Never read: cancelled after the stall timeout, every KV block freed.
  ASSERT_TRUE(WaitFor([&] { return CountState(**coord, "PAUSED") == 0; }, 30));
  ASSERT_TRUE(WaitFor([&] { return (*coord)->Status().kv_blocks_used() == 0; }, 10));
  for (int i = 0; i < kUnread; ++i) {
    ctxs[size_t(i)]->TryCancel();
    unread[size_t(i)]->Finish();
  }

  // Invalid UTF-8 in a string field: INVALID_ARGUMENT saying which.
  {
    v1::GenerateRequest bad;
    bad.set_text("ok \xff\xfe");
    bad.set_max_tokens(2);
    grpc::ClientContext ctx;
    auto reader = inference->Generate(&ctx, bad);
    v1::GenerateResponse msg;
    EXPECT_FALSE(reader->Read(&msg));
    const grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("paged.v1.GenerateRequest.text"));
    EXPECT_THAT(s.error_message(), HasSubstr("UTF-8"));
  }
  {
    v1::TokenizeRequest bad;
    bad.set_text("\xc3");
    v1::TokenizeResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = inference->Tokenize(&ctx, bad, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("UTF-8"));
  }
  stop = true;
  wctx.TryCancel();
  worker.join();
  (*server)->Shutdown();
  EXPECT_EQ(HealthOf(channel, "paged.v1.Admin"), -1);  // the server is gone
}

// ---- Request parsing ----

TEST(GenerateRequestTest, ChecksWhatTheSchedulerCannot) {
  v1::GenerateRequest r;
  EXPECT_THAT(ParseGenerateRequest(r, {}, 7).status().message(), HasSubstr("prompt is required"));
  r.set_text("");
  EXPECT_EQ(ParseGenerateRequest(r, {}, 7).status().code(), absl::StatusCode::kInvalidArgument);
  r.set_text("hello");
  EXPECT_EQ(ParseGenerateRequest(r, {}, 7).status().code(), absl::StatusCode::kFailedPrecondition);
  r.set_text(std::string(kMaxPromptTextBytes + 1, 'a'));
  EXPECT_EQ(ParseGenerateRequest(r, {}, 7).status().code(), absl::StatusCode::kInvalidArgument);
  r.mutable_tokens()->add_ids(1);
  r.set_max_tokens(3);
  auto ok = ParseGenerateRequest(r, {}, 7);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->request.sampling.seed, 7u);    // none given: the random one
  EXPECT_EQ(ok->request.sampling.top_p, 1.f);  // 0: off
  r.mutable_sampling()->set_seed(42);
  r.mutable_sampling()->set_top_p(0.5f);
  ok = ParseGenerateRequest(r, {}, 7);
  EXPECT_EQ(ok->request.sampling.seed, 42u);
  EXPECT_EQ(ok->request.sampling.top_p, 0.5f);
  r.add_stop_strings("");
  EXPECT_THAT(ParseGenerateRequest(r, {}, 7).status().message(),
              HasSubstr("stop string 0 is empty"));
  r.clear_stop_strings();
  for (size_t i = 0; i <= kMaxStopStrings; ++i) r.add_stop_strings("x");
  EXPECT_EQ(ParseGenerateRequest(r, {}, 7).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Text stream ----

TEST(TextStreamTest, HoldsBackIncompleteUtf8AndStopStringPrefixes) {
  TextStream t({"END"});
  EXPECT_FALSE(t.Append("Hello E"));
  EXPECT_EQ(t.TakeReady(), "Hello ");  // "E" may start "END"
  EXPECT_FALSE(t.Append("x"));
  EXPECT_EQ(t.TakeReady(), "Ex");
  EXPECT_FALSE(t.Append("\xE2\x96"));  // the first two bytes of U+2581
  EXPECT_EQ(t.TakeReady(), "");
  EXPECT_FALSE(t.Append("\x81 E"));
  EXPECT_EQ(t.TakeReady(), "\xE2\x96\x81 ");
  EXPECT_TRUE(t.Append("NDafter"));  // the stop string spans two pieces
  EXPECT_EQ(t.TakeReady(), "");
  EXPECT_TRUE(t.stopped());
  EXPECT_TRUE(t.Append("more"));
  EXPECT_EQ(t.TakeAll(), "");

  TextStream plain;
  plain.Append("a\xFF");
  EXPECT_EQ(plain.TakeReady(), "a\xEF\xBF\xBD");  // invalid bytes become U+FFFD
  plain.Append("\xF0\x9F");
  EXPECT_EQ(plain.TakeReady(), "");
  EXPECT_EQ(plain.TakeAll(), "\xEF\xBF\xBD\xEF\xBF\xBD");  // cut off at the end
  EXPECT_EQ(CompleteUtf8Prefix("ab\xC3"), 2u);
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // no surrogates
}

}  // namespace
}  // namespace paged
