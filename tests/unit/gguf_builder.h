// A small GGUF writer for tests: builds valid files key by key and tensor by
// tensor, and malformed ones through raw values, lying counts and explicit
// offsets. Header-only; see store/gguf.h for the format.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace paged::testing {

class GgufBuilder {
 public:
  // GGUF value type ids.
  enum : uint32_t {
    kU8 = 0,
    kI8 = 1,
    kU16 = 2,
    kI16 = 3,
    kU32 = 4,
    kI32 = 5,
    kF32 = 6,
    kBool = 7,
    kString = 8,
    kArray = 9,
    kU64 = 10,
    kI64 = 11,
    kF64 = 12,
  };
  // ggml tensor type ids.
  enum : uint32_t { kTypeF32 = 0, kTypeF16 = 1, kTypeQ4_0 = 2, kTypeQ8_0 = 8, kTypeBF16 = 30 };

  // ---- encoders ----
  template <class T>
  static std::string Le(T v) {
    std::string s(sizeof(T), '\0');
    std::memcpy(s.data(), &v, sizeof(T));
    return s;
  }
  static std::string Str(std::string_view v) { return Le<uint64_t>(v.size()) + std::string(v); }
  static std::string F32Bytes(const std::vector<float>& v) {
    std::string s(v.size() * 4, '\0');
    if (!v.empty()) std::memcpy(s.data(), v.data(), s.size());
    return s;
  }

  // ---- metadata: setting a key again replaces its value ----
  GgufBuilder& U8(std::string_view k, uint8_t v) { return Kv(k, kU8, Le(v)); }
  GgufBuilder& I8(std::string_view k, int8_t v) { return Kv(k, kI8, Le(v)); }
  GgufBuilder& U16(std::string_view k, uint16_t v) { return Kv(k, kU16, Le(v)); }
  GgufBuilder& I16(std::string_view k, int16_t v) { return Kv(k, kI16, Le(v)); }
  GgufBuilder& U32(std::string_view k, uint32_t v) { return Kv(k, kU32, Le(v)); }
  GgufBuilder& I32(std::string_view k, int32_t v) { return Kv(k, kI32, Le(v)); }
  GgufBuilder& F32(std::string_view k, float v) { return Kv(k, kF32, Le(v)); }
  GgufBuilder& Bool(std::string_view k, bool v) { return Kv(k, kBool, Le<uint8_t>(v ? 1 : 0)); }
  GgufBuilder& U64(std::string_view k, uint64_t v) { return Kv(k, kU64, Le(v)); }
  GgufBuilder& I64(std::string_view k, int64_t v) { return Kv(k, kI64, Le(v)); }
  GgufBuilder& F64(std::string_view k, double v) { return Kv(k, kF64, Le(v)); }
  GgufBuilder& String(std::string_view k, std::string_view v) { return Kv(k, kString, Str(v)); }
  GgufBuilder& StringArray(std::string_view k, const std::vector<std::string>& v) {
    std::string s = Le<uint32_t>(kString) + Le<uint64_t>(v.size());
    for (const std::string& e : v) s += Str(e);
    return Kv(k, kArray, s);
  }
  template <class T>
  GgufBuilder& Array(std::string_view k, uint32_t elem_type, const std::vector<T>& v) {
    std::string s = Le<uint32_t>(elem_type) + Le<uint64_t>(v.size());
    for (const T& e : v) s += Le(e);
    return Kv(k, kArray, s);
  }
  GgufBuilder& F32Array(std::string_view k, const std::vector<float>& v) {
    return Array(k, kF32, v);
  }
  GgufBuilder& I32Array(std::string_view k, const std::vector<int32_t>& v) {
    return Array(k, kI32, v);
  }
  // The data section alignment, written as general.alignment (UINT32).
  GgufBuilder& Alignment(uint32_t a) {
    alignment_ = a;
    return U32("general.alignment", a);
  }
  // A key with `type` and already-encoded value bytes, appended even when the
  // key exists (for duplicate keys, unknown types, lying lengths).
  GgufBuilder& RawKv(std::string_view k, uint32_t type, std::string value) {
    kvs_.push_back({std::string(k), Le(type) + value});
    return *this;
  }
  GgufBuilder& Erase(std::string_view k) {
    std::erase_if(kvs_, [&](const KvEntry& e) { return e.key == k; });
    return *this;
  }

  // ---- tensors ----
  // `ne` in ggml order (ne[0] innermost). Data is placed at the next aligned
  // offset unless `offset` is given; it may be shorter than the type and shape
  // imply (to make a file end early).
  GgufBuilder& Tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type,
                      std::string data, std::optional<uint64_t> offset = std::nullopt) {
    tensors_.push_back({std::string(name), std::move(ne), type, offset, std::move(data)});
    return *this;
  }
  GgufBuilder& F32Tensor(std::string_view name, std::vector<uint64_t> ne, float first = 0.f) {
    uint64_t n = 1;
    for (uint64_t d : ne) n *= d;
    std::vector<float> v(n);
    for (uint64_t i = 0; i < n; ++i) v[i] = first + 0.001f * static_cast<float>(i);
    return Tensor(name, std::move(ne), kTypeF32, F32Bytes(v));
  }
  GgufBuilder& EraseTensor(std::string_view name) {
    std::erase_if(tensors_, [&](const TensorEntry& t) { return t.name == name; });
    return *this;
  }

  // ---- header overrides ----
  GgufBuilder& Magic(std::string m) {
    magic_ = std::move(m);
    return *this;
  }
  GgufBuilder& Version(uint32_t v) {
    version_ = v;
    return *this;
  }
  GgufBuilder& TensorCount(uint64_t n) {
    n_tensors_ = n;
    return *this;
  }
  GgufBuilder& KvCount(uint64_t n) {
    n_kv_ = n;
    return *this;
  }

  std::string Build() const {
    std::string out = magic_ + Le(version_);
    out += Le<uint64_t>(n_tensors_.value_or(tensors_.size()));
    out += Le<uint64_t>(n_kv_.value_or(kvs_.size()));
    for (const KvEntry& kv : kvs_) out += Str(kv.key) + kv.typed_value;

    std::vector<uint64_t> offsets;
    uint64_t cursor = 0, data_size = 0;
    for (const TensorEntry& t : tensors_) {
      const uint64_t off = t.offset.value_or(AlignUp(cursor));
      offsets.push_back(off);
      if (t.data.empty()) continue;  // offsets may then point anywhere
      cursor = std::max(cursor, off + t.data.size());
      data_size = std::max(data_size, off + t.data.size());
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorEntry& t = tensors_[i];
      out += Str(t.name) + Le<uint32_t>(static_cast<uint32_t>(t.ne.size()));
      for (uint64_t d : t.ne) out += Le(d);
      out += Le(t.type) + Le(offsets[i]);
    }
    if (tensors_.empty()) return out;
    out.resize(AlignUp(out.size()), '\0');
    const size_t data_start = out.size();
    out.resize(data_start + data_size, '\0');
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const std::string& d = tensors_[i].data;
      if (d.empty()) continue;
      std::copy(d.begin(), d.end(),
                out.begin() + static_cast<std::ptrdiff_t>(data_start + offsets[i]));
    }
    return out;
  }

 private:
  struct KvEntry {
    std::string key;
    std::string typed_value;  // u32 type + value bytes
  };
  struct TensorEntry {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    std::optional<uint64_t> offset;
    std::string data;
  };

  GgufBuilder& Kv(std::string_view k, uint32_t type, const std::string& value) {
    for (KvEntry& e : kvs_) {
      if (e.key == k) {
        e.typed_value = Le(type) + value;
        return *this;
      }
    }
    return RawKv(k, type, value);
  }
  uint64_t AlignUp(uint64_t x) const { return (x + alignment_ - 1) / alignment_ * alignment_; }

  std::string magic_ = "GGUF";
  uint32_t version_ = 3;
  std::optional<uint64_t> n_tensors_, n_kv_;
  uint64_t alignment_ = 32;
  std::vector<KvEntry> kvs_;
  std::vector<TensorEntry> tensors_;
};

}  // namespace paged::testing
