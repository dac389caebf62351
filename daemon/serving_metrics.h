// The coordinator's Prometheus metrics (docs/http.md lists them with their
// meaning). Counters and histograms are updated where things happen — the
// front ends (GenerationStream: requests by final status, time to first
// token) and the coordinator under its mutex (tokens, step times, workers'
// bytes) — with one atomic operation each; gauges are filled when
// /metrics is scraped (Coordinator::RenderMetrics).
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "daemon/metrics.h"
#include "daemon/scheduler.h"
#include "paged/v1/admin.pb.h"

namespace paged {

// How a request ended, as its client saw it: the status label of
// paged_requests_total.
enum class RequestStatus { kEos, kStop, kLength, kCancelled, kError, kDeadline, kRejected };
inline constexpr int kRequestStatuses = 7;
std::string_view RequestStatusName(RequestStatus s);

// Expert-level paging's counters of v1::WorkerCounters (docs/pager.md,
// "Experts"), as indices: each is the paged_worker_<name>_total family.
enum ExpertCounter {
  kExpertHits,        // expert_cache_hits: found in the device expert cache
  kExpertMisses,      // expert_cache_misses: copied in over the link
  kExpertHost,        // expert_host: computed by the host executor in place
  kExpertEvictions,   // expert_cache_evictions
  kExpertAdmitted,    // expert_admitted: host-computed, also copied in
  kExpertPrefetched,  // expert_prefetched: copied in on a predicted routing
  kH2dExpertBytes,    // h2d_expert_bytes
  kHostExpertBytes,   // host_expert_bytes
  kExpertCounters
};
using ExpertCounts = std::array<uint64_t, kExpertCounters>;
// A report's expert counters by ExpertCounter.
ExpertCounts ExpertCountsOf(const v1::WorkerCounters& c);

// What a worker's totals grew by between two reports. A worker that
// restarted reports totals from zero again: then its new totals are the
// growth.
struct WorkerCountersDelta {
  uint64_t steps = 0;
  uint64_t h2d_bytes = 0;
  uint64_t d2h_bytes = 0;
  double busy_s = 0;
  ExpertCounts experts{};  // all 0 for a worker that pages whole layers
  // The hybrid step (docs/hybrid.md): weight bytes the host read in place,
  // and the host share as of the later report (a gauge: not a growth).
  uint64_t host_weight_bytes = 0;
  double host_share = 0;
  bool any_experts() const;
  bool any_hybrid() const { return host_weight_bytes != 0 || host_share > 0; }
};
WorkerCountersDelta CountersDelta(const v1::WorkerCounters& before,
                                  const v1::WorkerCounters& after);

// A worker's bytes moved per second of step time (busy time) over the last
// `window_us`: what its link achieved while it worked.
class TransferRate {
 public:
  explicit TransferRate(TimeUs window_us = 10'000'000) : window_us_(window_us) {}
  void Add(TimeUs now, const WorkerCountersDelta& d);
  struct Rates {
    double h2d_bytes_per_s = 0;
    double d2h_bytes_per_s = 0;
  };
  // 0 when the worker ran no step in the window.
  Rates Get(TimeUs now) const;

 private:
  struct Sample {
    TimeUs at = 0;
    double h2d = 0, d2h = 0, busy_s = 0;  // running totals
  };
  TimeUs window_us_;
  std::deque<Sample> samples_;  // at most one per 100 ms
};

// A worker's labelled metrics (the families' children for its id).
struct WorkerMetrics {
  metrics::Counter* steps = nullptr;
  metrics::Counter* h2d_bytes = nullptr;
  metrics::Counter* d2h_bytes = nullptr;
  metrics::Counter* busy_seconds = nullptr;
  metrics::Counter* restarts = nullptr;
  // By ExpertCounter; null until the worker says it pages experts (its plan
  // has an expert cache, or it reports expert counters), so that a dense
  // model's workers have none of these series.
  std::array<metrics::Counter*, kExpertCounters> experts{};
  // The hybrid step's: null until the worker reports host rows or a host
  // share, so that a worker without it has none of these series.
  metrics::Counter* host_weight_bytes = nullptr;
  double host_share = 0;  // as last reported; paged_worker_host_share at a scrape
  TransferRate rate;
  std::string worker_id;
};

class ServingMetrics {
 public:
  ServingMetrics();
  ServingMetrics(const ServingMetrics&) = delete;
  ServingMetrics& operator=(const ServingMetrics&) = delete;

  void CountRequest(RequestStatus s) { requests_[int(s)]->Inc(); }
  // The children of the per-worker families for `worker_id`.
  WorkerMetrics ForWorker(const std::string& worker_id);
  // The children of the per-worker expert families for `w` (at 0), once.
  void AddExpertMetrics(WorkerMetrics& w);
  // A worker's report: its counters grew by `d` at `now` (expert counters
  // that grew add the expert families' children, host rows or a host share
  // the hybrid step's).
  void OnWorkerCounters(WorkerMetrics& w, const WorkerCountersDelta& d, TimeUs now);
  // The per-worker gauges of an attached worker; `link_h2d_bytes_per_s`:
  // its measured link (0: unknown, then no PCIe-bound fraction). The host
  // share only for a worker that runs the hybrid step.
  void SetWorkerGauges(const std::string& worker_id, const WorkerMetrics& w,
                       double link_h2d_bytes_per_s, TimeUs now);
  // A worker that is gone has no rate gauges.
  void ClearWorkerGauges(const std::string& worker_id);

  std::string Render() const { return registry_.Render(); }

 private:
  metrics::Registry registry_;
  metrics::Family<metrics::Counter>& requests_family_;
  metrics::Counter* requests_[kRequestStatuses] = {};

 public:
  // Updated where things happen.
  metrics::Counter& prompt_tokens;
  metrics::Counter& generated_tokens;
  metrics::Histogram& time_to_first_token;
  metrics::Histogram& step_seconds;
  // Set at scrape time.
  metrics::Gauge& queue_depth;
  metrics::Gauge& running_sequences;
  metrics::Gauge& kv_blocks_used;
  metrics::Gauge& kv_blocks_free;
  metrics::Gauge& kv_blocks_cached;
  metrics::Gauge& waiting_for_kv;
  // Totals the scheduler keeps, mirrored at each scrape (Counter::SetTotal).
  metrics::Counter& kv_preemptions;
  metrics::Counter& prefix_cache_lookup_tokens;
  metrics::Counter& prefix_cache_hit_tokens;
  metrics::Counter& kv_cache_evictions;
  metrics::Gauge& workers_attached;

 private:
  metrics::Family<metrics::Counter>& worker_steps_;
  metrics::Family<metrics::Counter>& worker_h2d_;
  metrics::Family<metrics::Counter>& worker_d2h_;
  metrics::Family<metrics::Counter>& worker_busy_;
  metrics::Family<metrics::Counter>& worker_restarts_;
  std::array<metrics::Family<metrics::Counter>*, kExpertCounters> worker_experts_{};
  metrics::Family<metrics::Counter>& worker_host_weight_;
  metrics::Family<metrics::Gauge>& worker_host_share_;
  metrics::Family<metrics::Gauge>& worker_h2d_rate_;
  metrics::Family<metrics::Gauge>& worker_d2h_rate_;
  metrics::Family<metrics::Gauge>& worker_link_;
  metrics::Family<metrics::Gauge>& worker_bound_fraction_;
};

}  // namespace paged
