#include "daemon/http/front_end.h"

#include <ctime>

#include "absl/strings/str_cat.h"
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

}  // namespace

FrontEnd::FrontEnd(Coordinator* coordinator, std::string token)
    : coord_(coordinator), token_(std::move(token)), created_(int64_t(std::time(nullptr))) {}

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

  if (path == "/health") {
    if (method != bhttp::verb::get) return ex->Respond(MethodNotAllowed(req, path, "GET"));
    return ex->Respond(PlainText(bhttp::status::ok, "ok\n", "text/plain; charset=utf-8"));
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
  api->front_end_ = std::make_unique<FrontEnd>(coordinator, options.token);
  ServerOptions so;
  so.address = options.address;
  so.threads = options.threads;
  so.max_body_bytes = options.max_body_bytes;
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
  return api;
}

}  // namespace paged::http
