#include "client/pagectl/dump_tensor.h"

#include <bit>
#include <cstdio>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/block_quant.h"
#include "common/quant.h"
#include "common/segment.h"
#include "common/status.h"
#include "store/convert.h"
#include "store/gguf_model.h"
#include "store/model_source.h"

namespace paged {
namespace {

absl::Status Bad(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("dump-tensor: ", std::string(what)));
}

// "A:B", ":B", "A:", "A" or "" against a tensor of `rows` rows.
absl::Status ParseRows(const std::string& spec, int64_t rows, int64_t* r0, int64_t* r1) {
  *r0 = 0;
  *r1 = rows;
  if (spec.empty()) return absl::OkStatus();
  const size_t colon = spec.find(':');
  const std::string a = spec.substr(0, colon);
  const std::string b = colon == std::string::npos ? "" : spec.substr(colon + 1);
  bool ok = (a.empty() || absl::SimpleAtoi(a, r0)) && (b.empty() || absl::SimpleAtoi(b, r1));
  if (ok && colon == std::string::npos) *r1 = *r0 + 1;
  if (!ok || *r0 < 0 || *r1 > rows || *r0 >= *r1)
    return Bad(absl::StrCat("--rows=", spec, ": expected A:B with 0 <= A < B <= ", rows));
  return absl::OkStatus();
}

std::string Label(const std::string& name, int layer) {
  return layer < 0 ? name : absl::StrCat("layer ", layer, " ", name);
}

absl::StatusOr<DumpedTensor> FromModel(const DumpTensorOptions& o) {
  std::string name = o.tensor;
  int layer = o.layer;
  // A file's own GGUF name carries its layer.
  if (std::string canonical;
      name.find('.') != std::string::npos && GgufCanonicalName(o.tensor, &canonical, &layer)) {
    if (o.layer >= 0 && o.layer != layer)
      return Bad(absl::StrCat("--tensor=", o.tensor, " is a tensor of layer ", layer,
                              ", not of --layer=", o.layer));
    name = canonical;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> src, OpenModel(o.model));
  const SourceTensor* t = src->Find(name, layer);
  if (t == nullptr)
    return absl::NotFoundError(absl::StrCat("dump-tensor: ", o.model, " has no tensor ",
                                            Label(name, layer),
                                            layer < 0 ? " (a layer's tensor needs --layer)" : ""));
  DumpedTensor d;
  d.label = Label(name, layer);
  d.type = std::string(SourceTypeName(t->type));
  d.rows = t->rows;
  d.cols = t->cols;
  RETURN_IF_ERROR(ParseRows(o.rows, t->rows, &d.row0, &d.row1));
  d.values.resize(size_t((d.row1 - d.row0) * d.cols));
  for (int64_t r = d.row0; r < d.row1; ++r)
    SourceRowToFloat(*t, r, d.values.data() + (r - d.row0) * d.cols);
  return d;
}

absl::StatusOr<DumpedTensor> FromSegment(const DumpTensorOptions& o) {
  ASSIGN_OR_RETURN(auto seg, SegmentMapping::Open(o.segment, SegmentMapping::Access::kReadOnly));
  const SegmentHeader& h = seg->header();
  if (o.layer >= h.model.n_layers)
    return Bad(absl::StrCat("--layer=", o.layer, ": segment ", o.segment, " has ", h.model.n_layers,
                            " layers"));
  const TensorEntry* e = o.layer >= 0 ? h.LayerTensor(o.layer, o.tensor) : h.FindGlobal(o.tensor);
  if (e == nullptr)
    return absl::NotFoundError(absl::StrCat(
        "dump-tensor: segment ", o.segment, " has no tensor ", Label(o.tensor, o.layer),
        o.layer < 0 ? " (a layer's tensor needs --layer)" : ""));
  const uint8_t* origin = o.layer >= 0 ? seg->LayerBlock(o.layer) : seg->weights_base();
  const DType dt = e->Type();
  DumpedTensor d;
  d.label = Label(o.tensor, o.layer);
  d.type = std::string(DTypeName(dt));
  d.rows = e->rows;
  d.cols = e->cols;
  RETURN_IF_ERROR(ParseRows(o.rows, e->rows, &d.row0, &d.row1));
  d.values.resize(size_t((d.row1 - d.row0) * d.cols));
  const uint64_t row_bytes = PayloadBytes(dt, 1, uint64_t(e->cols));
  const int64_t groups = IsQuantized(dt) ? GroupsPerRow(e->cols, int(e->group)) : 0;
  const auto* scales = reinterpret_cast<const uint16_t*>(origin + e->scale_offset);
  for (int64_t r = d.row0; r < d.row1; ++r) {
    const uint8_t* row = origin + e->offset + uint64_t(r) * row_bytes;
    float* out = d.values.data() + (r - d.row0) * d.cols;
    if (dt == DType::kI8) {
      DequantizeRowInt8(reinterpret_cast<const int8_t*>(row), scales + r * groups, e->cols,
                        int(e->group), out);
    } else if (dt == DType::kI4) {
      DequantizeRowInt4(row, scales + r * groups, e->cols, int(e->group), out);
    } else {
      DequantizeRow(dt, row, e->cols, out);
    }
  }
  return d;
}

}  // namespace

absl::StatusOr<DumpedTensor> ReadTensorRows(const DumpTensorOptions& o) {
  if (o.model.empty() == o.segment.empty()) return Bad("give exactly one of --model or --segment");
  if (o.tensor.empty()) return Bad("--tensor is required");
  return o.model.empty() ? FromSegment(o) : FromModel(o);
}

absl::StatusOr<DumpedTensor> DumpTensor(const DumpTensorOptions& o) {
  if (o.out.empty()) return Bad("--out is required");
  ASSIGN_OR_RETURN(DumpedTensor d, ReadTensorRows(o));
  static_assert(std::endian::native == std::endian::little, "the output is little-endian f32");
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(o.out.c_str(), "wb"), &std::fclose);
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("dump-tensor: cannot write ", o.out));
  if (std::fwrite(d.values.data(), sizeof(float), d.values.size(), f.get()) != d.values.size() ||
      std::fflush(f.get()) != 0)
    return absl::DataLossError(absl::StrCat("dump-tensor: writing ", o.out, " failed"));
  d.values.clear();
  return d;
}

}  // namespace paged
