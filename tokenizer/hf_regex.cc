#include "tokenizer/hf_regex.h"

#include <unicode/errorcode.h>
#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace paged {

struct HfRegex::Impl {
  std::unique_ptr<icu::RegexPattern> pattern;
};

namespace {

// `text` (valid UTF-8) as UTF-16, with the UTF-8 offset of every UTF-16 index
// (and of the end).
struct Utf16Text {
  icu::UnicodeString text;
  std::vector<uint32_t> byte_offset;
};

Utf16Text ToUtf16(std::string_view text) {
  Utf16Text u;
  std::vector<char16_t> units;
  units.reserve(text.size());
  u.byte_offset.reserve(text.size() + 1);
  for (size_t pos = 0; pos < text.size();) {
    const uint32_t at = uint32_t(pos);
    const char32_t c = NextCodePoint(text, &pos);
    if (c >= 0x10000) {
      units.push_back(char16_t(0xD800 + ((c - 0x10000) >> 10)));
      units.push_back(char16_t(0xDC00 + ((c - 0x10000) & 0x3FF)));
      u.byte_offset.push_back(at);
      u.byte_offset.push_back(at);
    } else {
      units.push_back(char16_t(c));
      u.byte_offset.push_back(at);
    }
  }
  u.byte_offset.push_back(uint32_t(text.size()));
  u.text = icu::UnicodeString(units.data(), int32_t(units.size()));
  return u;
}

std::string ToUtf8(const icu::UnicodeString& s) {
  std::string out;
  s.toUTF8String(out);
  return out;
}

}  // namespace

absl::StatusOr<HfRegex> HfRegex::Compile(std::string_view pattern, bool literal) {
  if (!IsValidUtf8(pattern)) return absl::InvalidArgumentError("regex pattern is not valid UTF-8");
  UErrorCode status = U_ZERO_ERROR;
  UParseError where{};
  auto impl = std::make_shared<Impl>();
  impl->pattern.reset(icu::RegexPattern::compile(
      icu::UnicodeString::fromUTF8(icu::StringPiece(pattern.data(), int32_t(pattern.size()))),
      literal ? UREGEX_LITERAL : 0, where, status));
  if (U_FAILURE(status) || impl->pattern == nullptr)
    return absl::InvalidArgumentError(
        absl::StrCat("bad regex '", absl::CEscape(std::string(pattern)), "': ", u_errorName(status),
                     " at offset ", where.offset));
  HfRegex r;
  r.impl_ = std::move(impl);
  return r;
}

std::vector<std::pair<size_t, size_t>> HfRegex::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  if (text.empty()) return out;
  const Utf16Text u = ToUtf16(text);
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> m(impl_->pattern->matcher(u.text, status));
  if (U_FAILURE(status)) return out;
  // Backtracking over a long whitespace run needs a stack as deep as the run:
  // let it grow (the input is bounded by the caller) rather than fail.
  m->setStackLimit(0, status);
  while (m->find(status) && U_SUCCESS(status)) {
    const int32_t b = m->start(status), e = m->end(status);
    if (U_FAILURE(status)) break;
    out.emplace_back(u.byte_offset[size_t(b)], u.byte_offset[size_t(e)]);
  }
  return out;
}

std::string HfRegex::ReplaceAll(std::string_view text, std::string_view with) const {
  std::string out;
  size_t prev = 0;
  for (const auto& [b, e] : FindAll(text)) {
    out.append(text.substr(prev, b - prev));
    out.append(with);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

std::string NormalizeUnicode(std::string_view text, UnicodeForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case UnicodeForm::kNFC:
      n = icu::Normalizer2::getNFCInstance(status);
      break;
    case UnicodeForm::kNFD:
      n = icu::Normalizer2::getNFDInstance(status);
      break;
    case UnicodeForm::kNFKC:
      n = icu::Normalizer2::getNFKCInstance(status);
      break;
    case UnicodeForm::kNFKD:
      n = icu::Normalizer2::getNFKDInstance(status);
      break;
  }
  if (U_FAILURE(status) || n == nullptr) return std::string(text);
  const icu::UnicodeString in =
      icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), int32_t(text.size())));
  // Most text is already normalized: skip the copy then.
  if (n->isNormalized(in, status) && U_SUCCESS(status)) return std::string(text);
  status = U_ZERO_ERROR;
  const icu::UnicodeString out = n->normalize(in, status);
  if (U_FAILURE(status)) return std::string(text);
  return ToUtf8(out);
}

namespace {

bool IsCont(unsigned char c) { return (c & 0xC0) == 0x80; }

// The well-formed character at `s[pos]`: its length (1-4) and code point, or
// 0 when none starts there. `*bad` gets the length of the maximal ill-formed
// subpart (at least 1) when it is 0.
size_t DecodeAt(std::string_view s, size_t pos, char32_t* cp, size_t* bad) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[pos + i]); };
  const size_t left = s.size() - pos;
  const unsigned char c = b(0);
  *bad = 1;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  char32_t v = c & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (size_t i = 1; i < n; ++i) {
    if (i >= left) return 0;
    const unsigned char x = b(i);
    if (i == 1 ? (x < lo || x > hi) : !IsCont(x)) return 0;
    v = (v << 6) | (x & 0x3F);
    *bad = i + 1;
  }
  *cp = v;
  return n;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  char32_t cp = 0;
  size_t bad = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t n = DecodeAt(text, i, &cp, &bad);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string ToValidUtf8(std::string_view text) {
  if (IsValidUtf8(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  char32_t cp = 0;
  size_t bad = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t n = DecodeAt(text, i, &cp, &bad);
    if (n == 0) {
      out.append("\xEF\xBF\xBD");  // U+FFFD for the maximal ill-formed subpart
      i += bad;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

char32_t NextCodePoint(std::string_view text, size_t* pos) {
  char32_t cp = 0;
  size_t bad = 0;
  const size_t n = DecodeAt(text, *pos, &cp, &bad);
  *pos += n == 0 ? bad : n;
  return n == 0 ? char32_t(0xFFFD) : cp;
}

char32_t PrevCodePoint(std::string_view text, size_t end, size_t* begin) {
  // Back over continuation bytes (at most 3) to a lead byte that decodes to
  // exactly [b, end).
  for (size_t k = 1; k <= 4 && k <= end; ++k) {
    const size_t b = end - k;
    if (k < 4 && IsCont(static_cast<unsigned char>(text[b])) && b > 0) continue;
    char32_t cp = 0;
    size_t bad = 0;
    if (DecodeAt(text, b, &cp, &bad) == k) {
      *begin = b;
      return cp;
    }
    break;
  }
  *begin = end - 1;
  return char32_t(0xFFFD);
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(char(c));
  } else if (c < 0x800) {
    out->push_back(char(0xC0 | (c >> 6)));
    out->push_back(char(0x80 | (c & 0x3F)));
  } else if (c < 0x10000 && (c < 0xD800 || c > 0xDFFF)) {
    out->push_back(char(0xE0 | (c >> 12)));
    out->push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(char(0x80 | (c & 0x3F)));
  } else if (c >= 0x10000 && c <= 0x10FFFF) {
    out->push_back(char(0xF0 | (c >> 18)));
    out->push_back(char(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(char(0x80 | (c & 0x3F)));
  } else {
    out->append("\xEF\xBF\xBD");
  }
}

bool IsWhiteSpace(char32_t c) { return u_isUWhiteSpace(UChar32(c)); }

bool IsWordChar(char32_t c) {
  const UChar32 u = UChar32(c);
  if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL))
    return true;
  const int32_t mask = U_GET_GC_MASK(u);
  return (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

}  // namespace paged
