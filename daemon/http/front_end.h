// paged's HTTP front end: the routes of the one HTTP server (`paged --http`),
// served by the same Coordinator as the gRPC services.
//
//   GET  /v1/models, /v1/models/{model}   the served model
//   POST /v1/completions                  OpenAI completions (CompletionCall)
//   POST /v1/chat/completions             OpenAI chat completions
//   GET  /metrics                         Prometheus text format 0.0.4
//   GET  /livez                           200 while the coordinator's loop turns
//   GET  /readyz, /health                 200 when ready (store READY, a worker
//                                         attached), else 503 saying why
//
// With a bearer token every route but the probes requires
// `Authorization: Bearer T` (401 in OpenAI's shape otherwise). Without one,
// a request whose Host (or Origin) is not loopback or an allowed host is
// refused (403): a web page cannot drive the API through DNS rebinding or a
// cross-site form. Unknown paths are 404, a known path with another method
// 405. docs/http.md has the rest.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/coordinator.h"
#include "daemon/http/http_server.h"

namespace paged::http {

// Whether `host` (a Host header's value: "name", "name:port", "[v6]:port")
// names this machine's loopback: localhost, *.localhost, 127.0.0.0/8, ::1.
bool IsLoopbackHost(std::string_view host);
// The host of a Host value or an Origin ("http://name:port"), lower-case,
// without port or brackets; "" when malformed.
std::string HostOf(std::string_view host_or_origin);

class FrontEnd {
 public:
  // `coordinator` must outlive the front end and its server. `allowed_hosts`
  // (comma-separated; "*" any) are accepted in Host and Origin besides
  // loopback names when there is no token.
  FrontEnd(Coordinator* coordinator, std::string token, const std::string& allowed_hosts = "");

  // The HttpServer handler.
  void Handle(std::shared_ptr<Exchange> exchange);

 private:
  bool Authorized(const Request& req) const;
  // Without a token: the Host and Origin headers name this machine or an
  // allowed host; the reason otherwise.
  std::string HostProblem(const Request& req) const;
  bool AllowedHost(std::string_view host_or_origin) const;

  Coordinator* coord_;
  const std::string token_;
  std::vector<std::string> allowed_hosts_;
  bool any_host_ = false;
  const int64_t created_;  // Unix seconds at start: the model's "created"
};

struct HttpOptions {
  std::string address;  // HOST:PORT
  std::string token;
  int threads = 4;
  size_t max_body_bytes = 8 << 20;
  std::string tls_cert, tls_key;  // HTTPS when set
  std::string allowed_hosts;      // see FrontEnd
  int max_connections = 1024;
  int max_connections_per_client = 256;
  double idle_timeout_s = 15;
  double header_timeout_s = 10;
};

// The front end and its server, started; errors come back in OpenAI's shape.
class HttpApi {
 public:
  static absl::StatusOr<std::unique_ptr<HttpApi>> Start(Coordinator* coordinator,
                                                        const HttpOptions& options);
  const std::string& address() const { return server_->address(); }
  HttpServer& server() { return *server_; }
  // The goodbye (docs/http.md): stops accepting, ends the coordinator's
  // streams (Coordinator::Shutdown: a streaming client gets an error event
  // and [DONE], a waiting one a 503), gives those answers up to `grace` to
  // be written, then closes every connection and stops.
  void Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  HttpApi() = default;
  Coordinator* coord_ = nullptr;
  std::unique_ptr<FrontEnd> front_end_;
  std::unique_ptr<HttpServer> server_;
};

}  // namespace paged::http
