#include "common/size_flag.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace paged {

absl::StatusOr<uint64_t> ParseByteSize(std::string_view text_in, std::string_view flag_in) {
  const absl::string_view text(text_in.data(), text_in.size()),
      flag(flag_in.data(), flag_in.size());
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", text, ": ", why, " (examples: 4GiB, 512MiB, 2GB, 4096)"));
  };
  const absl::string_view t = absl::StripAsciiWhitespace(text);
  size_t i = 0;
  while (i < t.size() && (absl::ascii_isdigit(t[i]) || t[i] == '.')) ++i;
  if (i == 0) return bad("not a size");
  double value = 0;
  if (!absl::SimpleAtod(t.substr(0, i), &value) || !(value >= 0)) return bad("not a number");
  const std::string unit = absl::AsciiStrToLower(absl::StripAsciiWhitespace(t.substr(i)));
  double mult = 0;
  if (unit.empty() || unit == "b") mult = 1;
  const char* kBinary[] = {"k", "m", "g", "t"};
  for (int p = 0; p < 4; ++p) {
    const double bin = std::pow(1024.0, p + 1), dec = std::pow(1000.0, p + 1);
    if (unit == kBinary[p] || unit == absl::StrCat(kBinary[p], "ib")) mult = bin;
    if (unit == absl::StrCat(kBinary[p], "b")) mult = dec;
  }
  if (mult == 0) return bad(absl::StrCat("unknown unit '", unit, "'"));
  const double bytes = value * mult;
  if (bytes >= 18446744073709551615.0) return bad("too large");
  return static_cast<uint64_t>(std::llround(bytes));
}

std::string FormatBytes(uint64_t bytes) {
  const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  if (u == 0) return absl::StrCat(bytes, " B");
  return absl::StrFormat("%.2f %s", v, kUnits[u]);
}

}  // namespace paged
