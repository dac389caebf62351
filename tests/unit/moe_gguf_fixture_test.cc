// Mixture-of-experts GGUF files with quantized experts against llama.cpp
// (tests/golden/arch/moe_gguf/, made by scripts/make_moe_gguf_fixtures.py):
// tiny random qwen3moe, mixtral (a llama file with experts) and gpt-oss
// models written as F16 GGUFs and quantized by llama.cpp's llama-quantize,
// so their 3-D expert tensors hold Q4_K, Q5_K, Q6_K, Q8_0 and MXFP4 blocks.
//
// The oracle for each file is llama.cpp twice (expected.json):
//   - logits_dequantized: llama.cpp on the same file with every tensor
//     dequantized to F32 by gguf-py: the weight values we decode from the
//     blocks, computed in f32. We must agree to f32 rounding when the blocks
//     are decoded at load (f32 segments: 1e-4, as the f32 arch fixtures),
//     and to the f16 KV cache of native segments (5e-3, as the dense block
//     formats of gguf_quant_test).
//   - logits_quantized: llama.cpp on the file as it is. Its CPU products
//     quantize the activations (q8_0 / q8_K blocks), which moves its own
//     logits 3.6-4.1% from its dequantized run (relative, worst position),
//     so we can only be as close to it as that run is; printed, and
//     bounded by that run's distance plus our own tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "tests/unit/fixture_harness.h"
#include "tests/unit/golden_util.h"
#include "tests/unit/test_util.h"
#include "worker/offline/owned_image.h"

namespace paged {
namespace {

// The files the fixture must hold (a missing one fails: it is made here, by
// the script, not downloaded).
const std::vector<std::string>& MoeGgufFiles() {
  static const std::vector<std::string> files = {"gpt_oss-mxfp4_moe.gguf", "mixtral-q4_k_m.gguf",
                                                 "qwen3moe-q4_k_m.gguf"};
  return files;
}

std::string FixtureDir() { return testing::ArchDir("moe_gguf"); }

struct Oracle {
  std::vector<int32_t> tokens;
  std::vector<std::vector<double>> dequantized;  // [position][vocab]
  std::vector<std::vector<double>> quantized;    // [position][vocab]
  std::vector<double> quantized_kv16_first;      // [vocab]: position 0, f16 KV cache
  std::set<std::string> types;                   // the file's ggml tensor types
};

Oracle ReadOracle(const std::string& file) {
  const auto j = nlohmann::json::parse(testing::ReadFile(FixtureDir() + "/expected.json"));
  Oracle o;
  if (!j["files"].contains(file)) {
    ADD_FAILURE() << FixtureDir() << "/expected.json has no entry for " << file;
    return o;
  }
  const auto& f = j["files"][file];
  o.tokens = f["tokens"].get<std::vector<int32_t>>();
  o.dequantized = f["logits_dequantized"].get<std::vector<std::vector<double>>>();
  o.quantized = f["logits_quantized"].get<std::vector<std::vector<double>>>();
  if (f.contains("logits_quantized_kv16_first")) {
    o.quantized_kv16_first = f["logits_quantized_kv16_first"].get<std::vector<double>>();
  }
  for (const auto& [type, names] : f["tensor_types"].items()) o.types.insert(type);
  return o;
}

int Argmax(const std::vector<float>& v) {
  return int(std::max_element(v.begin(), v.end()) - v.begin());
}
int Argmax(const std::vector<double>& v) {
  return int(std::max_element(v.begin(), v.end()) - v.begin());
}

class MoeGgufFixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string Path() const { return FixtureDir() + "/" + GetParam(); }
};

TEST(MoeGgufFixtureFiles, AllPresent) {
  for (const std::string& file : MoeGgufFiles()) {
    EXPECT_TRUE(std::filesystem::exists(FixtureDir() + "/" + file))
        << FixtureDir() << "/" << file
        << " is missing: /usr/bin/python3 scripts/make_moe_gguf_fixtures.py "
           "(tests/golden/arch/README.md)";
  }
}

// Every position by decode (one row each: most experts idle) and the whole
// sequence in one prefill step (several rows per expert), in both weight
// formats, on the CPU executor and the reference backend.
TEST_P(MoeGgufFixtureTest, MatchesLlamaCppOnTheDequantizedFile) {
  ASSERT_TRUE(std::filesystem::exists(Path())) << Path();
  const Oracle o = ReadOracle(GetParam());
  ASSERT_FALSE(o.tokens.empty());
  ASSERT_EQ(o.dequantized.size(), o.tokens.size());
  ASSERT_EQ(o.quantized.size(), o.tokens.size());
  struct Run {
    const char* format;
    const char* device;
    double tol;
  };
  for (const Run& run : {Run{"native", "cpu", 5e-3}, Run{"native", "cpu-ref", 5e-3},
                         Run{"f32", "cpu", 1e-4}, Run{"f32", "cpu-ref", 1e-4}}) {
    const std::string what = GetParam() + " " + run.format + " on " + run.device;
    testing::FixtureLogits got;
    ASSERT_NO_FATAL_FAILURE(testing::ExpectDecodeAndPrefillMatch(
        Path(), run.format, run.device, o.tokens, o.dequantized, run.tol, what, &got));
    double worst_quantized = 0, llama_own = 0;
    int same_argmax = 0;
    for (size_t p = 0; p < got.decode.size(); ++p) {
      const std::vector<float>& logits = got.decode[p];
      const double eq = testing::RelativeError(logits, o.quantized[p]);
      std::vector<float> deq(o.dequantized[p].begin(), o.dequantized[p].end());
      const double own = testing::RelativeError(deq, o.quantized[p]);
      worst_quantized = std::max(worst_quantized, eq);
      llama_own = std::max(llama_own, own);
      // As far from llama.cpp's quantized run as its own dequantized run is.
      EXPECT_LT(eq, own + run.tol) << what << ", position " << p;
      EXPECT_EQ(Argmax(logits), Argmax(o.dequantized[p])) << what << ", position " << p;
      same_argmax += Argmax(logits) == Argmax(o.quantized[p]);
    }
    std::printf(
        "%-24s %-6s %-7s vs llama.cpp dequantized %.1e (bound %.0e); quantized %.1e "
        "(llama.cpp's own %.1e), argmax %d of %zu\n",
        GetParam().c_str(), run.format, run.device, got.worst, run.tol, worst_quantized, llama_own,
        same_argmax, got.decode.size());
  }
}

// With 8-bit activations (--device=cpu-q8: q4_k, q5_k and q6_k products on
// activations rounded per block of 256, as llama.cpp's CPU products do with
// q8_K; q8_0 and q4_0 per block of 32 with d kept as f16, as it does with
// q8_0; in integers where the CPU has the kernels, else on x'):
//   - position 0 (where attention returns the one V row) equals llama.cpp
//     on the file with the f16 KV cache our native segments have
//     (logits_quantized_kv16_first) to f32 rounding, for the files whose
//     block tensors are all of those formats (qwen3moe: K formats; mixtral:
//     K formats and q8_0): the same numbers, not just near;
//   - every position stays as near llama.cpp's quantized run (f32 KV cache)
//     as its own dequantized run is, with its argmax at 15 of 16 or more.
//     They do not land on it: the two KV precisions alone move llama.cpp's
//     own logits 1-5e-2, since a tiny change of x flips 8-bit roundings.
TEST_P(MoeGgufFixtureTest, Q8ActivationsApproachLlamaCppsQuantizedRun) {
  ASSERT_TRUE(std::filesystem::exists(Path())) << Path();
  const Oracle o = ReadOracle(GetParam());
  ASSERT_FALSE(o.tokens.empty());
  testing::FixtureLogits q8, f32;
  ASSERT_NO_FATAL_FAILURE(testing::ExpectDecodeAndPrefillMatch(
      Path(), "native", "cpu-q8", o.tokens, o.quantized, 0.1, GetParam() + " q8", &q8));
  ASSERT_NO_FATAL_FAILURE(testing::ExpectDecodeAndPrefillMatch(
      Path(), "native", "cpu", o.tokens, o.quantized, 0.1, GetParam() + " f32", &f32));
  double llama_own = 0;
  int same_argmax = 0;
  for (size_t p = 0; p < q8.decode.size(); ++p) {
    std::vector<float> deq(o.dequantized[p].begin(), o.dequantized[p].end());
    llama_own = std::max(llama_own, testing::RelativeError(deq, o.quantized[p]));
    same_argmax += Argmax(q8.decode[p]) == Argmax(o.quantized[p]);
  }
  EXPECT_LT(q8.worst, llama_own + 5e-3) << GetParam();
  ASSERT_EQ(o.quantized_kv16_first.size(), q8.decode[0].size())
      << "expected.json lacks logits_quantized_kv16_first: scripts/make_moe_gguf_fixtures.py";
  const double first = testing::RelativeError(q8.decode[0], o.quantized_kv16_first);
  const bool q8_formats_only =
      std::all_of(o.types.begin(), o.types.end(), [](const std::string& t) {
        return t == "F32" || t == "Q4_K" || t == "Q5_K" || t == "Q6_K" || t == "Q8_0" ||
               t == "Q4_0";
      });
  if (q8_formats_only) {
    EXPECT_LT(first, 1e-5) << GetParam() << ": position 0 vs llama.cpp, f16 KV";
  }
  std::printf("%-24s position 0 vs llama.cpp with an f16 KV cache: %.1e%s\n", GetParam().c_str(),
              first, q8_formats_only ? "" : " (mxfp4 tensors: llama.cpp's 8-bit, our f32)");
  EXPECT_GE(same_argmax, int(q8.decode.size()) - 1) << GetParam();
  std::printf(
      "%-24s vs llama.cpp quantized: q8 activations %.1e, f32 %.1e (llama.cpp's "
      "dequantized run %.1e), q8 argmax %d of %zu\n",
      GetParam().c_str(), q8.worst, f32.worst, llama_own, same_argmax, q8.decode.size());
}

// Native segments keep every expert as the file has it (so that the native
// runs above compute on the blocks): each sparse layer's exp_gate / exp_up /
// exp_down in the ggml type llama-quantize gave its ffn_*_exps tensor (a
// layer's Q8_0 becomes int8 with group 32, the same values with the scales
// moved out of the blocks), [expert_ffn, hidden] / [hidden, expert_ffn].
TEST_P(MoeGgufFixtureTest, NativeSegmentKeepsTheExpertBlockTypes) {
  ASSERT_TRUE(std::filesystem::exists(Path())) << Path();
  const auto j = nlohmann::json::parse(testing::ReadFile(FixtureDir() + "/expected.json"));
  ASSERT_TRUE(j["files"].contains(GetParam()));
  std::map<std::string, std::string> type_of;  // GGUF tensor name -> ggml type
  for (const auto& [type, names] : j["files"][GetParam()]["tensor_types"].items()) {
    for (const auto& n : names) type_of[n.get<std::string>()] = type;
  }
  LayoutOptions layout;
  layout.weight_format = "native";
  layout.kv_gib = 0.001;
  auto img = OwnedImage::Build(Path(), layout, 2);
  ASSERT_TRUE(img.ok()) << img.status();
  const SegmentHeader& h = *(*img)->image().header;
  const ModelConfig& c = h.model;
  ASSERT_GT(c.n_experts, 0);
  const char* gguf_names[kExpertTensors] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
  int checked = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const ExpertTable& x = h.layers[l].experts;
    ASSERT_EQ(x.n_experts, uint32_t(c.n_experts)) << "layer " << l;
    for (int t = 0; t < kExpertTensors; ++t) {
      const std::string gguf_name = "blk." + std::to_string(l) + "." + gguf_names[t] + ".weight";
      ASSERT_TRUE(type_of.count(gguf_name)) << gguf_name;
      std::string want = type_of[gguf_name];
      for (char& ch : want) ch = char(std::tolower(static_cast<unsigned char>(ch)));
      const TensorEntry* e = x.Find(kExpertTensorNames[t]);
      ASSERT_NE(e, nullptr) << gguf_name;
      const std::string got(DTypeName(e->Type()));
      if (want == "q8_0") {
        EXPECT_TRUE((got == "int8" && e->group == 32) || got == "q8_0") << gguf_name << ": " << got;
      } else {
        EXPECT_EQ(got, want) << gguf_name;
      }
      const bool down = t == 2;
      EXPECT_EQ(e->rows, down ? c.hidden : c.expert_ffn) << gguf_name;
      EXPECT_EQ(e->cols, down ? c.expert_ffn : c.hidden) << gguf_name;
      ++checked;
    }
  }
  EXPECT_EQ(checked, c.n_layers * kExpertTensors);
}

// Through the pager (two slots, no resident layer: each layer's quantized
// expert blocks are copied into a slot) the logits equal the resident
// provider's bit for bit.
TEST_P(MoeGgufFixtureTest, PagedEqualsResident) {
  ASSERT_TRUE(std::filesystem::exists(Path())) << Path();
  const Oracle o = ReadOracle(GetParam());
  ASSERT_FALSE(o.tokens.empty());
  testing::ExpectPagedEqualsResident(Path(), "native", o.tokens, /*build_threads=*/2);
}

INSTANTIATE_TEST_SUITE_P(Files, MoeGgufFixtureTest, ::testing::ValuesIn(MoeGgufFiles()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param.substr(0, info.param.find('.'));
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace paged
