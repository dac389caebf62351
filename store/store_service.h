// paged-store: builds (or re-attaches) the segment for a model, keeps it
// locked in RAM, and holds it until SIGTERM / SIGINT.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "store/segment_builder.h"

namespace paged {

struct StoreOptions {
  std::string model_path;
  std::string segment;
  LayoutOptions layout;
  bool remove_on_exit = false;
  std::string group;   // when set: segment mode 0640, owned by this group; else 0600
  int threads = 0;     // conversion threads; 0 = hardware concurrency
  bool quiet = false;  // no progress lines
};

// Result of bringing a segment up.
struct StoreReady {
  bool reattached = false;  // an existing matching segment was reused
  uint64_t total_bytes = 0;
  uint64_t weight_bytes = 0;  // weights as stored in the segment
  uint64_t source_bytes = 0;  // tensor bytes read from the checkpoint
  double seconds = 0;         // to READY
};

class Store {
 public:
  // Opens the model, locks the segment name (one store per segment), builds or
  // re-attaches the segment and publishes READY.
  static absl::StatusOr<std::unique_ptr<Store>> Start(const StoreOptions& opts);
  ~Store();  // unmaps; removes the segment when remove_on_exit

  const StoreReady& ready() const { return ready_; }
  const SegmentHeader& header() const;

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  StoreReady ready_;
};

}  // namespace paged
