// Converting a checkpoint tensor into its store form: element type
// conversion, group quantization and the RoPE row permutation. GGUF block
// formats are either kept (their rows copied unchanged) or decoded through
// the reference dequantizer (common/block_quant.h) and converted.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "store/model_source.h"

namespace paged {

// The store type holding a source type unchanged: f32, f16, bf16, or the
// block format of the same name (Q8_0 -> q8_0, Q4_K -> q4_k, ...).
DType StoredDType(SourceType t);
// A GGUF block format (Q8_0 included).
inline bool IsBlockSource(SourceType t) { return IsBlockFormat(StoredDType(t)); }

// Decodes row `row` of `t` (in the source's own row order) to floats (strided
// views and HF's MXFP4 included: SourceTensor::row_stride ...).
void SourceRowToFloat(const SourceTensor& t, int64_t row, float* out);

// The source row that lands in destination row `dst_row` (identity unless
// the tensor carries a RoPE permutation).
int64_t SourceRowFor(const SourceTensor& t, int64_t dst_row);

// Writes `t` as `dst` into `payload` (PayloadBytes(dst, rows, cols)) and, for
// quantized types, `scales` (rows * GroupsPerRow(cols, group) f16). Rows are
// split over `threads` threads. `dst` == StoredDType(t.type) copies the rows
// unchanged (permuted only); GGUF Q8_0 into int8 with group 32 moves the
// scales out of the blocks without requantizing. A block format `dst` other
// than the source's own is not a conversion this makes (PAGED_CHECK).
void ConvertTensor(const SourceTensor& t, DType dst, int group, uint8_t* payload, uint8_t* scales,
                   int threads);

}  // namespace paged
