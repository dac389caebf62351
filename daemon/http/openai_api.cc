#include "daemon/http/openai_api.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <optional>
#include <random>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace paged::http {
namespace {

using json = nlohmann::json;

// The deepest nesting of arrays and objects in `text` (outside strings):
// nlohmann's parser recurses, so a body of a million '[' is refused first.
int JsonDepth(std::string_view text) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

// Collects the first error while a body is checked field by field.
class Checker {
 public:
  Checker(const json& body, ApiError* error) : body_(body), error_(error) {}
  bool ok() const { return ok_; }

  bool Fail(std::string param, std::string message, int status = 400, std::string code = "") {
    if (ok_) {
      error_->status = status;
      error_->type = "invalid_request_error";
      error_->param = std::move(param);
      error_->message = std::move(message);
      error_->code = std::move(code);
      ok_ = false;
    }
    return false;
  }

  // The field, or null when absent.
  const json& Get(const char* name) const {
    static const json kNull;
    auto it = body_.find(name);
    return it == body_.end() ? kNull : *it;
  }

  // A field that must be absent, null or its default.
  void Unsupported(const char* name, const std::function<bool(const json&)>& is_default) {
    const json& v = Get(name);
    if (!v.is_null() && !is_default(v))
      Fail(name, absl::StrCat("'", name, "' is not supported (only its default)"));
  }

  std::optional<bool> Bool(const char* name) {
    const json& v = Get(name);
    if (v.is_null()) return std::nullopt;
    if (!v.is_boolean()) {
      Fail(name, absl::StrCat("'", name, "' must be a boolean"));
      return std::nullopt;
    }
    return v.get<bool>();
  }

  std::optional<int64_t> Int(const char* name, int64_t lo, int64_t hi) {
    const json& v = Get(name);
    if (v.is_null()) return std::nullopt;
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(hi)) ||
        v.get<int64_t>() < lo || v.get<int64_t>() > hi) {
      Fail(name, absl::StrCat("'", name, "' must be an integer in [", lo, ", ", hi, "]"));
      return std::nullopt;
    }
    return v.get<int64_t>();
  }

  std::optional<double> Number(const char* name) {
    const json& v = Get(name);
    if (v.is_null()) return std::nullopt;
    if (!v.is_number() || !std::isfinite(v.get<double>())) {
      Fail(name, absl::StrCat("'", name, "' must be a number"));
      return std::nullopt;
    }
    return v.get<double>();
  }

 private:
  const json& body_;
  ApiError* error_;
  bool ok_ = true;
};

bool IsZero(const json& v) { return v.is_number() && v.get<double>() == 0; }
bool IsOne(const json& v) { return v.is_number() && v.get<double>() == 1; }
bool IsFalse(const json& v) { return v.is_boolean() && !v.get<bool>(); }
bool IsEmpty(const json& v) {
  return (v.is_array() || v.is_object() || v.is_string()) && v.empty();
}

// A JSON array of token ids into `ids`; false when it is not one.
bool TokenIdArray(const json& a, v1::TokenIds* ids) {
  for (const json& t : a) {
    if (!t.is_number_integer() || t.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
        t.get<int64_t>() > std::numeric_limits<int32_t>::max())
      return false;
    ids->add_ids(int32_t(t.get<int64_t>()));
  }
  return true;
}

void ParsePrompt(Checker& c, v1::GenerateRequest* g) {
  const json& p = c.Get("prompt");
  if (p.is_null()) {
    c.Fail("prompt", "'prompt' is required");
  } else if (p.is_string()) {
    g->set_text(p.get<std::string>());
  } else if (!p.is_array() || p.empty()) {
    c.Fail("prompt",
           "'prompt' must be a string, a list of token ids, or a list of one string or one "
           "list of token ids");
  } else if (p.front().is_number()) {
    if (!TokenIdArray(p, g->mutable_tokens()))
      c.Fail("prompt", "'prompt' as token ids must be a list of 32-bit integers");
  } else if (p.size() > 1) {
    c.Fail("prompt", "a list of several prompts is not supported: send one prompt per request");
  } else if (p.front().is_string()) {
    g->set_text(p.front().get<std::string>());
  } else if (p.front().is_array()) {
    if (!TokenIdArray(p.front(), g->mutable_tokens()))
      c.Fail("prompt", "'prompt' as token ids must be a list of 32-bit integers");
  } else {
    c.Fail("prompt", "'prompt' must be a string or a list of token ids");
  }
}

void ParseMessages(Checker& c, v1::GenerateRequest* g) {
  const json& m = c.Get("messages");
  if (!m.is_array() || m.empty()) {
    c.Fail("messages", "'messages' must be a non-empty list of {role, content}");
    return;
  }
  v1::ChatMessages* chat = g->mutable_chat();
  chat->set_add_generation_prompt(true);
  for (size_t i = 0; i < m.size() && c.ok(); ++i) {
    const json& msg = m[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!msg.is_object()) {
      c.Fail(where, absl::StrCat("'", where, "' must be an object {role, content}"));
      return;
    }
    auto role = msg.find("role");
    if (role == msg.end() || !role->is_string()) {
      c.Fail(where + ".role", absl::StrCat("'", where, ".role' is required"));
      return;
    }
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant") {
      c.Fail(where + ".role", absl::StrCat("'", where, ".role' is '", r,
                                           "': only system, user and assistant are supported"));
      return;
    }
    std::string text;
    auto content = msg.find("content");
    if (content == msg.end() || content->is_null()) {
      c.Fail(where + ".content", absl::StrCat("'", where, ".content' is required"));
      return;
    }
    if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {
      // Text parts, joined by newlines (as vLLM does).
      for (size_t k = 0; k < content->size(); ++k) {
        const json& part = (*content)[k];
        auto type = part.is_object() ? part.find("type") : part.end();
        auto part_text = part.is_object() ? part.find("text") : part.end();
        if (!part.is_object() || type == part.end() || *type != "text" || part_text == part.end() ||
            !part_text->is_string()) {
          c.Fail(absl::StrCat(where, ".content[", k, "]"),
                 absl::StrCat("'", where, ".content[", k,
                              "]': only {\"type\": \"text\", \"text\": ...} parts are supported"));
          return;
        }
        if (k > 0) text += "\n";
        text += part_text->get<std::string>();
      }
    } else {
      c.Fail(where + ".content",
             absl::StrCat("'", where, ".content' must be a string or a list of text parts"));
      return;
    }
    v1::ChatMessage* out = chat->add_messages();
    out->set_role(r);
    out->set_content(std::move(text));
  }
}

void ParseStop(Checker& c, v1::GenerateRequest* g) {
  const json& s = c.Get("stop");
  if (s.is_null()) return;
  if (s.is_string()) {
    g->add_stop_strings(s.get<std::string>());
    return;
  }
  if (!s.is_array()) {
    c.Fail("stop", "'stop' must be a string or a list of strings");
    return;
  }
  for (const json& e : s) {
    if (!e.is_string()) {
      c.Fail("stop", "'stop' must be a string or a list of strings");
      return;
    }
    g->add_stop_strings(e.get<std::string>());
  }
}

// OpenAI's shape; prompt_tokens_details.cached_tokens only when the prefix
// cache served some of the prompt (as OpenAI reports it).
json UsageJson(const TokenUsage& u) {
  json j = {{"prompt_tokens", u.prompt_tokens},
            {"completion_tokens", u.completion_tokens},
            {"total_tokens", u.prompt_tokens + u.completion_tokens}};
  if (u.cached_tokens > 0) j["prompt_tokens_details"] = {{"cached_tokens", u.cached_tokens}};
  return j;
}

json Nullable(std::string_view s) { return s.empty() ? json(nullptr) : json(std::string(s)); }

}  // namespace

json ErrorBody(const ApiError& e) {
  return {{"error",
           {{"message", e.message},
            {"type", e.type},
            {"param", Nullable(e.param)},
            {"code", Nullable(e.code)}}}};
}

ApiError ErrorFromStatus(const absl::Status& s) {
  ApiError e;
  e.message = std::string(s.message());
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      e.status = 400;
      break;
    case absl::StatusCode::kUnauthenticated:
      e.status = 401;
      e.code = "invalid_api_key";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.status = 403;
      break;
    case absl::StatusCode::kNotFound:
      e.status = 404;
      break;
    case absl::StatusCode::kResourceExhausted:
      e.status = 429;
      e.type = "rate_limit_error";
      e.code = "queue_full";
      break;
    case absl::StatusCode::kUnimplemented:
      e.status = 501;
      e.type = "not_implemented_error";
      break;
    case absl::StatusCode::kUnavailable:
      e.status = 503;
      e.type = "server_error";
      e.code = "unavailable";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.status = 504;
      e.type = "server_error";
      e.code = "timeout";
      break;
    default:
      e.status = 500;
      e.type = "server_error";
      break;
  }
  return e;
}

bool ParseApiRequest(Endpoint endpoint, std::string_view body, const std::string& served_model,
                     ApiRequest* out, ApiError* error) {
  *out = ApiRequest();
  out->endpoint = endpoint;
  auto bad = [&](std::string message) {
    *error = ApiError();
    error->message = std::move(message);
    return false;
  };
  if (JsonDepth(body) > kMaxJsonDepth)
    return bad(absl::StrCat("the body nests deeper than ", kMaxJsonDepth, " levels"));
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("the body is not valid JSON");
  if (!j.is_object()) return bad("the body must be a JSON object");
  Checker c(j, error);
  v1::GenerateRequest& g = out->generate;
  const bool chat = endpoint == Endpoint::kChatCompletions;

  // The model: the served one, named or not.
  const json& model = c.Get("model");
  if (!model.is_null() && !model.is_string()) return c.Fail("model", "'model' must be a string");
  if (model.is_string() && !model.get<std::string>().empty() &&
      model.get<std::string>() != served_model)
    return c.Fail("model",
                  absl::StrCat("The model '", model.get<std::string>(),
                               "' does not exist; this server serves '", served_model, "'"),
                  404, "model_not_found");

  if (chat)
    ParseMessages(c, &g);
  else
    ParsePrompt(c, &g);
  if (!c.ok()) return false;

  // Lengths: completions default to 16 tokens; chat to as many as fit.
  std::optional<int64_t> max_tokens;
  if (chat) max_tokens = c.Int("max_completion_tokens", 1, std::numeric_limits<int32_t>::max());
  if (!max_tokens && c.ok())
    max_tokens = c.Int("max_tokens", 1, std::numeric_limits<int32_t>::max());
  if (!c.ok()) return false;
  if (max_tokens) {
    g.set_max_tokens(int32_t(*max_tokens));
  } else if (chat) {
    out->fill_max_tokens = true;
  } else {
    g.set_max_tokens(kDefaultCompletionMaxTokens);
  }

  // Sampling: OpenAI's defaults (temperature 1, top_p 1); top_k is vLLM's
  // extension (-1 or 0: off).
  v1::SamplingParams* sp = g.mutable_sampling();
  const std::optional<double> temperature = c.Number("temperature");
  if (temperature && *temperature < 0) return c.Fail("temperature", "'temperature' must be >= 0");
  sp->set_temperature(float(temperature.value_or(1.0)));
  const std::optional<double> top_p = c.Number("top_p");
  if (top_p && !(*top_p > 0 && *top_p <= 1)) return c.Fail("top_p", "'top_p' must be in (0, 1]");
  sp->set_top_p(float(top_p.value_or(1.0)));
  const std::optional<int64_t> top_k = c.Int("top_k", -1, std::numeric_limits<int32_t>::max());
  sp->set_top_k(top_k && *top_k > 0 ? int32_t(*top_k) : 0);
  const json& seed = c.Get("seed");
  if (!seed.is_null()) {
    if (!seed.is_number_integer()) return c.Fail("seed", "'seed' must be an integer");
    // Any 64-bit value; 0 means "pick one" (as in paged.v1).
    sp->set_seed(seed.is_number_unsigned() ? seed.get<uint64_t>() : uint64_t(seed.get<int64_t>()));
  }

  ParseStop(c, &g);
  const json& stop_ids = c.Get("stop_token_ids");  // vLLM's extension
  if (!stop_ids.is_null()) {
    v1::TokenIds ids;
    if (!stop_ids.is_array() || !TokenIdArray(stop_ids, &ids))
      return c.Fail("stop_token_ids", "'stop_token_ids' must be a list of token ids");
    g.mutable_stop_token_ids()->Add(ids.ids().begin(), ids.ids().end());
  }
  if (std::optional<bool> ignore = c.Bool("ignore_eos")) g.set_ignore_eos(*ignore);

  if (std::optional<bool> stream = c.Bool("stream")) out->stream = *stream;
  const json& so = c.Get("stream_options");
  if (!so.is_null()) {
    if (!out->stream)
      return c.Fail("stream_options", "'stream_options' is only allowed when 'stream' is true");
    auto iu = so.is_object() ? so.find("include_usage") : so.end();
    if (!so.is_object() || (iu != so.end() && !iu->is_boolean() && !iu->is_null()))
      return c.Fail("stream_options", "'stream_options' must be {\"include_usage\": bool}");
    out->include_usage = iu != so.end() && iu->is_boolean() && iu->get<bool>();
  }

  // One choice per request; what paged does not do must stay at its default.
  c.Unsupported("n", IsOne);
  c.Unsupported("best_of", IsOne);
  c.Unsupported("echo", IsFalse);
  c.Unsupported("logprobs", [&](const json& v) { return IsFalse(v) || (!chat && IsZero(v)); });
  c.Unsupported("top_logprobs", IsZero);
  c.Unsupported("suffix", IsEmpty);
  c.Unsupported("presence_penalty", IsZero);
  c.Unsupported("frequency_penalty", IsZero);
  c.Unsupported("repetition_penalty", IsOne);
  c.Unsupported("logit_bias", IsEmpty);
  c.Unsupported("tools", IsEmpty);
  c.Unsupported("functions", IsEmpty);
  c.Unsupported("tool_choice", [](const json& v) { return v == "none"; });
  c.Unsupported("function_call", [](const json& v) { return v == "none"; });
  c.Unsupported("response_format", [](const json& v) {
    auto t = v.is_object() ? v.find("type") : v.end();
    return t != v.end() && *t == "text";
  });
  return c.ok();
}

std::string_view OpenAiFinishReason(FinishReason end) {
  switch (end) {
    case FinishReason::kEos:
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "abort";
    case FinishReason::kNone:
    case FinishReason::kError:
    case FinishReason::kDeadline:
    case FinishReason::kShutdown:
      break;
  }
  return "";
}

json CompletionBody(const ResponseInfo& info, const std::string& text,
                    std::string_view finish_reason, const TokenUsage& usage) {
  json choice;
  if (info.endpoint == Endpoint::kChatCompletions) {
    choice = {{"index", 0},
              {"message", {{"role", "assistant"}, {"content", text}}},
              {"logprobs", nullptr},
              {"finish_reason", Nullable(finish_reason)}};
  } else {
    choice = {{"text", text},
              {"index", 0},
              {"logprobs", nullptr},
              {"finish_reason", Nullable(finish_reason)}};
  }
  return {{"id", info.id},
          {"object",
           info.endpoint == Endpoint::kChatCompletions ? "chat.completion" : "text_completion"},
          {"created", info.created},
          {"model", info.model},
          {"choices", json::array({choice})},
          {"usage", UsageJson(usage)}};
}

json ChunkBody(const ResponseInfo& info, const std::string& text, bool role_only,
               std::string_view finish_reason, bool include_usage) {
  json choice;
  if (info.endpoint == Endpoint::kChatCompletions) {
    json delta = json::object();
    if (role_only)
      delta = {{"role", "assistant"}, {"content", ""}};
    else if (!text.empty())
      delta = {{"content", text}};
    choice = {{"index", 0},
              {"delta", delta},
              {"logprobs", nullptr},
              {"finish_reason", Nullable(finish_reason)}};
  } else {
    choice = {{"text", text},
              {"index", 0},
              {"logprobs", nullptr},
              {"finish_reason", Nullable(finish_reason)}};
  }
  json j = {{"id", info.id},
            {"object", info.endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk"
                                                                   : "text_completion"},
            {"created", info.created},
            {"model", info.model},
            {"choices", json::array({choice})}};
  if (include_usage) j["usage"] = nullptr;
  return j;
}

json UsageChunkBody(const ResponseInfo& info, const TokenUsage& usage) {
  return {{"id", info.id},
          {"object", info.endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk"
                                                                 : "text_completion"},
          {"created", info.created},
          {"model", info.model},
          {"choices", json::array()},
          {"usage", UsageJson(usage)}};
}

json ModelsBody(const std::string& model, int64_t created) {
  return {
      {"object", "list"},
      {"data",
       json::array(
           {{{"id", model}, {"object", "model"}, {"created", created}, {"owned_by", "paged"}}})}};
}

std::string Dump(const json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

std::string SseEvent(const json& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }

std::string NewResponseId(std::string_view prefix) {
  ABSL_CONST_INIT static absl::Mutex mu(absl::kConstInit);
  static std::mt19937_64 rng ABSL_GUARDED_BY(mu){std::random_device{}()};
  uint64_t a, b;
  {
    absl::MutexLock lock(&mu);
    a = rng();
    b = rng();
  }
  char hex[25];
  std::snprintf(hex, sizeof(hex), "%016llx%08llx", static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b & 0xffffffffull));
  return absl::StrCat(std::string(prefix), hex);
}

}  // namespace paged::http
