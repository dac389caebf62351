// A small process supervisor: starts children with fork + exec, forwards
// their output line by line with a prefix, restarts those that may be
// restarted when they fail (with backoff), and stops them in order.
//
// One thread owns a Supervisor: it must be the thread that created it, and it
// must live as long as the children. Children get PR_SET_PDEATHSIG(SIGTERM),
// which the kernel fires when the THREAD that forked them exits, so a child
// never outlives its launcher (even one killed with SIGKILL).
//
// Signals: Create() blocks SIGINT, SIGTERM and SIGCHLD in the calling thread
// and reads them from a signalfd, so call it first in main(), before any
// thread starts (threads inherit the mask; gRPC's included). Children start
// with an empty mask, default dispositions, their own process group (a
// Ctrl-C at the terminal reaches only the launcher, which then stops them in
// order) and /dev/null as stdin.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paged::launcher {

struct ChildSpec {
  std::string name;               // prefixes its output lines: "[name] ..."
  std::vector<std::string> argv;  // argv[0]: the path of the binary
  // "NAME=value" added to (or replacing in) the child's environment: secrets
  // go here, never in argv (which `ps` shows everyone).
  std::vector<std::string> env;
  bool restart = false;  // restart when it exits abnormally (a signal or a non-zero code)
};

struct SupervisorOptions {
  double restart_backoff_s = 0.5;  // delay before the first restart; doubled per quick failure
  double max_backoff_s = 30;
  double stable_after_s =
      30;  // a child that ran this long before failing restarts at the first delay
  // That many failures in a row, each before stable_after_s: the child is in
  // a crash loop. It is never given up on: it is retried every
  // max_backoff_s, and said so loudly (crash_loop(id), and paged-up reports
  // it to the coordinator, so `pagectl status` shows it).
  int max_quick_failures = 5;
  FILE* log = stderr;  // where children's lines and the supervisor's own notes go
};

enum class ChildState {
  kRunning,
  kRestarting,  // failed; waits for its backoff before starting again
  kExited,      // exited with status 0, or was stopped
  kFailed,      // failed and is not restartable (or could not be executed)
};

class Supervisor {
 public:
  static absl::StatusOr<std::unique_ptr<Supervisor>> Create(SupervisorOptions options = {});
  ~Supervisor();  // SIGKILLs and reaps every child still running
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts a child; returns its id (0, 1, ...). Fails when the binary cannot
  // be executed (missing, not executable), with the reason.
  absl::StatusOr<int> Start(ChildSpec spec);

  // Waits up to `timeout_s` for something to happen, and handles it: child
  // output (forwarded), exits (restart scheduled, or the child marked failed),
  // due restarts, SIGINT/SIGTERM (stop_requested() becomes true). Returns
  // early after any event.
  void Poll(double timeout_s);

  // Stops the children in `ids` together: SIGTERM, then SIGKILL for those still
  // running after `timeout_s`; reaps them. None of them is restarted after.
  void Stop(const std::vector<int>& ids, double timeout_s);

  bool stop_requested() const { return stop_signals_ > 0; }
  int stop_signals() const { return stop_signals_; }  // a second Ctrl-C hurries the shutdown
  int last_signal() const { return last_signal_; }

  // A child that must not die (restart = false) exited, or a restartable one
  // could not be executed again: the first such event, described ("" when none).
  const std::string& failure() const { return failure_; }

  // Makes a child restartable (or not) from now on: paged-up's store and
  // coordinator must start once, then are restarted when they fail.
  void SetRestart(int id, bool restart);

  size_t size() const { return children_.size(); }
  const ChildSpec& spec(int id) const;
  ChildState state(int id) const;
  pid_t pid(int id) const;  // -1 when not running
  int restarts(int id) const;
  // Failures in a row, each before stable_after_s; over max_quick_failures:
  // a crash loop (retried every max_backoff_s).
  int quick_failures(int id) const;
  bool crash_loop(int id) const;
  // Seconds until a restarting child is started again (0 otherwise).
  double next_restart_s(int id) const;
  // True when a line containing `needle` appeared in this child's output since
  // it last started.
  bool SawLine(int id, std::string_view needle) const;
  // The child's last lines of output (for error messages).
  std::string Tail(int id, size_t lines = 10) const;
  // "exited with status 1", "killed by signal 9" for the last exit.
  std::string LastExit(int id) const;

 private:
  struct Child;
  using Clock = std::chrono::steady_clock;
  explicit Supervisor(SupervisorOptions options, int signal_fd);
  absl::Status Spawn(Child& c);
  void ReadOutput(Child& c);
  void FlushPartial(Child& c);
  void ReapExited();
  void HandleExit(Child& c, int wait_status);
  void HandleSignals();
  void Note(const std::string& text);

  SupervisorOptions options_;
  int signal_fd_ = -1;
  int devnull_ = -1;
  std::vector<std::unique_ptr<Child>> children_;
  int stop_signals_ = 0;
  int last_signal_ = 0;
  std::string failure_;
};

// A wait status as words: "exited with status 1", "killed by signal 9 (Killed)".
std::string DescribeWaitStatus(int wait_status);

}  // namespace paged::launcher
