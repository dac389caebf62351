// The model configuration as the store records it. Plain data with
// fixed-width fields: it is embedded in the shared segment header.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paged {

enum class Arch : uint32_t { kLlama = 1, kMistral = 2, kQwen2 = 3 };
std::string_view ArchName(Arch a);
absl::StatusOr<Arch> ParseArch(std::string_view name);  // "llama", "mistral", "qwen2"

enum class RopeScaling : uint32_t { kNone = 0, kLlama3 = 1 };

// Which element pairs RoPE rotates. The store normalises every model to
// kHalves: pairs (x[i], x[i + head_dim/2]) of each head, as HF checkpoints do.
// GGUF llama files rotate adjacent pairs (x[2i], x[2i+1]); their q/k rows are
// permuted at load so that the same computation applies.
enum class RopeStyle : uint32_t { kHalves = 1 };

constexpr int kMaxEosIds = 4;

struct ModelConfig {
  Arch arch = Arch::kLlama;
  int32_t n_layers = 0;
  int32_t hidden = 0;  // model dimension
  int32_t ffn = 0;     // MLP intermediate size
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;  // == n_heads without GQA
  int32_t head_dim = 0;    // usually hidden / n_heads
  int32_t vocab = 0;
  int32_t max_context = 0;  // positions the model was built for
  float norm_eps = 1e-5f;
  float rope_theta = 10000.f;
  RopeStyle rope_style = RopeStyle::kHalves;
  RopeScaling rope_scaling = RopeScaling::kNone;
  float rope_factor = 1.f;            // llama3: factor
  float rope_low_freq_factor = 1.f;   // llama3
  float rope_high_freq_factor = 4.f;  // llama3
  int32_t rope_original_max_pos = 0;  // llama3: original_max_position_embeddings
  int32_t sliding_window = 0;         // 0: none (recorded, see docs/models.md)
  uint8_t tied_embeddings = 0;        // lm_head shares tok_embd
  uint8_t qkv_bias = 0;               // q/k/v projections carry a bias (qwen2)
  uint8_t pad_[2] = {};
  int32_t bos_id = -1;
  int32_t n_eos = 0;
  int32_t eos_ids[kMaxEosIds] = {-1, -1, -1, -1};

  int32_t q_dim() const { return n_heads * head_dim; }
  int32_t kv_dim() const { return n_kv_heads * head_dim; }
};

// Checks the sizes are positive, consistent (heads divide, GQA groups whole,
// even head_dim) and below sane limits; the error names what is wrong.
absl::Status ValidateConfig(const ModelConfig& c);

// One-line human summary ("llama: 5 layers, hidden 64, ...").
std::string DescribeConfig(const ModelConfig& c);

}  // namespace paged
