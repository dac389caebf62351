#include "common/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace paged {
namespace {

// Closes the socket on every path.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

absl::Status SdNotify(const std::string& state) {
  const char* env = std::getenv("NOTIFY_SOCKET");
  if (env == nullptr || env[0] == '\0') return absl::OkStatus();
  const std::string path = env;
  if (path[0] != '/' && path[0] != '@') {
    return absl::InvalidArgumentError(
        absl::StrCat("NOTIFY_SOCKET=", path, ": not a path or an abstract socket"));
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("NOTIFY_SOCKET=", path, ": path too long"));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (path[0] == '@') addr.sun_path[0] = '\0';
  // Abstract names are exactly `size` bytes; paths carry their terminating NUL.
  const socklen_t len =
      socklen_t(offsetof(sockaddr_un, sun_path) + path.size() + (path[0] == '@' ? 0 : 1));

  Fd s{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
  if (s.fd < 0) return absl::InternalError(absl::StrCat("notify socket: ", std::strerror(errno)));
  const ssize_t n = ::sendto(s.fd, state.data(), state.size(), MSG_NOSIGNAL,
                             reinterpret_cast<const sockaddr*>(&addr), len);
  if (n < 0)
    return absl::UnavailableError(absl::StrCat("NOTIFY_SOCKET=", path, ": ", std::strerror(errno)));
  if (size_t(n) != state.size())
    return absl::UnavailableError(absl::StrCat("NOTIFY_SOCKET=", path, ": short send"));
  return absl::OkStatus();
}

void SdNotifyOrLog(const std::string& state) {
  static std::atomic<bool> logged{false};
  const absl::Status s = SdNotify(state);
  if (!s.ok() && !logged.exchange(true)) {
    std::fprintf(stderr, "sd_notify: %s\n", std::string(s.message()).c_str());
  }
}

std::chrono::microseconds WatchdogInterval() {
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (usec == nullptr) return std::chrono::microseconds(0);
  const char* pid = std::getenv("WATCHDOG_PID");
  if (pid != nullptr) {
    int64_t p = 0;
    if (!absl::SimpleAtoi(pid, &p) || p != int64_t(::getpid())) return std::chrono::microseconds(0);
  }
  int64_t us = 0;
  if (!absl::SimpleAtoi(usec, &us) || us <= 0) return std::chrono::microseconds(0);
  return std::chrono::microseconds(us);
}

SdWatchdogPinger::SdWatchdogPinger() : SdWatchdogPinger(WatchdogInterval()) {}

SdWatchdogPinger::SdWatchdogPinger(std::chrono::microseconds interval)
    : period_us_(interval.count() / 4) {}

void SdWatchdogPinger::Ping() {
  if (period_us_ <= 0) return;
  const int64_t now = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t last = last_us_.load();
  if (last != 0 && now - last < period_us_) return;
  if (!last_us_.compare_exchange_strong(last, now)) return;  // another thread pings
  ++pings_;
  SdNotifyOrLog("WATCHDOG=1");
}

SdWatchdog::SdWatchdog() {
  const std::chrono::microseconds interval = WatchdogInterval();
  if (interval.count() == 0) return;
  thread_ = std::thread([this, period = interval / 2] { Run(period); });
}

void SdWatchdog::Run(std::chrono::microseconds period) {
  using Clock = std::chrono::steady_clock;
  absl::MutexLock l(&mu_);
  while (!stop_) {
    mu_.Unlock();
    SdNotifyOrLog("WATCHDOG=1");
    mu_.Lock();
    // Until stop_ or `period` on the steady clock (as
    // condition_variable::wait_for with a predicate).
    const Clock::time_point deadline = Clock::now() + period;
    while (!stop_) {
      const Clock::duration left = deadline - Clock::now();
      if (left <= Clock::duration::zero()) break;
      cv_.WaitWithTimeout(&mu_, absl::FromChrono(left));
    }
  }
}

SdWatchdog::~SdWatchdog() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

}  // namespace paged
