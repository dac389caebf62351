#include "daemon/jinja/text.h"

#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cstdio>

#include "daemon/jinja/error.h"

namespace paged::jinja::text {
namespace {

constexpr char32_t kEscapeBase = 0xDC00;  // invalid byte b decodes to kEscapeBase + b

// The code point at s[*i] (advancing *i); an invalid byte is escaped.
char32_t Next(std::string_view s, size_t* i) {
  const unsigned char c = static_cast<unsigned char>(s[*i]);
  if (c < 0x80) {
    ++*i;
    return c;
  }
  int n = 0;
  char32_t cp = 0;
  char32_t min = 0;
  if ((c & 0xE0) == 0xC0) {
    n = 1, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 2, cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 3, cp = c & 0x07, min = 0x10000;
  } else {
    ++*i;
    return kEscapeBase + c;
  }
  if (*i + n >= s.size()) {
    ++*i;
    return kEscapeBase + c;
  }
  for (int k = 1; k <= n; ++k) {
    const unsigned char d = static_cast<unsigned char>(s[*i + k]);
    if ((d & 0xC0) != 0x80) {
      ++*i;
      return kEscapeBase + c;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++*i;
    return kEscapeBase + c;
  }
  *i += n + 1;
  return cp;
}

bool IsEscapedByte(char32_t cp) { return cp >= kEscapeBase + 0x80 && cp <= kEscapeBase + 0xFF; }

// ICU's full case mapping of a whole string.
enum class Case { kUpper, kLower };
std::string MapCase(std::string_view s, Case c) {
  if (IsAscii(s)) {
    std::string out(s);
    for (char& ch : out) {
      if (c == Case::kUpper && ch >= 'a' && ch <= 'z') ch = char(ch - 'a' + 'A');
      if (c == Case::kLower && ch >= 'A' && ch <= 'Z') ch = char(ch - 'A' + 'a');
    }
    return out;
  }
  icu::UnicodeString u =
      icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), int32_t(s.size())));
  if (c == Case::kUpper) {
    u.toUpper(icu::Locale::getRoot());
  } else {
    u.toLower(icu::Locale::getRoot());
  }
  std::string out;
  u.toUTF8String(out);
  return out;
}

std::string One(char32_t cp) {
  std::string s;
  AppendUtf8(cp, &s);
  return s;
}

bool InSet(char32_t c, const std::vector<char32_t>& set) {
  return std::find(set.begin(), set.end(), c) != set.end();
}

// Python's str.isprintable() of one code point.
bool IsPrintable(char32_t c) {
  if (c == ' ') return true;
  if (c < 0x20 || c == 0x7F) return false;
  if (c < 0x7F) return true;
  switch (u_charType(UChar32(c))) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_SURROGATE:
    case U_PRIVATE_USE_CHAR:
    case U_UNASSIGNED:
    case U_LINE_SEPARATOR:
    case U_PARAGRAPH_SEPARATOR:
    case U_SPACE_SEPARATOR:
      return false;
    default:
      return true;
  }
}

void AppendHex(std::string* out, const char* prefix, uint32_t v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%s%0*x", prefix, digits, v);
  *out += buf;
}

}  // namespace

void AppendUtf8(char32_t cp, std::string* out) {
  if (IsEscapedByte(cp)) {
    out->push_back(char(cp - kEscapeBase));
  } else if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xC0 | (cp >> 6)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xE0 | (cp >> 12)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(char(0xF0 | (cp >> 18)));
    out->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  }
}

std::vector<char32_t> Decode(std::string_view s) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(Next(s, &i));
  return out;
}

std::string Encode(std::span<const char32_t> cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) AppendUtf8(c, &out);
  return out;
}

bool IsAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

size_t Length(std::string_view s) {
  if (IsAscii(s)) return s.size();
  size_t n = 0;
  for (size_t i = 0; i < s.size(); ++n) Next(s, &i);
  return n;
}

bool IsSpace(char32_t c) {
  switch (c) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x1C:
    case 0x1D:
    case 0x1E:
    case 0x1F:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

std::string Strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right) {
  const std::vector<char32_t> cps = Decode(s);
  const std::vector<char32_t> set = chars ? Decode(*chars) : std::vector<char32_t>{};
  auto drop = [&](char32_t c) { return chars ? InSet(c, set) : IsSpace(c); };
  size_t b = 0;
  size_t e = cps.size();
  if (left) {
    while (b < e && drop(cps[b])) ++b;
  }
  if (right) {
    while (e > b && drop(cps[e - 1])) --e;
  }
  return Encode(std::span<const char32_t>(cps).subspan(b, e - b));
}

std::vector<std::string> Split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep) {
    if (sep->empty()) ThrowRuntime("empty separator");
    size_t at = 0;
    while (maxsplit < 0 || int64_t(out.size()) < maxsplit) {
      const size_t hit = s.find(*sep, at);
      if (hit == std::string_view::npos) break;
      out.emplace_back(s.substr(at, hit - at));
      at = hit + sep->size();
    }
    out.emplace_back(s.substr(at));
    return out;
  }
  const std::vector<char32_t> cps = Decode(s);
  size_t i = 0;
  const size_t n = cps.size();
  while (true) {
    while (i < n && IsSpace(cps[i])) ++i;
    if (i == n) break;
    if (maxsplit >= 0 && int64_t(out.size()) == maxsplit) {
      size_t e = n;
      while (e > i && IsSpace(cps[e - 1])) --e;
      out.push_back(Encode(std::span<const char32_t>(cps).subspan(i, e - i)));
      break;
    }
    const size_t b = i;
    while (i < n && !IsSpace(cps[i])) ++i;
    out.push_back(Encode(std::span<const char32_t>(cps).subspan(b, i - b)));
  }
  return out;
}

std::vector<std::string> RSplit(std::string_view s, const std::optional<std::string>& sep,
                                int64_t maxsplit) {
  if (maxsplit < 0) return Split(s, sep, maxsplit);
  std::vector<std::string> out;
  if (sep) {
    if (sep->empty()) ThrowRuntime("empty separator");
    size_t end = s.size();
    while (int64_t(out.size()) < maxsplit) {
      if (end < sep->size()) break;
      const size_t hit = s.rfind(*sep, end - sep->size());
      if (hit == std::string_view::npos) break;
      out.emplace_back(s.substr(hit + sep->size(), end - hit - sep->size()));
      end = hit;
    }
    out.emplace_back(s.substr(0, end));
    std::reverse(out.begin(), out.end());
    return out;
  }
  const std::vector<char32_t> cps = Decode(s);
  size_t i = cps.size();
  while (true) {
    while (i > 0 && IsSpace(cps[i - 1])) --i;
    if (i == 0) break;
    if (int64_t(out.size()) == maxsplit) {
      size_t b = 0;
      while (b < i && IsSpace(cps[b])) ++b;
      out.push_back(Encode(std::span<const char32_t>(cps).subspan(b, i - b)));
      break;
    }
    const size_t e = i;
    while (i > 0 && !IsSpace(cps[i - 1])) --i;
    out.push_back(Encode(std::span<const char32_t>(cps).subspan(i, e - i)));
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::string Replace(std::string_view s, std::string_view old, std::string_view with,
                    int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `with` before every code point and at the end.
    const std::vector<char32_t> cps = Decode(s);
    int64_t done = 0;
    for (char32_t c : cps) {
      if (count < 0 || done < count) {
        out += with;
        ++done;
      }
      AppendUtf8(c, &out);
    }
    if (count < 0 || done < count) out += with;
    return out;
  }
  size_t at = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t hit = s.find(old, at);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(at, hit - at));
    out.append(with);
    at = hit + old.size();
    ++done;
  }
  out.append(s.substr(at));
  return out;
}

std::string Upper(std::string_view s) { return MapCase(s, Case::kUpper); }
std::string Lower(std::string_view s) { return MapCase(s, Case::kLower); }

std::string Capitalize(std::string_view s) {
  const std::vector<char32_t> cps = Decode(s);
  if (cps.empty()) return "";
  std::string out = One(char32_t(u_totitle(UChar32(cps[0]))));
  out += Lower(Encode(std::span<const char32_t>(cps).subspan(1)));
  return out;
}

std::string Title(std::string_view s) {
  std::string out;
  bool previous_cased = false;
  for (char32_t c : Decode(s)) {
    if (previous_cased) {
      out += Lower(One(c));
    } else {
      AppendUtf8(char32_t(u_totitle(UChar32(c))), &out);
    }
    previous_cased = u_hasBinaryProperty(UChar32(c), UCHAR_CASED);
  }
  return out;
}

std::string TitleFilter(std::string_view s) {
  auto separator = [](char32_t c) {
    return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || IsSpace(c);
  };
  const std::vector<char32_t> cps = Decode(s);
  std::string out;
  size_t i = 0;
  while (i < cps.size()) {
    const bool sep = separator(cps[i]);
    size_t e = i;
    while (e < cps.size() && separator(cps[e]) == sep) ++e;
    out += Upper(One(cps[i]));
    out += Lower(Encode(std::span<const char32_t>(cps).subspan(i + 1, e - i - 1)));
    i = e;
  }
  return out;
}

bool IsLower(std::string_view s) {
  bool cased = false;
  for (char32_t c : Decode(s)) {
    if (u_hasBinaryProperty(UChar32(c), UCHAR_UPPERCASE) || u_istitle(UChar32(c))) return false;
    if (u_hasBinaryProperty(UChar32(c), UCHAR_LOWERCASE)) cased = true;
  }
  return cased;
}

bool IsUpper(std::string_view s) {
  bool cased = false;
  for (char32_t c : Decode(s)) {
    if (u_hasBinaryProperty(UChar32(c), UCHAR_LOWERCASE) || u_istitle(UChar32(c))) return false;
    if (u_hasBinaryProperty(UChar32(c), UCHAR_UPPERCASE)) cased = true;
  }
  return cased;
}

std::string Repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : Decode(s)) {
    if (c == char32_t(quote) || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (IsEscapedByte(c)) {
      AppendHex(&out, "\\u", uint32_t(c), 4);
    } else if (IsPrintable(c)) {
      AppendUtf8(c, &out);
    } else if (c < 0x100) {
      AppendHex(&out, "\\x", uint32_t(c), 2);
    } else if (c < 0x10000) {
      AppendHex(&out, "\\u", uint32_t(c), 4);
    } else {
      AppendHex(&out, "\\U", uint32_t(c), 8);
    }
  }
  out += quote;
  return out;
}

std::string JsonQuote(std::string_view s, bool ensure_ascii) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    if (b >= 0x80) {
      const size_t start = i;
      const char32_t c = Next(s, &i);
      if (!ensure_ascii || IsEscapedByte(c)) {
        out.append(s.substr(start, i - start));
      } else if (c < 0x10000) {
        AppendHex(&out, "\\u", uint32_t(c), 4);
      } else {
        const uint32_t v = uint32_t(c) - 0x10000;
        AppendHex(&out, "\\u", 0xD800 + (v >> 10), 4);
        AppendHex(&out, "\\u", 0xDC00 + (v & 0x3FF), 4);
      }
      continue;
    }
    ++i;
    switch (b) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (b < 0x20) {
          AppendHex(&out, "\\u", b, 4);
        } else {
          out += char(b);
        }
    }
  }
  out += '"';
  return out;
}

std::vector<int64_t> SliceIndices(int64_t n, std::optional<int64_t> start,
                                  std::optional<int64_t> stop, std::optional<int64_t> step) {
  const int64_t st = step.value_or(1);
  if (st == 0) ThrowRuntime("slice step cannot be zero");
  auto adjust = [&](std::optional<int64_t> v, int64_t absent) {
    if (!v) return absent;
    int64_t x = *v;
    if (x < 0) {
      x += n;
      if (x < 0) x = st < 0 ? -1 : 0;
    } else if (x >= n) {
      x = st < 0 ? n - 1 : n;
    }
    return x;
  };
  const int64_t b = adjust(start, st < 0 ? n - 1 : 0);
  const int64_t e = adjust(stop, st < 0 ? -1 : n);
  std::vector<int64_t> out;
  if (st > 0) {
    for (int64_t i = b; i < e; i += st) out.push_back(i);
  } else {
    for (int64_t i = b; i > e; i += st) out.push_back(i);
  }
  return out;
}

}  // namespace paged::jinja::text
