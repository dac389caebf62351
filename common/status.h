// Status helpers: our abseil (20220623) has no status_macros.h.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PAGED_STATUS_CONCAT_INNER(a, b) a##b
#define PAGED_STATUS_CONCAT(a, b) PAGED_STATUS_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                              \
  do {                                                     \
    ::absl::Status paged_status_tmp_ = (expr);             \
    if (!paged_status_tmp_.ok()) return paged_status_tmp_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` assigns the value of an absl::StatusOr
// or returns its error from the enclosing function.
#define ASSIGN_OR_RETURN(lhs, expr) \
  PAGED_ASSIGN_OR_RETURN_IMPL(PAGED_STATUS_CONCAT(paged_statusor_, __LINE__), lhs, expr)
#define PAGED_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

namespace paged {

// Prefixes a status message with context ("file.gguf: ..."), keeping the code.
inline absl::Status Annotate(const absl::Status& s, std::string_view prefix) {
  if (s.ok()) return s;
  return absl::Status(s.code(), std::string(prefix) + ": " + std::string(s.message()));
}

}  // namespace paged
