// A switch of the CUDA backend read from the environment at its first use
// and settable after it (the tests cover both sides in one process):
// on by default unless the variable is "0", or off unless it is "1".
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace paged::cuda {

class EnvSwitch {
 public:
  constexpr EnvSwitch(const char* var, bool on_by_default) : var_(var), default_(on_by_default) {}

  bool on() {
    int v = state_.load(std::memory_order_relaxed);
    if (v < 0) {
      const char* e = std::getenv(var_);
      const bool on = default_ ? !(e != nullptr && std::strcmp(e, "0") == 0)
                               : e != nullptr && std::strcmp(e, "1") == 0;
      int unset = -1;
      state_.compare_exchange_strong(unset, on ? 1 : 0, std::memory_order_relaxed);
      v = state_.load(std::memory_order_relaxed);
    }
    return v == 1;
  }
  void set(bool on) { state_.store(on ? 1 : 0, std::memory_order_relaxed); }

 private:
  const char* var_;
  bool default_;
  std::atomic<int> state_{-1};  // -1: not read yet
};

}  // namespace paged::cuda
