// A setting of the CUDA backend read from the environment at its first use
// and settable after it (the tests cover each value in one process): an
// int, parsed from the variable's value (null when it is unset). Switches
// are 1 (on) or 0 (off): OnUnless0 for those on by default, OffUnless1 for
// those off by default.
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace paged::cuda {

class EnvSetting {
 public:
  using Parse = int (*)(const char* value);
  constexpr EnvSetting(const char* var, Parse parse) : var_(var), parse_(parse) {}

  int get() {
    int v = state_.load(std::memory_order_relaxed);
    if (v < 0) {
      int unset = -1;
      state_.compare_exchange_strong(unset, parse_(std::getenv(var_)), std::memory_order_relaxed);
      v = state_.load(std::memory_order_relaxed);
    }
    return v;
  }
  bool on() { return get() == 1; }
  void set(int v) { state_.store(v, std::memory_order_relaxed); }
  // Reads the variable again (a test that changed it).
  void Reread() { set(parse_(std::getenv(var_))); }

 private:
  const char* var_;
  Parse parse_;
  std::atomic<int> state_{-1};  // -1: not read yet (parsed values are >= 0)
};

inline int OnUnless0(const char* v) { return v != nullptr && std::strcmp(v, "0") == 0 ? 0 : 1; }
inline int OffUnless1(const char* v) { return v != nullptr && std::strcmp(v, "1") == 0 ? 1 : 0; }

}  // namespace paged::cuda
