// RoPE inverse frequencies, computed once on the host and shared by every
// backend, so that CPU and CUDA rotate by bit-identical angles.
#pragma once

#include "worker/engine/types.h"

namespace paged {

// HF's inv_freq = 1 / theta^(arange(0, d, 2) / d) in f32, with llama3
// scaling as transformers' _compute_llama3_parameters. inv_freq: [head_dim / 2].
void RopeInvFreq(const RopeParams& p, float* inv_freq);

}  // namespace paged
