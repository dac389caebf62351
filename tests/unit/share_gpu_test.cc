// Two workers sharing one GPU through CUDA IPC (label gpu; skips without a
// GPU). A child process (this binary re-executed) plays the first worker: it
// keeps every layer of stories260K resident and publishes them on the share
// board. This process then pages nothing and allocates no layer of its own,
// gives the reference transcript, and keeps giving it after the first worker
// is SIGKILLed (the driver keeps exported memory alive while an importer
// holds it). A third pager started after the kill gets the blocks from the
// board through the survivor's holding, or makes its own: same tokens. A
// pager may also copy the shared layers into its slots device-to-device
// (the peer path, measured against the host link).
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/unit/pager_util.h"
#include "worker/device.h"
#include "worker/engine/backend_factory.h"
#include "worker/engine/generator.h"
#include "worker/offline/owned_image.h"
#include "worker/pager/pager.h"
#include "worker/pager/planner.h"
#include "worker/pager/share_board.h"

extern char** environ;

namespace paged {
namespace {

constexpr char kChildEnv[] = "PAGED_SHARE_GPU_CHILD_SEGMENT";

bool HaveGpu() { return !ListGpus().empty() && MakeBackend("cuda:0").ok(); }

MemoryPlan PlanFor(const OwnedImage& img, const std::string& resident) {
  PlanLimits l = testing::SmallLimits(1024 * testing::kMiB);
  l.resident = resident;
  auto p = PlanMemory(*img.image().header, l);
  EXPECT_TRUE(p.ok()) << p.status();
  return *p;
}

PagerOptions Sharing(const std::string& segment) {
  PagerOptions o;
  o.share_segment = segment;
  o.share_generation = 1;
  return o;
}

std::vector<int32_t> Generate200(Engine& engine, const OwnedImage& img) {
  GenerateRequest req;
  req.prompt = {1};
  req.max_new_tokens = 200;
  req.stop_at_eos = false;
  auto r = Generate(engine, req, img.image().header->kv_n_blocks);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->tokens : std::vector<int32_t>{};
}

// The first worker, in the child: publish every layer, say so, wait for EOF.
TEST(ShareGpuChild, PublishAndWait) {
  const char* segment = std::getenv(kChildEnv);
  if (segment == nullptr) GTEST_SKIP() << "runs only as the child of ShareGpuTest";
  auto img = testing::StoriesImage("f16");
  auto backend = MakeBackend("cuda:0");
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto pager = Pager::Create(backend->get(), img->image(), PlanFor(*img, "all"), Sharing(segment));
  ASSERT_TRUE(pager.ok()) << pager.status();
  std::printf("published %d\n", (*pager)->sharing().layers_published);
  std::fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
}

class ShareGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv(kChildEnv) != nullptr) GTEST_SKIP();
    if (!HaveGpu()) GTEST_SKIP() << "no GPU";
    PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
    segment_ = absl::StrCat("share-gpu-test-", getpid());
    // Both tests: the reference transcript, then the first worker, then this
    // process's backend on the same GPU.
    reference_ = testing::GenerateStories(nullptr, "cuda:0", "f16").tokens;
    ASSERT_EQ(reference_.size(), 200u);
    img_ = testing::StoriesImage("f16");
    n_layers_ = img_->image().header->model.n_layers;
    ASSERT_EQ(StartFirstWorker(), n_layers_);
    auto backend = MakeBackend("cuda:0");
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = std::move(*backend);
    uuid_ = backend_->device_uuid();
    ASSERT_FALSE(uuid_.empty());
  }
  void TearDown() override {
    if (child_ > 0) {
      kill(child_, SIGKILL);
      waitpid(child_, nullptr, 0);
    }
    if (!uuid_.empty()) ShareBoard::Remove(segment_, uuid_);
  }
  // Starts the first worker; returns the layers it published.
  int StartFirstWorker() {
    int to_child[2], from_child[2];
    EXPECT_EQ(pipe(to_child), 0);
    EXPECT_EQ(pipe(from_child), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, to_child[0], 0);
    posix_spawn_file_actions_adddup2(&fa, from_child[1], 1);
    posix_spawn_file_actions_addclose(&fa, to_child[1]);
    posix_spawn_file_actions_addclose(&fa, from_child[0]);
    const std::string env_kv = absl::StrCat(kChildEnv, "=", segment_);
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
    env.push_back(const_cast<char*>(env_kv.c_str()));
    env.push_back(nullptr);
    std::string self = "/proc/self/exe", filter = "--gtest_filter=ShareGpuChild.*";
    char* argv[] = {self.data(), filter.data(), nullptr};
    EXPECT_EQ(posix_spawn(&child_, "/proc/self/exe", &fa, nullptr, argv, env.data()), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(to_child[0]);
    close(from_child[1]);
    child_stdin_ = to_child[1];
    FILE* out = fdopen(from_child[0], "r");
    char line[256];
    int published = -1;
    while (fgets(line, sizeof line, out) != nullptr) {
      if (std::sscanf(line, "published %d", &published) == 1) break;
    }
    fclose(out);
    return published;
  }
  std::string segment_, uuid_;
  std::vector<int32_t> reference_;
  std::unique_ptr<OwnedImage> img_;
  int n_layers_ = 0;
  std::unique_ptr<Backend> backend_;
  pid_t child_ = -1;
  int child_stdin_ = -1;
};

TEST_F(ShareGpuTest, ASecondWorkerUsesTheFirstOnesLayersAndOutlivesIt) {
  auto pager =
      Pager::Create(backend_.get(), img_->image(), PlanFor(*img_, "none"), Sharing(segment_));
  ASSERT_TRUE(pager.ok()) << pager.status();
  EXPECT_TRUE((*pager)->sharing().globals_shared);
  EXPECT_EQ((*pager)->sharing().layers_shared, n_layers_);
  Engine engine(backend_.get(), pager->get(), img_->image().config(),
                int(img_->image().header->block_tokens));
  EXPECT_EQ(Generate200(engine, *img_), reference_);
  EXPECT_EQ((*pager)->stats().h2d_weight_bytes, 0u);
  // No globals and no slots of its own: only the KV areas and cache.
  const MemoryPlan plan = (*pager)->plan();
  EXPECT_EQ((*pager)->device_bytes(), uint64_t(std::max(plan.slots, 2)) *
                                              std::max<uint64_t>(plan.slot_kv_blocks, 1) *
                                              img_->image().header->kv_block_bytes +
                                          plan.kv_cache_bytes);

  // The first worker dies without a word.
  ASSERT_EQ(kill(child_, SIGKILL), 0);
  ASSERT_EQ(waitpid(child_, nullptr, 0), child_);
  child_ = -1;
  EXPECT_EQ(Generate200(engine, *img_), reference_) << "the survivor's imported layers stay valid";

  // A worker starting now finds the board entries live through the survivor.
  const MemoryPlan none = PlanFor(*img_, "none");
  const testing::PagedRun late =
      testing::GenerateStories(&none, "cuda:0", "f16", Sharing(segment_));
  EXPECT_EQ(late.tokens, reference_);
  std::printf("a worker started after the exporter died: %s\n", late.sharing.Describe().c_str());
}

TEST_F(ShareGpuTest, SharedLayersCopiedDeviceToDeviceLikeAPeers) {
  PagerOptions o = Sharing(segment_);
  o.shared_in_place = false;
  const MemoryPlan none = PlanFor(*img_, "none");
  // auto: the choice follows the measurement (stories260K's blocks are tiny,
  // both links latency-bound; the 7B benchmark measures bandwidth).
  const testing::PagedRun run = testing::GenerateStories(&none, "cuda:0", "f16", o);
  EXPECT_EQ(run.tokens, reference_);
  EXPECT_EQ(run.sharing.peer_layers, n_layers_);
  EXPECT_EQ(run.sharing.peer_used, run.sharing.peer_gbps > run.sharing.host_gbps)
      << run.sharing.Describe();
  EXPECT_EQ(run.stats.h2d_weight_bytes == 0u, run.sharing.peer_used);
  std::printf("%s\n", run.sharing.Describe().c_str());
  // force: every weight byte from the other copy, same tokens.
  o.peer_copies = PagerOptions::PeerCopies::kForce;
  const testing::PagedRun forced = testing::GenerateStories(&none, "cuda:0", "f16", o);
  EXPECT_EQ(forced.tokens, reference_);
  EXPECT_EQ(forced.stats.h2d_weight_bytes, 0u);
  EXPECT_GT(forced.stats.peer_weight_bytes, 0u);
}

}  // namespace
}  // namespace paged
