#include "worker/engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace paged {

int32_t SampleRow(const float* logits, int vocab, const SamplingParams& p, int32_t pos) {
  if (!(p.temperature > 0.f)) {
    int32_t best = 0;
    for (int32_t i = 1; i < vocab; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    return best;
  }
  std::vector<float> probs(static_cast<size_t>(vocab));
  float mx = logits[0];
  for (int i = 1; i < vocab; ++i) mx = std::max(mx, logits[i]);
  float sum = 0.f;
  for (int i = 0; i < vocab; ++i) {
    probs[i] = std::exp((logits[i] - mx) / p.temperature);
    sum += probs[i];
  }
  for (float& x : probs) x /= sum;

  float threshold = 0.f;  // keep ids with prob >= threshold
  if (p.top_k > 0 && p.top_k < vocab) {
    std::vector<float> sorted = probs;
    std::nth_element(sorted.begin(), sorted.begin() + (p.top_k - 1), sorted.end(),
                     std::greater<float>());
    threshold = sorted[size_t(p.top_k - 1)];
  }
  if (p.top_p > 0.f && p.top_p < 1.f) {
    std::vector<float> kept;
    float total = 0.f;
    for (float x : probs) {
      if (x >= threshold) {
        kept.push_back(x);
        total += x;
      }
    }
    std::sort(kept.begin(), kept.end(), std::greater<float>());
    float run = 0.f;
    for (size_t i = 0; i < kept.size(); ++i) {
      run += kept[i];
      if (run >= p.top_p * total) {
        threshold = std::max(threshold, kept[i]);
        break;
      }
    }
  }
  float kept_total = 0.f;
  for (float x : probs) {
    if (x >= threshold) kept_total += x;
  }
  const float target = SampleUniform(p.seed, pos) * kept_total;
  float run = 0.f;
  int32_t last = 0;
  for (int32_t i = 0; i < vocab; ++i) {
    if (probs[i] < threshold) continue;
    run += probs[i];
    last = i;
    if (run > target) return i;
  }
  return last;
}

}  // namespace paged
