#include "client/pagectl/load_progress.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>

#include "common/segment.h"

namespace paged::pagectl {
namespace {

constexpr size_t kTailBytes = 64;  // bytes checked at the end of a tensor

// Whether the last bytes of [begin, begin + bytes) are written (not all zero).
bool TailWritten(uint64_t begin, uint64_t bytes, uint64_t segment_bytes,
                 const SegmentReader& read) {
  if (bytes == 0 || begin > segment_bytes || bytes > segment_bytes - begin) return false;
  const size_t n = size_t(std::min<uint64_t>(bytes, kTailBytes));
  std::array<uint8_t, kTailBytes> buf{};
  if (!read(begin + bytes - n, buf.data(), n)) return false;
  return std::any_of(buf.begin(), buf.begin() + ptrdiff_t(n), [](uint8_t b) { return b != 0; });
}

// Payload + scale bytes of every weight (store/segment_builder.h's
// WeightBytes, with the tensor counts clamped: the header is not validated).
uint64_t TotalWeightBytes(const SegmentHeader& h) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < std::min<uint32_t>(h.n_global_tensors, kMaxGlobalTensors); ++i)
    n += h.global_tensors[i].bytes + h.global_tensors[i].scale_bytes;
  for (uint32_t i = 0; i < std::min<uint32_t>(h.n_layer_tensors, kMaxLayerTensors); ++i) {
    n += (h.layer_tensors[i].bytes + h.layer_tensors[i].scale_bytes) *
         uint64_t(std::max(h.model.n_layers, 0));
  }
  return n;
}

}  // namespace

uint64_t EstimateLoadedBytes(const SegmentHeader& h, uint64_t segment_bytes,
                             const SegmentReader& read) {
  const uint32_t n_globals = std::min<uint32_t>(h.n_global_tensors, kMaxGlobalTensors);
  const uint32_t n_layer = std::min<uint32_t>(h.n_layer_tensors, kMaxLayerTensors);
  uint64_t cumulative = 0;
  uint64_t done = 0;
  auto visit = [&](const TensorEntry& e, uint64_t origin) {
    cumulative += e.bytes + e.scale_bytes;
    if (TailWritten(origin + e.offset, e.bytes, segment_bytes, read) ||
        (e.scale_bytes > 0 &&
         TailWritten(e.scale_offset + origin, e.scale_bytes, segment_bytes, read)))
      done = cumulative;
  };
  for (uint32_t i = 0; i < n_globals; ++i) visit(h.global_tensors[i], 0);
  for (int l = 0; l < h.model.n_layers; ++l) {
    const uint64_t block = h.LayerOffset(l);
    if (block > segment_bytes) break;
    for (uint32_t i = 0; i < n_layer; ++i) visit(h.layer_tensors[i], block);
  }
  return done;
}

absl::StatusOr<LoadProgress> ReadLoadProgress(const std::string& name) {
  uint64_t size = 0;
  absl::StatusOr<SegmentHeader> h = PeekSegmentHeader(name, &size);
  LoadProgress p;
  // Too small for a header: the store is creating it (open, then truncate).
  if (!h.ok() && h.status().code() == absl::StatusCode::kDataLoss) return p;
  if (!h.ok()) return h.status();
  p.state = std::string(SegmentStateName(h->state));
  p.model_path = std::string(h->model_path, strnlen(h->model_path, sizeof(h->model_path)));
  p.total = TotalWeightBytes(*h);
  if (h->state == uint32_t(SegmentState::kReady)) {
    p.done = p.total;
  } else if (h->state == uint32_t(SegmentState::kLoading)) {
    const int fd = ::shm_open(("/" + name).c_str(), O_RDONLY | O_CLOEXEC, 0);
    if (fd >= 0) {
      p.done = EstimateLoadedBytes(*h, size, [fd](uint64_t offset, void* out, size_t n) {
        return ::pread(fd, out, n, off_t(offset)) == ssize_t(n);
      });
      ::close(fd);
    }
  }
  return p;
}

}  // namespace paged::pagectl
