// Converting a checkpoint tensor into its store form: element type
// conversion, group quantization and the RoPE row permutation.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "store/model_source.h"

namespace paged {

// Decodes row `row` of `t` (in the source's own row order) to floats.
void SourceRowToFloat(const SourceTensor& t, int64_t row, float* out);

// The source row that lands in destination row `dst_row` (identity unless
// the tensor carries a RoPE permutation).
int64_t SourceRowFor(const SourceTensor& t, int64_t dst_row);

// Writes `t` as `dst` into `payload` (PayloadBytes(dst, rows, cols)) and, for
// quantized types, `scales` (rows * GroupsPerRow(cols, group) f16). Rows are
// split over `threads` threads. GGUF Q8_0 into int8 with group 32 is copied
// without requantizing.
void ConvertTensor(const SourceTensor& t, DType dst, int group, uint8_t* payload, uint8_t* scales,
                   int threads);

}  // namespace paged
