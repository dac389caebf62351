// A model checkpoint opened for loading: its config, its tensors under
// canonical names, and its tokenizer. The readers (HF safetensors, GGUF)
// produce one; the segment builder consumes it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/tokenizer_bundle.h"
#include "common/vocab.h"
#include "store/mapped_file.h"

namespace paged {

// Element types a checkpoint file may hold. The GGUF block formats (Q8_0
// and after) have the layouts of the DType of the same name
// (common/block_quant.h; StoredDType in store/convert.h maps them).
enum class SourceType : uint32_t {
  kF32,
  kF16,
  kBF16,
  kQ8_0,  // GGUF Q8_0: blocks of 32 values, each {f16 scale, int8 q[32]} (34 bytes)
  kQ4_0,
  kQ4_1,
  kQ5_0,
  kQ5_1,
  kQ2_K,
  kQ3_K,
  kQ4_K,
  kQ5_K,
  kQ6_K,
  kIQ4_NL,
  kIQ4_XS,
  kMXFP4,
};
std::string_view SourceTypeName(SourceType t);

// Canonical tensor names (shapes are [rows, cols] = [out, in]):
//   globals: "tok_embd" [vocab, hidden], "output_norm" [hidden],
//            "output" [vocab, hidden] (absent when embeddings are tied)
//   layer i: "attn_norm" [hidden], "wq" [n_heads*head_dim, hidden],
//            "wk"/"wv" [n_kv_heads*head_dim, hidden], "wo" [hidden, n_heads*head_dim],
//            "bq" [n_heads*head_dim], "bk"/"bv" [n_kv_heads*head_dim] (qkv_bias only),
//            "ffn_norm" [hidden], "w_gate"/"w_up" [ffn, hidden], "w_down" [hidden, ffn],
//            "q_norm"/"k_norm" [head_dim] (qk_norm only: qwen3, gemma3),
//            "post_attn_norm"/"post_ffn_norm" [hidden] (sandwich_norm only: gemma2/3)
//   sparse layer i (ModelConfig::IsMoeLayer): no w_gate / w_up / w_down, but
//            "router" [n_experts, hidden], and with a shared expert
//            "shexp_gate_inp" [1, hidden], "shexp_gate"/"shexp_up"
//            [shared_expert_ffn, hidden], "shexp_down" [hidden, shared_expert_ffn];
//            per expert e (SourceTensor::expert = e): "exp_gate"/"exp_up"
//            [expert_ffn, hidden], "exp_down" [hidden, expert_ffn]
//            (kExpertTensorNames)
//   gpt_oss: "bo" [hidden] (o_bias), "attn_sinks" [n_heads] (attn_sinks),
//            "router_b" [n_experts] (router_bias), "exp_gate_b"/"exp_up_b"
//            [n_experts, expert_ffn] and "exp_down_b" [n_experts, hidden]
//            (expert_bias: every expert's biases, row e expert e's)
// 1-D tensors have rows == 1. Norm weights are what the norm multiplies by:
// gemma's (1 + w) is added at load (llama.cpp's converter stores it so).
inline constexpr const char* kLayerTensorNames[] = {"attn_norm",
                                                    "wq",
                                                    "wk",
                                                    "wv",
                                                    "wo",
                                                    "bq",
                                                    "bk",
                                                    "bv",
                                                    "ffn_norm",
                                                    "w_gate",
                                                    "w_up",
                                                    "w_down",
                                                    "q_norm",
                                                    "k_norm",
                                                    "post_attn_norm",
                                                    "post_ffn_norm",
                                                    "router",
                                                    "shexp_gate_inp",
                                                    "shexp_gate",
                                                    "shexp_up",
                                                    "shexp_down",
                                                    "bo",
                                                    "attn_sinks",
                                                    "router_b",
                                                    "exp_gate_b",
                                                    "exp_up_b",
                                                    "exp_down_b"};

struct SourceTensor {
  std::string name;  // canonical name
  int layer = -1;    // -1 for globals
  int expert = -1;   // the expert of an exp_* tensor; -1 for the others
  SourceType type = SourceType::kF32;
  int64_t rows = 1;
  int64_t cols = 0;
  const uint8_t* data = nullptr;  // points into a mapped file of the source
  uint64_t bytes = 0;
  // Non-zero: the rows are in GGUF's adjacent-pair RoPE order for heads of
  // this size and must be permuted to the store's halves order (wq, wk, bq, bk
  // of GGUF llama files). Within each head, source row 2*i + j goes to
  // destination row j * head_dim/2 + i.
  int32_t rope_permute_head_dim = 0;
  // Views of a fused checkpoint tensor (gpt-oss's experts): rows `row_stride`
  // bytes apart (0: contiguous, the rows of `bytes` one after another) and,
  // for f32 / f16 / bf16, the values of a row `col_stride` bytes apart (0:
  // contiguous): a transposed or interleaved slice read in place.
  uint64_t row_stride = 0;
  uint64_t col_stride = 0;
  // HF's MXFP4 (type kMXFP4, gpt-oss's experts): the values and the scales
  // apart. `data` holds per row cols / 32 groups of 16 bytes (value 2i of a
  // group in the low nibble of byte i, 2i + 1 in the high one); this, per
  // row cols / 32 E8M0 exponent bytes, its rows `mx_scale_stride` bytes
  // apart. Null: GGUF's blocks of 17 bytes.
  const uint8_t* mx_scales = nullptr;
  uint64_t mx_scale_stride = 0;
};

struct ModelSource {
  std::string path;    // as given
  std::string format;  // "safetensors" or "gguf"
  ModelConfig config;
  std::vector<SourceTensor> tensors;
  Vocab vocab;  // GGUF "llama" vocabulary; empty pieces otherwise
  // The tokenizer the segment carries (and paged-run uses): the GGUF vocab
  // above (kSentencePieceGguf), an HF tokenizer.json (kHfJson), or none; with
  // the chat template when the checkpoint has one. A source made by hand
  // with `vocab` but kind kNone gets the vocab's bundle (TokenizerBundleOf).
  TokenizerBundle tokenizer;
  // Why the checkpoint has no tokenizer paged reads ("no tokenizer.json: ..."),
  // for the store to say once; "" otherwise.
  std::string tokenizer_note;
  uint64_t fingerprint = 0;                        // identity of the files: paths, sizes, mtimes
  std::vector<std::unique_ptr<MappedFile>> files;  // keep the tensor data mapped
  // Tensors the reader computed instead of mapping (gemma's 1 + w norms);
  // SourceTensor::data points into these.
  std::vector<std::unique_ptr<std::vector<float>>> derived;

  // The tensor `name` of `layer` (and `expert`, for the exp_* tensors).
  const SourceTensor* Find(std::string_view name, int layer = -1, int expert = -1) const;
};

// Checks that every tensor the config needs is present exactly once with the
// shape the config implies, and no unexpected tensor is; `origin` prefixes the
// error ("model.safetensors: ...").
absl::Status CheckTensorSet(const ModelSource& src);

// Opens an HF checkpoint directory or a .gguf file.
absl::StatusOr<std::unique_ptr<ModelSource>> OpenModel(const std::string& path);

// `src.tokenizer`, or the bundle of `src.vocab` when only that is set.
TokenizerBundle TokenizerBundleOf(const ModelSource& src);

}  // namespace paged
