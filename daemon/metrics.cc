#include "daemon/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <type_traits>

#include "common/check.h"

namespace paged::metrics {
namespace {

std::string_view TypeName(Type t) {
  switch (t) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// HELP text: backslash and newline escaped.
void AppendHelp(std::string_view help, std::string* out) {
  for (char c : help) {
    if (c == '\\')
      out->append("\\\\");
    else if (c == '\n')
      out->append("\\n");
    else
      out->push_back(c);
  }
}

}  // namespace

// ---- Values and names ----

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
    return buf;
  }
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out.append("\\\\");
    else if (c == '"')
      out.append("\\\"");
    else if (c == '\n')
      out.append("\\n");
    else
      out.push_back(c);
  }
  return out;
}

bool IsValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool IsValidLabelName(std::string_view name) {
  return IsValidMetricName(name) && name.find(':') == std::string_view::npos &&
         name.substr(0, 2) != "__";
}

// ---- Histogram ----

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    PAGED_CHECK(std::isfinite(bounds_[i]) && (i == 0 || bounds_[i] > bounds_[i - 1]),
                "histogram buckets must be finite and strictly increasing");
  }
}

void Histogram::Observe(double v) {
  // The first bound >= v (le is inclusive); NaN lands in +Inf.
  const size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.cumulative.resize(bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.count = total;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  PAGED_CHECK(start > 0 && factor > 1 && count >= 1, "bad exponential buckets");
  std::vector<double> b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

// ---- Families ----

FamilyBase::FamilyBase(std::string name, std::string help, Type type,
                       std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {
  PAGED_CHECK(IsValidMetricName(name_), "invalid metric name '", name_, "'");
  const bool total = name_.size() > 6 && name_.compare(name_.size() - 6, 6, "_total") == 0;
  PAGED_CHECK((type_ == Type::kCounter) == total, "'", name_,
              "': counters, and only counters, end in _total");
  for (const std::string& l : label_names_) {
    PAGED_CHECK(IsValidLabelName(l) && !(type_ == Type::kHistogram && l == "le"), "'", name_,
                "': invalid label name '", l, "'");
  }
}

void FamilyBase::Render(std::string* out) const {
  out->append("# HELP ").append(name_).push_back(' ');
  AppendHelp(help_, out);
  out->append("\n# TYPE ").append(name_).push_back(' ');
  out->append(TypeName(type_)).push_back('\n');
  RenderMetrics(out);
}

void FamilyBase::RenderLabels(const std::vector<std::string>& values, std::string_view extra,
                              std::string* out) const {
  if (values.empty() && extra.empty()) return;
  out->push_back('{');
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out->push_back(',');
    out->append(label_names_[i]).append("=\"").append(EscapeLabelValue(values[i])).push_back('"');
  }
  if (!extra.empty()) {
    if (!values.empty()) out->push_back(',');
    out->append(extra);
  }
  out->push_back('}');
}

template <class M>
M& Family<M>::With(const std::vector<std::string>& values) {
  PAGED_CHECK(values.size() == label_names_.size(), "'", name_, "': ", values.size(),
              " label values for ", label_names_.size(), " labels");
  absl::MutexLock lock(&mu_);
  std::unique_ptr<M>& m = metrics_[values];
  if (m == nullptr) {
    if constexpr (std::is_same_v<M, Histogram>)
      m = std::make_unique<Histogram>(buckets_);
    else
      m = std::make_unique<M>();
  }
  return *m;
}

template <class M>
void Family<M>::Remove(const std::vector<std::string>& values) {
  absl::MutexLock lock(&mu_);
  metrics_.erase(values);
}

template <class M>
void Family<M>::RenderMetrics(std::string* out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [values, m] : metrics_) {
    if constexpr (std::is_same_v<M, Histogram>) {
      const Histogram::Snapshot s = m->Read();
      const std::vector<double>& bounds = m->upper_bounds();
      for (size_t i = 0; i <= bounds.size(); ++i) {
        out->append(name_).append("_bucket");
        const std::string le =
            "le=\"" + (i < bounds.size() ? FormatValue(bounds[i]) : std::string("+Inf")) + "\"";
        RenderLabels(values, le, out);
        out->append(" ").append(FormatValue(double(s.cumulative[i]))).push_back('\n');
      }
      out->append(name_).append("_sum");
      RenderLabels(values, "", out);
      out->append(" ").append(FormatValue(s.sum)).push_back('\n');
      out->append(name_).append("_count");
      RenderLabels(values, "", out);
      out->append(" ").append(FormatValue(double(s.count))).push_back('\n');
    } else {
      out->append(name_);
      RenderLabels(values, "", out);
      out->append(" ").append(FormatValue(m->value())).push_back('\n');
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- Registry ----

template <class M>
Family<M>& Registry::Add(std::string name, std::string help, Type type,
                         std::vector<std::string> label_names, std::vector<double> buckets) {
  auto f = std::make_unique<Family<M>>(std::move(name), std::move(help), type,
                                       std::move(label_names), std::move(buckets));
  Family<M>& ref = *f;
  absl::MutexLock lock(&mu_);
  for (const std::unique_ptr<FamilyBase>& g : families_) {
    PAGED_CHECK(g->name() != ref.name(), "metric '", ref.name(), "' registered twice");
  }
  families_.push_back(std::move(f));
  return ref;
}

Counter& Registry::AddCounter(std::string name, std::string help) {
  return AddCounterFamily(std::move(name), std::move(help), {}).With({});
}

Gauge& Registry::AddGauge(std::string name, std::string help) {
  return AddGaugeFamily(std::move(name), std::move(help), {}).With({});
}

Histogram& Registry::AddHistogram(std::string name, std::string help, std::vector<double> buckets) {
  return AddHistogramFamily(std::move(name), std::move(help), {}, std::move(buckets)).With({});
}

Family<Counter>& Registry::AddCounterFamily(std::string name, std::string help,
                                            std::vector<std::string> label_names) {
  return Add<Counter>(std::move(name), std::move(help), Type::kCounter, std::move(label_names));
}

Family<Gauge>& Registry::AddGaugeFamily(std::string name, std::string help,
                                        std::vector<std::string> label_names) {
  return Add<Gauge>(std::move(name), std::move(help), Type::kGauge, std::move(label_names));
}

Family<Histogram>& Registry::AddHistogramFamily(std::string name, std::string help,
                                                std::vector<std::string> label_names,
                                                std::vector<double> buckets) {
  Histogram probe(buckets);  // validates the buckets at registration
  return Add<Histogram>(std::move(name), std::move(help), Type::kHistogram, std::move(label_names),
                        std::move(buckets));
}

std::string Registry::Render() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const std::unique_ptr<FamilyBase>& f : families_) f->Render(&out);
  return out;
}

}  // namespace paged::metrics
