// GGUF files as ModelSources: crafted tiny models (llama, qwen2, tied, Q8_0,
// llama3 rope scaling, and what each wrong file reports), then the real
// stories260K model.
#include "store/gguf_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <numbers>
#include <string>

#include "store/model_source.h"
#include "tests/unit/gguf_builder.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using ::paged::testing::GgufBuilder;
using ::testing::HasSubstr;
using ::testing::Not;

struct Tiny {
  std::string arch = "llama";
  uint32_t hidden = 32, heads = 4, kv_heads = 2, ffn = 64, layers = 2, vocab = 8;
  bool output = true;  // output.weight present (else tied embeddings)
  bool bias = false;   // q/k/v biases
};

// A complete, valid tiny model: head_dim 8, every tensor F32 holding
// 0.001 * index + (a per-tensor start) so data pointers can be checked.
GgufBuilder TinyModel(const Tiny& t = {}) {
  GgufBuilder b;
  const std::string a = t.arch + ".";
  const uint64_t head_dim = t.hidden / t.heads, q = t.heads * head_dim, kv = t.kv_heads * head_dim;
  b.String("general.architecture", t.arch).String("general.name", "tiny");
  b.U32(a + "context_length", 128).U32(a + "embedding_length", t.hidden);
  b.U32(a + "block_count", t.layers).U32(a + "feed_forward_length", t.ffn);
  b.U32(a + "attention.head_count", t.heads).U32(a + "attention.head_count_kv", t.kv_heads);
  b.F32(a + "attention.layer_norm_rms_epsilon", 1e-6f).F32(a + "rope.freq_base", 500000.f);
  b.U32(a + "rope.dimension_count", head_dim);
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int32_t> types = {2, 3, 3};
  while (tokens.size() < t.vocab) {
    tokens.push_back("\xE2\x96\x81t" + std::to_string(tokens.size()));  // "▁tN"
    scores.push_back(-static_cast<float>(tokens.size()));
    types.push_back(1);
  }
  b.String("tokenizer.ggml.model", "llama").StringArray("tokenizer.ggml.tokens", tokens);
  b.F32Array("tokenizer.ggml.scores", scores).I32Array("tokenizer.ggml.token_type", types);
  b.U32("tokenizer.ggml.bos_token_id", 1).U32("tokenizer.ggml.eos_token_id", 2);
  b.U32("tokenizer.ggml.unknown_token_id", 0);

  b.F32Tensor("token_embd.weight", {t.hidden, t.vocab}, 1.f);
  b.F32Tensor("output_norm.weight", {t.hidden}, 2.f);
  if (t.output) b.F32Tensor("output.weight", {t.hidden, t.vocab}, 3.f);
  for (uint32_t l = 0; l < t.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const float s = 10.f * (l + 1);
    b.F32Tensor(p + "attn_norm.weight", {t.hidden}, s);
    b.F32Tensor(p + "attn_q.weight", {t.hidden, q}, s + 1);
    b.F32Tensor(p + "attn_k.weight", {t.hidden, kv}, s + 2);
    b.F32Tensor(p + "attn_v.weight", {t.hidden, kv}, s + 3);
    b.F32Tensor(p + "attn_output.weight", {q, t.hidden}, s + 4);
    if (t.bias) {
      b.F32Tensor(p + "attn_q.bias", {q}, s + 5);
      b.F32Tensor(p + "attn_k.bias", {kv}, s + 6);
      b.F32Tensor(p + "attn_v.bias", {kv}, s + 7);
    }
    b.F32Tensor(p + "ffn_norm.weight", {t.hidden}, s + 8);
    b.F32Tensor(p + "ffn_gate.weight", {t.hidden, t.ffn}, s + 9);
    b.F32Tensor(p + "ffn_up.weight", {t.hidden, t.ffn}, s + 9.5f);
    b.F32Tensor(p + "ffn_down.weight", {t.ffn, t.hidden}, s + 9.75f);
  }
  return b;
}

class GgufModelTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::unique_ptr<ModelSource>> Open(const GgufBuilder& b) {
    path_ = dir_.File("model.gguf");
    testing::WriteFile(path_, b.Build());
    return OpenGgufModel(path_);
  }
  // Opens, expects failure, returns the message (which must name the file).
  std::string Error(const GgufBuilder& b) {
    absl::StatusOr<std::unique_ptr<ModelSource>> src = Open(b);
    EXPECT_FALSE(src.ok()) << "opened unexpectedly";
    if (src.ok()) return "";
    const std::string msg(src.status().message());
    EXPECT_THAT(msg, HasSubstr(path_));
    return msg;
  }
  float FirstF32(const SourceTensor* t) {
    float v;
    std::memcpy(&v, t->data, 4);
    return v;
  }

  testing::TempDir dir_;
  std::string path_;
};

TEST_F(GgufModelTest, LoadsTinyLlama) {
  absl::StatusOr<std::unique_ptr<ModelSource>> src = Open(TinyModel());
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelSource& s = **src;
  EXPECT_EQ(s.format, "gguf");
  EXPECT_EQ(s.path, path_);
  EXPECT_NE(s.fingerprint, 0u);
  ASSERT_EQ(s.files.size(), 1u);
  const ModelConfig& c = s.config;
  EXPECT_EQ(c.arch, Arch::kLlama);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.hidden, 32);
  EXPECT_EQ(c.ffn, 64);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab, 8);
  EXPECT_EQ(c.max_context, 128);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.f);
  EXPECT_EQ(c.rope_scaling, RopeScaling::kNone);
  EXPECT_EQ(c.tied_embeddings, 0);
  EXPECT_EQ(c.qkv_bias, 0);
  EXPECT_EQ(c.bos_id, 1);
  ASSERT_EQ(c.n_eos, 1);
  EXPECT_EQ(c.eos_ids[0], 2);

  EXPECT_EQ(s.tensors.size(), 3u + 2 * 9);
  const SourceTensor* emb = s.Find("tok_embd");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->rows, 8);
  EXPECT_EQ(emb->cols, 32);
  EXPECT_EQ(emb->bytes, 8u * 32 * 4);
  EXPECT_EQ(FirstF32(emb), 1.f);
  const SourceTensor* wo = s.Find("wo", 1);
  ASSERT_NE(wo, nullptr);
  EXPECT_EQ(FirstF32(wo), 24.f);
  const SourceTensor* down = s.Find("w_down", 0);
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->rows, 32);
  EXPECT_EQ(down->cols, 64);
  EXPECT_EQ(FirstF32(down), 19.75f);
  const SourceTensor* norm = s.Find("attn_norm", 0);
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->rows, 1);
  EXPECT_EQ(norm->cols, 32);

  // llama GGUFs rotate adjacent pairs: q and k rows need the permutation.
  EXPECT_EQ(s.Find("wq", 0)->rope_permute_head_dim, 8);
  EXPECT_EQ(s.Find("wk", 1)->rope_permute_head_dim, 8);
  EXPECT_EQ(s.Find("wv", 0)->rope_permute_head_dim, 0);
  EXPECT_EQ(s.Find("wo", 0)->rope_permute_head_dim, 0);

  ASSERT_EQ(s.vocab.size(), 8u);
  EXPECT_EQ(s.vocab.pieces[3], "\xE2\x96\x81t3");
  EXPECT_EQ(s.vocab.scores[3], -4.f);
  EXPECT_EQ(s.vocab.types[0], Vocab::kUnknown);
  EXPECT_EQ(s.vocab.types[1], Vocab::kControl);
  EXPECT_EQ(s.vocab.bos_id, 1);
  EXPECT_EQ(s.vocab.eos_id, 2);
  EXPECT_EQ(s.vocab.unk_id, 0);
}

TEST_F(GgufModelTest, MistralUsesTheLlamaLayout) {
  absl::StatusOr<std::unique_ptr<ModelSource>> src = Open(TinyModel({.arch = "mistral"}));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->config.arch, Arch::kMistral);
  EXPECT_EQ((*src)->Find("wq", 0)->rope_permute_head_dim, 8);
}

TEST_F(GgufModelTest, Qwen2WithBiases) {
  GgufBuilder b = TinyModel({.arch = "qwen2", .bias = true});
  // A BPE vocabulary: not read, but bos/eos still reach the config.
  b.String("tokenizer.ggml.model", "gpt2").U32("tokenizer.ggml.eos_token_id", 7);
  b.Erase("tokenizer.ggml.bos_token_id").Erase("tokenizer.ggml.scores");
  absl::StatusOr<std::unique_ptr<ModelSource>> src = Open(b);
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelSource& s = **src;
  EXPECT_EQ(s.config.arch, Arch::kQwen2);
  EXPECT_EQ(s.config.qkv_bias, 1);
  const SourceTensor* bk = s.Find("bk", 1);
  ASSERT_NE(bk, nullptr);
  EXPECT_EQ(bk->rows, 1);
  EXPECT_EQ(bk->cols, 16);
  EXPECT_EQ(FirstF32(bk), 26.f);
  // qwen2 GGUFs already use the halves RoPE convention.
  EXPECT_EQ(s.Find("wq", 0)->rope_permute_head_dim, 0);
  EXPECT_EQ(s.Find("wk", 0)->rope_permute_head_dim, 0);
  EXPECT_EQ(s.Find("bq", 0)->rope_permute_head_dim, 0);
  EXPECT_EQ(s.vocab.size(), 0u);
  EXPECT_EQ(s.config.bos_id, -1);
  ASSERT_EQ(s.config.n_eos, 1);
  EXPECT_EQ(s.config.eos_ids[0], 7);
}

TEST_F(GgufModelTest, Qwen2WithoutBiasesIsMissingTensors) {
  EXPECT_THAT(Error(TinyModel({.arch = "qwen2"})), HasSubstr("missing tensor layer 0 bq"));
}

TEST_F(GgufModelTest, LlamaWithBiasesHasUnexpectedTensors) {
  EXPECT_THAT(Error(TinyModel({.bias = true})), HasSubstr("unexpected tensor layer 0 bk"));
}

TEST_F(GgufModelTest, NoOutputMeansTiedEmbeddings) {
  absl::StatusOr<std::unique_ptr<ModelSource>> src = Open(TinyModel({.output = false}));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->config.tied_embeddings, 1);
  EXPECT_EQ((*src)->Find("output"), nullptr);
}

TEST_F(GgufModelTest, AcceptsQ8_0) {
  GgufBuilder b = TinyModel();
  std::string blocks;
  for (int i = 0; i < 32; ++i) {  // 32 rows of one block: f16 scale 1.0, q = row
    blocks += GgufBuilder::Le<uint16_t>(0x3C00);
    blocks += std::string(32, static_cast<char>(i));
  }
  b.EraseTensor("blk.0.attn_q.weight").Tensor("blk.0.attn_q.weight", {32, 32}, 8, blocks);
  absl::StatusOr<std::unique_ptr<ModelSource>> src = Open(b);
  ASSERT_TRUE(src.ok()) << src.status();
  const SourceTensor* wq = (*src)->Find("wq", 0);
  EXPECT_EQ(wq->type, SourceType::kQ8_0);
  EXPECT_EQ(wq->rows, 32);
  EXPECT_EQ(wq->cols, 32);
  EXPECT_EQ(wq->bytes, 32u * 34);
  EXPECT_EQ(wq->data[34 * 5 + 2], 5);
  EXPECT_EQ(wq->rope_permute_head_dim, 8);
}

TEST_F(GgufModelTest, AcceptsBlockFormatsTensorByTensor) {
  GgufBuilder b = TinyModel();  // rows of 32 values: one block of the 32-value formats
  b.EraseTensor("blk.1.ffn_up.weight")
      .Tensor("blk.1.ffn_up.weight", {32, 64}, GgufBuilder::kTypeQ4_0, std::string(64 * 18, '\0'));
  b.EraseTensor("blk.0.ffn_up.weight")
      .Tensor("blk.0.ffn_up.weight", {32, 64}, 39 /* MXFP4 */, std::string(64 * 17, '\0'));
  absl::StatusOr<std::unique_ptr<ModelSource>> src = Open(b);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->Find("w_up", 1)->type, SourceType::kQ4_0);
  EXPECT_EQ((*src)->Find("w_up", 0)->type, SourceType::kMXFP4);
  EXPECT_EQ((*src)->Find("w_up", 0)->bytes, 64u * 17);
  EXPECT_EQ((*src)->Find("w_gate", 0)->type, SourceType::kF32);
}

TEST_F(GgufModelTest, RejectsUnsupportedTensorType) {
  GgufBuilder b = TinyModel();
  b.EraseTensor("blk.1.ffn_up.weight")
      .Tensor("blk.1.ffn_up.weight", {32, 64}, 9 /* Q8_1 */, std::string(64 * 36, '\0'));
  const std::string msg = Error(b);
  EXPECT_THAT(msg, HasSubstr("tensor 'blk.1.ffn_up.weight' has unsupported tensor type Q8_1 "
                             "(supported: F32, F16, BF16, Q8_0, Q4_0"));
  EXPECT_THAT(msg, Not(HasSubstr("\n")));
}

TEST_F(GgufModelTest, BadBlockTensorsAreOneLineErrors) {
  // Rows that are not whole blocks: a K format needs 256 values a row.
  GgufBuilder b = TinyModel();
  b.EraseTensor("blk.0.attn_q.weight")
      .Tensor("blk.0.attn_q.weight", {32, 32}, 12 /* Q4_K */, std::string(144 * 4, '\0'));
  EXPECT_THAT(Error(b), HasSubstr("tensor 'blk.0.attn_q.weight' is Q4_K with row length 32, not a "
                                  "multiple of its block size 256"));
  // An unknown type id.
  b = TinyModel();
  b.EraseTensor("blk.0.attn_k.weight")
      .Tensor("blk.0.attn_k.weight", {32, 16}, 77, std::string(32 * 16 * 4, '\0'));
  EXPECT_THAT(Error(b), HasSubstr("tensor 'blk.0.attn_k.weight' has unknown ggml type 77"));
  // A K-quant tensor whose blocks end early (the last tensor of the file).
  b = TinyModel();
  b.Tensor("blk.9.ffn_up.weight", {256, 4}, 14 /* Q6_K */, std::string(210 * 3, '\0'));
  const std::string msg = Error(b);
  EXPECT_THAT(msg, HasSubstr("tensor 'blk.9.ffn_up.weight' data (840 bytes"));
  EXPECT_THAT(msg, HasSubstr("runs past the end of the file"));
  EXPECT_THAT(msg, Not(HasSubstr("\n")));
}

TEST_F(GgufModelTest, RejectsMissingMetadata) {
  GgufBuilder b = TinyModel();
  b.Erase("llama.block_count");
  EXPECT_THAT(Error(b), HasSubstr("metadata key 'llama.block_count' is missing"));
  b = TinyModel();
  b.Erase("general.architecture");
  EXPECT_THAT(Error(b), HasSubstr("metadata key 'general.architecture' is missing"));
  b = TinyModel();
  b.Erase("llama.attention.layer_norm_rms_epsilon");
  EXPECT_THAT(Error(b), HasSubstr("'llama.attention.layer_norm_rms_epsilon' is missing"));
  b = TinyModel();
  b.String("llama.embedding_length", "32");
  EXPECT_THAT(Error(b), HasSubstr("'llama.embedding_length' is STRING, expected an integer"));
}

TEST_F(GgufModelTest, DefaultsOptionalMetadata) {
  GgufBuilder b = TinyModel();
  b.Erase("llama.attention.head_count_kv").Erase("llama.rope.freq_base");
  b.Erase("llama.rope.dimension_count").Erase("tokenizer.ggml.bos_token_id");
  // Without GQA, k and v have as many heads as q.
  b.EraseTensor("blk.0.attn_k.weight").F32Tensor("blk.0.attn_k.weight", {32, 32});
  b.EraseTensor("blk.0.attn_v.weight").F32Tensor("blk.0.attn_v.weight", {32, 32});
  b.EraseTensor("blk.1.attn_k.weight").F32Tensor("blk.1.attn_k.weight", {32, 32});
  b.EraseTensor("blk.1.attn_v.weight").F32Tensor("blk.1.attn_v.weight", {32, 32});
  absl::StatusOr<std::unique_ptr<ModelSource>> src = Open(b);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->config.n_kv_heads, 4);
  EXPECT_FLOAT_EQ((*src)->config.rope_theta, 10000.f);
  EXPECT_EQ((*src)->config.bos_id, 1);  // llama.cpp's SentencePiece default
}

TEST_F(GgufModelTest, RejectsMissingTensor) {
  GgufBuilder b = TinyModel();
  b.EraseTensor("blk.1.ffn_up.weight");
  EXPECT_THAT(Error(b), HasSubstr("missing tensor layer 1 w_up"));
  b = TinyModel();
  b.EraseTensor("token_embd.weight");
  EXPECT_THAT(Error(b), HasSubstr("missing tensor tok_embd"));
}

TEST_F(GgufModelTest, RejectsShapeMismatch) {
  GgufBuilder b = TinyModel();
  b.EraseTensor("blk.0.ffn_gate.weight").F32Tensor("blk.0.ffn_gate.weight", {32, 48});
  EXPECT_THAT(Error(b), HasSubstr("tensor layer 0 w_gate has shape [48, 32] but the config "
                                  "implies [64, 32]"));
  b = TinyModel();
  b.U32("llama.feed_forward_length", 65);
  EXPECT_THAT(Error(b), HasSubstr("has shape [64, 32] but the config implies [65, 32]"));
  b = TinyModel();
  b.EraseTensor("output_norm.weight").F32Tensor("output_norm.weight", {32, 1, 2});
  EXPECT_THAT(Error(b), HasSubstr("'output_norm.weight' has 3 dimensions"));
}

TEST_F(GgufModelTest, RejectsUnsupportedArchitecture) {
  GgufBuilder b = TinyModel();
  b.String("general.architecture", "gptneox");
  EXPECT_THAT(Error(b), HasSubstr("unsupported architecture 'gptneox'"));
}

TEST_F(GgufModelTest, RejectsUnknownTensorsAndBadRopeDims) {
  GgufBuilder b = TinyModel();
  b.F32Tensor("blk.0.attn_rot_embd", {4});
  EXPECT_THAT(Error(b), HasSubstr("unknown tensor 'blk.0.attn_rot_embd'"));
  b = TinyModel();
  b.F32Tensor("blk.9.attn_norm.weight", {32});
  EXPECT_THAT(Error(b), HasSubstr("unexpected tensor layer 9 attn_norm"));
  b = TinyModel();
  b.U32("llama.rope.dimension_count", 4);
  EXPECT_THAT(Error(b), HasSubstr("rope.dimension_count 4 differs from head_dim 8"));
  b = TinyModel();
  b.String("llama.rope.scaling.type", "ntk").F32("llama.rope.scaling.factor", 4.f);
  EXPECT_THAT(Error(b), HasSubstr("unsupported llama.rope.scaling.type 'ntk' (supported: none, "
                                  "linear, yarn, longrope)"));
}

// Linear and yarn scaling as llama.cpp reads them (the yarn attention factor
// is the one llama.cpp derives from the factor).
TEST_F(GgufModelTest, LinearAndYarnRopeScaling) {
  GgufBuilder b = TinyModel();
  b.String("llama.rope.scaling.type", "linear").F32("llama.rope.scaling.factor", 4.f);
  auto src = Open(b);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->config.rope_scaling, RopeScaling::kLinear);
  EXPECT_EQ((*src)->config.rope_factor, 4.f);
  b = TinyModel();
  b.String("llama.rope.scaling.type", "yarn").F32("llama.rope.scaling.factor", 4.f);
  b.U32("llama.rope.scaling.original_context_length", 32);
  src = Open(b);
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig& c = (*src)->config;
  EXPECT_EQ(c.rope_scaling, RopeScaling::kYarn);
  EXPECT_EQ(c.rope_original_max_pos, 32);
  EXPECT_FLOAT_EQ(c.rope_attn_factor, 0.1f * std::log(4.f) + 1.f);
  EXPECT_EQ(c.rope_beta_fast, 32.f);
}

TEST_F(GgufModelTest, RejectsInconsistentTokenizer) {
  GgufBuilder b = TinyModel();
  b.U32("llama.vocab_size", 9);
  EXPECT_THAT(Error(b),
              HasSubstr("tokenizer.ggml.tokens has 8 entries but the vocabulary size is 9"));
  b = TinyModel();
  b.F32Array("tokenizer.ggml.scores", {1.f});
  EXPECT_THAT(Error(b), HasSubstr("tokenizer.ggml.scores has 1 entries for 8 tokens"));
  b = TinyModel();
  b.U32("tokenizer.ggml.eos_token_id", 8);
  EXPECT_THAT(Error(b), HasSubstr("eos id 8 outside the vocabulary"));
}

// The divisors convert_hf_to_gguf.py writes as rope_freqs.weight for llama3.
std::vector<float> Llama3Divisors(int head_dim, double theta, double factor, double orig) {
  std::vector<float> out;
  for (int i = 0; i < head_dim / 2; ++i) {
    const double wavelen = 2 * std::numbers::pi / std::pow(theta, -2.0 * i / head_dim);
    if (wavelen < orig / 4) {
      out.push_back(1.f);
    } else if (wavelen > orig) {
      out.push_back(static_cast<float>(factor));
    } else {
      const double smooth = (orig / wavelen - 1) / (4 - 1);
      out.push_back(static_cast<float>(1 / ((1 - smooth) / factor + smooth)));
    }
  }
  return out;
}

TEST_F(GgufModelTest, Llama3RopeFreqsBecomeRopeScaling) {
  // theta 500000, head_dim 8: wavelengths 6, 167, 4450, 118000 hit every branch.
  const std::vector<float> div = Llama3Divisors(8, 500000, 8, 8192);
  ASSERT_EQ(div[0], 1.f);
  ASSERT_GT(div[2], 1.f);
  ASSERT_LT(div[2], 8.f);
  ASSERT_EQ(div[3], 8.f);
  GgufBuilder b = TinyModel();
  b.Tensor("rope_freqs.weight", {4}, GgufBuilder::kTypeF32, GgufBuilder::F32Bytes(div));
  absl::StatusOr<std::unique_ptr<ModelSource>> src = Open(b);
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig& c = (*src)->config;
  EXPECT_EQ(c.rope_scaling, RopeScaling::kLlama3);
  EXPECT_FLOAT_EQ(c.rope_factor, 8.f);
  EXPECT_FLOAT_EQ(c.rope_low_freq_factor, 1.f);
  EXPECT_FLOAT_EQ(c.rope_high_freq_factor, 4.f);
  EXPECT_EQ(c.rope_original_max_pos, 8192);
  EXPECT_EQ((*src)->Find("rope_freqs"), nullptr);

  // Other parameters from metadata.
  b.EraseTensor("rope_freqs.weight")
      .Tensor("rope_freqs.weight", {4}, GgufBuilder::kTypeF32,
              GgufBuilder::F32Bytes(Llama3Divisors(8, 500000, 32, 4096)));
  b.U32("llama.rope.scaling.original_context_length", 4096);
  src = Open(b);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_FLOAT_EQ((*src)->config.rope_factor, 32.f);
  EXPECT_EQ((*src)->config.rope_original_max_pos, 4096);

  // Frequencies llama3 scaling cannot produce.
  b.EraseTensor("rope_freqs.weight")
      .Tensor("rope_freqs.weight", {4}, GgufBuilder::kTypeF32,
              GgufBuilder::F32Bytes({1.f, 2.f, 3.f, 4.f}));
  EXPECT_THAT(Error(b), HasSubstr("does not match llama3 rope scaling"));
}

TEST_F(GgufModelTest, RejectsMalformedFilesWithTheParserMessage) {
  const std::string full = TinyModel().Build();
  path_ = dir_.File("short.gguf");
  testing::WriteFile(path_, full.substr(0, full.size() - 100));
  absl::StatusOr<std::unique_ptr<ModelSource>> src = OpenGgufModel(path_);
  ASSERT_FALSE(src.ok());
  EXPECT_THAT(src.status().message(), HasSubstr(path_ + ": tensor 'blk.1.ffn_down.weight' data"));
  EXPECT_FALSE(OpenGgufModel(dir_.File("absent.gguf")).ok());
  testing::WriteFile(dir_.File("empty.gguf"), "");
  EXPECT_THAT(OpenGgufModel(dir_.File("empty.gguf")).status().message(), HasSubstr("truncated"));
}

// ---- the real model ----------------------------------------------------------

TEST(GgufStories260KTest, LoadsTheRealModel) {
  const std::string path = testing::Stories260KPath();
  PAGED_REQUIRE_FIXTURE(path, "../shared/models/stories260K.gguf");
  absl::StatusOr<std::unique_ptr<ModelSource>> src = OpenGgufModel(path);
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelSource& s = **src;
  const ModelConfig& c = s.config;
  EXPECT_EQ(c.arch, Arch::kLlama);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(c.ffn, 172);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab, 512);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.f);
  EXPECT_EQ(c.rope_scaling, RopeScaling::kNone);
  EXPECT_EQ(c.bos_id, 1);
  ASSERT_EQ(c.n_eos, 1);
  EXPECT_EQ(c.eos_ids[0], 2);
  EXPECT_EQ(c.tied_embeddings, 0);
  EXPECT_EQ(c.qkv_bias, 0);
  EXPECT_NE(s.Find("output"), nullptr);
  EXPECT_EQ(s.tensors.size(), 3u + 5 * 9);
  for (const SourceTensor& t : s.tensors) {
    EXPECT_EQ(t.type, SourceType::kF32) << t.name;
    EXPECT_EQ(t.bytes, static_cast<uint64_t>(t.rows * t.cols * 4)) << t.name;
  }
  EXPECT_EQ(s.Find("wq", 0)->rope_permute_head_dim, 8);
  EXPECT_EQ(s.Find("wk", 4)->rope_permute_head_dim, 8);
  EXPECT_EQ(s.Find("wv", 0)->rope_permute_head_dim, 0);

  const Vocab& v = s.vocab;
  ASSERT_EQ(v.size(), 512u);
  ASSERT_EQ(v.scores.size(), 512u);
  ASSERT_EQ(v.types.size(), 512u);
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.pieces[1], "<s>");
  EXPECT_EQ(v.pieces[2], "</s>");
  EXPECT_EQ(v.types[1], Vocab::kControl);
  // The README's greedy transcript starts with ids 403 407 261 378 432:
  // "Once upon a time,".
  const int first[] = {403, 407, 261, 378, 432};
  std::string text;
  for (int id : first) {
    std::cout << "piece " << id << " = '" << v.pieces[id] << "' score " << v.scores[id] << "\n";
    text += v.pieces[id];
  }
  EXPECT_EQ(v.pieces[403], "\xE2\x96\x81Once");
  EXPECT_EQ(v.pieces[407], "\xE2\x96\x81upon");
  EXPECT_EQ(v.pieces[261],
            "\xE2\x96\x81"
            "a");
  EXPECT_EQ(v.pieces[378], "\xE2\x96\x81time");
  EXPECT_EQ(text,
            "\xE2\x96\x81Once\xE2\x96\x81upon\xE2\x96\x81"
            "a\xE2\x96\x81time,");
}

}  // namespace
}  // namespace paged
