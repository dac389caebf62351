#include "client/pagectl/inspect.h"

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/segment.h"
#include "common/size_flag.h"
#include "common/status.h"
#include "store/segment_builder.h"

namespace paged {

nlohmann::json DescribeSegment(const SegmentHeader& h, std::string_view state) {
  const ModelConfig& c = h.model;
  nlohmann::json d;
  d["state"] = std::string(state);
  d["architecture"] = std::string(ArchName(c.arch));
  d["n_layers"] = c.n_layers;
  d["hidden_size"] = c.hidden;
  d["intermediate_size"] = c.ffn;
  d["n_heads"] = c.n_heads;
  d["n_kv_heads"] = c.n_kv_heads;
  d["head_dim"] = c.head_dim;
  d["vocab_size"] = c.vocab;
  d["max_context"] = c.max_context;
  d["rope_theta"] = c.rope_theta;
  d["rope_style"] = "halves";
  d["rope_scaling"] = c.rope_scaling == RopeScaling::kLlama3 ? "llama3" : "none";
  d["norm_eps"] = c.norm_eps;
  d["tied_embeddings"] = bool(c.tied_embeddings);
  d["qkv_bias"] = bool(c.qkv_bias);
  d["bos_id"] = c.bos_id;
  d["eos_ids"] = std::vector<int>(c.eos_ids, c.eos_ids + std::clamp(c.n_eos, 0, kMaxEosIds));
  d["weight_format"] = std::string(WeightFormatName(static_cast<WeightFormat>(h.weight_format)));
  d["dense_dtype"] = std::string(DTypeName(static_cast<DType>(h.dense_dtype)));
  d["layer_bytes"] = h.layer_block_bytes;
  d["layer_used_bytes"] = h.layer_used_bytes;
  d["weight_bytes"] = WeightBytes(h);
  d["total_bytes"] = h.total_bytes;
  d["generation"] = h.generation;
  d["model_path"] = std::string(h.model_path, strnlen(h.model_path, sizeof(h.model_path)));
  d["source_format"] =
      std::string(h.source_format, strnlen(h.source_format, sizeof(h.source_format)));
  d["kv"] = {{"dtype", std::string(DTypeName(static_cast<DType>(h.kv_dtype)))},
             {"block_tokens", h.block_tokens},
             {"blocks_per_layer", h.kv_n_blocks},
             {"block_bytes", h.kv_block_bytes},
             {"bytes", h.kv_bytes},
             {"tokens", h.kv_n_blocks * h.block_tokens}};
  auto tensor = [](const TensorEntry& e) {
    nlohmann::json t = {{"name", std::string(e.Name())},
                        {"dtype", std::string(DTypeName(e.Type()))},
                        {"bits_per_weight", BitsPerWeight(e.Type(), int(e.group))},
                        {"shape", {e.rows, e.cols}},
                        {"offset", e.offset},
                        {"bytes", e.bytes}};
    if (e.scale_bytes) {
      t["group"] = e.group;
      t["scale_bytes"] = e.scale_bytes;
    }
    return t;
  };
  d["global_tensors"] = nlohmann::json::array();
  for (uint32_t i = 0; i < std::min<uint32_t>(h.n_global_tensors, kMaxGlobalTensors); ++i)
    d["global_tensors"].push_back(tensor(h.global_tensors[i]));
  // Every layer's own table (the header is not validated when LOADING: the
  // counts are clamped); "layer_tensors" is layer 0's.
  d["layers"] = nlohmann::json::array();
  const int n_layers = std::clamp(c.n_layers, 0, kMaxSegmentLayers);
  for (int l = 0; l < n_layers; ++l) {
    const LayerTable& t = h.Layer(l);
    nlohmann::json layer = {{"layer", l}, {"used_bytes", t.used_bytes}};
    layer["tensors"] = nlohmann::json::array();
    for (uint32_t i = 0; i < std::min<uint32_t>(t.n_tensors, kMaxLayerTensors); ++i)
      layer["tensors"].push_back(tensor(t.tensors[i]));
    d["layers"].push_back(std::move(layer));
  }
  d["layer_tensors"] = n_layers > 0 ? d["layers"][0]["tensors"] : nlohmann::json::array();
  return d;
}

namespace {

// "0-3, 5, 7-8" for sorted layer numbers.
std::string LayerRanges(const std::vector<int>& layers) {
  std::string s;
  for (size_t i = 0; i < layers.size();) {
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1) ++j;
    absl::StrAppend(&s, s.empty() ? "" : ", ", layers[i]);
    if (j > i) absl::StrAppend(&s, "-", layers[j]);
    i = j + 1;
  }
  return s;
}

std::string TensorRow(const nlohmann::json& t) {
  return absl::StrFormat("  %-14s %-6s %5.2f bpw [%6d, %6d] %12s at +%d\n",
                         t["name"].get<std::string>(), t["dtype"].get<std::string>(),
                         t["bits_per_weight"].get<double>(), t["shape"][0].get<int64_t>(),
                         t["shape"][1].get<int64_t>(), FormatBytes(t["bytes"].get<uint64_t>()),
                         t["offset"].get<uint64_t>());
}

// The layers in groups of the same tensor types: the largest group's table
// in full, then what each other group has differently (a Q4_K_M file keeps
// some layers' wv and w_down in q6_k).
std::string FormatLayerTables(const nlohmann::json& layers) {
  std::vector<std::string> keys;
  std::vector<std::vector<int>> members;
  for (const auto& layer : layers) {
    std::string key;
    for (const auto& t : layer["tensors"])
      absl::StrAppend(&key, t["name"].get<std::string>(), ":", t["dtype"].get<std::string>(), " ");
    size_t g = 0;
    while (g < keys.size() && keys[g] != key) ++g;
    if (g == keys.size()) {
      keys.push_back(key);
      members.emplace_back();
    }
    members[g].push_back(layer["layer"].get<int>());
  }
  if (keys.empty()) return "";
  size_t main = 0;
  for (size_t g = 1; g < keys.size(); ++g) {
    if (members[g].size() > members[main].size()) main = g;
  }
  const nlohmann::json& base = layers[size_t(members[main][0])]["tensors"];
  std::string out =
      keys.size() == 1
          ? std::string("\nlayer tensors (the same types in every layer):\n")
          : absl::StrCat("\nlayer tensors (", members[main].size() == 1 ? "layer " : "layers ",
                         LayerRanges(members[main]), "; ", members[main].size(), " of ",
                         layers.size(), "):\n");
  for (const auto& t : base) absl::StrAppend(&out, TensorRow(t));
  for (size_t g = 0; g < keys.size(); ++g) {
    if (g == main) continue;
    const nlohmann::json& own = layers[size_t(members[g][0])]["tensors"];
    std::string diff;
    for (size_t i = 0; i < own.size(); ++i) {
      if (i < base.size() && base[i]["dtype"] == own[i]["dtype"]) continue;
      absl::StrAppend(&diff, diff.empty() ? "" : ", ", own[i]["name"].get<std::string>(), " ",
                      own[i]["dtype"].get<std::string>(), " (",
                      absl::StrFormat("%.2f", own[i]["bits_per_weight"].get<double>()), " bpw)");
    }
    absl::StrAppend(&out, members[g].size() == 1 ? "  layer " : "  layers ",
                    LayerRanges(members[g]), ": ", diff, "\n");
  }
  return out;
}

}  // namespace

std::string FormatSegmentTable(const nlohmann::json& d) {
  std::string out;
  auto row = [&](std::string_view k, const std::string& v) {
    absl::StrAppend(&out, absl::StrFormat("%-16s %s\n", k, v));
  };
  auto num = [&](const char* key) { return d[key].dump(); };
  row("state", d["state"].get<std::string>());
  row("model", absl::StrCat(d["model_path"].get<std::string>(), " (",
                            d["source_format"].get<std::string>(), ")"));
  row("architecture", absl::StrCat(d["architecture"].get<std::string>(),
                                   d["tied_embeddings"].get<bool>() ? ", tied embeddings" : "",
                                   d["qkv_bias"].get<bool>() ? ", qkv bias" : ""));
  row("layers", num("n_layers"));
  row("hidden", absl::StrCat(num("hidden_size"), " (ffn ", num("intermediate_size"), ")"));
  row("heads", absl::StrCat(num("n_heads"), " (kv ", num("n_kv_heads"), ", head_dim ",
                            num("head_dim"), ")"));
  row("vocab", num("vocab_size"));
  row("context", num("max_context"));
  row("rope", absl::StrCat("theta ", num("rope_theta"), ", ", d["rope_style"].get<std::string>(),
                           ", scaling ", d["rope_scaling"].get<std::string>()));
  row("weight format", absl::StrCat(d["weight_format"].get<std::string>(), " (embeddings ",
                                    d["dense_dtype"].get<std::string>(), ")"));
  if (d["weight_format"] == "native") {  // as stored: the types and their counts
    std::map<std::string, int> types;
    for (const auto& layer : d["layers"]) {
      for (const auto& t : layer["tensors"]) ++types[t["dtype"].get<std::string>()];
    }
    std::string s;
    for (const auto& [type, n] : types) absl::StrAppend(&s, s.empty() ? "" : ", ", n, " ", type);
    row("layer types", s);
  }
  row("layer block", absl::StrCat(FormatBytes(d["layer_bytes"].get<uint64_t>()), " (",
                                  FormatBytes(d["layer_used_bytes"].get<uint64_t>()), " used)"));
  row("weights", FormatBytes(d["weight_bytes"].get<uint64_t>()));
  const auto& kv = d["kv"];
  row("kv pool",
      absl::StrCat(FormatBytes(kv["bytes"].get<uint64_t>()), ", ", kv["blocks_per_layer"].dump(),
                   " blocks/layer of ", kv["block_tokens"].dump(), " tokens (", kv["tokens"].dump(),
                   " tokens), ", kv["dtype"].get<std::string>()));
  row("segment", absl::StrCat(FormatBytes(d["total_bytes"].get<uint64_t>()), ", generation ",
                              num("generation")));
  absl::StrAppend(&out, "\nglobal tensors:\n");
  for (const auto& t : d["global_tensors"]) absl::StrAppend(&out, TensorRow(t));
  absl::StrAppend(&out, FormatLayerTables(d["layers"]));
  return out;
}

absl::StatusOr<nlohmann::json> InspectSegment(const std::string& segment) {
  uint64_t size = 0;
  ASSIGN_OR_RETURN(std::unique_ptr<SegmentHeader> peeked, PeekSegmentHeader(segment, &size));
  const SegmentHeader& h = *peeked;
  if (const uint32_t st = h.state; st == uint32_t(SegmentState::kReady)) {
    RETURN_IF_ERROR(Annotate(ValidateHeader(h, size), absl::StrCat("segment ", segment)));
  } else if (std::memcmp(h.magic, kSegmentMagic, sizeof(kSegmentMagic)) != 0) {
    return absl::DataLossError(absl::StrCat("segment ", segment, " is not a paged segment"));
  }
  return DescribeSegment(h, SegmentStateName(h.state));
}

absl::StatusOr<nlohmann::json> InspectModel(const std::string& path,
                                            const std::string& weight_format) {
  ASSIGN_OR_RETURN(auto src, OpenModel(path));
  LayoutOptions opts;
  opts.weight_format = weight_format;
  ASSIGN_OR_RETURN(std::unique_ptr<SegmentHeader> h, PlanSegment(*src, opts));
  return DescribeSegment(*h, "NOT_LOADED");
}

}  // namespace paged
