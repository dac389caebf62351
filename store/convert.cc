#include "store/convert.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "common/block_quant.h"
#include "common/check.h"
#include "common/quant.h"

namespace paged {
namespace {

constexpr int kQ8Block = 32;
constexpr int kQ8BlockBytes = 2 + kQ8Block;  // f16 scale + 32 int8

uint64_t SourceRowBytes(const SourceTensor& t) {
  return PayloadBytes(StoredDType(t.type), 1, uint64_t(t.cols));
}

bool IsContiguous(const SourceTensor& t) { return t.col_stride == 0 && t.mx_scales == nullptr; }

// Source row `row` in the layout of StoredDType(t.type), its values
// contiguous: in place when they are, else gathered (a strided view) or
// repacked (HF's MXFP4 into GGUF's blocks) into `scratch` (SourceRowBytes).
const uint8_t* SourceRow(const SourceTensor& t, int64_t row, uint8_t* scratch) {
  const uint64_t row_bytes = SourceRowBytes(t);
  const uint8_t* in = t.data + uint64_t(row) * (t.row_stride ? t.row_stride : row_bytes);
  if (IsContiguous(t)) return in;
  if (t.mx_scales != nullptr) {
    // HF: byte i of a group holds values 2i (low nibble) and 2i + 1; GGUF:
    // the exponent, then byte j holds values j (low) and j + 16.
    const uint8_t* e = t.mx_scales + uint64_t(row) * t.mx_scale_stride;
    auto value = [](const uint8_t* q, int k) { return k % 2 == 0 ? q[k / 2] & 15 : q[k / 2] >> 4; };
    for (int64_t g = 0; g < t.cols / 32; ++g) {
      const uint8_t* q = in + g * 16;
      uint8_t* b = scratch + g * 17;
      b[0] = e[g];
      for (int j = 0; j < 16; ++j) b[1 + j] = uint8_t(value(q, j) | value(q, j + 16) << 4);
    }
    return scratch;
  }
  const uint64_t elt = row_bytes / uint64_t(t.cols);  // f32 / f16 / bf16 only
  for (int64_t c = 0; c < t.cols; ++c)
    std::memcpy(scratch + uint64_t(c) * elt, in + uint64_t(c) * t.col_stride, elt);
  return scratch;
}

void ConvertRow(const SourceTensor& t, DType dst, int group, int64_t dst_row, uint8_t* payload,
                uint8_t* scales, float* tmp, uint8_t* scratch) {
  const int64_t cols = t.cols;
  const int64_t src_row = SourceRowFor(t, dst_row);
  const uint64_t row_bytes = PayloadBytes(dst, 1, uint64_t(cols));
  uint8_t* out = payload + uint64_t(dst_row) * row_bytes;
  uint16_t* row_scales = reinterpret_cast<uint16_t*>(scales) +
                         (IsQuantized(dst) ? dst_row * GroupsPerRow(cols, group) : 0);
  const uint8_t* in = SourceRow(t, src_row, scratch);
  // Same-type rows are plain copies (native f16/bf16, GGUF block formats).
  if (dst == StoredDType(t.type)) {
    std::memcpy(out, in, row_bytes);
    return;
  }
  if (t.type == SourceType::kQ8_0 && dst == DType::kI8 && group == kQ8Block) {
    for (int64_t b = 0; b < cols / kQ8Block; ++b) {
      const uint8_t* blk = in + b * kQ8BlockBytes;
      std::memcpy(&row_scales[b], blk, 2);
      std::memcpy(out + b * kQ8Block, blk + 2, kQ8Block);
    }
    return;
  }
  DequantizeRow(StoredDType(t.type), in, cols, tmp);
  switch (dst) {
    case DType::kF32:
      std::memcpy(out, tmp, row_bytes);
      break;
    case DType::kF16:
      for (int64_t c = 0; c < cols; ++c) reinterpret_cast<uint16_t*>(out)[c] = FloatToHalf(tmp[c]);
      break;
    case DType::kBF16:
      for (int64_t c = 0; c < cols; ++c) reinterpret_cast<uint16_t*>(out)[c] = FloatToBf16(tmp[c]);
      break;
    case DType::kI8:
      QuantizeRowInt8(tmp, cols, group, reinterpret_cast<int8_t*>(out), row_scales);
      break;
    case DType::kI4:
      QuantizeRowInt4(tmp, cols, group, out, row_scales);
      break;
    default:
      PAGED_CHECK(false, "ConvertTensor: no conversion from ", std::string(SourceTypeName(t.type)),
                  " to ", std::string(DTypeName(dst)));
  }
}

}  // namespace

DType StoredDType(SourceType t) {
  switch (t) {
    case SourceType::kF32:
      return DType::kF32;
    case SourceType::kF16:
      return DType::kF16;
    case SourceType::kBF16:
      return DType::kBF16;
    case SourceType::kQ8_0:
      return DType::kQ8_0;
    case SourceType::kQ4_0:
      return DType::kQ4_0;
    case SourceType::kQ4_1:
      return DType::kQ4_1;
    case SourceType::kQ5_0:
      return DType::kQ5_0;
    case SourceType::kQ5_1:
      return DType::kQ5_1;
    case SourceType::kQ2_K:
      return DType::kQ2_K;
    case SourceType::kQ3_K:
      return DType::kQ3_K;
    case SourceType::kQ4_K:
      return DType::kQ4_K;
    case SourceType::kQ5_K:
      return DType::kQ5_K;
    case SourceType::kQ6_K:
      return DType::kQ6_K;
    case SourceType::kIQ4_NL:
      return DType::kIQ4_NL;
    case SourceType::kIQ4_XS:
      return DType::kIQ4_XS;
    case SourceType::kMXFP4:
      return DType::kMXFP4;
  }
  PAGED_CHECK(false, "unknown source type ", uint32_t(t));
  return DType::kF32;
}

int64_t SourceRowFor(const SourceTensor& t, int64_t dst_row) {
  const int64_t hd = t.rope_permute_head_dim;
  if (hd <= 0) return dst_row;
  // Within a head, destination row j * hd/2 + i comes from source row 2i + j.
  const int64_t head = dst_row / hd, r = dst_row % hd;
  const int64_t j = r / (hd / 2), i = r % (hd / 2);
  return head * hd + 2 * i + j;
}

void SourceRowToFloat(const SourceTensor& t, int64_t row, float* out) {
  std::vector<uint8_t> scratch(IsContiguous(t) ? 0 : SourceRowBytes(t));
  DequantizeRow(StoredDType(t.type), SourceRow(t, row, scratch.data()), t.cols, out);
}

void ConvertTensor(const SourceTensor& t, DType dst, int group, uint8_t* payload, uint8_t* scales,
                   int threads) {
  const int64_t rows = t.rows;
  // Small tensors are not worth a thread.
  const int n = int(std::clamp<int64_t>(rows * t.cols / (1 << 18), 1, std::max(threads, 1)));
  auto work = [&](int64_t r0, int64_t r1) {
    std::vector<float> tmp(size_t(t.cols));
    std::vector<uint8_t> scratch(IsContiguous(t) ? 0 : SourceRowBytes(t));
    for (int64_t r = r0; r < r1; ++r)
      ConvertRow(t, dst, group, r, payload, scales, tmp.data(), scratch.data());
  };
  if (n == 1) {
    work(0, rows);
    return;
  }
  std::vector<std::thread> pool;
  for (int i = 0; i < n; ++i) pool.emplace_back(work, rows * i / n, rows * (i + 1) / n);
  for (auto& th : pool) th.join();
}

}  // namespace paged
