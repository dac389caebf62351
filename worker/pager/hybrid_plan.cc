#include "worker/pager/hybrid_plan.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace paged {

absl::StatusOr<HybridPolicy> ParseHybridPolicy(const std::string& flag) {
  HybridPolicy p;
  if (flag == "auto") return p;
  if (flag == "planned") {
    p.tune = false;
    return p;
  }
  if (flag == "off") {
    p.mode = HybridPolicy::Mode::kOff;
    return p;
  }
  double v = 0;
  if (absl::SimpleAtod(flag, &v) && v >= 0 && v <= 1) {
    p.mode = HybridPolicy::Mode::kFixed;
    p.fixed_share = v;
    return p;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--host-compute=", flag, ": expected auto, planned, off or a share of the rows in [0, 1]"));
}

double HostGbps(const HybridProfile& p, int n) {
  const auto& v = p.host_gbps;
  if (v.empty()) return 0;
  n = std::max(n, 1);
  if (n <= v.front().first) return v.front().second;
  for (size_t i = 1; i < v.size(); ++i) {
    if (n > v[i].first) continue;
    // Interpolate the time per byte (linear in n between two measurements).
    const double n0 = v[i - 1].first, n1 = v[i].first;
    const double t0 = 1 / std::max(v[i - 1].second, 1e-9), t1 = 1 / std::max(v[i].second, 1e-9);
    const double t = t0 + (t1 - t0) * (n - n0) / std::max(n1 - n0, 1.0);
    return 1 / t;
  }
  // Beyond the last measurement: compute-bound, the time per byte grows with n.
  return v.back().second * double(v.back().first) / double(n);
}

double HostShare(const HybridProfile& p, const HybridPolicy& policy, int n) {
  switch (policy.mode) {
    case HybridPolicy::Mode::kOff:
      return 0;
    case HybridPolicy::Mode::kFixed:
      return std::clamp(policy.fixed_share, 0.0, 1.0);
    case HybridPolicy::Mode::kAuto:
      break;
  }
  if (n > kMaxHostRows) return 0;
  const double host = HostGbps(p, n);
  if (!(host > 0)) return 0;
  if (!(p.link_gbps > 0)) return 1;  // no link measured: nothing is copied faster
  const double s = host / (host + p.link_gbps);
  return s < kMinHostShare ? 0 : s;
}

double PagedSeconds(const HybridProfile& p, double s, int n, double paged_bytes) {
  const double link =
      p.link_gbps > 0 ? (1 - s) * paged_bytes / (p.link_gbps * 1e9) : (s < 1 ? INFINITY : 0);
  const double host_gbps = HostGbps(p, n);
  const double host = s > 0 ? (host_gbps > 0 ? s * paged_bytes / (host_gbps * 1e9) : INFINITY) : 0;
  const double memory =
      p.memory_gbps > 0 && s > 0 && s < 1 ? paged_bytes / (p.memory_gbps * 1e9) : 0;
  return std::max({link, host, memory});
}

double ShareTuner::Probe(const State& s) const {
  return std::clamp(s.center + s.dir * s.delta, o_.lo, o_.hi);
}

double ShareTuner::Next(int n, double planned) {
  last_ = nullptr;
  if (!(planned > 0)) return planned;
  State* s = Find(n);
  if (s == nullptr) {
    states_.emplace_back(n, State{});
    s = &states_.back().second;
    s->center = std::clamp(planned, o_.lo, o_.hi);
    s->delta = o_.delta;
  }
  last_ = s;
  if (s->settled_steps >= 0) {
    if (++s->settled_steps < o_.recheck_steps) return s->center;
    s->settled_steps = -1;  // probe again, from the smallest step
    s->delta = o_.min_delta;
    s->tried = 0;
  }
  // A probe that the bounds clamp onto the center is no probe: other side.
  if (s->probing && Probe(*s) == s->center) s->dir = -s->dir;
  return s->probing ? Probe(*s) : s->center;
}

void ShareTuner::Observe(double seconds) {
  State* s = last_;
  last_ = nullptr;
  if (s == nullptr || s->settled_steps >= 0) return;
  // The first step of a run used layers copied for the share before.
  if (s->step++ > 0) (s->probing ? s->probe_times : s->center_times).push_back(seconds);
  if (s->step <= o_.samples) return;
  s->step = 0;
  if (!s->probing) {
    s->probing = true;
    return;
  }
  s->probing = false;
  auto median = [](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double center = median(s->center_times), probe = median(s->probe_times);
  s->center_times.clear();
  s->probe_times.clear();
  if (probe < center * (1 - o_.min_gain)) {
    s->center = Probe(*s);  // keep going that way
    s->tried = 0;
    return;
  }
  s->dir = -s->dir;
  if (++s->tried < 2) return;
  s->tried = 0;
  s->delta /= 2;
  if (s->delta < o_.min_delta) s->settled_steps = 0;
}

const ShareTuner::State* ShareTuner::Find(int n) const {
  for (const auto& [rows, state] : states_)
    if (rows == n) return &state;
  return nullptr;
}

double ShareTuner::Current(int n) const {
  const State* s = Find(n);
  return s != nullptr ? s->center : -1;
}

bool ShareTuner::Settled(int n) const {
  const State* s = Find(n);
  return s != nullptr && s->settled_steps >= 0;
}

std::string DescribeHybrid(const HybridProfile& p, const HybridPolicy& policy, double paged_bytes) {
  std::string out = absl::StrFormat(
      "hybrid step (--host-compute=%s): link %.1f GB/s, host executor %.1f GB/s at 1 row\n",
      policy.mode == HybridPolicy::Mode::kAuto  ? (policy.tune ? "auto" : "planned")
      : policy.mode == HybridPolicy::Mode::kOff ? "off"
                                                : absl::StrCat(policy.fixed_share),
      p.link_gbps, HostGbps(p, 1));
  if (p.memory_gbps > 0)
    absl::StrAppend(
        &out, absl::StrFormat("  host memory %.1f GB/s for both paths together\n", p.memory_gbps));
  for (int n : {1, 8, 64, 512}) {
    const double s = HostShare(p, policy, n);
    const double t = PagedSeconds(p, s, n, paged_bytes);
    const double paged_only = PagedSeconds(p, 0, n, paged_bytes);
    absl::StrAppend(&out,
                    absl::StrFormat("  %4d rows: host computes %3.0f%% of each paged matrix, paged "
                                    "weights %7.1f ms (%5.1f ms all copied)\n",
                                    n, 100 * s, 1e3 * t, 1e3 * paged_only));
  }
  return out;
}

}  // namespace paged
