// paged.v1.GenerateRequest -> the scheduler's Request: the checks the
// scheduler cannot make (the prompt's form, text size, stop strings, the
// request id), chat prompts rendered with the model's chat template,
// tokenization, and the service's defaults (top_p 0 = off, a
// random seed when the client gives none, so that a resumed sequence replays
// the same draws). The scheduler validates the rest at Admit (token ids,
// max_tokens, sampling ranges, context and pool fit).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/chat_template.h"
#include "daemon/scheduler.h"
#include "paged/v1/inference.pb.h"
#include "tokenizer/tokenizer.h"

namespace paged {

inline constexpr size_t kMaxPromptTextBytes = 1 << 20;  // 1 MiB
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;
inline constexpr size_t kMaxRequestIdBytes = 256;
// A chat prompt: at most this many messages, and kMaxPromptTextBytes of
// roles and contents together.
inline constexpr size_t kMaxChatMessages = 1024;

struct ParsedGenerate {
  Request request;                        // deadline left 0: the caller sets it
  std::vector<std::string> stop_strings;  // checked on the decoded text
};

// What prompts are tokenized and rendered with; either may be missing.
struct PromptContext {
  const Tokenizer* tokenizer = nullptr;  // null: the segment carries none
  // null: chat prompts are answered `no_chat` (the model has no chat
  // template, or one we do not support).
  const ChatTemplate* chat = nullptr;
  absl::Status no_chat = NoChatTemplateError();
};

// INVALID_ARGUMENT naming the field for a bad request; FAILED_PRECONDITION
// for a text or chat prompt when the segment carries no tokenizer, and
// `ctx.no_chat` for a chat prompt without a chat template. A chat prompt is
// rendered, then encoded with add_bos = false (the templates write BOS) and
// parse_special = true; the format's end-of-turn token joins the stop ids
// when the vocabulary has it and it is not the end-of-sequence token (which
// stops anyway, unless ignore_eos), else its text joins the stop strings.
// `random_seed` is used when the request's seed is 0 (must be != 0).
absl::StatusOr<ParsedGenerate> ParseGenerateRequest(const v1::GenerateRequest& req,
                                                    const PromptContext& ctx, uint64_t random_seed);

}  // namespace paged
