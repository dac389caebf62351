#include "daemon/http/front_end.h"

#include <arpa/inet.h>

#include <cctype>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "daemon/bearer_token.h"
#include "daemon/http/completion_call.h"
#include "daemon/http/openai_api.h"
#include "daemon/metrics.h"

namespace paged::http {
namespace {

ApiError NotFound(const Request& req, std::string_view path) {
  ApiError e;
  e.status = 404;
  e.message =
      absl::StrCat("Invalid URL (", std::string(req.method_string()), " ", std::string(path), ")");
  e.code = "not_found";
  return e;
}

Response MethodNotAllowed(const Request& req, std::string_view path, const char* allow) {
  ApiError e;
  e.status = 405;
  e.message = absl::StrCat("Method ", std::string(req.method_string()), " is not allowed on ",
                           std::string(path), "; use ", allow);
  e.code = "method_not_allowed";
  Response r = ErrorResponse(e);
  r.set(bhttp::field::allow, allow);
  return r;
}

Response PlainText(bhttp::status status, std::string body, std::string_view content_type) {
  Response r{status, 11};
  r.set(bhttp::field::content_type, std::string(content_type));
  r.body() = std::move(body);
  return r;
}

Response Forbidden(const std::string& why) {
  ApiError e;
  e.status = 403;
  e.message = why;
  e.code = "forbidden_host";
  return ErrorResponse(e);
}

}  // namespace

std::string HostOf(std::string_view v) {
  if (const size_t scheme = v.find("://"); scheme != std::string_view::npos)
    v = v.substr(scheme + 3);
  if (const size_t slash = v.find('/'); slash != std::string_view::npos) v = v.substr(0, slash);
  if (v.empty()) return "";
  std::string_view host;
  if (v.front() == '[') {
    const size_t close = v.find(']');
    if (close == std::string_view::npos) return "";
    host = v.substr(1, close - 1);
    const std::string_view rest = v.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return "";
  } else {
    const size_t colon = v.find(':');
    host = v.substr(0, colon);
    if (colon != std::string_view::npos && v.find(':', colon + 1) != std::string_view::npos)
      return "";  // an IPv6 address without brackets
  }
  std::string out(host);
  absl::AsciiStrToLower(&out);
  if (!out.empty() && out.back() == '.') out.pop_back();  // "localhost."
  return out;
}

bool IsLoopbackHost(std::string_view value) {
  const std::string h = HostOf(value);
  if (h.empty()) return false;
  if (h == "localhost" || absl::EndsWith(h, ".localhost")) return true;
  in_addr a4{};
  if (::inet_pton(AF_INET, h.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (::inet_pton(AF_INET6, h.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

FrontEnd::FrontEnd(Coordinator* coordinator, std::string token, const std::string& allowed_hosts)
    : coord_(coordinator), token_(std::move(token)), created_(int64_t(std::time(nullptr))) {
  for (absl::string_view h : absl::StrSplit(allowed_hosts, ',', absl::SkipWhitespace())) {
    const std::string host(absl::StripAsciiWhitespace(h));
    if (host == "*") {
      any_host_ = true;
    } else {
      allowed_hosts_.push_back(HostOf(host));
    }
  }
}

bool FrontEnd::AllowedHost(std::string_view value) const {
  if (any_host_ || IsLoopbackHost(value)) return true;
  const std::string h = HostOf(value);
  for (const std::string& a : allowed_hosts_) {
    if (!a.empty() && a == h) return true;
  }
  return false;
}

std::string FrontEnd::HostProblem(const Request& req) const {
  if (!token_.empty() || any_host_) return "";  // a page cannot know the token
  if (auto it = req.find(bhttp::field::host); it != req.end()) {
    const std::string_view host(it->value().data(), it->value().size());
    if (!AllowedHost(host))
      return absl::StrCat("Host '", std::string(host),
                          "' is not this machine: without a token the API answers only requests "
                          "addressed to localhost or to a host named by --http-allowed-hosts");
  }
  if (auto it = req.find(bhttp::field::origin); it != req.end()) {
    const std::string_view origin(it->value().data(), it->value().size());
    if (origin != "null" && !AllowedHost(origin))
      return absl::StrCat("Origin '", std::string(origin),
                          "' is not allowed: without a token the API answers only pages of "
                          "localhost or of a host named by --http-allowed-hosts");
    if (origin == "null") return "Origin 'null' is not allowed without a token";
  }
  return "";
}

bool FrontEnd::Authorized(const Request& req) const {
  if (token_.empty()) return true;
  auto it = req.find(bhttp::field::authorization);
  if (it == req.end()) return false;
  const auto v = it->value();
  return BearerTokenMatches(std::string_view(v.data(), v.size()), token_);
}

void FrontEnd::Handle(std::shared_ptr<Exchange> ex) {
  const Request& req = ex->request();
  const auto target = req.target();
  std::string_view path(target.data(), target.size());
  if (const size_t q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  const bhttp::verb method = req.method();
  if (LogEnabled(LogLevel::kDebug))
    Log(LogLevel::kDebug, "http", "%s %s from %s", std::string(req.method_string()).c_str(),
        std::string(path).c_str(), ex->peer().c_str());

  // Probes: no token, any Host (load balancers address the machine by IP).
  if (path == "/livez" || path == "/readyz" || path == "/health") {
    if (method != bhttp::verb::get) return ex->Respond(MethodNotAllowed(req, path, "GET"));
    constexpr std::string_view kText = "text/plain; charset=utf-8";
    if (path == "/livez") {
      if (!coord_->Live())
        return ex->Respond(PlainText(bhttp::status::service_unavailable,
                                     "not live: the coordinator's loop has stopped turning\n",
                                     kText));
      return ex->Respond(PlainText(bhttp::status::ok, "ok\n", kText));
    }
    const Readiness r = coord_->GetReadiness();
    if (!r.ready)
      return ex->Respond(
          PlainText(bhttp::status::service_unavailable, "not ready: " + r.reason + "\n", kText));
    return ex->Respond(PlainText(bhttp::status::ok, "ok\n", kText));
  }
  if (const std::string why = HostProblem(req); !why.empty()) {
    Log(LogLevel::kInfo, "http", "%s: 403: %s", ex->peer().c_str(), why.c_str());
    return ex->Respond(Forbidden(why));
  }

  const std::string& model = coord_->options().model_name;
  const bool models = path == "/v1/models" || path.starts_with("/v1/models/");
  const bool completions = path == "/v1/completions";
  const bool chat = path == "/v1/chat/completions";
  const bool metrics = path == "/metrics";
  if (!models && !completions && !chat && !metrics)
    return ex->Respond(ErrorResponse(NotFound(req, path)));
  const bool get = models || metrics;
  if (method != (get ? bhttp::verb::get : bhttp::verb::post))
    return ex->Respond(MethodNotAllowed(req, path, get ? "GET" : "POST"));
  if (!Authorized(req)) {
    ApiError e = ErrorFromStatus(absl::UnauthenticatedError(
        "Incorrect or missing API key: send the header 'Authorization: Bearer TOKEN' with the "
        "server's token"));
    return ex->Respond(ErrorResponse(e));
  }

  if (metrics)
    return ex->Respond(
        PlainText(bhttp::status::ok, coord_->RenderMetrics(), std::string(metrics::kContentType)));
  if (models) {
    if (path == "/v1/models" || path == "/v1/models/")
      return ex->Respond(JsonResponse(bhttp::status::ok, ModelsBody(model, created_)));
    const std::string_view id = path.substr(std::string_view("/v1/models/").size());
    if (id != model) {
      ApiError e;
      e.status = 404;
      e.message = absl::StrCat("The model '", std::string(id), "' does not exist");
      e.param = "model";
      e.code = "model_not_found";
      return ex->Respond(ErrorResponse(e));
    }
    return ex->Respond(JsonResponse(bhttp::status::ok, ModelsBody(model, created_)["data"][0]));
  }

  ApiRequest api;
  ApiError error;
  if (!ParseApiRequest(completions ? Endpoint::kCompletions : Endpoint::kChatCompletions,
                       req.body(), model, &api, &error)) {
    coord_->metrics().CountRequest(RequestStatus::kRejected);
    return ex->Respond(ErrorResponse(error));
  }
  CompletionCall::Start(*coord_, std::move(ex), std::move(api));
}

absl::StatusOr<std::unique_ptr<HttpApi>> HttpApi::Start(Coordinator* coordinator,
                                                        const HttpOptions& options) {
  std::unique_ptr<HttpApi> api(new HttpApi());
  api->coord_ = coordinator;
  api->front_end_ = std::make_unique<FrontEnd>(coordinator, options.token, options.allowed_hosts);
  ServerOptions so;
  so.address = options.address;
  so.threads = options.threads;
  so.max_body_bytes = options.max_body_bytes;
  so.tls_cert = options.tls_cert;
  so.tls_key = options.tls_key;
  so.max_connections = options.max_connections;
  so.max_connections_per_client = options.max_connections_per_client;
  auto ms = [](double s) { return std::chrono::milliseconds(int64_t(s * 1000)); };
  so.idle_timeout = ms(options.idle_timeout_s);
  so.header_timeout = ms(options.header_timeout_s);
  so.error_response = [](bhttp::status status, std::string_view message) {
    ApiError e;
    e.status = int(status);
    e.message = std::string(message);
    if (status == bhttp::status::payload_too_large) e.code = "request_too_large";
    return ErrorResponse(e);
  };
  FrontEnd* fe = api->front_end_.get();
  absl::StatusOr<std::unique_ptr<HttpServer>> server =
      HttpServer::Start(std::move(so), [fe](std::shared_ptr<Exchange> ex) { fe->Handle(ex); });
  if (!server.ok()) return server.status();
  api->server_ = std::move(*server);
  if (options.token.empty() && options.allowed_hosts.empty()) {
    std::string host;
    uint16_t port = 0;
    if (SplitHostPort(options.address, &host, &port).ok() && !IsLoopbackHost(host))
      Log(LogLevel::kWarning, "http",
          "%s is reachable from other machines without a token: their requests are refused "
          "(403) unless --http-allowed-hosts names the host they use (or set a token)",
          options.address.c_str());
  }
  return api;
}

void HttpApi::Stop(std::chrono::milliseconds grace) {
  server_->StopAccepting();
  coord_->Shutdown();  // every open stream ends now: the calls write their goodbye
  server_->Stop(grace);
}

}  // namespace paged::http
