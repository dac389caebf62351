#include "tokenizer/hf_tokenizer.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/json_text.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "tokenizer/hf_regex.h"

namespace paged {
namespace {

using nlohmann::json;

std::string Quote(std::string_view s) {
  return absl::StrCat("'", absl::CEscape(std::string(s)), "'");
}

// Rust regex `\w$` / `^\w` on the text before / after an added token.
bool EndsWithWord(std::string_view s) {
  if (s.empty()) return false;
  size_t b = 0;
  return IsWordChar(PrevCodePoint(s, s.size(), &b));
}
bool StartsWithWord(std::string_view s) {
  if (s.empty()) return false;
  size_t pos = 0;
  return IsWordChar(NextCodePoint(s, &pos));
}
// Start of the whitespace run that ends `s` (`\s*$`).
size_t TrailingSpaceStart(std::string_view s) {
  size_t e = s.size();
  while (e > 0) {
    size_t b = e;
    if (!IsWhiteSpace(PrevCodePoint(s, e, &b))) break;
    e = b;
  }
  return e;
}
// Length of the whitespace run that starts `s` (`^\s*`).
size_t LeadingSpaceLength(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t next = pos;
    if (!IsWhiteSpace(NextCodePoint(s, &next))) break;
    pos = next;
  }
  return pos;
}

}  // namespace

// ---- Options ----------------------------------------------------------------------

std::string HfTokenizerOptions::ToJson() const {
  json j = json::object();
  if (!bos_token.empty()) j["bos_token"] = bos_token;
  if (!eos_token.empty()) j["eos_token"] = eos_token;
  if (add_bos_token.has_value()) j["add_bos_token"] = *add_bos_token;
  if (!eos_token_ids.empty()) j["eos_token_ids"] = eos_token_ids;
  return j.dump();
}

absl::StatusOr<HfTokenizerOptions> HfTokenizerOptions::FromJson(std::string_view text) {
  HfTokenizerOptions o;
  if (text.empty()) return o;
  ASSIGN_OR_RETURN(const json j, ParseJsonText(text, "tokenizer options"));
  auto bad = [](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer options: ", std::string(what)));
  };
  if (!j.is_object()) return bad("not an object");
  for (auto [key, field] :
       {std::pair{"bos_token", &o.bos_token}, std::pair{"eos_token", &o.eos_token}}) {
    if (auto it = j.find(key); it != j.end()) {
      if (!it->is_string()) return bad(absl::StrCat("'", key, "' is not a string"));
      *field = it->get<std::string>();
    }
  }
  if (auto it = j.find("add_bos_token"); it != j.end()) {
    if (!it->is_boolean()) return bad("'add_bos_token' is not a boolean");
    o.add_bos_token = it->get<bool>();
  }
  if (auto it = j.find("eos_token_ids"); it != j.end()) {
    if (!it->is_array()) return bad("'eos_token_ids' is not a list");
    for (const json& id : *it) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        return bad("'eos_token_ids' holds a bad id");
      o.eos_token_ids.push_back(int32_t(id.get<int64_t>()));
    }
  }
  return o;
}

// ---- Matcher ----------------------------------------------------------------------

HfTokenizer::Matcher::Matcher() : nodes_(1) {}

void HfTokenizer::Matcher::Add(std::string_view pattern, int32_t token) {
  if (pattern.empty()) return;
  int32_t n = 0;
  for (char ch : pattern) {
    const auto c = static_cast<unsigned char>(ch);
    auto& next = nodes_[size_t(n)].next;
    auto it = std::lower_bound(next.begin(), next.end(), std::pair<unsigned char, int32_t>{c, -1});
    if (it != next.end() && it->first == c) {
      n = it->second;
    } else {
      const int32_t child = int32_t(nodes_.size());
      next.insert(it, {c, child});
      nodes_.emplace_back();  // invalidates `next`: not used again
      n = child;
    }
  }
  // A pattern given twice: the first keeps it (HF's tries report the
  // first-added pattern for equal strings).
  if (nodes_[size_t(n)].token < 0) nodes_[size_t(n)].token = token;
}

std::pair<int32_t, size_t> HfTokenizer::Matcher::LongestAt(std::string_view s, size_t at) const {
  std::pair<int32_t, size_t> best{-1, 0};
  int32_t n = 0;
  for (size_t i = at; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const auto& next = nodes_[size_t(n)].next;
    auto it = std::lower_bound(next.begin(), next.end(), std::pair<unsigned char, int32_t>{c, -1});
    if (it == next.end() || it->first != c) break;
    n = it->second;
    if (nodes_[size_t(n)].token >= 0) best = {nodes_[size_t(n)].token, i + 1 - at};
  }
  return best;
}

// ---- Loading ----------------------------------------------------------------------

absl::Status HfTokenizer::LoadAddedTokens(const json& list) {
  if (list.is_null()) return absl::OkStatus();
  if (!list.is_array()) return absl::InvalidArgumentError("'added_tokens' is not a list");
  for (const json& t : list) {
    if (!t.is_object()) return absl::InvalidArgumentError("an added token is not an object");
    AddedToken a;
    ASSIGN_OR_RETURN(a.content, JsonString(t, "content", "added token"));
    const std::string what = absl::StrCat("added token ", Quote(a.content));
    auto id = t.find("id");
    if (id == t.end() || !id->is_number_integer() || id->get<int64_t>() < 0 ||
        id->get<int64_t>() >= (int64_t{1} << 24))
      return absl::InvalidArgumentError(absl::StrCat(what, ": bad or missing 'id'"));
    if (!IsValidUtf8(a.content))
      return absl::InvalidArgumentError(absl::StrCat(what, ": not valid UTF-8"));
    a.id = int32_t(id->get<int64_t>());
    ASSIGN_OR_RETURN(a.special, JsonBool(t, "special", false, what));
    ASSIGN_OR_RETURN(a.single_word, JsonBool(t, "single_word", false, what));
    ASSIGN_OR_RETURN(a.lstrip, JsonBool(t, "lstrip", false, what));
    ASSIGN_OR_RETURN(a.rstrip, JsonBool(t, "rstrip", false, what));
    ASSIGN_OR_RETURN(a.normalized, JsonBool(t, "normalized", !a.special, what));
    if (a.content.empty()) continue;  // HF ignores these
    if (size_t(a.id) >= added_index_.size()) added_index_.resize(size_t(a.id) + 1, -1);
    if (added_index_[size_t(a.id)] >= 0)
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": id ", a.id, " is also ",
                       Quote(added_[size_t(added_index_[size_t(a.id)])].content)));
    added_index_[size_t(a.id)] = int32_t(added_.size());
    added_.push_back(std::move(a));
  }
  // HF's tries hold the special tokens first, then the others.
  for (bool special : {true, false}) {
    for (size_t i = 0; i < added_.size(); ++i) {
      const AddedToken& a = added_[i];
      if (a.special != special) continue;
      if (a.normalized) {
        normalized_matcher_.Add(normalizer_.Apply(a.content), int32_t(i));
      } else {
        raw_matcher_.Add(a.content, int32_t(i));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status HfTokenizer::LoadPostProcessor(const json& j) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = j.is_object() && j.contains("type") && j["type"].is_string()
                               ? j["type"].get<std::string>()
                               : "";
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end() || !it->is_array())
      return absl::InvalidArgumentError("post_processor Sequence: 'processors' is not a list");
    for (const json& p : *it) RETURN_IF_ERROR(LoadPostProcessor(p));
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing")
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported post_processor '", absl::CEscape(type),
                     "' (supported: TemplateProcessing, ByteLevel, Sequence)"));
  auto bad = [](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("post_processor TemplateProcessing: ", std::string(why)));
  };
  auto single = j.find("single");
  if (single == j.end() || !single->is_array()) return bad("'single' is not a list");
  auto specials = j.find("special_tokens");
  bool seen_sequence = false;
  std::vector<int32_t> prefix, suffix;
  for (const json& item : *single) {
    if (item.is_object() && item.contains("Sequence")) {
      if (seen_sequence) return bad("'single' holds two sequences");
      seen_sequence = true;
      continue;
    }
    if (!item.is_object() || !item.contains("SpecialToken") || !item["SpecialToken"].is_object())
      return bad(absl::StrCat("unknown template item ", item.dump()));
    ASSIGN_OR_RETURN(const std::string name,
                     JsonString(item["SpecialToken"], "id", "template item"));
    if (specials == j.end() || !specials->is_object() || !specials->contains(name))
      return bad(absl::StrCat("special token ", Quote(name), " is not in 'special_tokens'"));
    const json& entry = (*specials)[name];
    auto ids = entry.find("ids");
    if (ids == entry.end() || !ids->is_array())
      return bad(absl::StrCat("special token ", Quote(name), " has no 'ids'"));
    for (const json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab_size_)
        return bad(absl::StrCat("special token ", Quote(name), " has id ", id.dump(),
                                " outside the vocabulary of ", vocab_size_));
      (seen_sequence ? suffix : prefix).push_back(int32_t(id.get<int64_t>()));
    }
  }
  if (!seen_sequence) return bad("'single' has no $A sequence");
  prefix_.insert(prefix_.end(), prefix.begin(), prefix.end());
  suffix_.insert(suffix_.end(), suffix.begin(), suffix.end());
  return absl::OkStatus();
}

void HfTokenizer::ApplyOptions(const HfTokenizerOptions& o) {
  // BOS: tokenizer_config's bos_token, else the template's first token.
  bos_id_ = o.bos_token.empty() ? -1 : PieceToId(o.bos_token);
  if (bos_id_ < 0 && !prefix_.empty()) bos_id_ = prefix_.front();
  if (o.add_bos_token.has_value() && bos_id_ >= 0) {
    const bool has = !prefix_.empty() && prefix_.front() == bos_id_;
    if (*o.add_bos_token && !has) prefix_.insert(prefix_.begin(), bos_id_);
    if (!*o.add_bos_token && has) prefix_.erase(prefix_.begin());
  }
  // EOS: tokenizer_config's eos_token, then generation_config's ids.
  if (!o.eos_token.empty()) {
    if (const int32_t id = PieceToId(o.eos_token); id >= 0) eos_ids_.push_back(id);
  }
  for (int32_t id : o.eos_token_ids) {
    if (id < vocab_size_ && std::find(eos_ids_.begin(), eos_ids_.end(), id) == eos_ids_.end())
      eos_ids_.push_back(id);
  }
  eos_id_ = eos_ids_.empty() ? -1 : eos_ids_.front();
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Create(std::string_view tokenizer_json,
                                                                 const HfTokenizerOptions& options,
                                                                 std::string_view origin) {
  auto fail = [&](const absl::Status& s) { return Annotate(s, origin); };
  absl::StatusOr<json> parsed = ParseJsonText(tokenizer_json, "the file");
  if (!parsed.ok()) return fail(parsed.status());
  const json& j = *parsed;
  if (!j.is_object()) return fail(absl::InvalidArgumentError("not a JSON object"));
  auto get = [&](const char* key) -> const json& {
    static const json null;
    auto it = j.find(key);
    return it == j.end() ? null : *it;
  };
  std::unique_ptr<HfTokenizer> t(new HfTokenizer());
  if (get("model").is_null()) return fail(absl::InvalidArgumentError("no 'model'"));
  absl::StatusOr<HfBpe> model = HfBpe::FromJson(get("model"));
  if (!model.ok()) return fail(model.status());
  t->model_ = std::move(*model);
  absl::StatusOr<HfNormalizer> normalizer = HfNormalizer::FromJson(get("normalizer"));
  if (!normalizer.ok()) return fail(normalizer.status());
  t->normalizer_ = std::move(*normalizer);
  absl::StatusOr<HfPreTokenizer> pre = HfPreTokenizer::FromJson(get("pre_tokenizer"));
  if (!pre.ok()) return fail(pre.status());
  t->pre_tokenizer_ = std::move(*pre);
  absl::StatusOr<HfDecoder> decoder = HfDecoder::FromJson(get("decoder"));
  if (!decoder.ok()) return fail(decoder.status());
  t->decoder_ = std::move(*decoder);
  if (absl::Status s = t->LoadAddedTokens(get("added_tokens")); !s.ok()) return fail(s);
  t->vocab_size_ = std::max<int32_t>(t->model_.id_end(), int32_t(t->added_index_.size()));
  if (t->vocab_size_ == 0) return fail(absl::InvalidArgumentError("empty vocabulary"));
  if (absl::Status s = t->LoadPostProcessor(get("post_processor")); !s.ok()) return fail(s);
  t->ApplyOptions(options);
  return t;
}

// ---- Encoding ---------------------------------------------------------------------

const HfTokenizer::AddedToken* HfTokenizer::Added(int32_t id) const {
  if (id < 0 || size_t(id) >= added_index_.size() || added_index_[size_t(id)] < 0) return nullptr;
  return &added_[size_t(added_index_[size_t(id)])];
}

void HfTokenizer::SplitAdded(const Matcher& m, std::string_view s, bool at_start,
                             bool parse_special, std::vector<Segment>* out) const {
  if (s.empty()) return;
  if (m.empty()) {
    out->push_back({std::string(s), -1, at_start});
    return;
  }
  size_t start_offset = 0;  // end of the last token cut out
  auto text = [&](size_t b, size_t e) {
    if (b < e) out->push_back({std::string(s.substr(b, e - b)), -1, at_start && b == 0});
  };
  for (size_t pos = 0; pos < s.size();) {
    const auto [index, len] = m.LongestAt(s, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + len;
    pos = stop;  // matches do not overlap, whether kept or not
    const AddedToken& a = added_[size_t(index)];
    if (a.special && !parse_special) continue;
    if (a.single_word) {
      const bool start_space = start == 0 || !EndsWithWord(s.substr(0, start));
      const bool stop_space = stop == s.size() || !StartsWithWord(s.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (a.lstrip) start = std::max(TrailingSpaceStart(s.substr(0, start)), start_offset);
    if (a.rstrip) stop += LeadingSpaceLength(s.substr(stop));
    text(start_offset, start);
    out->push_back({"", a.id, false});
    start_offset = std::max(start_offset, stop);
  }
  text(start_offset, s.size());
}

std::vector<int32_t> HfTokenizer::Encode(std::string_view text, bool add_bos,
                                         bool parse_special) const {
  std::vector<int32_t> ids;
  if (add_bos) ids = prefix_;
  const std::string valid = ToValidUtf8(text);
  std::vector<Segment> raw, pieces;
  SplitAdded(raw_matcher_, valid, /*at_start=*/true, parse_special, &raw);
  std::vector<PreToken> words;
  for (Segment& r : raw) {
    if (r.id >= 0) {
      ids.push_back(r.id);
      continue;
    }
    pieces.clear();
    SplitAdded(normalized_matcher_, normalizer_.Apply(r.text), r.at_start, parse_special, &pieces);
    for (Segment& p : pieces) {
      if (p.id >= 0) {
        ids.push_back(p.id);
        continue;
      }
      words.clear();
      pre_tokenizer_.Apply(PreToken{std::move(p.text), p.at_start}, &words);
      for (const PreToken& w : words) model_.Tokenize(w.text, &ids);
    }
  }
  if (add_bos) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

// ---- Decoding ---------------------------------------------------------------------

std::string HfTokenizer::IdToPiece(int32_t id) const {
  if (const AddedToken* a = Added(id)) return a->content;
  const std::string* t = model_.IdToToken(id);
  return t == nullptr ? "" : *t;
}

int32_t HfTokenizer::PieceToId(std::string_view piece) const {
  for (const AddedToken& a : added_) {
    if (a.content == piece) return a.id;
  }
  return model_.TokenToId(piece);
}

bool HfTokenizer::IsEos(int32_t token) const {
  return token >= 0 && std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end();
}

bool HfTokenizer::IsControl(int32_t token) const {
  const AddedToken* a = Added(token);
  return a != nullptr && a->special;
}

std::string HfTokenizer::Decode(std::span<const int32_t> ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const AddedToken* a = Added(id)) {
      if (!a->special) tokens.push_back(a->content);
    } else if (const std::string* t = model_.IdToToken(id)) {
      tokens.push_back(*t);
    }
  }
  return decoder_.Decode(std::move(tokens));
}

std::string HfTokenizer::DecodePiece(int32_t prev_token, int32_t token) const {
  const std::string* text = nullptr;
  if (const AddedToken* a = Added(token)) {
    if (a->special) return "";
    text = &a->content;
  } else {
    text = model_.IdToToken(token);
  }
  if (text == nullptr) return "";
  const bool first = prev_token < 0 || (prev_token == bos_id_ && bos_id_ >= 0);
  return decoder_.DecodeOne(*text, first);
}

}  // namespace paged
