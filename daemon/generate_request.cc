#include "daemon/generate_request.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace paged {
namespace {

absl::Status NoTokenizer() {
  return absl::FailedPreconditionError("the model's segment carries no tokenizer: send token ids");
}

// The chat prompt's token ids; `end_of_turn` gets the format's end-of-turn
// pieces.
absl::StatusOr<std::vector<int32_t>> ChatPrompt(const v1::ChatMessages& chat,
                                                const PromptContext& ctx,
                                                std::vector<std::string>* end_of_turn) {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (chat.messages().empty()) return bad("chat prompt has no messages");
  if (size_t(chat.messages_size()) > kMaxChatMessages)
    return bad("chat prompt of ", chat.messages_size(), " messages; at most ", kMaxChatMessages);
  std::vector<ChatTurn> turns;
  turns.reserve(size_t(chat.messages_size()));
  size_t bytes = 0;
  for (const v1::ChatMessage& m : chat.messages()) {
    bytes += m.role().size() + m.content().size();
    turns.push_back({m.role(), m.content()});
  }
  if (bytes > kMaxPromptTextBytes)
    return bad("chat messages of ", bytes, " bytes are over the limit of ", kMaxPromptTextBytes);
  if (ctx.chat == nullptr) return ctx.no_chat.ok() ? NoChatTemplateError() : ctx.no_chat;
  if (ctx.tokenizer == nullptr) return NoTokenizer();
  absl::StatusOr<std::string> text = ctx.chat->Render(turns, chat.add_generation_prompt());
  if (!text.ok()) return text.status();
  *end_of_turn = ctx.chat->end_of_turn();
  return ctx.tokenizer->Encode(*text, /*add_bos=*/false, /*parse_special=*/true);
}

}  // namespace

absl::StatusOr<ParsedGenerate> ParseGenerateRequest(const v1::GenerateRequest& req,
                                                    const PromptContext& ctx,
                                                    uint64_t random_seed) {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  ParsedGenerate out;
  Request& r = out.request;
  const Tokenizer* tokenizer = ctx.tokenizer;
  std::vector<std::string> end_of_turn;
  switch (req.prompt_case()) {
    case v1::GenerateRequest::kText: {
      const std::string& text = req.text();
      if (text.empty()) return bad("prompt text is empty");
      if (text.size() > kMaxPromptTextBytes)
        return bad("prompt text of ", text.size(), " bytes is over the limit of ",
                   kMaxPromptTextBytes);
      if (tokenizer == nullptr) return NoTokenizer();
      r.prompt = tokenizer->Encode(text, /*add_bos=*/true);
      break;
    }
    case v1::GenerateRequest::kTokens:
      if (req.tokens().ids().empty()) return bad("prompt is empty: no token ids");
      r.prompt.assign(req.tokens().ids().begin(), req.tokens().ids().end());
      break;
    case v1::GenerateRequest::kChat: {
      absl::StatusOr<std::vector<int32_t>> ids = ChatPrompt(req.chat(), ctx, &end_of_turn);
      if (!ids.ok()) return ids.status();
      if (ids->empty()) return bad("chat prompt renders to no tokens");
      r.prompt = *std::move(ids);
      break;
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return bad("prompt is required: set text, tokens or chat");
  }
  r.max_tokens = req.max_tokens();
  r.stop_ids.assign(req.stop_token_ids().begin(), req.stop_token_ids().end());
  if (size_t(req.stop_strings_size()) > kMaxStopStrings)
    return bad(req.stop_strings_size(), " stop strings; at most ", kMaxStopStrings);
  for (int i = 0; i < req.stop_strings_size(); ++i) {
    const std::string& s = req.stop_strings(i);
    if (s.empty()) return bad("stop string ", i, " is empty");
    if (s.size() > kMaxStopStringBytes)
      return bad("stop string ", i, " is ", s.size(), " bytes; at most ", kMaxStopStringBytes);
    out.stop_strings.push_back(s);
  }
  // The reply ends with the format's end of turn (the EOS of llama2 and
  // mistral stops anyway). A vocabulary without the piece can only write it
  // as text.
  for (const std::string& piece : end_of_turn) {
    const int32_t id = tokenizer->PieceToId(piece);
    if (id < 0) {
      out.stop_strings.push_back(piece);
    } else if (!tokenizer->IsEos(id) &&
               std::find(r.stop_ids.begin(), r.stop_ids.end(), id) == r.stop_ids.end()) {
      r.stop_ids.push_back(id);
    }
  }
  if (req.request_id().size() > kMaxRequestIdBytes)
    return bad("request_id is ", req.request_id().size(), " bytes; at most ", kMaxRequestIdBytes);
  r.request_id = req.request_id();
  if (req.has_resume()) {
    if (req.request_id().empty()) return bad("resume needs the request's request_id");
    if (req.resume().received() < 0)
      return bad("resume.received ", req.resume().received(), " must be >= 0");
  }
  const v1::SamplingParams& sp = req.sampling();
  r.sampling.temperature = sp.temperature();
  r.sampling.top_k = sp.top_k();
  r.sampling.top_p =
      sp.top_p() == 0.f ? 1.f : sp.top_p();  // 0: off (the scheduler checks the range)
  r.sampling.seed = sp.seed() != 0 ? sp.seed() : random_seed;
  r.ignore_eos = req.ignore_eos();
  return out;
}

}  // namespace paged
