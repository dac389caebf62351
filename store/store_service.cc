#include "store/store_service.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <atomic>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/segment.h"
#include "common/signals.h"
#include "common/size_flag.h"
#include "common/status.h"

namespace paged {

namespace bip = boost::interprocess;

struct Store::Impl {
  StoreOptions opts;
  std::unique_ptr<bip::shared_memory_object> shm;
  std::unique_ptr<bip::mapped_region> region;
  SegmentHeader* header = nullptr;
  std::thread locker;  // mlock of the whole segment, off the ready path
};

namespace {

using Clock = std::chrono::steady_clock;

// True when the two tables place the same tensors the same way.
bool SameTensors(const TensorEntry* a, const TensorEntry* b, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    if (a[i].Name() != b[i].Name() || a[i].dtype != b[i].dtype || a[i].group != b[i].group ||
        a[i].offset != b[i].offset || a[i].bytes != b[i].bytes ||
        a[i].scale_offset != b[i].scale_offset)
      return false;
  }
  return true;
}

// True when `old` (validated) describes the segment `plan` would build.
bool SameSegment(const SegmentHeader& old, const SegmentHeader& plan) {
  if (!(old.model_fingerprint == plan.model_fingerprint &&
        std::strncmp(old.model_path, plan.model_path, sizeof(old.model_path)) == 0 &&
        old.weight_format == plan.weight_format && old.dense_dtype == plan.dense_dtype &&
        old.total_bytes == plan.total_bytes && old.layer_block_bytes == plan.layer_block_bytes &&
        old.block_tokens == plan.block_tokens && old.kv_n_blocks == plan.kv_n_blocks &&
        old.model.n_layers == plan.model.n_layers &&
        old.n_global_tensors == plan.n_global_tensors &&
        SameTensors(old.global_tensors, plan.global_tensors, plan.n_global_tensors)))
    return false;
  for (int l = 0; l < plan.model.n_layers; ++l) {
    const LayerTable &a = old.Layer(l), &b = plan.Layer(l);
    if (a.n_tensors != b.n_tensors || a.used_bytes != b.used_bytes ||
        !SameTensors(a.tensors, b.tensors, b.n_tensors))
      return false;
  }
  return true;
}

// Progress lines (unless quiet), the header's loaded_bytes for other
// processes (pagectl's progress bar) and the interruption check.
ProgressFn MakeProgress(bool quiet, SegmentHeader* header) {
  auto start = std::make_shared<Clock::time_point>(Clock::now());
  auto last = std::make_shared<Clock::time_point>(Clock::now());
  return [start, last, quiet, header](uint64_t done, uint64_t total) {
    std::atomic_ref<uint64_t>(header->loaded_bytes).store(done, std::memory_order_relaxed);
    if (TerminationPending()) return false;
    const auto now = Clock::now();
    if (quiet || (done < total && now - *last < std::chrono::milliseconds(500))) return true;
    *last = now;
    const double s = std::chrono::duration<double>(now - *start).count();
    Log(LogLevel::kInfo, "load", "%s / %s (%.0f MB/s)", FormatBytes(done).c_str(),
        FormatBytes(total).c_str(), s > 0 ? double(done) / 1e6 / s : 0.0);
    return true;
  };
}

absl::Status SetPermissions(int fd, const std::string& group, const std::string& name) {
  mode_t mode = 0600;
  if (!group.empty()) {
    struct group* g = ::getgrnam(group.c_str());
    if (g == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("--group=", group, ": no such group"));
    if (::fchown(fd, static_cast<uid_t>(-1), g->gr_gid) != 0)
      return absl::PermissionDeniedError(absl::StrCat(
          "segment ", name, ": cannot give it to group ", group, ": ", std::strerror(errno)));
    mode = 0640;
  }
  if (::fchmod(fd, mode) != 0)
    return absl::PermissionDeniedError(
        absl::StrCat("segment ", name, ": chmod: ", std::strerror(errno)));
  return absl::OkStatus();
}

}  // namespace

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Store::~Store() {
  // The name goes first: the mlock below may take seconds, and a store
  // killed meanwhile (a second SIGTERM from a hurried supervisor) must not
  // leave the segment behind. Processes that map it keep their mapping.
  const std::string name = impl_->opts.segment;
  if (impl_->opts.remove_on_exit) bip::shared_memory_object::remove(name.c_str());
  if (impl_->locker.joinable()) impl_->locker.join();
  impl_->region.reset();
  impl_->shm.reset();  // closes the fd and with it the lock
}

const SegmentHeader& Store::header() const { return *impl_->header; }

absl::StatusOr<std::unique_ptr<Store>> Store::Start(const StoreOptions& opts) {
  const auto t0 = Clock::now();
  RETURN_IF_ERROR(CheckSegmentName(opts.segment));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> src, OpenModel(opts.model_path));
  ASSIGN_OR_RETURN(std::unique_ptr<SegmentHeader> planned, PlanSegment(*src, opts.layout));
  SegmentHeader& plan = *planned;
  // Once, and only for a load that goes ahead (errors stay one line).
  if (!src->tokenizer_note.empty())
    Log(LogLevel::kInfo, "tokenizer", "%s: %s", opts.model_path.c_str(),
        src->tokenizer_note.c_str());

  auto impl = std::make_unique<Impl>();
  impl->opts = opts;
  StoreReady ready;
  try {
    impl->shm = std::make_unique<bip::shared_memory_object>(
        bip::open_or_create, opts.segment.c_str(), bip::read_write, bip::permissions(0600));
    const int fd = impl->shm->get_mapping_handle().handle;
    // One store per segment: an advisory lock on the segment itself, released
    // by the kernel when the holder dies (no stale lock files).
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0)
      return absl::FailedPreconditionError(
          absl::StrCat("segment ", opts.segment,
                       " is already served by another paged-store; stop it first or "
                       "choose another --segment"));
    RETURN_IF_ERROR(SetPermissions(fd, opts.group, opts.segment));

    bip::offset_t size = 0;
    impl->shm->get_size(size);
    uint64_t old_generation = 0;
    bool reattach = false;
    if (uint64_t(size) >= sizeof(SegmentHeader)) {
      bip::mapped_region hr(*impl->shm, bip::read_only, 0, sizeof(SegmentHeader));
      const auto* old = static_cast<const SegmentHeader*>(hr.get_address());
      if (ValidateHeader(*old, uint64_t(size)).ok()) {
        old_generation = old->generation;
        reattach = LoadState(*old) == uint32_t(SegmentState::kReady) && SameSegment(*old, plan);
      }
    }

    if (!reattach) {
      // Fresh contents: drop the old pages, then reserve every page now so a
      // full /dev/shm is a clear error here and not a SIGBUS mid-load.
      impl->shm->truncate(0);
      impl->shm->truncate(bip::offset_t(plan.total_bytes));
      if (int e = ::posix_fallocate(fd, 0, off_t(plan.total_bytes)); e != 0) {
        impl->shm->truncate(0);
        return absl::ResourceExhaustedError(absl::StrCat(
            "segment ", opts.segment, ": cannot reserve ", FormatBytes(plan.total_bytes),
            " of shared memory (/dev/shm): ", std::strerror(e)));
      }
    }
    impl->region =
        std::make_unique<bip::mapped_region>(*impl->shm, bip::read_write, 0, plan.total_bytes);
    auto* base = static_cast<uint8_t*>(impl->region->get_address());
    impl->header = reinterpret_cast<SegmentHeader*>(base);

    if (!reattach) {
      plan.generation = old_generation + 1;
      plan.state = uint32_t(SegmentState::kLoading);
      std::memcpy(base, &plan, sizeof(plan));
      const int threads =
          opts.threads > 0 ? opts.threads : int(std::max(1u, std::thread::hardware_concurrency()));
      RETURN_IF_ERROR(
          FillSegment(*src, plan, base, threads, MakeProgress(opts.quiet, impl->header)));
      plan.state = uint32_t(SegmentState::kLoading);
      plan.loaded_bytes = WeightBytes(plan);
      plan.header_checksum = ComputeHeaderChecksum(plan);
      std::memcpy(base, &plan, sizeof(plan));
      StoreState(*impl->header, SegmentState::kReady);
    }
    ready.reattached = reattach;
    ready.total_bytes = plan.total_bytes;
    ready.weight_bytes = WeightBytes(plan);
    for (const SourceTensor& t : src->tensors) ready.source_bytes += t.bytes;
    // Keep it in RAM; without the privilege it is a warning, not a failure.
    // Locking walks every page (about a second per few GB), so it runs beside
    // serving: a re-attach is ready at once.
    const uint64_t total = plan.total_bytes;
    const bool quiet = opts.quiet;
    impl->locker = std::thread([base, total, quiet] {
      const auto t = Clock::now();
      if (::mlock(base, total) == 0) {
        if (!quiet)
          Log(LogLevel::kInfo, "memory", "segment locked in RAM (%.2f s)",
              std::chrono::duration<double>(Clock::now() - t).count());
      } else {
        Log(LogLevel::kWarning, "memory",
            "cannot lock the %s segment in RAM (%s); raise RLIMIT_MEMLOCK (systemd: "
            "LimitMEMLOCK=infinity) so "
            "it is never swapped out",
            FormatBytes(total).c_str(), std::strerror(errno));
      }
    });
  } catch (const bip::interprocess_exception& e) {
    return absl::UnavailableError(absl::StrCat("segment ", opts.segment, ": ", e.what()));
  }
  ready.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  auto store = std::unique_ptr<Store>(new Store(std::move(impl)));
  store->ready_ = ready;
  return store;
}

}  // namespace paged
