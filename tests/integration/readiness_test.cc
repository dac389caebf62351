// The sd_notify readiness protocol of the real processes, against a test
// NOTIFY_SOCKET listener: paged-store says READY=1 only once its segment is
// READY, paged only once its socket accepts connections, paged-worker only
// once attached; each says STOPPING=1 on SIGTERM. And the shipped
// /etc/paged/paged.conf is accepted by every binary.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "client/pagectl/make_model.h"
#include "tests/unit/http_client.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using testing::BinaryPath;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::RunCommand;
using ::testing::StartsWith;
using testing::Subprocess;
using testing::TempDir;

// What systemd does: a bound datagram socket receiving the notifications.
class NotifyListener {
 public:
  explicit NotifyListener(std::string path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~NotifyListener() { ::close(fd_); }
  bool bound() const { return bound_; }
  const std::string& path() const { return path_; }
  // The next datagram, or "" after `timeout_ms`.
  std::string Receive(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return "";
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, size_t(n)) : "";
  }
  // Datagrams until one contains `needle` (returned; "" on timeout); the
  // ones before it are appended to `before`.
  std::string ReceiveUntil(const std::string& needle, std::vector<std::string>* before,
                           int timeout_ms = 60000) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < end) {
      std::string m = Receive(100);
      if (m.empty()) continue;
      if (m.find(needle) != std::string::npos) return m;
      if (before != nullptr) before->push_back(m);
    }
    return "";
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
};

// Starts `argv` with NOTIFY_SOCKET set (the child inherits the environment).
std::unique_ptr<Subprocess> StartNotified(const NotifyListener& l, std::vector<std::string> argv) {
  ::setenv("NOTIFY_SOCKET", l.path().c_str(), 1);
  auto p = std::make_unique<Subprocess>(std::move(argv));
  ::unsetenv("NOTIFY_SOCKET");
  return p;
}

bool Connects(const std::string& socket_path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, socket_path.c_str(), sizeof(a.sun_path) - 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

class ReadinessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MakeModelOptions o;
    o.preset = "tiny";
    o.out_dir = dir_.File("tiny");
    ASSERT_TRUE(MakeModel(o).ok());
    segment_ = testing::UniqueSegmentName("ready");
    socket_ = dir_.File("paged.sock");
  }
  void TearDown() override { std::filesystem::remove("/dev/shm/" + segment_); }

  std::vector<std::string> StoreArgv() const {
    return {BinaryPath("paged-store"), "--model=" + dir_.File("tiny"), "--segment=" + segment_,
            "--kv-gib=0.01"};
  }
  std::vector<std::string> CoordinatorArgv() const {
    return {BinaryPath("paged"), "--segment=" + segment_, "--listen=unix://" + socket_};
  }
  std::string SegmentState() {
    auto [rc, out] =
        RunCommand({BinaryPath("pagectl"), "inspect", "--segment=" + segment_, "--json"});
    if (rc != 0) return "(pagectl inspect failed: " + out + ")";
    return nlohmann::json::parse(out).value("state", std::string("?"));
  }

  TempDir dir_;
  std::string segment_;
  std::string socket_;
};

TEST_F(ReadinessTest, StoreIsReadyOnlyWhenTheSegmentIsReady) {
  NotifyListener l(dir_.File("notify"));
  ASSERT_TRUE(l.bound());
  auto store = StartNotified(l, StoreArgv());
  std::vector<std::string> before;
  const std::string ready = l.ReceiveUntil("READY=1", &before);
  ASSERT_FALSE(ready.empty()) << store->output();
  // At the moment READY=1 arrives the segment is READY (the store waits on
  // nothing more: it sent READY=1 after the segment was published).
  EXPECT_EQ(SegmentState(), "READY");
  EXPECT_THAT(ready, HasSubstr("STATUS=segment " + segment_ + " ready"));
  ASSERT_FALSE(before.empty());
  EXPECT_THAT(before.front(), StartsWith("STATUS=loading"));

  EXPECT_EQ(store->Signal(SIGTERM), 0) << store->output();
  EXPECT_EQ(l.ReceiveUntil("STOPPING=1", nullptr, 5000), "STOPPING=1");
}

TEST_F(ReadinessTest, StoreThatFailsNeverSaysReady) {
  NotifyListener l(dir_.File("notify"));
  ASSERT_TRUE(l.bound());
  auto store = StartNotified(l, {BinaryPath("paged-store"), "--model=" + dir_.File("no-such-model"),
                                 "--segment=" + segment_});
  EXPECT_NE(store->Wait(30), 0) << store->output();
  std::vector<std::string> got;
  EXPECT_EQ(l.ReceiveUntil("READY=1", &got, 500), "");
}

TEST_F(ReadinessTest, CoordinatorIsReadyOnlyWhenItsSocketAcceptsConnections) {
  auto store = std::make_unique<Subprocess>(StoreArgv());
  ASSERT_TRUE(store->WaitForLine("ready")) << store->output();

  NotifyListener l(dir_.File("notify"));
  ASSERT_TRUE(l.bound());
  auto paged = StartNotified(l, CoordinatorArgv());
  const std::string ready = l.ReceiveUntil("READY=1", nullptr);
  ASSERT_FALSE(ready.empty()) << paged->output();
  EXPECT_TRUE(Connects(socket_)) << "READY=1 before the socket accepts connections";
  EXPECT_THAT(ready, HasSubstr("STATUS=listening on unix://" + socket_));

  EXPECT_EQ(paged->Signal(SIGTERM), 0) << paged->output();
  EXPECT_EQ(l.ReceiveUntil("STOPPING=1", nullptr, 5000), "STOPPING=1");
  EXPECT_EQ(store->Signal(SIGTERM), 0);
}

TEST_F(ReadinessTest, WorkerIsReadyOnlyOnceAttached) {
  auto store = std::make_unique<Subprocess>(StoreArgv());
  ASSERT_TRUE(store->WaitForLine("ready")) << store->output();

  // No coordinator yet: the worker maps the segment and keeps trying to
  // attach, saying what it does but not READY=1.
  NotifyListener l(dir_.File("notify"));
  ASSERT_TRUE(l.bound());
  auto worker = StartNotified(l, {BinaryPath("paged-worker"), "--segment=" + segment_,
                                  "--device=cpu", "--gpu-budget=256MiB", "--threads=1",
                                  "--coordinator=unix://" + socket_, "--worker-id=w-ready"});
  std::vector<std::string> before;
  EXPECT_EQ(l.ReceiveUntil("READY=1", &before, 3000), "") << worker->output();
  ASSERT_FALSE(before.empty()) << worker->output();
  EXPECT_THAT(before.front(), StartsWith("STATUS=attaching to unix://" + socket_));

  auto paged = std::make_unique<Subprocess>(CoordinatorArgv());
  ASSERT_TRUE(paged->WaitForLine("listening on", 30)) << paged->output();
  const std::string ready = l.ReceiveUntil("READY=1", nullptr, 60000);
  ASSERT_FALSE(ready.empty()) << worker->output();
  EXPECT_THAT(ready, HasSubstr("STATUS=attached to unix://" + socket_));
  // The coordinator lists it (the Hello is on its way when READY=1 is sent).
  bool listed = false;
  for (int i = 0; i < 100 && !listed; ++i) {
    auto [rc, out] =
        RunCommand({BinaryPath("pagectl"), "workers", "--json", "--server=unix://" + socket_});
    listed = rc == 0 && out.find("w-ready") != std::string::npos &&
             out.find("ATTACHED") != std::string::npos;
    if (!listed) ::usleep(100 * 1000);
  }
  EXPECT_TRUE(listed) << paged->output();

  EXPECT_EQ(worker->Signal(SIGTERM), 0) << worker->output();
  EXPECT_EQ(l.ReceiveUntil("STOPPING=1", nullptr, 5000), "STOPPING=1");
  EXPECT_EQ(paged->Signal(SIGTERM), 0) << paged->output();
  EXPECT_EQ(store->Signal(SIGTERM), 0);
}

// Issue 15, defect 8: a worker the coordinator refuses (a wrong token) does
// not say "attached" nor READY=1, however often it retries; with the right
// token (here from the environment, as paged-up passes it) it does.
TEST_F(ReadinessTest, ARefusedWorkerNeverSaysReady) {
  auto store = std::make_unique<Subprocess>(StoreArgv());
  ASSERT_TRUE(store->WaitForLine("ready")) << store->output();
  testing::WriteFile(dir_.File("token"), "right-token\n");
  std::vector<std::string> argv = CoordinatorArgv();
  argv.push_back("--token-file=" + dir_.File("token"));
  auto paged = std::make_unique<Subprocess>(argv);
  ASSERT_TRUE(paged->WaitForLine("listening on", 30)) << paged->output();

  NotifyListener l(dir_.File("notify"));
  ASSERT_TRUE(l.bound());
  const std::vector<std::string> worker_argv = {
      BinaryPath("paged-worker"), "--segment=" + segment_, "--device=cpu",
      "--gpu-budget=256MiB",      "--threads=1",           "--coordinator=unix://" + socket_,
      "--worker-id=w-refused"};
  ::setenv("PAGED_TOKEN", "wrong-token", 1);
  auto wrong = StartNotified(l, worker_argv);
  ::unsetenv("PAGED_TOKEN");
  ASSERT_TRUE(wrong->WaitForLine("refused worker w-refused", 30)) << wrong->output();
  std::vector<std::string> got;
  EXPECT_EQ(l.ReceiveUntil("READY=1", &got, 3000), "") << wrong->output();
  EXPECT_THAT(wrong->output(), HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(wrong->output(), Not(HasSubstr("attached to")));
  EXPECT_EQ(wrong->Signal(SIGTERM), 0) << wrong->output();

  ::setenv("PAGED_TOKEN", "right-token", 1);
  auto right = StartNotified(l, worker_argv);
  ::unsetenv("PAGED_TOKEN");
  EXPECT_FALSE(l.ReceiveUntil("READY=1", nullptr, 60000).empty()) << right->output();
  EXPECT_TRUE(right->WaitForLine("attached to", 10)) << right->output();
  EXPECT_EQ(right->Signal(SIGTERM), 0) << right->output();
  EXPECT_EQ(paged->Signal(SIGTERM), 0) << paged->output();
  EXPECT_EQ(store->Signal(SIGTERM), 0);
}

// Issue 15, defect 9: `pagectl status` and /readyz tell whether the store
// process lives (its lock on the segment), not only the segment's state;
// /livez stays 200. Defect 10: the socket is 0660 whatever the umask.
TEST_F(ReadinessTest, StatusAndReadyzSeeADeadStoreAndTheSocketIs0660) {
  auto store = std::make_unique<Subprocess>(StoreArgv());
  ASSERT_TRUE(store->WaitForLine("ready")) << store->output();
  std::vector<std::string> argv = CoordinatorArgv();
  argv.push_back("--http=127.0.0.1:0");
  const mode_t old = ::umask(0);  // the child inherits it
  auto paged = std::make_unique<Subprocess>(argv);
  ::umask(old);
  ASSERT_TRUE(paged->WaitForLine("http listening on", 30)) << paged->output();
  std::smatch m;
  const std::string out = paged->output();
  ASSERT_TRUE(std::regex_search(out, m, std::regex("http listening on ([0-9.]+:[0-9]+)")));
  const std::string http = m[1];
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  auto status = [&] {
    auto [rc, text] =
        RunCommand({BinaryPath("pagectl"), "status", "--json", "--server=unix://" + socket_});
    EXPECT_EQ(rc, 0) << text;
    return nlohmann::json::parse(text, nullptr, false);
  };
  nlohmann::json s = status();
  EXPECT_EQ(s.value("store_state", ""), "READY");
  EXPECT_TRUE(s.value("store_alive", false)) << s.dump();
  EXPECT_EQ(s.value("store_pid", ""), std::to_string(store->pid()));
  EXPECT_FALSE(s.value("ready", false));
  EXPECT_EQ(s.value("not_ready_reason", ""), "no worker is attached");
  auto [trc, table] = RunCommand({BinaryPath("pagectl"), "status", "--server=unix://" + socket_});
  EXPECT_THAT(table, HasSubstr("process " + std::to_string(store->pid())));
  EXPECT_THAT(table, HasSubstr("no: no worker is attached"));

  ASSERT_EQ(::kill(store->pid(), SIGKILL), 0);
  store->Wait(10);
  for (int i = 0; i < 100 && status().value("store_alive", false); ++i) ::usleep(100 * 1000);
  s = status();
  EXPECT_FALSE(s.value("store_alive", false)) << s.dump();
  EXPECT_THAT(s.value("not_ready_reason", ""), HasSubstr("no paged-store process holds segment"));
  auto [trc2, table2] = RunCommand({BinaryPath("pagectl"), "status", "--server=unix://" + socket_});
  EXPECT_THAT(table2, HasSubstr("but no paged-store process holds it"));
  testing::HttpResult ready = testing::HttpCall(http, "GET", "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_THAT(ready.body, HasSubstr("no paged-store process holds segment"));
  EXPECT_EQ(testing::HttpCall(http, "GET", "/livez").status, 200);
  EXPECT_EQ(paged->Signal(SIGTERM), 0) << paged->output();
}

// The coordinator pings the watchdog (from its loop) at a quarter of the
// interval the manager asks for.
TEST_F(ReadinessTest, TheCoordinatorPingsTheWatchdog) {
  auto store = std::make_unique<Subprocess>(StoreArgv());
  ASSERT_TRUE(store->WaitForLine("ready")) << store->output();
  NotifyListener l(dir_.File("notify"));
  ASSERT_TRUE(l.bound());
  ::setenv("WATCHDOG_USEC", "800000", 1);
  auto paged = StartNotified(l, CoordinatorArgv());
  ::unsetenv("WATCHDOG_USEC");
  ASSERT_FALSE(l.ReceiveUntil("READY=1", nullptr).empty()) << paged->output();
  int pings = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < end) pings += l.Receive(100) == "WATCHDOG=1";
  EXPECT_GE(pings, 3) << paged->output();
  EXPECT_EQ(paged->Signal(SIGTERM), 0) << paged->output();
  EXPECT_EQ(store->Signal(SIGTERM), 0);
}

// systemd/paged.conf documents every flag, commented out: with every key
// uncommented each binary still accepts it (absl parses the values before
// --help exits), and the file as shipped is accepted too.
TEST_F(ReadinessTest, ShippedConfigIsAcceptedByEveryBinary) {
  const std::string shipped = testing::SourceDir() + "/systemd/paged.conf";
  const std::string text = testing::ReadFile(shipped);
  ASSERT_FALSE(text.empty());
  const std::string all =
      std::regex_replace(text, std::regex("^# ([a-z-]+ = )", std::regex::multiline), "$1");
  ASSERT_NE(all, text);
  testing::WriteFile(dir_.File("all.conf"), all);
  for (const std::string& conf : {shipped, dir_.File("all.conf")}) {
    for (const char* bin : {"paged-store", "paged-worker", "paged"}) {
      auto [rc, out] = RunCommand({BinaryPath(bin), "--config=" + conf, "--help"});
      EXPECT_NE(rc, 2) << bin << " " << conf << ": " << out;
      EXPECT_THAT(out, Not(HasSubstr("ERROR"))) << bin << " " << conf;
      EXPECT_THAT(out, Not(HasSubstr(conf + ":"))) << bin << " " << conf;
    }
  }
  // A typo is refused with the file and line.
  testing::WriteFile(dir_.File("typo.conf"), "[store]\nkv-gb = 1\n");
  auto [rc, out] = RunCommand({BinaryPath("paged-store"), "--config=" + dir_.File("typo.conf")});
  EXPECT_EQ(rc, 2);
  EXPECT_THAT(out, HasSubstr(dir_.File("typo.conf") + ":2: unknown key 'kv-gb'"));
}

}  // namespace
}  // namespace paged
