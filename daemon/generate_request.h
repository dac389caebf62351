// paged.v1.GenerateRequest -> the scheduler's Request: the checks the
// scheduler cannot make (the prompt's form, text size, stop strings, the
// request id), tokenization, and the service's defaults (top_p 0 = off, a
// random seed when the client gives none, so that a resumed sequence replays
// the same draws). The scheduler validates the rest at Admit (token ids,
// max_tokens, sampling ranges, context and pool fit).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/sp_tokenizer.h"
#include "daemon/scheduler.h"
#include "paged/v1/inference.pb.h"

namespace paged {

inline constexpr size_t kMaxPromptTextBytes = 1 << 20;  // 1 MiB
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;
inline constexpr size_t kMaxRequestIdBytes = 256;

struct ParsedGenerate {
  Request request;                        // deadline left 0: the caller sets it
  std::vector<std::string> stop_strings;  // checked on the decoded text
};

// INVALID_ARGUMENT naming the field for a bad request; FAILED_PRECONDITION
// for a text prompt when the segment carries no tokenizer. `tokenizer` may be
// null. `random_seed` is used when the request's seed is 0 (must be != 0).
absl::StatusOr<ParsedGenerate> ParseGenerateRequest(const v1::GenerateRequest& req,
                                                    const SpTokenizer* tokenizer,
                                                    uint64_t random_seed);

}  // namespace paged
