#include "worker/offline/owned_image.h"

#include <sys/mman.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paged {

OwnedImage::Mapping::~Mapping() {
  if (data != nullptr) ::munmap(data, bytes);
}

OwnedImage::~OwnedImage() = default;

absl::StatusOr<std::unique_ptr<OwnedImage>> OwnedImage::Build(const std::string& model_path,
                                                              const LayoutOptions& layout,
                                                              int threads) {
  ASSIGN_OR_RETURN(auto src, OpenModel(model_path));
  return Build(*src, layout, threads);
}

absl::StatusOr<std::unique_ptr<OwnedImage>> OwnedImage::Build(const ModelSource& source,
                                                              const LayoutOptions& layout,
                                                              int threads) {
  const ModelSource* src = &source;
  ASSIGN_OR_RETURN(std::unique_ptr<SegmentHeader> planned, PlanSegment(*src, layout));
  SegmentHeader& plan = *planned;
  std::unique_ptr<OwnedImage> img(new OwnedImage());
  void* p =
      ::mmap(nullptr, plan.total_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot map ", plan.total_bytes, " bytes for the model"));
  img->mem_.data = static_cast<uint8_t*>(p);
  img->mem_.bytes = plan.total_bytes;
  RETURN_IF_ERROR(FillSegment(*src, plan, img->mem_.data, threads > 0 ? threads : 2, nullptr));
  plan.state = uint32_t(SegmentState::kReady);
  plan.generation = 1;
  plan.header_checksum = ComputeHeaderChecksum(plan);
  std::memcpy(img->mem_.data, &plan, sizeof(plan));
  img->image_.header = reinterpret_cast<const SegmentHeader*>(img->mem_.data);
  img->image_.weights = img->mem_.data;
  img->image_.kv = img->mem_.data + plan.kv_offset;
  img->vocab_ = src->vocab;
  return img;
}

}  // namespace paged
