// Prints how close each weight format stays to f32: teacher-forced top-1
// agreement over the stories260K transcript and the logits' relative error on
// the HF golden fixtures.
//
//   quant_quality [--stories PATH] [--golden DIR]
#include "bench/quant_quality.h"

#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "common/cli.h"
#include "store/model_source.h"
#include "tokenizer/sp_tokenizer.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

ABSL_FLAG(std::string, stories, "../shared/models/stories260K.gguf", "stories260K.gguf");
ABSL_FLAG(std::string, golden, "tests/golden", "directory of HF golden fixtures");

namespace {

void PrintRows(const std::string& model, const std::vector<paged::FormatQuality>& rows) {
  for (const auto& q : rows) {
    std::printf("%-28s %-6s %9.1f%% %14.2e %14.2e\n", model.c_str(), q.format.c_str(),
                100 * q.top1_agreement, q.mean_rel_error, q.max_rel_error);
  }
}

}  // namespace

int main(int argc, char** argv) {
  paged::ParseFlags(argc, argv, "quant_quality [--stories PATH] [--golden DIR]");
  const std::vector<std::string> formats = {"f16", "bf16", "int8", "int4"};
  std::printf("%-28s %-6s %10s %14s %14s\n", "model", "format", "top-1 agr", "mean rel err",
              "max rel err");
  // stories260K: teacher-force its own greedy transcript (BOS + 200 tokens).
  const std::string stories = absl::GetFlag(FLAGS_stories);
  if (std::filesystem::exists(stories)) {
    paged::LayoutOptions layout;
    layout.weight_format = "f32";
    layout.kv_gib = 0.01;
    auto m = paged::LocalModel::Load(stories, layout, "cpu");
    if (!m.ok()) return std::fprintf(stderr, "%s\n", std::string(m.status().message()).c_str()), 1;
    paged::GenerateRequest req;
    req.prompt = {1};
    req.max_new_tokens = 200;
    req.stop_at_eos = false;
    auto r = paged::Generate(*(*m)->engine, req, (*m)->kv_blocks());
    std::vector<int32_t> tokens = {1};
    tokens.insert(tokens.end(), r->tokens.begin(), r->tokens.end() - 1);
    auto rows = paged::MeasureQuality(stories, tokens, formats);
    if (!rows.ok())
      return std::fprintf(stderr, "%s\n", std::string(rows.status().message()).c_str()), 1;
    PrintRows("stories260K (transcript)", *rows);
  }
  const std::string golden = absl::GetFlag(FLAGS_golden);
  if (std::filesystem::is_directory(golden)) {
    for (const auto& dir : std::filesystem::directory_iterator(golden)) {
      if (!dir.is_directory()) continue;
      const std::vector<int32_t> tokens = {1, 49, 92, 133, 181, 216, 258, 308, 345, 389, 431, 469};
      auto src = paged::OpenModel(dir.path().string());
      if (!src.ok()) continue;
      std::vector<int32_t> t;
      for (int32_t x : tokens) t.push_back(x % (*src)->config.vocab);
      auto rows = paged::MeasureQuality(dir.path().string(), t, formats);
      if (!rows.ok())
        return std::fprintf(stderr, "%s\n", std::string(rows.status().message()).c_str()), 1;
      PrintRows("golden/" + dir.path().filename().string(), *rows);
    }
  }
  return 0;
}
