#include "daemon/block_allocator.h"

#include <vector>

#include "common/check.h"

namespace paged {

BlockAllocator::BlockAllocator(int32_t total) : total_(total < 0 ? 0 : total) {
  free_.reserve(size_t(total_));
  for (int32_t b = total_ - 1; b >= 0; --b) free_.push_back(b);
  in_use_.assign(size_t(total_), 0);
}

bool BlockAllocator::Allocate(int32_t n, std::vector<int32_t>* out) {
  if (n < 0 || n > free_count()) return false;
  out->reserve(out->size() + size_t(n));
  for (int32_t i = 0; i < n; ++i) {
    const int32_t b = free_.back();
    free_.pop_back();
    in_use_[size_t(b)] = 1;
    out->push_back(b);
  }
  return true;
}

void BlockAllocator::Free(std::vector<int32_t>* blocks) {
  // Pushed in reverse so that the stack hands them out again in their order.
  for (auto it = blocks->rbegin(); it != blocks->rend(); ++it) {
    const int32_t b = *it;
    PAGED_CHECK(in_use(b), "BlockAllocator: freeing block ", b, " that is not in use");
    in_use_[size_t(b)] = 0;
    free_.push_back(b);
  }
  blocks->clear();
}

bool BlockAllocator::Take(std::span<const int32_t> blocks) {
  for (size_t i = 0; i < blocks.size(); ++i) {
    const int32_t b = blocks[i];
    if (b < 0 || b >= total_ || in_use_[size_t(b)] != 0) {
      for (size_t k = 0; k < i; ++k) in_use_[size_t(blocks[k])] = 0;  // undo
      return false;
    }
    in_use_[size_t(b)] = 1;
  }
  std::erase_if(free_, [this](int32_t b) { return in_use_[size_t(b)] != 0; });
  return true;
}

}  // namespace paged
