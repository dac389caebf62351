#include "tokenizer/hf_pretokenize.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "tokenizer/byte_level.h"

namespace paged {
namespace {

using nlohmann::json;

// GPT-2's pre-tokenizer pattern (ByteLevel with use_regex).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::Status Unsupported(std::string_view stage, const json& j) {
  std::string type = "(no type)";
  if (j.is_object() && j.contains("type") && j["type"].is_string())
    type = j["type"].get<std::string>();
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported ", std::string(stage), " '", absl::CEscape(type), "'"));
}

std::string TypeOf(const json& j) {
  if (!j.is_object()) return "";
  auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

absl::StatusOr<SplitBehavior> ParseBehavior(const json& j, std::string_view what) {
  ASSIGN_OR_RETURN(const std::string b, JsonString(j, "behavior", what));
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(what), ": unknown split behavior '", absl::CEscape(b), "'"));
}

const HfRegex& Gpt2Regex() {
  static const HfRegex* r = new HfRegex(*HfRegex::Compile(kGpt2Pattern));
  return *r;
}

const HfRegex& DigitRegex() {
  static const HfRegex* r = new HfRegex(*HfRegex::Compile(R"(\p{N})"));
  return *r;
}

std::string StripWhiteSpace(std::string_view s, bool left, bool right) {
  size_t b = 0, e = s.size();
  while (left && b < e) {
    size_t next = b;
    if (!IsWhiteSpace(NextCodePoint(s, &next))) break;
    b = next;
  }
  while (right && e > b) {
    size_t prev = e;
    if (!IsWhiteSpace(PrevCodePoint(s, e, &prev))) break;
    e = prev;
  }
  return std::string(s.substr(b, e - b));
}

std::string ReplaceLiteral(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  size_t prev = 0;
  for (size_t at = s.find(from); at != s.npos && !from.empty(); at = s.find(from, prev)) {
    out.append(s.substr(prev, at - prev));
    out.append(to);
    prev = at + from.size();
  }
  out.append(s.substr(prev));
  return out;
}

}  // namespace

absl::StatusOr<std::string> JsonString(const json& j, const char* key, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string())
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), ": '", key, "' is missing or not a string"));
  return it->get<std::string>();
}

absl::StatusOr<bool> JsonBool(const json& j, const char* key, bool def, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean())
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), ": '", key, "' is not a boolean"));
  return it->get<bool>();
}

absl::StatusOr<HfRegex> JsonPattern(const json& j, std::string_view what) {
  if (j.is_object() && j.size() == 1) {
    if (auto it = j.find("Regex"); it != j.end() && it->is_string()) {
      absl::StatusOr<HfRegex> r = HfRegex::Compile(it->get<std::string>());
      if (!r.ok()) return Annotate(r.status(), what);
      return r;
    }
    if (auto it = j.find("String"); it != j.end() && it->is_string())
      return HfRegex::Compile(it->get<std::string>(), /*literal=*/true);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(what), ": pattern is not {\"String\": ...} or {\"Regex\": ...}"));
}

std::vector<std::string_view> SplitAtMatches(std::string_view text,
                                             const std::vector<std::pair<size_t, size_t>>& spans,
                                             bool invert, SplitBehavior behavior,
                                             std::vector<size_t>* offsets) {
  // The text cut at the spans: {begin, end, is_match}, covering all of it.
  struct Cut {
    size_t b, e;
    bool match;
  };
  std::vector<Cut> cuts;
  cuts.reserve(2 * spans.size() + 1);
  size_t prev = 0;
  for (const auto& [b, e] : spans) {
    if (prev != b) cuts.push_back({prev, b, invert});
    cuts.push_back({b, e, !invert});
    prev = e;
  }
  if (prev != text.size()) cuts.push_back({prev, text.size(), invert});

  // Pieces {begin, end, removed}, as HF's NormalizedString::split folds them.
  struct Part {
    size_t b, e;
    bool removed;
  };
  std::vector<Part> parts;
  parts.reserve(cuts.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Cut& c : cuts) parts.push_back({c.b, c.e, false});
      break;
    case SplitBehavior::kRemoved:
      for (const Cut& c : cuts) parts.push_back({c.b, c.e, c.match});
      break;
    case SplitBehavior::kContiguous:
      for (const Cut& c : cuts) {
        if (c.match == previous_match && !parts.empty()) {
          parts.back().e = c.e;
        } else {
          parts.push_back({c.b, c.e, false});
        }
        previous_match = c.match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Cut& c : cuts) {
        if (c.match && !previous_match && !parts.empty()) {
          parts.back().e = c.e;
        } else {
          parts.push_back({c.b, c.e, false});
        }
        previous_match = c.match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (size_t i = cuts.size(); i-- > 0;) {
        const Cut& c = cuts[i];
        if (c.match && !previous_match && !parts.empty()) {
          parts.back().b = c.b;
        } else {
          parts.push_back({c.b, c.e, false});
        }
        previous_match = c.match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
  }
  std::vector<std::string_view> out;
  out.reserve(parts.size());
  for (const Part& p : parts) {
    if (p.removed || p.b == p.e) continue;
    out.push_back(text.substr(p.b, p.e - p.b));
    if (offsets != nullptr) offsets->push_back(p.b);
  }
  return out;
}

// ---- Normalizer ---------------------------------------------------------------

absl::Status HfNormalizer::Add(const json& j, std::vector<Step>* steps) {
  const std::string type = TypeOf(j);
  const std::string what = absl::StrCat("normalizer ", type);
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array())
      return absl::InvalidArgumentError("normalizer Sequence: 'normalizers' is not a list");
    for (const json& n : *it) RETURN_IF_ERROR(Add(n, steps));
  } else if (type == "NFC") {
    steps->push_back(Unicode{UnicodeForm::kNFC});
  } else if (type == "NFD") {
    steps->push_back(Unicode{UnicodeForm::kNFD});
  } else if (type == "NFKC") {
    steps->push_back(Unicode{UnicodeForm::kNFKC});
  } else if (type == "NFKD") {
    steps->push_back(Unicode{UnicodeForm::kNFKD});
  } else if (type == "Prepend") {
    ASSIGN_OR_RETURN(std::string prefix, JsonString(j, "prepend", what));
    steps->push_back(Prepend{std::move(prefix)});
  } else if (type == "Replace") {
    auto p = j.find("pattern");
    if (p == j.end()) return absl::InvalidArgumentError("normalizer Replace: no 'pattern'");
    ASSIGN_OR_RETURN(HfRegex pattern, JsonPattern(*p, what));
    ASSIGN_OR_RETURN(std::string content, JsonString(j, "content", what));
    steps->push_back(Replace{std::move(pattern), std::move(content)});
  } else if (type == "Strip") {
    ASSIGN_OR_RETURN(const bool left, JsonBool(j, "strip_left", true, what));
    ASSIGN_OR_RETURN(const bool right, JsonBool(j, "strip_right", true, what));
    steps->push_back(Strip{left, right});
  } else {
    return Unsupported("normalizer", j);
  }
  return absl::OkStatus();
}

absl::StatusOr<HfNormalizer> HfNormalizer::FromJson(const json& j) {
  HfNormalizer n;
  if (!j.is_null()) RETURN_IF_ERROR(Add(j, &n.steps_));
  return n;
}

std::string HfNormalizer::Apply(std::string_view text) const {
  std::string s(text);
  for (const Step& step : steps_) {
    if (const auto* u = std::get_if<Unicode>(&step)) {
      s = NormalizeUnicode(s, u->form);
    } else if (const auto* p = std::get_if<Prepend>(&step)) {
      if (!s.empty()) s.insert(0, p->prefix);
    } else if (const auto* r = std::get_if<Replace>(&step)) {
      s = r->pattern.ReplaceAll(s, r->content);
    } else if (const auto* st = std::get_if<Strip>(&step)) {
      s = StripWhiteSpace(s, st->left, st->right);
    }
  }
  return s;
}

// ---- Pre-tokenizer --------------------------------------------------------------

absl::Status HfPreTokenizer::Add(const json& j, std::vector<Step>* steps) {
  const std::string type = TypeOf(j);
  const std::string what = absl::StrCat("pre_tokenizer ", type);
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array())
      return absl::InvalidArgumentError("pre_tokenizer Sequence: 'pretokenizers' is not a list");
    for (const json& p : *it) RETURN_IF_ERROR(Add(p, steps));
  } else if (type == "Split") {
    auto p = j.find("pattern");
    if (p == j.end()) return absl::InvalidArgumentError("pre_tokenizer Split: no 'pattern'");
    ASSIGN_OR_RETURN(HfRegex pattern, JsonPattern(*p, what));
    ASSIGN_OR_RETURN(const SplitBehavior behavior, ParseBehavior(j, what));
    ASSIGN_OR_RETURN(const bool invert, JsonBool(j, "invert", false, what));
    steps->push_back(Split{std::move(pattern), behavior, invert});
  } else if (type == "ByteLevel") {
    ASSIGN_OR_RETURN(const bool prefix, JsonBool(j, "add_prefix_space", true, what));
    ASSIGN_OR_RETURN(const bool use_regex, JsonBool(j, "use_regex", true, what));
    steps->push_back(ByteLevel{prefix, use_regex});
  } else if (type == "Metaspace") {
    Metaspace m;
    ASSIGN_OR_RETURN(m.replacement, JsonString(j, "replacement", what));
    size_t pos = 0;
    if (m.replacement.empty() || (NextCodePoint(m.replacement, &pos), pos != m.replacement.size()))
      return absl::InvalidArgumentError(
          "pre_tokenizer Metaspace: 'replacement' is not one character");
    ASSIGN_OR_RETURN(m.split, JsonBool(j, "split", true, what));
    if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
      const std::string scheme = it->is_string() ? it->get<std::string>() : "";
      if (scheme == "always") {
        m.prepend = Prepend::kAlways;
      } else if (scheme == "first") {
        m.prepend = Prepend::kFirst;
      } else if (scheme == "never") {
        m.prepend = Prepend::kNever;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("pre_tokenizer Metaspace: unknown prepend_scheme ", it->dump()));
      }
    } else {
      ASSIGN_OR_RETURN(const bool prefix, JsonBool(j, "add_prefix_space", true, what));
      m.prepend = prefix ? Prepend::kAlways : Prepend::kNever;
    }
    steps->push_back(std::move(m));
  } else if (type == "Digits") {
    ASSIGN_OR_RETURN(const bool individual, JsonBool(j, "individual_digits", false, what));
    steps->push_back(Digits{individual});
  } else {
    return Unsupported("pre_tokenizer", j);
  }
  return absl::OkStatus();
}

absl::StatusOr<HfPreTokenizer> HfPreTokenizer::FromJson(const json& j) {
  HfPreTokenizer p;
  if (!j.is_null()) RETURN_IF_ERROR(Add(j, &p.steps_));
  for (const Step& s : p.steps_)
    p.byte_level_ = p.byte_level_ || std::holds_alternative<ByteLevel>(s);
  return p;
}

namespace {

// Replaces `*pieces` by the pieces each one splits into.
template <typename SplitFn>
void SplitEach(std::vector<PreToken>* pieces, SplitFn split) {
  std::vector<PreToken> out;
  out.reserve(pieces->size());
  std::vector<size_t> offsets;
  for (PreToken& p : *pieces) {
    offsets.clear();
    const std::vector<std::string_view> parts = split(p.text, &offsets);
    for (size_t i = 0; i < parts.size(); ++i)
      out.push_back({std::string(parts[i]), p.at_start && offsets[i] == 0});
  }
  *pieces = std::move(out);
}

}  // namespace

void HfPreTokenizer::ApplyStep(const Step& step, std::vector<PreToken>* pieces) const {
  if (const auto* s = std::get_if<Split>(&step)) {
    SplitEach(pieces, [&](std::string_view text, std::vector<size_t>* offsets) {
      return SplitAtMatches(text, s->pattern.FindAll(text), s->invert, s->behavior, offsets);
    });
  } else if (const auto* d = std::get_if<Digits>(&step)) {
    SplitEach(pieces, [&](std::string_view text, std::vector<size_t>* offsets) {
      return SplitAtMatches(text, DigitRegex().FindAll(text), false,
                            d->individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous,
                            offsets);
    });
  } else if (const auto* b = std::get_if<ByteLevel>(&step)) {
    if (b->add_prefix_space) {
      for (PreToken& p : *pieces) {
        if (!p.text.starts_with(' ')) p.text.insert(0, " ");
      }
    }
    if (b->use_regex) {
      SplitEach(pieces, [&](std::string_view text, std::vector<size_t>* offsets) {
        return SplitAtMatches(text, Gpt2Regex().FindAll(text), false, SplitBehavior::kIsolated,
                              offsets);
      });
    }
    for (PreToken& p : *pieces) {
      std::string mapped;
      AppendByteLevel(p.text, &mapped);
      p.text = std::move(mapped);
    }
  } else if (const auto* m = std::get_if<Metaspace>(&step)) {
    for (PreToken& p : *pieces) {
      p.text = ReplaceLiteral(p.text, " ", m->replacement);
      const bool needs_prefix = !p.text.starts_with(m->replacement);
      if (needs_prefix &&
          (m->prepend == Prepend::kAlways || (m->prepend == Prepend::kFirst && p.at_start))) {
        p.text.insert(0, m->replacement);
      }
    }
    if (m->split) {
      SplitEach(pieces, [&](std::string_view text, std::vector<size_t>* offsets) {
        std::vector<std::pair<size_t, size_t>> spans;
        for (size_t at = text.find(m->replacement); at != text.npos;
             at = text.find(m->replacement, at + m->replacement.size()))
          spans.emplace_back(at, at + m->replacement.size());
        return SplitAtMatches(text, spans, false, SplitBehavior::kMergedWithNext, offsets);
      });
    }
  }
}

void HfPreTokenizer::Apply(PreToken piece, std::vector<PreToken>* out) const {
  if (piece.text.empty()) return;
  std::vector<PreToken> pieces;
  pieces.push_back(std::move(piece));
  for (const Step& step : steps_) ApplyStep(step, &pieces);
  for (PreToken& p : pieces) {
    if (!p.text.empty()) out->push_back(std::move(p));
  }
}

}  // namespace paged
