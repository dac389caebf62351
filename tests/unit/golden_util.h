// HF golden fixtures (tests/golden/): reading them and running our engine
// over their tokens, shared by the CPU and GPU tests.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/unit/test_util.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged::testing {

inline const std::vector<std::string>& GoldenCases() {
  static const std::vector<std::string> cases = {"llama_gqa", "llama3_rope", "mistral",
                                                 "qwen2_bias", "llama_tied"};
  return cases;
}

inline std::string GoldenDir(const std::string& name) {
  return testing::SourceDir() + "/tests/golden/" + name;
}

struct Golden {
  std::vector<int32_t> tokens;
  std::vector<std::vector<double>> logits;  // [position][vocab]
};

inline Golden ReadGolden(const std::string& dir) {
  const auto j = nlohmann::json::parse(ReadFile(dir + "/expected.json"));
  Golden g;
  g.tokens = j["tokens"].get<std::vector<int32_t>>();
  g.logits = j["logits"].get<std::vector<std::vector<double>>>();
  return g;
}

// Logits at every position: one decode step per token (teacher forcing), or
// the whole sequence in one prefill step (last position only).
inline std::vector<std::vector<float>> RunLogits(const std::string& dir, const std::string& format,
                                                 const std::vector<int32_t>& tokens, bool prefill,
                                                 const std::string& device = "cpu") {
  LayoutOptions layout;
  layout.weight_format = format;
  layout.kv_gib = 0.001;
  auto m = LocalModel::Load(dir, layout, device, 2);
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

}  // namespace paged::testing
