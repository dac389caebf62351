// RoPE inverse frequencies, computed once on the host and shared by every
// backend, so that CPU and CUDA rotate by bit-identical angles.
#pragma once

#include "worker/engine/types.h"

namespace paged {

// HF's inv_freq = 1 / theta^(arange(0, d, 2) / d) in f32, scaled as
// transformers' modeling_rope_utils computes it for p.scaling: llama3,
// linear (/ factor), yarn (interpolation ramp between beta_fast and
// beta_slow), longrope (/ ext_factors[i]); dynamic NTK changes nothing inside
// max_position_embeddings, the end of our context. inv_freq: [head_dim / 2].
// p.attn_factor is not part of it: the Rope op multiplies cos / sin by it.
void RopeInvFreq(const RopeParams& p, float* inv_freq);

}  // namespace paged
