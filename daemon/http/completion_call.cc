#include "daemon/http/completion_call.h"

#include <chrono>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace paged::http {
namespace {

bool IsFailure(FinishReason e) {
  return e == FinishReason::kError || e == FinishReason::kDeadline || e == FinishReason::kShutdown;
}

// The error a generation that failed after admission ends with.
ApiError FailureError(const GenerationStream::Chunk& c) {
  switch (c.end) {
    case FinishReason::kShutdown:
      return ErrorFromStatus(absl::UnavailableError("the server is shutting down"));
    case FinishReason::kDeadline:
      return ErrorFromStatus(absl::DeadlineExceededError("the request's deadline passed"));
    default:
      return ErrorFromStatus(absl::InternalError(c.error.empty() ? "generation failed" : c.error));
  }
}

TokenUsage UsageOf(const GenerationStream& g) {
  return {g.usage().prompt_tokens(), g.usage().generated_tokens(),
          g.usage().cached_prompt_tokens()};
}

}  // namespace

Response JsonResponse(bhttp::status status, const nlohmann::json& body) {
  Response r{status, 11};
  r.set(bhttp::field::content_type, "application/json");
  r.body() = Dump(body);
  return r;
}

Response ErrorResponse(const ApiError& e) {
  Response r = JsonResponse(bhttp::int_to_status(unsigned(e.status)), ErrorBody(e));
  if (e.status == 401) r.set(bhttp::field::www_authenticate, "Bearer");
  return r;
}

CompletionCall::CompletionCall(Coordinator& coordinator, std::shared_ptr<Exchange> exchange,
                               ApiRequest request)
    : coord_(coordinator), ex_(std::move(exchange)), req_(std::move(request)) {
  const bool chat = req_.endpoint == Endpoint::kChatCompletions;
  info_.endpoint = req_.endpoint;
  info_.id = NewResponseId(chat ? "chatcmpl-" : "cmpl-");
  info_.created = int64_t(std::time(nullptr));
  info_.model = coord_.options().model_name;
  req_.generate.set_request_id(info_.id);  // Admin ListSequences shows it
}

void CompletionCall::Start(Coordinator& coordinator, std::shared_ptr<Exchange> exchange,
                           ApiRequest request) {
  auto call = std::make_shared<CompletionCall>(coordinator, exchange, std::move(request));
  // Until the response ends, the connection keeps the call alive.
  exchange->OnClosed([call] { call->OnClientGone(); });
  call->Begin();
}

void CompletionCall::Begin() {
  GenerationStream::Options o;
  o.fill_max_tokens = req_.fill_max_tokens;
  // Under the coordinator's mutex: only post. The call is looked up on the
  // strand (its last reference may go there, never under the mutex).
  o.on_update = [ex = ex_, weak = weak_from_this()] {
    ex->Post([weak] {
      if (std::shared_ptr<CompletionCall> c = weak.lock()) c->Pump();
    });
  };
  // A client that stopped reading its stream is given up on: the
  // coordinator cancelled its sequence; its connection closes.
  o.on_stalled = [ex = ex_] { ex->Abort(); };
  absl::StatusOr<std::unique_ptr<GenerationStream>> gen =
      GenerationStream::Start(coord_, req_.generate, std::move(o));
  if (!gen.ok()) {
    finished_ = true;
    ex_->Respond(ErrorResponse(ErrorFromStatus(gen.status())));
    return;
  }
  gen_ = std::move(*gen);
  if (req_.stream) {
    Response head{bhttp::status::ok, 11};
    head.set(bhttp::field::content_type, "text/event-stream");
    head.set(bhttp::field::cache_control, "no-cache");
    head.set("X-Accel-Buffering", "no");  // proxies: do not buffer the events
    head.set("X-Request-Id", info_.id);
    ex_->StartChunked(std::move(head));
    if (req_.endpoint == Endpoint::kChatCompletions)
      ex_->WriteChunk(SseEvent(ChunkBody(info_, "", /*role_only=*/true, "", req_.include_usage)));
  }
  Pump();  // anything that came before on_update could post
}

void CompletionCall::Pump() {
  if (finished_ || writing_ || gen_ == nullptr) return;
  GenerationStream::Chunk c = gen_->Next(std::chrono::milliseconds(0));
  if (!req_.stream) {
    text_ += c.text;
    if (!c.done) return;
    finished_ = true;
    text_ += c.tail;
    if (IsFailure(c.end)) {
      ex_->Respond(ErrorResponse(FailureError(c)));
      return;
    }
    Response r = JsonResponse(
        bhttp::status::ok, CompletionBody(info_, text_, OpenAiFinishReason(c.end), UsageOf(*gen_)));
    r.set("X-Request-Id", info_.id);
    ex_->Respond(std::move(r));
    return;
  }
  if (c.done) return FinishStream(c);
  if (c.text.empty()) return;  // ids only (mid-character, a held-back stop prefix)
  writing_ = true;
  ex_->WriteChunk(SseEvent(ChunkBody(info_, c.text, false, "", req_.include_usage)),
                  [weak = weak_from_this()](bool ok) {
                    std::shared_ptr<CompletionCall> self = weak.lock();
                    if (self == nullptr) return;
                    self->writing_ = false;
                    if (!ok) return self->OnClientGone();
                    self->Pump();  // what arrived while writing
                  });
}

void CompletionCall::FinishStream(GenerationStream::Chunk& c) {
  finished_ = true;
  std::string out;
  if (IsFailure(c.end)) {
    if (!c.text.empty() || !c.tail.empty())
      out += SseEvent(ChunkBody(info_, c.text + c.tail, false, "", req_.include_usage));
    out += SseEvent(ErrorBody(FailureError(c)));
  } else {
    out += SseEvent(
        ChunkBody(info_, c.text + c.tail, false, OpenAiFinishReason(c.end), req_.include_usage));
    if (req_.include_usage) out += SseEvent(UsageChunkBody(info_, UsageOf(*gen_)));
  }
  out += kSseDone;
  ex_->WriteChunk(std::move(out));
  ex_->EndChunked();
}

void CompletionCall::OnClientGone() {
  if (finished_) return;
  finished_ = true;
  if (gen_ != nullptr) {
    Log(LogLevel::kDebug, "http", "%s: client %s went away; sequence %lld cancelled",
        info_.id.c_str(), ex_->peer().c_str(), static_cast<long long>(gen_->sequence_id()));
    gen_->Cancel();
  }
}

}  // namespace paged::http
