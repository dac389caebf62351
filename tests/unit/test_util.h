// Helpers shared by the tests: temporary directories, file writing, the
// shared test models.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

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

// ../shared/models beside the source tree ("" when absent).
std::string SharedModelsDir();
// Path of ../shared/models/stories260K.gguf ("" when absent).
std::string Stories260KPath();

// Path of a built binary (paged-store, pagectl, ...).
std::string BinaryPath(std::string_view name);

// A segment name unique to this process and call.
std::string UniqueSegmentName(std::string_view stem);

}  // namespace paged::testing
