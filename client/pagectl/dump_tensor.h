// pagectl dump-tensor: one tensor of a model file or of a segment, decoded to
// little-endian f32 rows (the reference decoders: common/block_quant.h for
// the ggml block formats, common/quant.h for int8 / int4).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace paged {

struct DumpTensorOptions {
  std::string model;    // a checkpoint directory or .gguf file, or
  std::string segment;  // a segment name (exactly one of the two)
  // The canonical name ("wq", "w_down", "tok_embd", ...; with `layer` for a
  // layer's tensor) or, for a .gguf model, the file's own name
  // ("blk.0.attn_q.weight", which carries its layer).
  std::string tensor;
  int layer = -1;
  std::string rows;  // "A:B" (either side may be left out), "A", or "" for all
  std::string out;   // the output file (DumpTensor only)
};

struct DumpedTensor {
  std::string label;  // "layer 0 wq"
  std::string type;   // the stored type: "Q4_K" (a model's), "q4_k" (a segment's)
  int64_t rows = 0, cols = 0;
  int64_t row0 = 0, row1 = 0;  // the rows decoded, [row0, row1)
  std::vector<float> values;   // [row1 - row0][cols]
};

// Decodes rows [A, B) of the tensor. Rows of a model are in the file's own
// order; rows of a segment in the segment's (wq / wk of GGUF llama files are
// RoPE-permuted there, see docs/store.md). Unknown tensors, bad rows and
// unreadable files are INVALID_ARGUMENT / NOT_FOUND errors of one line.
absl::StatusOr<DumpedTensor> ReadTensorRows(const DumpTensorOptions& o);

// ReadTensorRows, then the values written to o.out (little-endian f32, row
// after row); `values` of the result is left empty.
absl::StatusOr<DumpedTensor> DumpTensor(const DumpTensorOptions& o);

}  // namespace paged
