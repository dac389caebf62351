// GPU tests: PAGED_CUDA_FUSED_GEMV set to 1 or 0 for a scope, so one process
// runs both paths of the CUDA backend's quantized products (the fused decode
// GEMV, the default; dequantize + cuBLAS with 0). The backend reads the
// variable once; cuda::ReadFusedGemvEnv() makes it read it again.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

#if PAGED_HAVE_CUDA
#include "worker/backends/cuda/gemv_wide.h"
#include "worker/backends/cuda/pdl.h"
#include "worker/backends/cuda/weights.h"
#endif

namespace paged::testing {

class FusedGemvEnv {
 public:
  explicit FusedGemvEnv(bool on) {
    if (const char* v = std::getenv(kVar)) old_ = v;
    setenv(kVar, on ? "1" : "0", 1);
    Reread();
  }
  ~FusedGemvEnv() {
    if (old_) {
      setenv(kVar, old_->c_str(), 1);
    } else {
      unsetenv(kVar);
    }
    Reread();
  }
  FusedGemvEnv(const FusedGemvEnv&) = delete;
  FusedGemvEnv& operator=(const FusedGemvEnv&) = delete;

 private:
  static constexpr const char* kVar = "PAGED_CUDA_FUSED_GEMV";
  static void Reread() {
#if PAGED_HAVE_CUDA
    cuda::ReadFusedGemvEnv();
#endif
  }
  std::optional<std::string> old_;
};

// The decode GEMV's rows per warp (1, 2 or 4; 0: its own choice) for a
// scope, so each variant of the kernel runs whatever the GPU's SM count.
class GemvRowsPerWarp {
 public:
  explicit GemvRowsPerWarp(int rows) { Set(rows); }
  ~GemvRowsPerWarp() { Set(0); }
  GemvRowsPerWarp(const GemvRowsPerWarp&) = delete;
  GemvRowsPerWarp& operator=(const GemvRowsPerWarp&) = delete;

 private:
  static void Set([[maybe_unused]] int rows) {
#if PAGED_HAVE_CUDA
    cuda::SetGemvWideRowsPerWarp(rows);
#endif
  }
};

// A switch of the decode GEMV on or off for a scope, as it was again after
// it: the residual add in the launch (cuda::GemvFusedAdd), the decode
// step's launches as programmatic dependents (cuda::PdlLaunches, pdl.h), or
// a block's rows split between its warps always (on) or never (off); after
// the scope, the split's mode as it was (by shape, the default).
enum class GemvSwitch { kFusedAdd, kPdl, kSplit };
class GemvSwitchScope {
 public:
  GemvSwitchScope(GemvSwitch which, bool on) : which_(which), was_(Get(which)) {
    Set(which, on ? 1 : 0);
  }
  ~GemvSwitchScope() { Set(which_, was_); }
  GemvSwitchScope(const GemvSwitchScope&) = delete;
  GemvSwitchScope& operator=(const GemvSwitchScope&) = delete;

 private:
  // 0 / 1 for off / on; the split also keeps its by-shape mode (2).
  static int Get([[maybe_unused]] GemvSwitch which) {
#if PAGED_HAVE_CUDA
    switch (which) {
      case GemvSwitch::kFusedAdd:
        return cuda::GemvFusedAdd() ? 1 : 0;
      case GemvSwitch::kPdl:
        return cuda::PdlLaunches() ? 1 : 0;
      case GemvSwitch::kSplit:
        return cuda::GemvSplitMode();
    }
#endif
    return 0;
  }
  static void Set([[maybe_unused]] GemvSwitch which, [[maybe_unused]] int value) {
#if PAGED_HAVE_CUDA
    switch (which) {
      case GemvSwitch::kFusedAdd:
        return cuda::SetGemvFusedAdd(value == 1);
      case GemvSwitch::kPdl:
        return cuda::SetPdlLaunches(value == 1);
      case GemvSwitch::kSplit:
        // kGemvSplitNever, kGemvSplitAlways, kGemvSplitByShape: 0, 1, 2.
        return cuda::SetGemvSplitMode(value);
    }
#endif
  }
  const GemvSwitch which_;
  const int was_;
};

}  // namespace paged::testing
