// The coordinator's KV pool: which blocks of the store's pool each sequence
// holds, and the prefix cache over them (docs/scheduler.md, "Prefix cache").
//
// A block is free, referenced (by the sequences whose block tables name it),
// or cached and unreferenced (evictable). A full block whose rows are all
// committed may be PUBLISHED under the hash of its tokens and of every token
// before it; a later sequence whose prompt starts with the same tokens takes
// the published blocks (a reference each) instead of computing them again.
// Nothing ever writes a published block: a step writes only positions at or
// after its sequence's committed length, and a published block lies wholly
// before it for every sequence that references it.
//
// Unreferenced published blocks stay cached until the pool needs room:
// Allocate takes free blocks first, then evicts cached ones, least recently
// released first (a finished sequence releases its blocks tail first, so a
// prompt's tail goes before its head, which others are more likely to share).
//
// Identity: a block's key is a 128-bit hash of (its parent's key, its
// tokens) under two random per-process keys, so a client cannot craft a
// prompt that collides with another's prefix without knowing the keys; the
// tokens themselves are compared on every match too.
//
// Plain data, no threads (the scheduler owns it under its mutex).
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

#include "daemon/block_allocator.h"

namespace paged {

// The key of a full block: its tokens and everything before them.
struct PrefixKey {
  uint64_t a = 0, b = 0;
  friend bool operator==(const PrefixKey& x, const PrefixKey& y) {
    return x.a == y.a && x.b == y.b;
  }
};
struct PrefixKeyHash {
  size_t operator()(const PrefixKey& k) const {
    return size_t(k.a ^ (k.b * 0x9e3779b97f4a7c15ull));
  }
};

class KvPool {
 public:
  // `total` blocks of `block_tokens` rows; `caching` off: nothing is
  // published, released blocks go straight back to the free list.
  KvPool(int32_t total, int32_t block_tokens, bool caching);

  int32_t total() const { return free_.total(); }
  int32_t block_tokens() const { return block_tokens_; }
  bool caching() const { return caching_; }
  // Blocks an allocation can take now: free plus cached-and-unreferenced.
  int32_t available() const { return free_.free_count() + int32_t(lru_.size()); }
  // Blocks some sequence references.
  int32_t referenced() const { return total() - available(); }
  // Published blocks (referenced or not).
  int32_t cached() const { return int32_t(by_key_.size()); }
  int32_t evictable() const { return int32_t(lru_.size()); }
  int32_t refs(int32_t block) const { return meta_.at(size_t(block)).refs; }
  bool published(int32_t block) const { return meta_.at(size_t(block)).published; }
  int64_t evictions() const { return evictions_; }

  // Appends `n` blocks, each with one reference, to *out and returns true;
  // or changes nothing and returns false when fewer than `n` are available.
  bool Allocate(int32_t n, std::vector<int32_t>* out);

  // Takes a reference on each block of each table: the block lists of
  // sequences a restarted coordinator restores, whose rows survived in the
  // store (a block several tables name is shared, as a cached prefix was).
  // Call on a pool where nothing is referenced yet. False, taking nothing,
  // if an id is out of range or one table names a block twice.
  bool Adopt(std::span<const std::vector<int32_t>> tables);

  // Drops one reference from each block of *blocks, last first, and clears
  // the vector. An unreferenced block goes back to the free list, or, if
  // published, to the cache's eviction order.
  void Release(std::vector<int32_t>* blocks);

  // The keys of the full blocks of `tokens`, continuing `chain` (the keys
  // of the blocks before): appends keys until `n_blocks` are covered.
  void ExtendChain(std::span<const int32_t> tokens, int32_t n_blocks,
                   std::vector<PrefixKey>* chain) const;

  // The longest run of published blocks matching chain[0, n) and the
  // corresponding tokens; takes a reference on each and returns them.
  std::vector<int32_t> Acquire(std::span<const int32_t> tokens, std::span<const PrefixKey> chain);
  // The blocks Acquire would return, taking nothing.
  std::vector<int32_t> Peek(std::span<const int32_t> tokens,
                            std::span<const PrefixKey> chain) const;

  // Publishes table[i] under chain[i] for i in [from, chain.size()): full
  // blocks whose rows are all committed, with `tokens` covering them. A key
  // already published (another sequence computed the same prefix) leaves
  // that block private. Returns the new `from` (chain.size()).
  size_t Publish(std::span<const int32_t> table, std::span<const int32_t> tokens,
                 std::span<const PrefixKey> chain, size_t from);

 private:
  struct Meta {
    int32_t refs = 0;
    bool published = false;
    PrefixKey key;
    PrefixKey parent;             // the key before it ({0, 0} for the first block)
    std::vector<int32_t> tokens;  // its block_tokens tokens
    std::list<int32_t>::iterator lru;
  };
  // The published block for chain[i] holding tokens[i*T, (i+1)*T), or -1.
  int32_t Find(std::span<const int32_t> tokens, std::span<const PrefixKey> chain, size_t i) const;
  void Unpublish(int32_t block);

  int32_t block_tokens_;
  bool caching_;
  uint64_t seed_a_, seed_b_;
  BlockAllocator free_;  // blocks on its free stack are free; the rest are ours to track
  std::vector<Meta> meta_;
  std::list<int32_t> lru_;  // published, unreferenced: front evicted first
  std::unordered_map<PrefixKey, int32_t, PrefixKeyHash> by_key_;
  int64_t evictions_ = 0;
};

}  // namespace paged
