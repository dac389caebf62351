#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "store/model_source.h"

namespace paged {

std::string_view SourceTypeName(SourceType t) {
  switch (t) {
    case SourceType::kF32:
      return "F32";
    case SourceType::kF16:
      return "F16";
    case SourceType::kBF16:
      return "BF16";
    case SourceType::kQ8_0:
      return "Q8_0";
    case SourceType::kQ4_0:
      return "Q4_0";
    case SourceType::kQ4_1:
      return "Q4_1";
    case SourceType::kQ5_0:
      return "Q5_0";
    case SourceType::kQ5_1:
      return "Q5_1";
    case SourceType::kQ2_K:
      return "Q2_K";
    case SourceType::kQ3_K:
      return "Q3_K";
    case SourceType::kQ4_K:
      return "Q4_K";
    case SourceType::kQ5_K:
      return "Q5_K";
    case SourceType::kQ6_K:
      return "Q6_K";
    case SourceType::kIQ4_NL:
      return "IQ4_NL";
    case SourceType::kIQ4_XS:
      return "IQ4_XS";
    case SourceType::kMXFP4:
      return "MXFP4";
  }
  return "unknown";
}

const SourceTensor* ModelSource::Find(std::string_view name, int layer) const {
  for (const SourceTensor& t : tensors) {
    if (t.layer == layer && t.name == name) return &t;
  }
  return nullptr;
}

namespace {

struct Expected {
  std::string name;
  int layer;
  int64_t rows, cols;
};

std::vector<Expected> ExpectedTensors(const ModelConfig& c) {
  std::vector<Expected> e;
  e.push_back({"tok_embd", -1, c.vocab, c.hidden});
  e.push_back({"output_norm", -1, 1, c.hidden});
  if (!c.tied_embeddings) e.push_back({"output", -1, c.vocab, c.hidden});
  for (int l = 0; l < c.n_layers; ++l) {
    e.push_back({"attn_norm", l, 1, c.hidden});
    e.push_back({"wq", l, c.q_dim(), c.hidden});
    e.push_back({"wk", l, c.kv_dim(), c.hidden});
    e.push_back({"wv", l, c.kv_dim(), c.hidden});
    e.push_back({"wo", l, c.hidden, c.q_dim()});
    if (c.qkv_bias) {
      e.push_back({"bq", l, 1, c.q_dim()});
      e.push_back({"bk", l, 1, c.kv_dim()});
      e.push_back({"bv", l, 1, c.kv_dim()});
    }
    if (c.qk_norm) {
      e.push_back({"q_norm", l, 1, c.head_dim});
      e.push_back({"k_norm", l, 1, c.head_dim});
    }
    if (c.sandwich_norm) {
      e.push_back({"post_attn_norm", l, 1, c.hidden});
      e.push_back({"post_ffn_norm", l, 1, c.hidden});
    }
    e.push_back({"ffn_norm", l, 1, c.hidden});
    e.push_back({"w_gate", l, c.ffn, c.hidden});
    e.push_back({"w_up", l, c.ffn, c.hidden});
    e.push_back({"w_down", l, c.hidden, c.ffn});
  }
  return e;
}

std::string Label(std::string_view name, int layer) {
  return layer < 0 ? std::string(name) : absl::StrCat("layer ", layer, " ", std::string(name));
}

}  // namespace

absl::Status CheckTensorSet(const ModelSource& src) {
  std::set<std::pair<int, std::string>> seen;
  for (const SourceTensor& t : src.tensors) {
    if (!seen.insert({t.layer, t.name}).second)
      return absl::InvalidArgumentError(
          absl::StrCat(src.path, ": tensor ", Label(t.name, t.layer), " appears twice"));
  }
  for (const Expected& e : ExpectedTensors(src.config)) {
    const SourceTensor* t = src.Find(e.name, e.layer);
    if (t == nullptr)
      return absl::InvalidArgumentError(
          absl::StrCat(src.path, ": missing tensor ", Label(e.name, e.layer)));
    if (t->rows != e.rows || t->cols != e.cols)
      return absl::InvalidArgumentError(
          absl::StrCat(src.path, ": tensor ", Label(e.name, e.layer), " has shape [", t->rows, ", ",
                       t->cols, "] but the config implies [", e.rows, ", ", e.cols, "]"));
    seen.erase({e.layer, e.name});
  }
  if (!seen.empty()) {
    const auto& [layer, name] = *seen.begin();
    return absl::InvalidArgumentError(
        absl::StrCat(src.path, ": unexpected tensor ", Label(name, layer), " (not used by ",
                     std::string(ArchName(src.config.arch)), " with this config)"));
  }
  return absl::OkStatus();
}

}  // namespace paged
