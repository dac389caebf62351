// Error checks for CUDA and cuBLAS calls. Every call is checked.
//
// In launchers (.cu, no abseil): PAGED_CUDA_TRY(expr) returns the error code
// (paged::cuda::CudaError) from the enclosing function; PAGED_CUDA_LAUNCHED()
// checks the launch just made.
// In host code returning absl::Status: CUDA_CHECK(expr) / CUBLAS_CHECK(expr)
// return an INTERNAL status naming the call, file and line.
//
// Debug switch: PAGED_CUDA_SYNC=1 in the environment makes the CUDA backend
// synchronize its stream and check for errors after every op, so that a
// faulting kernel is reported by the op that launched it.
#pragma once

#include <cuda_runtime.h>

#define PAGED_CUDA_TRY(expr)                                         \
  do {                                                               \
    const cudaError_t paged_cuda_err_ = (expr);                      \
    if (paged_cuda_err_ != cudaSuccess) return int(paged_cuda_err_); \
  } while (0)

#define PAGED_CUDA_LAUNCHED() PAGED_CUDA_TRY(cudaGetLastError())

#ifndef __CUDACC__
#include <cublas_v2.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace paged::cuda {

inline absl::Status CudaErrorStatus(cudaError_t e, const char* what, const char* file, int line) {
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", what, ": ", cudaGetErrorName(e),
                                          " (", cudaGetErrorString(e), ")"));
}

inline absl::Status CublasErrorStatus(cublasStatus_t s, const char* what, const char* file,
                                      int line) {
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", what, ": ", cublasGetStatusName(s),
                                          " (", cublasGetStatusString(s), ")"));
}

}  // namespace paged::cuda

#define CUDA_CHECK(expr)                                                                 \
  do {                                                                                   \
    const cudaError_t paged_cuda_err_ = (expr);                                          \
    if (paged_cuda_err_ != cudaSuccess)                                                  \
      return ::paged::cuda::CudaErrorStatus(paged_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                      \
    const cublasStatus_t paged_cublas_st_ = (expr);                                         \
    if (paged_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                          \
      return ::paged::cuda::CublasErrorStatus(paged_cublas_st_, #expr, __FILE__, __LINE__); \
  } while (0)
#endif  // __CUDACC__
