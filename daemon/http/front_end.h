// paged's HTTP front end: the routes of the one HTTP server (`paged --http`),
// served by the same Coordinator as the gRPC services.
//
//   GET  /v1/models, /v1/models/{model}   the served model
//   POST /v1/completions                  OpenAI completions (CompletionCall)
//   POST /v1/chat/completions             OpenAI chat completions
//   GET  /metrics                         Prometheus text format 0.0.4
//   GET  /health                          200 "ok" (never needs the token)
//
// With a bearer token every route but /health requires
// `Authorization: Bearer T` (401 in OpenAI's shape otherwise). Unknown paths
// are 404, a known path with another method 405. docs/http.md has the rest.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/coordinator.h"
#include "daemon/http/http_server.h"

namespace paged::http {

class FrontEnd {
 public:
  // `coordinator` must outlive the front end and its server.
  FrontEnd(Coordinator* coordinator, std::string token);

  // The HttpServer handler.
  void Handle(std::shared_ptr<Exchange> exchange);

 private:
  bool Authorized(const Request& req) const;

  Coordinator* coord_;
  const std::string token_;
  const int64_t created_;  // Unix seconds at start: the model's "created"
};

struct HttpOptions {
  std::string address;  // HOST:PORT
  std::string token;
  int threads = 4;
  size_t max_body_bytes = 8 << 20;
};

// The front end and its server, started; errors come back in OpenAI's shape.
class HttpApi {
 public:
  static absl::StatusOr<std::unique_ptr<HttpApi>> Start(Coordinator* coordinator,
                                                        const HttpOptions& options);
  const std::string& address() const { return server_->address(); }
  // Closes every connection (their sequences are released) and stops.
  void Stop() { server_->Stop(); }

 private:
  HttpApi() = default;
  std::unique_ptr<FrontEnd> front_end_;
  std::unique_ptr<HttpServer> server_;
};

}  // namespace paged::http
