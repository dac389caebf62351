#include "common/json_text.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace paged {

absl::StatusOr<nlohmann::json> ParseJsonText(std::string_view text, std::string_view what) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    // what() is "[json.exception.parse_error.101] parse error at line 1,
    // column 2: syntax error ...; last read: '<input>'": keep the middle, so
    // that the message stays one line and quotes no input bytes.
    std::string_view msg = e.what();
    if (const size_t p = msg.find("] "); p != msg.npos) msg.remove_prefix(p + 2);
    if (const size_t p = msg.find("; last read"); p != msg.npos) msg = msg.substr(0, p);
    std::string clean(msg);
    for (char& c : clean) {
      if (c < 0x20 || c > 0x7e) c = '?';
    }
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(what), " is not valid JSON: ", clean));
  }
}

}  // namespace paged
