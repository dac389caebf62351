// A bounds-checked parser of the safetensors format:
//   u64 little-endian N | N bytes of JSON header | tensor data
// The header maps tensor names to {"dtype", "shape", "data_offsets": [b, e]}
// (offsets relative to the data start 8 + N) and may hold a "__metadata__"
// object of string -> string. Every malformed input gives one error line
// naming the origin and the problem; no input makes the parser read outside
// [data, data + size).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/json_text.h"  // ParseJsonText
#include "nlohmann/json.hpp"

namespace paged {

// Headers larger than this are rejected as corrupt (the limit the reference
// implementation uses).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct SafetensorsTensor {
  std::string name;
  std::string dtype;           // as written: "F32", "F16", "BF16", "I64", ...
  std::vector<int64_t> shape;  // outermost first; every dim >= 0
  uint64_t begin = 0;          // ABSOLUTE byte offsets in the file
  uint64_t end = 0;            // end - begin == numel * element size
};

struct SafetensorsFile {
  std::vector<SafetensorsTensor> tensors;  // in file order (by begin offset)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + N
};

// Bytes per element of a safetensors dtype string; 0 for an unknown one.
uint64_t SafetensorsDTypeSize(std::string_view dtype);

// Parses the header of a whole safetensors file held in [data, data + size)
// and checks every tensor's byte range against it. `origin` (usually the
// path) prefixes the errors. Codes: DataLoss for truncated files,
// InvalidArgument for everything else.
absl::StatusOr<SafetensorsFile> ParseSafetensors(const uint8_t* data, uint64_t size,
                                                 std::string_view origin);

// JSON helpers shared by the safetensors, index and config.json readers.

// The JSON type with its article, for messages: "a string", "an object", "null".
std::string JsonTypeName(const nlohmann::json& j);
// The value of a non-negative JSON integer; nullopt for anything else.
std::optional<uint64_t> JsonToU64(const nlohmann::json& j);

}  // namespace paged
