#include "tokenizer/hf_decoder.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "tokenizer/byte_level.h"
#include "tokenizer/hf_pretokenize.h"

namespace paged {
namespace {

using nlohmann::json;

// The byte a "<0xNN>" token stands for, or -1.
int ParseByteToken(std::string_view t) {
  if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return -1;
  int v = 0;
  for (char c : t.substr(3, 2)) {
    v *= 16;
    if (c >= '0' && c <= '9') {
      v += c - '0';
    } else if (c >= 'A' && c <= 'F') {
      v += c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      v += c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return v;
}

// Byte-level token -> its bytes; a token with characters outside the
// alphabet (an added token such as "<|im_start|>" is inside it; one with a
// space is not) stands for its own UTF-8.
void AppendTokenBytes(std::string_view token, std::string* out) {
  if (!AppendByteLevelBytes(token, out)) out->append(token);
}

// Strips up to `n` leading (`from_end`: trailing) characters equal to `c`.
std::string StripChars(std::string_view s, std::string_view c, int start, int stop) {
  size_t b = 0, e = s.size();
  for (int i = 0; i < start && s.substr(b).starts_with(c); ++i) b += c.size();
  for (int i = 0; i < stop && e >= b + c.size() && s.substr(0, e).ends_with(c); ++i) e -= c.size();
  return std::string(s.substr(b, e - b));
}

std::string RemoveAll(std::string_view s, std::string_view c) {
  std::string out;
  for (size_t at = 0;;) {
    const size_t next = s.find(c, at);
    out.append(s.substr(at, next == s.npos ? s.npos : next - at));
    if (next == s.npos) break;
    at = next + c.size();
  }
  return out;
}

}  // namespace

absl::Status HfDecoder::Add(const json& j, std::vector<Step>* steps) {
  const std::string type = j.is_object() && j.contains("type") && j["type"].is_string()
                               ? j["type"].get<std::string>()
                               : "";
  const std::string what = absl::StrCat("decoder ", type);
  if (type == "Sequence") {
    auto it = j.find("decoders");
    if (it == j.end() || !it->is_array())
      return absl::InvalidArgumentError("decoder Sequence: 'decoders' is not a list");
    for (const json& d : *it) RETURN_IF_ERROR(Add(d, steps));
  } else if (type == "ByteLevel") {
    steps->push_back(ByteLevel{});
  } else if (type == "Replace") {
    auto p = j.find("pattern");
    if (p == j.end()) return absl::InvalidArgumentError("decoder Replace: no 'pattern'");
    ASSIGN_OR_RETURN(HfRegex pattern, JsonPattern(*p, what));
    ASSIGN_OR_RETURN(std::string content, JsonString(j, "content", what));
    steps->push_back(Replace{std::move(pattern), std::move(content)});
  } else if (type == "ByteFallback") {
    steps->push_back(ByteFallback{});
  } else if (type == "Fuse") {
    steps->push_back(Fuse{});
  } else if (type == "Strip") {
    Strip s;
    ASSIGN_OR_RETURN(s.content, JsonString(j, "content", what));
    size_t pos = 0;
    if (s.content.empty() || (NextCodePoint(s.content, &pos), pos != s.content.size()))
      return absl::InvalidArgumentError("decoder Strip: 'content' is not one character");
    for (auto [key, field] : {std::pair{"start", &s.start}, std::pair{"stop", &s.stop}}) {
      auto it = j.find(key);
      if (it == j.end() || !it->is_number_unsigned() || it->get<uint64_t>() > 1024)
        return absl::InvalidArgumentError(
            absl::StrCat("decoder Strip: '", key, "' is not a count"));
      *field = int(it->get<uint64_t>());
    }
    steps->push_back(std::move(s));
  } else if (type == "Metaspace") {
    Metaspace m;
    ASSIGN_OR_RETURN(m.replacement, JsonString(j, "replacement", what));
    if (m.replacement.empty())
      return absl::InvalidArgumentError("decoder Metaspace: 'replacement' is empty");
    m.strip_first = true;
    if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
      m.strip_first = !(it->is_string() && it->get<std::string>() == "never");
    } else {
      ASSIGN_OR_RETURN(m.strip_first, JsonBool(j, "add_prefix_space", true, what));
    }
    steps->push_back(std::move(m));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported decoder '", absl::CEscape(type),
                     "' (supported: ByteLevel, Replace, ByteFallback, "
                     "Fuse, Strip, Metaspace, Sequence)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<HfDecoder> HfDecoder::FromJson(const json& j) {
  HfDecoder d;
  if (j.is_null()) return d;
  d.none_ = false;
  RETURN_IF_ERROR(Add(j, &d.steps_));
  return d;
}

std::string HfDecoder::Decode(std::vector<std::string> tokens) const {
  if (none_) return absl::StrJoin(tokens, " ");
  for (const Step& step : steps_) {
    if (std::holds_alternative<ByteLevel>(step)) {
      std::string bytes;
      for (const std::string& t : tokens) AppendTokenBytes(t, &bytes);
      tokens.assign(1, ToValidUtf8(bytes));
    } else if (const auto* r = std::get_if<Replace>(&step)) {
      for (std::string& t : tokens) t = r->pattern.ReplaceAll(t, r->content);
    } else if (std::holds_alternative<ByteFallback>(step)) {
      std::vector<std::string> out;
      out.reserve(tokens.size());
      std::string run;  // consecutive byte tokens
      auto flush = [&] {
        if (run.empty()) return;
        if (IsValidUtf8(run)) {
          out.push_back(run);
        } else {
          for (size_t i = 0; i < run.size(); ++i) out.push_back("\xEF\xBF\xBD");
        }
        run.clear();
      };
      for (std::string& t : tokens) {
        if (const int b = ParseByteToken(t); b >= 0) {
          run.push_back(char(b));
        } else {
          flush();
          out.push_back(std::move(t));
        }
      }
      flush();
      tokens = std::move(out);
    } else if (std::holds_alternative<Fuse>(step)) {
      tokens.assign(1, absl::StrJoin(tokens, ""));
    } else if (const auto* s = std::get_if<Strip>(&step)) {
      for (std::string& t : tokens) t = StripChars(t, s->content, s->start, s->stop);
    } else if (const auto* m = std::get_if<Metaspace>(&step)) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        std::string& t = tokens[i];
        t = i == 0 && m->strip_first ? RemoveAll(t, m->replacement)
                                     : absl::StrReplaceAll(t, {{m->replacement, " "}});
      }
    }
  }
  return absl::StrJoin(tokens, "");
}

std::string HfDecoder::DecodeOne(std::string_view token, bool first) const {
  if (none_) return first ? std::string(token) : absl::StrCat(" ", std::string(token));
  std::string t(token);
  bool fused = false;  // earlier steps joined the whole sequence into one string
  for (const Step& step : steps_) {
    if (std::holds_alternative<ByteLevel>(step)) {
      std::string bytes;
      AppendTokenBytes(t, &bytes);
      t = std::move(bytes);
      fused = true;
    } else if (const auto* r = std::get_if<Replace>(&step)) {
      t = r->pattern.ReplaceAll(t, r->content);
    } else if (std::holds_alternative<ByteFallback>(step)) {
      if (const int b = ParseByteToken(t); b >= 0) t = std::string(1, char(b));
    } else if (std::holds_alternative<Fuse>(step)) {
      fused = true;
    } else if (const auto* s = std::get_if<Strip>(&step)) {
      // Applied to the whole text after a fuse (its start only at the
      // first token, its end never), else to every token.
      if (!fused) {
        t = StripChars(t, s->content, s->start, s->stop);
      } else if (first) {
        t = StripChars(t, s->content, s->start, 0);
      }
    } else if (const auto* m = std::get_if<Metaspace>(&step)) {
      // HF drops every replacement character of the first token (after a
      // fuse, the whole text) and turns the others into spaces.
      t = (first || fused) && m->strip_first ? RemoveAll(t, m->replacement)
                                             : absl::StrReplaceAll(t, {{m->replacement, " "}});
    }
  }
  return t;
}

}  // namespace paged
