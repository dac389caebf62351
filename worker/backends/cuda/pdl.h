// Programmatic dependent launch for the decode step's kernels
// (PAGED_CUDA_PDL=1; off by default until measured on the GPU). A kernel
// launched so may start while the kernel before it still runs: it does
// what depends on nothing (the GEMV: prefetching its first weights into L2)
// and then waits for that kernel (griddepcontrol.wait) before it reads
// what that kernel wrote or writes what it reads. Each such kernel also lets
// the next one start as soon as it begins (launch_dependents). Only kernels
// that wait are launched so (device_util.cuh's LaunchPdl); a plain launch
// after one still waits for all of it.
#pragma once

namespace paged::cuda {

bool PdlLaunches();            // read from PAGED_CUDA_PDL at the first call
void SetPdlLaunches(bool on);  // for the tests

}  // namespace paged::cuda
