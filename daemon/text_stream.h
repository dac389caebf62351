// The text side of a Generate stream: decoded token pieces go in, text that
// is safe to show comes out. Text is held back while it
//  - ends in an incomplete UTF-8 character (a byte token may carry one byte
//    of a multi-byte character; protobuf strings must be valid UTF-8), or
//  - ends in a proper prefix of a stop string (stop strings are not shown).
// When a stop string appears, the text before it is released and the rest
// dropped. Invalid UTF-8 (bytes that can never complete a character) is
// replaced by U+FFFD.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace paged {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop_strings = {});

  // Appends a decoded piece. Returns true when the text now contains a stop
  // string (then, and from then on, further appends are ignored).
  bool Append(std::string_view piece);
  // The text that can be shown now (maybe empty).
  std::string TakeReady();
  // Everything still held back, at the end of the stream.
  std::string TakeAll();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // appended, not yet released
  bool stopped_ = false;
};

// The length of the longest prefix of `s` that does not end inside an
// incomplete (but so far valid) UTF-8 character.
size_t CompleteUtf8Prefix(std::string_view s);
// `s` with every invalid UTF-8 sequence replaced by U+FFFD.
std::string SanitizeUtf8(std::string_view s);

}  // namespace paged
