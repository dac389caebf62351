// The worker's question before it plans (issue 16): the coordinator's step
// caps travel over WorkerLink.GetStepCaps with the same authentication as
// Attach, and a worker started before its coordinator waits for it.
#include "worker/link/worker_link.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "daemon/coordinator.h"
#include "daemon/server.h"
#include "tests/unit/fake_coordinator.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Coordinator> FakeCoordinator() {
  auto c = Coordinator::Create(testing::FakeCoordinatorOptions(), nullptr);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

TEST(WorkerLinkTest, TheCoordinatorsStepCapsReachTheWorker) {
  auto coord = FakeCoordinator();
  ASSERT_NE(coord, nullptr);
  testing::TempDir dir;
  const std::string addr = "unix://" + dir.File("c.sock");
  auto server = Server::Start(coord.get(), addr, "tok");
  ASSERT_TRUE(server.ok()) << server.status();

  LinkOptions o;
  o.coordinator = addr;
  o.worker_id = "w0";
  o.token = "tok";
  LinkStopper stop;
  absl::StatusOr<StepCaps> caps = GetStepCaps(o, stop);
  ASSERT_TRUE(caps.ok()) << caps.status();
  const SchedulerConfig& want = testing::FakeCoordinatorOptions().scheduler;
  EXPECT_EQ(caps->max_step_tokens, want.max_step_tokens);  // 64
  EXPECT_EQ(caps->max_step_seqs, want.max_seqs_per_step);  // 8
  EXPECT_EQ(caps->max_context, 128);                       // the model's

  // The same authentication as Attach: a wrong token is refused, by name.
  o.token = "wrong";
  caps = GetStepCaps(o, stop);
  EXPECT_EQ(caps.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(caps.status().message()), HasSubstr("refused worker w0"));
}

TEST(WorkerLinkTest, AWorkerWaitsForItsCoordinatorOrItsStop) {
  testing::TempDir dir;
  const std::string addr = "unix://" + dir.File("c.sock");
  LinkOptions o;
  o.coordinator = addr;
  o.worker_id = "w0";
  {
    // Nobody listens: asked again until stopped.
    LinkStopper stop;
    auto waiting = std::async(std::launch::async, [&] { return WaitForStepCaps(o, stop); });
    EXPECT_EQ(waiting.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
    stop.Stop();
    EXPECT_EQ(waiting.get().status().code(), absl::StatusCode::kCancelled);
  }
  // The coordinator comes up while the worker asks: it gets the caps.
  LinkStopper stop;
  auto waiting = std::async(std::launch::async, [&] { return WaitForStepCaps(o, stop); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto coord = FakeCoordinator();
  ASSERT_NE(coord, nullptr);
  auto server = Server::Start(coord.get(), addr, "");
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  absl::StatusOr<StepCaps> caps = waiting.get();
  ASSERT_TRUE(caps.ok()) << caps.status();
  EXPECT_EQ(caps->max_step_seqs, 8);
}

// Issue 14: what a worker reports of expert-level paging, its plan's expert
// cache in the hello and its pager's expert counters after each step (with
// the hybrid step's host bytes and share).
TEST(WorkerLinkTest, TheExpertCacheAndItsCountersAreReported) {
  MemoryPlan plan;
  plan.resident = {false, false};
  plan.experts_paged = true;
  plan.expert_slots = 18;
  plan.total_experts = 32;
  plan.expert_slot_bytes = 4096;
  plan.expert_cache_bytes = 18 * 4096;
  v1::MemoryPlan m = PlanProto(plan);
  EXPECT_EQ(m.expert_slots(), 18u);
  EXPECT_EQ(m.total_experts(), 32u);
  EXPECT_EQ(m.expert_cache_bytes(), 18u * 4096);
  EXPECT_EQ(m.paged_layers(), 2);
  plan.experts_paged = false;  // whole layers: nothing about experts
  EXPECT_EQ(PlanProto(plan).expert_slots(), 0u);

  PagerStats ps;
  ps.h2d_weight_bytes = 9000;
  ps.h2d_kv_bytes = 1000;
  ps.d2h_kv_bytes = 300;
  ps.expert_hits = 148;
  ps.expert_misses = 40;
  ps.expert_host = 12;
  ps.expert_evictions = 30;
  ps.expert_admitted = 5;
  ps.expert_prefetched = 7;
  ps.h2d_expert_bytes = 6000;
  ps.host_expert_bytes = 2000;
  ps.host_weight_bytes = 7000;
  v1::WorkerCounters c;
  c.set_steps(4);
  c.set_busy_s(0.5);
  SetPagerCounters(ps, /*host_share=*/0.84, &c);
  EXPECT_EQ(c.steps(), 4u);  // the link's own
  EXPECT_DOUBLE_EQ(c.busy_s(), 0.5);
  EXPECT_EQ(c.h2d_bytes(), 10000u);
  EXPECT_EQ(c.d2h_bytes(), 300u);
  EXPECT_EQ(c.expert_hits(), 148u);
  EXPECT_EQ(c.expert_misses(), 40u);
  EXPECT_EQ(c.expert_host(), 12u);
  EXPECT_EQ(c.expert_evictions(), 30u);
  EXPECT_EQ(c.expert_admitted(), 5u);
  EXPECT_EQ(c.expert_prefetched(), 7u);
  EXPECT_EQ(c.h2d_expert_bytes(), 6000u);
  EXPECT_EQ(c.host_expert_bytes(), 2000u);
  EXPECT_EQ(c.host_weight_bytes(), 7000u);
  EXPECT_DOUBLE_EQ(c.host_share(), 0.84);
  // The share reported: the tuned one once there is one, else the last step's.
  EXPECT_DOUBLE_EQ(HostShareOf(/*tuned_share=*/0.84, /*step_share=*/0.6), 0.84);
  EXPECT_DOUBLE_EQ(HostShareOf(/*tuned_share=*/0, /*step_share=*/0.6), 0);
  EXPECT_DOUBLE_EQ(HostShareOf(/*tuned_share=*/-1, /*step_share=*/0.6), 0.6);
  EXPECT_DOUBLE_EQ(HostShareOf(/*tuned_share=*/-1, /*step_share=*/0), 0);  // no hybrid step
}

}  // namespace
}  // namespace paged
