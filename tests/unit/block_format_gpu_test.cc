// GGUF block formats on the CUDA backend (label gpu; skips without a GPU):
// a model that keeps them as stored (`native`) runs on the GPU and agrees
// with the CPU reference. Two paths: the default (each block-format matrix
// dequantized to f16 and multiplied on cuBLAS with f16 activations) and the
// fused decode GEMV (PAGED_CUDA_FUSED_GEMV=1, f32 throughout; decode and
// prefill steps of n <= 8 rows). With the fused path the greedy tokens of
// the Q4_K_M fixture equal the reference's; on both, teacher-forced logits
// stay within the path's tolerance, for every fixture format. The same file
// decoded to f32 / f16 at load agrees too.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/unit/fused_gemv_env.h"
#include "tests/unit/golden_util.h"
#include "worker/device.h"
#include "worker/engine/backend_factory.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

bool HaveGpu() { return !ListGpus().empty() && MakeBackend("cuda:0").ok(); }

std::string Fixture(const std::string& name) {
  return testing::SourceDir() + "/tests/golden/gguf/" + name;
}
std::string Q4KM() { return Fixture("tiny-q4_k_m.gguf"); }

// Greedy tokens from `prompt` on `device`, the file's blocks kept as stored.
std::vector<int32_t> Greedy(const std::string& path, const std::string& device,
                            const std::vector<int32_t>& prompt, int count) {
  LayoutOptions layout;
  layout.weight_format = "native";
  layout.kv_gib = 0.001;
  auto m = LocalModel::Load(path, layout, device, 2);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return {};
  GenerateRequest req;
  req.prompt = prompt;
  req.max_new_tokens = count;
  req.stop_at_eos = false;
  auto r = Generate(*(*m)->engine, req, (*m)->kv_blocks());
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->tokens : std::vector<int32_t>{};
}

// Relative error bounds of the logits (norm of the difference over the
// reference's norm, per position). Fused: the weights decode to the
// reference's values exactly and every sum is f32, only its order differs
// (and a KV entry may round to the other f16 neighbour). Default: weights
// and activations rounded to f16 for cuBLAS, as the f16 image below.
constexpr double kFusedTol = 1e-3;
constexpr double kDequantTol = 2e-2;

TEST(BlockFormatGpuTest, Q4KMGreedyTokensEqualTheReferenceOnTheFusedPath) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  const std::vector<int32_t> prompt = {1, 17, 42};
  const std::vector<int32_t> ref = Greedy(Q4KM(), "cpu-ref", prompt, 16);
  ASSERT_EQ(ref.size(), 16u);
  testing::FusedGemvEnv fused(true);
  EXPECT_EQ(Greedy(Q4KM(), "cuda:0", prompt, 16), ref);
}

TEST(BlockFormatGpuTest, Q4KMLogitsAgreeWithTheReferenceOnBothPaths) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  // The prompt and the reference's greedy continuation, teacher-forced: one
  // decode step per token (n = 1), then the whole sequence as one prefill
  // step (n = 19: dequantize + cuBLAS on either setting).
  std::vector<int32_t> tokens = {1, 17, 42};
  const std::vector<int32_t> cont = Greedy(Q4KM(), "cpu-ref", tokens, 16);
  tokens.insert(tokens.end(), cont.begin(), cont.end());
  const auto ref = testing::RunLogits(Q4KM(), "native", tokens, false, "cpu-ref");
  ASSERT_EQ(ref.size(), tokens.size());
  for (bool on : {false, true}) {
    testing::FusedGemvEnv fused(on);
    const char* path = on ? "fused" : "dequantize + cuBLAS";
    const auto got = testing::RunLogits(Q4KM(), "native", tokens, false, "cuda:0");
    ASSERT_EQ(got.size(), tokens.size()) << path;
    for (size_t p = 0; p < tokens.size(); ++p) {
      const std::vector<double> want(ref[p].begin(), ref[p].end());
      EXPECT_LT(testing::RelativeError(got[p], want), on ? kFusedTol : kDequantTol)
          << path << " position " << p;
    }
    const auto pre = testing::RunLogits(Q4KM(), "native", tokens, true, "cuda:0");
    ASSERT_EQ(pre.size(), 1u) << path;
    const std::vector<double> want(ref.back().begin(), ref.back().end());
    EXPECT_LT(testing::RelativeError(pre[0], want), kDequantTol) << path << " prefill";
  }
}

// Every fixture (each a file of one block format, with the Q6_K / Q8_0 /
// Q3_K / Q5_K tensors llama-quantize mixes in): 9 decode steps on both paths.
TEST(BlockFormatGpuTest, EveryFixtureFormatAgreesWithTheReference) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  const std::vector<int32_t> tokens = {1, 17, 42, 5, 63, 8, 30, 2, 11};
  for (const char* file :
       {"tiny-q4_0.gguf", "tiny-q4_1.gguf", "tiny-q5_0.gguf", "tiny-q5_1.gguf", "tiny-q2_k.gguf",
        "tiny-q3_k_m.gguf", "tiny-q4_k_m.gguf", "tiny-q5_k_m.gguf", "tiny-q6_k.gguf",
        "tiny-iq4_nl.gguf", "tiny-iq4_xs.gguf", "tiny-mxfp4.gguf"}) {
    const auto ref = testing::RunLogits(Fixture(file), "native", tokens, false, "cpu-ref");
    ASSERT_EQ(ref.size(), tokens.size()) << file;
    for (bool on : {false, true}) {
      testing::FusedGemvEnv fused(on);
      const auto got = testing::RunLogits(Fixture(file), "native", tokens, false, "cuda:0");
      ASSERT_EQ(got.size(), tokens.size()) << file << (on ? " fused" : " dequantize");
      for (size_t p = 0; p < tokens.size(); ++p) {
        const std::vector<double> want(ref[p].begin(), ref[p].end());
        EXPECT_LT(testing::RelativeError(got[p], want), on ? kFusedTol : kDequantTol)
            << file << (on ? " fused" : " dequantize") << " position " << p;
      }
    }
  }
}

// Against llama.cpp directly (tests/golden/gguf/llama_logits.json, its
// README): llama.cpp on each file dequantized to F32 computes with the
// weights we decode. The CPU reference lies within 5e-3 of it (f16 KV against
// f32; gguf_quant_test), so the fused path, within kFusedTol of the
// reference, gets the sum of both; dequantize + cuBLAS its f16 rounding on
// top. And llama.cpp's greedy continuations where its quantized and F32 runs
// agree (no near tie): the fused path gives the same tokens.
TEST(BlockFormatGpuTest, EveryFixtureAgreesWithLlamaCpp) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  const auto oracle = nlohmann::json::parse(testing::ReadFile(Fixture("llama_logits.json")));
  const std::vector<int32_t> tokens = oracle["tokens"].get<std::vector<int32_t>>();
  ASSERT_EQ(oracle["files_dequantized"].size(), 12u);
  for (const auto& [file, want_logits] : oracle["files_dequantized"].items()) {
    for (bool on : {false, true}) {
      testing::FusedGemvEnv fused(on);
      const auto got = testing::RunLogits(Fixture(file), "native", tokens, false, "cuda:0");
      ASSERT_EQ(got.size(), tokens.size()) << file;
      for (size_t p = 0; p < tokens.size(); ++p) {
        EXPECT_LT(testing::RelativeError(got[p], want_logits[p].get<std::vector<double>>()),
                  on ? 5e-3 + kFusedTol : 5e-3 + kDequantTol)
            << file << (on ? " fused" : " dequantize") << " position " << p;
      }
    }
  }
  const std::vector<int32_t> prompt = oracle["greedy_prompt"].get<std::vector<int32_t>>();
  testing::FusedGemvEnv fused(true);
  for (const char* file : {"tiny-q4_k_m.gguf", "tiny-q4_0.gguf"}) {
    const std::vector<int32_t> want =
        oracle["greedy"][file]["quantized"].get<std::vector<int32_t>>();
    EXPECT_EQ(Greedy(Fixture(file), "cuda:0", prompt, int(want.size())), want) << file;
  }
}

TEST(BlockFormatGpuTest, DecodedAtLoadTheFileRunsAndAgreesWithTheReference) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  const std::vector<int32_t> tokens = {1, 17, 42, 5, 63, 8, 30, 2, 11};
  const auto ref = testing::RunLogits(Q4KM(), "native", tokens, false, "cpu-ref");
  ASSERT_EQ(ref.size(), tokens.size());
  for (const char* format : {"f32", "f16"}) {
    const auto got = testing::RunLogits(Q4KM(), format, tokens, false, "cuda:0");
    ASSERT_EQ(got.size(), tokens.size()) << format;
    for (size_t p = 0; p < tokens.size(); ++p) {
      const std::vector<double> want(ref[p].begin(), ref[p].end());
      EXPECT_LT(testing::RelativeError(got[p], want), 2e-2) << format << " position " << p;
    }
  }
}

}  // namespace
}  // namespace paged
