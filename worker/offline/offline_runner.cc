#include "worker/offline/offline_runner.h"

#include <chrono>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "tokenizer/segment_tokenizer.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {

absl::StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(part, &id) || id < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("--prompt-tokens: '", part, "' is not a token id"));
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--prompt-tokens: no token ids");
  return ids;
}

absl::Status RunOffline(const OfflineRunOptions& opts, std::FILE* out, std::FILE* err) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(auto src, OpenModel(opts.model_path));
  const ModelConfig& c = src->config;
  ASSIGN_OR_RETURN(const std::unique_ptr<const Tokenizer> tok,
                   CreateTokenizer(TokenizerBundleOf(*src), opts.model_path));
  std::vector<int32_t> prompt = opts.prompt_tokens;
  if (prompt.empty()) {
    if (!tok && !opts.prompt.empty())
      return absl::FailedPreconditionError(
          "this model carries no tokenizer paged can read yet: give --prompt-tokens 1,2,3");
    if (tok) prompt = tok->Encode(opts.prompt, opts.add_bos);
    if (prompt.empty() && c.bos_id >= 0) prompt.push_back(c.bos_id);
    if (prompt.empty())
      return absl::InvalidArgumentError("empty prompt and the model has no BOS token");
  }
  LayoutOptions layout;
  layout.weight_format = opts.weight_format;
  layout.kv_gib = opts.kv_gib;
  if (layout.kv_gib <= 0) {
    // Just what this one sequence needs (f32 rows bound every KV dtype),
    // plus a block of slack per layer.
    const double tokens = double(prompt.size()) + opts.max_new_tokens + 2.0 * layout.block_tokens;
    layout.kv_gib = tokens * 2.0 * c.kv_dim() * 4.0 * c.n_layers / double(1ull << 30);
  }
  ASSIGN_OR_RETURN(auto model, LocalModel::Load(*src, layout, opts.device, opts.threads));
  Engine& engine = *model->engine;
  const auto t_load = Clock::now();

  GenerateRequest req;
  req.prompt = prompt;
  req.max_new_tokens = opts.max_new_tokens;
  req.sampling = opts.sampling;
  int32_t prev = prompt.back();
  if (tok && !opts.print_tokens) {
    const std::string text = tok->Decode(prompt);  // the prompt, as llama.cpp echoes it
    std::fwrite(text.data(), 1, text.size(), out);
  }
  auto on_token = [&](int32_t t) {
    if (opts.print_tokens || !tok) {
      std::fprintf(out, "%d ", t);
    } else {
      const std::string piece = tok->DecodePiece(prev, t);
      std::fwrite(piece.data(), 1, piece.size(), out);
    }
    std::fflush(out);
    prev = t;
  };
  ASSIGN_OR_RETURN(GenerateResult r, Generate(engine, req, model->kv_blocks(), on_token));
  std::fprintf(out, "\n");
  const double load_s = std::chrono::duration<double>(t_load - t0).count();
  const double gen_s = std::chrono::duration<double>(Clock::now() - t_load).count();
  std::fprintf(
      err,
      "paged-run: %s on %s, %zu prompt + %zu generated tokens (%s), load %.2f s, %.1f tokens/s\n",
      std::string(ArchName(c.arch)).c_str(), model->backend->name().c_str(), prompt.size(),
      r.tokens.size(), r.finish_reason.c_str(), load_s,
      gen_s > 0 ? double(r.tokens.size()) / gen_s : 0.0);
  return absl::OkStatus();
}

}  // namespace paged
