// The coordinator's allocator of KV pool blocks. The coordinator is the ONLY
// allocator of the store's KV pool: block ids handed out here go into step
// block tables, and a worker writes only the blocks a step names.
//
// Plain data, no threads. All-or-nothing allocation; freed blocks are reused
// last-in first-out (the most recently freed block is the first handed out
// again), so allocation is deterministic and tests can name block ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace paged {

class BlockAllocator {
 public:
  // A pool of `total` blocks with ids [0, total). The first allocations hand
  // out 0, 1, 2, ... in order.
  explicit BlockAllocator(int32_t total = 0);

  int32_t total() const { return total_; }
  int32_t free_count() const { return int32_t(free_.size()); }
  int32_t used_count() const { return total_ - free_count(); }
  bool in_use(int32_t block) const {
    return block >= 0 && block < total_ && in_use_[size_t(block)] != 0;
  }

  // Appends `n` block ids to *out and returns true, or leaves *out untouched
  // and returns false when fewer than `n` are free.
  bool Allocate(int32_t n, std::vector<int32_t>* out);

  // Returns `blocks` to the pool and clears the vector. The next Allocate of
  // the same count hands them out again in the same order. Every id must be in
  // use (freeing a free block is a bug in the caller and aborts).
  void Free(std::vector<int32_t>* blocks);

  // Takes the named free blocks (a restarted coordinator re-taking the
  // blocks its journal lists); the others keep their order. Returns false,
  // taking nothing, if an id is out of range, in use or named twice.
  // Linear in the pool's size.
  bool Take(std::span<const int32_t> blocks);

 private:
  int32_t total_ = 0;
  std::vector<int32_t> free_;    // a stack: back() is handed out next
  std::vector<uint8_t> in_use_;  // [total_]
};

}  // namespace paged
