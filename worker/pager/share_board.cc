#include "worker/pager/share_board.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace paged {

namespace {

constexpr char kMagic[8] = {'P', 'G', 'S', 'H', 'A', 'R', 'E', '1'};
constexpr uint32_t kVersion = 1;

struct Holder {
  int32_t pid;
  uint32_t pad;
  uint64_t start;
};

struct Entry {
  uint32_t valid;
  uint32_t handle_len;
  uint64_t bytes;
  char handle[ShareBoard::kMaxHandleBytes];
  Holder holders[ShareBoard::kMaxHolders];
};

std::string Sanitize(const std::string& s) {
  std::string out = s;
  for (char& c : out) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  return out;
}

std::string Errno(const std::string& what) {
  return absl::StrCat(what, ": ", std::strerror(errno));
}

uint64_t SelfStartTime() {
  static const uint64_t t = ProcessStartTime(getpid()).value_or(0);
  return t;
}

bool Alive(const Holder& h) { return ProcessAlive(h.pid, h.start); }

}  // namespace

struct ShareBoard::Layout {
  char magic[8];
  uint32_t version;
  int32_t n_entries;
  uint64_t generation;
  Entry* entries() { return reinterpret_cast<Entry*>(this + 1); }
  const Entry* entries() const { return reinterpret_cast<const Entry*>(this + 1); }
  static size_t Bytes(int n) { return sizeof(Layout) + size_t(n) * sizeof(Entry); }
};

std::string ShareBoard::NameFor(const std::string& segment, const std::string& device_uuid) {
  std::string seg = segment;
  if (!seg.empty() && seg[0] == '/') seg.erase(0, 1);
  return absl::StrCat("/", Sanitize(seg), ".share.", Sanitize(device_uuid));
}

absl::StatusOr<std::unique_ptr<ShareBoard>> ShareBoard::Map(const std::string& name,
                                                            const std::string& device_uuid,
                                                            uint64_t generation, int n_entries,
                                                            bool create) {
  if (n_entries <= 0 || n_entries > 1 << 16)
    return absl::InvalidArgumentError(absl::StrCat("share board: ", n_entries, " entries"));
  std::unique_ptr<ShareBoard> b(new ShareBoard());
  b->name_ = name;
  b->device_uuid_ = device_uuid;
  b->fd_ = shm_open(name.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
  if (b->fd_ < 0) return absl::UnavailableError(Errno(absl::StrCat("share board ", name)));
  b->bytes_ = Layout::Bytes(n_entries);
  Lock lock(*b);
  struct stat st;
  if (fstat(b->fd_, &st) != 0)
    return absl::InternalError(Errno(absl::StrCat("share board ", name, ": fstat")));
  const bool sized = uint64_t(st.st_size) == b->bytes_;
  if (!sized) {
    if (!create)
      return absl::FailedPreconditionError(absl::StrCat("share board ", name, ": another layout"));
    if (ftruncate(b->fd_, off_t(b->bytes_)) != 0)
      return absl::InternalError(Errno(absl::StrCat("share board ", name, ": ftruncate")));
  }
  void* p = mmap(nullptr, b->bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd_, 0);
  if (p == MAP_FAILED)
    return absl::InternalError(Errno(absl::StrCat("share board ", name, ": mmap")));
  b->layout_ = static_cast<Layout*>(p);
  Layout& l = *b->layout_;
  const bool valid = sized && std::memcmp(l.magic, kMagic, sizeof kMagic) == 0 &&
                     l.version == kVersion && l.n_entries == n_entries &&
                     l.generation == generation;
  if (!valid) {
    if (!create) {
      munmap(p, b->bytes_);
      b->layout_ = nullptr;
      return absl::FailedPreconditionError(
          absl::StrCat("share board ", name, ": another generation"));
    }
    std::memset(p, 0, b->bytes_);
    std::memcpy(l.magic, kMagic, sizeof kMagic);
    l.version = kVersion;
    l.n_entries = n_entries;
    l.generation = generation;
  }
  return b;
}

absl::StatusOr<std::unique_ptr<ShareBoard>> ShareBoard::Open(const std::string& segment,
                                                             uint64_t generation,
                                                             const std::string& device_uuid,
                                                             int n_entries) {
  if (device_uuid.empty()) return absl::InvalidArgumentError("share board: the device has no id");
  return Map(NameFor(segment, device_uuid), device_uuid, generation, n_entries, /*create=*/true);
}

std::vector<std::unique_ptr<ShareBoard>> ShareBoard::OpenPeers(const std::string& segment,
                                                               uint64_t generation,
                                                               const std::string& device_uuid,
                                                               int n_entries) {
  std::vector<std::unique_ptr<ShareBoard>> out;
  const std::string own = NameFor(segment, device_uuid).substr(1);
  const std::string prefix = NameFor(segment, "").substr(1);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string file = e.path().filename().string();
    if (file.rfind(prefix, 0) != 0 || file == own) continue;
    absl::StatusOr<std::unique_ptr<ShareBoard>> b =
        Map("/" + file, file.substr(prefix.size()), generation, n_entries, /*create=*/false);
    if (b.ok()) out.push_back(std::move(*b));
  }
  return out;
}

void ShareBoard::Remove(const std::string& segment, const std::string& device_uuid) {
  shm_unlink(NameFor(segment, device_uuid).c_str());
}

ShareBoard::~ShareBoard() {
  if (layout_ != nullptr) {
    Lock lock(*this);
    for (int id : std::vector<int>(held_)) RemoveHolder(id);
    // The last holder out removes the board (a process that opened it
    // meanwhile publishes on an orphan: no sharing with later workers, no harm).
    bool live = false;
    for (int id = 0; id < layout_->n_entries && !live; ++id) live = IsLive(id);
    if (!live) shm_unlink(name_.c_str());
    munmap(layout_, bytes_);
  }
  if (fd_ >= 0) close(fd_);
}

ShareBoard::Lock::Lock(ShareBoard& b) : b_(b) {
  while (flock(b_.fd_, LOCK_EX) != 0 && errno == EINTR) {
  }
}

ShareBoard::Lock::~Lock() { flock(b_.fd_, LOCK_UN); }

std::optional<std::string> ShareBoard::LiveHandle(int id) const {
  if (id < 0 || id >= layout_->n_entries) return std::nullopt;
  const Entry& e = layout_->entries()[id];
  if (e.valid == 0 || e.handle_len == 0 || e.handle_len > kMaxHandleBytes) return std::nullopt;
  for (const Holder& h : e.holders) {
    if (Alive(h)) return std::string(e.handle, e.handle_len);
  }
  return std::nullopt;
}

absl::Status ShareBoard::Publish(int id, const std::string& handle, uint64_t bytes) {
  if (id < 0 || id >= layout_->n_entries)
    return absl::OutOfRangeError(absl::StrCat("share board entry ", id));
  if (handle.empty() || handle.size() > kMaxHandleBytes)
    return absl::InvalidArgumentError(
        absl::StrCat("share board: a handle of ", handle.size(), " bytes"));
  Entry& e = layout_->entries()[id];
  std::memset(&e, 0, sizeof e);
  std::memcpy(e.handle, handle.data(), handle.size());
  e.handle_len = uint32_t(handle.size());
  e.bytes = bytes;
  e.valid = 1;
  AddHolder(id);
  return absl::OkStatus();
}

void ShareBoard::AddHolder(int id) {
  if (id < 0 || id >= layout_->n_entries) return;
  Entry& e = layout_->entries()[id];
  const int32_t pid = getpid();
  Holder* free_slot = nullptr;
  for (Holder& h : e.holders) {
    if (h.pid == pid && h.start == SelfStartTime()) {
      if (std::find(held_.begin(), held_.end(), id) == held_.end()) held_.push_back(id);
      return;
    }
    if (free_slot == nullptr && !Alive(h)) free_slot = &h;
  }
  // No room: the entry stays live through the others; this process simply
  // is not counted (its copy still works, it just cannot keep the entry up).
  if (free_slot == nullptr) return;
  *free_slot = Holder{pid, 0, SelfStartTime()};
  held_.push_back(id);
}

void ShareBoard::Invalidate(int id) {
  if (id < 0 || id >= layout_->n_entries) return;
  std::memset(&layout_->entries()[id], 0, sizeof(Entry));
}

void ShareBoard::RemoveHolder(int id) {
  held_.erase(std::remove(held_.begin(), held_.end(), id), held_.end());
  if (id < 0 || id >= layout_->n_entries) return;
  for (Holder& h : layout_->entries()[id].holders) {
    if (h.pid == getpid() && h.start == SelfStartTime()) h = Holder{};
  }
}

}  // namespace paged
