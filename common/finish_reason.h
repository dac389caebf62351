// Why a generation ended: one vocabulary for the scheduler, the generation
// streams, the HTTP front end, the SDK and pagectl. The wire form is
// paged.v1.GenerateResponse.FinishReason (proto/api_convert.h converts);
// OpenAI's names are the HTTP front end's (daemon/http/openai_api.h).
#pragma once

namespace paged {

enum class FinishReason {
  kNone,       // still running (or never started)
  kLength,     // max_tokens reached
  kEos,        // the model's end-of-sequence token
  kStop,       // a stop token id or a stop string
  kCancelled,  // Admin cancel, or the client went away
  kDeadline,   // the request's deadline passed
  kError,      // the sequence failed
  kShutdown,   // the coordinator is shutting down
};

// "length", "eos", "stop", "cancelled", "deadline", "error", "shutdown"; ""
// for kNone.
constexpr const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kDeadline:
      return "deadline";
    case FinishReason::kError:
      return "error";
    case FinishReason::kShutdown:
      return "shutdown";
  }
  return "";
}

}  // namespace paged
