// The share board: which weight blocks the workers of one device already hold
// in device memory, so that a second worker on the same GPU uses them in
// place and a worker on a peer GPU copies them over the GPU-to-GPU link
// instead of over PCIe again (docs/pager.md, "Sharing a device").
//
// One small POSIX shared memory object per (segment, device), named
// "/<segment>.share.<device uuid>", 0600. An entry per weight block (the
// globals and each layer) holds an export handle (Backend::ExportMemory) and
// the processes that hold the memory (exporter and importers, by pid and
// start time, so a recycled pid is not taken for a live holder). An entry is
// live while one of its holders is: CUDA keeps exported memory alive after
// its exporter exits until the last importer closes it (seen on the H200
// host). Every read and write happens under an exclusive flock of the object.
// A board of another segment generation (the store reloaded the model) is
// reset on open. No CUDA types: tests run it with the CPU backend.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/process.h"

namespace paged {

class ShareBoard {
 public:
  static constexpr int kMaxHolders = 16;
  static constexpr int kMaxHandleBytes = 128;

  // "/<segment>.share.<device_uuid>" with characters outside [A-Za-z0-9._-]
  // replaced by '_'.
  static std::string NameFor(const std::string& segment, const std::string& device_uuid);

  // Opens (creating it if needed) the board of `segment` on `device_uuid`
  // with `n_entries` entries (ids 0..n_entries-1). A board of another
  // generation or entry count is reset.
  static absl::StatusOr<std::unique_ptr<ShareBoard>> Open(const std::string& segment,
                                                          uint64_t generation,
                                                          const std::string& device_uuid,
                                                          int n_entries);
  // The boards of `segment` on other devices of this host (for peer copies),
  // opened without creating; those of another generation are skipped.
  static std::vector<std::unique_ptr<ShareBoard>> OpenPeers(const std::string& segment,
                                                            uint64_t generation,
                                                            const std::string& device_uuid,
                                                            int n_entries);
  // Removes the board object (tests, and a store that removes its segment).
  static void Remove(const std::string& segment, const std::string& device_uuid);

  // Drops this process from every entry it holds, and removes the board
  // when no entry is live any more.
  ~ShareBoard();
  ShareBoard(const ShareBoard&) = delete;
  ShareBoard& operator=(const ShareBoard&) = delete;

  // Holds the board's lock while alive. Every call below needs one.
  class Lock {
   public:
    explicit Lock(ShareBoard& b);
    ~Lock();
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;

   private:
    ShareBoard& b_;
  };

  // Whether entry `id` has a live holder (a cheap LiveHandle).
  bool IsLive(int id) const { return LiveHandle(id).has_value(); }
  // The handle of entry `id` when a live process holds it.
  std::optional<std::string> LiveHandle(int id) const;
  // Entry `id` now refers to memory this process exported as `handle`.
  absl::Status Publish(int id, const std::string& handle, uint64_t bytes);
  // This process imported entry `id`: it keeps the memory alive too.
  void AddHolder(int id);
  // The entry's handle could not be imported: forget it.
  void Invalidate(int id);
  // This process no longer holds entry `id`.
  void RemoveHolder(int id);

  const std::string& name() const { return name_; }
  const std::string& device_uuid() const { return device_uuid_; }

 private:
  struct Layout;
  ShareBoard() = default;
  static absl::StatusOr<std::unique_ptr<ShareBoard>> Map(const std::string& name,
                                                         const std::string& device_uuid,
                                                         uint64_t generation, int n_entries,
                                                         bool create);

  std::string name_, device_uuid_;
  int fd_ = -1;
  Layout* layout_ = nullptr;
  size_t bytes_ = 0;
  std::vector<int> held_;  // entries this process is a holder of
};

}  // namespace paged
