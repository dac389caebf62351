#include "tokenizer/sp_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"

namespace paged {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // "▁" U+2581
constexpr std::string_view kUnkText = "\xE2\x96\x85";    // "▅" U+2585

bool IsCont(unsigned char c) { return (c & 0xC0) == 0x80; }

// Length of the well-formed UTF-8 character at the start of `s` (non-empty),
// or 1 when it does not start with one (a stray or truncated byte).
size_t Utf8CharLen(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return s.size() >= 2 && IsCont(b(1)) ? 2 : 1;
  if (c >= 0xE0 && c <= 0xEF) {
    if (s.size() < 3 || !IsCont(b(1)) || !IsCont(b(2))) return 1;
    if (c == 0xE0 && b(1) < 0xA0) return 1;  // overlong
    if (c == 0xED && b(1) > 0x9F) return 1;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (s.size() < 4 || !IsCont(b(1)) || !IsCont(b(2)) || !IsCont(b(3))) return 1;
    if (c == 0xF0 && b(1) < 0x90) return 1;  // overlong
    if (c == 0xF4 && b(1) > 0x8F) return 1;  // above U+10FFFF
    return 4;
  }
  return 1;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The byte a "<0xNN>" piece stands for, or -1.
int ParseBytePiece(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  const int hi = HexValue(p[3]), lo = HexValue(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::string UnescapeSpaces(std::string_view p) {
  std::string out;
  out.reserve(p.size());
  for (size_t i = 0; i < p.size();) {
    if (p.substr(i, kSpaceMark.size()) == kSpaceMark) {
      out.push_back(' ');
      i += kSpaceMark.size();
    } else {
      out.push_back(p[i++]);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<SpTokenizer> SpTokenizer::Create(Vocab v) {
  const size_t n = v.pieces.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer: empty vocabulary");
  if (n > static_cast<size_t>(INT32_MAX))
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", n, " pieces, too many"));
  if (v.scores.size() != n || v.types.size() != n)
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", n, " pieces but ",
                                                   v.scores.size(), " scores and ", v.types.size(),
                                                   " types"));
  for (const auto& [name, id] :
       {std::pair{"bos", v.bos_id}, {"eos", v.eos_id}, {"unk", v.unk_id}}) {
    if (id < -1 || id >= static_cast<int64_t>(n))
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer: ", name, " id ", id, " outside the vocabulary of ", n));
  }

  SpTokenizer t;
  t.byte_ids_.fill(-1);
  t.texts_.resize(n);
  t.mergeable_.reserve(n);
  t.all_pieces_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = static_cast<int32_t>(i);
    const std::string& piece = v.pieces[i];
    if (std::isnan(v.scores[i]))
      return absl::InvalidArgumentError(absl::StrCat("tokenizer: piece ", i, " has a NaN score"));
    t.all_pieces_.emplace(piece, id);  // keeps the lowest id of a duplicate
    switch (v.types[i]) {
      case Vocab::kControl:
      case Vocab::kUnused:
        break;  // decodes to ""
      case Vocab::kUnknown:
        t.texts_[i] = kUnkText;
        break;
      case Vocab::kByte:
        if (const int b = ParseBytePiece(piece); b >= 0) {
          if (t.byte_ids_[b] < 0) t.byte_ids_[b] = id;
          t.has_byte_tokens_ = true;
          t.texts_[i] = std::string(1, static_cast<char>(b));
          break;
        }
        t.texts_[i] = UnescapeSpaces(piece);  // a BYTE piece of another form: its text
        break;
      default:  // kNormal, kUserDefined, and types we do not know
        t.texts_[i] = UnescapeSpaces(piece);
        if (!piece.empty() && t.mergeable_.emplace(piece, id).second)
          t.max_piece_bytes_ = std::max(t.max_piece_bytes_, piece.size());
        break;
    }
  }
  if (v.unk_id < 0) {
    for (int b = 0; b < 256; ++b) {
      if (t.byte_ids_[b] < 0) {
        static constexpr char kHex[] = "0123456789ABCDEF";
        return absl::InvalidArgumentError(absl::StrCat(
            "tokenizer: no unk token and no byte token <0x",
            std::string{kHex[b / 16], kHex[b % 16]}, ">: some text could not be encoded"));
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const int32_t type = v.types[i];
    if (!v.pieces[i].empty() &&
        (type == Vocab::kControl || type == Vocab::kUnknown || type == Vocab::kUserDefined))
      t.special_by_byte_[static_cast<unsigned char>(v.pieces[i][0])].push_back(int32_t(i));
  }
  for (auto& ids : t.special_by_byte_) {
    std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
      return v.pieces[size_t(a)].size() > v.pieces[size_t(b)].size();
    });
  }
  t.vocab_ = std::move(v);
  return t;
}

int32_t SpTokenizer::MergeableId(std::string_view text) const {
  auto it = mergeable_.find(text);
  return it == mergeable_.end() ? -1 : it->second;
}

std::string SpTokenizer::IdToPiece(int32_t id) const {
  return id < 0 || size_t(id) >= vocab_.size() ? std::string() : vocab_.pieces[size_t(id)];
}

int32_t SpTokenizer::PieceToId(std::string_view piece) const {
  auto it = all_pieces_.find(piece);
  return it == all_pieces_.end() ? -1 : it->second;
}

bool SpTokenizer::IsControl(int32_t token) const {
  return token >= 0 && static_cast<size_t>(token) < vocab_.size() &&
         vocab_.types[token] == Vocab::kControl;
}

void SpTokenizer::AppendFallback(std::string_view symbol, std::vector<int32_t>* out) const {
  if (!has_byte_tokens_) {
    if (vocab_.unk_id >= 0) out->push_back(vocab_.unk_id);
    return;
  }
  for (char c : symbol) {
    const int32_t id = byte_ids_[static_cast<unsigned char>(c)];
    if (id >= 0) {
      out->push_back(id);
    } else if (vocab_.unk_id >= 0) {
      out->push_back(vocab_.unk_id);
    }
  }
}

std::vector<int32_t> SpTokenizer::Encode(std::string_view text, bool add_bos,
                                         bool parse_special) const {
  std::vector<int32_t> out;
  if (add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
  if (text.empty()) return out;
  if (!parse_special) {
    EncodeText(text, /*dummy_prefix=*/true, &out);
    return out;
  }
  // Cut out the special pieces, leftmost and longest; the dummy prefix goes
  // on text at the start or right after one.
  size_t done = 0;  // text before this is encoded
  bool after_special = true;
  for (size_t pos = 0; pos < text.size();) {
    int32_t found = -1;
    for (int32_t id : special_by_byte_[static_cast<unsigned char>(text[pos])]) {
      if (text.substr(pos).starts_with(vocab_.pieces[size_t(id)])) {
        found = id;
        break;
      }
    }
    if (found < 0) {
      ++pos;
      continue;
    }
    if (done < pos) {
      EncodeText(text.substr(done, pos - done), after_special, &out);
      after_special = false;
    }
    out.push_back(found);
    after_special = true;
    pos += vocab_.pieces[size_t(found)].size();
    done = pos;
  }
  if (done < text.size()) EncodeText(text.substr(done), after_special, &out);
  return out;
}

void SpTokenizer::EncodeText(std::string_view text, bool dummy_prefix,
                             std::vector<int32_t>* out_ids) const {
  std::vector<int32_t>& out = *out_ids;
  // Dummy prefix, spaces escaped.
  std::string norm(dummy_prefix ? kSpaceMark : std::string_view());
  norm.reserve(text.size() + 2 * kSpaceMark.size());
  for (char c : text) {
    if (c == ' ') {
      norm.append(kSpaceMark);
    } else {
      norm.push_back(c);
    }
  }

  // One symbol per character, linked in text order. A symbol covers
  // norm[off, off + len); len == 0 once merged into its left neighbour.
  struct Symbol {
    int32_t prev;
    int32_t next;
    size_t off;
    size_t len;
  };
  std::vector<Symbol> sym;
  sym.reserve(norm.size());
  for (size_t off = 0; off < norm.size();) {
    const size_t len = Utf8CharLen(std::string_view(norm).substr(off));
    const int32_t i = static_cast<int32_t>(sym.size());
    sym.push_back({i - 1, i + 1, off, len});
    off += len;
  }
  sym.back().next = -1;

  // Candidate merges, best first: highest score, then leftmost.
  struct Bigram {
    float score;
    int32_t left;
    int32_t right;
    size_t len;  // bytes of the merged text when queued; stale if it changed
  };
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const size_t len = sym[left].len + sym[right].len;
    if (len > max_piece_bytes_) return;
    const int32_t id = MergeableId(std::string_view(norm).substr(sym[left].off, len));
    if (id < 0) return;
    queue.push({vocab_.scores[id], left, right, len});
  };
  for (size_t i = 1; i < sym.size(); ++i)
    try_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    // Stale: one side was merged away, or grew, since this pair was queued.
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    const std::string_view s = std::string_view(norm).substr(sym[i].off, sym[i].len);
    const int32_t id = MergeableId(s);
    if (id >= 0) {
      out.push_back(id);
    } else {
      AppendFallback(s, &out);
    }
  }
}

std::string SpTokenizer::DecodePiece(int32_t prev_token, int32_t token) const {
  if (token < 0 || static_cast<size_t>(token) >= texts_.size()) return "";
  std::string_view s = texts_[token];
  if ((prev_token < 0 || IsBos(prev_token)) && vocab_.types[token] != Vocab::kByte && !s.empty() &&
      s[0] == ' ') {
    s.remove_prefix(1);
  }
  return std::string(s);
}

}  // namespace paged
