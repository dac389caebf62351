// The OpenAI-compatible API's JSON <-> paged mapping, with no I/O: request
// bodies of /v1/completions and /v1/chat/completions checked and turned into
// a paged.v1.GenerateRequest, and the response bodies, stream chunks, model
// list and errors built. docs/http.md is the table of what is supported.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "daemon/generation_stream.h"
#include "paged/v1/inference.pb.h"

namespace paged::http {

// An error in OpenAI's shape:
// {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}.
struct ApiError {
  int status = 400;  // the HTTP status
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "": null
  std::string code;   // "": null
};
nlohmann::json ErrorBody(const ApiError& e);
// A paged status as an API error: INVALID_ARGUMENT and FAILED_PRECONDITION
// 400, UNAUTHENTICATED 401, NOT_FOUND 404, RESOURCE_EXHAUSTED 429,
// UNIMPLEMENTED 501, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, others 500.
ApiError ErrorFromStatus(const absl::Status& s);

enum class Endpoint { kCompletions, kChatCompletions };

inline constexpr int kDefaultCompletionMaxTokens = 16;  // OpenAI's default for completions
inline constexpr int kMaxJsonDepth = 64;                // deeper bodies are refused (400)

struct ApiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  // Prompt (text, token ids or chat messages), max_tokens, stop strings and
  // ids, sampling, ignore_eos. request_id is left to the caller.
  v1::GenerateRequest generate;
  bool fill_max_tokens = false;  // chat without max_tokens: as many as fit
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses and checks a request body. `served_model` is the model's name: a
// request naming another model is 404 model_not_found (a missing or empty
// `model` means the served one). Fills `error` and returns false for a bad
// request.
bool ParseApiRequest(Endpoint endpoint, std::string_view body, const std::string& served_model,
                     ApiRequest* out, ApiError* error);

// The identity every body and chunk of one response repeats.
struct ResponseInfo {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;       // cmpl-... / chatcmpl-...
  int64_t created = 0;  // Unix seconds
  std::string model;
};

struct TokenUsage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_tokens = 0;  // prompt tokens from the prefix cache (prompt_tokens_details)
};

// "stop" (eos, a stop string or id), "length" (max_tokens), "abort"
// (cancelled, as vLLM names it); "" for endings that are errors.
std::string_view OpenAiFinishReason(FinishReason end);

// The whole (non-streamed) response.
nlohmann::json CompletionBody(const ResponseInfo& info, const std::string& text,
                              std::string_view finish_reason, const TokenUsage& usage);
// One stream chunk: `text` (chat: the delta's content; omitted when
// `role_only`, which sends {"role": "assistant"}), the finish reason ("": null),
// and "usage": null when the client asked for a usage chunk.
nlohmann::json ChunkBody(const ResponseInfo& info, const std::string& text, bool role_only,
                         std::string_view finish_reason, bool include_usage);
// The extra chunk of stream_options.include_usage: no choices, the usage.
nlohmann::json UsageChunkBody(const ResponseInfo& info, const TokenUsage& usage);
// GET /v1/models.
nlohmann::json ModelsBody(const std::string& model, int64_t created);

// "data: JSON\n\n" (invalid UTF-8 replaced); the stream's end "data: [DONE]\n\n".
std::string SseEvent(const nlohmann::json& j);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";
// JSON text for a body (invalid UTF-8 replaced).
std::string Dump(const nlohmann::json& j);

// A fresh response id: PREFIX + 24 random hex digits.
std::string NewResponseId(std::string_view prefix);

}  // namespace paged::http
