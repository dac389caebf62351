// Our logits against HF transformers' (float64) for small random checkpoints
// of each architecture (tests/golden/, made by scripts/make_golden.py), on the
// CPU reference backend.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "tests/unit/test_util.h"
#include "worker/engine/generator.h"
#include "worker/engine/local_model.h"

namespace paged {
namespace {

struct Golden {
  std::vector<int32_t> tokens;
  std::vector<std::vector<double>> logits;  // [position][vocab]
};

Golden ReadGolden(const std::string& dir) {
  const auto j = nlohmann::json::parse(testing::ReadFile(dir + "/expected.json"));
  Golden g;
  g.tokens = j["tokens"].get<std::vector<int32_t>>();
  g.logits = j["logits"].get<std::vector<std::vector<double>>>();
  return g;
}

double RelativeError(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

// Logits at every position: one decode step per token (teacher forcing), or
// the whole sequence in one prefill step (last position only).
std::vector<std::vector<float>> RunLogits(const std::string& dir, const std::string& format,
                                          const std::vector<int32_t>& tokens, bool prefill) {
  LayoutOptions layout;
  layout.weight_format = format;
  layout.kv_gib = 0.001;
  auto m = LocalModel::Load(dir, layout, "cpu", 2);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return {};
  Engine& engine = *(*m)->engine;
  const int bt = engine.block_tokens();
  SeqStep s;
  s.seq_id = 1;
  s.return_logits = true;
  for (int b = 0; b * bt < int(tokens.size()); ++b) s.block_table.push_back(b);
  std::vector<std::vector<float>> out;
  if (prefill) {
    s.tokens = tokens;
    StepBatch batch{{s}};
    auto r = engine.Step(batch);
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) out.push_back(r->logits[0]);
    return out;
  }
  auto all = TeacherForcedLogits(engine, tokens, (*m)->kv_blocks());
  EXPECT_TRUE(all.ok()) << all.status();
  return all.ok() ? *all : out;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string Dir() const { return std::string(PAGED_SOURCE_DIR) + "/tests/golden/" + GetParam(); }
};

TEST_P(GoldenTest, F32LogitsMatchTransformersAtEveryPosition) {
  const Golden g = ReadGolden(Dir());
  const auto got = RunLogits(Dir(), "f32", g.tokens, /*prefill=*/false);
  ASSERT_EQ(got.size(), g.logits.size());
  for (size_t p = 0; p < got.size(); ++p) {
    ASSERT_EQ(got[p].size(), g.logits[p].size());
    EXPECT_LT(RelativeError(got[p], g.logits[p]), 1e-4) << "position " << p;
  }
}

TEST_P(GoldenTest, F32PrefillMatchesTheLastPosition) {
  const Golden g = ReadGolden(Dir());
  const auto got = RunLogits(Dir(), "f32", g.tokens, /*prefill=*/true);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_LT(RelativeError(got[0], g.logits.back()), 1e-4);
}

TEST_P(GoldenTest, SixteenBitStorageStaysWithinOnePercent) {
  const Golden g = ReadGolden(Dir());
  for (const char* format : {"f16", "bf16"}) {
    const auto got = RunLogits(Dir(), format, g.tokens, /*prefill=*/false);
    ASSERT_EQ(got.size(), g.logits.size());
    for (size_t p = 0; p < got.size(); ++p) EXPECT_LT(RelativeError(got[p], g.logits[p]), 1e-2) << format << " " << p;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GoldenTest,
                         ::testing::Values("llama_gqa", "llama3_rope", "mistral", "qwen2_bias", "llama_tied"));

}  // namespace
}  // namespace paged
