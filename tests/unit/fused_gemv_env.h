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

// The residual add in the decode GEMV (cuda::GemvFusedAdd) on or off for a
// scope; off again after it, the default.
class GemvFusedAdd {
 public:
  explicit GemvFusedAdd(bool on) { Set(on); }
  ~GemvFusedAdd() { Set(false); }
  GemvFusedAdd(const GemvFusedAdd&) = delete;
  GemvFusedAdd& operator=(const GemvFusedAdd&) = delete;

 private:
  static void Set([[maybe_unused]] bool on) {
#if PAGED_HAVE_CUDA
    cuda::SetGemvFusedAdd(on);
#endif
  }
};

}  // namespace paged::testing
