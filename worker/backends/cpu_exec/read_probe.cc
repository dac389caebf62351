// TargetName and SumFloats (matmul.h): which Highway target runs, and a
// streaming read at its vector width for bandwidth measurements.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/read_probe.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/matmul.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

int64_t ChosenTarget() { return HWY_TARGET; }

// Four streams at once (the quarters of the range), as a tile of four weight
// rows reads: one sequential stream per core reaches less of the memory
// bandwidth than several.
float SumFloatsImpl(const float* HWY_RESTRICT p, int64_t count) {
  const hn::ScalableTag<float> df;
  const int64_t n = int64_t(hn::Lanes(df));
  const int64_t quarter = count / 4 / n * n;
  const float* p0 = p;
  const float* p1 = p + quarter;
  const float* p2 = p + 2 * quarter;
  const float* p3 = p + 3 * quarter;
  auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  for (int64_t i = 0; i < quarter; i += n) {
    a0 = hn::Add(a0, hn::LoadU(df, p0 + i));
    a1 = hn::Add(a1, hn::LoadU(df, p1 + i));
    a2 = hn::Add(a2, hn::LoadU(df, p2 + i));
    a3 = hn::Add(a3, hn::LoadU(df, p3 + i));
  }
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (int64_t i = 4 * quarter; i < count; ++i) s += p[i];
  return s;
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(ChosenTarget);
HWY_EXPORT(SumFloatsImpl);

std::string TargetName() { return hwy::TargetName(HWY_DYNAMIC_DISPATCH(ChosenTarget)()); }

float SumFloats(const float* p, int64_t count) {
  return HWY_DYNAMIC_DISPATCH(SumFloatsImpl)(p, count);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
