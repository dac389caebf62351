#include "daemon/kv_pool.h"

#include <algorithm>
#include <random>

#include "common/check.h"

namespace paged {
namespace {

uint64_t Fmix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

// A keyed 64-bit hash of (parent, tokens): each word is mixed into the state
// through a full avalanche, so the result depends on every bit of the key.
uint64_t Keyed(uint64_t seed, const PrefixKey& parent, std::span<const int32_t> tokens) {
  uint64_t h = Fmix(seed ^ 0x9e3779b97f4a7c15ull);
  auto mix = [&h](uint64_t x) { h = Fmix(h ^ (x + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2))); };
  mix(parent.a);
  mix(parent.b);
  for (int32_t t : tokens) mix(uint64_t(uint32_t(t)));
  return Fmix(h ^ tokens.size());
}

uint64_t RandomSeed() {
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ uint64_t(rd());
}

}  // namespace

KvPool::KvPool(int32_t total, int32_t block_tokens, bool caching)
    : block_tokens_(block_tokens),
      caching_(caching),
      seed_a_(RandomSeed()),
      seed_b_(RandomSeed()),
      free_(total),
      meta_(size_t(std::max(total, 0))) {}

bool KvPool::Allocate(int32_t n, std::vector<int32_t>* out) {
  if (n < 0 || n > available()) return false;
  const int32_t from_free = std::min(n, free_.free_count());
  const size_t first = out->size();
  PAGED_CHECK(free_.Allocate(from_free, out), "free blocks vanished");
  for (int32_t i = from_free; i < n; ++i) {  // evict the least recently released
    const int32_t b = lru_.front();
    Unpublish(b);
    ++evictions_;
    out->push_back(b);
  }
  for (size_t i = first; i < out->size(); ++i) {
    Meta& m = meta_[size_t((*out)[i])];
    PAGED_CHECK(m.refs == 0 && !m.published, "allocated a block that is still in use");
    m.refs = 1;
  }
  return true;
}

bool KvPool::Adopt(std::span<const std::vector<int32_t>> tables) {
  std::vector<int32_t> take;  // blocks no sequence references yet
  std::vector<uint8_t> seen(meta_.size(), 0);
  for (const std::vector<int32_t>& t : tables) {
    std::vector<int32_t> sorted = t;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) return false;
    for (int32_t b : t) {
      if (b < 0 || size_t(b) >= meta_.size()) return false;
      if (!seen[size_t(b)] && meta_[size_t(b)].refs == 0) take.push_back(b);
      seen[size_t(b)] = 1;
    }
  }
  for (int32_t b : take) {
    const Meta& m = meta_[size_t(b)];
    if (m.published) return false;  // a pool that served already: not a restart's
  }
  if (!free_.Take(take)) return false;
  for (const std::vector<int32_t>& t : tables) {
    for (int32_t b : t) ++meta_[size_t(b)].refs;
  }
  return true;
}

void KvPool::Unpublish(int32_t block) {
  Meta& m = meta_[size_t(block)];
  if (!m.published) return;
  if (m.refs == 0) lru_.erase(m.lru);
  by_key_.erase(m.key);
  m.published = false;
  m.tokens.clear();
}

void KvPool::Release(std::vector<int32_t>* blocks) {
  std::vector<int32_t> to_free;
  for (auto it = blocks->rbegin(); it != blocks->rend(); ++it) {
    Meta& m = meta_.at(size_t(*it));
    PAGED_CHECK(m.refs > 0, "releasing a block nobody references");
    if (--m.refs > 0) continue;
    if (m.published) {
      m.lru = lru_.insert(lru_.end(), *it);
    } else {
      to_free.push_back(*it);
    }
  }
  // The free stack hands the last freed out first: free in table order so
  // that a sequence's blocks come back in the order it had them.
  std::reverse(to_free.begin(), to_free.end());
  if (!to_free.empty()) free_.Free(&to_free);
  blocks->clear();
}

void KvPool::ExtendChain(std::span<const int32_t> tokens, int32_t n_blocks,
                         std::vector<PrefixKey>* chain) const {
  const size_t T = size_t(block_tokens_);
  for (size_t i = chain->size(); i < size_t(std::max(n_blocks, 0)); ++i) {
    PAGED_CHECK((i + 1) * T <= tokens.size(), "a prefix key over tokens that are not there");
    const PrefixKey parent = i == 0 ? PrefixKey{} : (*chain)[i - 1];
    const auto block = tokens.subspan(i * T, T);
    chain->push_back({Keyed(seed_a_, parent, block), Keyed(seed_b_, parent, block)});
  }
}

int32_t KvPool::Find(std::span<const int32_t> tokens, std::span<const PrefixKey> chain,
                     size_t i) const {
  auto it = by_key_.find(chain[i]);
  if (it == by_key_.end()) return -1;
  const Meta& m = meta_[size_t(it->second)];
  const size_t T = size_t(block_tokens_);
  const PrefixKey parent = i == 0 ? PrefixKey{} : chain[i - 1];
  if (!(m.parent == parent) ||
      !std::equal(m.tokens.begin(), m.tokens.end(), tokens.begin() + ptrdiff_t(i * T)))
    return -1;
  return it->second;
}

std::vector<int32_t> KvPool::Peek(std::span<const int32_t> tokens,
                                  std::span<const PrefixKey> chain) const {
  std::vector<int32_t> out;
  if (!caching_) return out;
  for (size_t i = 0; i < chain.size(); ++i) {
    const int32_t b = Find(tokens, chain, i);
    if (b < 0) break;
    out.push_back(b);
  }
  return out;
}

std::vector<int32_t> KvPool::Acquire(std::span<const int32_t> tokens,
                                     std::span<const PrefixKey> chain) {
  std::vector<int32_t> out;
  if (!caching_) return out;
  for (size_t i = 0; i < chain.size(); ++i) {
    const int32_t b = Find(tokens, chain, i);
    if (b < 0) break;
    Meta& m = meta_[size_t(b)];
    if (m.refs++ == 0) lru_.erase(m.lru);
    out.push_back(b);
  }
  return out;
}

size_t KvPool::Publish(std::span<const int32_t> table, std::span<const int32_t> tokens,
                       std::span<const PrefixKey> chain, size_t from) {
  if (!caching_) return chain.size();
  const size_t T = size_t(block_tokens_);
  for (size_t i = from; i < chain.size(); ++i) {
    PAGED_CHECK(i < table.size() && (i + 1) * T <= tokens.size(),
                "publishing a block the sequence does not hold");
    Meta& m = meta_.at(size_t(table[i]));
    PAGED_CHECK(m.refs > 0, "publishing an unreferenced block");
    if (m.published || by_key_.count(chain[i])) continue;  // shared already, or a twin is
    m.published = true;
    m.key = chain[i];
    m.parent = i == 0 ? PrefixKey{} : chain[i - 1];
    m.tokens.assign(tokens.begin() + ptrdiff_t(i * T), tokens.begin() + ptrdiff_t((i + 1) * T));
    by_key_.emplace(chain[i], table[i]);
  }
  return chain.size();
}

}  // namespace paged
