#include "daemon/serving_metrics.h"

namespace paged {
namespace {

constexpr TimeUs kSampleEveryUs = 100'000;  // TransferRate keeps one sample per 100 ms

// Seconds from 1 ms to about 2 minutes: a first token waits in the queue and
// for a prefill; a step pages a whole model.
const std::vector<double> kLatencyBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                             0.5,   1,      2.5,   5,    10,    30,   60,  120};

// The expert counters by ExpertCounter: their field and their family.
struct ExpertField {
  uint64_t (v1::WorkerCounters::*total)() const;
  const char* metric;
  const char* help;
};
const ExpertField kExpertFields[kExpertCounters] = {
    {&v1::WorkerCounters::expert_hits, "paged_worker_expert_cache_hits_total",
     "Routed experts a worker found in its device expert cache (expert-level paging, "
     "docs/pager.md; hit rate: this over hits + misses + host)."},
    {&v1::WorkerCounters::expert_misses, "paged_worker_expert_cache_misses_total",
     "Routed experts a worker copied into its expert cache over the link when a step needed "
     "them."},
    {&v1::WorkerCounters::expert_host, "paged_worker_expert_host_total",
     "Routed experts missing from a worker's expert cache that its host executor computed in "
     "place (nothing copied)."},
    {&v1::WorkerCounters::expert_evictions, "paged_worker_expert_cache_evictions_total",
     "Experts a worker's expert cache dropped to make room for another."},
    {&v1::WorkerCounters::expert_admitted, "paged_worker_expert_admitted_total",
     "Host-computed experts a worker also copied into its expert cache for later steps."},
    {&v1::WorkerCounters::expert_prefetched, "paged_worker_expert_prefetched_total",
     "Experts a worker copied in ahead, on the next layer's predicted routing."},
    {&v1::WorkerCounters::h2d_expert_bytes, "paged_worker_h2d_expert_bytes_total",
     "Of paged_worker_h2d_bytes_total: the experts a worker copied in, over its restarts."},
    {&v1::WorkerCounters::host_expert_bytes, "paged_worker_host_expert_bytes_total",
     "Weight bytes of the experts a worker's host executor computed in place."},
};

}  // namespace

ExpertCounts ExpertCountsOf(const v1::WorkerCounters& c) {
  ExpertCounts n{};
  for (int i = 0; i < kExpertCounters; ++i) n[size_t(i)] = (c.*kExpertFields[i].total)();
  return n;
}

bool WorkerCountersDelta::any_experts() const {
  for (uint64_t n : experts)
    if (n != 0) return true;
  return false;
}

std::string_view RequestStatusName(RequestStatus s) {
  switch (s) {
    case RequestStatus::kEos:
      return "eos";
    case RequestStatus::kStop:
      return "stop";
    case RequestStatus::kLength:
      return "length";
    case RequestStatus::kCancelled:
      return "cancelled";
    case RequestStatus::kError:
      return "error";
    case RequestStatus::kDeadline:
      return "deadline";
    case RequestStatus::kRejected:
      return "rejected";
  }
  return "error";
}

WorkerCountersDelta CountersDelta(const v1::WorkerCounters& before,
                                  const v1::WorkerCounters& after) {
  // A total below the previous one: the worker restarted and counts from 0.
  const ExpertCounts was = ExpertCountsOf(before), is = ExpertCountsOf(after);
  bool restarted = after.steps() < before.steps() || after.h2d_bytes() < before.h2d_bytes() ||
                   after.d2h_bytes() < before.d2h_bytes() || after.busy_s() < before.busy_s();
  for (int i = 0; i < kExpertCounters; ++i) restarted = restarted || is[size_t(i)] < was[size_t(i)];
  restarted = restarted || after.host_weight_bytes() < before.host_weight_bytes();
  WorkerCountersDelta d;
  d.steps = restarted ? after.steps() : after.steps() - before.steps();
  d.h2d_bytes = restarted ? after.h2d_bytes() : after.h2d_bytes() - before.h2d_bytes();
  d.d2h_bytes = restarted ? after.d2h_bytes() : after.d2h_bytes() - before.d2h_bytes();
  d.busy_s = restarted ? after.busy_s() : after.busy_s() - before.busy_s();
  for (int i = 0; i < kExpertCounters; ++i)
    d.experts[size_t(i)] = restarted ? is[size_t(i)] : is[size_t(i)] - was[size_t(i)];
  d.host_weight_bytes = restarted ? after.host_weight_bytes()
                                  : after.host_weight_bytes() - before.host_weight_bytes();
  d.host_share = after.host_share();
  return d;
}

// ---- TransferRate ----

void TransferRate::Add(TimeUs now, const WorkerCountersDelta& d) {
  if (samples_.empty()) samples_.push_back({now, 0, 0, 0});  // the base
  Sample next = samples_.back();
  next.at = now;
  next.h2d += double(d.h2d_bytes);
  next.d2h += double(d.d2h_bytes);
  next.busy_s += d.busy_s;
  // Within 100 ms of the previous report (and not the base): move it forward.
  if (samples_.size() >= 2 && now - samples_.back().at < kSampleEveryUs)
    samples_.back() = next;
  else
    samples_.push_back(next);
  // Keep one sample at or before the window's start as the base.
  while (samples_.size() > 2 && samples_[1].at <= now - window_us_) samples_.pop_front();
}

TransferRate::Rates TransferRate::Get(TimeUs now) const {
  Rates r;
  if (samples_.size() < 2 || samples_.back().at < now - window_us_) return r;
  // The base: the newest sample at or before the window's start, else the oldest.
  size_t b = 0;
  while (b + 2 < samples_.size() && samples_[b + 1].at <= now - window_us_) ++b;
  const Sample& first = samples_[b];
  const Sample& last = samples_.back();
  const double busy = last.busy_s - first.busy_s;
  if (busy <= 0) return r;
  r.h2d_bytes_per_s = (last.h2d - first.h2d) / busy;
  r.d2h_bytes_per_s = (last.d2h - first.d2h) / busy;
  return r;
}

// ---- ServingMetrics ----

ServingMetrics::ServingMetrics()
    : requests_family_(registry_.AddCounterFamily(
          "paged_requests_total",
          "Generation requests by how they ended: eos, stop (stop string or stop id), length "
          "(max_tokens), cancelled (client gone or Admin cancel), error, deadline, rejected "
          "(refused before admission: bad fields, queue full).",
          {"status"})),
      prompt_tokens(registry_.AddCounter("paged_prompt_tokens_total",
                                         "Prompt tokens of the admitted requests.")),
      generated_tokens(registry_.AddCounter(
          "paged_generated_tokens_total",
          "Tokens generated and committed (each exactly once, whether or not a client still "
          "reads them).")),
      time_to_first_token(registry_.AddHistogram(
          "paged_time_to_first_token_seconds",
          "From admission to the first generated token reaching the request's stream.",
          kLatencyBuckets)),
      step_seconds(registry_.AddHistogram(
          "paged_step_seconds", "A worker's time for one step (all its sequences), as reported.",
          kLatencyBuckets)),
      queue_depth(registry_.AddGauge("paged_queue_depth", "Requests waiting to be scheduled.")),
      running_sequences(
          registry_.AddGauge("paged_running_sequences", "Sequences leased to a worker (running).")),
      kv_blocks_used(
          registry_.AddGauge("paged_kv_blocks_used", "KV pool blocks held by sequences.")),
      kv_blocks_free(registry_.AddGauge(
          "paged_kv_blocks_free", "KV pool blocks free or cached and unreferenced (evictable).")),
      kv_blocks_cached(
          registry_.AddGauge("paged_kv_blocks_cached",
                             "KV blocks published in the prefix cache (referenced or not).")),
      waiting_for_kv(
          registry_.AddGauge("paged_sequences_waiting_for_kv",
                             "Sequences preempted to wait for KV blocks (they keep their rows).")),
      kv_preemptions(registry_.AddCounter(
          "paged_kv_preemptions_total",
          "Times a sequence left its worker to wait for KV blocks (nothing is recomputed).")),
      prefix_cache_lookup_tokens(registry_.AddCounter(
          "paged_prefix_cache_lookup_tokens_total",
          "Prompt tokens of the sequences that started (looked up in the prefix cache).")),
      prefix_cache_hit_tokens(registry_.AddCounter(
          "paged_prefix_cache_hit_tokens_total",
          "Prompt tokens whose KV rows came from the prefix cache (hit rate: this over "
          "paged_prefix_cache_lookup_tokens_total).")),
      kv_cache_evictions(registry_.AddCounter("paged_kv_cache_evictions_total",
                                              "Cached KV blocks taken back for new rows.")),
      workers_attached(
          registry_.AddGauge("paged_workers_attached", "Workers attached (ATTACHED or DRAINING).")),
      worker_steps_(registry_.AddCounterFamily("paged_worker_steps_total",
                                               "Steps a worker completed.", {"worker"})),
      worker_h2d_(registry_.AddCounterFamily(
          "paged_worker_h2d_bytes_total",
          "Bytes a worker copied host to device (weights and KV), over its restarts.", {"worker"})),
      worker_d2h_(registry_.AddCounterFamily(
          "paged_worker_d2h_bytes_total",
          "Bytes a worker copied device to host (KV write-back), over its restarts.", {"worker"})),
      worker_busy_(registry_.AddCounterFamily("paged_worker_busy_seconds_total",
                                              "Seconds a worker spent in steps.", {"worker"})),
      worker_restarts_(registry_.AddCounterFamily(
          "paged_worker_restarts_total",
          "Times a worker id attached again after its first attachment.", {"worker"})),
      worker_host_weight_(registry_.AddCounterFamily(
          "paged_worker_host_weight_bytes_total",
          "Weight bytes a worker's host executor read in place (the hybrid step's host rows and "
          "the experts it computed), over its restarts; only workers that run the hybrid step.",
          {"worker"})),
      worker_host_share_(registry_.AddGaugeFamily(
          "paged_worker_host_share",
          "The hybrid step's host share of each paged matrix at one token row (the tuned share, "
          "else the last step's); only attached workers that run the hybrid step.",
          {"worker"})),
      worker_h2d_rate_(registry_.AddGaugeFamily(
          "paged_worker_h2d_bytes_per_second",
          "Host-to-device bytes per second of step time over the last 10 s (the achieved "
          "GB/s x 1e9); 0 when the worker ran no step.",
          {"worker"})),
      worker_d2h_rate_(registry_.AddGaugeFamily(
          "paged_worker_d2h_bytes_per_second",
          "Device-to-host bytes per second of step time over the last 10 s.", {"worker"})),
      worker_link_(registry_.AddGaugeFamily(
          "paged_worker_link_h2d_bytes_per_second",
          "The host-to-device bandwidth the worker measured on its link (only workers that "
          "report one).",
          {"worker"})),
      worker_bound_fraction_(registry_.AddGaugeFamily(
          "paged_worker_pcie_bound_fraction",
          "Achieved host-to-device bytes per second over the worker's measured link bandwidth "
          "(only workers that report one).",
          {"worker"})) {
  // Every status present from the first scrape.
  for (int s = 0; s < kRequestStatuses; ++s)
    requests_[s] = &requests_family_.With({std::string(RequestStatusName(RequestStatus(s)))});
  for (int i = 0; i < kExpertCounters; ++i) {
    worker_experts_[size_t(i)] =
        &registry_.AddCounterFamily(kExpertFields[i].metric, kExpertFields[i].help, {"worker"});
  }
}

WorkerMetrics ServingMetrics::ForWorker(const std::string& worker_id) {
  WorkerMetrics w;
  w.worker_id = worker_id;
  w.steps = &worker_steps_.With({worker_id});
  w.h2d_bytes = &worker_h2d_.With({worker_id});
  w.d2h_bytes = &worker_d2h_.With({worker_id});
  w.busy_seconds = &worker_busy_.With({worker_id});
  w.restarts = &worker_restarts_.With({worker_id});
  return w;
}

void ServingMetrics::AddExpertMetrics(WorkerMetrics& w) {
  for (int i = 0; i < kExpertCounters; ++i) {
    if (w.experts[size_t(i)] == nullptr)
      w.experts[size_t(i)] = &worker_experts_[size_t(i)]->With({w.worker_id});
  }
}

void ServingMetrics::OnWorkerCounters(WorkerMetrics& w, const WorkerCountersDelta& d, TimeUs now) {
  w.steps->Inc(double(d.steps));
  w.h2d_bytes->Inc(double(d.h2d_bytes));
  w.d2h_bytes->Inc(double(d.d2h_bytes));
  w.busy_seconds->Inc(d.busy_s);
  if (d.any_experts()) AddExpertMetrics(w);
  for (int i = 0; i < kExpertCounters; ++i) {
    if (w.experts[size_t(i)] != nullptr) w.experts[size_t(i)]->Inc(double(d.experts[size_t(i)]));
  }
  if (d.any_hybrid() && w.host_weight_bytes == nullptr)
    w.host_weight_bytes = &worker_host_weight_.With({w.worker_id});
  if (w.host_weight_bytes != nullptr) w.host_weight_bytes->Inc(double(d.host_weight_bytes));
  w.host_share = d.host_share;
  w.rate.Add(now, d);
}

void ServingMetrics::SetWorkerGauges(const std::string& worker_id, const WorkerMetrics& w,
                                     double link_h2d_bytes_per_s, TimeUs now) {
  const TransferRate::Rates r = w.rate.Get(now);
  worker_h2d_rate_.With({worker_id}).Set(r.h2d_bytes_per_s);
  worker_d2h_rate_.With({worker_id}).Set(r.d2h_bytes_per_s);
  if (link_h2d_bytes_per_s > 0) {
    worker_link_.With({worker_id}).Set(link_h2d_bytes_per_s);
    worker_bound_fraction_.With({worker_id}).Set(r.h2d_bytes_per_s / link_h2d_bytes_per_s);
  } else {
    worker_link_.Remove({worker_id});
    worker_bound_fraction_.Remove({worker_id});
  }
  if (w.host_weight_bytes != nullptr)
    worker_host_share_.With({worker_id}).Set(w.host_share);
  else
    worker_host_share_.Remove({worker_id});
}

void ServingMetrics::ClearWorkerGauges(const std::string& worker_id) {
  worker_h2d_rate_.Remove({worker_id});
  worker_d2h_rate_.Remove({worker_id});
  worker_link_.Remove({worker_id});
  worker_bound_fraction_.Remove({worker_id});
  worker_host_share_.Remove({worker_id});
}

}  // namespace paged
