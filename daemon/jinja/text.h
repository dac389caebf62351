// Python's str operations on UTF-8 text, by code point as Python counts:
// length, slicing, strip / split with Python's idea of whitespace, case
// mapping (ICU, full mappings as Python's), repr and JSON quoting. A byte that
// is not valid UTF-8 decodes to U+DC80..U+DCFF and encodes back to itself
// (Python's surrogateescape), so no byte is lost.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace paged::jinja::text {

std::vector<char32_t> Decode(std::string_view s);
std::string Encode(std::span<const char32_t> cps);
void AppendUtf8(char32_t cp, std::string* out);
bool IsAscii(std::string_view s);
// Code points in `s`.
size_t Length(std::string_view s);

// Python's str.isspace() of one code point.
bool IsSpace(char32_t c);

// str.strip / lstrip / rstrip: `chars` the set to remove (nullopt: whitespace).
std::string Strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right);
// str.split(sep, maxsplit) (sep nullopt: runs of whitespace, no empty parts)
// and str.rsplit. Throws for an empty separator.
std::vector<std::string> Split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit);
std::vector<std::string> RSplit(std::string_view s, const std::optional<std::string>& sep,
                                int64_t maxsplit);
// str.replace(old, new, count); count < 0: all.
std::string Replace(std::string_view s, std::string_view old, std::string_view with, int64_t count);

std::string Upper(std::string_view s);
std::string Lower(std::string_view s);
// str.capitalize(): the first character title-cased, the rest lower-cased.
std::string Capitalize(std::string_view s);
// str.title().
std::string Title(std::string_view s);
// jinja2's title filter: each word (after '-', whitespace, '(', '{', '[' or
// '<') with its first character upper-cased and the rest lower-cased.
std::string TitleFilter(std::string_view s);
// str.islower() / str.isupper().
bool IsLower(std::string_view s);
bool IsUpper(std::string_view s);

// Python's repr() of a str: single quotes unless the text has a single quote
// and no double quote, non-printable characters escaped.
std::string Repr(std::string_view s);
// A JSON string literal as Python's json.dumps writes it.
std::string JsonQuote(std::string_view s, bool ensure_ascii);

// The indices a Python slice [start:stop:step] of a sequence of `n` items
// selects, in order (nullopt: the bound is absent). Throws for step 0.
std::vector<int64_t> SliceIndices(int64_t n, std::optional<int64_t> start,
                                  std::optional<int64_t> stop, std::optional<int64_t> step);

}  // namespace paged::jinja::text
