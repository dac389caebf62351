// Writes safetensors files (make-model, tests): the JSON header first, then
// each tensor's bytes in the order the entries were given.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paged {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;           // "F32", "F16", "BF16"
  std::vector<int64_t> shape;  // row-major, outermost first
};

class SafetensorsWriter {
 public:
  // Creates `path` and writes the header for `entries`.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, const std::vector<SafetensorsEntry>& entries,
      const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();

  // Appends tensor bytes; calls may split or join tensors freely, in order.
  absl::Status Append(const void* data, size_t n);
  // Checks that exactly the declared bytes were written, flushes, closes.
  absl::Status Finish();

  uint64_t data_bytes() const { return total_; }

 private:
  SafetensorsWriter() = default;
  std::string path_;
  std::FILE* f_ = nullptr;
  uint64_t total_ = 0;
  uint64_t written_ = 0;
};

}  // namespace paged
