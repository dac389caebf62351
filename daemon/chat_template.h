// Chat templates: a conversation (system / user / assistant turns) rendered
// into the prompt text a chat model was trained on.
//
// Checkpoints ship their template as Jinja source (tokenizer_config.json
// "chat_template", GGUF "tokenizer.chat_template"). FromSource runs that
// template with paged's Jinja subset engine (daemon/jinja/template.h), as
// transformers' apply_chat_template does: the variables are messages
// ([{role, content}]), add_generation_prompt, bos_token and eos_token (the
// tokenizer's, as text; left undefined when it has none), tools = none and
// documents = none; strftime_now() reads the local clock. The published
// templates of Llama 3.1 / 3.2 / 3.3, Qwen2.5, Qwen3, Mistral 7B v0.3 and
// Nemo, Gemma 2 and 3, Phi-3.5 and gpt-oss render byte for byte as jinja2
// set up as transformers does (tests/golden/chat_templates/). A template's
// raise_exception() refuses the conversation with the template's message.
//
// A template the engine cannot run (it does not parse, uses a tag outside the
// subset, or fails on or does not write the content of a plain conversation:
// a user message, or a system and a user message) falls back to the format its markers name,
// rendered by our own code, with a warning saying why; FromName picks one of those by name (the
// operator's --chat-template):
//
//   chatml   "<|im_start|>"            Qwen2 / Qwen2.5, SmolLM, ...
//            <|im_start|>ROLE\nCONTENT<|im_end|>\n per turn; the template's
//            default system prompt (Qwen2: "You are a helpful assistant.")
//            when the conversation does not start with a system turn.
//   llama3   "<|start_header_id|>"     Llama 3 / 3.1 / 3.2 Instruct
//            <|begin_of_text|><|start_header_id|>ROLE<|end_header_id|>\n\n
//            CONTENT(trimmed)<|eot_id|> per turn. A Llama 3.1 template
//            ("Cutting Knowledge Date" in the source) always opens with a
//            system turn that starts with its date preamble.
//   llama2   "[INST]" and "<<SYS>>"    Llama 2 chat, CodeLlama instruct
//            <s>[INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER [/INST] ASSISTANT </s>
//            <s>[INST] USER [/INST] ...; user and assistant alternate.
//   mistral  "[INST]" without "<<SYS>>"  Mistral-7B-Instruct v0.3 behaviour:
//            <s>[INST] USER[/INST] ASSISTANT</s>[INST] SYSTEM\n\nUSER[/INST];
//            the system prompt is folded into the LAST user turn (and is
//            dropped when the conversation does not end with a user turn,
//            as the upstream template does).
//   gemma    "<start_of_turn>"         Gemma / Gemma 2 instruct
//            <bos><start_of_turn>user\nCONTENT<end_of_turn>\n, "model" for
//            the assistant; no system turn.
//
// The rendered text holds special tokens as text ("<|im_start|>", "<s>");
// tokenize it with Tokenizer::Encode(text, add_bos = false,
// parse_special = true): every template that wants BOS writes it itself.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paged {

namespace jinja {
class Template;
}
class Tokenizer;

// kJinja: a template the engine runs whose markers name none of the formats
// (Phi-3, gpt-oss, ...); it has no hand-written rendering.
enum class ChatFormat { kChatML, kLlama2, kLlama3, kMistral, kGemma, kJinja };

struct ChatTurn {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// "chatml, llama2, llama3, mistral, gemma": the names FromName accepts.
inline constexpr std::string_view kChatFormatNames = "chatml, llama2, llama3, mistral, gemma";

// What a checkpoint's template is rendered with besides the conversation.
struct ChatTemplateOptions {
  std::string bos_token;  // the tokenizer's BOS as text; "": none (undefined in the template)
  std::string eos_token;  // its EOS as text; "": none
  // The local time strftime_now() formats; null: the system clock. Tests fix it.
  std::function<std::tm()> now;
};

// bos_token and eos_token of `tokenizer` (its BOS and primary EOS pieces);
// none for a null tokenizer.
ChatTemplateOptions ChatTemplateOptionsFor(const Tokenizer* tokenizer);

class ChatTemplate {
 public:
  // The checkpoint's template, run by the Jinja engine; when the engine
  // cannot run it, the format its markers name (a warning logged, the reason
  // in fallback_reason()). INVALID_ARGUMENT ("unsupported chat template:
  // ...; supported: ...") for an empty source, or one the engine cannot run
  // and no marker names.
  static absl::StatusOr<ChatTemplate> FromSource(std::string_view jinja,
                                                 const ChatTemplateOptions& options = {});
  // A format by name (the operator's --chat-template override), rendered by
  // our own code with no default system prompt. INVALID_ARGUMENT for an
  // unknown name.
  static absl::StatusOr<ChatTemplate> FromName(std::string_view name);

  // The prompt text of `turns`, ending with the assistant's turn opened when
  // `add_generation_prompt`. INVALID_ARGUMENT for an empty conversation or a
  // role other than system, user and assistant; for an executed template,
  // whatever it raises ("chat template: line 14: Conversation roles must
  // alternate user/assistant/user/assistant/..."); for a hand-written format,
  // an order it cannot express (llama2, mistral, gemma: user and assistant
  // alternate, starting with user, after one optional leading system turn;
  // gemma has no system turn; llama2 and mistral open the assistant's turn
  // with every user turn: the flag changes nothing there).
  absl::StatusOr<std::string> Render(std::span<const ChatTurn> turns,
                                     bool add_generation_prompt) const;

  // True when the checkpoint's template itself renders (the engine runs it).
  bool executed() const { return engine_ != nullptr; }
  // Why the checkpoint's template is not executed ("" when it is, or for
  // FromName).
  const std::string& fallback_reason() const { return fallback_reason_; }
  // The format the markers name (kJinja: none), or the one named.
  ChatFormat format() const { return format_; }
  // "chatml", "llama2", "llama3", "mistral", "gemma"; "jinja" for a template
  // that is executed and names none of them.
  std::string_view name() const;
  // For logs: "the chatml format", "the checkpoint's own format (its chat
  // template, executed; llama3 markers)", ...
  std::string Describe() const;
  // The system prompt the chatml format writes when a conversation has none
  // ("" for none; the template's own, when it is executed).
  const std::string& default_system() const { return default_system_; }
  // The special tokens (as text) that end an assistant turn: generation
  // stops when the model writes one. The format's (<|im_end|>, <|eot_id|>,
  // <end_of_turn>; "</s>" for llama2 and mistral); for an executed template
  // whose markers name no format, <|end|> for Phi-3 style templates
  // (<|assistant|> ... <|end|>), <|return|> and <|call|> for gpt-oss (the
  // harmony format's <|channel|>), else its EOS token.
  std::vector<std::string> end_of_turn() const;

 private:
  explicit ChatTemplate(ChatFormat f) : format_(f) {}

  absl::StatusOr<std::string> RenderJinja(std::span<const ChatTurn> turns, bool gen) const;
  absl::StatusOr<std::string> RenderChatML(std::span<const ChatTurn> turns, bool gen) const;
  absl::StatusOr<std::string> RenderLlama2(std::span<const ChatTurn> turns) const;
  absl::StatusOr<std::string> RenderLlama3(std::span<const ChatTurn> turns, bool gen) const;
  absl::StatusOr<std::string> RenderMistral(std::span<const ChatTurn> turns) const;
  absl::StatusOr<std::string> RenderGemma(std::span<const ChatTurn> turns, bool gen) const;

  ChatFormat format_;
  std::shared_ptr<const jinja::Template> engine_;  // null: a hand-written format
  ChatTemplateOptions options_;                    // the engine's bos / eos / clock
  std::vector<std::string> stops_;                 // executed kJinja: its end of turn
  std::string fallback_reason_;
  std::string default_system_;     // chatml: the template's default system prompt
  bool llama31_preamble_ = false;  // llama3: the Llama 3.1 system preamble
};

// The FAILED_PRECONDITION a chat prompt gets when the model has no chat
// template and the operator named none.
absl::Status NoChatTemplateError();

// The template a server renders chat prompts with: the format `name` (the
// operator's --chat-template) when set, else `source` (the checkpoint's, run
// with `options`); NoChatTemplateError() when both are empty.
absl::StatusOr<ChatTemplate> ResolveChatTemplate(std::string_view source, std::string_view name,
                                                 const ChatTemplateOptions& options = {});

}  // namespace paged
