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
// it: the residual add in the launch (cuda::GemvFusedAdd) or the decode
// step's launches as programmatic dependents (cuda::PdlLaunches, pdl.h).
enum class GemvSwitch { kFusedAdd, kPdl };
class GemvSwitchScope {
 public:
  GemvSwitchScope(GemvSwitch which, bool on) : which_(which), was_(Get(which)) { Set(which, on); }
  ~GemvSwitchScope() { Set(which_, was_); }
  GemvSwitchScope(const GemvSwitchScope&) = delete;
  GemvSwitchScope& operator=(const GemvSwitchScope&) = delete;

 private:
  static bool Get([[maybe_unused]] GemvSwitch which) {
#if PAGED_HAVE_CUDA
    return which == GemvSwitch::kFusedAdd ? cuda::GemvFusedAdd() : cuda::PdlLaunches();
#else
    return false;
#endif
  }
  static void Set([[maybe_unused]] GemvSwitch which, [[maybe_unused]] bool on) {
#if PAGED_HAVE_CUDA
    if (which == GemvSwitch::kFusedAdd) {
      cuda::SetGemvFusedAdd(on);
    } else {
      cuda::SetPdlLaunches(on);
    }
#endif
  }
  const GemvSwitch which_;
  const bool was_;
};

}  // namespace paged::testing
