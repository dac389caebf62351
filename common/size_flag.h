// Byte sizes on the command line: "4GiB", "512MiB", "1.5GiB", "2GB", "4096".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace paged {

// Binary units: K, M, G, T, KiB, MiB, GiB, TiB (powers of 1024); decimal
// units: KB, MB, GB, TB (powers of 1000); a plain number is bytes. Case of
// the unit is ignored; fractions are allowed ("1.5GiB"). Errors name `flag`.
absl::StatusOr<uint64_t> ParseByteSize(std::string_view text, std::string_view flag = "size");

// "4.00 GiB", "512.0 MiB", "17 B".
std::string FormatBytes(uint64_t bytes);

}  // namespace paged
