// pagectl make-model: the checkpoints it writes load with the HF reader, have
// the preset's config and shapes, and hold deterministic, random, finite values.
#include "client/pagectl/make_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "client/pagectl/presets.h"
#include "common/dtype.h"
#include "nlohmann/json.hpp"
#include "store/hf_checkpoint.h"
#include "store/model_source.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

namespace fs = std::filesystem;
using ::paged::testing::ReadFile;
using ::paged::testing::TempDir;
using ::testing::HasSubstr;

MakeModelOptions Options(const std::string& preset, const std::string& out, uint64_t seed = 1) {
  MakeModelOptions o;
  o.preset = preset;
  o.out_dir = out;
  o.seed = seed;
  return o;
}

std::vector<float> Values(const SourceTensor& t) {
  std::vector<float> v(t.bytes / 2);
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, t.data + 2 * i, 2);
    v[i] = t.type == SourceType::kBF16 ? Bf16ToFloat(h) : HalfToFloat(h);
  }
  return v;
}

void ExpectConfigEq(const ModelConfig& got, const ModelConfig& want) {
  EXPECT_EQ(got.arch, want.arch);
  EXPECT_EQ(got.n_layers, want.n_layers);
  EXPECT_EQ(got.hidden, want.hidden);
  EXPECT_EQ(got.ffn, want.ffn);
  EXPECT_EQ(got.n_heads, want.n_heads);
  EXPECT_EQ(got.n_kv_heads, want.n_kv_heads);
  EXPECT_EQ(got.head_dim, want.head_dim);
  EXPECT_EQ(got.vocab, want.vocab);
  EXPECT_EQ(got.max_context, want.max_context);
  EXPECT_FLOAT_EQ(got.norm_eps, want.norm_eps);
  EXPECT_FLOAT_EQ(got.rope_theta, want.rope_theta);
  EXPECT_EQ(got.rope_scaling, want.rope_scaling);
  if (want.rope_scaling == RopeScaling::kLlama3) {
    EXPECT_FLOAT_EQ(got.rope_factor, want.rope_factor);
    EXPECT_FLOAT_EQ(got.rope_low_freq_factor, want.rope_low_freq_factor);
    EXPECT_FLOAT_EQ(got.rope_high_freq_factor, want.rope_high_freq_factor);
    EXPECT_EQ(got.rope_original_max_pos, want.rope_original_max_pos);
  }
  EXPECT_EQ(got.tied_embeddings, want.tied_embeddings);
  EXPECT_EQ(got.qkv_bias, want.qkv_bias);
  EXPECT_EQ(got.bos_id, 1);
  ASSERT_GE(got.n_eos, 1);
  EXPECT_EQ(got.eos_ids[0], 2);
}

TEST(PresetsTest, AllPresetsAreValidAndUnique) {
  std::set<std::string> names;
  for (const Preset& p : AllPresets()) {
    EXPECT_TRUE(names.insert(p.name).second) << p.name;
    EXPECT_TRUE(ValidateConfig(PresetModelConfig(p)).ok()) << p.name;
  }
  for (const char* name : {"tiny", "tiny-qwen2", "tiny-llama3", "llama-7b", "llama-13b",
                           "llama-70b", "qwen2-7b", "mistral-7b"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
}

TEST(PresetsTest, RealShapes) {
  const Preset p7 = *FindPreset("llama-7b");
  EXPECT_EQ(p7.hidden, 4096);
  EXPECT_EQ(p7.ffn, 11008);
  EXPECT_EQ(p7.n_layers, 32);
  EXPECT_EQ(p7.head_dim(), 128);
  const Preset p70 = *FindPreset("llama-70b");
  EXPECT_EQ(p70.n_heads / p70.n_kv_heads, 8);
  const Preset q = *FindPreset("qwen2-7b");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.tied);
  EXPECT_EQ(q.vocab, 152064);
}

TEST(PresetsTest, UnknownPresetListsKnownOnes) {
  const absl::StatusOr<Preset> p = FindPreset("llama-9000b");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("llama-9000b"));
  EXPECT_THAT(p.status().message(), HasSubstr("tiny-qwen2"));
  EXPECT_THAT(p.status().message(), HasSubstr("llama-7b"));

  TempDir tmp;
  const absl::Status s = MakeModel(Options("nope", tmp.File("m")));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("mistral-7b"));
  EXPECT_FALSE(fs::exists(tmp.File("m")));  // nothing created on a bad flag
}

class TinyPresetTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyPresetTest, LoadsWithPresetConfigAndShapes) {
  TempDir tmp;
  const std::string dir = tmp.File("model");
  ASSERT_TRUE(MakeModel(Options(GetParam(), dir)).ok());
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors.index.json"));

  absl::StatusOr<std::unique_ptr<ModelSource>> src = OpenHfCheckpoint(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  const Preset preset = *FindPreset(GetParam());
  ExpectConfigEq((*src)->config, PresetModelConfig(preset));
  EXPECT_TRUE(CheckTensorSet(**src).ok()) << CheckTensorSet(**src);
  for (const SourceTensor& t : (*src)->tensors) EXPECT_EQ(t.type, SourceType::kF16) << t.name;
  const SourceTensor* embd = (*src)->Find("tok_embd");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->rows, preset.vocab);
  EXPECT_EQ(embd->cols, preset.hidden);

  const nlohmann::json config = nlohmann::json::parse(ReadFile(dir + "/config.json"));
  EXPECT_EQ(config["torch_dtype"], "float16");
  EXPECT_EQ(config["model_type"], preset.model_type);
}

// Values: finite, not zero, and in the advertised ranges.
TEST_P(TinyPresetTest, ValuesAreRandomFiniteAndScaled) {
  TempDir tmp;
  ASSERT_TRUE(MakeModel(Options(GetParam(), tmp.path())).ok());
  absl::StatusOr<std::unique_ptr<ModelSource>> src = OpenHfCheckpoint(tmp.path());
  ASSERT_TRUE(src.ok()) << src.status();
  for (const SourceTensor& t : (*src)->tensors) {
    const std::vector<float> v = Values(t);
    ASSERT_EQ(int64_t(v.size()), t.rows * t.cols) << t.name;
    double max_abs = 0, sum = 0;
    std::set<float> distinct;
    for (float x : v) {
      ASSERT_TRUE(std::isfinite(x)) << t.name;
      max_abs = std::max(max_abs, double(std::fabs(x)));
      sum += x;
      distinct.insert(x);
    }
    const double mean = sum / double(v.size());
    EXPECT_GT(distinct.size(), std::min<size_t>(v.size() / 4, 100)) << t.name;
    if (t.name == "attn_norm" || t.name == "ffn_norm" || t.name == "output_norm") {
      EXPECT_NEAR(mean, 1.0, 0.01) << t.name;
      EXPECT_LE(max_abs, 1.051) << t.name;
    } else if (t.name == "tok_embd") {
      EXPECT_GT(max_abs, 0.02) << t.name;
      EXPECT_LE(max_abs, 0.1) << t.name;
    } else if (t.rows == 1) {  // biases
      EXPECT_GT(max_abs, 0.01) << t.name;
      EXPECT_LE(max_abs, 0.021) << t.name;
    } else {  // matrices: uniform in +-sqrt(3 / cols)
      const double a = std::sqrt(3.0 / double(t.cols));
      EXPECT_GT(max_abs, 0.9 * a) << t.name;
      EXPECT_LE(max_abs, 1.001 * a) << t.name;
      EXPECT_NEAR(mean, 0.0, 0.05 * a) << t.name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tiny, TinyPresetTest,
                         ::testing::Values("tiny", "tiny-qwen2", "tiny-llama3"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

TEST(MakeModelTest, SameSeedSameBytesOtherSeedOtherBytes) {
  TempDir tmp;
  ASSERT_TRUE(MakeModel(Options("tiny", tmp.File("a"), 7)).ok());
  ASSERT_TRUE(MakeModel(Options("tiny", tmp.File("b"), 7)).ok());
  ASSERT_TRUE(MakeModel(Options("tiny", tmp.File("c"), 8)).ok());
  const std::string a = ReadFile(tmp.File("a/model.safetensors"));
  EXPECT_GT(a.size(), 500'000u);
  EXPECT_EQ(a, ReadFile(tmp.File("b/model.safetensors")));
  EXPECT_EQ(ReadFile(tmp.File("a/config.json")), ReadFile(tmp.File("b/config.json")));
  EXPECT_NE(a, ReadFile(tmp.File("c/model.safetensors")));
}

TEST(MakeModelTest, LayersAreDistinct) {
  TempDir tmp;
  ASSERT_TRUE(MakeModel(Options("tiny", tmp.path())).ok());
  absl::StatusOr<std::unique_ptr<ModelSource>> src = OpenHfCheckpoint(tmp.path());
  ASSERT_TRUE(src.ok()) << src.status();
  const SourceTensor* q0 = (*src)->Find("wq", 0);
  const SourceTensor* q1 = (*src)->Find("wq", 1);
  const SourceTensor* k0 = (*src)->Find("wk", 0);
  ASSERT_TRUE(q0 && q1 && k0);
  EXPECT_NE(std::memcmp(q0->data, q1->data, q0->bytes), 0);
  EXPECT_NE(std::memcmp(q0->data, k0->data, k0->bytes), 0);
}

TEST(MakeModelTest, BF16) {
  TempDir tmp;
  MakeModelOptions o = Options("tiny-qwen2", tmp.path());
  o.dtype = "bf16";
  ASSERT_TRUE(MakeModel(o).ok());
  absl::StatusOr<std::unique_ptr<ModelSource>> src = OpenHfCheckpoint(tmp.path());
  ASSERT_TRUE(src.ok()) << src.status();
  for (const SourceTensor& t : (*src)->tensors) {
    EXPECT_EQ(t.type, SourceType::kBF16) << t.name;
    bool nonzero = false;
    for (float x : Values(t)) {
      ASSERT_TRUE(std::isfinite(x)) << t.name;
      nonzero |= x != 0.f;
    }
    EXPECT_TRUE(nonzero) << t.name;
  }
  const nlohmann::json config = nlohmann::json::parse(ReadFile(tmp.File("config.json")));
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
}

TEST(MakeModelTest, ShardsWhenOverMaxShardBytes) {
  TempDir tmp;
  const std::string one = tmp.File("one"), sharded = tmp.File("sharded");
  ASSERT_TRUE(MakeModel(Options("tiny", one)).ok());
  MakeModelOptions o = Options("tiny", sharded);
  o.max_shard_bytes = 200'000;  // tiny is ~1 MB; its largest tensor is 128 KB
  ASSERT_TRUE(MakeModel(o).ok());

  EXPECT_FALSE(fs::exists(sharded + "/model.safetensors"));
  const nlohmann::json index =
      nlohmann::json::parse(ReadFile(sharded + "/model.safetensors.index.json"));
  std::set<std::string> files;
  for (const auto& [name, file] : index["weight_map"].items()) files.insert(file);
  ASSERT_GT(files.size(), 2u);
  const size_t n = files.size();
  char first[64], last[64];
  std::snprintf(first, sizeof first, "model-00001-of-%05zu.safetensors", n);
  std::snprintf(last, sizeof last, "model-%05zu-of-%05zu.safetensors", n, n);
  EXPECT_TRUE(files.count(first)) << first;
  EXPECT_TRUE(files.count(last)) << last;
  for (const std::string& f : files) {
    EXPECT_TRUE(fs::exists(sharded + "/" + f)) << f;
    EXPECT_LE(fs::file_size(sharded + "/" + f), 200'000u + 16'384u) << f;  // + header
  }
  EXPECT_EQ(index["weight_map"]["model.embed_tokens.weight"], first);
  EXPECT_EQ(index["weight_map"]["lm_head.weight"], last);

  absl::StatusOr<std::unique_ptr<ModelSource>> a = OpenHfCheckpoint(one);
  absl::StatusOr<std::unique_ptr<ModelSource>> b = OpenHfCheckpoint(sharded);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(CheckTensorSet(**b).ok()) << CheckTensorSet(**b);
  // Same seed: the same tensors whatever the file layout.
  uint64_t total = 0;
  ASSERT_EQ((*a)->tensors.size(), (*b)->tensors.size());
  for (const SourceTensor& t : (*a)->tensors) {
    const SourceTensor* u = (*b)->Find(t.name, t.layer);
    ASSERT_NE(u, nullptr) << t.name;
    ASSERT_EQ(t.bytes, u->bytes) << t.name;
    EXPECT_EQ(std::memcmp(t.data, u->data, t.bytes), 0) << t.name << " layer " << t.layer;
    total += t.bytes;
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);

  // Writing an unsharded model over the sharded one removes the stale shards.
  ASSERT_TRUE(MakeModel(Options("tiny", sharded)).ok());
  EXPECT_FALSE(fs::exists(sharded + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(sharded + "/" + first));
  EXPECT_TRUE(OpenHfCheckpoint(sharded).ok());
}

TEST(MakeModelTest, LayersOverride) {
  TempDir tmp;
  MakeModelOptions o = Options("tiny-llama3", tmp.path());
  o.layers = 5;
  ASSERT_TRUE(MakeModel(o).ok());
  absl::StatusOr<std::unique_ptr<ModelSource>> src = OpenHfCheckpoint(tmp.path());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->config.n_layers, 5);
  EXPECT_NE((*src)->Find("w_down", 4), nullptr);
  EXPECT_TRUE(CheckTensorSet(**src).ok()) << CheckTensorSet(**src);
}

TEST(MakeModelTest, ProgressReachesTotal) {
  TempDir tmp;
  MakeModelOptions o = Options("tiny", tmp.path());
  uint64_t last_done = 0, last_total = 0, calls = 0;
  o.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last_done);
    EXPECT_LE(done, total);
    last_done = done;
    last_total = total;
    ++calls;
  };
  ASSERT_TRUE(MakeModel(o).ok());
  EXPECT_GT(calls, 1u);
  EXPECT_EQ(last_done, last_total);
  EXPECT_LT(last_total, fs::file_size(tmp.File("model.safetensors")));
}

TEST(MakeModelTest, BadFlags) {
  TempDir tmp;
  MakeModelOptions o = Options("tiny", tmp.File("m"));
  o.dtype = "f32";
  absl::Status s = MakeModel(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'f32'"));
  EXPECT_THAT(s.message(), HasSubstr("f16 or bf16"));

  o = Options("tiny", tmp.File("m"));
  o.layers = -1;
  s = MakeModel(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--layers"));

  o.layers = 100000;  // more than any config allows
  EXPECT_EQ(MakeModel(o).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(tmp.File("m")));

  // A path below a regular file cannot be created.
  testing::WriteFile(tmp.File("file"), "x");
  s = MakeModel(Options("tiny", tmp.File("file/m")));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("cannot create output directory"));
  s = MakeModel(Options("tiny", tmp.File("file")));
  EXPECT_FALSE(s.ok());
}

}  // namespace
}  // namespace paged
