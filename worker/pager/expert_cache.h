// Which experts of a mixture-of-experts model the device expert cache holds
// (docs/pager.md, "Experts"): a fixed number of device slots, each holding
// one expert of one layer, and the policy that picks the slot a missing
// expert takes. Pure bookkeeping, no device memory and no threads: the pager
// owns the slots' memory and issues the copies.
//
// Policies (what a step's routing says, counted per layer and expert):
//   LRU  the victim is the slot used longest ago;
//   LFU  the victim is the slot whose expert was routed to least often
//        (counts halved every `decay_period` uses, so that the cache follows
//        a drifting workload; ties: the one used longest ago).
// Trained routers are skewed (a few experts of each layer take most
// tokens): frequency keeps those hot experts through a burst of cold ones,
// which recency does not. LFU is the pager's default.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace paged {

enum class ExpertEviction { kLru, kLfu };

// "lru" | "lfu"; INVALID_ARGUMENT otherwise.
absl::StatusOr<ExpertEviction> ParseExpertEviction(std::string_view s);
std::string_view ExpertEvictionName(ExpertEviction e);

class ExpertCache {
 public:
  struct Key {
    int layer = -1, expert = -1;
    bool operator==(const Key&) const = default;
  };

  // `slots` device slots for experts [0, n_experts) of layers [0, n_layers).
  // decay_period 0: counts never decay.
  ExpertCache(int slots, int n_layers, int n_experts, ExpertEviction policy,
              uint64_t decay_period = 0);

  int slots() const { return int(slot_key_.size()); }
  ExpertEviction policy() const { return policy_; }

  // A step routes rows to (layer, expert): one use, whether it is cached
  // or not (the frequency LFU ranks by, and the recency of its slot).
  void Use(int layer, int expert);
  // The slot holding (layer, expert), or -1.
  int Find(int layer, int expert) const;
  Key KeyOf(int slot) const { return slot_key_[size_t(slot)]; }
  uint32_t Count(int layer, int expert) const { return count_[Index(layer, expert)]; }

  // Slots the current chunk uses: never chosen as victims until Unpin.
  void Pin(int slot) { pinned_[size_t(slot)] = true; }
  void UnpinAll();

  // Gives (layer, expert), not cached, a slot: a free one, else the policy's
  // victim among the unpinned slots (its expert leaves the cache: *evicted).
  // -1 when every slot is pinned. The slot is pinned.
  int Insert(int layer, int expert, Key* evicted = nullptr);
  // Whether an expert that is not cached and is served elsewhere this step
  // (the host computes it) should still be copied in for later steps: a
  // free slot, or under LFU an unpinned victim routed to less often than it.
  bool WorthAdmitting(int layer, int expert) const;

  uint64_t evictions() const { return evictions_; }
  int used() const { return used_; }

 private:
  size_t Index(int layer, int expert) const {
    return size_t(layer) * size_t(n_experts_) + size_t(expert);
  }
  // The policy's victim among unpinned occupied slots (a free slot first);
  // -1 when none.
  int Victim() const;

  int n_layers_, n_experts_;
  ExpertEviction policy_;
  uint64_t decay_period_;
  uint64_t uses_ = 0, tick_ = 0, evictions_ = 0;
  int used_ = 0;
  std::vector<int32_t> slot_of_;    // [layer * n_experts + expert] -> slot, or -1
  std::vector<uint32_t> count_;     // [layer * n_experts + expert] uses (decayed)
  std::vector<Key> slot_key_;       // [slot] its expert; layer -1: free
  std::vector<uint64_t> last_use_;  // [slot] tick of its last use
  std::vector<bool> pinned_;        // [slot]
};

}  // namespace paged
