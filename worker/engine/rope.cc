#include "worker/engine/rope.h"

#include <cmath>
#include <numbers>

namespace paged {

void RopeInvFreq(const RopeParams& p, float* inv_freq) {
  const int half = p.head_dim / 2;
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = 1.f / std::pow(p.theta, float(2 * i) / float(p.head_dim));
  }
  if (p.scaling != RopeScaling::kLlama3) return;
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

}  // namespace paged
