#include "tests/unit/test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace paged::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/paged-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool UnderCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && *ci != '\0' && std::string_view(ci) != "false";
}

std::string SourceDir() {
  const char* env = std::getenv("PAGED_SOURCE_DIR");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string(PAGED_SOURCE_DIR);
}

std::string SharedModelsDir() {
  const char* env = std::getenv("PAGED_SHARED_MODELS");
  const std::string dir =
      env != nullptr && *env != '\0' ? std::string(env) : SourceDir() + "/../shared/models";
  return std::filesystem::is_directory(dir) ? dir : "";
}

std::string Stories260KPath() {
  const std::string dir = SharedModelsDir();
  const std::string p = dir + "/stories260K.gguf";
  return !dir.empty() && std::filesystem::exists(p) ? p : "";
}

std::string StoriesTranscript() {
  const std::string dir = SharedModelsDir();
  if (dir.empty()) return "";
  const std::string readme = ReadFile(dir + "/README.md");
  const size_t at = readme.find("Known output");
  const size_t open = readme.find("```\n", at);
  const size_t close = readme.find("\n```", open + 4);
  if (at == std::string::npos || open == std::string::npos || close == std::string::npos) return "";
  return readme.substr(open + 4, close - open - 4);
}

double RelativeError(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

std::string BinaryPath(std::string_view name) {
  for (const char* sub :
       {"/store/", "/client/pagectl/", "/worker/", "/daemon/", "/launcher/", "/bench/"}) {
    std::string p = std::string(PAGED_BINARY_DIR) + sub + std::string(name);
    if (std::filesystem::exists(p)) return p;
  }
  return std::string(PAGED_BINARY_DIR) + "/" + std::string(name);
}

std::string UniqueSegmentName(std::string_view stem) {
  static std::atomic<int> counter{0};
  return "paged-test-" + std::string(stem) + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter++);
}

Subprocess::Subprocess(std::vector<std::string> argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  // A bare name (openssl, curl) is looked up on $PATH; a path is used as it is.
  const int rc = ::posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  fd_ = fds[0];
  if (rc != 0) throw std::runtime_error("cannot spawn " + argv[0] + ": " + std::strerror(rc));
}

Subprocess::~Subprocess() {
  if (!exited_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
  }
  if (fd_ >= 0) ::close(fd_);
}

bool Subprocess::ReadSome(double timeout_s) {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, int(timeout_s * 1000)) <= 0) return false;
  char buf[4096];
  const ssize_t n = ::read(fd_, buf, sizeof(buf));
  if (n <= 0) return false;
  output_.append(buf, size_t(n));
  return true;
}

bool Subprocess::WaitForLine(std::string_view needle, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  size_t scanned = 0;
  while (true) {
    if (output_.find(needle, scanned > needle.size() ? scanned - needle.size() : 0) !=
        std::string::npos)
      return true;
    scanned = output_.size();
    const double left =
        std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return false;
    if (!ReadSome(std::min(left, 0.2))) {
      int st = 0;
      if (!exited_ && ::waitpid(pid_, &st, WNOHANG) == pid_) {
        exited_ = true;
        status_ = st;
        while (ReadSome(0.05)) {
        }
        return output_.find(needle) != std::string::npos;
      }
      if (exited_) return false;
    }
  }
}

int Subprocess::Wait(double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (!exited_) {
    ReadSome(0.05);
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      exited_ = true;
      status_ = st;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) return -1;
  }
  while (ReadSome(0.01)) {
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

int Subprocess::Signal(int sig, double timeout_s) {
  if (!exited_) ::kill(pid_, sig);
  return Wait(timeout_s);
}

std::pair<int, std::string> RunCommand(std::vector<std::string> argv, double timeout_s) {
  Subprocess p(std::move(argv));
  const int rc = p.Wait(timeout_s);
  return {rc, p.output()};
}

}  // namespace paged::testing
