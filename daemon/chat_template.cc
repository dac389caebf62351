#include "daemon/chat_template.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "daemon/jinja/template.h"
#include "tokenizer/tokenizer.h"

namespace paged {
namespace {

constexpr size_t kMaxQuotedSource = 120;  // bytes of an unsupported template quoted in errors
// The content of the one-message conversation a template must render (and
// write) to be executed.
constexpr std::string_view kProbeContent = "paged chat template probe 7f3a";

bool Contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

// Jinja's `trim` and Python's str.strip(): leading and trailing whitespace
// (ASCII only; Unicode spaces such as U+00A0 are kept, which Python strips).
std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\v\f\r";
  const size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(kSpace);
  return s.substr(b, e - b + 1);
}

absl::Status BadTurns(std::string_view format, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("chat messages: ", std::string(why), " (", std::string(format), " format)"));
}

// Every role is one of ours and the conversation is not empty.
absl::Status CheckRoles(std::span<const ChatTurn> turns, std::string_view format) {
  if (turns.empty()) return BadTurns(format, "the conversation is empty");
  for (size_t i = 0; i < turns.size(); ++i) {
    const std::string& r = turns[i].role;
    if (r != "system" && r != "user" && r != "assistant") {
      return BadTurns(format, absl::StrCat("message ", i, " has role '", r,
                                           "'; want system, user or assistant"));
    }
  }
  return absl::OkStatus();
}

// After one optional leading system turn (returned in *system, or null):
// user, assistant, user, ... (what the Llama 2, Mistral and Gemma templates
// enforce). `rest` gets the turns after the system turn.
absl::Status SplitAlternating(std::span<const ChatTurn> turns, std::string_view format,
                              bool system_allowed, const ChatTurn** system,
                              std::span<const ChatTurn>* rest) {
  *system = nullptr;
  *rest = turns;
  if (!turns.empty() && turns[0].role == "system") {
    if (!system_allowed) return BadTurns(format, "this format has no system message");
    *system = &turns[0];
    *rest = turns.subspan(1);
  }
  if (rest->empty()) return BadTurns(format, "no user message");
  for (size_t i = 0; i < rest->size(); ++i) {
    const std::string& want = i % 2 == 0 ? "user" : "assistant";
    if ((*rest)[i].role != want) {
      const size_t index = i + (*system != nullptr ? 1 : 0);
      return BadTurns(format,
                      absl::StrCat("message ", index, " is '", (*rest)[i].role, "' where '", want,
                                   "' was due: after an optional first system message, roles "
                                   "alternate user/assistant/user/..."));
    }
  }
  return absl::OkStatus();
}

// The system prompt a ChatML template writes when a conversation has none
// (Qwen2: {{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}):
// the first "<|im_start|>system" followed by a newline (written as the escape
// "\n" or as a newline) and then plain literal text up to "<|im_end|>". A
// quote before "<|im_end|>" means an expression (the conversation's own system
// message), not a literal: that occurrence is skipped.
std::string ChatMLDefaultSystem(std::string_view src) {
  constexpr std::string_view kOpen = "<|im_start|>system";
  constexpr std::string_view kClose = "<|im_end|>";
  for (size_t at = src.find(kOpen); at != std::string_view::npos;
       at = src.find(kOpen, at + kOpen.size())) {
    std::string_view rest = src.substr(at + kOpen.size());
    if (rest.substr(0, 2) == "\\n") {
      rest.remove_prefix(2);
    } else if (rest.substr(0, 1) == "\n") {
      rest.remove_prefix(1);
    } else {
      continue;
    }
    std::string text;
    bool literal = true;
    size_t i = 0;
    while (i < rest.size() && rest.substr(i, kClose.size()) != kClose) {
      const char c = rest[i];
      if (c == '\'' || c == '"' || c == '{' || c == '}') {
        literal = false;
        break;
      }
      if (c == '\\' && i + 1 < rest.size()) {
        const char e = rest[i + 1];
        text += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        i += 2;
        continue;
      }
      text += c;
      ++i;
    }
    if (literal && i < rest.size() && !text.empty()) return text;
  }
  return "";
}

}  // namespace

absl::Status NoChatTemplateError() {
  return absl::FailedPreconditionError(
      "the model has no chat template; start paged with --chat-template NAME (one of " +
      std::string(kChatFormatNames) + ")");
}

absl::StatusOr<ChatTemplate> ResolveChatTemplate(std::string_view source, std::string_view name,
                                                 const ChatTemplateOptions& options) {
  if (!name.empty()) return ChatTemplate::FromName(name);
  if (source.empty()) return NoChatTemplateError();
  return ChatTemplate::FromSource(source, options);
}

ChatTemplateOptions ChatTemplateOptionsFor(const Tokenizer* tokenizer) {
  ChatTemplateOptions o;
  if (tokenizer == nullptr) return o;
  if (tokenizer->bos_id() >= 0) o.bos_token = tokenizer->IdToPiece(tokenizer->bos_id());
  if (tokenizer->eos_id() >= 0) o.eos_token = tokenizer->IdToPiece(tokenizer->eos_id());
  return o;
}

namespace {

// The format a template's markers name, if any.
std::optional<ChatFormat> Recognise(std::string_view jinja) {
  if (Contains(jinja, "<|im_start|>")) return ChatFormat::kChatML;
  if (Contains(jinja, "<|start_header_id|>")) return ChatFormat::kLlama3;
  if (Contains(jinja, "<start_of_turn>")) return ChatFormat::kGemma;
  if (Contains(jinja, "[INST]")) {
    return Contains(jinja, "<<SYS>>") ? ChatFormat::kLlama2 : ChatFormat::kMistral;
  }
  return std::nullopt;
}

// The end of an assistant turn of an executed template whose markers name no
// format.
std::vector<std::string> JinjaStops(std::string_view jinja, const std::string& eos) {
  if (Contains(jinja, "<|channel|>") && Contains(jinja, "<|return|>")) {
    return {"<|return|>", "<|call|>"};  // gpt-oss (harmony): the final answer, a tool call
  }
  if (Contains(jinja, "<|assistant|>") && Contains(jinja, "<|end|>")) return {"<|end|>"};  // Phi-3
  if (!eos.empty()) return {eos};
  return {};
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromSource(std::string_view jinja,
                                                      const ChatTemplateOptions& options) {
  if (Trim(jinja).empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported chat template: the template is empty; supported: ",
                     std::string(kChatFormatNames)));
  }
  const std::optional<ChatFormat> markers = Recognise(jinja);
  auto with_markers = [&](ChatFormat f) {
    ChatTemplate t(f);
    if (f == ChatFormat::kChatML) t.default_system_ = ChatMLDefaultSystem(jinja);
    if (f == ChatFormat::kLlama3) t.llama31_preamble_ = Contains(jinja, "Cutting Knowledge Date");
    return t;
  };
  std::string why;
  absl::StatusOr<jinja::Template> engine = jinja::Template::Parse(jinja);
  if (engine.ok()) {
    ChatTemplate t = with_markers(markers.value_or(ChatFormat::kJinja));
    t.engine_ = std::make_shared<const jinja::Template>(*std::move(engine));
    t.options_ = options;
    if (!markers) t.stops_ = JinjaStops(jinja, options.eos_token);
    // A user message; else (a template that wants one) a system message first.
    const ChatTurn user[] = {{"user", std::string(kProbeContent)}};
    const ChatTurn system_user[] = {{"system", "s"}, {"user", std::string(kProbeContent)}};
    absl::StatusOr<std::string> text = t.RenderJinja(user, true);
    if (text.ok() && Contains(*text, kProbeContent)) return t;
    absl::StatusOr<std::string> second = t.RenderJinja(system_user, true);
    if (second.ok() && Contains(*second, kProbeContent)) return t;
    why = text.ok() ? "it does not write the content of a one-message conversation"
                    : absl::StrCat("a one-message conversation fails: ", text.status().message());
  } else {
    why = std::string(engine.status().message());
  }
  if (markers) {
    ChatTemplate t = with_markers(*markers);
    t.fallback_reason_ = why;
    Log(LogLevel::kWarning, "chat",
        "the checkpoint's chat template does not run (%s); rendering the %s format instead",
        why.c_str(), std::string(t.name()).c_str());
    return t;
  }
  std::string quoted(jinja.substr(0, kMaxQuotedSource));
  for (char& c : quoted) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported chat template: \"", quoted, jinja.size() > kMaxQuotedSource ? "...\"" : "\"",
      " (it does not run: ", why,
      "; and none of the markers <|im_start|>, <|start_header_id|>, [INST], <start_of_turn> "
      "names a format); supported: ",
      std::string(kChatFormatNames), "; name one with --chat-template"));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromName(std::string_view name) {
  if (name == "chatml") return ChatTemplate(ChatFormat::kChatML);
  if (name == "llama2") return ChatTemplate(ChatFormat::kLlama2);
  if (name == "llama3") return ChatTemplate(ChatFormat::kLlama3);
  if (name == "mistral") return ChatTemplate(ChatFormat::kMistral);
  if (name == "gemma") return ChatTemplate(ChatFormat::kGemma);
  return absl::InvalidArgumentError(absl::StrCat("unknown chat template '", std::string(name),
                                                 "'; supported: ", std::string(kChatFormatNames)));
}

std::string_view ChatTemplate::name() const {
  switch (format_) {
    case ChatFormat::kChatML:
      return "chatml";
    case ChatFormat::kLlama2:
      return "llama2";
    case ChatFormat::kLlama3:
      return "llama3";
    case ChatFormat::kMistral:
      return "mistral";
    case ChatFormat::kGemma:
      return "gemma";
    case ChatFormat::kJinja:
      return "jinja";
  }
  return "?";
}

std::string ChatTemplate::Describe() const {
  if (executed()) {
    if (format_ == ChatFormat::kJinja) {
      return "the checkpoint's own format (its chat template, executed)";
    }
    return absl::StrCat("the checkpoint's own format (its chat template, executed; ",
                        std::string(name()), " markers)");
  }
  if (!fallback_reason_.empty()) {
    return absl::StrCat("the ", std::string(name()),
                        " format (the checkpoint's template does not run: ", fallback_reason_, ")");
  }
  return absl::StrCat("the ", std::string(name()), " format");
}

std::vector<std::string> ChatTemplate::end_of_turn() const {
  switch (format_) {
    case ChatFormat::kChatML:
      return {"<|im_end|>"};
    case ChatFormat::kLlama3:
      return {"<|eot_id|>"};
    case ChatFormat::kGemma:
      return {"<end_of_turn>"};
    case ChatFormat::kLlama2:
    case ChatFormat::kMistral:
      return {"</s>"};
    case ChatFormat::kJinja:
      return stops_;
  }
  return {};
}

absl::StatusOr<std::string> ChatTemplate::Render(std::span<const ChatTurn> turns,
                                                 bool add_generation_prompt) const {
  if (absl::Status s = CheckRoles(turns, name()); !s.ok()) return s;
  if (executed()) return RenderJinja(turns, add_generation_prompt);
  switch (format_) {
    case ChatFormat::kChatML:
      return RenderChatML(turns, add_generation_prompt);
    case ChatFormat::kLlama2:
      return RenderLlama2(turns);
    case ChatFormat::kLlama3:
      return RenderLlama3(turns, add_generation_prompt);
    case ChatFormat::kMistral:
      return RenderMistral(turns);
    case ChatFormat::kGemma:
      return RenderGemma(turns, add_generation_prompt);
    case ChatFormat::kJinja:
      break;
  }
  return absl::InternalError("a chat format without a rendering");
}

// What transformers' apply_chat_template passes: messages, tools and
// documents (none), add_generation_prompt, and the tokenizer's special tokens.
absl::StatusOr<std::string> ChatTemplate::RenderJinja(std::span<const ChatTurn> turns,
                                                      bool gen) const {
  jinja::Array messages;
  messages.reserve(turns.size());
  for (const ChatTurn& t : turns) {
    jinja::Object m;
    m.Set("role", jinja::Value(t.role));
    m.Set("content", jinja::Value(t.content));
    messages.push_back(jinja::Value::Dict(std::move(m)));
  }
  jinja::Object vars;
  vars.Set("messages", jinja::Value::List(std::move(messages)));
  vars.Set("tools", jinja::Value::None());
  vars.Set("documents", jinja::Value::None());
  vars.Set("add_generation_prompt", jinja::Value(gen));
  if (!options_.bos_token.empty()) vars.Set("bos_token", jinja::Value(options_.bos_token));
  if (!options_.eos_token.empty()) vars.Set("eos_token", jinja::Value(options_.eos_token));
  jinja::RenderOptions ro;
  ro.now = options_.now;
  absl::StatusOr<std::string> text = engine_->Render(vars, ro);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", text.status().message()));
  }
  return text;
}

// {% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}
// {{ '<|im_start|>system\nDEFAULT<|im_end|>\n' }}{% endif %}{{ '<|im_start|>' + role + '\n'
// + content + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}
// {{ '<|im_start|>assistant\n' }}{% endif %}
absl::StatusOr<std::string> ChatTemplate::RenderChatML(std::span<const ChatTurn> turns,
                                                       bool gen) const {
  std::string out;
  if (!default_system_.empty() && turns[0].role != "system")
    absl::StrAppend(&out, "<|im_start|>system\n", default_system_, "<|im_end|>\n");
  for (const ChatTurn& t : turns)
    absl::StrAppend(&out, "<|im_start|>", t.role, "\n", t.content, "<|im_end|>\n");
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

// Llama-2-*-chat-hf: the system message goes into the first user turn
// ('<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content); each user turn is
// bos + '[INST] ' + content.strip() + ' [/INST]', each assistant turn
// ' ' + content.strip() + ' ' + eos.
absl::StatusOr<std::string> ChatTemplate::RenderLlama2(std::span<const ChatTurn> turns) const {
  const ChatTurn* system = nullptr;
  std::span<const ChatTurn> rest;
  if (absl::Status s = SplitAlternating(turns, name(), true, &system, &rest); !s.ok()) return s;
  std::string out;
  for (size_t i = 0; i < rest.size(); ++i) {
    const ChatTurn& t = rest[i];
    if (t.role == "user") {
      std::string content = t.content;
      if (i == 0 && system != nullptr)
        content = absl::StrCat("<<SYS>>\n", system->content, "\n<</SYS>>\n\n", t.content);
      absl::StrAppend(&out, "<s>[INST] ", std::string(Trim(content)), " [/INST]");
    } else {
      absl::StrAppend(&out, " ", std::string(Trim(t.content)), " </s>");
    }
  }
  return out;
}

// Meta-Llama-3-8B-Instruct: bos, then per turn '<|start_header_id|>' + role +
// '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>'. Llama 3.1 takes a
// leading system turn out, trims it, and always writes a system turn that
// starts with "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul
// 2024\n\n" (the template's default date_string).
absl::StatusOr<std::string> ChatTemplate::RenderLlama3(std::span<const ChatTurn> turns,
                                                       bool gen) const {
  std::string out = "<|begin_of_text|>";
  auto turn = [&out](std::string_view role, std::string_view content) {
    absl::StrAppend(&out, "<|start_header_id|>", std::string(role), "<|end_header_id|>\n\n",
                    std::string(content), "<|eot_id|>");
  };
  if (llama31_preamble_) {
    std::string_view system;
    if (turns[0].role == "system") {
      system = Trim(turns[0].content);
      turns = turns.subspan(1);
    }
    turn("system",
         absl::StrCat("Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n",
                      std::string(system)));
  }
  for (const ChatTurn& t : turns) turn(t.role, Trim(t.content));
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// Mistral-7B-Instruct-v0.3: bos, then '[INST] ' + content + '[/INST]' per
// user turn (the last one prefixed with system + '\n\n' when there is a
// system message) and ' ' + content | trim + eos per assistant turn.
absl::StatusOr<std::string> ChatTemplate::RenderMistral(std::span<const ChatTurn> turns) const {
  const ChatTurn* system = nullptr;
  std::span<const ChatTurn> rest;
  if (absl::Status s = SplitAlternating(turns, name(), true, &system, &rest); !s.ok()) return s;
  std::string out = "<s>";
  for (size_t i = 0; i < rest.size(); ++i) {
    const ChatTurn& t = rest[i];
    if (t.role == "user") {
      out += "[INST] ";
      if (i + 1 == rest.size() && system != nullptr) absl::StrAppend(&out, system->content, "\n\n");
      absl::StrAppend(&out, t.content, "[/INST]");
    } else {
      absl::StrAppend(&out, " ", std::string(Trim(t.content)), "</s>");
    }
  }
  return out;
}

// gemma-*-it: bos, then '<start_of_turn>' + role + '\n' + content | trim +
// '<end_of_turn>\n' with the assistant's role written "model"; no system.
absl::StatusOr<std::string> ChatTemplate::RenderGemma(std::span<const ChatTurn> turns,
                                                      bool gen) const {
  const ChatTurn* system = nullptr;
  std::span<const ChatTurn> rest;
  if (absl::Status s = SplitAlternating(turns, name(), false, &system, &rest); !s.ok()) return s;
  std::string out = "<bos>";
  for (const ChatTurn& t : rest) {
    absl::StrAppend(&out, "<start_of_turn>", t.role == "assistant" ? "model" : t.role, "\n",
                    std::string(Trim(t.content)), "<end_of_turn>\n");
  }
  if (gen) out += "<start_of_turn>model\n";
  return out;
}

}  // namespace paged
