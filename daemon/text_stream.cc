#include "daemon/text_stream.h"

#include <algorithm>
#include <cstdint>

namespace paged {
namespace {

// The UTF-8 character at s[i]: its length when valid and complete, 0 when
// valid so far but cut off by the end of `s`, -1 when invalid.
int CharAt(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return uint8_t(s[k]); };
  const uint8_t c = b(i);
  if (c < 0x80) return 1;
  int n = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  for (int k = 1; k < n; ++k) {
    if (i + size_t(k) >= s.size()) return 0;
    const uint8_t x = b(i + size_t(k));
    if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF)) return -1;
  }
  return n;
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

size_t CompleteUtf8Prefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const int n = CharAt(s, i);
    if (n == 0) return i;
    i += n < 0 ? 1 : size_t(n);
  }
  return s.size();
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const int n = CharAt(s, i);
    if (n > 0) {
      out.append(s.substr(i, size_t(n)));
      i += size_t(n);
    } else {
      out.append(kReplacement);
      ++i;
    }
  }
  return out;
}

TextStream::TextStream(std::vector<std::string> stop_strings) {
  for (std::string& s : stop_strings) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

bool TextStream::Append(std::string_view piece) {
  if (stopped_) return true;
  pending_.append(piece);
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) first = std::min(first, pending_.find(stop));
  if (first != std::string::npos) {
    pending_.resize(first);
    stopped_ = true;
  }
  return stopped_;
}

std::string TextStream::TakeReady() {
  if (stopped_) return TakeAll();
  // Hold back the longest suffix that is a proper prefix of a stop string:
  // any stop string that appears later starts inside the held-back text.
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t k = std::min(stop.size() - 1, pending_.size()); k > hold; --k) {
      if (std::string_view(pending_).substr(pending_.size() - k) ==
          std::string_view(stop).substr(0, k)) {
        hold = k;
        break;
      }
    }
  }
  const size_t cut =
      CompleteUtf8Prefix(std::string_view(pending_).substr(0, pending_.size() - hold));
  std::string out = SanitizeUtf8(std::string_view(pending_).substr(0, cut));
  pending_.erase(0, cut);
  return out;
}

std::string TextStream::TakeAll() {
  std::string out = SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace paged
