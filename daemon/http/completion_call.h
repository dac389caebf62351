// One /v1/completions or /v1/chat/completions request, from admission to
// the last byte: a GenerationStream driven from the connection's strand.
// The coordinator's on_update posts a Pump to the strand whenever tokens (or
// the end) arrive; nothing blocks. Non-streaming: the text is gathered and
// answered whole. Streaming: server-sent events, one per batch of committed
// text, a final chunk with the finish reason, the usage chunk when asked,
// then [DONE]; the next batch is taken only once the previous one is
// written, so a slow reader holds its tokens in the coordinator, not in
// memory here. A client that goes away (Exchange::OnClosed, or a failed
// write) cancels its sequence at once.
#pragma once

#include <memory>
#include <string>

#include "daemon/coordinator.h"
#include "daemon/generation_stream.h"
#include "daemon/http/http_server.h"
#include "daemon/http/openai_api.h"

namespace paged::http {

// A JSON response (Content-Type application/json).
Response JsonResponse(bhttp::status status, const nlohmann::json& body);
// An OpenAI-shaped error response.
Response ErrorResponse(const ApiError& e);

class CompletionCall : public std::enable_shared_from_this<CompletionCall> {
 public:
  // Admits `request` and answers `exchange` (an error response when it is
  // refused). Call on the exchange's strand (in the server's handler).
  static void Start(Coordinator& coordinator, std::shared_ptr<Exchange> exchange,
                    ApiRequest request);

  CompletionCall(Coordinator& coordinator, std::shared_ptr<Exchange> exchange, ApiRequest request);

 private:
  void Begin();
  // Takes what the stream has and answers or writes it (on the strand).
  void Pump();
  void FinishStream(GenerationStream::Chunk& c);
  void OnClientGone();

  Coordinator& coord_;
  const std::shared_ptr<Exchange> ex_;  // before gen_: outlives the sequence's release
  ApiRequest req_;
  ResponseInfo info_;
  std::unique_ptr<GenerationStream> gen_;
  std::string text_;      // non-streaming: the text so far
  bool writing_ = false;  // streaming: a chunk is being written
  bool finished_ = false;
};

}  // namespace paged::http
