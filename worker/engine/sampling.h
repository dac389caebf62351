// The definition of sampling, shared by every backend. The CPU backend runs
// SampleRow as written; the CUDA kernel computes the same function (with its
// own summation order).
//
// One row of logits [vocab], params p, position pos (of the token being
// sampled; it feeds the RNG so a sequence's draws do not depend on its batch):
//  1. p.temperature <= 0: argmax, the lowest id among equal maxima. Done.
//  2. probs = softmax(logits / temperature), max-subtracted, in f32.
//  3. top_k in (0, vocab): keep ids whose prob >= the k-th largest prob
//     (ties at the boundary are kept).
//  4. top_p in (0, 1): among the kept, keep ids whose prob >= t, where t is
//     the largest threshold whose kept mass still reaches top_p of the kept
//     total (the nucleus; ties at the boundary are kept).
//  5. u = SampleUniform(p.seed, pos) in [0, 1).
//  6. Walk the kept ids in increasing id order summing probs; the answer is
//     the first id where the running sum exceeds u * (kept total); the last
//     kept id if rounding leaves none.
#pragma once

#include <cstdint>

#include "worker/engine/types.h"

namespace paged {

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) with 24 bits, from (seed, position) only.
inline float SampleUniform(uint64_t seed, int32_t pos) {
  const uint64_t r = SplitMix64(seed ^ SplitMix64(uint64_t(uint32_t(pos))));
  return float(r >> 40) * (1.0f / 16777216.0f);
}

int32_t SampleRow(const float* logits, int vocab, const SamplingParams& p, int32_t pos);

}  // namespace paged
