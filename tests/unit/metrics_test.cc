// The metrics library (daemon/metrics.h): the exact text of a small
// registry, histogram buckets (le is inclusive), value formatting and
// escaping; and the serving metrics' helpers (counter deltas over a worker
// restart, the busy-time transfer rate).
#include "daemon/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <regex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/serving_metrics.h"

namespace paged {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, RendersTheExpositionFormatExactly) {
  metrics::Registry r;
  metrics::Counter& requests = r.AddCounter("test_requests_total", "Requests served.");
  metrics::Gauge& depth = r.AddGauge("test_queue_depth", "Waiting\nrequests \\ now.");
  metrics::Family<metrics::Counter>& bytes =
      r.AddCounterFamily("test_bytes_total", "Bytes by worker.", {"worker", "dir"});
  metrics::Histogram& lat = r.AddHistogram("test_latency_seconds", "Latency.", {0.25, 0.5, 1});
  requests.Inc();
  requests.Inc(2);
  depth.Set(7);
  depth.Add(-2.5);
  bytes.With({"w0", "h2d"}).Inc(1e12);
  bytes.With({"w\"1\\\n", "d2h"}).Inc(3);
  lat.Observe(0.125);
  lat.Observe(0.25);  // le is inclusive: the 0.25 bucket
  lat.Observe(0.75);
  lat.Observe(5);
  EXPECT_EQ(r.Render(),
            "# HELP test_requests_total Requests served.\n"
            "# TYPE test_requests_total counter\n"
            "test_requests_total 3\n"
            "# HELP test_queue_depth Waiting\\nrequests \\\\ now.\n"
            "# TYPE test_queue_depth gauge\n"
            "test_queue_depth 4.5\n"
            "# HELP test_bytes_total Bytes by worker.\n"
            "# TYPE test_bytes_total counter\n"
            "test_bytes_total{worker=\"w\\\"1\\\\\\n\",dir=\"d2h\"} 3\n"
            "test_bytes_total{worker=\"w0\",dir=\"h2d\"} 1000000000000\n"
            "# HELP test_latency_seconds Latency.\n"
            "# TYPE test_latency_seconds histogram\n"
            "test_latency_seconds_bucket{le=\"0.25\"} 2\n"
            "test_latency_seconds_bucket{le=\"0.5\"} 2\n"
            "test_latency_seconds_bucket{le=\"1\"} 3\n"
            "test_latency_seconds_bucket{le=\"+Inf\"} 4\n"
            "test_latency_seconds_sum 6.125\n"
            "test_latency_seconds_count 4\n");
}

TEST(MetricsTest, LabelledHistogramsPutLeLast) {
  metrics::Registry r;
  r.AddHistogramFamily("h_seconds", "H.", {"worker"}, {1}).With({"a"}).Observe(2);
  EXPECT_EQ(r.Render(),
            "# HELP h_seconds H.\n# TYPE h_seconds histogram\n"
            "h_seconds_bucket{worker=\"a\",le=\"1\"} 0\n"
            "h_seconds_bucket{worker=\"a\",le=\"+Inf\"} 1\n"
            "h_seconds_sum{worker=\"a\"} 2\n"
            "h_seconds_count{worker=\"a\"} 1\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeAndInclusive) {
  metrics::Histogram h({1, 2, 4});
  for (double v : {0.0, 1.0, 1.0000001, 2.0, 3.9, 4.0, 4.1, -1.0}) h.Observe(v);
  const metrics::Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{3, 5, 7, 8}));  // <=1, <=2, <=4, +Inf
  EXPECT_EQ(s.count, 8u);
  EXPECT_DOUBLE_EQ(s.sum, 0 + 1 + 1.0000001 + 2 + 3.9 + 4 + 4.1 - 1);
  EXPECT_EQ(metrics::ExponentialBuckets(0.001, 10, 3), (std::vector<double>{0.001, 0.01, 0.1}));
}

TEST(MetricsTest, RemovedLabelsAreNotRendered) {
  metrics::Registry r;
  metrics::Family<metrics::Gauge>& g = r.AddGaugeFamily("g", "G.", {"worker"});
  g.With({"a"}).Set(1);
  g.With({"b"}).Set(2);
  g.Remove({"a"});
  EXPECT_EQ(r.Render(), "# HELP g G.\n# TYPE g gauge\ng{worker=\"b\"} 2\n");
}

TEST(MetricsTest, FormatsValuesAsPrometheusReadsThem) {
  EXPECT_EQ(metrics::FormatValue(0), "0");
  EXPECT_EQ(metrics::FormatValue(-3), "-3");
  EXPECT_EQ(metrics::FormatValue(123456789012345.0), "123456789012345");
  EXPECT_EQ(metrics::FormatValue(0.25), "0.25");
  EXPECT_EQ(metrics::FormatValue(1e300), "1e+300");
  EXPECT_EQ(metrics::FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(metrics::FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(metrics::FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(metrics::EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_TRUE(metrics::IsValidMetricName("paged_requests_total"));
  EXPECT_TRUE(metrics::IsValidMetricName("a:b_c9"));
  EXPECT_FALSE(metrics::IsValidMetricName("9a"));
  EXPECT_FALSE(metrics::IsValidMetricName("a-b"));
  EXPECT_FALSE(metrics::IsValidLabelName("__reserved"));
  EXPECT_FALSE(metrics::IsValidLabelName("a:b"));
}

TEST(MetricsDeathTest, NamesAreCheckedAtRegistration) {
  metrics::Registry r;
  EXPECT_DEATH(r.AddCounter("requests", "no _total"), "_total");
  EXPECT_DEATH(r.AddGauge("depth_total", "a gauge ending in _total"), "_total");
  EXPECT_DEATH(r.AddGauge("bad-name", "x"), "invalid metric name");
  EXPECT_DEATH(r.AddHistogram("h", "x", {2, 1}), "strictly increasing");
  EXPECT_DEATH(r.AddCounterFamily("c_total", "x", {"a"}).With({}), "label values");
}

TEST(MetricsTest, CountersAreSafeFromManyThreads) {
  metrics::Registry r;
  metrics::Counter& c = r.AddCounter("c_total", "C.");
  metrics::Histogram& h = r.AddHistogram("h", "H.", {0.5});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.Inc();
        h.Observe(1);
      }
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(c.value(), 40000);
  EXPECT_EQ(h.Read().count, 40000u);
  EXPECT_EQ(h.Read().sum, 40000);
}

// ---- The serving metrics ----

v1::WorkerCounters Counters(uint64_t steps, uint64_t h2d, uint64_t d2h, double busy) {
  v1::WorkerCounters c;
  c.set_steps(steps);
  c.set_h2d_bytes(h2d);
  c.set_d2h_bytes(d2h);
  c.set_busy_s(busy);
  return c;
}

TEST(ServingMetricsTest, CounterDeltasSurviveAWorkerRestart) {
  WorkerCountersDelta d = CountersDelta(Counters(10, 1000, 100, 1.5), Counters(12, 1600, 130, 2));
  EXPECT_EQ(d.steps, 2u);
  EXPECT_EQ(d.h2d_bytes, 600u);
  EXPECT_EQ(d.d2h_bytes, 30u);
  EXPECT_DOUBLE_EQ(d.busy_s, 0.5);
  // Restarted: its totals start from zero again, so they are the growth.
  d = CountersDelta(Counters(12, 1600, 130, 2), Counters(1, 50, 5, 0.1));
  EXPECT_EQ(d.steps, 1u);
  EXPECT_EQ(d.h2d_bytes, 50u);
  EXPECT_EQ(d.d2h_bytes, 5u);
  EXPECT_DOUBLE_EQ(d.busy_s, 0.1);
  EXPECT_FALSE(d.any_experts());
}

// Expert-level paging's counters (issue 14): deltas like the others, and a
// total that went down (an expert counter alone) means a restart too.
TEST(ServingMetricsTest, ExpertCounterDeltas) {
  v1::WorkerCounters a = Counters(10, 1000, 100, 1.5), b = Counters(12, 1600, 130, 2);
  a.set_expert_hits(70);
  a.set_expert_misses(20);
  a.set_expert_host(10);
  a.set_expert_evictions(4);
  a.set_h2d_expert_bytes(500);
  b.set_expert_hits(85);
  b.set_expert_misses(23);
  b.set_expert_host(12);
  b.set_expert_evictions(5);
  b.set_expert_admitted(2);
  b.set_expert_prefetched(6);
  b.set_h2d_expert_bytes(800);
  b.set_host_expert_bytes(90);
  // Hits, misses, host, evictions, admitted, prefetched, H2D and host bytes.
  WorkerCountersDelta d = CountersDelta(a, b);
  EXPECT_EQ(d.steps, 2u);
  EXPECT_THAT(d.experts, ElementsAre(15u, 3u, 2u, 1u, 2u, 6u, 300u, 90u));
  EXPECT_TRUE(d.any_experts());
  // Only the expert hits went down: the worker restarted.
  b = a;
  b.set_expert_hits(3);
  d = CountersDelta(a, b);
  EXPECT_EQ(d.steps, 10u);
  EXPECT_THAT(d.experts, ElementsAre(3u, 20u, 10u, 4u, 0u, 0u, 500u, 0u));
}

// The hybrid step's: host bytes grow like the other totals (and one that went
// down alone means a restart); the host share is the later report's, a gauge.
TEST(ServingMetricsTest, HybridCounterDeltas) {
  v1::WorkerCounters a = Counters(10, 1000, 100, 1.5), b = Counters(12, 1600, 130, 2);
  EXPECT_FALSE(CountersDelta(a, b).any_hybrid());
  a.set_host_weight_bytes(7000);
  a.set_host_share(0.6);
  b.set_host_weight_bytes(9500);
  b.set_host_share(0.84);
  WorkerCountersDelta d = CountersDelta(a, b);
  EXPECT_EQ(d.steps, 2u);
  EXPECT_EQ(d.host_weight_bytes, 2500u);
  EXPECT_DOUBLE_EQ(d.host_share, 0.84);
  EXPECT_TRUE(d.any_hybrid());
  EXPECT_FALSE(d.any_experts());
  // Only the host bytes went down: the worker restarted.
  b = a;
  b.set_host_weight_bytes(300);
  d = CountersDelta(a, b);
  EXPECT_EQ(d.steps, 10u);
  EXPECT_EQ(d.host_weight_bytes, 300u);
  EXPECT_DOUBLE_EQ(d.host_share, 0.6);
}

TEST(ServingMetricsTest, TransferRateIsBytesPerBusySecondOverTheWindow) {
  TransferRate rate(/*window_us=*/10'000'000);
  EXPECT_EQ(rate.Get(0).h2d_bytes_per_s, 0);
  // 20 steps of 0.1 s moving 5 GB each, one every 0.5 s.
  for (int i = 1; i <= 20; ++i)
    rate.Add(TimeUs(i) * 500'000, {1, 5'000'000'000ull, 1'000'000ull, 0.1});
  TransferRate::Rates r = rate.Get(10'000'000);
  EXPECT_NEAR(r.h2d_bytes_per_s, 50e9, 1e6);
  EXPECT_NEAR(r.d2h_bytes_per_s, 10e6, 1);
  // Nothing in the last 10 s: idle.
  EXPECT_EQ(rate.Get(30'000'000).h2d_bytes_per_s, 0);
  // Reports within 100 ms merge into one sample; the rate is the same.
  TransferRate fast;
  for (int i = 1; i <= 1000; ++i) fast.Add(TimeUs(i) * 1000, {1, 1000, 0, 1e-6});
  EXPECT_NEAR(fast.Get(1'000'000).h2d_bytes_per_s, 1e9, 1e3);
}

TEST(ServingMetricsTest, EveryRequestStatusIsThereFromTheStart) {
  ServingMetrics m;
  m.CountRequest(RequestStatus::kStop);
  WorkerMetrics w = m.ForWorker("cuda:0");
  m.OnWorkerCounters(w, {3, 3000, 300, 0.5}, 1'000'000);
  m.SetWorkerGauges("cuda:0", w, /*link=*/0, 1'000'000);
  const std::string text = m.Render();
  for (const char* s : {"eos", "length", "cancelled", "error", "rejected", "deadline"})
    EXPECT_THAT(text, HasSubstr(std::string("paged_requests_total{status=\"") + s + "\"} 0"));
  EXPECT_THAT(text, HasSubstr("paged_requests_total{status=\"stop\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("paged_worker_h2d_bytes_total{worker=\"cuda:0\"} 3000\n"));
  EXPECT_THAT(text, HasSubstr("paged_worker_h2d_bytes_per_second{worker=\"cuda:0\"} 6000\n"));
  // No measured link: no PCIe-bound fraction.
  EXPECT_THAT(text, ::testing::Not(HasSubstr("paged_worker_pcie_bound_fraction{")));
  m.SetWorkerGauges("cuda:0", w, /*link=*/12000, 1'000'000);
  EXPECT_THAT(m.Render(), HasSubstr("paged_worker_pcie_bound_fraction{worker=\"cuda:0\"} 0.5\n"));
  m.ClearWorkerGauges("cuda:0");
  EXPECT_THAT(m.Render(), ::testing::Not(HasSubstr("paged_worker_h2d_bytes_per_second{")));
  EXPECT_THAT(m.Render(), HasSubstr("paged_worker_h2d_bytes_total{worker=\"cuda:0\"} 3000\n"));
}

// A worker that pages experts has the expert families, from its first
// report that counts any (or from its plan: AddExpertMetrics); one that
// pages whole layers has none.
TEST(ServingMetricsTest, ExpertCacheMetricsOnlyForWorkersThatPageExperts) {
  ServingMetrics m;
  WorkerMetrics dense = m.ForWorker("cuda:0");
  m.OnWorkerCounters(dense, {3, 3000, 300, 0.5}, 1'000'000);
  EXPECT_THAT(m.Render(), Not(HasSubstr("paged_worker_expert_cache_hits_total{")));
  WorkerMetrics moe = m.ForWorker("cuda:1");
  const WorkerCountersDelta d{2, 2000, 0, 0.25, {74, 20, 6, 9, 1, 3, 1500, 450}};
  m.OnWorkerCounters(moe, d, 1'000'000);
  m.OnWorkerCounters(moe, d, 2'000'000);
  const std::string text = m.Render();
  for (const auto& [family, total] :
       std::vector<std::pair<std::string, int>>{{"expert_cache_hits", 148},
                                                {"expert_cache_misses", 40},
                                                {"expert_host", 12},
                                                {"expert_cache_evictions", 18},
                                                {"expert_admitted", 2},
                                                {"expert_prefetched", 6},
                                                {"h2d_expert_bytes", 3000},
                                                {"host_expert_bytes", 900}}) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("paged_worker_", family, "_total{worker=\"cuda:1\"} ",
                                             total, "\n")));
  }
  EXPECT_THAT(text, Not(HasSubstr("paged_worker_expert_cache_hits_total{worker=\"cuda:0\"")));
  // A plan with an expert cache: the families at 0 before any step.
  WorkerMetrics fresh = m.ForWorker("cuda:2");
  m.AddExpertMetrics(fresh);
  m.AddExpertMetrics(fresh);  // once
  EXPECT_THAT(m.Render(), HasSubstr("paged_worker_expert_cache_hits_total{worker=\"cuda:2\"} 0\n"));
}

// A worker that runs the hybrid step has its host bytes (a counter) and its
// host share (a gauge, while it is attached), from its first report with
// either; one without the hybrid step has neither.
TEST(ServingMetricsTest, HybridMetricsOnlyForWorkersThatRunTheHybridStep) {
  ServingMetrics m;
  WorkerMetrics dense = m.ForWorker("cuda:0");
  m.OnWorkerCounters(dense, {3, 3000, 300, 0.5}, 1'000'000);
  m.SetWorkerGauges("cuda:0", dense, /*link=*/0, 1'000'000);
  EXPECT_THAT(m.Render(), Not(HasSubstr("paged_worker_host_weight_bytes_total{")));
  EXPECT_THAT(m.Render(), Not(HasSubstr("paged_worker_host_share{")));
  WorkerMetrics hybrid = m.ForWorker("cuda:1");
  WorkerCountersDelta d{2, 2000, 0, 0.25};
  d.host_weight_bytes = 4500;
  d.host_share = 0.6;
  m.OnWorkerCounters(hybrid, d, 1'000'000);
  d.host_share = 0.84;
  m.OnWorkerCounters(hybrid, d, 2'000'000);
  m.SetWorkerGauges("cuda:1", hybrid, /*link=*/0, 2'000'000);
  const std::string text = m.Render();
  EXPECT_THAT(text, HasSubstr("paged_worker_host_weight_bytes_total{worker=\"cuda:1\"} 9000\n"));
  EXPECT_THAT(text, HasSubstr("paged_worker_host_share{worker=\"cuda:1\"} 0.84\n"));
  EXPECT_THAT(text, Not(HasSubstr("paged_worker_host_share{worker=\"cuda:0\"")));
  // A share alone (the first steps read nothing in place yet) is the hybrid step too.
  WorkerMetrics tuned = m.ForWorker("cuda:2");
  WorkerCountersDelta s{1, 100, 0, 0.1};
  s.host_share = 0.5;
  m.OnWorkerCounters(tuned, s, 1'000'000);
  m.SetWorkerGauges("cuda:2", tuned, /*link=*/0, 1'000'000);
  EXPECT_THAT(m.Render(), HasSubstr("paged_worker_host_weight_bytes_total{worker=\"cuda:2\"} 0\n"));
  EXPECT_THAT(m.Render(), HasSubstr("paged_worker_host_share{worker=\"cuda:2\"} 0.5\n"));
  // Gone: no gauge; the total stays.
  m.ClearWorkerGauges("cuda:1");
  EXPECT_THAT(m.Render(), Not(HasSubstr("paged_worker_host_share{worker=\"cuda:1\"")));
  EXPECT_THAT(m.Render(),
              HasSubstr("paged_worker_host_weight_bytes_total{worker=\"cuda:1\"} 9000\n"));
}

}  // namespace
}  // namespace paged
