// paged-store and paged-worker as separate processes: the worker maps the
// segment (weights read-only, KV read-write), plans its budget, pages every
// layer through two slots on the CPU backend and reproduces the stories260K
// greedy tokens; a budget too small for two slots is a clear error at start.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>

#include "tests/unit/test_util.h"

namespace paged {
namespace {

using testing::BinaryPath;
using ::testing::HasSubstr;
using testing::RunCommand;
using testing::Subprocess;

class WorkerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
    segment_ = testing::UniqueSegmentName("worker");
    store_ = std::make_unique<Subprocess>(std::vector<std::string>{
        BinaryPath("paged-store"), "--model=" + testing::Stories260KPath(), "--segment=" + segment_,
        "--weight-format=f32", "--kv-gib=0.01", "--remove-on-exit"});
    ASSERT_TRUE(store_->WaitForLine("ready")) << store_->output();
  }
  void TearDown() override {
    if (store_) {
      EXPECT_EQ(store_->Signal(SIGTERM), 0);
    }
  }
  std::string segment_;
  std::unique_ptr<Subprocess> store_;
};

TEST_F(WorkerProcessTest, PagedWorkerReproducesTheTranscriptStart) {
  for (const char* resident : {"none", "2", "all"}) {
    auto [rc, out] = RunCommand({BinaryPath("paged-worker"), "--segment=" + segment_,
                                 "--device=cpu", "--gpu-budget=200MiB",
                                 std::string("--resident=") + resident, "--check-tokens=12"});
    EXPECT_EQ(rc, 0) << out;
    EXPECT_THAT(out, HasSubstr("memory plan"));
    EXPECT_THAT(out,
                HasSubstr("self-check tokens: 403 407 261 378 432 383 286 261 376 298 315 421"))
        << resident;
  }
}

TEST_F(WorkerProcessTest, ABudgetTooSmallForTwoSlotsFailsAtStart) {
  auto [rc, out] =
      RunCommand({BinaryPath("paged-worker"), "--segment=" + segment_, "--gpu-budget=1MiB"});
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(out, HasSubstr("--gpu-budget=1.00 MiB is too small"));
  auto [rc2, out2] =
      RunCommand({BinaryPath("paged-worker"), "--segment=" + segment_, "--gpu-budget=lots"});
  EXPECT_EQ(rc2, 2);
  EXPECT_THAT(out2, HasSubstr("--gpu-budget=lots"));
  auto [rc3, out3] = RunCommand({BinaryPath("paged-worker"), "--segment=no-such-segment-xyz"});
  EXPECT_EQ(rc3, 1);
  EXPECT_THAT(out3, HasSubstr("does not exist"));
  auto [rc4, out4] =
      RunCommand({BinaryPath("paged-worker"), "--segment=" + segment_, "--share=maybe"});
  EXPECT_EQ(rc4, 1);
  EXPECT_THAT(out4, HasSubstr("--share must be auto, on or off, not \"maybe\""));
  auto [rc5, out5] =
      RunCommand({BinaryPath("paged-worker"), "--segment=" + segment_, "--peer-copies=nvlink"});
  EXPECT_EQ(rc5, 2);
  EXPECT_THAT(out5, HasSubstr("--peer-copies must be auto, off or force"));
  auto [rc6, out6] =
      RunCommand({BinaryPath("paged-worker"), "--segment=" + segment_, "--host-activations=int8"});
  EXPECT_EQ(rc6, 1);
  EXPECT_THAT(out6, HasSubstr("--host-activations=int8: f32 or q8"));
  auto [rc7, out7] =
      RunCommand({BinaryPath("paged-worker"), "--segment=" + segment_, "--expert-misses=pinned"});
  EXPECT_EQ(rc7, 2);
  EXPECT_THAT(out7, HasSubstr("--expert-misses=pinned: expected copy or mapped"));
  auto [rc8, out8] =
      RunCommand({BinaryPath("paged-worker"), "--segment=" + segment_, "--expert-host-share=2"});
  EXPECT_EQ(rc8, 2);
  EXPECT_THAT(out8, HasSubstr("--expert-host-share=2: expected 0..1, or -1"));
}

TEST_F(WorkerProcessTest, CpuWorkersDoNotShareUnlessAsked) {
  auto [rc, out] = RunCommand({BinaryPath("paged-worker"), "--segment=" + segment_, "--device=cpu",
                               "--gpu-budget=200MiB", "--check-tokens=4"});
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("sharing: off"));
  // Asked: a CPU worker shares within its own process only, so a second one
  // finds nothing of the first's (and each makes its own copy).
  auto [rc2, out2] =
      RunCommand({BinaryPath("paged-worker"), "--segment=" + segment_, "--device=cpu",
                  "--gpu-budget=200MiB", "--resident=all", "--share=on", "--check-tokens=4"});
  EXPECT_EQ(rc2, 0) << out2;
  EXPECT_THAT(out2, HasSubstr("sharing: globals own, 0 layers used in place"));
  EXPECT_THAT(out2, HasSubstr("self-check tokens: 403 407 261 378"));
}

// Issue 16: a worker whose step limits are left at auto asks the
// coordinator's caps before it plans, sizes its KV area from them and the
// model's context, and announces that area in its hello.
TEST_F(WorkerProcessTest, AutoStepLimitsTakeTheCoordinatorsCapsAndTheKvAreaIsAnnounced) {
  testing::TempDir dir;
  const std::string addr = "unix://" + dir.File("c.sock");
  Subprocess paged({BinaryPath("paged"), "--segment=" + segment_, "--listen=" + addr,
                    "--max-step-tokens=96", "--max-seqs-per-step=3"});
  ASSERT_TRUE(paged.WaitForLine("listening on", 30)) << paged.output();
  Subprocess worker({BinaryPath("paged-worker"), "--segment=" + segment_, "--device=cpu",
                     "--gpu-budget=200MiB", "--threads=1", "--coordinator=" + addr,
                     "--worker-id=w-auto"});
  ASSERT_TRUE(worker.WaitForLine("attached to", 60)) << worker.output();
  EXPECT_THAT(worker.output(),
              HasSubstr("step limits: 96 tokens, 3 sequences, auto from the coordinator's caps"));
  EXPECT_THAT(worker.output(), HasSubstr("96 tokens, 3 sequences)"));  // the workspace's step
  // Every layer resident at this budget: the area is all a step can read,
  // 3 sequences at the model's 2048 positions (128 blocks of 16 each).
  EXPECT_THAT(worker.output(),
              HasSubstr("384 blocks  (per layer, a step's most: auto: all a step can read, 3 "
                        "sequences x 2048 tokens)"));
  EXPECT_TRUE(
      paged.WaitForLine("worker w-auto attached (cpu, 3 seqs, 96 tokens, 384 KV blocks", 30))
      << paged.output();
  EXPECT_EQ(worker.Signal(SIGTERM), 0) << worker.output();
  EXPECT_EQ(paged.Signal(SIGTERM), 0) << paged.output();
}

}  // namespace
}  // namespace paged
