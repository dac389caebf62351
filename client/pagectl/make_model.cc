#include "client/pagectl/make_model.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <regex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/pagectl/presets.h"
#include "common/dtype.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "store/safetensors_writer.h"

namespace paged {

namespace {

namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; tensors are written from host memory");

// ---- Random numbers --------------------------------------------------------

// SplitMix64 (Steele et al.): one add and two multiplies per 64 random bits,
// which is far faster than the disk. Each tensor gets its own stream, seeded
// from (seed, tensor index), so its bytes do not depend on buffer sizes.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1), exactly representable (53 random bits).
  double NextSigned() { return double(Next() >> 11) * 0x1p-52 - 1.0; }

 private:
  uint64_t s_;
};

uint64_t TensorSeed(uint64_t seed, uint64_t index) {
  SplitMix64 a(seed);
  SplitMix64 b(a.Next() ^ (index * 0xd1342543de82ef95ull));
  return b.Next();
}

// How a tensor's values are drawn.
enum class Init {
  kUniform,  // uniform in [-scale, scale]
  kNormal,   // ~N(0, scale^2), approximated (see BuildTable)
  kOnes,     // 1 + uniform in [-scale, scale]
  // Bytes (U8 tensors, two per 16-bit draw): uniformly random (MXFP4
  // blocks: every e2m1 code alike), or all equal to `scale` (MXFP4 scales:
  // one E8M0 exponent).
  kRandomBytes,
  kConstantBytes,
};

// Values are drawn by looking up a random 16-bit index in a table of 65536
// values of the tensor's distribution, already converted to the output type:
// one 64-bit draw gives four elements, no float math per element.
using Table = std::vector<uint16_t>;

Table BuildTable(Init init, double scale, DType dtype, SplitMix64& rng) {
  Table t(65536);
  auto convert = [dtype](double v) {
    const float f = static_cast<float>(v);
    return dtype == DType::kBF16 ? FloatToBf16(f) : FloatToHalf(f);
  };
  for (size_t i = 0; i < t.size(); ++i) {
    if (init == Init::kRandomBytes || init == Init::kConstantBytes) {
      const uint16_t b = uint16_t(scale);
      t[i] = init == Init::kRandomBytes ? uint16_t(i) : uint16_t(b | b << 8);
      continue;
    }
    // The uniform grid's midpoints: symmetric, none is zero.
    const double u = (2.0 * double(i) + 1.0) / 65536.0 - 1.0;
    double v = 0;
    switch (init) {
      case Init::kUniform:
        v = scale * u;
        break;
      case Init::kOnes:
        v = 1.0 + scale * u;
        break;
      case Init::kNormal: {
        // Irwin-Hall: a sum of four uniforms in [-1, 1) has variance 4/3 and is
        // close to normal (bounded at 3.5 sigma). Only exactly rounded
        // operations (+, *, sqrt) in a fixed order, so the table, like
        // everything here, is the same on every machine.
        double sum = 0;
        for (int k = 0; k < 4; ++k) sum += rng.NextSigned();
        v = scale * std::sqrt(0.75) * sum;
        break;
      }
      case Init::kRandomBytes:
      case Init::kConstantBytes:
        break;  // (above)
    }
    t[i] = convert(v);
  }
  return t;
}

// Fills one tensor's elements in chunks; chunks other than the last must hold
// a multiple of 4 elements so that the stream does not depend on chunking.
class TensorFiller {
 public:
  TensorFiller(Init init, double scale, DType dtype, uint64_t seed)
      : rng_(seed), table_(BuildTable(init, scale, dtype, rng_)) {}

  void Fill(uint16_t* out, size_t n) {
    const uint16_t* t = table_.data();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
      const uint64_t r = rng_.Next();
      out[i] = t[r & 0xffff];
      out[i + 1] = t[(r >> 16) & 0xffff];
      out[i + 2] = t[(r >> 32) & 0xffff];
      out[i + 3] = t[r >> 48];
    }
    if (i < n) {
      uint64_t r = rng_.Next();
      for (; i < n; ++i, r >>= 16) out[i] = t[r & 0xffff];
    }
  }

 private:
  SplitMix64 rng_;
  Table table_;
};

// ---- The tensor plan -------------------------------------------------------

struct TensorSpec {
  std::string name;            // HF name
  std::vector<int64_t> shape;  // [rows, cols], or [n] for vectors
  Init init = Init::kUniform;
  double scale = 0;
  // Non-empty: row r's values are further multiplied by row_scale[r]
  // (a skewed router), drawn one by one instead of from a table.
  std::vector<double> row_scale;
  bool u8 = false;  // U8 elements (MXFP4 blocks and scales), else the file's 16-bit type

  uint64_t elements() const {
    uint64_t n = 1;
    for (int64_t d : shape) n *= uint64_t(d);
    return n;
  }
  uint64_t bytes() const { return elements() * (u8 ? 1 : 2); }
  // The 16-bit units the stream produces (U8 tensors have an even size).
  uint64_t units() const { return bytes() / 2; }
};

// The E8M0 exponent of random MXFP4 weights with variance 1 / fan_in: a
// uniformly random e2m1 code has mean square 68.5 / 8 (its values 0 .. 6).
int Mxfp4Exponent(int64_t fan_in) {
  return 127 + int(std::lround(std::log2(1.0 / std::sqrt(68.5 / 8 * double(fan_in)))));
}

// The router row scales of one layer for a skew S (MakeModelOptions::router_skew):
// rank^-S, the ranks a random permutation of the experts.
std::vector<double> RouterRowScales(int n_experts, double skew, uint64_t seed) {
  std::vector<int> rank(static_cast<size_t>(n_experts));
  for (int e = 0; e < n_experts; ++e) rank[size_t(e)] = e + 1;
  SplitMix64 rng(seed);
  for (int i = n_experts - 1; i > 0; --i)  // Fisher-Yates
    std::swap(rank[size_t(i)], rank[size_t(rng.Next() % uint64_t(i + 1))]);
  std::vector<double> s(static_cast<size_t>(n_experts));
  for (int e = 0; e < n_experts; ++e) s[size_t(e)] = std::pow(double(rank[size_t(e)]), -skew);
  return s;
}

// The tensors of `p` in file order: embeddings, layers in order, norm, lm_head.
// Sparse layers under transformers 4.x names (both 4.x and 5.x load them).
std::vector<TensorSpec> PlanTensors(const Preset& p, double router_skew, uint64_t seed) {
  const int64_t hidden = p.hidden, ffn = p.ffn, vocab = p.vocab;
  const int64_t q_dim = int64_t(p.n_heads) * p.head_dim();
  const int64_t kv_dim = int64_t(p.n_kv_heads) * p.head_dim();
  // Uniform in +-sqrt(3 / fan_in) has variance 1 / fan_in: activations keep
  // their scale through every matrix.
  auto matrix = [](std::string name, int64_t rows, int64_t cols) {
    return TensorSpec{std::move(name), {rows, cols}, Init::kUniform, std::sqrt(3.0 / cols), {}};
  };
  auto norm = [](std::string name, int64_t n) {
    return TensorSpec{std::move(name), {n}, Init::kOnes, 0.05, {}};
  };
  auto bias = [](std::string name, int64_t n) {
    return TensorSpec{std::move(name), {n}, Init::kUniform, 0.02, {}};
  };

  std::vector<TensorSpec> v;
  v.push_back({"model.embed_tokens.weight", {vocab, hidden}, Init::kNormal, 0.02, {}});
  for (int l = 0; l < p.n_layers; ++l) {
    const std::string pre = absl::StrCat("model.layers.", l, ".");
    v.push_back(norm(pre + "input_layernorm.weight", hidden));
    v.push_back(matrix(pre + "self_attn.q_proj.weight", q_dim, hidden));
    v.push_back(matrix(pre + "self_attn.k_proj.weight", kv_dim, hidden));
    v.push_back(matrix(pre + "self_attn.v_proj.weight", kv_dim, hidden));
    if (p.qkv_bias || p.gpt_oss()) {
      v.push_back(bias(pre + "self_attn.q_proj.bias", q_dim));
      v.push_back(bias(pre + "self_attn.k_proj.bias", kv_dim));
      v.push_back(bias(pre + "self_attn.v_proj.bias", kv_dim));
    }
    v.push_back(matrix(pre + "self_attn.o_proj.weight", hidden, q_dim));
    if (p.gpt_oss()) {
      v.push_back(bias(pre + "self_attn.o_proj.bias", hidden));
      v.push_back(bias(pre + "self_attn.sinks", p.n_heads));
    }
    if (p.qk_norm()) {
      v.push_back(norm(pre + "self_attn.q_norm.weight", p.head_dim()));
      v.push_back(norm(pre + "self_attn.k_norm.weight", p.head_dim()));
    }
    v.push_back(norm(pre + "post_attention_layernorm.weight", hidden));
    if (p.n_experts == 0) {
      v.push_back(matrix(pre + "mlp.gate_proj.weight", ffn, hidden));
      v.push_back(matrix(pre + "mlp.up_proj.weight", ffn, hidden));
      v.push_back(matrix(pre + "mlp.down_proj.weight", hidden, ffn));
      continue;
    }
    if (p.gpt_oss()) {
      // The router with its bias; the experts fused, MXFP4 blocks [E, rows,
      // cols / 32, 16] and scales [E, rows, cols / 32] in the linear-layer
      // orientation (gate_up's rows alternate gate and up), f32-free biases.
      TensorSpec router = matrix(pre + "mlp.router.weight", p.n_experts, hidden);
      if (router_skew > 0)
        router.row_scale =
            RouterRowScales(p.n_experts, router_skew, TensorSeed(seed, ~uint64_t(l)));
      v.push_back(std::move(router));
      v.push_back(bias(pre + "mlp.router.bias", p.n_experts));
      const int64_t e = p.n_experts, f = p.expert_ffn;
      auto blocks = [&](const std::string& name, int64_t rows, int64_t cols) {
        v.push_back({name + "_blocks", {e, rows, cols / 32, 16}, Init::kRandomBytes, 0, {}, true});
        v.push_back({name + "_scales",
                     {e, rows, cols / 32},
                     Init::kConstantBytes,
                     double(Mxfp4Exponent(cols)),
                     {},
                     true});
      };
      blocks(pre + "mlp.experts.gate_up_proj", 2 * f, hidden);
      v.push_back({pre + "mlp.experts.gate_up_proj_bias", {e, 2 * f}, Init::kUniform, 0.02, {}});
      blocks(pre + "mlp.experts.down_proj", hidden, f);
      v.push_back({pre + "mlp.experts.down_proj_bias", {e, hidden}, Init::kUniform, 0.02, {}});
      continue;
    }
    const bool mixtral = p.model_type == "mixtral";
    const std::string moe = pre + (mixtral ? "block_sparse_moe." : "mlp.");
    TensorSpec router = matrix(moe + "gate.weight", p.n_experts, hidden);
    if (router_skew > 0)
      router.row_scale = RouterRowScales(p.n_experts, router_skew, TensorSeed(seed, ~uint64_t(l)));
    v.push_back(std::move(router));
    const int64_t f = p.expert_ffn;
    for (int e = 0; e < p.n_experts; ++e) {
      const std::string x = absl::StrCat(moe, "experts.", e, ".");
      v.push_back(matrix(x + (mixtral ? "w1.weight" : "gate_proj.weight"), f, hidden));
      v.push_back(matrix(x + (mixtral ? "w3.weight" : "up_proj.weight"), f, hidden));
      v.push_back(matrix(x + (mixtral ? "w2.weight" : "down_proj.weight"), hidden, f));
    }
  }
  v.push_back(norm("model.norm.weight", hidden));
  if (!p.tied) v.push_back(matrix("lm_head.weight", vocab, hidden));
  return v;
}

// One output file: a contiguous range of the plan.
struct Shard {
  std::string file;
  size_t begin = 0, end = 0;  // indices into the plan
};

// Packs tensors in order into files of at most `max_bytes` (a tensor larger
// than that gets a file of its own; tensors are never split). One file is
// model.safetensors; several are named as HF names them.
std::vector<Shard> PlanShards(const std::vector<TensorSpec>& tensors, uint64_t max_bytes) {
  std::vector<Shard> shards;
  uint64_t in_shard = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t bytes = tensors[i].bytes();
    if (shards.empty() || (in_shard > 0 && in_shard + bytes > max_bytes)) {
      shards.push_back({"", i, i});
      in_shard = 0;
    }
    shards.back().end = i + 1;
    in_shard += bytes;
  }
  if (shards.size() == 1) {
    shards[0].file = "model.safetensors";
  } else {
    for (size_t k = 0; k < shards.size(); ++k)
      shards[k].file = absl::StrFormat("model-%05d-of-%05d.safetensors", k + 1, shards.size());
  }
  return shards;
}

// ---- The data stream -------------------------------------------------------

// A few MB per chunk: large writes, and two buffers stay small.
constexpr size_t kChunkElems = 4u << 20;  // a multiple of 4 (see TensorFiller)

// Consecutive pieces of the plan's tensor data; a chunk never spans tensors.
struct Chunk {
  std::vector<uint16_t> data = std::vector<uint16_t>(kChunkElems);
  size_t n = 0;       // elements filled
  size_t tensor = 0;  // index into the plan
};

// Produces the values of every tensor of the plan, in order, chunk by chunk.
class WeightStream {
 public:
  WeightStream(const std::vector<TensorSpec>& tensors, uint64_t seed, DType dtype)
      : tensors_(tensors), seed_(seed), dtype_(dtype) {}

  // Fills `c` with the next chunk; false when every tensor is done.
  bool Next(Chunk* c) {
    while (left_ == 0) {
      if (next_ == tensors_.size()) return false;
      const TensorSpec& t = tensors_[next_];
      if (t.row_scale.empty()) {
        filler_.emplace(t.init, t.scale, dtype_, TensorSeed(seed_, next_));
      } else {
        filler_.reset();
        rows_rng_.emplace(TensorSeed(seed_, next_));
      }
      left_ = t.units();
      done_ = 0;
      ++next_;
    }
    c->n = static_cast<size_t>(std::min<uint64_t>(left_, kChunkElems));
    c->tensor = next_ - 1;
    if (filler_) {
      filler_->Fill(c->data.data(), c->n);
    } else {
      // Scaled rows (a skewed router: small), value by value.
      const TensorSpec& t = tensors_[next_ - 1];
      const uint64_t cols = uint64_t(t.shape.back());
      for (size_t i = 0; i < c->n; ++i) {
        const double v =
            t.scale * t.row_scale[size_t((done_ + i) / cols)] * rows_rng_->NextSigned();
        c->data[i] = dtype_ == DType::kBF16 ? FloatToBf16(float(v)) : FloatToHalf(float(v));
      }
    }
    left_ -= c->n;
    done_ += c->n;
    return true;
  }

 private:
  const std::vector<TensorSpec>& tensors_;
  const uint64_t seed_;
  const DType dtype_;
  size_t next_ = 0;    // the tensor after the current one
  uint64_t left_ = 0;  // 16-bit units of the current tensor not yet produced
  uint64_t done_ = 0;  // 16-bit units of the current tensor produced
  std::optional<TensorFiller> filler_;
  std::optional<SplitMix64> rows_rng_;  // tensors with row scales
};

// ---- Files -----------------------------------------------------------------

nlohmann::ordered_json ConfigJson(const Preset& p, DType dtype) {
  const std::string arch = p.model_type == "qwen2"       ? "Qwen2ForCausalLM"
                           : p.model_type == "mistral"   ? "MistralForCausalLM"
                           : p.model_type == "mixtral"   ? "MixtralForCausalLM"
                           : p.model_type == "qwen3_moe" ? "Qwen3MoeForCausalLM"
                           : p.model_type == "gpt_oss"   ? "GptOssForCausalLM"
                                                         : "LlamaForCausalLM";
  nlohmann::ordered_json j;
  j["architectures"] = {arch};
  j["model_type"] = p.model_type;
  j["hidden_size"] = p.hidden;
  j["intermediate_size"] = p.ffn;
  j["num_hidden_layers"] = p.n_layers;
  j["num_attention_heads"] = p.n_heads;
  j["num_key_value_heads"] = p.n_kv_heads;
  j["head_dim"] = p.head_dim();
  j["vocab_size"] = p.vocab;
  j["max_position_embeddings"] = p.max_pos;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = p.rms_eps;
  j["rope_theta"] = p.rope_theta;
  if (p.llama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", p.llama3->factor},
                         {"low_freq_factor", p.llama3->low_freq_factor},
                         {"high_freq_factor", p.llama3->high_freq_factor},
                         {"original_max_position_embeddings", p.llama3->original_max_pos}};
  }
  if (p.yarn) {
    j["rope_scaling"] = {{"rope_type", "yarn"},
                         {"factor", p.yarn->factor},
                         {"beta_fast", p.yarn->beta_fast},
                         {"beta_slow", p.yarn->beta_slow},
                         {"truncate", false},
                         {"original_max_position_embeddings", p.yarn->original_max_pos}};
  }
  if (p.sliding_window > 0) {
    j["sliding_window"] = p.sliding_window;
    nlohmann::ordered_json types = nlohmann::ordered_json::array();
    for (int l = 0; l < p.n_layers; ++l)
      types.push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
    j["layer_types"] = std::move(types);
  }
  if (p.gpt_oss()) {
    j["num_local_experts"] = p.n_experts;
    j["num_experts_per_tok"] = p.n_experts_used;
    j["attention_bias"] = true;
    j["swiglu_limit"] = 7.0;
    j["quantization_config"] = {{"quant_method", "mxfp4"},
                                {"modules_to_not_convert",
                                 {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                  "model.embed_tokens", "lm_head"}}};
  } else if (p.model_type == "mixtral") {
    j["num_local_experts"] = p.n_experts;
    j["num_experts_per_tok"] = p.n_experts_used;
  } else if (p.n_experts > 0) {
    j["num_experts"] = p.n_experts;
    j["num_experts_per_tok"] = p.n_experts_used;
    j["moe_intermediate_size"] = p.expert_ffn;
    j["norm_topk_prob"] = p.norm_topk_prob;
    j["decoder_sparse_step"] = 1;
    j["mlp_only_layers"] = nlohmann::ordered_json::array();
  }
  j["tie_word_embeddings"] = p.tied;
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  j["torch_dtype"] = dtype == DType::kBF16 ? "bfloat16" : "float16";
  return j;
}

// Writes `text` to dir/name through a temporary file and a rename, so that a
// reader never sees half of it.
absl::Status WriteTextFile(const fs::path& dir, const std::string& name, const std::string& text) {
  const fs::path final_path = dir / name;
  const fs::path tmp_path = dir / (name + ".tmp");
  {
    std::ofstream f(tmp_path, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    if (!f) return absl::InternalError(absl::StrCat("cannot write ", tmp_path.string()));
  }
  std::error_code ec;
  fs::rename(tmp_path, final_path, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot rename ", tmp_path.string(), " to ",
                                            final_path.string(), ": ", ec.message()));
  return absl::OkStatus();
}

// Removes checkpoint files a previous run may have left in `dir` (a stale
// index would otherwise point a loader at stale shards).
absl::Status RemoveStaleCheckpoint(const fs::path& dir) {
  static const std::regex kShard(R"(model-\d{5}-of-\d{5}\.safetensors)");
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name == "config.json" || name == "model.safetensors" ||
        name == "model.safetensors.index.json" || std::regex_match(name, kShard))
      stale.push_back(e.path());
  }
  if (ec)
    return absl::InternalError(absl::StrCat("cannot list ", dir.string(), ": ", ec.message()));
  for (const fs::path& f : stale) {
    if (!fs::remove(f, ec) && ec)
      return absl::InternalError(absl::StrCat("cannot remove ", f.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status CreateOutDir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create output directory ", dir.string(), ": ", ec.message()));
  if (!fs::is_directory(dir, ec))
    return absl::InvalidArgumentError(
        absl::StrCat("output path ", dir.string(), " exists and is not a directory"));
  return absl::OkStatus();
}

}  // namespace

absl::Status MakeModel(const MakeModelOptions& opts) {
  // Validate everything before touching the file system.
  ASSIGN_OR_RETURN(Preset preset, FindPreset(opts.preset));
  if (opts.layers < 0)
    return absl::InvalidArgumentError(absl::StrCat("--layers must be > 0 (got ", opts.layers, ")"));
  if (opts.layers > 0) preset.n_layers = opts.layers;
  if (opts.dtype != "f16" && opts.dtype != "bf16")
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --dtype '", opts.dtype, "' (expected f16 or bf16)"));
  const DType dtype = opts.dtype == "bf16" ? DType::kBF16 : DType::kF16;
  if (opts.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (opts.max_shard_bytes == 0) return absl::InvalidArgumentError("max shard size must be > 0");
  if (!(opts.router_skew >= 0) || opts.router_skew > 16)
    return absl::InvalidArgumentError(
        absl::StrCat("--router-skew must be in [0, 16] (got ", opts.router_skew, ")"));
  RETURN_IF_ERROR(
      Annotate(ValidateConfig(PresetModelConfig(preset)), absl::StrCat("preset ", preset.name)));

  const std::vector<TensorSpec> tensors = PlanTensors(preset, opts.router_skew, opts.seed);
  constexpr uint64_t kUnitBytes = 2;  // the stream's unit: an f16 / bf16 value or two U8
  const std::vector<Shard> shards = PlanShards(tensors, opts.max_shard_bytes);
  uint64_t total = 0;
  for (const TensorSpec& t : tensors) total += t.bytes();

  const fs::path dir(opts.out_dir);
  RETURN_IF_ERROR(CreateOutDir(dir));
  RETURN_IF_ERROR(RemoveStaleCheckpoint(dir));
  std::error_code ec;
  const fs::space_info space = fs::space(dir, ec);
  // Room for the headers too; a clear error now beats ENOSPC in the middle.
  if (!ec && space.available < total + (16u << 20))
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: the checkpoint needs %.2f GB but only %.2f GB are free", dir.string(),
                        total / 1e9, double(space.available) / 1e9));

  // Double buffering: the next chunk is generated on another thread while the
  // current one is written, so the disk, not the generator, sets the pace.
  WeightStream stream(tensors, opts.seed, dtype);
  Chunk chunks[2];
  Chunk* cur = &chunks[0];
  Chunk* spare = &chunks[1];
  bool have = stream.Next(cur);
  const std::string st_dtype = dtype == DType::kBF16 ? "BF16" : "F16";
  uint64_t done = 0;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (const Shard& shard : shards) {
    std::vector<SafetensorsEntry> entries;
    for (size_t i = shard.begin; i < shard.end; ++i) {
      entries.push_back({tensors[i].name, tensors[i].u8 ? "U8" : st_dtype, tensors[i].shape});
      weight_map[tensors[i].name] = shard.file;
    }
    const std::string path = (dir / shard.file).string();
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> w,
                     SafetensorsWriter::Create(path, entries, {{"format", "pt"}}));
    while (have && cur->tensor < shard.end) {
      std::future<bool> next =
          std::async(std::launch::async, [&stream, spare] { return stream.Next(spare); });
      const absl::Status written = w->Append(cur->data.data(), cur->n * kUnitBytes);
      have = next.get();  // before any return: the thread uses `spare`
      RETURN_IF_ERROR(written);
      done += cur->n * kUnitBytes;
      if (opts.progress) opts.progress(done, total);
      std::swap(cur, spare);
    }
    RETURN_IF_ERROR(w->Finish());
  }

  if (shards.size() > 1) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = std::move(weight_map);
    RETURN_IF_ERROR(WriteTextFile(dir, "model.safetensors.index.json", index.dump(2) + "\n"));
  }
  // Last: the directory is a checkpoint only once every tensor is in place.
  return WriteTextFile(dir, "config.json", ConfigJson(preset, dtype).dump(2) + "\n");
}

}  // namespace paged
