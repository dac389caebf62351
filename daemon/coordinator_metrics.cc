// Coordinator::RenderMetrics: the gauges read under the mutex, then every
// metric rendered (docs/http.md lists them).
#include "daemon/coordinator.h"

namespace paged {

std::string Coordinator::RenderMetrics() {
  {
    absl::MutexLock lock(&mu_);
    const SchedulerStats st = scheduler_.Stats();
    metrics_.queue_depth.Set(st.queue_depth);
    metrics_.running_sequences.Set(st.running);
    metrics_.kv_blocks_used.Set(st.blocks_used);
    metrics_.kv_blocks_free.Set(st.blocks_free);
    metrics_.kv_blocks_cached.Set(st.blocks_cached);
    metrics_.waiting_for_kv.Set(st.waiting_for_kv);
    metrics_.kv_preemptions.SetTotal(double(st.preemptions));
    metrics_.prefix_cache_lookup_tokens.SetTotal(double(st.prompt_tokens));
    metrics_.prefix_cache_hit_tokens.SetTotal(double(st.cached_prompt_tokens));
    metrics_.kv_cache_evictions.SetTotal(double(st.cache_evictions));
    metrics_.workers_attached.Set(double(live_.size()));
    const TimeUs now = Now();
    for (const auto& [id, rec] : records_) {
      if (live_.count(id) != 0)
        metrics_.SetWorkerGauges(id, rec.metrics, rec.link_h2d_bytes_per_s, now);
      else
        metrics_.ClearWorkerGauges(id);
    }
  }
  return metrics_.Render();
}

}  // namespace paged
