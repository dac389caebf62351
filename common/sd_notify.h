// A minimal sd_notify(3) without libsystemd: readiness, status, watchdog and
// stopping notifications to the service manager over $NOTIFY_SOCKET (an
// AF_UNIX datagram socket; a leading '@' names the abstract namespace).
// Every call is a no-op when $NOTIFY_SOCKET is unset, so the binaries behave
// the same outside systemd.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace paged {

// Sends `state`, newline-separated assignments ("READY=1", "STATUS=loading",
// "WATCHDOG=1", "STOPPING=1"), as one datagram to $NOTIFY_SOCKET. OK when
// $NOTIFY_SOCKET is unset; an error when it is set but cannot be reached.
absl::Status SdNotify(const std::string& state);

// SdNotify for callers that only log: prints a failure once to stderr.
void SdNotifyOrLog(const std::string& state);

// The watchdog interval the manager asked for: $WATCHDOG_USEC, when
// $WATCHDOG_PID is unset or equals getpid(); zero otherwise or when invalid.
std::chrono::microseconds WatchdogInterval();

// For a loop that turns often (the coordinator's timer loop): Ping() sends
// WATCHDOG=1 when WatchdogInterval() / 4 has passed since the last one, so
// the manager's watchdog fires when the loop stops turning (a hang), which a
// timer thread of its own would hide. Does nothing without a watchdog
// interval. Ping may be called from any thread.
class SdWatchdogPinger {
 public:
  SdWatchdogPinger();
  explicit SdWatchdogPinger(std::chrono::microseconds interval);
  void Ping();
  bool enabled() const { return period_us_ > 0; }
  int64_t pings() const { return pings_.load(); }

 private:
  const int64_t period_us_;          // 0: disabled
  std::atomic<int64_t> last_us_{0};  // steady clock of the last ping
  std::atomic<int64_t> pings_{0};
};

// While alive, sends WATCHDOG=1 every WatchdogInterval() / 2 from its own
// thread (for processes without a loop of their own: the store); does nothing when there is no
// watchdog interval. Start it after the termination signals are blocked (BlockTerminationSignals)
// so the thread inherits the mask.
class SdWatchdog {
 public:
  SdWatchdog();
  ~SdWatchdog();
  SdWatchdog(const SdWatchdog&) = delete;
  SdWatchdog& operator=(const SdWatchdog&) = delete;
  bool running() const { return thread_.joinable(); }

 private:
  // The thread's loop: WATCHDOG=1, then sleep `period` or until stop_.
  void Run(std::chrono::microseconds period) ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  absl::CondVar cv_;  // with mu_: stop_ set
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Started by the constructor, joined by the destructor; not under mu_.
  std::thread thread_;
};

}  // namespace paged
