// int8 / int4 storage keep the stories260K model's predictions: teacher-forced
// top-1 agreement with f32 over its greedy transcript (an accuracy bound, not
// a timing).
#include "bench/quant_quality.h"

#include <gtest/gtest.h>

#include "tests/unit/test_util.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

TEST(QuantQualityTest, Int8AndInt4AgreeWithF32OnTheStoriesTranscript) {
  const std::string path = testing::Stories260KPath();
  PAGED_REQUIRE_FIXTURE(path, "../shared/models/stories260K.gguf");
  LayoutOptions layout;
  layout.weight_format = "f32";
  layout.kv_gib = 0.01;
  auto m = LocalModel::Load(path, layout, "cpu", 2);
  ASSERT_TRUE(m.ok()) << m.status();
  GenerateRequest req;
  req.prompt = {1};
  req.max_new_tokens = 200;
  req.stop_at_eos = false;
  auto r = Generate(*(*m)->engine, req, (*m)->kv_blocks());
  ASSERT_TRUE(r.ok());
  std::vector<int32_t> tokens = {1};
  tokens.insert(tokens.end(), r->tokens.begin(), r->tokens.end() - 1);
  auto q = MeasureQuality(path, tokens, {"int8", "int4"});
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_GE((*q)[0].top1_agreement, 0.95) << "int8";
  EXPECT_GE((*q)[1].top1_agreement, 0.80) << "int4";
  EXPECT_LT((*q)[0].mean_rel_error, (*q)[1].mean_rel_error);
}

}  // namespace
}  // namespace paged
