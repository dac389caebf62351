#include "tests/unit/test_util.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

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

std::string SharedModelsDir() {
  const std::string dir = std::string(PAGED_SOURCE_DIR) + "/../shared/models";
  return std::filesystem::is_directory(dir) ? dir : "";
}

std::string Stories260KPath() {
  const std::string dir = SharedModelsDir();
  const std::string p = dir + "/stories260K.gguf";
  return !dir.empty() && std::filesystem::exists(p) ? p : "";
}

std::string BinaryPath(std::string_view name) {
  for (const char* sub : {"/store/", "/client/pagectl/", "/worker/", "/daemon/", "/bench/"}) {
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

}  // namespace paged::testing
