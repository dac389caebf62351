// --lm-head-format: an untied lm_head stored quantized (fewer device bytes
// for the globals, which buys resident layers) is one more rounding of the
// logits, nothing else: the tensor has the asked type, the greedy tokens of
// an HF golden model stay those of the f16 lm_head, and a bad value is a
// one-line error.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/unit/golden_util.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

std::vector<int32_t> Greedy(const std::string& lm_head, DType* stored) {
  LayoutOptions layout;
  layout.weight_format = "f16";
  layout.lm_head_format = lm_head;
  layout.kv_gib = 0.001;
  auto m = LocalModel::Load(testing::GoldenDir("llama_gqa"), layout, "cpu", 2);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return {};
  const TensorEntry* out = (*m)->image->image().header->FindGlobal("output");
  EXPECT_NE(out, nullptr);
  if (out != nullptr) *stored = out->Type();
  GenerateRequest req;
  req.prompt = {1, 5, 9, 14};
  req.max_new_tokens = 12;
  req.stop_at_eos = false;
  auto r = Generate(*(*m)->engine, req, (*m)->kv_blocks());
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->tokens : std::vector<int32_t>{};
}

TEST(LmHeadFormatTest, AQuantizedLmHeadKeepsTheGreedyTokens) {
  DType t = DType::kF32;
  const std::vector<int32_t> want = Greedy("auto", &t);
  EXPECT_EQ(t, DType::kF16);
  ASSERT_EQ(want.size(), 12u);
  for (const auto& [flag, type] :
       {std::pair{"int8", DType::kI8}, std::pair{"bf16", DType::kBF16}}) {
    EXPECT_EQ(Greedy(flag, &t), want) << flag;
    EXPECT_EQ(t, type) << flag;
  }
  // int4 rounds each weight to 4 bits: it stores and runs (its tokens may differ).
  EXPECT_EQ(Greedy("int4", &t).size(), 12u);
  EXPECT_EQ(t, DType::kI4);
}

TEST(LmHeadFormatTest, ABadValueIsAOneLineError) {
  LayoutOptions layout;
  layout.lm_head_format = "int3";
  auto img = OwnedImage::Build(testing::GoldenDir("llama_gqa"), layout);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(
      img.status().message().find("--lm-head-format=int3: expected auto, f16, bf16, int8 or int4"),
      std::string::npos)
      << img.status();
}

}  // namespace
}  // namespace paged
