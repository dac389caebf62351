#include "store/segment_builder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/quant.h"
#include "common/segment.h"
#include "common/status.h"
#include "store/convert.h"

namespace paged {
namespace {

// Norms, biases, attention sinks and the routers: always f32 (a router in
// a lower precision could change which experts a token takes).
bool IsNormOrBias(std::string_view name) {
  return name == "attn_norm" || name == "ffn_norm" || name == "output_norm" || name == "bq" ||
         name == "bk" || name == "bv" || name == "q_norm" || name == "k_norm" ||
         name == "post_attn_norm" || name == "post_ffn_norm" || name == "router" ||
         name == "shexp_gate_inp" || name == "bo" || name == "attn_sinks" || name == "router_b" ||
         name == "exp_gate_b" || name == "exp_up_b" || name == "exp_down_b";
}

// The exp_* tensors of a source by (layer, expert, name): a sparse model
// has thousands, too many to look up one by one in a list.
class ExpertIndex {
 public:
  explicit ExpertIndex(const ModelSource& src) {
    for (const SourceTensor& t : src.tensors) {
      if (t.expert >= 0) map_[std::tuple{t.layer, t.expert, t.name}] = &t;
    }
  }
  const SourceTensor* Find(int layer, int expert, const std::string& name) const {
    auto it = map_.find(std::tuple{layer, expert, name});
    return it == map_.end() ? nullptr : it->second;
  }

 private:
  std::map<std::tuple<int, int, std::string>, const SourceTensor*> map_;
};

// The FNV-1a 64 of a written tensor's payload then scales, `origin` being
// where its offsets start.
void SetChecksum(TensorEntry& e, const uint8_t* origin) {
  uint64_t sum = Fnv1a64(origin + e.offset, e.bytes);
  if (e.scale_bytes) sum = Fnv1a64(origin + e.scale_offset, e.scale_bytes, sum);
  e.checksum = sum;
}

// Lays out one tensor at `*cursor` (relative or absolute) and advances it.
TensorEntry PlaceTensor(const SourceTensor& t, DType dt, int group, uint64_t* cursor) {
  TensorEntry e{};
  std::strncpy(e.name, t.name.c_str(), sizeof(e.name) - 1);
  e.dtype = static_cast<uint32_t>(dt);
  e.rows = t.rows;
  e.cols = t.cols;
  e.offset = AlignUp(*cursor, kTensorAlign);
  e.bytes = PayloadBytes(dt, uint64_t(t.rows), uint64_t(t.cols));
  *cursor = e.offset + e.bytes;
  if (IsQuantized(dt)) {
    e.group = uint32_t(group);
    e.scale_offset = AlignUp(*cursor, kTensorAlign);
    e.scale_bytes = uint64_t(t.rows) * uint64_t(GroupsPerRow(t.cols, group)) * 2;
    *cursor = e.scale_offset + e.scale_bytes;
  }
  return e;
}

DType DenseDType(WeightFormat f, const ModelSource& src) {
  switch (f) {
    case WeightFormat::kF32:
      return DType::kF32;
    case WeightFormat::kBF16:
      return DType::kBF16;
    case WeightFormat::kF16:
      return DType::kF16;
    default: {
      const SourceTensor* emb = src.Find("tok_embd");
      return emb != nullptr && emb->type == SourceType::kBF16 ? DType::kBF16 : DType::kF16;
    }
  }
}

// Where a tensor goes: its store type and quantization group.
struct Placement {
  DType dt;
  int group;
};

// Under kNative every tensor keeps its own type: GGUF block formats as
// stored, f16 / bf16 as they are; f32 matrices become f16, and Q8_0 layer
// matrices int8 with group 32 (their own scales, moved out of the blocks), as
// for a whole file of that type. Q8_0 embeddings become f16, as they do in a
// Q8_0 file.
Placement NativePlacement(const SourceTensor& t, bool layer_matrix) {
  if (t.type == SourceType::kQ8_0)
    return layer_matrix ? Placement{DType::kI8, 32} : Placement{DType::kF16, 0};
  if (IsBlockSource(t.type) || t.type == SourceType::kBF16) return {StoredDType(t.type), 0};
  return {DType::kF16, 0};
}

}  // namespace

absl::StatusOr<WeightFormat> ResolveWeightFormat(const ModelSource& src, std::string_view flag) {
  if (flag == "native") {
    // Block formats other than Q8_0 are kept as stored, tensor by tensor.
    for (const SourceTensor& t : src.tensors) {
      if (IsBlockSource(t.type) && t.type != SourceType::kQ8_0) return WeightFormat::kNative;
    }
    const SourceTensor* wq = src.Find("wq", 0);
    if (wq == nullptr) return absl::InvalidArgumentError(absl::StrCat(src.path, ": no layer 0 wq"));
    switch (wq->type) {
      case SourceType::kBF16:
        return WeightFormat::kBF16;
      case SourceType::kQ8_0:
        return WeightFormat::kInt8;
      default:
        return WeightFormat::kF16;
    }
  }
  for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kF16, WeightFormat::kBF16,
                         WeightFormat::kInt8, WeightFormat::kInt4}) {
    if (flag == WeightFormatName(f)) return f;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--weight-format=", std::string(flag), ": expected native, f32, f16, bf16, int8 or int4"));
}

absl::StatusOr<std::unique_ptr<SegmentHeader>> PlanSegment(const ModelSource& src,
                                                           const LayoutOptions& opts) {
  const ModelConfig& c = src.config;
  RETURN_IF_ERROR(Annotate(ValidateConfig(c), src.path));
  ASSIGN_OR_RETURN(const WeightFormat wf, ResolveWeightFormat(src, opts.weight_format));
  if (opts.block_tokens < 1 || opts.block_tokens > 4096)
    return absl::InvalidArgumentError(
        absl::StrCat("--block-tokens=", opts.block_tokens, ": expected 1..4096"));
  if (!(opts.kv_gib >= 0) || opts.kv_gib > 1 << 20)
    return absl::InvalidArgumentError(absl::StrCat("--kv-gib=", opts.kv_gib, ": expected 0..2^20"));
  if (c.n_layers > kMaxSegmentLayers)
    return absl::InvalidArgumentError(absl::StrCat(
        src.path, ": ", c.n_layers, " layers; a segment holds at most ", kMaxSegmentLayers));
  const SourceTensor* wq0 = src.Find("wq", 0);
  const bool q8_source = wq0 != nullptr && wq0->type == SourceType::kQ8_0;
  const int int8_group =
      opts.int8_group > 0 ? opts.int8_group : (q8_source ? 32 : kDefaultInt8Group);
  const int int4_group = opts.int4_group > 0 ? opts.int4_group : kDefaultInt4Group;
  const DType matrix_dt = WeightFormatDType(wf);
  const int group = wf == WeightFormat::kInt8   ? int8_group
                    : wf == WeightFormat::kInt4 ? int4_group
                                                : 0;
  const bool native = wf == WeightFormat::kNative;
  // The store type of each tensor; norms and biases are always f32.
  const SourceTensor* emb = src.Find("tok_embd");
  const DType dense =
      native && emb != nullptr ? NativePlacement(*emb, false).dt : DenseDType(wf, src);
  std::optional<Placement> lm_head;
  if (opts.lm_head_format == "f16")
    lm_head = Placement{DType::kF16, 0};
  else if (opts.lm_head_format == "bf16")
    lm_head = Placement{DType::kBF16, 0};
  else if (opts.lm_head_format == "int8")
    lm_head = Placement{DType::kI8, int8_group};
  else if (opts.lm_head_format == "int4")
    lm_head = Placement{DType::kI4, int4_group};
  else if (opts.lm_head_format != "auto")
    return absl::InvalidArgumentError(absl::StrCat("--lm-head-format=", opts.lm_head_format,
                                                   ": expected auto, f16, bf16, int8 or int4"));
  auto place = [&](const SourceTensor& t, bool layer_matrix) -> Placement {
    if (IsNormOrBias(t.name)) return {DType::kF32, 0};
    if (t.name == "output" && lm_head) return *lm_head;
    if (native) return NativePlacement(t, layer_matrix);
    return layer_matrix ? Placement{matrix_dt, group} : Placement{dense, 0};
  };
  auto check_rows = [&](const SourceTensor& t, DType dt) -> absl::Status {
    if (RowFits(dt, t.cols)) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        src.path, ": tensor ", t.name, t.layer >= 0 ? absl::StrCat(" of layer ", t.layer) : "",
        " has rows of ", t.cols, " values, not whole ", std::string(DTypeName(dt)), " blocks of ",
        BlockValues(dt)));
  };

  auto plan = std::make_unique<SegmentHeader>();  // zeroed
  SegmentHeader& h = *plan;
  std::memcpy(h.magic, kSegmentMagic, sizeof(h.magic));
  h.layout_version = kLayoutVersion;
  h.header_bytes = sizeof(SegmentHeader);
  h.state = static_cast<uint32_t>(SegmentState::kEmpty);
  std::strncpy(h.model_path, src.path.c_str(), sizeof(h.model_path) - 1);
  std::strncpy(h.source_format, src.format.c_str(), sizeof(h.source_format) - 1);
  h.model_fingerprint = src.fingerprint;
  h.build_unix_time = uint64_t(std::time(nullptr));
  h.model = c;
  h.weight_format = static_cast<uint32_t>(wf);
  h.dense_dtype = static_cast<uint32_t>(dense);
  h.norm_dtype = static_cast<uint32_t>(DType::kF32);

  // Globals: embeddings, final norm, lm_head.
  h.globals_offset = kHeaderRegionBytes;
  uint64_t cursor = h.globals_offset;
  for (const char* name : {"tok_embd", "output_norm", "output"}) {
    const SourceTensor* t = src.Find(name);
    if (t == nullptr) continue;  // "output" when tied; CheckTensorSet vetted the rest
    const Placement p = place(*t, false);
    RETURN_IF_ERROR(check_rows(*t, p.dt));
    h.global_tensors[h.n_global_tensors++] = PlaceTensor(*t, p.dt, p.group, &cursor);
  }
  h.globals_bytes = cursor - h.globals_offset;

  // One table per layer: the tensors are the same in every layer, their
  // types (and so sizes) may differ. Blocks are as far apart as the largest.
  const ExpertIndex experts(src);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerTable& table = h.layers[l];
    uint64_t rel = 0;
    for (const char* name : kLayerTensorNames) {
      const SourceTensor* t = src.Find(name, l);
      if (t == nullptr) continue;
      if (table.n_tensors == kMaxLayerTensors)
        return absl::InvalidArgumentError(
            absl::StrCat(src.path, ": layer ", l, " has more than ", kMaxLayerTensors, " tensors"));
      const Placement p = place(*t, true);
      RETURN_IF_ERROR(check_rows(*t, p.dt));
      table.tensors[table.n_tensors++] = PlaceTensor(*t, p.dt, p.group, &rel);
    }
    if (c.IsMoeLayer(l)) {
      // The experts after the dense part, one aligned block each, all of
      // one layout (expert 0's); CheckTensorSet vetted their shapes.
      ExpertTable& x = table.experts;
      x.n_experts = uint32_t(c.n_experts);
      x.n_tensors = uint32_t(kExpertTensors);
      x.dense_bytes = rel;
      x.offset = AlignUp(rel, kTensorAlign);
      uint64_t erel = 0;
      for (int i = 0; i < kExpertTensors; ++i) {
        const SourceTensor* t = experts.Find(l, 0, kExpertTensorNames[i]);
        if (t == nullptr)
          return absl::InvalidArgumentError(
              absl::StrCat(src.path, ": layer ", l, " lacks expert 0's ", kExpertTensorNames[i]));
        const Placement p = place(*t, true);
        RETURN_IF_ERROR(check_rows(*t, p.dt));
        x.tensors[i] = PlaceTensor(*t, p.dt, p.group, &erel);
        for (int e = 1; e < c.n_experts; ++e) {
          const SourceTensor* u = experts.Find(l, e, kExpertTensorNames[i]);
          if (u == nullptr || u->rows != t->rows || u->cols != t->cols ||
              place(*u, true).dt != p.dt)
            return absl::InvalidArgumentError(
                absl::StrCat(src.path, ": layer ", l, " expert ", e, "'s ", kExpertTensorNames[i],
                             " differs from expert 0's in shape or type"));
        }
      }
      x.expert_bytes = erel;
      x.stride = AlignUp(erel, kTensorAlign);
      rel = x.offset + x.stride * uint64_t(c.n_experts);
    }
    table.used_bytes = rel;
    h.layer_used_bytes = std::max(h.layer_used_bytes, rel);
  }
  h.layer_block_bytes = AlignUp(h.layer_used_bytes, kSegmentAlign);
  h.layers_offset = AlignUp(cursor, kSegmentAlign);
  cursor = h.layers_offset + h.layer_block_bytes * uint64_t(c.n_layers);

  // Tokenizer and chat template (common/tokenizer_bundle.h).
  if (const TokenizerBundle tok = TokenizerBundleOf(src); !tok.empty()) {
    h.tokenizer_kind = static_cast<uint32_t>(tok.kind);
    h.tokenizer_offset = AlignUp(cursor, kTensorAlign);
    h.tokenizer_bytes = SerializeTokenizerBundle(tok).size();
    cursor = h.tokenizer_offset + h.tokenizer_bytes;
  }

  // KV pool: layer-major blocks of block_tokens rows of K then V.
  // The KV cache in the embeddings' type (f16 when they are a block format).
  const DType kv_dt = dense == DType::kF32 || dense == DType::kBF16 ? dense : DType::kF16;
  h.kv_dtype = static_cast<uint32_t>(kv_dt);
  h.block_tokens = uint32_t(opts.block_tokens);
  const uint64_t elt = kv_dt == DType::kF32 ? 4 : 2;
  h.kv_block_bytes = 2ull * h.block_tokens * uint64_t(c.kv_dim()) * elt;
  const uint64_t kv_budget = uint64_t(std::llround(opts.kv_gib * double(1ull << 30)));
  h.kv_n_blocks = kv_budget / (h.kv_block_bytes * uint64_t(c.n_layers));
  h.kv_offset = AlignUp(cursor, kSegmentAlign);
  h.kv_bytes = AlignUp(h.kv_n_blocks * h.kv_block_bytes * uint64_t(c.n_layers), kSegmentAlign);
  h.total_bytes = h.kv_offset + h.kv_bytes;
  return plan;
}

uint64_t WeightBytes(const SegmentHeader& plan) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < plan.n_global_tensors; ++i)
    n += plan.global_tensors[i].bytes + plan.global_tensors[i].scale_bytes;
  for (int l = 0; l < plan.model.n_layers; ++l) {
    const LayerTable& t = plan.Layer(l);
    for (uint32_t i = 0; i < t.n_tensors; ++i) n += t.tensors[i].bytes + t.tensors[i].scale_bytes;
    if (t.experts.n_experts > 0) {
      for (int i = 0; i < kExpertTensors; ++i)
        n += uint64_t(t.experts.n_experts) *
             (t.experts.tensors[i].bytes + t.experts.tensors[i].scale_bytes);
    }
  }
  return n;
}

absl::Status FillSegment(const ModelSource& src, SegmentHeader& plan, uint8_t* base, int threads,
                         const ProgressFn& progress) {
  const uint64_t total = WeightBytes(plan);
  uint64_t done = 0;
  const ExpertIndex experts(src);
  auto write = [&](const TensorEntry& e, uint64_t origin, int layer,
                   int expert = -1) -> absl::Status {
    const SourceTensor* t = expert >= 0 ? experts.Find(layer, expert, std::string(e.Name()))
                                        : src.Find(e.Name(), layer);
    if (t == nullptr || t->rows != e.rows || t->cols != e.cols)
      return absl::InternalError(
          absl::StrCat("tensor ", std::string(e.Name()), " of layer ", layer, " changed shape"));
    ConvertTensor(*t, e.Type(), int(e.group), base + origin + e.offset,
                  e.scale_bytes ? base + origin + e.scale_offset : nullptr, threads);
    done += e.bytes + e.scale_bytes;
    if (progress && !progress(done, total)) return absl::CancelledError("loading interrupted");
    return absl::OkStatus();
  };
  for (uint32_t i = 0; i < plan.n_global_tensors; ++i) {
    TensorEntry& e = plan.global_tensors[i];
    RETURN_IF_ERROR(write(e, 0, -1));
    SetChecksum(e, base);
  }
  for (int l = 0; l < plan.model.n_layers; ++l) {
    LayerTable& table = plan.layers[l];
    const uint64_t block = plan.LayerOffset(l);
    for (uint32_t i = 0; i < table.n_tensors; ++i)
      RETURN_IF_ERROR(write(table.tensors[i], block, l));
    // The layer's checksums, its tensors hashed side by side.
    const int n = std::max(1, std::min(threads, int(table.n_tensors)));
    std::vector<std::thread> pool;
    for (int k = 0; k < n; ++k) {
      pool.emplace_back([&, k] {
        for (uint32_t i = uint32_t(k); i < table.n_tensors; i += uint32_t(n))
          SetChecksum(table.tensors[i], base + block);
      });
    }
    for (std::thread& th : pool) th.join();
    // The experts, one block after another; each expert tensor's checksum
    // runs over that tensor of every expert in order.
    ExpertTable& x = table.experts;
    for (uint32_t e = 0; e < x.n_experts; ++e) {
      for (int i = 0; i < kExpertTensors; ++i)
        RETURN_IF_ERROR(write(x.tensors[i], block + x.ExpertOffset(int(e)), l, int(e)));
    }
    if (x.n_experts > 0) {
      std::vector<std::thread> sums;
      for (int i = 0; i < kExpertTensors; ++i) {
        sums.emplace_back([&, i] {
          TensorEntry& t = x.tensors[i];
          uint64_t sum = 1469598103934665603ull;
          for (uint32_t e = 0; e < x.n_experts; ++e) {
            const uint8_t* origin = base + block + x.ExpertOffset(int(e));
            sum = Fnv1a64(origin + t.offset, t.bytes, sum);
            if (t.scale_bytes) sum = Fnv1a64(origin + t.scale_offset, t.scale_bytes, sum);
          }
          t.checksum = sum;
        });
      }
      for (std::thread& th : sums) th.join();
    }
  }
  if (plan.tokenizer_bytes > 0) {
    const std::string blob = SerializeTokenizerBundle(TokenizerBundleOf(src));
    if (blob.size() != plan.tokenizer_bytes) return absl::InternalError("tokenizer size changed");
    std::memcpy(base + plan.tokenizer_offset, blob.data(), blob.size());
  }
  return absl::OkStatus();
}

}  // namespace paged
