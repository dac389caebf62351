// Helpers shared by the tests: temporary directories, file writing, the
// shared test models.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/step.h"

namespace paged::testing {

// A fresh directory under the build tree (or $TMPDIR), removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, std::string_view bytes);
std::string ReadFile(const std::string& path);

// True under CI (the environment variable CI is set and not "false"), where
// every fixture must be present.
bool UnderCi();

// For a test that needs a fixture (a file from ../shared): skips when `path`
// is empty on a developer's machine, and FAILS under CI, where a missing
// fixture means the suite proves less than it claims.
#define PAGED_REQUIRE_FIXTURE(path, what)                                                     \
  do {                                                                                        \
    if ((path).empty()) {                                                                     \
      if (::paged::testing::UnderCi()) FAIL() << (what) << " is missing (required under CI)"; \
      GTEST_SKIP() << (what) << " not present";                                               \
    }                                                                                         \
  } while (0)

// The source tree: $PAGED_SOURCE_DIR when set (a bundle run elsewhere), else
// where this build's sources were.
std::string SourceDir();

// ../shared/models beside the source tree, or $PAGED_SHARED_MODELS when set
// ("" when absent).
std::string SharedModelsDir();
// Path of ../shared/models/stories260K.gguf ("" when absent).
std::string Stories260KPath();

// The stories260K greedy transcript: the fenced block after "Known output"
// in ../shared/models/README.md ("" when absent).
std::string StoriesTranscript();

// A batch step's sampled tokens fed back: row k of `out` belongs to
// sequence which[k] of `seqs`, which records it in got[which[k]] and takes
// it as its next (decode) token.
inline void FeedBack(const StepOutput& out, const std::vector<size_t>& which,
                     std::vector<SeqStep>* seqs, std::vector<std::vector<int32_t>>* got) {
  for (size_t k = 0; k < which.size(); ++k) {
    SeqStep& s = (*seqs)[which[k]];
    (*got)[which[k]].push_back(out.next_tokens[k]);
    s.start_pos += int32_t(s.tokens.size());
    s.tokens = {out.next_tokens[k]};
  }
}

// ||got - want|| / ||want||.
double RelativeError(const std::vector<float>& got, const std::vector<double>& want);

// Path of a built binary (paged-store, pagectl, ...).
std::string BinaryPath(std::string_view name);

// A segment name unique to this process and call.
std::string UniqueSegmentName(std::string_view stem);

// A child process started with exec (posix_spawnp: a bare name is looked up
// on $PATH), its stdout and stderr
// merged into one pipe that the test reads. Killed (SIGKILL) at destruction
// if still running.
class Subprocess {
 public:
  explicit Subprocess(std::vector<std::string> argv);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // Reads output until a line contains `needle` (true) or the child exits or
  // `timeout_s` passes (false). All output read so far is in output().
  bool WaitForLine(std::string_view needle, double timeout_s = 60);
  // Sends `sig` and waits for exit; returns the exit code, or 128 + signal.
  int Signal(int sig, double timeout_s = 30);
  // Waits for exit (reading output); returns the exit code or 128 + signal,
  // -1 on timeout.
  int Wait(double timeout_s = 60);
  const std::string& output() const { return output_; }
  pid_t pid() const { return pid_; }

 private:
  bool ReadSome(double timeout_s);
  pid_t pid_ = -1;
  int fd_ = -1;
  int status_ = -1;
  bool exited_ = false;
  std::string output_;
};

// Runs a command to completion; returns {exit code, output}.
std::pair<int, std::string> RunCommand(std::vector<std::string> argv, double timeout_s = 120);

}  // namespace paged::testing
