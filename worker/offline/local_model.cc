#include "worker/offline/local_model.h"

#include "common/status.h"
#include "worker/engine/backend_factory.h"

namespace paged {

absl::StatusOr<std::unique_ptr<LocalModel>> LocalModel::Load(const ModelSource& src,
                                                             const LayoutOptions& layout,
                                                             const std::string& device,
                                                             int threads) {
  auto m = std::make_unique<LocalModel>();
  ASSIGN_OR_RETURN(m->image, OwnedImage::Build(src, layout, threads));
  ASSIGN_OR_RETURN(m->backend, MakeBackend(device, threads));
  ASSIGN_OR_RETURN(m->provider, ResidentProvider::Create(m->backend.get(), m->image->image()));
  m->engine =
      std::make_unique<Engine>(m->backend.get(), m->provider.get(), m->image->image().config(),
                               int(m->image->image().header->block_tokens));
  return m;
}

absl::StatusOr<std::unique_ptr<LocalModel>> LocalModel::Load(const std::string& path,
                                                             const LayoutOptions& layout,
                                                             const std::string& device,
                                                             int threads) {
  ASSIGN_OR_RETURN(auto src, OpenModel(path));
  return Load(*src, layout, device, threads);
}

}  // namespace paged
