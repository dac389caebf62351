// Chat templates: a conversation (system / user / assistant turns) rendered
// into the prompt text a chat model was trained on.
//
// Checkpoints ship their template as Jinja source (tokenizer_config.json
// "chat_template", GGUF "tokenizer.chat_template"). We do not run Jinja: a
// template is recognised by markers in its source and rendered by our own
// code, one function per format, reproducing what the upstream template
// renders for plain text messages (no tools, no images):
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
// parse_special = true): every format that wants BOS writes it itself.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paged {

enum class ChatFormat { kChatML, kLlama2, kLlama3, kMistral, kGemma };

struct ChatTurn {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// "chatml, llama2, llama3, mistral, gemma": the names FromName accepts.
inline constexpr std::string_view kChatFormatNames = "chatml, llama2, llama3, mistral, gemma";

class ChatTemplate {
 public:
  // Recognises the format of a Jinja template source. INVALID_ARGUMENT
  // ("unsupported chat template: ...; supported: ...") for a source with
  // none of the markers, or an empty one.
  static absl::StatusOr<ChatTemplate> FromSource(std::string_view jinja);
  // A format by name (the operator's --chat-template override), with no
  // default system prompt. INVALID_ARGUMENT for an unknown name.
  static absl::StatusOr<ChatTemplate> FromName(std::string_view name);

  // The prompt text of `turns`, ending with the assistant's turn opened when
  // `add_generation_prompt` (llama2 and mistral open it with every user turn:
  // the flag changes nothing there). INVALID_ARGUMENT for an empty
  // conversation, an unknown role, or an order the format cannot express
  // (llama2, mistral, gemma: user and assistant alternate, starting with
  // user, after one optional leading system turn; gemma has no system turn).
  absl::StatusOr<std::string> Render(std::span<const ChatTurn> turns,
                                     bool add_generation_prompt) const;

  ChatFormat format() const { return format_; }
  // "chatml", "llama2", "llama3", "mistral", "gemma".
  std::string_view name() const;
  // The system prompt used when a conversation has none ("" for none).
  const std::string& default_system() const { return default_system_; }
  // The special tokens (as text) that end an assistant turn in this format:
  // generation stops when the model writes one. For llama2 and mistral this
  // is the end-of-sequence token "</s>".
  std::vector<std::string> end_of_turn() const;

 private:
  explicit ChatTemplate(ChatFormat f) : format_(f) {}

  absl::StatusOr<std::string> RenderChatML(std::span<const ChatTurn> turns, bool gen) const;
  absl::StatusOr<std::string> RenderLlama2(std::span<const ChatTurn> turns) const;
  absl::StatusOr<std::string> RenderLlama3(std::span<const ChatTurn> turns, bool gen) const;
  absl::StatusOr<std::string> RenderMistral(std::span<const ChatTurn> turns) const;
  absl::StatusOr<std::string> RenderGemma(std::span<const ChatTurn> turns, bool gen) const;

  ChatFormat format_;
  std::string default_system_;     // chatml: the template's default system prompt
  bool llama31_preamble_ = false;  // llama3: the Llama 3.1 system preamble
};

// The FAILED_PRECONDITION a chat prompt gets when the model has no chat
// template and the operator named none.
absl::Status NoChatTemplateError();

// The template a server renders chat prompts with: the format `name` (the
// operator's --chat-template) when set, else `source` (the checkpoint's)
// recognised; NoChatTemplateError() when both are empty.
absl::StatusOr<ChatTemplate> ResolveChatTemplate(std::string_view source, std::string_view name);

}  // namespace paged
