// The hybrid step's split as a pure function, from a table of batch sizes
// and bandwidths (worker/pager/hybrid_plan.h).
#include "worker/pager/hybrid_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

namespace paged {
namespace {

// The GPU machine's measured shape: a 55 GB/s link, a host executor at
// DRAM speed for a few rows that turns compute-bound by 64.
HybridProfile GpuMachine() {
  HybridProfile p;
  p.link_gbps = 55;
  p.host_gbps = {{1, 124}, {8, 120}, {64, 30}};
  return p;
}

TEST(HybridPlanTest, HostBandwidthIsInterpolatedAndComputeBoundBeyondTheLastPoint) {
  const HybridProfile p = GpuMachine();
  EXPECT_DOUBLE_EQ(HostGbps(p, 1), 124);
  EXPECT_DOUBLE_EQ(HostGbps(p, 0), 124);  // below the first point: the first
  EXPECT_DOUBLE_EQ(HostGbps(p, 8), 120);
  EXPECT_DOUBLE_EQ(HostGbps(p, 64), 30);
  // Between 8 and 64 the time per byte is linear in n.
  const double t = 1 / 120.0 + (1 / 30.0 - 1 / 120.0) * (36 - 8) / 56.0;
  EXPECT_NEAR(HostGbps(p, 36), 1 / t, 1e-9);
  EXPECT_DOUBLE_EQ(HostGbps(p, 128), 15);  // twice the rows, half the bytes per second
  EXPECT_DOUBLE_EQ(HostGbps(HybridProfile{}, 1), 0);
}

struct ShareCase {
  int n;
  double want;  // host share
};

TEST(HybridPlanTest, AutoBalancesHostAndLinkAndStopsWhenTheHostIsComputeBound) {
  const HybridProfile p = GpuMachine();
  const HybridPolicy automatic;
  for (const ShareCase& c :
       {ShareCase{1, 124 / 179.0}, ShareCase{8, 120 / 175.0},
        // Past kMaxHostRows: all paged, whatever the balance says.
        ShareCase{kMaxHostRows + 1, 0.0}, ShareCase{64, 0.0}, ShareCase{512, 0.0}}) {
    EXPECT_NEAR(HostShare(p, automatic, c.n), c.want, 1e-12) << "n = " << c.n;
  }
  // Both finish together at the balance: neither side alone is faster.
  for (int n : {1, 4, 8}) {
    const double s = HostShare(p, automatic, n);
    const double t = PagedSeconds(p, s, n, 1e9);
    EXPECT_LT(t, PagedSeconds(p, s + 0.02, n, 1e9));
    EXPECT_LT(t, PagedSeconds(p, s - 0.02, n, 1e9));
  }
}

TEST(HybridPlanTest, TheSevenBillionF16BoundOfTheIssue) {
  // 10.2 GB paged per token over 55 GB/s plus a host at 124 GB/s: 57 ms, 17.5
  // tokens/s, against 185 ms with every byte copied.
  const HybridProfile p = GpuMachine();
  const double s = HostShare(p, HybridPolicy{}, 1);
  EXPECT_NEAR(PagedSeconds(p, s, 1, 10.2e9), 10.2 / (55 + 124), 1e-9);
  EXPECT_NEAR(PagedSeconds(p, 0, 1, 10.2e9), 10.2 / 55, 1e-9);
}

TEST(HybridPlanTest, SharedHostMemoryBoundsTheSplit) {
  // The link's DMA and the host's products read one DRAM: 138 GB/s together
  // on the GPU machine measured (docs/hybrid.md). A split step of 10.1 GB is
  // then bound by 10.1 / 138 s, not 10.1 / (55 + 124); one path alone keeps
  // its own bound, and the share is the balance still.
  HybridProfile shared = GpuMachine();
  shared.memory_gbps = 138;
  const double s = HostShare(shared, HybridPolicy{}, 1);
  EXPECT_DOUBLE_EQ(s, HostShare(GpuMachine(), HybridPolicy{}, 1));
  EXPECT_NEAR(PagedSeconds(shared, s, 1, 10.1e9), 10.1 / 138, 1e-9);
  EXPECT_NEAR(PagedSeconds(shared, 0, 1, 10.1e9), 10.1 / 55, 1e-9);
  EXPECT_NEAR(PagedSeconds(shared, 1, 1, 10.1e9), 10.1 / 124, 1e-9);
  // A memory faster than both paths together bounds nothing.
  shared.memory_gbps = 400;
  EXPECT_NEAR(PagedSeconds(shared, s, 1, 10.1e9), 10.1 / (55 + 124), 1e-9);
  // The description says what it assumed.
  EXPECT_THAT(DescribeHybrid(shared, HybridPolicy{}, 10.1e9),
              ::testing::HasSubstr("host memory 400.0 GB/s for both paths together"));
  EXPECT_THAT(DescribeHybrid(GpuMachine(), HybridPolicy{}, 10.1e9),
              ::testing::Not(::testing::HasSubstr("host memory")));
}

TEST(HybridPlanTest, PoliciesOffFixedAndNoLink) {
  const HybridProfile p = GpuMachine();
  HybridPolicy off;
  off.mode = HybridPolicy::Mode::kOff;
  HybridPolicy fixed;
  fixed.mode = HybridPolicy::Mode::kFixed;
  fixed.fixed_share = 0.3;
  for (int n : {1, 64, 4096}) {
    EXPECT_EQ(HostShare(p, off, n), 0);
    EXPECT_EQ(HostShare(p, fixed, n), 0.3);
  }
  HybridProfile slow_host = p;  // the Q4_K decoder measured: 40 GB/s against a 55 GB/s link
  slow_host.host_gbps = {{1, 40}};
  EXPECT_LT(40 / 95.0, kMinHostShare);
  EXPECT_EQ(HostShare(slow_host, HybridPolicy{}, 1), 0);
  slow_host.host_gbps = {{1, 52}};  // int4 measured: 49%, worth it
  EXPECT_NEAR(HostShare(slow_host, HybridPolicy{}, 1), 52 / 107.0, 1e-12);
  HybridProfile no_link = p;
  no_link.link_gbps = 0;  // nothing measured: the host computes everything
  EXPECT_EQ(HostShare(no_link, HybridPolicy{}, 1), 1);
  EXPECT_EQ(HostShare(HybridProfile{}, HybridPolicy{}, 1), 0);  // no host executor
}

TEST(HybridPlanTest, ParsePolicy) {
  EXPECT_EQ(ParseHybridPolicy("auto")->mode, HybridPolicy::Mode::kAuto);
  EXPECT_EQ(ParseHybridPolicy("off")->mode, HybridPolicy::Mode::kOff);
  auto f = ParseHybridPolicy("0.25");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->mode, HybridPolicy::Mode::kFixed);
  EXPECT_EQ(f->fixed_share, 0.25);
  for (const char* bad : {"1.5", "-0.1", "half", ""}) {
    auto b = ParseHybridPolicy(bad);
    EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(b.status().message().find("--host-compute"), std::string::npos);
  }
}

TEST(HybridPlanTest, DescribeShowsTheSplitPerBatchSize) {
  const std::string d = DescribeHybrid(GpuMachine(), HybridPolicy{}, 10.2e9);
  EXPECT_NE(d.find("link 55.0 GB/s"), std::string::npos) << d;
  EXPECT_NE(d.find("   1 rows: host computes  69% of each paged matrix"), std::string::npos) << d;
  EXPECT_NE(d.find(" 512 rows: host computes   0%"), std::string::npos) << d;
}

// A step whose paged layers take max(link, host) as in the planner's
// model, but whose host runs at `host_gbps` instead of what was measured at
// start: the tuner should find the share where both paths finish together.
struct SyntheticStep {
  double link_gbps = 55, host_gbps = 60, bytes = 10.2e9, fixed_s = 0.004;
  double noise = 0;  // relative, alternating sign
  int k = 0;
  double operator()(double s) {
    const double t = std::max((1 - s) * bytes / (link_gbps * 1e9), s * bytes / (host_gbps * 1e9));
    return (fixed_s + t) * (1 + ((k++ % 2) ? noise : -noise));
  }
  double Best() const { return host_gbps / (host_gbps + link_gbps); }
};

// Runs `steps` tuned steps of n rows from `planned`; returns the last share.
double Tune(ShareTuner& tuner, SyntheticStep& step, int n, double planned, int steps) {
  double s = planned;
  for (int i = 0; i < steps; ++i) {
    s = tuner.Next(n, planned);
    tuner.Observe(step(s));
  }
  return tuner.Current(n);
}

TEST(ShareTunerTest, FindsTheShareWhereLinkAndHostFinishTogether) {
  // Planned from 124 GB/s measured alone (share 0.69); in steps the host
  // gives 60 GB/s (best 0.52), or 110 (best 0.67), or 40 (best 0.42).
  for (double host : {60.0, 110.0, 40.0}) {
    SCOPED_TRACE(host);
    ShareTuner tuner;
    SyntheticStep step;
    step.host_gbps = host;
    const double settled = Tune(tuner, step, 1, 124.0 / (124 + 55), 400);
    EXPECT_TRUE(tuner.Settled(1));
    EXPECT_NEAR(settled, step.Best(), 0.03);
    // Its step time is within 3% of the best share's.
    SyntheticStep exact = step;
    EXPECT_LT(exact(settled), 1.03 * exact(step.Best()));
  }
}

TEST(ShareTunerTest, ToleratesNoiseBelowItsGainThreshold) {
  ShareTuner tuner;
  SyntheticStep step;
  step.host_gbps = 60;
  step.noise = 0.004;
  EXPECT_NEAR(Tune(tuner, step, 1, 0.69, 600), step.Best(), 0.05);
}

TEST(ShareTunerTest, EachStepSizeIsTunedOnItsOwnAndZeroIsLeftAlone) {
  ShareTuner tuner;
  SyntheticStep one, eight;
  one.host_gbps = 60;
  eight.host_gbps = 100;
  for (int i = 0; i < 400; ++i) {
    tuner.Observe(one(tuner.Next(1, 0.69)));
    tuner.Observe(eight(tuner.Next(8, 0.69)));
    // A size the planner gives the host nothing is not tuned.
    EXPECT_EQ(tuner.Next(64, 0.0), 0.0);
    tuner.Observe(1.0);
  }
  EXPECT_NEAR(tuner.Current(1), one.Best(), 0.03);
  EXPECT_NEAR(tuner.Current(8), eight.Best(), 0.03);
  EXPECT_EQ(tuner.Current(64), -1);
  EXPECT_EQ(tuner.Current(2), -1);
}

TEST(ShareTunerTest, ProbesAgainWhenTheLoadChanges) {
  ShareTuner::Options o;
  o.recheck_steps = 64;
  ShareTuner tuner(o);
  SyntheticStep step;
  step.host_gbps = 110;
  EXPECT_NEAR(Tune(tuner, step, 1, 0.69, 300), step.Best(), 0.03);
  // Another process now takes host bandwidth: the share follows down.
  step.host_gbps = 50;
  EXPECT_NEAR(Tune(tuner, step, 1, 0.69, 1500), step.Best(), 0.04);
}

TEST(ShareTunerTest, StaysWithinItsBoundsAndDropsTheFirstStepOfARun) {
  ShareTuner::Options o;
  o.samples = 2;
  ShareTuner tuner(o);
  // The host is far faster than the link: the share climbs to the top bound.
  SyntheticStep step;
  step.host_gbps = 5000;
  double s = 0;
  for (int i = 0; i < 300; ++i) {
    s = tuner.Next(1, 0.5);
    EXPECT_GE(s, o.lo);
    EXPECT_LE(s, o.hi);
    tuner.Observe(step(s));
  }
  EXPECT_NEAR(tuner.Current(1), o.hi, 1e-9);
  // A run's first step is not counted: one huge time there changes nothing.
  ShareTuner fresh(o);
  SyntheticStep even;
  even.host_gbps = 55;  // best 0.5, the planned share
  for (int i = 0; i < 200; ++i) {
    const double x = fresh.Next(1, 0.5);
    // Every run is samples + 1 steps (3): its first step is slow.
    fresh.Observe(i % 3 == 0 ? 100.0 : even(x));
  }
  EXPECT_NEAR(fresh.Current(1), 0.5, 0.03);
}

TEST(HybridPlanTest, PlannedIsAutoWithoutTuning) {
  auto p = ParseHybridPolicy("planned");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->mode, HybridPolicy::Mode::kAuto);
  EXPECT_FALSE(p->tune);
  EXPECT_TRUE(ParseHybridPolicy("auto")->tune);
}

}  // namespace
}  // namespace paged
