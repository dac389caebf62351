#include "store/segment_builder.h"

#include <cmath>
#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "common/quant.h"
#include "common/segment.h"
#include "common/status.h"
#include "store/convert.h"

namespace paged {
namespace {

bool IsNormOrBias(std::string_view name) {
  return name == "attn_norm" || name == "ffn_norm" || name == "output_norm" || name == "bq" ||
         name == "bk" || name == "bv";
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

}  // namespace

absl::StatusOr<WeightFormat> ResolveWeightFormat(const ModelSource& src, std::string_view flag) {
  if (flag == "native") {
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

absl::StatusOr<SegmentHeader> PlanSegment(const ModelSource& src, const LayoutOptions& opts) {
  const ModelConfig& c = src.config;
  RETURN_IF_ERROR(Annotate(ValidateConfig(c), src.path));
  ASSIGN_OR_RETURN(const WeightFormat wf, ResolveWeightFormat(src, opts.weight_format));
  if (opts.block_tokens < 1 || opts.block_tokens > 4096)
    return absl::InvalidArgumentError(
        absl::StrCat("--block-tokens=", opts.block_tokens, ": expected 1..4096"));
  if (!(opts.kv_gib >= 0) || opts.kv_gib > 1 << 20)
    return absl::InvalidArgumentError(absl::StrCat("--kv-gib=", opts.kv_gib, ": expected 0..2^20"));
  const SourceTensor* wq0 = src.Find("wq", 0);
  const bool q8_source = wq0 != nullptr && wq0->type == SourceType::kQ8_0;
  const int int8_group =
      opts.int8_group > 0 ? opts.int8_group : (q8_source ? 32 : kDefaultInt8Group);
  const int int4_group = opts.int4_group > 0 ? opts.int4_group : kDefaultInt4Group;
  const DType matrix_dt = WeightFormatDType(wf);
  const int group = wf == WeightFormat::kInt8   ? int8_group
                    : wf == WeightFormat::kInt4 ? int4_group
                                                : 0;

  SegmentHeader h{};
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
  const DType dense = DenseDType(wf, src);
  h.dense_dtype = static_cast<uint32_t>(dense);
  h.norm_dtype = static_cast<uint32_t>(DType::kF32);

  // Globals: embeddings, final norm, lm_head.
  h.globals_offset = kHeaderRegionBytes;
  uint64_t cursor = h.globals_offset;
  for (const char* name : {"tok_embd", "output_norm", "output"}) {
    const SourceTensor* t = src.Find(name);
    if (t == nullptr) continue;  // "output" when tied; CheckTensorSet vetted the rest
    const DType dt = IsNormOrBias(name) ? DType::kF32 : dense;
    h.global_tensors[h.n_global_tensors++] = PlaceTensor(*t, dt, 0, &cursor);
  }
  h.globals_bytes = cursor - h.globals_offset;

  // One layer's template; every layer has the same tensors and shapes.
  uint64_t rel = 0;
  for (const char* name : kLayerTensorNames) {
    const SourceTensor* t = src.Find(name, 0);
    if (t == nullptr) continue;
    const bool small = IsNormOrBias(name);
    h.layer_tensors[h.n_layer_tensors++] =
        PlaceTensor(*t, small ? DType::kF32 : matrix_dt, small ? 0 : group, &rel);
  }
  h.layer_used_bytes = rel;
  h.layer_block_bytes = AlignUp(rel, kSegmentAlign);
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
  h.kv_dtype = static_cast<uint32_t>(dense == DType::kF32 ? DType::kF32 : dense);
  h.block_tokens = uint32_t(opts.block_tokens);
  const uint64_t elt = dense == DType::kF32 ? 4 : 2;
  h.kv_block_bytes = 2ull * h.block_tokens * uint64_t(c.kv_dim()) * elt;
  const uint64_t kv_budget = uint64_t(std::llround(opts.kv_gib * double(1ull << 30)));
  h.kv_n_blocks = kv_budget / (h.kv_block_bytes * uint64_t(c.n_layers));
  h.kv_offset = AlignUp(cursor, kSegmentAlign);
  h.kv_bytes = AlignUp(h.kv_n_blocks * h.kv_block_bytes * uint64_t(c.n_layers), kSegmentAlign);
  h.total_bytes = h.kv_offset + h.kv_bytes;
  return h;
}

uint64_t WeightBytes(const SegmentHeader& plan) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < plan.n_global_tensors; ++i)
    n += plan.global_tensors[i].bytes + plan.global_tensors[i].scale_bytes;
  for (uint32_t i = 0; i < plan.n_layer_tensors; ++i)
    n += (plan.layer_tensors[i].bytes + plan.layer_tensors[i].scale_bytes) *
         uint64_t(plan.model.n_layers);
  return n;
}

absl::Status FillSegment(const ModelSource& src, SegmentHeader& plan, uint8_t* base, int threads,
                         const ProgressFn& progress) {
  const uint64_t total = WeightBytes(plan);
  uint64_t done = 0;
  auto write = [&](const TensorEntry& e, uint64_t origin, int layer) -> absl::Status {
    const SourceTensor* t = src.Find(e.Name(), layer);
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
    uint64_t sum = Fnv1a64(base + e.offset, e.bytes);
    if (e.scale_bytes) sum = Fnv1a64(base + e.scale_offset, e.scale_bytes, sum);
    e.checksum = sum;
  }
  for (int l = 0; l < plan.model.n_layers; ++l) {
    const uint64_t block = plan.LayerOffset(l);
    for (uint32_t i = 0; i < plan.n_layer_tensors; ++i) {
      RETURN_IF_ERROR(write(plan.layer_tensors[i], block, l));
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
