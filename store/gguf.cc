#include "store/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paged {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader decodes little-endian values with memcpy");

// The variant alternatives are laid out so that their index is the on-disk
// type id; the parser relies on it.
static_assert(std::is_same_v<std::variant_alternative_t<4, GgufValue>, uint32_t>);
static_assert(std::is_same_v<std::variant_alternative_t<8, GgufValue>, std::string>);
static_assert(std::is_same_v<std::variant_alternative_t<9, GgufValue>, GgufArray>);
static_assert(std::is_same_v<std::variant_alternative_t<12, GgufValue>, double>);
static_assert(std::variant_size_v<GgufValue> == kGgufValueTypeCount);
static_assert(std::variant_size_v<GgufArray::Elems> == kGgufValueTypeCount);

namespace {
// absl::StrCat takes absl::string_view, which is not std::string_view in this
// abseil build.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }
}  // namespace

std::string_view GgufValueTypeName(GgufValueType t) {
  static constexpr std::string_view kNames[kGgufValueTypeCount] = {
      "UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",  "FLOAT32",
      "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64"};
  const auto i = static_cast<uint32_t>(t);
  return i < kGgufValueTypeCount ? kNames[i] : "UNKNOWN";
}

size_t GgufArray::size() const {
  return std::visit(
      [](const auto& v) -> size_t {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::monostate>) {
          return 0;
        } else {
          return v.size();
        }
      },
      elems);
}

std::string DescribeType(const GgufValue& v) {
  if (const auto* a = std::get_if<GgufArray>(&v))
    return absl::StrCat("ARRAY of ", Sv(GgufValueTypeName(a->elem_type())));
  return std::string(GgufValueTypeName(TypeOf(v)));
}

std::optional<GgmlTypeInfo> GgmlTypeInfoOf(uint32_t type) {
  // ggml's type_traits: {values per block, bytes per block}. Ids ggml has
  // removed (4, 5, 31-33, 36-38) and ids newer than this table are unknown:
  // the parser refuses them, as it cannot bound their data.
  switch (type) {
    case 0:
      return GgmlTypeInfo{"F32", 1, 4};
    case 1:
      return GgmlTypeInfo{"F16", 1, 2};
    case 2:
      return GgmlTypeInfo{"Q4_0", 32, 18};
    case 3:
      return GgmlTypeInfo{"Q4_1", 32, 20};
    case 6:
      return GgmlTypeInfo{"Q5_0", 32, 22};
    case 7:
      return GgmlTypeInfo{"Q5_1", 32, 24};
    case 8:
      return GgmlTypeInfo{"Q8_0", 32, 34};
    case 9:
      return GgmlTypeInfo{"Q8_1", 32, 36};
    case 10:
      return GgmlTypeInfo{"Q2_K", 256, 84};
    case 11:
      return GgmlTypeInfo{"Q3_K", 256, 110};
    case 12:
      return GgmlTypeInfo{"Q4_K", 256, 144};
    case 13:
      return GgmlTypeInfo{"Q5_K", 256, 176};
    case 14:
      return GgmlTypeInfo{"Q6_K", 256, 210};
    case 15:
      return GgmlTypeInfo{"Q8_K", 256, 292};
    case 16:
      return GgmlTypeInfo{"IQ2_XXS", 256, 66};
    case 17:
      return GgmlTypeInfo{"IQ2_XS", 256, 74};
    case 18:
      return GgmlTypeInfo{"IQ3_XXS", 256, 98};
    case 19:
      return GgmlTypeInfo{"IQ1_S", 256, 50};
    case 20:
      return GgmlTypeInfo{"IQ4_NL", 32, 18};
    case 21:
      return GgmlTypeInfo{"IQ3_S", 256, 110};
    case 22:
      return GgmlTypeInfo{"IQ2_S", 256, 82};
    case 23:
      return GgmlTypeInfo{"IQ4_XS", 256, 136};
    case 24:
      return GgmlTypeInfo{"I8", 1, 1};
    case 25:
      return GgmlTypeInfo{"I16", 1, 2};
    case 26:
      return GgmlTypeInfo{"I32", 1, 4};
    case 27:
      return GgmlTypeInfo{"I64", 1, 8};
    case 28:
      return GgmlTypeInfo{"F64", 1, 8};
    case 29:
      return GgmlTypeInfo{"IQ1_M", 256, 56};
    case 30:
      return GgmlTypeInfo{"BF16", 1, 2};
    case 34:
      return GgmlTypeInfo{"TQ1_0", 256, 54};
    case 35:
      return GgmlTypeInfo{"TQ2_0", 256, 66};
    case 39:
      return GgmlTypeInfo{"MXFP4", 32, 17};
    default:
      return std::nullopt;
  }
}

std::string GgmlTypeName(uint32_t type) {
  if (auto info = GgmlTypeInfoOf(type)) return std::string(info->name);
  return absl::StrCat("type ", type);
}

// ---- typed getters ---------------------------------------------------------

namespace {

// The integer held by `v`, if it holds one of the integer types.
std::optional<int64_t> AsInt(const GgufValue& v, bool* out_of_range) {
  return std::visit(
      [&](const auto& x) -> std::optional<int64_t> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, uint64_t>) {
          if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            *out_of_range = true;
            return std::nullopt;
          }
          return static_cast<int64_t>(x);
        } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          return static_cast<int64_t>(x);
        } else {
          return std::nullopt;
        }
      },
      v);
}

}  // namespace

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = kv.find(key);
  return it == kv.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  for (const GgufTensorInfo& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<const GgufValue*> GgufFile::Need(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr)
    return absl::NotFoundError(absl::StrCat(origin, ": metadata key '", Sv(key), "' is missing"));
  return v;
}

absl::Status GgufFile::WrongType(std::string_view key, const GgufValue& v,
                                 std::string_view expected) const {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": metadata key '", Sv(key), "' is ",
                                                 DescribeType(v), ", expected ", Sv(expected)));
}

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* v, Need(key));
  bool out_of_range = false;
  if (auto i = AsInt(*v, &out_of_range)) return *i;
  if (out_of_range)
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": metadata key '", Sv(key), "' = ", std::get<uint64_t>(*v), " is out of range"));
  return WrongType(key, *v, "an integer");
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* v, Need(key));
  if (const auto* f = std::get_if<float>(v)) return *f;
  if (const auto* d = std::get_if<double>(v)) return *d;
  bool out_of_range = false;
  if (auto i = AsInt(*v, &out_of_range)) return static_cast<double>(*i);
  return WrongType(key, *v, "a number");
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* v, Need(key));
  if (const auto* b = std::get_if<bool>(v)) return *b;
  return WrongType(key, *v, "BOOL");
}

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* v, Need(key));
  if (const auto* s = std::get_if<std::string>(v)) return *s;
  return WrongType(key, *v, "STRING");
}

absl::StatusOr<const GgufArray*> GgufFile::GetArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* v, Need(key));
  if (const auto* a = std::get_if<GgufArray>(v)) return a;
  return WrongType(key, *v, "an ARRAY");
}

absl::StatusOr<const std::vector<std::string>*> GgufFile::GetStringArray(
    std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufArray* a, GetArray(key));
  if (const auto* s = std::get_if<std::vector<std::string>>(&a->elems)) return s;
  return WrongType(key, *Find(key), "ARRAY of STRING");
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufArray* a, GetArray(key));
  std::vector<int64_t> out;
  bool ok = true;
  std::visit(
      [&](const auto& v) {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, std::monostate>) {
          ok = false;
        } else {
          using T = typename V::value_type;
          if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
            out.reserve(v.size());
            for (T x : v) {
              if constexpr (std::is_same_v<T, uint64_t>) {
                if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) ok = false;
              }
              out.push_back(static_cast<int64_t>(x));
            }
          } else {
            ok = false;
          }
        }
      },
      a->elems);
  if (!ok) return WrongType(key, *Find(key), "an ARRAY of integers (in int64 range)");
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufArray* a, GetArray(key));
  if (const auto* f = std::get_if<std::vector<float>>(&a->elems)) return *f;
  if (const auto* d = std::get_if<std::vector<double>>(&a->elems))
    return std::vector<float>(d->begin(), d->end());
  return WrongType(key, *Find(key), "an ARRAY of FLOAT32");
}

// ---- the parser ------------------------------------------------------------

namespace {

// A cursor over the file's bytes: every read checks the bytes left first.
class Reader {
 public:
  Reader(const uint8_t* data, uint64_t size, absl::string_view origin)
      : data_(data), size_(size), origin_(origin) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(origin_, ": ", what));
  }

  absl::Status Need(uint64_t n, absl::string_view what) const {
    if (n <= remaining()) return absl::OkStatus();
    return Error(absl::StrCat("truncated: ", what, " needs ", n, " bytes at offset ", pos_,
                              " but the file has ", remaining(), " left (size ", size_, ")"));
  }

  template <class T>
  absl::StatusOr<T> Read(absl::string_view what) {
    RETURN_IF_ERROR(Need(sizeof(T), what));
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  void Skip(uint64_t n) { pos_ += n; }  // the caller has checked n with Need()

  // n elements of T, copied; the caller has checked n against remaining().
  template <class T>
  void ReadInto(std::vector<T>& out, uint64_t n) {
    out.resize(n);
    if (n > 0) std::memcpy(out.data(), data_ + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
  }

  // A string, or element `element` of the string array `what`. Messages are
  // built only on failure: vocabularies hold 10^5 strings.
  absl::StatusOr<std::string> ReadString(absl::string_view what, int64_t element = -1) {
    auto name = [&] {
      return element < 0 ? std::string(what) : absl::StrCat("element ", element, " of ", what);
    };
    if (remaining() < 8) return Need(8, absl::StrCat("the length of ", name()));
    uint64_t len;
    std::memcpy(&len, data_ + pos_, 8);
    pos_ += 8;
    if (len > remaining())
      return Error(absl::StrCat(name(), " claims ", len, " bytes at offset ", pos_, " but only ",
                                remaining(), " remain"));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  absl::string_view origin_;
};

// Bytes one element of a fixed-size type takes; strings count their u64
// length only, arrays their u32 type + u64 count. Used to reject counts that
// cannot fit in the remaining bytes before allocating.
uint64_t MinValueBytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kString:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kArray:
      return 12;
  }
  return 1;
}

absl::StatusOr<GgufValueType> ReadType(Reader& r, absl::string_view what) {
  ASSIGN_OR_RETURN(uint32_t t, r.Read<uint32_t>(what));
  if (t >= kGgufValueTypeCount) return r.Error(absl::StrCat(what, " is unknown value type ", t));
  return static_cast<GgufValueType>(t);
}

absl::StatusOr<bool> ReadBool(Reader& r, absl::string_view what) {
  ASSIGN_OR_RETURN(uint8_t b, r.Read<uint8_t>(what));
  if (b > 1) return r.Error(absl::StrCat(what, " is BOOL but holds ", int{b}));
  return b == 1;
}

// Reads `n` elements of `type` into the array's alternative `I` (== type id).
template <size_t I>
absl::Status ReadElems(Reader& r, uint64_t n, GgufArray& a, absl::string_view what) {
  auto& v = a.elems.emplace<I>();
  using T = typename std::decay_t<decltype(v)>::value_type;
  if constexpr (std::is_same_v<T, std::string>) {
    v.reserve(n);  // n <= remaining / 8, checked by the caller
    for (uint64_t i = 0; i < n; ++i) {
      ASSIGN_OR_RETURN(std::string s, r.ReadString(what, static_cast<int64_t>(i)));
      v.push_back(std::move(s));
    }
  } else if constexpr (std::is_same_v<T, bool>) {
    v.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
      ASSIGN_OR_RETURN(bool b, ReadBool(r, absl::StrCat("element ", i, " of ", what)));
      v.push_back(b);
    }
  } else {
    r.ReadInto(v, n);
  }
  return absl::OkStatus();
}

absl::StatusOr<GgufArray> ReadArray(Reader& r, absl::string_view what) {
  ASSIGN_OR_RETURN(GgufValueType et, ReadType(r, absl::StrCat("the element type of ", what)));
  ASSIGN_OR_RETURN(uint64_t n, r.Read<uint64_t>(absl::StrCat("the element count of ", what)));
  if (et == GgufValueType::kArray)
    return r.Error(absl::StrCat(what, " is an array of arrays (not supported)"));
  if (n > r.remaining() / MinValueBytes(et))
    return r.Error(absl::StrCat(what, " claims ", n, " elements of ", Sv(GgufValueTypeName(et)),
                                " at offset ", r.pos(), " but only ", r.remaining(),
                                " bytes remain"));
  GgufArray a;
  absl::Status s;
  switch (et) {
    case GgufValueType::kUint8:
      s = ReadElems<0>(r, n, a, what);
      break;
    case GgufValueType::kInt8:
      s = ReadElems<1>(r, n, a, what);
      break;
    case GgufValueType::kUint16:
      s = ReadElems<2>(r, n, a, what);
      break;
    case GgufValueType::kInt16:
      s = ReadElems<3>(r, n, a, what);
      break;
    case GgufValueType::kUint32:
      s = ReadElems<4>(r, n, a, what);
      break;
    case GgufValueType::kInt32:
      s = ReadElems<5>(r, n, a, what);
      break;
    case GgufValueType::kFloat32:
      s = ReadElems<6>(r, n, a, what);
      break;
    case GgufValueType::kBool:
      s = ReadElems<7>(r, n, a, what);
      break;
    case GgufValueType::kString:
      s = ReadElems<8>(r, n, a, what);
      break;
    case GgufValueType::kArray:
      break;  // rejected above
    case GgufValueType::kUint64:
      s = ReadElems<10>(r, n, a, what);
      break;
    case GgufValueType::kInt64:
      s = ReadElems<11>(r, n, a, what);
      break;
    case GgufValueType::kFloat64:
      s = ReadElems<12>(r, n, a, what);
      break;
  }
  RETURN_IF_ERROR(s);
  return a;
}

template <size_t I>
absl::StatusOr<GgufValue> ReadScalar(Reader& r, absl::string_view what) {
  using T = std::variant_alternative_t<I, GgufValue>;
  ASSIGN_OR_RETURN(T v, r.Read<T>(what));
  return GgufValue(std::in_place_index<I>, v);
}

absl::StatusOr<GgufValue> ReadValue(Reader& r, GgufValueType type, absl::string_view what) {
  switch (type) {
    case GgufValueType::kUint8:
      return ReadScalar<0>(r, what);
    case GgufValueType::kInt8:
      return ReadScalar<1>(r, what);
    case GgufValueType::kUint16:
      return ReadScalar<2>(r, what);
    case GgufValueType::kInt16:
      return ReadScalar<3>(r, what);
    case GgufValueType::kUint32:
      return ReadScalar<4>(r, what);
    case GgufValueType::kInt32:
      return ReadScalar<5>(r, what);
    case GgufValueType::kFloat32:
      return ReadScalar<6>(r, what);
    case GgufValueType::kBool: {
      ASSIGN_OR_RETURN(bool b, ReadBool(r, what));
      return GgufValue(std::in_place_index<7>, b);
    }
    case GgufValueType::kString: {
      ASSIGN_OR_RETURN(std::string s, r.ReadString(what));
      return GgufValue(std::in_place_index<8>, std::move(s));
    }
    case GgufValueType::kArray: {
      ASSIGN_OR_RETURN(GgufArray a, ReadArray(r, what));
      return GgufValue(std::in_place_index<9>, std::move(a));
    }
    case GgufValueType::kUint64:
      return ReadScalar<10>(r, what);
    case GgufValueType::kInt64:
      return ReadScalar<11>(r, what);
    case GgufValueType::kFloat64:
      return ReadScalar<12>(r, what);
  }
  return r.Error(absl::StrCat(what, " has an unknown value type"));
}

absl::Status ReadKvs(Reader& r, uint64_t n_kv, GgufFile& f) {
  for (uint64_t i = 0; i < n_kv; ++i) {
    ASSIGN_OR_RETURN(std::string key, r.ReadString(absl::StrCat("the key of metadata entry ", i)));
    const std::string what = absl::StrCat("metadata key '", key, "'");
    ASSIGN_OR_RETURN(GgufValueType type, ReadType(r, absl::StrCat("the type of ", what)));
    ASSIGN_OR_RETURN(GgufValue v, ReadValue(r, type, what));
    if (f.kv.count(key)) return r.Error(absl::StrCat(what, " appears twice"));
    f.kv.emplace(std::move(key), std::move(v));
  }
  return absl::OkStatus();
}

// Reads one tensor info and computes its element count; the byte range is
// filled in once the data section start is known.
absl::StatusOr<GgufTensorInfo> ReadTensorInfo(Reader& r, uint64_t index) {
  GgufTensorInfo t;
  ASSIGN_OR_RETURN(t.name, r.ReadString(absl::StrCat("the name of tensor ", index)));
  const std::string what = absl::StrCat("tensor '", t.name, "'");
  ASSIGN_OR_RETURN(uint32_t n_dims, r.Read<uint32_t>(absl::StrCat("the dim count of ", what)));
  if (n_dims < 1 || n_dims > kGgufMaxDims)
    return r.Error(absl::StrCat(what, " has ", n_dims, " dims (expected 1 to ", kGgufMaxDims, ")"));
  t.ne.resize(n_dims);
  t.numel = 1;
  bool overflow = false;
  for (uint32_t d = 0; d < n_dims; ++d) {
    ASSIGN_OR_RETURN(t.ne[d], r.Read<uint64_t>(absl::StrCat("the dims of ", what)));
    if (t.ne[d] == 0) return r.Error(absl::StrCat(what, " has a zero dimension"));
    // Keep numel below 2^63 (ggml counts elements in int64).
    if (t.ne[d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / t.numel)
      overflow = true;
    else
      t.numel *= t.ne[d];
  }
  if (overflow) {
    std::string dims;
    for (uint64_t n : t.ne) absl::StrAppend(&dims, dims.empty() ? "" : ", ", n);
    return r.Error(absl::StrCat(what, " has dims [", dims, "] whose element count overflows"));
  }
  ASSIGN_OR_RETURN(t.type, r.Read<uint32_t>(absl::StrCat("the type of ", what)));
  ASSIGN_OR_RETURN(t.offset, r.Read<uint64_t>(absl::StrCat("the offset of ", what)));
  return t;
}

// Byte size of a tensor from its type and shape, checking that rows are a
// whole number of blocks.
absl::StatusOr<uint64_t> TensorBytes(const Reader& r, const GgufTensorInfo& t) {
  const std::optional<GgmlTypeInfo> info = GgmlTypeInfoOf(t.type);
  if (!info) return r.Error(absl::StrCat("tensor '", t.name, "' has unknown ggml type ", t.type));
  if (t.ne[0] % info->block_values != 0)
    return r.Error(absl::StrCat("tensor '", t.name, "' is ", Sv(info->name), " with row length ",
                                t.ne[0], ", not a multiple of its block size ",
                                info->block_values));
  const uint64_t blocks = t.numel / info->block_values;
  if (blocks > std::numeric_limits<uint64_t>::max() / info->block_bytes)
    return r.Error(absl::StrCat("tensor '", t.name, "' byte size overflows"));
  return blocks * info->block_bytes;
}

}  // namespace

absl::StatusOr<GgufFile> ParseGguf(const uint8_t* data, uint64_t size, std::string_view origin) {
  Reader r(data, size, Sv(origin));
  GgufFile f;
  f.origin = std::string(origin);

  RETURN_IF_ERROR(r.Need(4, "the magic"));
  if (std::memcmp(data, "GGUF", 4) != 0)
    return r.Error("not a GGUF file (bad magic; expected \"GGUF\")");
  r.Skip(4);
  ASSIGN_OR_RETURN(f.version, r.Read<uint32_t>("the version"));
  if (f.version != 2 && f.version != 3) {
    // A big-endian file reads as 0x03000000 here.
    if (f.version == 0x02000000u || f.version == 0x03000000u)
      return r.Error("big-endian GGUF files are not supported");
    return r.Error(absl::StrCat("unsupported GGUF version ", f.version, " (expected 3 or 2)"));
  }
  ASSIGN_OR_RETURN(uint64_t n_tensors, r.Read<uint64_t>("the tensor count"));
  ASSIGN_OR_RETURN(uint64_t n_kv, r.Read<uint64_t>("the metadata count"));
  // Smallest possible entries: a kv is an 8-byte key length, a 4-byte type
  // and a 1-byte value; a tensor info an 8-byte name length, u32 n_dims, one
  // u64 dim, u32 type and u64 offset.
  constexpr uint64_t kMinKv = 8 + 4 + 1, kMinTensor = 8 + 4 + 8 + 4 + 8;
  if (n_kv > r.remaining() / kMinKv)
    return r.Error(absl::StrCat("metadata count ", n_kv, " cannot fit in the ", r.remaining(),
                                " bytes after the header"));
  if (n_tensors > r.remaining() / kMinTensor)
    return r.Error(absl::StrCat("tensor count ", n_tensors, " cannot fit in the ", r.remaining(),
                                " bytes after the header"));

  RETURN_IF_ERROR(ReadKvs(r, n_kv, f));

  if (const GgufValue* a = f.Find("general.alignment")) {
    bool out_of_range = false;
    const std::optional<int64_t> align = AsInt(*a, &out_of_range);
    if (!align || *align <= 0 || !std::has_single_bit(static_cast<uint64_t>(*align)) ||
        *align > (int64_t{1} << 30))
      return r.Error("general.alignment must be a power of two integer up to 2^30");
    f.alignment = static_cast<uint64_t>(*align);
  }

  // Bounded by n_tensors <= remaining / kMinTensor above.
  f.tensors.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    ASSIGN_OR_RETURN(GgufTensorInfo t, ReadTensorInfo(r, i));
    f.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment. Real
  // writers pad to it; a file with no tensor data may end before it.
  f.data_start = (r.pos() + f.alignment - 1) / f.alignment * f.alignment;

  std::map<std::string_view, size_t> by_name;
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    GgufTensorInfo& t = f.tensors[i];
    const std::string what = absl::StrCat("tensor '", t.name, "'");
    if (!by_name.emplace(t.name, i).second) return r.Error(absl::StrCat(what, " appears twice"));
    ASSIGN_OR_RETURN(uint64_t bytes, TensorBytes(r, t));
    if (t.offset % f.alignment != 0)
      return r.Error(absl::StrCat(what, " has offset ", t.offset,
                                  ", not a multiple of the alignment ", f.alignment));
    if (f.data_start > size || t.offset > size - f.data_start ||
        bytes > size - f.data_start - t.offset)
      return r.Error(absl::StrCat(what, " data (", bytes, " bytes at data offset ", t.offset,
                                  ", file offset ", f.data_start, " + ", t.offset,
                                  ") runs past the end of the file (size ", size, ")"));
    t.begin = f.data_start + t.offset;
    t.end = t.begin + bytes;
  }

  // No two tensors may share bytes.
  std::vector<const GgufTensorInfo*> sorted;
  sorted.reserve(f.tensors.size());
  for (const GgufTensorInfo& t : f.tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const GgufTensorInfo* a, const GgufTensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i]->begin < sorted[i - 1]->end)
      return r.Error(absl::StrCat("tensors '", sorted[i - 1]->name, "' [", sorted[i - 1]->begin,
                                  ", ", sorted[i - 1]->end, ") and '", sorted[i]->name, "' [",
                                  sorted[i]->begin, ", ", sorted[i]->end, ") overlap"));
  }
  return f;
}

}  // namespace paged
