#include "worker/pager/expert_cache.h"

#include "absl/strings/str_cat.h"

namespace paged {

absl::StatusOr<ExpertEviction> ParseExpertEviction(std::string_view s) {
  if (s == "lru") return ExpertEviction::kLru;
  if (s == "lfu") return ExpertEviction::kLfu;
  return absl::InvalidArgumentError(
      absl::StrCat("expert eviction must be lru or lfu, not \"", std::string(s), "\""));
}

std::string_view ExpertEvictionName(ExpertEviction e) {
  return e == ExpertEviction::kLru ? "lru" : "lfu";
}

ExpertCache::ExpertCache(int slots, int n_layers, int n_experts, ExpertEviction policy,
                         uint64_t decay_period)
    : n_layers_(n_layers),
      n_experts_(n_experts),
      policy_(policy),
      decay_period_(decay_period),
      slot_of_(size_t(n_layers) * size_t(n_experts), -1),
      count_(size_t(n_layers) * size_t(n_experts), 0),
      slot_key_(size_t(slots)),
      last_use_(size_t(slots), 0),
      pinned_(size_t(slots), false) {}

void ExpertCache::Use(int layer, int expert) {
  const size_t i = Index(layer, expert);
  ++count_[i];
  ++tick_;
  if (const int s = slot_of_[i]; s >= 0) last_use_[size_t(s)] = tick_;
  if (decay_period_ > 0 && ++uses_ % decay_period_ == 0) {
    for (uint32_t& c : count_) c /= 2;
  }
}

int ExpertCache::Find(int layer, int expert) const { return slot_of_[Index(layer, expert)]; }

void ExpertCache::UnpinAll() { pinned_.assign(pinned_.size(), false); }

int ExpertCache::Victim() const {
  int best = -1;
  for (int s = 0; s < slots(); ++s) {
    if (pinned_[size_t(s)]) continue;
    const Key& k = slot_key_[size_t(s)];
    if (k.layer < 0) return s;  // a free slot
    if (best < 0) {
      best = s;
      continue;
    }
    const uint64_t age = last_use_[size_t(s)], best_age = last_use_[size_t(best)];
    if (policy_ == ExpertEviction::kLfu) {
      const uint32_t c = count_[Index(k.layer, k.expert)];
      const Key& b = slot_key_[size_t(best)];
      const uint32_t bc = count_[Index(b.layer, b.expert)];
      if (c < bc || (c == bc && age < best_age)) best = s;
    } else if (age < best_age) {
      best = s;
    }
  }
  return best;
}

int ExpertCache::Insert(int layer, int expert, Key* evicted) {
  if (evicted != nullptr) *evicted = Key{};
  const int s = Victim();
  if (s < 0) return -1;
  Key& k = slot_key_[size_t(s)];
  if (k.layer >= 0) {
    slot_of_[Index(k.layer, k.expert)] = -1;
    if (evicted != nullptr) *evicted = k;
    ++evictions_;
  } else {
    ++used_;
  }
  k = Key{layer, expert};
  slot_of_[Index(layer, expert)] = s;
  last_use_[size_t(s)] = ++tick_;
  pinned_[size_t(s)] = true;
  return s;
}

bool ExpertCache::WorthAdmitting(int layer, int expert) const {
  const int s = Victim();
  if (s < 0) return false;
  const Key& k = slot_key_[size_t(s)];
  if (k.layer < 0) return true;
  return policy_ == ExpertEviction::kLfu &&
         count_[Index(layer, expert)] > count_[Index(k.layer, k.expert)];
}

}  // namespace paged
