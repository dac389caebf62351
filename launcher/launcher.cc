#include "launcher/launcher.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/sdk/paged_client.h"
#include "common/segment.h"
#include "common/size_flag.h"
#include "common/token.h"

namespace paged::launcher {
namespace {

using Clock = std::chrono::steady_clock;

bool IsExecutableFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::string SelfDir() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "" : self.parent_path().string();
}

// "cuda:3" -> 3; -1 when not of that form.
int CudaIndex(const std::string& d) {
  const std::string kCuda = "cuda:";
  int i = -1;
  if (d.rfind(kCuda, 0) != 0) return -1;
  const std::string digits = d.substr(kCuda.size());
  return absl::SimpleAtoi(digits, &i) && i >= 0 ? i : -1;
}

}  // namespace

std::string FindBinary(const std::string& name, const std::string& bin_dir,
                       const std::string& self_dir) {
  std::vector<std::string> dirs;
  if (!bin_dir.empty()) dirs.push_back(bin_dir);
  if (!self_dir.empty()) {
    dirs.push_back(self_dir);
    for (const char* sub : {"store", "daemon", "worker", "client/pagectl"})
      dirs.push_back(self_dir + "/../" + sub);
  }
  if (const char* path = std::getenv("PATH")) {
    for (absl::string_view d : absl::StrSplit(path, ':', absl::SkipEmpty())) dirs.emplace_back(d);
  }
  for (const std::string& d : dirs) {
    const std::string p = d + "/" + name;
    if (IsExecutableFile(p)) return std::filesystem::path(p).lexically_normal().string();
  }
  return "";
}

absl::StatusOr<Binaries> FindBinaries(const std::string& bin_dir) {
  const std::string self = SelfDir();
  Binaries b;
  b.store = FindBinary("paged-store", bin_dir, self);
  b.coordinator = FindBinary("paged", bin_dir, self);
  b.worker = FindBinary("paged-worker", bin_dir, self);
  std::vector<std::string> missing;
  if (b.store.empty()) missing.push_back("paged-store");
  if (b.coordinator.empty()) missing.push_back("paged (the coordinator)");
  if (b.worker.empty()) missing.push_back("paged-worker");
  if (!missing.empty()) {
    return absl::NotFoundError(absl::StrCat("cannot find ", absl::StrJoin(missing, ", "),
                                            " (looked in ", bin_dir.empty() ? "" : bin_dir + ", ",
                                            self.empty() ? "" : self + ", ",
                                            "the build tree and $PATH; --bin-dir DIR says where)"));
  }
  return b;
}

static std::string TlsCa(const LaunchOptions& o) {
  return o.tls_ca.empty() ? o.tls_cert : o.tls_ca;
}

static client::ConnectOptions ClientOptions(const LaunchOptions& o,
                                            absl::Duration connect_timeout) {
  client::ConnectOptions c;
  c.connect_timeout = connect_timeout;
  if (!o.tls_cert.empty()) c.tls.ca = TlsCa(o);
  return c;
}

std::string JournalPath(const LaunchOptions& o) {
  return o.journal == "auto" ? absl::StrCat("/dev/shm/", o.segment, ".journal") : o.journal;
}

std::string ClientTarget(const std::string& listen) {
  if (listen.rfind("unix:", 0) == 0 || listen.rfind("unix-abstract:", 0) == 0) return listen;
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return listen;
  const std::string host = listen.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "*" || host == "::") {
    return "localhost" + listen.substr(colon);
  }
  return listen;
}

std::string CommandLine(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$`*?;&|<>()") == std::string::npos;
    if (plain) {
      out += a;
    } else {
      out += "'";
      for (char ch : a) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
      out += "'";
    }
  }
  return out;
}

absl::StatusOr<Deployment> PlanDeployment(const LaunchOptions& o, const std::vector<GpuInfo>& gpus,
                                          const Binaries& bins, int cpu_threads) {
  if (o.model.empty()) {
    return absl::InvalidArgumentError(
        "--model is required (an HF checkpoint directory or a .gguf file)");
  }
  if (o.segment.empty()) return absl::InvalidArgumentError("--segment must not be empty");
  if (o.tls_cert.empty() != o.tls_key.empty() || (o.tls_cert.empty() && !o.tls_ca.empty()))
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together (--tls-ca with them)");
  if (o.listen.empty())
    return absl::InvalidArgumentError(
        "--listen must not be empty (unix:///path.sock or host:port)");
  if (!(o.kv_gib > 0))
    return absl::InvalidArgumentError(absl::StrCat("--kv-gib must be > 0 (got ", o.kv_gib, ")"));
  if (o.workers < 0)
    return absl::InvalidArgumentError(absl::StrCat("--workers must be >= 0 (got ", o.workers, ")"));
  if (!(o.start_timeout_s > 0) || !(o.stop_timeout_s > 0)) {
    return absl::InvalidArgumentError("--start-timeout and --stop-timeout must be > 0");
  }
  if (!(o.restart_backoff_s > 0) || !(o.max_restart_backoff_s > 0))
    return absl::InvalidArgumentError("--restart-backoff and --max-restart-backoff must be > 0");
  uint64_t budget = 0;  // 0: auto
  if (o.gpu_budget != "auto") {
    auto b = ParseByteSize(o.gpu_budget, "gpu-budget");
    if (!b.ok()) return b.status();
    budget = *b;
  }

  // Which devices get a worker.
  std::vector<std::string> devices;
  const auto no_gpu = [&] {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device ", o.device, ": no GPU is visible",
        CudaCompiledIn() ? "" : " (this build has no CUDA backend)", "; use --device cpu"));
  };
  if (o.device == "cpu" || (o.device == "auto" && gpus.empty())) {
    for (int i = 0; i < std::max(1, o.workers); ++i) devices.push_back("cpu");
  } else if (o.device == "auto" || o.device == "cuda") {
    if (gpus.empty()) return no_gpu();
    if (o.workers > int(gpus.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--workers ", o.workers, ": only ", gpus.size(), " GPU(s) visible (one worker per GPU)"));
    }
    const int n = o.workers > 0 ? o.workers : int(gpus.size());
    for (int i = 0; i < n; ++i) devices.push_back(absl::StrCat("cuda:", gpus[size_t(i)].index));
  } else {
    for (absl::string_view d : absl::StrSplit(o.device, ',', absl::SkipEmpty())) {
      const int index = CudaIndex(std::string(d));
      if (index < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--device ", o.device, ": want auto, cpu, cuda or a list like cuda:0,cuda:1"));
      }
      if (gpus.empty()) return no_gpu();
      bool found = false;
      for (const GpuInfo& g : gpus) found |= g.index == index;
      if (!found) {
        return absl::InvalidArgumentError(absl::StrCat("--device ", o.device,
                                                       ": there is no cuda:", index, " (",
                                                       gpus.size(), " GPU(s) visible)"));
      }
      devices.push_back(absl::StrCat("cuda:", index));
    }
    if (devices.empty()) return absl::InvalidArgumentError("--device is empty");
    if (o.workers > 0 && o.workers != int(devices.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("--workers ", o.workers, " does not match --device ", o.device));
    }
  }

  Deployment d;
  d.client_target = ClientTarget(o.listen);
  d.store.name = "store";
  d.store.argv = {bins.store, "--model=" + o.model, "--segment=" + o.segment,
                  "--weight-format=" + o.weight_format, absl::StrCat("--kv-gib=", o.kv_gib)};
  if (o.remove_segment) d.store.argv.push_back("--remove-on-exit");
  d.store.argv.insert(d.store.argv.end(), o.store_args.begin(), o.store_args.end());

  d.coordinator.name = "coordinator";
  d.coordinator.argv = {bins.coordinator, "--segment=" + o.segment, "--listen=" + o.listen};
  if (const std::string j = JournalPath(o); !j.empty())
    d.coordinator.argv.push_back("--journal=" + j);
  if (!o.tls_cert.empty()) {
    d.coordinator.argv.push_back("--tls-cert=" + o.tls_cert);
    d.coordinator.argv.push_back("--tls-key=" + o.tls_key);
  }
  // The token in the environment (readable by this user only), never in argv.
  std::vector<std::string> env;
  if (!o.token.empty()) env.push_back(absl::StrCat(kTokenEnv, "=", o.token));
  d.coordinator.env = env;
  d.coordinator.argv.insert(d.coordinator.argv.end(), o.coordinator_args.begin(),
                            o.coordinator_args.end());

  int n_cpu = 0;
  std::map<std::string, int> per_device;  // a device named twice runs two workers (they share it)
  for (const std::string& dev : devices) {
    n_cpu += dev == "cpu";
    ++per_device[dev];
  }
  int cpu_index = 0;
  std::map<std::string, int> seen;
  for (const std::string& dev : devices) {
    ChildSpec w;
    const int nth = seen[dev]++;
    const std::string id = dev == "cpu" ? absl::StrCat("cpu:", cpu_index++)
                           : nth == 0   ? dev
                                        : absl::StrCat(dev, "/", nth);
    w.name = "worker " + id;
    w.restart = true;
    w.argv = {bins.worker, "--segment=" + o.segment, "--device=" + dev,
              "--coordinator=" + d.client_target, "--worker-id=" + id};
    if (dev == "cpu") {
      w.argv.push_back(absl::StrCat("--threads=", std::max(1, cpu_threads / std::max(1, n_cpu))));
      if (budget > 0) w.argv.push_back(absl::StrCat("--gpu-budget=", budget));
    } else {
      uint64_t b = budget;
      if (b == 0) {
        for (const GpuInfo& g : gpus) {
          // Leave room for the CUDA context, cuBLAS and fragmentation.
          if (absl::StrCat("cuda:", g.index) == dev)
            b = g.total_bytes / 100 * 85 / uint64_t(per_device[dev]) / (1 << 20) * (1 << 20);
        }
      }
      if (b > 0) w.argv.push_back(absl::StrCat("--gpu-budget=", b));
    }
    if (!o.tls_cert.empty()) w.argv.push_back("--tls-ca=" + TlsCa(o));
    w.env = env;
    w.argv.insert(w.argv.end(), o.worker_args.begin(), o.worker_args.end());
    d.workers.push_back(std::move(w));
  }
  return d;
}

namespace {

enum class WaitResult { kDone, kStopped, kFailed, kTimeout };

// Runs the supervisor until done() holds, a stop is asked for, a child that
// must not die died, or the time is up.
WaitResult RunUntil(Supervisor& sup, double timeout_s, const std::function<bool()>& done) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_s));
  while (true) {
    if (sup.stop_requested()) return WaitResult::kStopped;
    if (!sup.failure().empty()) return WaitResult::kFailed;
    if (done()) return WaitResult::kDone;
    if (Clock::now() > deadline) return WaitResult::kTimeout;
    sup.Poll(0.2);
  }
}

// Asks the coordinator for its status, at most every 250 ms.
class StatusProbe {
 public:
  StatusProbe(std::string target, std::string token, client::ConnectOptions options)
      : target_(std::move(target)), token_(std::move(token)), options_(std::move(options)) {
    options_.connect_timeout = absl::ZeroDuration();  // lazily
  }

  const absl::StatusOr<v1::StatusResponse>& Get() {
    const auto now = Clock::now();
    if (now - last_ < std::chrono::milliseconds(250)) return status_;
    last_ = now;
    if (!client_.has_value()) {
      auto c = client::Client::Connect(target_, token_, options_);
      if (!c.ok()) {
        status_ = c.status();
        return status_;
      }
      client_.emplace(*std::move(c));
    }
    status_ = client::wire::Status(*client_, absl::Seconds(1));
    // Until the server answers, each try gets a fresh channel: a channel that
    // failed to connect waits out its reconnect backoff before trying again.
    if (!status_.ok()) client_.reset();
    return status_;
  }

  // Tells the coordinator how the children are (best effort).
  void Report(const v1::ReportSupervisionRequest& r) {
    if (!client_.has_value()) {
      Get();
      if (!client_.has_value()) return;
    }
    if (!client::wire::ReportSupervision(*client_, r, absl::Seconds(1)).ok()) client_.reset();
  }

 private:
  std::string target_, token_;
  client::ConnectOptions options_;
  std::optional<client::Client> client_;
  Clock::time_point last_{};
  absl::StatusOr<v1::StatusResponse> status_ = absl::UnavailableError("not asked yet");
};

void Say(const std::string& text) {
  std::fprintf(stderr, "paged-up: %s\n", text.c_str());
  std::fflush(stderr);
}

// True when a paged server already answers at `target`.
bool ServerAlreadyThere(const std::string& target, const std::string& token,
                        const client::ConnectOptions& quick) {
  auto c = client::Client::Connect(target, token, quick);
  if (!c.ok()) return false;
  // Any answer but "nobody there" is a server (one that wants another token too).
  const absl::StatusCode code = c->Status(absl::Seconds(1)).status().code();
  return code != absl::StatusCode::kUnavailable && code != absl::StatusCode::kDeadlineExceeded;
}

class Deploy {
 public:
  Deploy(const LaunchOptions& o, Supervisor& sup) : o_(o), sup_(sup) {}

  int Run(const Deployment& d) {
    const std::string target = d.client_target;
    if (target.rfind("unix:", 0) == 0 &&
        ServerAlreadyThere(target, o_.token, ClientOptions(o_, absl::Seconds(1)))) {
      Say(absl::StrCat("a paged server already answers at ", target,
                       "; stop it first or use --listen"));
      return 1;
    }
    // 1. The store: READY once its segment is built or re-attached.
    auto store = StartChild(d.store);
    if (!store.ok()) return Abort(std::string(store.status().message()));
    store_ = *store;
    if (auto exit = AwaitStage(
            RunUntil(sup_, o_.start_timeout_s, [&] { return sup_.SawLine(store_, " ready ("); }),
            "paged-store did not become ready within --start-timeout")) {
      return *exit;
    }
    // 2. The coordinator: it prints "listening on", or its Status answers.
    StatusProbe probe(target, o_.token, ClientOptions(o_, absl::ZeroDuration()));
    auto coordinator = StartChild(d.coordinator);
    if (!coordinator.ok()) return Abort(std::string(coordinator.status().message()));
    coordinator_ = *coordinator;
    if (auto exit = AwaitStage(RunUntil(sup_, o_.start_timeout_s,
                                        [&] {
                                          return sup_.SawLine(coordinator_, "listening on") ||
                                                 probe.Get().ok();
                                        }),
                               absl::StrCat("the coordinator did not listen on ", o_.listen,
                                            " within --start-timeout"))) {
      return *exit;
    }
    // 3. The workers; up once one of them has attached.
    for (const ChildSpec& w : d.workers) {
      auto id = StartChild(w);
      if (!id.ok()) return Abort(std::string(id.status().message()));
      workers_.push_back(*id);
    }
    std::string up;
    if (auto exit = AwaitStage(RunUntil(sup_, o_.start_timeout_s,
                                        [&] {
                                          if (NoWorkerLeft()) return true;
                                          const auto& s = probe.Get();
                                          if (!s.ok()) return false;
                                          std::vector<std::string> attached;
                                          for (const v1::WorkerInfo& w : s->workers()) {
                                            if (w.state() == "ATTACHED")
                                              attached.push_back(w.worker_id());
                                          }
                                          if (attached.empty()) return false;
                                          up = absl::StrCat(
                                              "paged is up: ", target, " (",
                                              s->model().empty() ? o_.model : s->model(), "; ",
                                              attached.size(), " of ", d.workers.size(), " worker",
                                              d.workers.size() == 1 ? "" : "s",
                                              " attached: ", absl::StrJoin(attached, ", "), ")");
                                          return true;
                                        }),
                               "no worker attached to the coordinator within --start-timeout")) {
      return *exit;
    }
    if (up.empty()) return Abort("every worker failed to start");
    std::printf("%s\n  try: pagectl generate --server %s --prompt \"Once upon a time\"\n",
                up.c_str(), CommandLine({target}).c_str());
    std::fflush(stdout);
    // 4. Supervise until asked to stop: from now on the store and the
    // coordinator are restarted too when they fail (the store re-attaches its
    // segment; the workers re-attach to the new coordinator by themselves).
    sup_.SetRestart(store_, true);
    sup_.SetRestart(coordinator_, true);
    auto last_report = Clock::now() - std::chrono::seconds(10);
    while (true) {
      if (sup_.stop_requested()) return Shutdown();
      if (!sup_.failure().empty()) return Abort(sup_.failure());
      if (Clock::now() - last_report >= std::chrono::seconds(1)) {
        probe.Report(Supervision());
        last_report = Clock::now();
      }
      sup_.Poll(0.5);
    }
  }

 private:
  absl::StatusOr<int> StartChild(const ChildSpec& spec) {
    auto id = sup_.Start(spec);
    if (id.ok())
      Say(absl::StrCat("started ", spec.name, " (pid ", sup_.pid(*id),
                       "): ", CommandLine(spec.argv)));
    return id;
  }

  bool NoWorkerLeft() const {
    if (workers_.empty()) return false;
    for (int id : workers_) {
      if (sup_.state(id) != ChildState::kFailed) return false;
    }
    return true;
  }

  void StopAll() {
    if (!workers_.empty()) sup_.Stop(workers_, o_.stop_timeout_s);
    if (coordinator_ >= 0) sup_.Stop({coordinator_}, o_.stop_timeout_s);
    if (store_ >= 0) sup_.Stop({store_}, o_.stop_timeout_s);
    // However the store ended (crashed, SIGKILLed after a second Ctrl-C),
    // --remove-segment is honoured: it is gone now, so is its segment.
    if (o_.remove_segment && store_ >= 0 && sup_.pid(store_) <= 0) {
      RemoveSegment(o_.segment);
      Say(absl::StrCat("removed segment ", o_.segment));
      // The journal's block lists index that segment's KV pool.
      if (const std::string j = JournalPath(o_); !j.empty() && ::unlink(j.c_str()) == 0)
        Say(absl::StrCat("removed journal ", j));
    }
  }

  // How every child is, for the coordinator's Status.
  v1::ReportSupervisionRequest Supervision() const {
    v1::ReportSupervisionRequest r;
    r.set_supervisor(absl::StrCat("paged-up (pid ", ::getpid(), ")"));
    std::vector<int> ids = {store_, coordinator_};
    ids.insert(ids.end(), workers_.begin(), workers_.end());
    for (int id : ids) {
      if (id < 0) continue;
      v1::SupervisedProcess* p = r.add_processes();
      p->set_name(sup_.spec(id).name);
      switch (sup_.state(id)) {
        case ChildState::kRunning:
          p->set_state("RUNNING");
          break;
        case ChildState::kRestarting:
          p->set_state(sup_.crash_loop(id) ? "CRASH_LOOP" : "RESTARTING");
          break;
        case ChildState::kExited:
          p->set_state("EXITED");
          break;
        case ChildState::kFailed:
          p->set_state("FAILED");
          break;
      }
      p->set_pid(sup_.pid(id) > 0 ? sup_.pid(id) : 0);
      p->set_restarts(sup_.restarts(id));
      p->set_failures_in_a_row(sup_.quick_failures(id));
      if (sup_.restarts(id) > 0 || sup_.state(id) != ChildState::kRunning)
        p->set_last_exit(sup_.LastExit(id));
      p->set_next_restart_s(sup_.next_restart_s(id));
    }
    return r;
  }

  // Asked to stop: workers, coordinator, store; exit 0.
  // Ends start-up unless the stage completed: the exit code to return.
  std::optional<int> AwaitStage(WaitResult r, const std::string& timeout_message) {
    switch (r) {
      case WaitResult::kDone:
        return std::nullopt;
      case WaitResult::kStopped:
        return Shutdown();
      case WaitResult::kFailed:
        return Abort(sup_.failure());
      case WaitResult::kTimeout:
        return Abort(timeout_message);
    }
    return Abort("unknown wait result");
  }

  int Shutdown() {
    Say(absl::StrCat(sup_.last_signal() == SIGINT ? "SIGINT" : "SIGTERM",
                     ": stopping workers, coordinator and store"));
    StopAll();
    Say("stopped");
    return 0;
  }

  // Something failed: say what, stop everything, exit 1.
  int Abort(const std::string& why) {
    Say(absl::StrCat("error: ", why, "; shutting down"));
    StopAll();
    return 1;
  }

  const LaunchOptions& o_;
  Supervisor& sup_;
  int store_ = -1, coordinator_ = -1;
  std::vector<int> workers_;
};

}  // namespace

int Launch(const LaunchOptions& o) {
  // First: block the signals before any thread (CUDA's, gRPC's) starts.
  SupervisorOptions so;
  so.restart_backoff_s = o.restart_backoff_s;
  so.max_backoff_s = std::max(o.max_restart_backoff_s, o.restart_backoff_s);
  auto sup = Supervisor::Create(so);
  if (!sup.ok()) {
    Say(std::string(sup.status().message()));
    return 1;
  }
  Binaries bins;
  if (o.dry_run) {
    // Show what would run even when a binary is missing.
    const std::string self = SelfDir();
    bins = {FindBinary("paged-store", o.bin_dir, self), FindBinary("paged", o.bin_dir, self),
            FindBinary("paged-worker", o.bin_dir, self)};
    if (bins.store.empty()) bins.store = "paged-store";
    if (bins.coordinator.empty()) bins.coordinator = "paged";
    if (bins.worker.empty()) bins.worker = "paged-worker";
  } else {
    auto found = FindBinaries(o.bin_dir);
    if (!found.ok()) {
      Say(std::string(found.status().message()));
      return 1;
    }
    bins = *found;
  }
  const std::vector<GpuInfo> gpus = o.device == "cpu" ? std::vector<GpuInfo>{} : ListGpus();
  const int threads = int(std::max(1u, std::thread::hardware_concurrency()));
  auto d = PlanDeployment(o, gpus, bins, threads);
  if (!d.ok()) {
    Say(std::string(d.status().message()));
    return d.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (o.dry_run) {
    std::printf("%s\n%s\n", CommandLine(d->store.argv).c_str(),
                CommandLine(d->coordinator.argv).c_str());
    for (const ChildSpec& w : d->workers) std::printf("%s\n", CommandLine(w.argv).c_str());
    if (!o.token.empty())
      std::printf("(the token reaches paged and the workers in $%s, not on their command lines)\n",
                  kTokenEnv);
    return 0;
  }
  Deploy deploy(o, **sup);
  return deploy.Run(*d);
}

}  // namespace paged::launcher
