#include "daemon/store_probe.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/segment.h"

namespace paged {

int64_t FlockHolder(const std::string& proc_locks, uint64_t device, uint64_t inode) {
  // "1: FLOCK  ADVISORY  WRITE 19505 00:1b:515 0 EOF": kind, class, mode, pid,
  // MAJOR:MINOR:INODE (major and minor in hex). Waiters ("1: -> FLOCK ...")
  // hold nothing.
  std::istringstream in(proc_locks);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 6 || f[1] != "FLOCK" || f[3] != "WRITE") continue;
    std::vector<std::string> id = absl::StrSplit(f[5], ':');
    uint32_t major = 0, minor = 0;
    uint64_t ino = 0;
    if (id.size() != 3 || !absl::SimpleHexAtoi(id[0], &major) ||
        !absl::SimpleHexAtoi(id[1], &minor) || !absl::SimpleAtoi(id[2], &ino))
      continue;
    int64_t pid = 0;
    if (ino == inode && major == ::major(dev_t(device)) && minor == ::minor(dev_t(device)) &&
        absl::SimpleAtoi(f[4], &pid))
      return pid;
  }
  return 0;
}

StoreHealth ProbeStore(const std::string& name) {
  StoreHealth h;
  uint64_t size = 0;
  auto header = PeekSegmentHeader(name, &size);
  if (!header.ok()) {
    h.state = "MISSING";
    h.alive = false;
    return h;
  }
  h.state = std::string(SegmentStateName(LoadState(**header)));
  h.generation = (*header)->generation;
  struct stat st {};
  h.alive = false;
  if (::stat(("/dev/shm/" + name).c_str(), &st) == 0) {
    std::ifstream f("/proc/locks");
    std::stringstream text;
    text << f.rdbuf();
    h.pid = FlockHolder(text.str(), uint64_t(st.st_dev), uint64_t(st.st_ino));
    h.alive = h.pid > 0;
  }
  return h;
}

}  // namespace paged
