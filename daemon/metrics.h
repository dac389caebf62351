// A small Prometheus metrics library: counters, gauges and histograms with
// fixed buckets, in families with labels, rendered in the text exposition
// format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
//
//   metrics::Registry r;
//   metrics::Counter& reqs = r.AddCounter("paged_requests_total", "Requests.");
//   metrics::Family<metrics::Gauge>& bw =
//       r.AddGaugeFamily("paged_worker_h2d_bytes_per_second", "H2D rate.", {"worker"});
//   reqs.Inc();
//   bw.With({"w0"}).Set(5.5e10);
//   std::string text = r.Render();
//
// Updating a metric is one relaxed atomic operation (a histogram: two), so
// the hot path may update them under any lock or none. Rendering reads the
// atomics without stopping the writers: a scrape sees each value at some
// moment of the render. Families and metrics are created at start (or, for
// a new label value, on first use) and live as long as the registry;
// references to them stay valid (until Family::Remove of that label value).
// Names are constants of the program: an invalid name, a counter not ending
// in _total or unsorted buckets abort at registration (a programming error).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace paged::metrics {

// A monotonically increasing value (it restarts from 0 with the process).
class Counter {
 public:
  void Inc(double v = 1) { value_.fetch_add(v, std::memory_order_relaxed); }
  // Mirrors a monotonic total kept elsewhere (read at each scrape): the
  // counter takes it unless it would go down.
  void SetTotal(double total) {
    double v = value_.load(std::memory_order_relaxed);
    while (total > v && !value_.compare_exchange_weak(v, total, std::memory_order_relaxed)) {
    }
  }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted in fixed buckets (upper bounds, inclusive: le), plus
// their sum. The +Inf bucket is implicit.
class Histogram {
 public:
  // `upper_bounds`: strictly increasing and finite (aborts otherwise).
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double v);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (= count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Read() const;
  const std::vector<double>& upper_bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // one per bound, then +Inf (not cumulative)
  std::atomic<double> sum_{0};
};

// Buckets: `count` bounds start, start*factor, ... (like prometheus'
// ExponentialBuckets).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

enum class Type { kCounter, kGauge, kHistogram };

// One metric name with its help text and label names; a metric per
// combination of label values.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;
  // Appends "# HELP", "# TYPE" and every sample line to `out`.
  void Render(std::string* out) const;
  const std::string& name() const { return name_; }

 protected:
  // The sample lines of every metric of the family.
  virtual void RenderMetrics(std::string* out) const = 0;
  // `{a="x",b="y"` for these label values plus `extra` (`le="0.5"`), then
  // `}`; nothing when there is no label at all.
  void RenderLabels(const std::vector<std::string>& values, std::string_view extra,
                    std::string* out) const;

  const std::string name_;
  const std::string help_;
  const Type type_;
  const std::vector<std::string> label_names_;
};

template <class M>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, Type type, std::vector<std::string> label_names,
         std::vector<double> buckets = {})
      : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
        buckets_(std::move(buckets)) {}

  // The metric of these label values (one per label name, in order), made
  // on first use. Aborts when the count is wrong (a programming error).
  M& With(const std::vector<std::string>& values) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops the metric of these label values (no sample rendered any more).
  void Remove(const std::vector<std::string>& values) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void RenderMetrics(std::string* out) const override ABSL_LOCKS_EXCLUDED(mu_);

  const std::vector<double> buckets_;  // histograms
  mutable absl::Mutex mu_;
  // The map only: a metric's value is atomic and updated without mu_.
  std::map<std::vector<std::string>, std::unique_ptr<M>> metrics_ ABSL_GUARDED_BY(mu_);
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // A family without labels and its single metric.
  Counter& AddCounter(std::string name, std::string help);
  Gauge& AddGauge(std::string name, std::string help);
  Histogram& AddHistogram(std::string name, std::string help, std::vector<double> buckets);

  Family<Counter>& AddCounterFamily(std::string name, std::string help,
                                    std::vector<std::string> label_names);
  Family<Gauge>& AddGaugeFamily(std::string name, std::string help,
                                std::vector<std::string> label_names);
  Family<Histogram>& AddHistogramFamily(std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> buckets);

  // Every family, in registration order, in the text format 0.0.4.
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  template <class M>
  Family<M>& Add(std::string name, std::string help, Type type,
                 std::vector<std::string> label_names, std::vector<double> buckets = {})
      ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_ ABSL_GUARDED_BY(mu_);
};

// The content type of Render()'s text.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// A sample value as Prometheus writes it: integers without a fraction,
// others in the shortest form that reads back exactly, "+Inf", "-Inf", "NaN".
std::string FormatValue(double v);
// A label value with \, " and newline escaped.
std::string EscapeLabelValue(std::string_view v);
// [a-zA-Z_:][a-zA-Z0-9_:]* (metric names); labels: no ':' and no "__" prefix.
bool IsValidMetricName(std::string_view name);
bool IsValidLabelName(std::string_view name);

}  // namespace paged::metrics
