// Runs on the GPU machine; skips cleanly where there is no GPU.
#include <gtest/gtest.h>

#include "worker/device.h"

namespace paged {
namespace {

TEST(DeviceGpuTest, ListsTheGpuWithItsMemory) {
  const auto gpus = ListGpus();
  if (gpus.empty()) GTEST_SKIP() << "no GPU visible (CUDA compiled in: " << CudaCompiledIn() << ")";
  for (const GpuInfo& g : gpus) {
    EXPECT_FALSE(g.name.empty());
    EXPECT_GT(g.total_bytes, 1ull << 30);
    EXPECT_GE(g.cc_major, 7);
  }
}

}  // namespace
}  // namespace paged
