// paged-up as a real process. Two halves:
//  - FakeStackTest: paged-up supervises shell-script stand-ins for paged-store,
//    paged and paged-worker (--bin-dir), and this test serves the Admin
//    Status it polls: start-up order, "paged is up", a SIGKILLed worker
//    restarted, stop order on SIGINT, a dead store taking everything down,
//    children dying with a SIGKILLed launcher. Needs only paged-up.
//  - RealStackTest: store (stories260K) + coordinator + two CPU workers; runs
//    only when the coordinator binary (daemon/paged) is built.
#include <dirent.h>
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "paged/v1/admin.grpc.pb.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using testing::BinaryPath;
using ::testing::HasSubstr;
using testing::RunCommand;
using testing::Subprocess;

std::string PagedUpPath() { return std::string(PAGED_BINARY_DIR) + "/launcher/paged-up"; }

// Alive and not a zombie.
bool Alive(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return false;
  const size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

bool AllDeadWithin(const std::vector<pid_t>& pids, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (true) {
    bool any = false;
    for (pid_t p : pids) any |= Alive(p);
    if (!any) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Every live descendant of `root` with its command line.
std::vector<std::pair<pid_t, std::string>> Descendants(pid_t root) {
  std::vector<std::pair<pid_t, pid_t>> parent_of;  // (pid, ppid)
  std::map<pid_t, std::string> cmd;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return {};
  while (dirent* e = ::readdir(d)) {
    const pid_t pid = ::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
    std::string stat;
    if (!std::getline(f, stat)) continue;
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(stat.substr(paren + 2), ' ');
    if (fields.size() < 2 || fields[0] == "Z") continue;
    parent_of.emplace_back(pid, ::atoi(fields[1].c_str()));
    std::string c = testing::ReadFile(std::string("/proc/") + e->d_name + "/cmdline");
    for (char& ch : c) ch = ch == '\0' ? ' ' : ch;
    cmd[pid] = c;
  }
  ::closedir(d);
  std::vector<std::pair<pid_t, std::string>> out;
  std::vector<pid_t> frontier = {root};
  while (!frontier.empty()) {
    const pid_t p = frontier.back();
    frontier.pop_back();
    for (auto [pid, ppid] : parent_of) {
      if (ppid == p) {
        out.emplace_back(pid, cmd[pid]);
        frontier.push_back(pid);
      }
    }
  }
  return out;
}

pid_t ReadPid(const std::string& path, double timeout_s = 10) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    const int pid = ::atoi(testing::ReadFile(path).c_str());
    if (pid > 0) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

// ---- the fake stack ------------------------------------------------------------------

// Answers Status with two attached CPU workers, as the coordinator would,
// and keeps paged-up's supervision reports.
class FakeAdmin final : public v1::Admin::Service {
 public:
  grpc::Status ReportSupervision(grpc::ServerContext*, const v1::ReportSupervisionRequest* req,
                                 v1::ReportSupervisionResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    last_ = *req;
    ++reports_;
    return grpc::Status::OK;
  }
  // The state of `name` in the last report ("" when not reported).
  std::string StateOf(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const v1::SupervisedProcess& p : last_.processes())
      if (p.name() == name) return p.state();
    return "";
  }
  v1::ReportSupervisionRequest last() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }

  grpc::Status Status(grpc::ServerContext*, const v1::StatusRequest*,
                      v1::StatusResponse* r) override {
    r->set_model("fake model");
    r->set_store_state("READY");
    for (const char* id : {"cpu:0", "cpu:1"}) {
      v1::WorkerInfo* w = r->add_workers();
      w->set_worker_id(id);
      w->set_device("cpu");
      w->set_state("ATTACHED");
    }
    return grpc::Status::OK;
  }

 private:
  std::mutex mu_;
  v1::ReportSupervisionRequest last_;
  int reports_ = 0;
};

// A stand-in that records its pid, its arguments and its $PAGED_TOKEN, says
// `hello` (its ready line), logs `name` to ./stopped on SIGTERM and exits 0
// (ignores SIGTERM when ./NAME.stubborn exists); fails at once when
// ./NAME.fail exists. The sleeps are short so that nothing outlives a
// SIGKILLed script.
std::string Script(const std::string& dir, const std::string& name, const std::string& hello) {
  return absl::StrCat("#!/bin/sh\n", "D='", dir, "'\n", "id=", name, "\n",
                      "for a in \"$@\"; do case \"$a\" in --worker-id=*) id=", name,
                      "-${a#--worker-id=};; esac; done\n", "trap 'echo ", name,
                      " >> \"$D/stopped\"; exit 0' TERM\n", "if [ -e \"$D/", name,
                      ".stubborn\" ]; then trap '' TERM; fi\n", "if [ -e \"$D/", name,
                      ".fail\" ]; then echo \"", name,
                      ": cannot open the model: no such file\" >&2; exit 1; fi\n",
                      "echo $$ > \"$D/$id.pid\"\n", "echo \"$@\" > \"$D/$id.args\"\n",
                      "echo \"${PAGED_TOKEN:-}\" > \"$D/$id.token\"\n", "echo $$ >> \"$D/pids\"\n",
                      "echo \"", hello, "\"\n", "while :; do sleep 0.1; done\n");
}

class FakeStackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string d = dir_.path();
    Write("paged-store", Script(d, "store", "paged-store: segment fake ready (0 B, built)"));
    Write("paged", Script(d, "coordinator", "paged: listening on the fake socket"));
    Write("paged-worker", Script(d, "worker", "paged-worker: attached (fake)"));
    socket_ = dir_.File("paged.sock");
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  void Write(const std::string& name, const std::string& text) {
    testing::WriteFile(dir_.File(name), text);
    ::chmod(dir_.File(name).c_str(), 0755);
  }

  std::unique_ptr<Subprocess> Launch(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {PagedUpPath(),
                                     "--bin-dir=" + dir_.path(),
                                     "--model=/fake/model.gguf",
                                     "--device=cpu",
                                     "--workers=2",
                                     "--listen=unix://" + socket_,
                                     "--stop-timeout=5",
                                     "--start-timeout=30",
                                     "--restart-backoff=0.05",
                                     "--max-restart-backoff=0.3"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return std::make_unique<Subprocess>(argv);
  }

  // Brings paged-up up: the fake coordinator says it listens, then this test
  // serves the Status it polls.
  std::unique_ptr<Subprocess> LaunchUp(std::vector<std::string> extra = {}) {
    auto up = Launch(std::move(extra));
    EXPECT_TRUE(up->WaitForLine("listening on", 30)) << up->output();
    grpc::ServerBuilder b;
    b.AddListeningPort("unix://" + socket_, grpc::InsecureServerCredentials());
    b.RegisterService(&admin_);
    server_ = b.BuildAndStart();
    EXPECT_TRUE(up->WaitForLine("paged is up: unix://" + socket_, 30)) << up->output();
    return up;
  }

  std::vector<pid_t> ScriptPids() {
    std::vector<pid_t> pids;
    for (absl::string_view p :
         absl::StrSplit(testing::ReadFile(dir_.File("pids")), '\n', absl::SkipEmpty())) {
      pids.push_back(::atoi(std::string(p).c_str()));
    }
    return pids;
  }

  testing::TempDir dir_;
  std::string socket_;
  FakeAdmin admin_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(FakeStackTest, ComesUpRestartsAKilledWorkerAndStopsInOrder) {
  auto up = LaunchUp();
  EXPECT_THAT(up->output(), HasSubstr("2 of 2 workers attached: cpu:0, cpu:1"));
  // Started in order: store, coordinator, workers.
  const std::string& out = up->output();
  EXPECT_LT(out.find("started store"), out.find("started coordinator"));
  EXPECT_LT(out.find("started coordinator"), out.find("started worker cpu:0"));
  EXPECT_THAT(out, HasSubstr("--coordinator=unix://" + socket_ + " --worker-id=cpu:1"));

  const pid_t worker = ReadPid(dir_.File("worker-cpu:0.pid"));
  ASSERT_GT(worker, 0);
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  ASSERT_TRUE(up->WaitForLine("restarted worker cpu:0 (restart 1", 20)) << up->output();
  EXPECT_THAT(up->output(), HasSubstr("worker cpu:0 killed by signal 9"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  pid_t again = worker;
  while (again == worker && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    again = ReadPid(dir_.File("worker-cpu:0.pid"));
  }
  EXPECT_NE(again, worker);
  EXPECT_TRUE(Alive(again));

  const std::vector<pid_t> pids = ScriptPids();
  EXPECT_EQ(pids.size(), 5u);  // store, coordinator, 2 workers, 1 restart
  EXPECT_EQ(up->Signal(SIGINT, 30), 0) << up->output();
  EXPECT_EQ(testing::ReadFile(dir_.File("stopped")), "worker\nworker\ncoordinator\nstore\n");
  EXPECT_TRUE(AllDeadWithin(pids, 5));
  EXPECT_THAT(up->output(), HasSubstr("paged-up: stopped"));
}

// Issue 15, defect 3: once up, a dead store or coordinator is restarted
// (with backoff) instead of taking the deployment down.
TEST_F(FakeStackTest, ADeadStoreOrCoordinatorIsRestarted) {
  auto up = LaunchUp();
  for (const char* name : {"store", "coordinator"}) {
    const pid_t pid = ReadPid(dir_.File(std::string(name) + ".pid"));
    ASSERT_GT(pid, 0);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(up->WaitForLine(absl::StrCat("restarted ", name, " (restart 1"), 20))
        << up->output();
    EXPECT_THAT(up->output(), HasSubstr(absl::StrCat(name, " killed by signal 9")));
  }
  EXPECT_TRUE(Alive(up->pid()));
  EXPECT_THAT(up->output(), ::testing::Not(HasSubstr("error:")));
  // The reports tell the coordinator (pagectl status) how each child is.
  up->WaitForLine("\x01never\x01", 1.5);  // a report or two
  EXPECT_EQ(admin_.StateOf("store"), "RUNNING");
  EXPECT_EQ(admin_.StateOf("worker cpu:1"), "RUNNING");
  EXPECT_EQ(up->Signal(SIGINT, 30), 0) << up->output();
  EXPECT_EQ(testing::ReadFile(dir_.File("stopped")), "worker\nworker\ncoordinator\nstore\n");
}

// Issue 15, defect 3: a worker that keeps failing is never abandoned
// silently: paged-up says it is in a crash loop, keeps retrying, and reports
// it to the coordinator (pagectl status shows it); once it can start again,
// it runs.
TEST_F(FakeStackTest, AWorkerInACrashLoopIsRetriedAndReported) {
  auto up = LaunchUp();
  testing::WriteFile(dir_.File("worker.fail"), "");
  const pid_t worker = ReadPid(dir_.File("worker-cpu:0.pid"));
  ASSERT_GT(worker, 0);
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  ASSERT_TRUE(up->WaitForLine("WARNING: worker cpu:0 is in a crash loop", 30)) << up->output();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (admin_.StateOf("worker cpu:0") != "CRASH_LOOP" &&
         std::chrono::steady_clock::now() < deadline)
    up->WaitForLine("\x01never\x01", 0.2);
  ASSERT_EQ(admin_.StateOf("worker cpu:0"), "CRASH_LOOP");
  const v1::ReportSupervisionRequest report = admin_.last();
  for (const v1::SupervisedProcess& p : report.processes()) {
    if (p.name() != "worker cpu:0") continue;
    EXPECT_GT(p.failures_in_a_row(), 5);
    EXPECT_THAT(p.last_exit(), HasSubstr("exited with status 1"));
  }
  EXPECT_TRUE(Alive(up->pid()));
  // It can start again: it runs.
  std::filesystem::remove(dir_.File("worker.fail"));
  while (admin_.StateOf("worker cpu:0") != "RUNNING" &&
         std::chrono::steady_clock::now() < deadline + std::chrono::seconds(10))
    up->WaitForLine("\x01never\x01", 0.2);
  EXPECT_EQ(admin_.StateOf("worker cpu:0"), "RUNNING");
  EXPECT_EQ(up->Signal(SIGINT, 30), 0) << up->output();
}

// Issue 15, defect 6: the token reaches the children in their environment,
// never on a command line (`ps` shows argv to everyone).
TEST_F(FakeStackTest, TheTokenIsNeverOnACommandLine) {
  const std::string token = "s3cret-" + std::to_string(::getpid());
  testing::WriteFile(dir_.File("token"), token + "\n");
  auto up = LaunchUp({"--token-file=" + dir_.File("token")});
  for (const char* id : {"store", "coordinator", "worker-cpu:0", "worker-cpu:1"})
    ASSERT_GT(ReadPid(dir_.File(std::string(id) + ".pid")), 0) << id;
  for (const char* id : {"coordinator", "worker-cpu:0", "worker-cpu:1"}) {
    EXPECT_THAT(testing::ReadFile(dir_.File(std::string(id) + ".args")),
                ::testing::Not(HasSubstr(token)))
        << id;
    EXPECT_EQ(testing::ReadFile(dir_.File(std::string(id) + ".token")), token + "\n") << id;
  }
  for (const auto& [pid, cmd] : Descendants(up->pid()))
    EXPECT_THAT(cmd, ::testing::Not(HasSubstr(token))) << pid;
  EXPECT_THAT(up->output(), ::testing::Not(HasSubstr(token)));
  EXPECT_EQ(up->Signal(SIGINT, 30), 0) << up->output();
}

// Issue 15, defect 7: --remove-segment is honoured whatever happened to the
// store: here it ignores SIGTERM and a second Ctrl-C has it SIGKILLed.
TEST_F(FakeStackTest, RemoveSegmentIsHonouredAfterTwoQuickSignals) {
  const std::string segment = testing::UniqueSegmentName("up-remove");
  const std::string shm = "/dev/shm/" + segment;
  testing::WriteFile(shm, "a segment");
  testing::WriteFile(dir_.File("store.stubborn"), "");
  auto up = LaunchUp({"--segment=" + segment, "--remove-segment"});
  ::kill(up->pid(), SIGINT);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(up->pid(), SIGINT);  // hurry: SIGKILL what still runs
  EXPECT_EQ(up->Wait(30), 0) << up->output();
  EXPECT_THAT(up->output(), HasSubstr("store still running: sending SIGKILL"));
  EXPECT_THAT(up->output(), HasSubstr("removed segment " + segment));
  EXPECT_FALSE(std::filesystem::exists(shm));
  std::filesystem::remove(shm);
}

TEST_F(FakeStackTest, ChildrenDieWithAKilledLauncher) {
  auto up = LaunchUp();
  const std::vector<pid_t> pids = ScriptPids();
  ASSERT_EQ(pids.size(), 4u);
  EXPECT_EQ(up->Signal(SIGKILL, 10), 128 + SIGKILL);
  EXPECT_TRUE(AllDeadWithin(pids, 10));  // PR_SET_PDEATHSIG: SIGTERM to each
}

TEST_F(FakeStackTest, AStoreThatCannotStartIsAClearError) {
  testing::WriteFile(dir_.File("store.fail"), "");
  auto up = Launch();
  EXPECT_EQ(up->Wait(30), 1) << up->output();
  EXPECT_THAT(up->output(), HasSubstr("[store] store: cannot open the model: no such file"));
  EXPECT_THAT(up->output(), HasSubstr("error: store exited with status 1"));
  EXPECT_THAT(up->output(), ::testing::Not(HasSubstr("started coordinator")));
}

TEST(LauncherTest, DryRunShowsTheDeployment) {
  auto [rc, out] = RunCommand({PagedUpPath(), "--dry-run", "--model=/m.gguf", "--device=cpu",
                               "--workers=2", "--listen=0.0.0.0:7411", "--segment=s1", "--kv-gib=2",
                               "--remove-segment", "--worker-args=--slots=3 --resident=none"});
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("paged-store --model=/m.gguf --segment=s1 --weight-format=native "
                             "--kv-gib=2 --remove-on-exit"));
  EXPECT_THAT(out, HasSubstr("paged --segment=s1 --listen=0.0.0.0:7411"));
  EXPECT_THAT(out, HasSubstr("--device=cpu --coordinator=localhost:7411 --worker-id=cpu:0"));
  EXPECT_THAT(out, HasSubstr("--worker-id=cpu:1 --threads="));
  EXPECT_THAT(out, HasSubstr("--slots=3 --resident=none"));
  auto [rct, outt] =
      RunCommand({PagedUpPath(), "--dry-run", "--model=/m.gguf", "--device=cpu", "--token=s3cret"});
  EXPECT_EQ(rct, 0) << outt;
  EXPECT_THAT(outt, ::testing::Not(HasSubstr("s3cret")));
  EXPECT_THAT(outt, HasSubstr("in $PAGED_TOKEN"));

  auto [rc2, out2] = RunCommand({PagedUpPath(), "--dry-run", "--model=/m.gguf", "--workers=-1"});
  EXPECT_EQ(rc2, 2);
  EXPECT_THAT(out2, HasSubstr("--workers must be >= 0"));
  auto [rc3, out3] = RunCommand({PagedUpPath(), "--dry-run", "--model=/m.gguf", "--device=gpu0"});
  EXPECT_EQ(rc3, 2);
  EXPECT_THAT(out3, HasSubstr("want auto, cpu, cuda or a list like cuda:0,cuda:1"));
  auto [rc4, out4] = RunCommand({PagedUpPath(), "--dry-run"});
  EXPECT_EQ(rc4, 2);
  EXPECT_THAT(out4, HasSubstr("--model is required"));
}

// ---- the real stack -------------------------------------------------------------------

class RealStackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
    target_ = "unix://" + dir_.File("paged.sock");
    segment_ = testing::UniqueSegmentName("up");
  }

  std::pair<int, std::string> Pagectl(std::vector<std::string> args) {
    args.insert(args.begin(), BinaryPath("pagectl"));
    args.push_back("--server=" + target_);
    return RunCommand(args, 60);
  }

  // Workers in `pagectl status --json`, once `ready` holds for them (or the last answer).
  nlohmann::json WaitForWorkers(const std::function<bool(const nlohmann::json&)>& ready,
                                Subprocess& up) {
    nlohmann::json workers;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      auto [rc, out] = Pagectl({"status", "--json"});
      if (rc == 0) {
        const nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
        if (!j.is_discarded()) {
          workers = j["workers"];
          if (ready(workers)) return workers;
        }
      }
      up.WaitForLine("\x01never\x01", 0.3);  // keep reading paged-up's output meanwhile
    }
    return workers;
  }

  testing::TempDir dir_;
  std::string target_, segment_;
};

TEST_F(RealStackTest, ServesRestartsAWorkerAndStopsCleanly) {
  Subprocess up({PagedUpPath(), "--model=" + testing::Stories260KPath(), "--segment=" + segment_,
                 "--weight-format=f32", "--kv-gib=0.05", "--device=cpu", "--workers=2",
                 "--gpu-budget=200MiB", "--listen=" + target_, "--remove-segment",
                 "--start-timeout=120", "--stop-timeout=5"});
  ASSERT_TRUE(up.WaitForLine("paged is up: " + target_, 180)) << up.output();

  // The greedy transcript, streamed.
  auto [rc, out] = Pagectl({"generate", "--prompt-tokens=1", "-n", "30"});
  ASSERT_EQ(rc, 0) << out;
  std::string text =
      out.substr(0, out.find("\n["));  // the usage line goes to stderr, after the text
  text.erase(0, text.find_first_not_of(" \n"));
  const std::string transcript = testing::StoriesTranscript();
  ASSERT_FALSE(transcript.empty());
  EXPECT_GT(text.size(), 40u) << out;
  EXPECT_EQ(transcript.substr(0, text.size()), text) << out;
  EXPECT_THAT(out, HasSubstr("30 tokens (prompt 1)"));

  // Two workers attached.
  auto attached = [](const nlohmann::json& ws) {
    int n = 0;
    for (const auto& w : ws) n += w.value("state", "") == "ATTACHED";
    return n == 2;
  };
  nlohmann::json workers = WaitForWorkers(attached, up);
  ASSERT_TRUE(attached(workers)) << workers.dump();
  auto [src, table] = Pagectl({"status"});
  EXPECT_EQ(src, 0) << table;
  EXPECT_THAT(table, HasSubstr("cpu:0"));
  EXPECT_THAT(table, HasSubstr("cpu:1"));
  EXPECT_THAT(table, HasSubstr("RESTARTS"));

  // A SIGKILLed worker is restarted and attaches again.
  pid_t worker = -1;
  for (const auto& [pid, cmd] : Descendants(up.pid())) {
    if (cmd.find("--worker-id=cpu:0") != std::string::npos) worker = pid;
  }
  ASSERT_GT(worker, 0) << up.output();
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  ASSERT_TRUE(up.WaitForLine("restarted worker cpu:0", 30)) << up.output();
  workers = WaitForWorkers(
      [&](const nlohmann::json& ws) {
        for (const auto& w : ws) {
          if (w.value("worker_id", "") == "cpu:0" && w.value("state", "") == "ATTACHED" &&
              w.value("restarts", 0) >= 1)
            return true;
        }
        return false;
      },
      up);
  bool restarted = false;
  for (const auto& w : workers)
    restarted |= w.value("worker_id", "") == "cpu:0" && w.value("restarts", 0) >= 1;
  EXPECT_TRUE(restarted) << workers.dump();
  auto [grc, gout] = Pagectl({"generate", "--prompt-tokens=1", "-n", "8"});
  EXPECT_EQ(grc, 0) << gout;

  // Issue 15, defect 3: the coordinator dies: restarted, the workers attach
  // to it again, and it serves.
  auto find = [&](const std::string& needle) {
    for (const auto& [pid, cmd] : Descendants(up.pid()))
      if (cmd.find(needle) != std::string::npos) return pid;
    return pid_t(-1);
  };
  const pid_t coordinator = find(" --listen=");
  ASSERT_GT(coordinator, 0) << up.output();
  ASSERT_EQ(::kill(coordinator, SIGKILL), 0);
  ASSERT_TRUE(up.WaitForLine("restarted coordinator (restart 1", 30)) << up.output();
  workers = WaitForWorkers(attached, up);
  EXPECT_TRUE(attached(workers)) << workers.dump();
  auto [crc, cout2] = Pagectl({"generate", "--prompt-tokens=1", "-n", "8"});
  EXPECT_EQ(crc, 0) << cout2;
  // The store dies: restarted, it re-attaches its segment; the service is
  // ready again and serves.
  const pid_t store = find(" --kv-gib=");
  ASSERT_GT(store, 0) << up.output();
  ASSERT_EQ(::kill(store, SIGKILL), 0);
  ASSERT_TRUE(up.WaitForLine("restarted store (restart 1", 30)) << up.output();
  ASSERT_TRUE(up.WaitForLine("re-attached", 30)) << up.output();
  nlohmann::json st;
  const auto ready_by = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < ready_by) {
    auto [rc2, out2] = Pagectl({"status", "--json"});
    st = nlohmann::json::parse(out2, nullptr, false);
    if (rc2 == 0 && !st.is_discarded() && st.value("ready", false)) break;
    up.WaitForLine("\x01never\x01", 0.3);
  }
  EXPECT_TRUE(st.value("ready", false)) << st.dump();
  EXPECT_TRUE(st.value("store_alive", false)) << st.dump();
  auto [src2, sout2] = Pagectl({"generate", "--prompt-tokens=1", "-n", "8"});
  EXPECT_EQ(src2, 0) << sout2;

  // SIGTERM: exit 0, nothing left behind, the segment removed.
  std::vector<pid_t> children;
  for (const auto& [pid, cmd] : Descendants(up.pid())) children.push_back(pid);
  EXPECT_EQ(children.size(), 4u);
  EXPECT_EQ(up.Signal(SIGTERM, 60), 0) << up.output();
  EXPECT_TRUE(AllDeadWithin(children, 10));
  EXPECT_FALSE(std::filesystem::exists("/dev/shm/" + segment_));
}

// Issue 15: a bounded chaos run. Under a streaming load (four clients
// generating the stories260K transcript in a loop), a worker, the
// coordinator, the store and the other worker are SIGKILLed at random
// moments. Every stream completes, with the reference text (one cut by the
// coordinator's death is resumed from the journal by pagectl's client),
// paged-up serves again after each kill, and once the load stops no KV
// block is held.
TEST_F(RealStackTest, ChaosUnderAStreamingLoad) {
  Subprocess up({PagedUpPath(), "--model=" + testing::Stories260KPath(), "--segment=" + segment_,
                 "--weight-format=f32", "--kv-gib=0.05", "--device=cpu", "--workers=2",
                 "--gpu-budget=200MiB", "--listen=" + target_, "--remove-segment",
                 "--start-timeout=120", "--stop-timeout=5"});
  ASSERT_TRUE(up.WaitForLine("paged is up: " + target_, 180)) << up.output();
  const std::string transcript = testing::StoriesTranscript();
  ASSERT_FALSE(transcript.empty());

  std::atomic<bool> stop{false};
  std::atomic<int> completed{0}, failed{0};
  std::mutex mu;
  std::vector<std::string> wrong;  // guarded by mu
  std::vector<std::thread> clients;
  for (int k = 0; k < 4; ++k) {
    clients.emplace_back([&] {
      while (!stop.load()) {
        auto [rc, out] = Pagectl({"generate", "--prompt-tokens=1", "-n", "40"});
        if (rc != 0) {
          failed.fetch_add(1);
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          continue;
        }
        std::string text = out.substr(0, out.find("\n["));
        text.erase(0, text.find_first_not_of(" \n"));
        if (text.size() > 40 && transcript.compare(0, text.size(), text) == 0) {
          completed.fetch_add(1);
        } else {
          std::lock_guard<std::mutex> lock(mu);
          wrong.push_back(out);
        }
      }
    });
  }
  auto find = [&](const std::string& needle) {
    for (const auto& [pid, cmd] : Descendants(up.pid()))
      if (cmd.find(needle) != std::string::npos) return pid;
    return pid_t(-1);
  };
  auto wait = [&](double s) { up.WaitForLine("\x01never\x01", s); };  // reads paged-up's output
  auto status = [&] {
    auto [rc, out] = Pagectl({"status", "--json"});
    const nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
    return rc == 0 && !j.is_discarded() ? j : nlohmann::json();
  };
  auto attached = [&](const nlohmann::json& st) {
    int n = 0;
    for (const auto& w : st.value("workers", nlohmann::json::array()))
      n += w.value("state", "") == "ATTACHED";
    return n;
  };
  std::mt19937 rng(uint32_t(::getpid()));
  std::uniform_real_distribution<double> pause(0.5, 2.0);
  const std::pair<const char*, const char*> victims[] = {{"worker cpu:0", "--worker-id=cpu:0"},
                                                         {"coordinator", " --listen="},
                                                         {"store", " --kv-gib="},
                                                         {"worker cpu:1", "--worker-id=cpu:1"}};
  // A worker's restarts (as the coordinator counts them), -1 when absent.
  auto restarts = [](const nlohmann::json& st, const std::string& id) {
    for (const auto& w : st.value("workers", nlohmann::json::array()))
      if (w.value("worker_id", "") == id) return w.value("restarts", 0);
    return -1;
  };
  for (const auto& [name, needle] : victims) {
    wait(pause(rng));
    const int done_before = completed.load();
    // A killed worker counts as back once it has attached again.
    const std::string worker_id =
        std::string(name).rfind("worker ", 0) == 0 ? std::string(name).substr(7) : "";
    const int restarts_before = worker_id.empty() ? 0 : restarts(status(), worker_id);
    const pid_t pid = find(needle);
    ASSERT_GT(pid, 0) << name << "\n" << up.output();
    ASSERT_EQ(::kill(pid, SIGKILL), 0) << name;
    const auto killed = std::chrono::steady_clock::now();
    // Serving again: ready with both workers attached, and a stream
    // completed since the kill.
    double back_s = -1;
    while (std::chrono::steady_clock::now() - killed < std::chrono::seconds(30)) {
      const nlohmann::json st = status();
      if (st.value("ready", false) && attached(st) == 2 && completed.load() > done_before &&
          (worker_id.empty() || restarts(st, worker_id) > restarts_before) &&
          // A killed store counts as back once paged-up has restarted it.
          (std::string(name) != "store" ||
           up.output().find("restarted store") != std::string::npos)) {
        back_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
        break;
      }
      wait(0.05);
    }
    std::printf("chaos: %s SIGKILLed, serving again after %.2f s\n", name, back_s);
    EXPECT_GE(back_s, 0) << name << " killed: not serving again within 30 s\n" << up.output();
    // The issue asks for 2 s (measured alone: 0.1-1.1 s); the bound leaves
    // room for a CI machine running other tests beside this one.
    EXPECT_LT(back_s, 5.0) << name;
  }
  wait(1.0);
  stop.store(true);
  for (std::thread& t : clients) {
    while (t.joinable()) {
      wait(0.1);
      t.join();
    }
  }
  std::printf("chaos: %d streams completed with the reference text, %d failed\n", completed.load(),
              failed.load());
  EXPECT_GT(completed.load(), 8);
  EXPECT_EQ(failed.load(), 0) << up.output();
  // The coordinator died with streams in flight; its successor restored
  // them from the journal (and their clients resumed them: none failed).
  {
    const std::string log = up.output();
    const size_t at = log.find("restored ");
    ASSERT_NE(at, std::string::npos) << log;
    const int restored = std::atoi(log.c_str() + at + 9);
    std::printf("chaos: %d sequences restored by the new coordinator\n", restored);
    EXPECT_GT(restored, 0) << log.substr(at, 200);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(wrong.empty()) << wrong.size() << " streams differ, first:\n" << wrong.front();
  }
  // No KV block is held once nothing runs.
  // (proto JSON: a uint64 is a string, and a zero is left out.)
  auto used = [](const nlohmann::json& j) {
    const std::string u = j.value("kv_blocks_used", nlohmann::json("0")).dump();
    return u == "\"0\"" || u == "0" ? 0 : 1;
  };
  nlohmann::json st;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    st = status();
    if (st.contains("kv_blocks_total") && used(st) == 0) break;
    wait(0.2);
  }
  ASSERT_TRUE(st.contains("kv_blocks_total")) << st.dump();
  EXPECT_EQ(used(st), 0) << st.dump();
  EXPECT_EQ(up.Signal(SIGTERM, 60), 0) << up.output();
}

// Issue 13: llama.cpp's own Q4_K_M and Q4_0 files, kept as stored, served by
// paged-up on CPU workers: the greedy continuation is llama.cpp's on the same
// file (tests/golden/gguf/llama_logits.json; for these two files llama.cpp
// gives the same 12 tokens with its quantized products and on the file
// dequantized to F32, so the comparison has no near tie to stumble on).
TEST_F(RealStackTest, ServesGgufBlockFormatsAsStoredLikeLlamaCpp) {
  const std::string dir = testing::SourceDir() + "/tests/golden/gguf";
  const auto oracle = nlohmann::json::parse(testing::ReadFile(dir + "/llama_logits.json"));
  const std::vector<int32_t> prompt = oracle["greedy_prompt"].get<std::vector<int32_t>>();
  for (const char* file :
       {"tiny-q4_k_m.gguf", "tiny-q6_k.gguf", "tiny-q4_0.gguf", "tiny-mxfp4.gguf"}) {
    // llama.cpp's greedy tokens on the quantized file; where its int8
    // activations make them differ from its run on the same weights
    // dequantized to f32 (Q6_K and MXFP4: the random model's logits are
    // near ties), that run's: paged computes with exact activations.
    const auto& g = oracle["greedy"][file];
    const std::vector<int32_t> quantized = g["quantized"].get<std::vector<int32_t>>();
    const std::vector<int32_t> dequantized = g["dequantized"].get<std::vector<int32_t>>();
    const std::vector<int32_t>& want = quantized == dequantized ? quantized : dequantized;
    const std::string segment = segment_ + "-" + std::string(file).substr(5, 4);
    Subprocess up({PagedUpPath(), "--model=" + dir + "/" + file, "--segment=" + segment,
                   "--weight-format=native", "--kv-gib=0.01", "--device=cpu", "--workers=1",
                   "--listen=" + target_, "--remove-segment", "--start-timeout=60",
                   "--stop-timeout=5"});
    ASSERT_TRUE(up.WaitForLine("paged is up: " + target_, 90)) << up.output();
    std::string ids;
    for (int32_t t : prompt) ids += (ids.empty() ? "" : ",") + std::to_string(t);
    auto [rc, out] = Pagectl({"generate", "--prompt-tokens=" + ids, "-n",
                              std::to_string(want.size()), "--ignore-eos", "--json"});
    ASSERT_EQ(rc, 0) << out;
    const auto j = nlohmann::json::parse(out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << out;
    EXPECT_EQ(j["token_ids"].get<std::vector<int32_t>>(), want) << file << ": " << out;
    EXPECT_EQ(up.Signal(SIGTERM, 60), 0) << up.output();
    EXPECT_FALSE(std::filesystem::exists("/dev/shm/" + segment));
  }
}

}  // namespace
}  // namespace paged
