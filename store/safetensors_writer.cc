#include "store/safetensors_writer.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "store/safetensors.h"

namespace paged {

namespace {

absl::Status ErrnoError(const std::string& path, const char* what) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}

// The header JSON for `entries`, their data laid out back to back in order,
// padded with spaces to a multiple of 8 bytes (as HF does) so that the data
// starts 8-byte aligned. `total` receives the data bytes.
absl::StatusOr<std::string> BuildHeader(const std::string& path,
                                        const std::vector<SafetensorsEntry>& entries,
                                        const std::map<std::string, std::string>& metadata,
                                        uint64_t* total) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const SafetensorsEntry& e : entries) {
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", absl::CEscape(e.name), "' ", what));
    };
    if (e.name == "__metadata__" || header.contains(e.name)) return bad("named twice or reserved");
    const uint64_t elem = SafetensorsDTypeSize(e.dtype);
    if (elem == 0) return bad(absl::StrCat("has unknown dtype '", absl::CEscape(e.dtype), "'"));
    uint64_t bytes = elem;
    for (int64_t d : e.shape) {
      if (d < 0) return bad(absl::StrCat("has negative dimension ", d));
      if (__builtin_mul_overflow(bytes, uint64_t(d), &bytes)) return bad("is too large");
    }
    uint64_t end = 0;
    if (__builtin_add_overflow(offset, bytes, &end)) return bad("is too large");
    header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": tensor names and metadata must be valid UTF-8"));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  *total = offset;
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, const std::vector<SafetensorsEntry>& entries,
    const std::map<std::string, std::string>& metadata) {
  uint64_t total = 0;
  ASSIGN_OR_RETURN(std::string header, BuildHeader(path, entries, metadata, &total));

  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->path_ = path;
  w->total_ = total;
  w->f_ = std::fopen(path.c_str(), "wb");
  if (w->f_ == nullptr) return ErrnoError(path, "cannot create");
  // Large appends bypass stdio's buffer and go straight to write(2); small
  // ones are gathered in it.
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
  if (std::fwrite(len, 1, 8, w->f_) != 8 ||
      std::fwrite(header.data(), 1, header.size(), w->f_) != header.size())
    return ErrnoError(path, "write failed");
  return w;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (f_ != nullptr) std::fclose(f_);  // unfinished: the file stays incomplete
}

absl::Status SafetensorsWriter::Append(const void* data, size_t n) {
  if (f_ == nullptr)
    return absl::FailedPreconditionError(absl::StrCat(path_, ": append after Finish"));
  if (n > total_ - written_)
    return absl::InvalidArgumentError(absl::StrCat(path_, ": appending ", n, " bytes after ",
                                                   written_, " exceeds the ", total_,
                                                   " data bytes the header declares"));
  if (n > 0 && std::fwrite(data, 1, n, f_) != n) return ErrnoError(path_, "write failed");
  written_ += n;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (f_ == nullptr)
    return absl::FailedPreconditionError(absl::StrCat(path_, ": Finish called twice"));
  std::FILE* f = f_;
  f_ = nullptr;
  if (written_ != total_) {
    std::fclose(f);
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": wrote ", written_, " data bytes but the header declares ", total_));
  }
  const bool flushed = std::fflush(f) == 0;
  const int flush_errno = errno;
  if (std::fclose(f) != 0 || !flushed) {
    if (!flushed) errno = flush_errno;
    return ErrnoError(path_, "write failed");
  }
  return absl::OkStatus();
}

}  // namespace paged
