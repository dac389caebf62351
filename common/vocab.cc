#include "common/vocab.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace paged {
namespace {

constexpr char kMagic[8] = {'P', 'G', 'V', 'O', 'C', 'A', 'B', '1'};

template <typename T>
void Put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  template <typename T>
  bool Get(T* v) {
    if (s_.size() - pos_ < sizeof(T)) return false;
    std::memcpy(v, s_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool GetBytes(size_t n, std::string* out) {
    if (s_.size() - pos_ < n) return false;
    out->assign(s_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  size_t remaining() const { return s_.size() - pos_; }

 private:
  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

std::string SerializeVocab(const Vocab& v) {
  std::string out(kMagic, sizeof(kMagic));
  Put<uint32_t>(out, static_cast<uint32_t>(v.pieces.size()));
  Put<int32_t>(out, v.bos_id);
  Put<int32_t>(out, v.eos_id);
  Put<int32_t>(out, v.unk_id);
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    Put<float>(out, i < v.scores.size() ? v.scores[i] : 0.f);
    Put<int32_t>(out, i < v.types.size() ? v.types[i] : Vocab::kNormal);
    Put<uint32_t>(out, static_cast<uint32_t>(v.pieces[i].size()));
    out.append(v.pieces[i]);
  }
  return out;
}

absl::StatusOr<Vocab> ParseVocab(std::string_view blob) {
  auto bad = [](std::string_view what) {
    return absl::DataLossError(absl::StrCat("tokenizer blob: ", std::string(what)));
  };
  if (blob.size() < sizeof(kMagic) || std::memcmp(blob.data(), kMagic, sizeof(kMagic)) != 0)
    return bad("bad magic");
  Reader r(blob.substr(sizeof(kMagic)));
  uint32_t n = 0;
  Vocab v;
  if (!r.Get(&n) || !r.Get(&v.bos_id) || !r.Get(&v.eos_id) || !r.Get(&v.unk_id))
    return bad("truncated header");
  if (n > r.remaining() / 12)
    return bad(absl::StrCat("claims ", n, " pieces, too many for its size"));
  v.pieces.resize(n);
  v.scores.resize(n);
  v.types.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t len = 0;
    if (!r.Get(&v.scores[i]) || !r.Get(&v.types[i]) || !r.Get(&len) ||
        !r.GetBytes(len, &v.pieces[i]))
      return bad(absl::StrCat("truncated at piece ", i));
  }
  auto in_range = [n](int32_t id) { return id >= -1 && id < static_cast<int32_t>(n); };
  if (!in_range(v.bos_id) || !in_range(v.eos_id) || !in_range(v.unk_id))
    return bad("special token id outside the vocabulary");
  return v;
}

}  // namespace paged
