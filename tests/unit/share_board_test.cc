// The share board (worker/pager/share_board.h) and the pager's use of it, on
// the CPU backend: a board entry lives while a holder process does; a second
// pager of the same device uses the first one's blocks in place (no second
// copy, identical tokens) or copies them into its slots like a peer's.
#include "worker/pager/share_board.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/unit/pager_util.h"
#include "worker/backends/cpu/cpu_backend.h"
#include "worker/engine/backend_factory.h"
#include "worker/offline/owned_image.h"
#include "worker/pager/pager.h"
#include "worker/pager/planner.h"

namespace paged {
namespace {

using testing::kMiB;
using testing::PagedRun;
using testing::SmallLimits;
using testing::StoriesImage;

class ShareBoardTest : public ::testing::Test {
 protected:
  void SetUp() override { segment_ = absl::StrCat("share-test-", getpid(), "-", counter_++); }
  void TearDown() override {
    for (const char* dev : {"dev-a", "dev-b", "dev-c"}) ShareBoard::Remove(segment_, dev);
  }
  std::string segment_;
  static inline int counter_ = 0;
};

TEST_F(ShareBoardTest, NameIsSanitized) {
  EXPECT_EQ(ShareBoard::NameFor("paged", "GPU-12ab-34"), "/paged.share.GPU-12ab-34");
  EXPECT_EQ(ShareBoard::NameFor("/a/b", "x y"), "/a_b.share.x_y");
}

TEST_F(ShareBoardTest, PublishedEntryIsLiveWhileItsHolderIs) {
  auto b = ShareBoard::Open(segment_, 7, "dev-a", 5);
  ASSERT_TRUE(b.ok()) << b.status();
  ShareBoard::Lock lock(**b);
  EXPECT_FALSE((*b)->LiveHandle(2).has_value());
  ASSERT_TRUE((*b)->Publish(2, "handle-2", 100).ok());
  EXPECT_EQ((*b)->LiveHandle(2).value_or(""), "handle-2");
  EXPECT_FALSE((*b)->Publish(5, "x", 1).ok());                    // no such entry
  EXPECT_FALSE((*b)->Publish(1, std::string(200, 'h'), 1).ok());  // handle too long
  (*b)->RemoveHolder(2);
  EXPECT_FALSE((*b)->LiveHandle(2).has_value());
}

TEST_F(ShareBoardTest, TheLastHolderOutRemovesTheBoard) {
  const std::string path = "/dev/shm" + ShareBoard::NameFor(segment_, "dev-a");
  {
    auto b = ShareBoard::Open(segment_, 7, "dev-a", 5);
    ASSERT_TRUE(b.ok());
    ShareBoard::Lock lock(**b);
    ASSERT_TRUE((*b)->Publish(0, "h", 1).ok());
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(ShareBoardTest, AnEntryWhoseHoldersAllDiedIsNotLive) {
  // A child process publishes and exits without cleaning up (as a crash would).
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto b = ShareBoard::Open(segment_, 7, "dev-a", 5);
    if (!b.ok()) _exit(1);
    {
      ShareBoard::Lock lock(**b);
      if (!(*b)->Publish(3, "from-child", 1).ok()) _exit(2);
    }
    _exit(0);  // no destructors: the child stays recorded as the holder
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto b = ShareBoard::Open(segment_, 7, "dev-a", 5);
  ASSERT_TRUE(b.ok()) << b.status();
  ShareBoard::Lock lock(**b);
  EXPECT_FALSE((*b)->LiveHandle(3).has_value());
  // An importer that is alive keeps an entry live after its exporter died.
  ASSERT_TRUE((*b)->Publish(4, "mine", 1).ok());
  EXPECT_TRUE((*b)->LiveHandle(4).has_value());
}

TEST_F(ShareBoardTest, AnotherGenerationResetsTheBoard) {
  auto keep = ShareBoard::Open(segment_, 7, "dev-a", 5);
  ASSERT_TRUE(keep.ok());
  {
    ShareBoard::Lock lock(**keep);
    ASSERT_TRUE((*keep)->Publish(1, "h", 1).ok());
  }
  auto other = ShareBoard::Open(segment_, 8, "dev-a", 5);  // the store reloaded
  ASSERT_TRUE(other.ok());
  ShareBoard::Lock lock(**other);
  EXPECT_FALSE((*other)->LiveHandle(1).has_value());
}

TEST_F(ShareBoardTest, PeersAreTheBoardsOfOtherDevicesOfTheSameGeneration) {
  auto a = ShareBoard::Open(segment_, 7, "dev-a", 5);
  auto b = ShareBoard::Open(segment_, 7, "dev-b", 5);
  auto c = ShareBoard::Open(segment_, 6, "dev-c", 5);  // stale generation
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  auto peers = ShareBoard::OpenPeers(segment_, 7, "dev-a", 5);
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_EQ(peers[0]->device_uuid(), "dev-b");
  EXPECT_TRUE(ShareBoard::OpenPeers(segment_, 7, "dev-a", 6).empty());  // another layout
}

TEST(ProcessStartTimeTest, KnowsLiveAndDeadProcesses) {
  EXPECT_TRUE(ProcessStartTime(getpid()).has_value());
  EXPECT_FALSE(ProcessStartTime(0x7ffffff0).has_value());
}

// ---- the pager ---------------------------------------------------------------

class PagerSharingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
    reference_ = testing::GenerateStories(nullptr, "cpu", "f32");
    ASSERT_EQ(reference_.tokens.size(), 200u);
    image_ = StoriesImage();
    segment_ = absl::StrCat("share-pager-test-", getpid());
  }
  void TearDown() override {
    if (!segment_.empty()) {
      auto backend = MakeBackend("cpu", 1);
      if (backend.ok()) ShareBoard::Remove(segment_, (*backend)->device_uuid());
    }
  }
  MemoryPlan Plan(const std::string& resident) {
    PlanLimits l = SmallLimits(4096 * kMiB);
    l.resident = resident;
    auto p = PlanMemory(*image_->image().header, l);
    EXPECT_TRUE(p.ok()) << p.status();
    return *p;
  }
  PagerOptions Sharing() {
    PagerOptions o;
    o.share_segment = segment_;
    o.share_generation = 1;
    return o;
  }
  PagedRun reference_;
  std::unique_ptr<OwnedImage> image_;
  std::string segment_;
};

TEST_F(PagerSharingTest, ASecondPagerOfTheDeviceUsesTheFirstOnesLayersInPlace) {
  // The first worker keeps every layer resident and publishes them.
  auto backend = MakeBackend("cpu", 1);
  ASSERT_TRUE(backend.ok());
  auto first = Pager::Create(backend->get(), image_->image(), Plan("all"), Sharing());
  ASSERT_TRUE(first.ok()) << first.status();
  const int n_layers = image_->image().header->model.n_layers;
  EXPECT_EQ((*first)->sharing().layers_published, n_layers);
  EXPECT_EQ((*first)->sharing().layers_shared, 0);

  // The second plans no resident layer, yet pages nothing: same tokens, and
  // it allocates neither the layers nor the globals.
  const MemoryPlan none = Plan("none");
  const PagedRun own = testing::GenerateStories(&none, "cpu", "f32");
  const PagedRun shared = testing::GenerateStories(&none, "cpu", "f32", Sharing());
  EXPECT_EQ(shared.tokens, reference_.tokens);
  EXPECT_EQ(shared.kv, reference_.kv);
  EXPECT_TRUE(shared.sharing.globals_shared);
  EXPECT_EQ(shared.sharing.layers_shared, n_layers);
  EXPECT_EQ(shared.stats.h2d_weight_bytes, 0u);
  EXPECT_GT(own.stats.h2d_weight_bytes, 0u);
  const SegmentHeader& h = *image_->image().header;
  EXPECT_EQ(own.device_bytes - shared.device_bytes,
            h.globals_bytes + uint64_t(none.slots) * h.layer_used_bytes);
}

TEST_F(PagerSharingTest, SharedLayersCanBeCopiedIntoSlotsLikeAPeersCopy) {
  auto backend = MakeBackend("cpu", 1);
  ASSERT_TRUE(backend.ok());
  auto first = Pager::Create(backend->get(), image_->image(), Plan("all"), Sharing());
  ASSERT_TRUE(first.ok()) << first.status();
  PagerOptions o = Sharing();
  o.shared_in_place = false;
  o.peer_copies = PagerOptions::PeerCopies::kForce;
  const MemoryPlan none = Plan("none");
  const PagedRun peer = testing::GenerateStories(&none, "cpu", "f32", o);
  EXPECT_EQ(peer.tokens, reference_.tokens);
  EXPECT_EQ(peer.kv, reference_.kv);
  EXPECT_EQ(peer.sharing.peer_layers, image_->image().header->model.n_layers);
  EXPECT_TRUE(peer.sharing.peer_used);
  EXPECT_GT(peer.stats.peer_weight_bytes, 0u);
  EXPECT_EQ(peer.stats.h2d_weight_bytes, 0u);

  o.peer_copies = PagerOptions::PeerCopies::kOff;
  const PagedRun host = testing::GenerateStories(&none, "cpu", "f32", o);
  EXPECT_EQ(host.tokens, reference_.tokens);
  EXPECT_FALSE(host.sharing.peer_used);
  EXPECT_EQ(host.stats.peer_weight_bytes, 0u);
  EXPECT_GT(host.stats.h2d_weight_bytes, 0u);
}

TEST_F(PagerSharingTest, SharedBlocksCostThePlanNothing) {
  const SegmentHeader& h = *image_->image().header;
  const int L = h.model.n_layers;
  PlanLimits l = SmallLimits(4096 * kMiB);
  l.resident = "none";
  const auto alone = PlanMemory(h, l);
  ASSERT_TRUE(alone.ok());
  l.globals_shared = true;
  l.layers_shared.assign(size_t(L), false);
  l.layers_shared[1] = l.layers_shared[3] = true;
  const auto shared = PlanMemory(h, l);
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ(shared->globals_bytes, 0u);
  EXPECT_EQ(shared->n_shared, 2);
  EXPECT_EQ(shared->n_resident, 2);
  EXPECT_TRUE(shared->resident[1] && shared->resident[3] && !shared->resident[0]);
  EXPECT_EQ(shared->resident_bytes, 0u);
  EXPECT_EQ(shared->paged_weight_bytes_per_step, uint64_t(L - 2) * h.layer_used_bytes);
  // Every layer shared: no slots at all, and a budget too small for a plan
  // of its own is enough.
  l.layers_shared.assign(size_t(L), true);
  l.budget_bytes = alone->workspace_bytes + 4 * alone->slot_bytes;
  const auto all = PlanMemory(h, l);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->slots, 0);
  EXPECT_EQ(all->n_paged(), 0);
  l.layers_shared.assign(size_t(L + 1), true);
  EXPECT_FALSE(PlanMemory(h, l).ok());
}

TEST_F(PagerSharingTest, OwnResidentLayersAvoidWhatPeersHoldAndRotate) {
  const SegmentHeader& h = *image_->image().header;
  const int L = h.model.n_layers;  // 5
  PlanLimits l = SmallLimits(4096 * kMiB);
  l.resident = "2";
  auto count = [&](const MemoryPlan& p, auto pred) {
    int n = 0;
    for (int i = 0; i < L; ++i) n += p.resident[size_t(i)] && pred(i);
    return n;
  };
  const auto base = PlanMemory(h, l);
  ASSERT_TRUE(base.ok());
  EXPECT_TRUE(base->resident[0]);  // no rotation: the spread starts at the top
  // A peer holds layers 0, 2 and 4: this worker keeps two of 1 and 3.
  l.layers_on_peers = {true, false, true, false, true};
  const auto avoid = PlanMemory(h, l);
  ASSERT_TRUE(avoid.ok());
  EXPECT_TRUE(avoid->resident[1] && avoid->resident[3]);
  EXPECT_EQ(count(*avoid, [](int i) { return i % 2 == 0; }), 0);
  // More resident than the peers leave: the rest among the peers' layers.
  l.resident = "3";
  const auto more = PlanMemory(h, l);
  ASSERT_TRUE(more.ok());
  EXPECT_EQ(more->n_resident, 3);
  EXPECT_TRUE(more->resident[1] && more->resident[3]);
  // Rotation: GPU 1 of 2 starts its spread half way down.
  l.layers_on_peers.clear();
  l.resident = "2";
  l.rotation = 0.5;
  const auto rotated = PlanMemory(h, l);
  ASSERT_TRUE(rotated.ok());
  EXPECT_FALSE(rotated->resident[0]);
  EXPECT_EQ(rotated->n_resident, 2);
  l.rotation = 1.0;
  EXPECT_FALSE(PlanMemory(h, l).ok());
  l.rotation = 0;
  l.layers_on_peers.assign(size_t(L + 1), false);
  EXPECT_FALSE(PlanMemory(h, l).ok());
}

TEST_F(PagerSharingTest, APeerDevicesLayersArePagedFromIt) {
  // Two "devices" of this process (CPU backends with labels): A keeps every
  // layer resident; B, on the other device, pages its layers from A's copies.
  auto a = MakeExecCpuBackend(1, "a");
  auto b = MakeExecCpuBackend(1, "b");
  ASSERT_NE(a->device_uuid(), b->device_uuid());
  auto first = Pager::Create(a.get(), image_->image(), Plan("all"), Sharing());
  ASSERT_TRUE(first.ok()) << first.status();
  const int n_layers = image_->image().header->model.n_layers;
  const MemoryPlan none = Plan("none");
  PagerOptions o = Sharing();
  o.peer_copies = PagerOptions::PeerCopies::kForce;
  const PagedRun peer = testing::GenerateStoriesOn(b.get(), &none, "f32", o);
  EXPECT_EQ(peer.tokens, reference_.tokens);
  EXPECT_EQ(peer.kv, reference_.kv);
  EXPECT_FALSE(peer.sharing.globals_shared);  // another device: nothing in place
  EXPECT_EQ(peer.sharing.layers_shared, 0);
  EXPECT_EQ(peer.sharing.peer_layers, n_layers);
  EXPECT_TRUE(peer.sharing.peer_used);
  EXPECT_EQ(peer.stats.h2d_weight_bytes, 0u);
  EXPECT_GT(peer.stats.peer_weight_bytes, 0u);
  // kAuto decides by the two measured links; kOff pages from the host.
  o.peer_copies = PagerOptions::PeerCopies::kAuto;
  const PagedRun aut = testing::GenerateStoriesOn(b.get(), &none, "f32", o);
  EXPECT_EQ(aut.tokens, reference_.tokens);
  EXPECT_EQ(aut.sharing.peer_used, aut.sharing.peer_gbps > aut.sharing.host_gbps);
  o.peer_copies = PagerOptions::PeerCopies::kOff;
  const PagedRun off = testing::GenerateStoriesOn(b.get(), &none, "f32", o);
  EXPECT_EQ(off.tokens, reference_.tokens);
  EXPECT_EQ(off.sharing.peer_layers, 0);
  EXPECT_EQ(off.stats.peer_weight_bytes, 0u);
  for (const char* dev : {"a", "b"})
    ShareBoard::Remove(segment_, MakeCpuBackend(1, dev)->device_uuid());
}

TEST_F(PagerSharingTest, WithoutAPublisherEveryPagerMakesItsOwn) {
  const MemoryPlan some = Plan("2");
  const PagedRun run = testing::GenerateStories(&some, "cpu", "f32", Sharing());
  EXPECT_EQ(run.tokens, reference_.tokens);
  EXPECT_TRUE(run.sharing.enabled);
  EXPECT_FALSE(run.sharing.globals_shared);
  EXPECT_EQ(run.sharing.layers_shared, 0);
  EXPECT_EQ(run.sharing.layers_published, 2);
  EXPECT_GT(run.link_gbps, 0);  // the host link, measured at start for the metrics
}

}  // namespace
}  // namespace paged
