// sd_notify against a test NOTIFY_SOCKET listener: a datagram socket in a
// TempDir (and one in the abstract namespace), as systemd listens.
#include "common/sd_notify.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/unit/test_util.h"

namespace paged {
namespace {

// A bound AF_UNIX datagram socket; `name` starting with '@' is abstract.
class Listener {
 public:
  explicit Listener(const std::string& name) : name_(name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, name.data(), name.size());
    if (name[0] == '@') a.sun_path[0] = '\0';
    const socklen_t len =
        socklen_t(offsetof(sockaddr_un, sun_path) + name.size() + (name[0] == '@' ? 0 : 1));
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) == 0;
  }
  ~Listener() { ::close(fd_); }
  bool bound() const { return bound_; }
  // The next datagram, or "" after `timeout_ms`.
  std::string Receive(int timeout_ms = 2000) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return "";
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, size_t(n)) : "";
  }

 private:
  std::string name_;
  int fd_ = -1;
  bool bound_ = false;
};

// Sets an environment variable for one test and restores its absence.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { ::unsetenv(name_); }

 private:
  const char* name_;
};

TEST(SdNotifyTest, NoSocketIsANoOp) {
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_TRUE(SdNotify("READY=1").ok());
}

TEST(SdNotifyTest, SendsEachMessageAsOneDatagramToAPath) {
  testing::TempDir dir;
  Listener l(dir.File("notify"));
  ASSERT_TRUE(l.bound());
  ScopedEnv env("NOTIFY_SOCKET", dir.File("notify"));
  ASSERT_TRUE(SdNotify("STATUS=loading").ok());
  ASSERT_TRUE(SdNotify("READY=1\nSTATUS=ready").ok());
  ASSERT_TRUE(SdNotify("STOPPING=1").ok());
  EXPECT_EQ(l.Receive(), "STATUS=loading");
  EXPECT_EQ(l.Receive(), "READY=1\nSTATUS=ready");
  EXPECT_EQ(l.Receive(), "STOPPING=1");
}

TEST(SdNotifyTest, AbstractNamespace) {
  const std::string name = "@paged-sd-notify-test-" + std::to_string(::getpid());
  Listener l(name);
  ASSERT_TRUE(l.bound());
  ScopedEnv env("NOTIFY_SOCKET", name);
  ASSERT_TRUE(SdNotify("READY=1").ok());
  EXPECT_EQ(l.Receive(), "READY=1");
}

TEST(SdNotifyTest, UnreachableOrInvalidSocketIsAnError) {
  testing::TempDir dir;
  {
    ScopedEnv env("NOTIFY_SOCKET", dir.File("nobody-listens"));
    EXPECT_EQ(SdNotify("READY=1").code(), absl::StatusCode::kUnavailable);
  }
  {
    ScopedEnv env("NOTIFY_SOCKET", "relative/path");
    EXPECT_EQ(SdNotify("READY=1").code(), absl::StatusCode::kInvalidArgument);
  }
  {
    ScopedEnv env("NOTIFY_SOCKET", "/" + std::string(200, 'x'));
    EXPECT_EQ(SdNotify("READY=1").code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(SdNotifyTest, WatchdogIntervalFollowsTheEnvironment) {
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
  EXPECT_EQ(WatchdogInterval().count(), 0);
  ScopedEnv usec("WATCHDOG_USEC", "3000000");
  EXPECT_EQ(WatchdogInterval().count(), 3000000);
  {
    ScopedEnv pid("WATCHDOG_PID", std::to_string(::getpid()));
    EXPECT_EQ(WatchdogInterval().count(), 3000000);
  }
  {
    ScopedEnv pid("WATCHDOG_PID", std::to_string(::getpid() + 1));  // meant for another process
    EXPECT_EQ(WatchdogInterval().count(), 0);
  }
  {
    ScopedEnv bad("WATCHDOG_USEC", "soon");
    EXPECT_EQ(WatchdogInterval().count(), 0);
  }
}

TEST(SdNotifyTest, WatchdogThreadPingsUntilDestroyed) {
  testing::TempDir dir;
  Listener l(dir.File("notify"));
  ASSERT_TRUE(l.bound());
  ScopedEnv env("NOTIFY_SOCKET", dir.File("notify"));
  {
    ::unsetenv("WATCHDOG_USEC");
    SdWatchdog none;
    EXPECT_FALSE(none.running());
  }
  {
    ScopedEnv usec("WATCHDOG_USEC", "20000");  // a ping every 10 ms
    SdWatchdog w;
    EXPECT_TRUE(w.running());
    for (int i = 0; i < 3; ++i) EXPECT_EQ(l.Receive(), "WATCHDOG=1");
  }
  // Stopped: drain what was in flight, then nothing more comes.
  while (!l.Receive(50).empty()) {
  }
  EXPECT_EQ(l.Receive(100), "");
}

// The pinger for a loop: at most one WATCHDOG=1 per quarter interval however
// often the loop turns, none without an interval.
TEST(SdNotifyTest, WatchdogPingerIsRateLimited) {
  testing::TempDir dir;
  Listener l(dir.File("notify"));
  ASSERT_TRUE(l.bound());
  ScopedEnv socket("NOTIFY_SOCKET", dir.File("notify"));
  SdWatchdogPinger off(std::chrono::microseconds(0));
  EXPECT_FALSE(off.enabled());
  off.Ping();
  EXPECT_EQ(l.Receive(50), "");
  SdWatchdogPinger p(std::chrono::milliseconds(400));  // a ping per 100 ms at most
  ASSERT_TRUE(p.enabled());
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(450);
  while (std::chrono::steady_clock::now() < end) p.Ping();  // a loop turning very fast
  EXPECT_GE(p.pings(), 3);
  EXPECT_LE(p.pings(), 6);
  for (int64_t i = 0; i < p.pings(); ++i) EXPECT_EQ(l.Receive(), "WATCHDOG=1");
}

}  // namespace
}  // namespace paged
