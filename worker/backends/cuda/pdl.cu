#include "worker/backends/cuda/env_setting.h"
#include "worker/backends/cuda/pdl.h"

namespace paged::cuda {
namespace {

EnvSetting pdl("PAGED_CUDA_PDL", OffUnless1);

}  // namespace

bool PdlLaunches() { return pdl.on(); }
void SetPdlLaunches(bool on) { pdl.set(on ? 1 : 0); }

}  // namespace paged::cuda
