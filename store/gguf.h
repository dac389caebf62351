// A bounds-checked parser for GGUF files (v3, and v2 which has the same
// layout): the metadata key/values, the tensor directory and where each
// tensor's bytes lie. It does not interpret the model; store/gguf_model.h
// turns a parsed file into a ModelSource.
//
// Layout (little endian):
//   "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x { string key | u32 value type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 offset }
//   padding to general.alignment (default 32) | tensor data
// where a string is u64 length + bytes, and an ARRAY value is
// u32 element type + u64 count + elements.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace paged {

// GGUF metadata value types (the ids on disk).
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
constexpr uint32_t kGgufValueTypeCount = 13;
std::string_view GgufValueTypeName(GgufValueType t);  // "UINT32", "STRING", ...

// An ARRAY value. The alternative index of `elems` is the element's
// GgufValueType id; nested arrays are rejected by the parser, so index 9
// (kArray) holds std::monostate and never occurs in a parsed file.
struct GgufArray {
  using Elems =
      std::variant<std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>,
                   std::vector<int16_t>, std::vector<uint32_t>, std::vector<int32_t>,
                   std::vector<float>, std::vector<bool>, std::vector<std::string>, std::monostate,
                   std::vector<uint64_t>, std::vector<int64_t>, std::vector<double>>;
  Elems elems;

  GgufValueType elem_type() const { return static_cast<GgufValueType>(elems.index()); }
  size_t size() const;
};

// One metadata value. The alternative index is the GgufValueType id.
using GgufValue = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                               std::string, GgufArray, uint64_t, int64_t, double>;

inline GgufValueType TypeOf(const GgufValue& v) { return static_cast<GgufValueType>(v.index()); }
// "UINT32", or "ARRAY of STRING" for arrays.
std::string DescribeType(const GgufValue& v);

// Some ggml tensor type ids (GgmlTypeInfoOf knows more). The model reader
// accepts those listed here but Q8_1 and Q8_K; the other known types parse,
// so that their files are refused with a clear "unsupported tensor type"
// later.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ4_NL = 20,
  kIQ4_XS = 23,
  kBF16 = 30,
  kMXFP4 = 39,
};

// Block geometry of a ggml type: `block_values` consecutive values of a row
// are stored in `block_bytes` bytes.
struct GgmlTypeInfo {
  std::string_view name;  // "F32", "Q8_0", ...
  uint32_t block_values = 0;
  uint32_t block_bytes = 0;
};
// Geometry of ggml type id `type`, or nullopt when the id is unknown.
std::optional<GgmlTypeInfo> GgmlTypeInfoOf(uint32_t type);
// "Q4_K", or "type 99" for unknown ids.
std::string GgmlTypeName(uint32_t type);

constexpr uint32_t kGgufMaxDims = 4;
constexpr uint64_t kGgufDefaultAlignment = 32;

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // ggml order: ne[0] is the innermost (contiguous) dimension
  uint32_t type = 0;         // ggml type id (see GgmlType)
  uint64_t offset = 0;       // relative to the data section, as stored
  uint64_t numel = 0;        // product of ne
  uint64_t begin = 0;        // absolute byte range of the data in the file
  uint64_t end = 0;

  uint64_t bytes() const { return end - begin; }
};

// A parsed GGUF file. It holds copies of the metadata; tensor data stays in
// the caller's buffer at [begin, end) of each tensor.
struct GgufFile {
  std::string origin;  // prefixes every error message
  uint32_t version = 0;
  uint64_t alignment = kGgufDefaultAlignment;
  uint64_t data_start = 0;  // absolute offset of the data section
  std::map<std::string, GgufValue, std::less<>> kv;
  std::vector<GgufTensorInfo> tensors;  // in file order

  // nullptr when absent.
  const GgufValue* Find(std::string_view key) const;
  bool Has(std::string_view key) const { return Find(key) != nullptr; }
  const GgufTensorInfo* FindTensor(std::string_view name) const;

  // Typed getters. A missing key is NotFound, a value of another type is
  // InvalidArgument; both messages name the origin and the key.
  // Any integer type, range-checked into int64 (not bool).
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  // FLOAT32 or FLOAT64, or an integer converted.
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  // Any ARRAY; the pointer stays valid as long as this file.
  absl::StatusOr<const GgufArray*> GetArray(std::string_view key) const;
  absl::StatusOr<const std::vector<std::string>*> GetStringArray(std::string_view key) const;
  // Arrays of any integer type, widened.
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  // Arrays of FLOAT32 or FLOAT64.
  absl::StatusOr<std::vector<float>> GetFloatArray(std::string_view key) const;

 private:
  absl::StatusOr<const GgufValue*> Need(std::string_view key) const;
  absl::Status WrongType(std::string_view key, const GgufValue& v, std::string_view expected) const;
};

// Parses `size` bytes at `data` (which may be null when size is 0). Every
// problem is an InvalidArgument error of one line starting with `origin`:
// truncation, bad magic or version, counts or lengths that cannot fit in the
// file (checked before anything is allocated), unknown value or tensor types,
// duplicate keys or tensor names, tensors out of bounds, overlapping or
// misaligned, element counts that overflow, block-quantized rows that are not
// a whole number of blocks.
absl::StatusOr<GgufFile> ParseGguf(const uint8_t* data, uint64_t size, std::string_view origin);

}  // namespace paged
