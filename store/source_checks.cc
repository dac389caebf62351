#include <algorithm>
#include <map>
#include <set>
#include <tuple>

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

const SourceTensor* ModelSource::Find(std::string_view name, int layer, int expert) const {
  for (const SourceTensor& t : tensors) {
    if (t.layer == layer && t.expert == expert && t.name == name) return &t;
  }
  return nullptr;
}

namespace {

struct Expected {
  std::string name;
  int layer;
  int64_t rows, cols;
  int expert = -1;
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
    if (c.o_bias) e.push_back({"bo", l, 1, c.hidden});
    if (c.attn_sinks) e.push_back({"attn_sinks", l, 1, c.n_heads});
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
    if (!c.IsMoeLayer(l)) {
      e.push_back({"w_gate", l, c.ffn, c.hidden});
      e.push_back({"w_up", l, c.ffn, c.hidden});
      e.push_back({"w_down", l, c.hidden, c.ffn});
      continue;
    }
    e.push_back({"router", l, c.n_experts, c.hidden});
    if (c.router_bias) e.push_back({"router_b", l, 1, c.n_experts});
    if (c.expert_bias) {
      e.push_back({"exp_gate_b", l, c.n_experts, c.expert_ffn});
      e.push_back({"exp_up_b", l, c.n_experts, c.expert_ffn});
      e.push_back({"exp_down_b", l, c.n_experts, c.hidden});
    }
    if (c.shared_expert_ffn > 0) {
      e.push_back({"shexp_gate_inp", l, 1, c.hidden});
      e.push_back({"shexp_gate", l, c.shared_expert_ffn, c.hidden});
      e.push_back({"shexp_up", l, c.shared_expert_ffn, c.hidden});
      e.push_back({"shexp_down", l, c.hidden, c.shared_expert_ffn});
    }
    for (int x = 0; x < c.n_experts; ++x) {
      e.push_back({"exp_gate", l, c.expert_ffn, c.hidden, x});
      e.push_back({"exp_up", l, c.expert_ffn, c.hidden, x});
      e.push_back({"exp_down", l, c.hidden, c.expert_ffn, x});
    }
  }
  return e;
}

std::string Label(std::string_view name, int layer, int expert = -1) {
  if (layer < 0) return std::string(name);
  if (expert < 0) return absl::StrCat("layer ", layer, " ", std::string(name));
  return absl::StrCat("layer ", layer, " expert ", expert, " ", std::string(name));
}

}  // namespace

absl::Status CheckTensorSet(const ModelSource& src) {
  // (layer, expert, name) -> tensor: a sparse model has thousands of tensors.
  std::map<std::tuple<int, int, std::string>, const SourceTensor*> seen;
  for (const SourceTensor& t : src.tensors) {
    if (!seen.emplace(std::tuple{t.layer, t.expert, t.name}, &t).second)
      return absl::InvalidArgumentError(
          absl::StrCat(src.path, ": tensor ", Label(t.name, t.layer, t.expert), " appears twice"));
  }
  for (const Expected& e : ExpectedTensors(src.config)) {
    auto it = seen.find(std::tuple{e.layer, e.expert, e.name});
    if (it == seen.end())
      return absl::InvalidArgumentError(
          absl::StrCat(src.path, ": missing tensor ", Label(e.name, e.layer, e.expert)));
    const SourceTensor* t = it->second;
    if (t->rows != e.rows || t->cols != e.cols)
      return absl::InvalidArgumentError(absl::StrCat(
          src.path, ": tensor ", Label(e.name, e.layer, e.expert), " has shape [", t->rows, ", ",
          t->cols, "] but the config implies [", e.rows, ", ", e.cols, "]"));
    seen.erase(it);
  }
  if (!seen.empty()) {
    const auto& [layer, expert, name] = seen.begin()->first;
    return absl::InvalidArgumentError(
        absl::StrCat(src.path, ": unexpected tensor ", Label(name, layer, expert), " (not used by ",
                     std::string(ArchName(src.config.arch)), " with this config)"));
  }
  return absl::OkStatus();
}

}  // namespace paged
