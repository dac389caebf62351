#include "client/pagectl/verify.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/segment.h"
#include "common/status.h"
#include "store/convert.h"
#include "store/model_source.h"

namespace paged {

absl::StatusOr<VerifyResult> VerifySegment(const std::string& segment,
                                           const std::string& model_path) {
  ASSIGN_OR_RETURN(auto seg, SegmentMapping::Open(segment, SegmentMapping::Access::kReadOnly));
  const SegmentHeader& h = seg->header();
  const std::string path =
      model_path.empty() ? std::string(h.model_path, strnlen(h.model_path, sizeof(h.model_path)))
                         : model_path;
  ASSIGN_OR_RETURN(auto src, OpenModel(path));
  if (src->fingerprint != h.model_fingerprint)
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is not the model file segment ", segment, " was built from (fingerprint differs)"));

  VerifyResult result;
  std::vector<uint8_t> payload, scales;
  // Converts the source tensor again and compares checksums with the segment.
  auto check = [&](const TensorEntry& e, const uint8_t* origin, int layer) -> absl::Status {
    const SourceTensor* t = src->Find(e.Name(), layer);
    const std::string label = layer < 0 ? std::string(e.Name())
                                        : absl::StrCat("layer ", layer, " ", std::string(e.Name()));
    if (t == nullptr)
      return absl::DataLossError(absl::StrCat("segment has ", label, ", the model does not"));
    payload.assign(e.bytes, 0);
    scales.assign(e.scale_bytes, 0);
    ConvertTensor(*t, e.Type(), int(e.group), payload.data(), scales.data(), 1);
    uint64_t want = Fnv1a64(payload.data(), payload.size());
    uint64_t got = Fnv1a64(origin + e.offset, e.bytes);
    if (e.scale_bytes) {
      want = Fnv1a64(scales.data(), scales.size(), want);
      got = Fnv1a64(origin + e.scale_offset, e.scale_bytes, got);
    }
    if (want != got)
      return absl::DataLossError(absl::StrFormat("%s: checksum %016x in the segment, %016x from %s",
                                                 label, got, want, path));
    if (e.checksum != got)
      return absl::DataLossError(absl::StrFormat(
          "%s: the header records checksum %016x, the bytes have %016x", label, e.checksum, got));
    ++result.tensors_checked;
    result.bytes_checked += e.bytes + e.scale_bytes;
    return absl::OkStatus();
  };
  for (uint32_t i = 0; i < h.n_global_tensors; ++i) {
    RETURN_IF_ERROR(check(h.global_tensors[i], seg->weights_base(), -1));
  }
  for (int l = 0; l < h.model.n_layers; ++l) {
    const LayerTable& table = h.Layer(l);
    for (uint32_t i = 0; i < table.n_tensors; ++i) {
      RETURN_IF_ERROR(check(table.tensors[i], seg->LayerBlock(l), l));
    }
  }
  return result;
}

}  // namespace paged
