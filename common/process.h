// Other processes of this host, as /proc shows them: whether a process that
// we know by pid and start time is still alive (a recycled pid is a
// different process; a zombie has released its memory and cannot write any).
#pragma once

#include <cstdint>
#include <optional>

namespace paged {

// Start time of process `pid` in clock ticks since boot (/proc/PID/stat
// field 22); nullopt when there is no such process.
std::optional<uint64_t> ProcessStartTime(int pid);

// True while process `pid`, started at `start_time`, exists and is not a
// zombie (or dead).
bool ProcessAlive(int pid, uint64_t start_time);

}  // namespace paged
