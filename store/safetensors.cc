#include "store/safetensors.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace paged {

using nlohmann::json;

uint64_t SafetensorsDTypeSize(std::string_view dtype) {
  static constexpr std::pair<std::string_view, uint64_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"F64", 8}, {"I64", 8}, {"U64", 8},     {"C64", 8},
  };
  for (const auto& [name, size] : kSizes) {
    if (name == dtype) return size;
  }
  return 0;
}

std::string JsonTypeName(const json& j) {
  switch (j.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    default:
      return "a binary value";
  }
}

std::optional<uint64_t> JsonToU64(const json& j) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer() && j.get<int64_t>() >= 0) return uint64_t(j.get<int64_t>());
  return std::nullopt;
}

namespace {

uint64_t ReadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Parses one tensor entry of the header: `value` is what the name maps to,
// `data_size` the bytes after the header. Errors lack the origin prefix.
absl::StatusOr<SafetensorsTensor> ParseEntry(const std::string& name, const json& value,
                                             uint64_t data_size) {
  const std::string label = absl::StrCat("tensor '", absl::CEscape(name), "'");
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(label, " ", what));
  };
  if (!value.is_object())
    return bad(absl::StrCat("entry is ", JsonTypeName(value), ", expected an object"));
  // The field `key` when it has `type`, else nullptr.
  auto field = [&](const char* key, json::value_t type) -> const json* {
    auto it = value.find(key);
    return it == value.end() || it->type() != type ? nullptr : &*it;
  };
  // Reports a missing field or one of the wrong type.
  auto field_error = [&](const char* key, const char* want) {
    auto it = value.find(key);
    if (it == value.end()) return bad(absl::StrCat("lacks '", key, "'"));
    return bad(absl::StrCat("field '", key, "' is ", JsonTypeName(*it), ", expected ", want));
  };

  SafetensorsTensor t;
  t.name = name;
  const json* dtype = field("dtype", json::value_t::string);
  if (dtype == nullptr) return field_error("dtype", "a string");
  t.dtype = dtype->get<std::string>();
  const uint64_t elem = SafetensorsDTypeSize(t.dtype);
  if (elem == 0) return bad(absl::StrCat("has unknown dtype '", absl::CEscape(t.dtype), "'"));

  const json* shape = field("shape", json::value_t::array);
  if (shape == nullptr) return field_error("shape", "a list of integers");
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : *shape) {
    int64_t dim = 0;
    if (d.is_number_unsigned()) {
      const uint64_t u = d.get<uint64_t>();
      if (u > uint64_t(INT64_MAX)) return bad(absl::StrCat("has dimension ", u, " too large"));
      dim = int64_t(u);
    } else if (d.is_number_integer()) {
      dim = d.get<int64_t>();
    } else {
      return bad(absl::StrCat("shape holds ", JsonTypeName(d), ", expected integers"));
    }
    if (dim < 0) return bad(absl::StrCat("has negative dimension ", dim));
    t.shape.push_back(dim);
    overflow |= __builtin_mul_overflow(numel, uint64_t(dim), &numel);
  }
  uint64_t bytes = 0;
  if (overflow || __builtin_mul_overflow(numel, elem, &bytes))
    return bad(absl::StrCat("shape ", ShapeString(t.shape), " has too many elements"));

  const json* offsets = field("data_offsets", json::value_t::array);
  if (offsets == nullptr) return field_error("data_offsets", "a list of two integers");
  std::optional<uint64_t> b, e;
  if (offsets->size() == 2) {
    b = JsonToU64((*offsets)[0]);
    e = JsonToU64((*offsets)[1]);
  }
  if (!b || !e) return bad("data_offsets must be two non-negative integers");
  const std::string range = absl::StrCat("data_offsets [", *b, ", ", *e, "]");
  if (*e < *b) return bad(absl::StrCat(range, " end before they begin"));
  if (*e > data_size)
    return bad(absl::StrCat(range, " past the end of the data (", data_size, " bytes)"));
  if (*e - *b != bytes)
    return bad(absl::StrCat(range, " hold ", *e - *b, " bytes but ", t.dtype, " ",
                            ShapeString(t.shape), " needs ", bytes));
  t.begin = *b;  // relative for now; the caller adds the data start
  t.end = *e;
  return t;
}

absl::Status ParseMetadata(const json& value, std::map<std::string, std::string>* out) {
  if (!value.is_object())
    return absl::InvalidArgumentError(
        absl::StrCat("__metadata__ is ", JsonTypeName(value), ", expected an object"));
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string())
      return absl::InvalidArgumentError(absl::StrCat("__metadata__ value of '", absl::CEscape(key),
                                                     "' is ", JsonTypeName(v),
                                                     ", expected a string"));
    (*out)[key] = v.get<std::string>();
  }
  return absl::OkStatus();
}

// Rejects two non-empty byte ranges that share a byte. `tensors` are sorted
// by (begin, end) and still hold offsets relative to the data start.
absl::Status CheckNoOverlap(const std::vector<SafetensorsTensor>& tensors) {
  const SafetensorsTensor* prev = nullptr;  // the non-empty range ending last so far
  for (const SafetensorsTensor& t : tensors) {
    if (t.begin == t.end) continue;
    if (prev != nullptr && t.begin < prev->end)
      return absl::InvalidArgumentError(
          absl::StrCat("tensors '", absl::CEscape(prev->name), "' [", prev->begin, ", ", prev->end,
                       "] and '", absl::CEscape(t.name), "' [", t.begin, ", ", t.end, "] overlap"));
    if (prev == nullptr || t.end > prev->end) prev = &t;
  }
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsFile> ParseUnprefixed(const uint8_t* data, uint64_t size) {
  if (size < 8)
    return absl::DataLossError(
        absl::StrCat("file is ", size, " bytes, too short for a safetensors header length"));
  const uint64_t n = ReadLe64(data);
  if (n > kMaxSafetensorsHeaderBytes)
    return absl::InvalidArgumentError(absl::StrCat("header length ", n, " exceeds the limit of ",
                                                   kMaxSafetensorsHeaderBytes, " bytes"));
  if (n > size - 8)
    return absl::DataLossError(
        absl::StrCat("header length ", n, " runs past the end of the file (", size, " bytes)"));
  ASSIGN_OR_RETURN(json header,
                   ParseJsonText({reinterpret_cast<const char*>(data + 8), size_t(n)}, "header"));
  if (!header.is_object())
    return absl::InvalidArgumentError(
        absl::StrCat("header is ", JsonTypeName(header), ", expected a JSON object"));

  SafetensorsFile file;
  file.data_start = 8 + n;
  const uint64_t data_size = size - file.data_start;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      RETURN_IF_ERROR(ParseMetadata(value, &file.metadata));
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsTensor t, ParseEntry(key, value, data_size));
    file.tensors.push_back(std::move(t));
  }
  std::sort(file.tensors.begin(), file.tensors.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
              return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
            });
  RETURN_IF_ERROR(CheckNoOverlap(file.tensors));
  for (SafetensorsTensor& t : file.tensors) {
    t.begin += file.data_start;
    t.end += file.data_start;
  }
  return file;
}

}  // namespace

absl::StatusOr<SafetensorsFile> ParseSafetensors(const uint8_t* data, uint64_t size,
                                                 std::string_view origin) {
  absl::StatusOr<SafetensorsFile> file = ParseUnprefixed(data, size);
  if (!file.ok()) return Annotate(file.status(), origin);
  return file;
}

}  // namespace paged
