#include "worker/engine/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace paged {
namespace {

// transformers' _compute_llama3_parameters.
void Llama3(const RopeParams& p, float* inv_freq) {
  const int half = p.head_dim / 2;
  const float old_ctx = float(p.original_max_pos);
  const float low_freq_wavelen = old_ctx / p.low_freq_factor;
  const float high_freq_wavelen = old_ctx / p.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    const float freq = inv_freq[i];
    const float wavelen = 2.f * std::numbers::pi_v<float> / freq;
    if (wavelen < high_freq_wavelen) continue;  // high frequency: kept
    if (wavelen > low_freq_wavelen) {           // low frequency: slowed by factor
      inv_freq[i] = freq / p.factor;
      continue;
    }
    const float smooth =
        (old_ctx / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
    inv_freq[i] = (1.f - smooth) * freq / p.factor + smooth * freq;
  }
}

// transformers' _compute_yarn_parameters: interpolated (slowed by factor)
// frequencies below the correction range, extrapolated (kept) above it, a
// linear ramp between. The range is in double as Python computes it, the
// frequencies in f32 as torch does.
void Yarn(const RopeParams& p, float* inv_freq) {
  const int dim = p.head_dim, half = dim / 2;
  auto correction_dim = [&](double rotations) {
    return dim * std::log(p.original_max_pos / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(double(p.theta)));
  };
  double low = correction_dim(p.beta_fast), high = correction_dim(p.beta_slow);
  if (p.yarn_truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;  // transformers: "prevent singularity"
  const float flow = float(low), span = float(high - low);
  for (int i = 0; i < half; ++i) {
    const float pos_freq = std::pow(p.theta, float(2 * i) / float(dim));
    const float extrapolation = 1.f / pos_freq;
    const float interpolation = 1.f / (p.factor * pos_freq);
    const float ramp = std::clamp((float(i) - flow) / span, 0.f, 1.f);
    const float extrapolation_factor = 1.f - ramp;
    inv_freq[i] =
        interpolation * (1.f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
}

}  // namespace

void RopeInvFreq(const RopeParams& p, float* inv_freq) {
  const int half = p.head_dim / 2;
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = 1.f / std::pow(p.theta, float(2 * i) / float(p.head_dim));
  }
  switch (p.scaling) {
    case RopeScaling::kNone:
    case RopeScaling::kDynamic:  // scales only past max_position_embeddings
      return;
    case RopeScaling::kLlama3:
      return Llama3(p, inv_freq);
    case RopeScaling::kLinear:
      for (int i = 0; i < half; ++i) inv_freq[i] /= p.factor;
      return;
    case RopeScaling::kYarn:
      return Yarn(p, inv_freq);
    case RopeScaling::kLongRope:
      for (int i = 0; i < half; ++i) {
        inv_freq[i] =
            1.f / (p.ext_factors[i] * std::pow(p.theta, float(2 * i) / float(p.head_dim)));
      }
      return;
  }
}

}  // namespace paged
