#include "worker/backends/cuda/env_switch.h"
#include "worker/backends/cuda/pdl.h"

namespace paged::cuda {
namespace {

EnvSwitch pdl("PAGED_CUDA_PDL", /*on_by_default=*/false);

}  // namespace

bool PdlLaunches() { return pdl.on(); }
void SetPdlLaunches(bool on) { pdl.set(on); }

}  // namespace paged::cuda
