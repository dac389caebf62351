// How the store looks from the coordinator: its segment's state as other
// processes see it (the header in /dev/shm) and whether a paged-store
// process still holds the segment (the store keeps an exclusive flock on it
// while it lives: /proc/locks names its pid). Read-only: it never takes the
// lock itself, so it cannot keep a restarting store from starting.
#pragma once

#include <cstdint>
#include <string>

namespace paged {

struct StoreHealth {
  std::string state = "READY";  // the segment's state: READY, LOADING, ..., or MISSING
  uint64_t generation = 0;      // the segment's generation (0: unknown)
  bool alive = true;            // a process holds the segment's lock
  int64_t pid = 0;              // that process (0: none, or unknown)
};

// Probes segment `name` (/dev/shm/NAME).
StoreHealth ProbeStore(const std::string& name);

// The pid holding an exclusive flock on the file (device, inode), read from
// `proc_locks` (the text of /proc/locks); 0 when none does.
int64_t FlockHolder(const std::string& proc_locks, uint64_t device, uint64_t inode);

}  // namespace paged
