#include "common/tokenizer_bundle.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace paged {
namespace {

constexpr char kMagic[8] = {'P', 'G', 'T', 'O', 'K', 'E', 'N', '1'};
constexpr uint32_t kFields = 3;

template <typename T>
void Put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

}  // namespace

std::string SerializeTokenizerBundle(const TokenizerBundle& b) {
  std::string out(kMagic, sizeof(kMagic));
  Put<uint32_t>(out, static_cast<uint32_t>(b.kind));
  Put<uint32_t>(out, kFields);
  for (const std::string* f : {&b.payload, &b.chat_template, &b.options}) {
    Put<uint64_t>(out, f->size());
    out.append(*f);
  }
  return out;
}

absl::StatusOr<TokenizerBundle> ParseTokenizerBundle(std::string_view blob) {
  auto bad = [](std::string_view what) {
    return absl::DataLossError(absl::StrCat("tokenizer blob: ", std::string(what)));
  };
  if (blob.size() < sizeof(kMagic) + 8 || std::memcmp(blob.data(), kMagic, sizeof(kMagic)) != 0)
    return bad("bad magic (not PGTOKEN1)");
  uint32_t kind = 0, n = 0;
  std::memcpy(&kind, blob.data() + 8, 4);
  std::memcpy(&n, blob.data() + 12, 4);
  if (kind > static_cast<uint32_t>(TokenizerKind::kHfJson))
    return bad(absl::StrCat("unknown tokenizer kind ", kind));
  TokenizerBundle b;
  b.kind = static_cast<TokenizerKind>(kind);
  std::string* fields[kFields] = {&b.payload, &b.chat_template, &b.options};
  size_t pos = 16;
  for (uint32_t i = 0; i < n; ++i) {
    uint64_t len = 0;
    if (blob.size() - pos < 8) return bad(absl::StrCat("truncated at field ", i));
    std::memcpy(&len, blob.data() + pos, 8);
    pos += 8;
    if (blob.size() - pos < len) return bad(absl::StrCat("field ", i, " runs past the end"));
    if (i < kFields) fields[i]->assign(blob.data() + pos, size_t(len));
    pos += size_t(len);
  }
  return b;
}

}  // namespace paged
