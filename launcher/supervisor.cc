#include "launcher/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

extern char** environ;

namespace paged::launcher {

struct Supervisor::Child {
  ChildSpec spec;
  ChildState state = ChildState::kExited;
  pid_t pid = -1;
  int out_fd = -1;  // read end of the child's stdout + stderr
  int restarts = 0;
  int quick_failures = 0;
  int last_status = 0;
  bool stopping = false;  // Stop() asked it to exit: no restart
  Clock::time_point started;
  Clock::time_point restart_at;
  std::string partial;            // output after the last newline
  std::deque<std::string> tail;   // the last lines
  std::vector<std::string> seen;  // every line since the last start (bounded)
};

namespace {

constexpr size_t kTailLines = 50;
constexpr size_t kSeenLines = 4096;

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

std::string DescribeWaitStatus(int st) {
  if (WIFEXITED(st)) return absl::StrCat("exited with status ", WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    const char* name = strsignal(WTERMSIG(st));
    return absl::StrCat("killed by signal ", WTERMSIG(st),
                        name ? absl::StrCat(" (", name, ")") : "");
  }
  return absl::StrCat("wait status ", st);
}

absl::StatusOr<std::unique_ptr<Supervisor>> Supervisor::Create(SupervisorOptions options) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGCHLD);
  if (int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr); rc != 0) {
    return absl::InternalError(absl::StrCat("pthread_sigmask: ", std::strerror(rc)));
  }
  const int fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) return absl::InternalError(absl::StrCat("signalfd: ", std::strerror(errno)));
  // A closed terminal must not kill the launcher while it still has children.
  ::signal(SIGPIPE, SIG_IGN);
  return std::unique_ptr<Supervisor>(new Supervisor(options, fd));
}

Supervisor::Supervisor(SupervisorOptions options, int signal_fd)
    : options_(options), signal_fd_(signal_fd) {
  devnull_ = ::open("/dev/null", O_RDWR | O_CLOEXEC);
}

Supervisor::~Supervisor() {
  for (auto& c : children_) {
    if (c->pid > 0) {
      ::kill(c->pid, SIGKILL);
      ::waitpid(c->pid, nullptr, 0);
    }
    if (c->out_fd >= 0) ::close(c->out_fd);
  }
  if (devnull_ >= 0) ::close(devnull_);
  if (signal_fd_ >= 0) ::close(signal_fd_);
}

void Supervisor::Note(const std::string& text) {
  std::fprintf(options_.log, "paged-up: %s\n", text.c_str());
  std::fflush(options_.log);
}

absl::StatusOr<int> Supervisor::Start(ChildSpec spec) {
  if (spec.argv.empty())
    return absl::InvalidArgumentError(absl::StrCat(spec.name, ": empty command"));
  auto c = std::make_unique<Child>();
  c->spec = std::move(spec);
  if (absl::Status s = Spawn(*c); !s.ok()) return s;
  children_.push_back(std::move(c));
  return int(children_.size() - 1);
}

absl::Status Supervisor::Spawn(Child& c) {
  // Everything the child needs is prepared before fork: between fork and exec
  // only async-signal-safe calls are allowed (this process has threads).
  std::vector<char*> argv;
  for (std::string& a : c.spec.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The environment: ours, with the spec's names replaced or added.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const std::string& x : c.spec.env) replaced |= x.substr(0, x.find('=')) == name;
    if (!replaced) env_strings.emplace_back(entry);
  }
  env_strings.insert(env_strings.end(), c.spec.env.begin(), c.spec.env.end());
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  sigset_t empty;
  sigemptyset(&empty);
  const pid_t parent = ::getpid();
  const int devnull = devnull_;
  const pid_t pid = ::fork();
  if (pid < 0) {
    for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // the launcher died before prctl
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGCHLD, SIGHUP}) ::sigaction(sig, &dfl, nullptr);
    ::sigprocmask(SIG_SETMASK, &empty, nullptr);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    ::execve(argv[0], argv.data(), envp.data());
    const int e = errno;
    ssize_t ignored = ::write(err[1], &e, sizeof(e));
    (void)ignored;
    ::_exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  // The error pipe closes on a successful exec (O_CLOEXEC) or carries errno.
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(err[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(err[0]);
  if (n == ssize_t(sizeof(child_errno))) {
    ::waitpid(pid, nullptr, 0);
    ::close(out[0]);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot run ", c.spec.argv[0], ": ", std::strerror(child_errno)));
  }
  ::fcntl(out[0], F_SETFL, ::fcntl(out[0], F_GETFL) | O_NONBLOCK);
  c.pid = pid;
  c.out_fd = out[0];
  c.state = ChildState::kRunning;
  c.stopping = false;
  c.started = Clock::now();
  c.seen.clear();
  c.partial.clear();
  return absl::OkStatus();
}

void Supervisor::ReadOutput(Child& c) {
  char buf[8192];
  while (c.out_fd >= 0) {
    const ssize_t n = ::read(c.out_fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;  // EAGAIN: nothing more now
    if (n == 0) {       // EOF: the child (and whoever shared its pipe) is gone
      FlushPartial(c);
      ::close(c.out_fd);
      c.out_fd = -1;
      return;
    }
    c.partial.append(buf, size_t(n));
    size_t start = 0;
    for (size_t nl; (nl = c.partial.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string line = c.partial.substr(start, nl - start);
      std::fprintf(options_.log, "[%s] %s\n", c.spec.name.c_str(), line.c_str());
      if (c.seen.size() < kSeenLines) c.seen.push_back(line);
      c.tail.push_back(std::move(line));
      if (c.tail.size() > kTailLines) c.tail.pop_front();
    }
    c.partial.erase(0, start);
    std::fflush(options_.log);
  }
}

void Supervisor::FlushPartial(Child& c) {
  if (c.partial.empty()) return;
  std::fprintf(options_.log, "[%s] %s\n", c.spec.name.c_str(), c.partial.c_str());
  std::fflush(options_.log);
  if (c.seen.size() < kSeenLines) c.seen.push_back(c.partial);
  c.tail.push_back(std::move(c.partial));
  if (c.tail.size() > kTailLines) c.tail.pop_front();
  c.partial.clear();
}

void Supervisor::HandleExit(Child& c, int st) {
  const double ran_s = Seconds(Clock::now() - c.started);
  c.pid = -1;
  c.last_status = st;
  ReadOutput(c);  // whatever it wrote last
  FlushPartial(c);
  const std::string how = DescribeWaitStatus(st);
  if (c.stopping) {
    c.state = ChildState::kExited;
    return;
  }
  const bool clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
  if (!c.spec.restart) {
    c.state = clean ? ChildState::kExited : ChildState::kFailed;
    if (failure_.empty()) failure_ = absl::StrCat(c.spec.name, " ", how);
    Note(absl::StrCat(c.spec.name, " ", how));
    return;
  }
  if (clean) {
    c.state = ChildState::kExited;
    Note(absl::StrCat(c.spec.name, " exited cleanly; not restarted"));
    return;
  }
  c.quick_failures = ran_s >= options_.stable_after_s ? 1 : c.quick_failures + 1;
  const bool loop = c.quick_failures > options_.max_quick_failures;
  const double backoff =
      loop ? options_.max_backoff_s
           : std::min(options_.max_backoff_s,
                      options_.restart_backoff_s * std::pow(2.0, c.quick_failures - 1));
  c.state = ChildState::kRestarting;
  c.restart_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(backoff));
  if (loop) {
    // Never abandoned, never silently: every try says so.
    Note(absl::StrCat("WARNING: ", c.spec.name, " is in a crash loop: it failed ", c.quick_failures,
                      " times in a row (last: ", how, " after ", absl::StrFormat("%.1f s", ran_s),
                      "); retrying every ", absl::StrFormat("%.0f s", backoff),
                      " (pagectl status shows it)"));
    return;
  }
  Note(absl::StrCat(c.spec.name, " ", how, " after ", absl::StrFormat("%.1f s", ran_s),
                    "; restart ", c.restarts + 1, " in ", absl::StrFormat("%.1f s", backoff)));
}

void Supervisor::ReapExited() {
  for (auto& c : children_) {
    if (c->pid <= 0) continue;
    int st = 0;
    pid_t r;
    do {
      r = ::waitpid(c->pid, &st, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == c->pid) HandleExit(*c, st);
  }
}

void Supervisor::HandleSignals() {
  signalfd_siginfo info;
  while (::read(signal_fd_, &info, sizeof(info)) == ssize_t(sizeof(info))) {
    if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM) {
      ++stop_signals_;
      last_signal_ = int(info.ssi_signo);
    }
    // SIGCHLD: ReapExited() looks at every child anyway.
  }
}

void Supervisor::Poll(double timeout_s) {
  const auto now = Clock::now();
  // Restarts that are due.
  double wait_s = std::max(0.0, timeout_s);
  for (auto& c : children_) {
    if (c->state != ChildState::kRestarting) continue;
    if (stop_requested()) {
      c->state = ChildState::kExited;
      continue;
    }
    if (c->restart_at <= now) {
      if (c->out_fd >= 0) {  // a grandchild may still hold the old pipe
        ::close(c->out_fd);
        c->out_fd = -1;
      }
      ++c->restarts;
      if (absl::Status s = Spawn(*c); !s.ok()) {
        c->state = ChildState::kFailed;
        Note(absl::StrCat(c->spec.name, ": ", s.message()));
        if (failure_.empty()) failure_ = std::string(s.message());
      } else {
        Note(absl::StrCat("restarted ", c->spec.name, " (restart ", c->restarts, ", pid ", c->pid,
                          ")"));
      }
    } else {
      wait_s = std::min(wait_s, Seconds(c->restart_at - now));
    }
  }
  std::vector<pollfd> fds;
  std::vector<Child*> owners;
  fds.push_back({signal_fd_, POLLIN, 0});
  owners.push_back(nullptr);
  for (auto& c : children_) {
    if (c->out_fd < 0) continue;
    fds.push_back({c->out_fd, POLLIN, 0});
    owners.push_back(c.get());
  }
  const int rc = ::poll(fds.data(), fds.size(), int(std::ceil(wait_s * 1000)));
  if (rc > 0) {
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      if (owners[i] == nullptr) {
        HandleSignals();
      } else {
        ReadOutput(*owners[i]);
      }
    }
  }
  ReapExited();
}

void Supervisor::Stop(const std::vector<int>& ids, double timeout_s) {
  for (int id : ids) {
    Child& c = *children_.at(size_t(id));
    c.stopping = true;
    if (c.state == ChildState::kRestarting) c.state = ChildState::kExited;
    if (c.pid > 0) ::kill(c.pid, SIGTERM);
  }
  auto running = [&] {
    for (int id : ids) {
      if (children_[size_t(id)]->pid > 0) return true;
    }
    return false;
  };
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_s));
  const int signals_before = stop_signals_;
  while (running() && Clock::now() < deadline) {
    Poll(0.05);
    // Asked (again) while stopping: hurry, this stage and every later one.
    if (stop_signals_ > signals_before || stop_signals_ >= 2) break;
  }
  for (int id : ids) {
    Child& c = *children_[size_t(id)];
    if (c.pid <= 0) continue;
    Note(absl::StrCat(c.spec.name, " still running: sending SIGKILL"));
    ::kill(c.pid, SIGKILL);
    int st = 0;
    ::waitpid(c.pid, &st, 0);
    HandleExit(c, st);
  }
}

const ChildSpec& Supervisor::spec(int id) const { return children_.at(size_t(id))->spec; }
void Supervisor::SetRestart(int id, bool restart) {
  children_.at(size_t(id))->spec.restart = restart;
}
int Supervisor::quick_failures(int id) const { return children_.at(size_t(id))->quick_failures; }
bool Supervisor::crash_loop(int id) const {
  const Child& c = *children_.at(size_t(id));
  return c.state == ChildState::kRestarting && c.quick_failures > options_.max_quick_failures;
}
double Supervisor::next_restart_s(int id) const {
  const Child& c = *children_.at(size_t(id));
  if (c.state != ChildState::kRestarting) return 0;
  return std::max(0.0, Seconds(c.restart_at - Clock::now()));
}
ChildState Supervisor::state(int id) const { return children_.at(size_t(id))->state; }
pid_t Supervisor::pid(int id) const { return children_.at(size_t(id))->pid; }
int Supervisor::restarts(int id) const { return children_.at(size_t(id))->restarts; }

bool Supervisor::SawLine(int id, std::string_view needle) const {
  const Child& c = *children_.at(size_t(id));
  for (const std::string& line : c.seen) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return c.partial.find(needle) != std::string::npos;
}

std::string Supervisor::Tail(int id, size_t lines) const {
  const Child& c = *children_.at(size_t(id));
  std::string out;
  const size_t from = c.tail.size() > lines ? c.tail.size() - lines : 0;
  for (size_t i = from; i < c.tail.size(); ++i) absl::StrAppend(&out, c.tail[i], "\n");
  return out;
}

std::string Supervisor::LastExit(int id) const {
  return DescribeWaitStatus(children_.at(size_t(id))->last_status);
}

}  // namespace paged::launcher
