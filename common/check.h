// Always-on invariant checks: for states that cannot happen unless paged
// itself has a bug. They stay in release builds (unlike assert) and abort
// with the file, line, condition and a message. Never for what a client, a
// file or a flag can get wrong: that is an absl::Status answered to the
// caller (STYLE.md, habit 6).
//
//   PAGED_CHECK(n >= 0);
//   PAGED_CHECK(in_use(b), "freeing block ", b, " that is not in use");
#pragma once

#include <string>

#include "absl/base/optimization.h"
#include "absl/strings/str_cat.h"

namespace paged::internal {

[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const std::string& message);

}  // namespace paged::internal

#define PAGED_CHECK(condition, ...)                                                  \
  do {                                                                               \
    if (ABSL_PREDICT_FALSE(!(condition))) {                                          \
      ::paged::internal::CheckFailed(__FILE__, __LINE__, #condition,                 \
                                     ::absl::StrCat("" __VA_OPT__(, ) __VA_ARGS__)); \
    }                                                                                \
  } while (0)
