#include "daemon/generate_request.h"

#include "absl/strings/str_cat.h"

namespace paged {

absl::StatusOr<ParsedGenerate> ParseGenerateRequest(const v1::GenerateRequest& req,
                                                    const SpTokenizer* tokenizer,
                                                    uint64_t random_seed) {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  ParsedGenerate out;
  Request& r = out.request;
  switch (req.prompt_case()) {
    case v1::GenerateRequest::kText: {
      const std::string& text = req.text();
      if (text.empty()) return bad("prompt text is empty");
      if (text.size() > kMaxPromptTextBytes)
        return bad("prompt text of ", text.size(), " bytes is over the limit of ",
                   kMaxPromptTextBytes);
      if (tokenizer == nullptr)
        return absl::FailedPreconditionError(
            "the model's segment carries no tokenizer: send token ids");
      r.prompt = tokenizer->Encode(text, /*add_bos=*/true);
      break;
    }
    case v1::GenerateRequest::kTokens:
      if (req.tokens().ids().empty()) return bad("prompt is empty: no token ids");
      r.prompt.assign(req.tokens().ids().begin(), req.tokens().ids().end());
      break;
    case v1::GenerateRequest::kChat:
      return absl::UnimplementedError("chat prompts are not supported yet");
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return bad("prompt is required: set text or tokens");
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
  if (req.request_id().size() > kMaxRequestIdBytes)
    return bad("request_id is ", req.request_id().size(), " bytes; at most ", kMaxRequestIdBytes);
  r.request_id = req.request_id();
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
