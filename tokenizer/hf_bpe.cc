#include "tokenizer/hf_bpe.h"

#include <queue>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "tokenizer/hf_regex.h"

namespace paged {
namespace {

using nlohmann::json;

// Ids above this are refused: a vocabulary is a dense table indexed by id.
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

absl::Status Bad(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("model BPE: ", std::string(what)));
}

std::string Quote(std::string_view s) {
  return absl::StrCat("'", absl::CEscape(std::string(s)), "'");
}

}  // namespace

absl::StatusOr<HfBpe> HfBpe::FromJson(const json& model) {
  if (!model.is_object()) return absl::InvalidArgumentError("'model' is not an object");
  // HF writes "type": "BPE"; files from before it was written are BPE too
  // when they have merges.
  const auto type = model.find("type");
  if (type != model.end() && !(type->is_string() && type->get<std::string>() == "BPE"))
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported model type ", type->dump(), " (supported: BPE)"));
  if (type == model.end() && !model.contains("merges"))
    return absl::InvalidArgumentError("unsupported model: no type and no merges");

  if (auto d = model.find("dropout"); d != model.end() && !d->is_null()) {
    if (!d->is_number() || d->get<double>() != 0.0) return Bad("dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto a = model.find(key); a != model.end() && !a->is_null()) {
      if (!a->is_string()) return Bad(absl::StrCat("'", key, "' is not a string"));
      if (!a->get<std::string>().empty()) return Bad(absl::StrCat("'", key, "' is not supported"));
    }
  }

  HfBpe bpe;
  ASSIGN_OR_RETURN(bpe.fuse_unk_, [&]() -> absl::StatusOr<bool> {
    auto it = model.find("fuse_unk");
    if (it == model.end() || it->is_null()) return false;
    if (!it->is_boolean()) return Bad("'fuse_unk' is not a boolean");
    return it->get<bool>();
  }());
  for (auto [key, field] : {std::pair{"byte_fallback", &bpe.byte_fallback_},
                            std::pair{"ignore_merges", &bpe.ignore_merges_}}) {
    auto it = model.find(key);
    if (it == model.end() || it->is_null()) continue;
    if (!it->is_boolean()) return Bad(absl::StrCat("'", key, "' is not a boolean"));
    *field = it->get<bool>();
  }

  // vocab: {token: id}
  const auto vocab = model.find("vocab");
  if (vocab == model.end() || !vocab->is_object())
    return Bad("'vocab' is missing or not an object");
  bpe.vocab_.reserve(vocab->size());
  for (const auto& [token, id] : vocab->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > kMaxTokenId)
      return Bad(absl::StrCat("token ", Quote(token), " has id ", id.dump(),
                              ", expected an integer in [0, ", kMaxTokenId, "]"));
    if (!IsValidUtf8(token))
      return Bad(absl::StrCat("token ", Quote(token), " is not valid UTF-8"));
    const int32_t i = int32_t(id.get<int64_t>());
    bpe.vocab_[token] = i;
    if (size_t(i) >= bpe.tokens_.size()) {
      bpe.tokens_.resize(size_t(i) + 1);
      bpe.has_id_.resize(size_t(i) + 1, false);
    }
    bpe.tokens_[size_t(i)] = token;
    bpe.has_id_[size_t(i)] = true;
  }

  // merges: ["a b", ...] or [["a", "b"], ...]; rank = position (after any
  // "#version" line). A later duplicate of a pair overrides an earlier one.
  const auto merges = model.find("merges");
  if (merges != model.end() && !merges->is_null()) {
    if (!merges->is_array()) return Bad("'merges' is not a list");
    bpe.merges_.reserve(merges->size());
    int32_t rank = 0;
    for (const json& m : *merges) {
      std::string a, b;
      if (m.is_string()) {
        const std::string line = m.get<std::string>();
        if (line.starts_with("#version")) continue;
        const size_t sp = line.find(' ');
        if (sp == line.npos || line.find(' ', sp + 1) != line.npos)
          return Bad(absl::StrCat("merge ", rank + 1, " ", Quote(line), " is not two tokens"));
        a = line.substr(0, sp);
        b = line.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        return Bad(
            absl::StrCat("merge ", rank + 1, " is ", m.dump(), ", expected \"a b\" or [a, b]"));
      }
      const int32_t ia = bpe.TokenToId(a), ib = bpe.TokenToId(b), in = bpe.TokenToId(a + b);
      for (auto [id, t] : {std::pair{ia, &a}, std::pair{ib, &b}}) {
        if (id < 0)
          return Bad(absl::StrCat("merge ", rank + 1, " names ", Quote(*t), ", not in the vocab"));
      }
      if (in < 0)
        return Bad(absl::StrCat("merge ", rank + 1, " makes ", Quote(a + b), ", not in the vocab"));
      bpe.merges_[PairKey(ia, ib)] = Merge{rank, in};
      ++rank;
    }
  }

  if (auto u = model.find("unk_token"); u != model.end() && !u->is_null()) {
    if (!u->is_string()) return Bad("'unk_token' is not a string");
    // HF fails an encode that needs an unk missing from the vocab; here such
    // a file has no unk: characters it cannot encode are dropped.
    bpe.unk_id_ = bpe.TokenToId(u->get<std::string>());
  }
  bpe.byte_ids_.fill(-1);
  if (bpe.byte_fallback_) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b)
      bpe.byte_ids_[size_t(b)] =
          bpe.TokenToId(std::string{'<', '0', 'x', kHex[b / 16], kHex[b % 16], '>'});
  }
  return bpe;
}

int32_t HfBpe::TokenToId(std::string_view token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* HfBpe::IdToToken(int32_t id) const {
  if (id < 0 || size_t(id) >= tokens_.size() || !has_id_[size_t(id)]) return nullptr;
  return &tokens_[size_t(id)];
}

void HfBpe::InitialSymbols(std::string_view word, std::vector<Symbol>* sym) const {
  auto add = [&](int32_t id) {
    const int32_t i = int32_t(sym->size());
    sym->push_back({id, i - 1, i + 1, true});
  };
  bool unk_pending = false;  // an unk not yet added (fuse_unk grows it)
  for (size_t pos = 0; pos < word.size();) {
    const size_t at = pos;
    NextCodePoint(word, &pos);
    const std::string_view ch = word.substr(at, pos - at);
    if (const int32_t id = TokenToId(ch); id >= 0) {
      if (unk_pending) add(unk_id_);
      unk_pending = false;
      add(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // As HF: a pending unk is not flushed here, it follows these bytes.
        for (char c : ch) add(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (unk_pending && !fuse_unk_) add(unk_id_);
      unk_pending = true;
    }
  }
  if (unk_pending) add(unk_id_);
  if (!sym->empty()) sym->back().next = -1;
}

void HfBpe::Tokenize(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const int32_t id = TokenToId(word); id >= 0) {
      out->push_back(id);
      return;
    }
  }
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  InitialSymbols(word, &sym);

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t id;
  };
  // Lowest rank first, then leftmost.
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
  auto find = [&](int32_t left, int32_t right) -> const Merge* {
    auto it = merges_.find(PairKey(sym[size_t(left)].id, sym[size_t(right)].id));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < sym.size(); ++i) {
    if (const Merge* m = find(int32_t(i), int32_t(i + 1))) queue.push({m->rank, int32_t(i), m->id});
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& s = sym[size_t(top.pos)];
    if (!s.live || s.next < 0) continue;
    const int32_t right = s.next;
    // Stale: the pair at this position no longer makes this token.
    const Merge* m = find(top.pos, right);
    if (m == nullptr || m->id != top.id) continue;
    s.id = top.id;
    Symbol& r = sym[size_t(right)];
    r.live = false;
    s.next = r.next;
    if (r.next >= 0) sym[size_t(r.next)].prev = top.pos;
    if (s.prev >= 0) {
      if (const Merge* pm = find(s.prev, top.pos)) queue.push({pm->rank, s.prev, pm->id});
    }
    if (s.next >= 0) {
      if (const Merge* nm = find(top.pos, s.next)) queue.push({nm->rank, top.pos, nm->id});
    }
  }
  for (const Symbol& s : sym) {
    if (s.live) out->push_back(s.id);
  }
}

}  // namespace paged
