#include "daemon/sequence_journal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paged {
namespace journal_format {
namespace {

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

}  // namespace

uint32_t Crc32c(std::string_view data, uint32_t crc) {
  crc = ~crc;
  for (unsigned char b : data) crc = kCrcTable[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

}  // namespace journal_format

namespace {

namespace jf = journal_format;

// ---- Encoding: little-endian, fixed width ----

void PutU32(std::string& out, uint32_t v) {
  const char b[4] = {char(v), char(v >> 8), char(v >> 16), char(v >> 24)};
  out.append(b, 4);
}
void PutU64(std::string& out, uint64_t v) {
  PutU32(out, uint32_t(v));
  PutU32(out, uint32_t(v >> 32));
}
void PutU8(std::string& out, uint8_t v) { out.push_back(char(v)); }
void PutI32(std::string& out, int32_t v) { PutU32(out, uint32_t(v)); }
void PutI64(std::string& out, int64_t v) { PutU64(out, uint64_t(v)); }
void PutF32(std::string& out, float v) { PutU32(out, std::bit_cast<uint32_t>(v)); }
void PutInts(std::string& out, std::span<const int32_t> v) {
  PutU32(out, uint32_t(v.size()));
  for (int32_t x : v) PutI32(out, x);
}
void PutBytes(std::string& out, std::string_view s) {
  PutU32(out, uint32_t(s.size()));
  out.append(s);
}

uint32_t LoadU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return uint32_t(u[0]) | uint32_t(u[1]) << 8 | uint32_t(u[2]) << 16 | uint32_t(u[3]) << 24;
}

// Reads a payload; every Get fails (false) past the end, and counts are
// checked against a limit and the bytes left before anything is allocated.
class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}
  bool U8(uint8_t* v) {
    if (in_.size() < 1) return false;
    *v = uint8_t(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool U32(uint32_t* v) {
    if (in_.size() < 4) return false;
    *v = LoadU32(in_.data());
    in_.remove_prefix(4);
    return true;
  }
  bool U64(uint64_t* v) {
    uint32_t lo = 0, hi = 0;
    if (!U32(&lo) || !U32(&hi)) return false;
    *v = uint64_t(lo) | uint64_t(hi) << 32;
    return true;
  }
  bool I32(int32_t* v) {
    uint32_t u = 0;
    if (!U32(&u)) return false;
    *v = int32_t(u);
    return true;
  }
  bool I64(int64_t* v) {
    uint64_t u = 0;
    if (!U64(&u)) return false;
    *v = int64_t(u);
    return true;
  }
  bool F32(float* v) {
    uint32_t u = 0;
    if (!U32(&u)) return false;
    *v = std::bit_cast<float>(u);
    return true;
  }
  // False when the count is over `limit` or the bytes are not there.
  bool Ints(int64_t limit, std::vector<int32_t>* v) {
    uint32_t n = 0;
    if (!U32(&n) || int64_t(n) > limit || in_.size() / 4 < n) return false;
    v->resize(n);
    for (uint32_t i = 0; i < n; ++i) (*v)[i] = int32_t(LoadU32(in_.data() + 4 * size_t(i)));
    in_.remove_prefix(4 * size_t(n));
    return true;
  }
  bool Bytes(int64_t limit, std::string* s) {
    uint32_t n = 0;
    if (!U32(&n) || int64_t(n) > limit || in_.size() < n) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

// ---- Records ----

struct AdmitRecord {
  int64_t seq_id = 0;
  Request request;
  int64_t deadline_unix_us = 0;
};
struct CommitRecord {
  int64_t seq_id = 0;
  int32_t committed_len = 0;
  std::vector<int32_t> new_generated;
  uint32_t keep_blocks = 0;  // of the previous list
  std::vector<int32_t> new_blocks;
};
struct FinishRecord {
  int64_t seq_id = 0;
  uint8_t reason = 0;
};

// Payload sizes (without the frame), as the encoders below write them.
constexpr int64_t kAdmitFixed = 1 + 8 + 4 + 4 + 4 + 4 + 4 + 4 + 4 + 8 + 1 + 8;
constexpr int64_t kCommitFixed = 1 + 8 + 4 + 4 + 4 + 4;
constexpr int64_t kFinishBytes = 1 + 8 + 1;
constexpr int64_t kStoreBytes = 1 + 8;
constexpr int64_t kWorkerFixed = 1 + 4 + 8 + 8;

std::string EncodeAdmit(int64_t seq_id, const Request& r, int64_t deadline_unix_us) {
  std::string p;
  p.reserve(size_t(kAdmitFixed) + r.request_id.size() + 4 * (r.prompt.size() + r.stop_ids.size()));
  PutU8(p, jf::kAdmit);
  PutI64(p, seq_id);
  PutBytes(p, r.request_id);
  PutInts(p, r.prompt);
  PutI32(p, r.max_tokens);
  PutInts(p, r.stop_ids);
  PutF32(p, r.sampling.temperature);
  PutI32(p, r.sampling.top_k);
  PutF32(p, r.sampling.top_p);
  PutU64(p, r.sampling.seed);
  PutU8(p, r.ignore_eos ? 1 : 0);
  PutI64(p, deadline_unix_us);
  return p;
}

std::string EncodeCommit(int64_t seq_id, int32_t committed_len, std::span<const int32_t> tokens,
                         uint32_t keep_blocks, std::span<const int32_t> new_blocks) {
  std::string p;
  p.reserve(size_t(kCommitFixed) + 4 * (tokens.size() + new_blocks.size()));
  PutU8(p, jf::kCommit);
  PutI64(p, seq_id);
  PutI32(p, committed_len);
  PutInts(p, tokens);
  PutU32(p, keep_blocks);
  PutInts(p, new_blocks);
  return p;
}

std::string EncodeFinish(int64_t seq_id, FinishReason reason) {
  std::string p;
  PutU8(p, jf::kFinish);
  PutI64(p, seq_id);
  PutU8(p, uint8_t(reason));
  return p;
}

std::string EncodeStore(uint64_t generation) {
  std::string p;
  PutU8(p, jf::kStore);
  PutU64(p, generation);
  return p;
}

std::string EncodeWorker(const JournaledWorker& w) {
  std::string p;
  PutU8(p, jf::kWorker);
  PutBytes(p, w.worker_id);
  PutI64(p, w.pid);
  PutU64(p, w.process_start);
  return p;
}

// The store and worker records a compaction writes first.
std::string StoreAndWorkersImage(uint64_t generation,
                                 const std::map<std::string, JournaledWorker>& workers) {
  std::string out;
  if (generation != 0) out.append(jf::Frame(EncodeStore(generation)));
  for (const auto& [id, w] : workers) out.append(jf::Frame(EncodeWorker(w)));
  return out;
}

// What a compaction writes for `s`: its kAdmit, and a kCommit when it has
// anything committed. ImageBytes is their framed size.
bool NeedsCommitRecord(const JournaledSequence& s) {
  return s.committed_len != 0 || !s.generated.empty() || !s.blocks.empty();
}
int64_t ImageBytes(const JournaledSequence& s) {
  int64_t n = jf::kFrameBytes + kAdmitFixed + int64_t(s.request.request_id.size()) +
              4 * int64_t(s.request.prompt.size() + s.request.stop_ids.size());
  if (NeedsCommitRecord(s))
    n += jf::kFrameBytes + kCommitFixed + 4 * int64_t(s.generated.size() + s.blocks.size());
  return n;
}
void AppendImage(const JournaledSequence& s, std::string* out) {
  out->append(jf::Frame(EncodeAdmit(s.seq_id, s.request, s.deadline_unix_us)));
  if (NeedsCommitRecord(s))
    out->append(jf::Frame(EncodeCommit(s.seq_id, s.committed_len, s.generated, 0, s.blocks)));
}

bool AllNonNegative(std::span<const int32_t> v) {
  for (int32_t x : v)
    if (x < 0) return false;
  return true;
}

// Decodes one payload, checks it against the live state and applies it.
// Used both for appends (the record is buffered only if this succeeds, so
// every record written replays) and for replay. `image_bytes` tracks
// ImageBytes over the live sequences.
// The state records apply to.
struct StateRef {
  std::map<int64_t, JournaledSequence>* live;
  int64_t* image_bytes;
  uint64_t* store_generation;
  std::map<std::string, JournaledWorker>* workers;
};

absl::Status ApplyRecord(std::string_view payload, const JournalLimits& lim, const StateRef& st,
                         int64_t* seq_id_out) {
  std::map<int64_t, JournaledSequence>* live = st.live;
  int64_t* image_bytes = st.image_bytes;
  Decoder d(payload);
  uint8_t kind = 0;
  if (!d.U8(&kind)) return absl::InvalidArgumentError("empty record");
  auto truncated = [&](const char* what) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " record is malformed or beyond the limits"));
  };
  switch (kind) {
    case jf::kAdmit: {
      AdmitRecord a;
      Request& r = a.request;
      uint8_t ignore_eos = 0;
      if (!d.I64(&a.seq_id) || !d.Bytes(lim.max_request_id_bytes, &r.request_id) ||
          !d.Ints(lim.max_prompt_tokens, &r.prompt) || !d.I32(&r.max_tokens) ||
          !d.Ints(lim.max_stop_ids, &r.stop_ids) || !d.F32(&r.sampling.temperature) ||
          !d.I32(&r.sampling.top_k) || !d.F32(&r.sampling.top_p) || !d.U64(&r.sampling.seed) ||
          !d.U8(&ignore_eos) || !d.I64(&a.deadline_unix_us) || !d.done() || ignore_eos > 1)
        return truncated("an admit");
      r.ignore_eos = ignore_eos == 1;
      *seq_id_out = a.seq_id;
      if (a.seq_id < 1) return absl::InvalidArgumentError(absl::StrCat("seq_id ", a.seq_id));
      if (r.prompt.empty()) return absl::InvalidArgumentError("an empty prompt");
      if (r.max_tokens < 1 || r.max_tokens > lim.max_generated_tokens)
        return absl::InvalidArgumentError(absl::StrCat("max_tokens ", r.max_tokens, " outside [1, ",
                                                       lim.max_generated_tokens, "]"));
      if (!AllNonNegative(r.prompt) || !AllNonNegative(r.stop_ids))
        return absl::InvalidArgumentError("a negative token id");
      if (a.deadline_unix_us < 0)
        return absl::InvalidArgumentError(absl::StrCat("deadline ", a.deadline_unix_us));
      if (live->count(a.seq_id))
        return absl::AlreadyExistsError(absl::StrCat("sequence ", a.seq_id, " is already live"));
      JournaledSequence s;
      s.seq_id = a.seq_id;
      s.request = std::move(a.request);
      s.deadline_unix_us = a.deadline_unix_us;
      *image_bytes += ImageBytes(s);
      live->emplace(s.seq_id, std::move(s));
      return absl::OkStatus();
    }
    case jf::kCommit: {
      CommitRecord c;
      if (!d.I64(&c.seq_id) || !d.I32(&c.committed_len) ||
          !d.Ints(lim.max_generated_tokens, &c.new_generated) || !d.U32(&c.keep_blocks) ||
          !d.Ints(lim.max_blocks, &c.new_blocks) || !d.done())
        return truncated("a commit");
      *seq_id_out = c.seq_id;
      auto it = live->find(c.seq_id);
      if (it == live->end())
        return absl::NotFoundError(absl::StrCat("sequence ", c.seq_id, " is not live"));
      JournaledSequence& s = it->second;
      const int64_t generated = int64_t(s.generated.size()) + int64_t(c.new_generated.size());
      if (generated > s.request.max_tokens)
        return absl::InvalidArgumentError(absl::StrCat("sequence ", c.seq_id, ": ", generated,
                                                       " generated tokens, over max_tokens ",
                                                       s.request.max_tokens));
      if (c.committed_len < 0 || c.committed_len > int64_t(s.request.prompt.size()) + generated)
        return absl::InvalidArgumentError(absl::StrCat(
            "sequence ", c.seq_id, ": committed length ", c.committed_len, " outside [0, prompt ",
            s.request.prompt.size(), " + generated ", generated, "]"));
      if (c.keep_blocks > s.blocks.size() ||
          int64_t(c.keep_blocks) + int64_t(c.new_blocks.size()) > lim.max_blocks)
        return absl::InvalidArgumentError(
            absl::StrCat("sequence ", c.seq_id, ": block list out of range"));
      if (!AllNonNegative(c.new_generated) || !AllNonNegative(c.new_blocks))
        return absl::InvalidArgumentError("a negative token or block id");
      *image_bytes -= ImageBytes(s);
      s.committed_len = c.committed_len;
      s.generated.insert(s.generated.end(), c.new_generated.begin(), c.new_generated.end());
      s.blocks.resize(c.keep_blocks);
      s.blocks.insert(s.blocks.end(), c.new_blocks.begin(), c.new_blocks.end());
      *image_bytes += ImageBytes(s);
      return absl::OkStatus();
    }
    case jf::kFinish: {
      FinishRecord f;
      if (!d.I64(&f.seq_id) || !d.U8(&f.reason) || !d.done()) return truncated("a finish");
      *seq_id_out = f.seq_id;
      if (f.reason <= uint8_t(FinishReason::kNone) || f.reason > uint8_t(FinishReason::kShutdown))
        return absl::InvalidArgumentError(absl::StrCat("finish reason ", int(f.reason)));
      auto it = live->find(f.seq_id);
      if (it == live->end())
        return absl::NotFoundError(absl::StrCat("sequence ", f.seq_id, " is not live"));
      *image_bytes -= ImageBytes(it->second);
      live->erase(it);
      return absl::OkStatus();
    }
    case jf::kStore: {
      uint64_t generation = 0;
      if (!d.U64(&generation) || !d.done()) return truncated("a store");
      if (generation == 0) return absl::InvalidArgumentError("store generation 0");
      *st.store_generation = generation;
      return absl::OkStatus();
    }
    case jf::kWorker: {
      JournaledWorker w;
      if (!d.Bytes(lim.max_request_id_bytes, &w.worker_id) || !d.I64(&w.pid) ||
          !d.U64(&w.process_start) || !d.done())
        return truncated("a worker");
      if (w.worker_id.empty() || w.pid < 1)
        return absl::InvalidArgumentError("a worker record needs an id and a pid >= 1");
      (*st.workers)[w.worker_id] = std::move(w);
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown record kind ", int(kind)));
  }
}

// ---- Files ----

absl::Status ErrnoStatus(int err, const std::string& path, const std::string& what) {
  const std::string msg = absl::StrCat(path, ": ", what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status WriteAllAt(int fd, std::string_view data, int64_t offset, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd, data.data(), data.size(), off_t(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, path, "write");
    }
    data.remove_prefix(size_t(n));
    offset += n;
  }
  return absl::OkStatus();
}

absl::Status SyncFd(int fd, const std::string& path) {
  while (::fdatasync(fd) != 0) {
    if (errno != EINTR) return ErrnoStatus(errno, path, "fdatasync");
  }
  return absl::OkStatus();
}

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Makes a rename or a new file in `path`'s directory durable.
absl::Status SyncDirOf(const std::string& path) {
  const std::string dir = DirOf(path);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, dir, "open the directory");
  int rc = 0;
  while ((rc = ::fsync(fd)) != 0 && errno == EINTR) {
  }
  const int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : ErrnoStatus(err, dir, "fsync the directory");
}

absl::Status Lock(int fd, const std::string& path) {
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK)
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": the sequence journal is in use by another process"));
    return ErrnoStatus(errno, path, "flock");
  }
  return absl::OkStatus();
}

// Writes `contents` to path.tmp (locked, synced), puts it at `path` and
// syncs the directory. Returns the new file's descriptor, locked.
// replace: renamed over `path`; else linked there, ALREADY_EXISTS when
// `path` exists (two processes creating a journal at once: one wins).
// Before it reaches `path`, a failure removes path.tmp and leaves `path` as
// it was; `*placed` tells whether it got there.
absl::StatusOr<int> PlaceFile(const std::string& path, std::string_view contents, bool fsync,
                              bool replace, bool* placed) {
  *placed = false;
  const std::string tmp = path + ".tmp";
  // Locked before it is truncated, and removed only once locked: another
  // process's tmp file is never clobbered.
  const int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(errno, tmp, "create");
  if (absl::Status s = Lock(fd, tmp); !s.ok()) {
    ::close(fd);
    return s;
  }
  absl::Status s;
  if (::ftruncate(fd, 0) != 0) s = ErrnoStatus(errno, tmp, "truncate");
  if (s.ok()) s = WriteAllAt(fd, contents, 0, tmp);
  if (s.ok() && fsync) s = SyncFd(fd, tmp);
  if (s.ok() && replace && ::rename(tmp.c_str(), path.c_str()) != 0)
    s = ErrnoStatus(errno, tmp, absl::StrCat("rename to ", path));
  if (s.ok() && !replace && ::link(tmp.c_str(), path.c_str()) != 0)
    s = errno == EEXIST ? absl::AlreadyExistsError(absl::StrCat(path, " exists"))
                        : ErrnoStatus(errno, tmp, absl::StrCat("link to ", path));
  if (!s.ok() || !replace) ::unlink(tmp.c_str());
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  *placed = true;
  if (fsync) s = SyncDirOf(path);
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  return fd;
}

absl::StatusOr<std::string> ReadAll(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, path, "stat");
  if (!S_ISREG(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
  std::string data(size_t(st.st_size), '\0');
  size_t got = 0;
  while (got < data.size()) {
    const ssize_t n = ::pread(fd, data.data() + got, data.size() - got, off_t(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, path, "read");
    }
    if (n == 0) break;  // shrank meanwhile: replay what is there
    got += size_t(n);
  }
  data.resize(got);
  return data;
}

}  // namespace

namespace journal_format {

std::string Header() {
  std::string h(kMagic, sizeof(kMagic));
  PutU32(h, kVersion);
  PutU32(h, Crc32c(h));
  return h;
}

std::string Frame(std::string_view payload) {
  std::string out;
  out.reserve(size_t(kFrameBytes) + payload.size());
  PutU32(out, uint32_t(payload.size()));
  const uint32_t crc = Crc32c(payload, Crc32c(out));
  PutU32(out, crc);
  out.append(payload);
  return out;
}

int64_t MaxPayloadBytes(const JournalLimits& lim) {
  const int64_t admit = kAdmitFixed + int64_t(lim.max_request_id_bytes) +
                        4 * (int64_t(lim.max_prompt_tokens) + int64_t(lim.max_stop_ids));
  const int64_t commit =
      kCommitFixed + 4 * (int64_t(lim.max_generated_tokens) + int64_t(lim.max_blocks));
  const int64_t worker = kWorkerFixed + int64_t(lim.max_request_id_bytes);
  return std::min<int64_t>(std::max({admit, commit, kFinishBytes, kStoreBytes, worker}),
                           UINT32_MAX);
}

}  // namespace journal_format

// ---- Replay ----

absl::StatusOr<JournalImage> ReplayJournal(std::string_view bytes, const JournalLimits& lim) {
  if (bytes.size() < size_t(jf::kHeaderBytes))
    return absl::FailedPreconditionError(
        absl::StrCat("not a paged sequence journal (", bytes.size(), " bytes, no header)"));
  if (std::memcmp(bytes.data(), jf::kMagic, sizeof(jf::kMagic)) != 0)
    return absl::FailedPreconditionError("not a paged sequence journal (bad magic)");
  const uint32_t version = LoadU32(bytes.data() + 8);
  if (jf::Crc32c(bytes.substr(0, 12)) != LoadU32(bytes.data() + 12))
    return absl::DataLossError("the sequence journal's header checksum does not match");
  if (version != jf::kVersion)
    return absl::FailedPreconditionError(absl::StrCat("sequence journal format version ", version,
                                                      "; this build reads version ", jf::kVersion));

  JournalImage image;
  JournalRecovery& rec = image.recovery;
  int64_t image_bytes = 0;
  const int64_t size = int64_t(bytes.size());
  const int64_t max_payload = jf::MaxPayloadBytes(lim);
  int64_t off = jf::kHeaderBytes;
  auto drop = [&](bool torn, std::string reason) {
    rec.dropped_at = off;
    rec.bytes_dropped = size - off;
    rec.torn_tail = torn;
    rec.drop_reason = std::move(reason);
  };
  while (off < size) {
    const int64_t left = size - off;
    if (left < jf::kFrameBytes) {
      drop(true, absl::StrCat("an incomplete record frame (", left, " bytes)"));
      break;
    }
    const uint32_t len = LoadU32(bytes.data() + off);
    const uint32_t crc = LoadU32(bytes.data() + off + 4);
    if (len == 0 || int64_t(len) > max_payload) {
      const bool zeros = bytes.substr(size_t(off)).find_first_not_of('\0') == std::string::npos;
      drop(zeros,
           zeros ? std::string("a zero-filled tail")
                 : absl::StrCat("a record length of ", len, " bytes (at most ", max_payload, ")"));
      break;
    }
    const int64_t end = off + jf::kFrameBytes + int64_t(len);
    if (end > size) {
      drop(true,
           absl::StrCat("a record of ", len, " bytes with ", left - jf::kFrameBytes, " present"));
      break;
    }
    const std::string_view payload = bytes.substr(size_t(off + jf::kFrameBytes), len);
    if (jf::Crc32c(payload, jf::Crc32c(bytes.substr(size_t(off), 4))) != crc) {
      drop(end == size, "a checksum mismatch");
      break;
    }
    int64_t seq_id = 0;
    const StateRef st{&image.live, &image_bytes, &image.store_generation, &image.workers};
    if (absl::Status s = ApplyRecord(payload, lim, st, &seq_id); !s.ok()) {
      drop(false, absl::StrCat("an invalid record: ", s.message()));
      break;
    }
    rec.max_seq_id = std::max(rec.max_seq_id, seq_id);
    ++rec.records;
    off = end;
  }
  rec.valid_bytes = rec.dropped_at >= 0 ? rec.dropped_at : size;
  return image;
}

// ---- SequenceJournal ----

SequenceJournal::SequenceJournal(std::string path, const JournalOptions& options, int fd)
    : path_(std::move(path)), options_(options), fd_(fd) {}

SequenceJournal::SequenceJournal(SequenceJournal&& o) noexcept
    : path_(std::move(o.path_)),
      options_(o.options_),
      fd_(std::exchange(o.fd_, -1)),
      broken_(std::move(o.broken_)),
      live_(std::move(o.live_)),
      live_image_bytes_(o.live_image_bytes_),
      store_generation_(o.store_generation_),
      workers_(std::move(o.workers_)),
      recovery_(std::move(o.recovery_)),
      pending_(std::move(o.pending_)),
      file_bytes_(o.file_bytes_),
      compact_retry_at_(o.compact_retry_at_),
      counters_(std::move(o.counters_)) {}

SequenceJournal& SequenceJournal::operator=(SequenceJournal&& o) noexcept {
  if (this != &o) {
    CloseFd();
    path_ = std::move(o.path_);
    options_ = o.options_;
    fd_ = std::exchange(o.fd_, -1);
    broken_ = std::move(o.broken_);
    live_ = std::move(o.live_);
    live_image_bytes_ = o.live_image_bytes_;
    store_generation_ = o.store_generation_;
    workers_ = std::move(o.workers_);
    recovery_ = std::move(o.recovery_);
    pending_ = std::move(o.pending_);
    file_bytes_ = o.file_bytes_;
    compact_retry_at_ = o.compact_retry_at_;
    counters_ = std::move(o.counters_);
  }
  return *this;
}

SequenceJournal::~SequenceJournal() { CloseFd(); }

void SequenceJournal::CloseFd() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

absl::StatusOr<SequenceJournal> SequenceJournal::Open(const std::string& path,
                                                      const JournalOptions& options) {
  if (path.empty()) return absl::InvalidArgumentError("the sequence journal's path is empty");
  const JournalLimits& lim = options.limits;
  if (lim.max_prompt_tokens < 1 || lim.max_generated_tokens < 1 || lim.max_stop_ids < 0 ||
      lim.max_blocks < 0 || lim.max_request_id_bytes < 0)
    return absl::InvalidArgumentError(
        "sequence journal limits: prompt and generated tokens >= 1, the others >= 0");

  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) break;
    if (errno != ENOENT) return ErrnoStatus(errno, path, "open");
    // None yet: an empty journal, made whole before it appears at `path`.
    bool placed = false;
    absl::StatusOr<int> created = PlaceFile(path, jf::Header(), options.fsync, false, &placed);
    if (created.ok()) {
      SequenceJournal j(path, options, *created);
      j.recovery_.created = true;
      j.recovery_.valid_bytes = j.file_bytes_ = jf::kHeaderBytes;
      return j;
    }
    // Another process created it meanwhile: open that one.
    if (!absl::IsAlreadyExists(created.status()) || attempt > 0) return created.status();
  }
  SequenceJournal j(path, options, fd);  // owns fd from here
  RETURN_IF_ERROR(Lock(fd, path));
  // A compaction cut short before its rename: the file at `path` is whole.
  ::unlink((path + ".tmp").c_str());
  ASSIGN_OR_RETURN(std::string bytes, ReadAll(fd, path));
  if (bytes.empty()) {
    // Created by someone else (touch): make it an empty journal.
    const std::string header = jf::Header();
    RETURN_IF_ERROR(WriteAllAt(fd, header, 0, path));
    if (options.fsync) RETURN_IF_ERROR(SyncFd(fd, path));
    j.recovery_.created = true;
    j.recovery_.valid_bytes = j.file_bytes_ = jf::kHeaderBytes;
    return j;
  }
  absl::StatusOr<JournalImage> image = ReplayJournal(bytes, lim);
  if (!image.ok()) return Annotate(image.status(), path);
  j.recovery_ = std::move(image->recovery);
  j.live_ = std::move(image->live);
  j.store_generation_ = image->store_generation;
  j.workers_ = std::move(image->workers);
  for (const auto& [id, s] : j.live_) j.live_image_bytes_ += ImageBytes(s);
  const JournalRecovery& rec = j.recovery_;
  if (rec.bytes_dropped > 0) {
    if (!options.repair)
      return absl::DataLossError(absl::StrCat(path, ": record at offset ", rec.dropped_at, ": ",
                                              rec.drop_reason, "; ", rec.bytes_dropped,
                                              " bytes from there on would be dropped"));
    if (::ftruncate(fd, off_t(rec.valid_bytes)) != 0) return ErrnoStatus(errno, path, "truncate");
    if (options.fsync) RETURN_IF_ERROR(SyncFd(fd, path));
  }
  j.file_bytes_ = rec.valid_bytes;
  return j;
}

absl::Status SequenceJournal::Break(absl::Status s) {
  if (broken_.ok()) broken_ = Annotate(s, "the sequence journal is broken");
  return broken_;
}

absl::Status SequenceJournal::Append(std::string payload) {
  if (!broken_.ok()) return broken_;
  int64_t seq_id = 0;
  const StateRef st{&live_, &live_image_bytes_, &store_generation_, &workers_};
  RETURN_IF_ERROR(ApplyRecord(payload, options_.limits, st, &seq_id));
  pending_.append(jf::Frame(payload));
  ++counters_.records_appended;
  return absl::OkStatus();
}

absl::Status SequenceJournal::Admit(int64_t seq_id, const Request& request,
                                    int64_t deadline_unix_us) {
  const JournalLimits& lim = options_.limits;
  // Checked before encoding: the format's counts are 32-bit.
  if (int64_t(request.request_id.size()) > lim.max_request_id_bytes)
    return absl::InvalidArgumentError(absl::StrCat("request_id of ", request.request_id.size(),
                                                   " bytes; at most ", lim.max_request_id_bytes));
  if (int64_t(request.prompt.size()) > lim.max_prompt_tokens)
    return absl::InvalidArgumentError(absl::StrCat("a prompt of ", request.prompt.size(),
                                                   " tokens; at most ", lim.max_prompt_tokens));
  if (int64_t(request.stop_ids.size()) > lim.max_stop_ids)
    return absl::InvalidArgumentError(
        absl::StrCat(request.stop_ids.size(), " stop ids; at most ", lim.max_stop_ids));
  return Append(EncodeAdmit(seq_id, request, deadline_unix_us));
}

absl::Status SequenceJournal::Commit(int64_t seq_id, int32_t committed_len,
                                     std::span<const int32_t> new_generated,
                                     std::span<const int32_t> blocks) {
  auto it = live_.find(seq_id);
  if (it == live_.end())
    return absl::NotFoundError(absl::StrCat("sequence ", seq_id, " is not live"));
  const JournaledSequence& s = it->second;
  if (int64_t(new_generated.size()) > options_.limits.max_generated_tokens ||
      int64_t(blocks.size()) > options_.limits.max_blocks)
    return absl::InvalidArgumentError(absl::StrCat("sequence ", seq_id, ": ", new_generated.size(),
                                                   " tokens and ", blocks.size(),
                                                   " blocks; over the limits"));
  size_t keep = 0;
  while (keep < s.blocks.size() && keep < blocks.size() && s.blocks[keep] == blocks[keep]) ++keep;
  if (committed_len == s.committed_len && new_generated.empty() && keep == s.blocks.size() &&
      keep == blocks.size())
    return absl::OkStatus();
  return Append(
      EncodeCommit(seq_id, committed_len, new_generated, uint32_t(keep), blocks.subspan(keep)));
}

absl::Status SequenceJournal::Finish(int64_t seq_id, FinishReason reason) {
  if (reason == FinishReason::kNone) return absl::InvalidArgumentError("finish reason kNone");
  return Append(EncodeFinish(seq_id, reason));
}

absl::Status SequenceJournal::SetStore(uint64_t generation) {
  if (generation == 0) return absl::InvalidArgumentError("store generation 0");
  if (generation == store_generation_) return absl::OkStatus();
  return Append(EncodeStore(generation));
}

absl::Status SequenceJournal::Worker(const JournaledWorker& worker) {
  if (worker.worker_id.empty() ||
      int64_t(worker.worker_id.size()) > options_.limits.max_request_id_bytes || worker.pid < 1)
    return absl::InvalidArgumentError(absl::StrCat("worker record: an id of 1 to ",
                                                   options_.limits.max_request_id_bytes,
                                                   " bytes and a pid >= 1"));
  auto it = workers_.find(worker.worker_id);
  if (it != workers_.end() && it->second.pid == worker.pid &&
      it->second.process_start == worker.process_start)
    return absl::OkStatus();
  return Append(EncodeWorker(worker));
}

absl::Status SequenceJournal::WritePending() {
  if (!broken_.ok()) return broken_;
  if (pending_.empty()) return absl::OkStatus();
  if (absl::Status s = WriteAllAt(fd_, pending_, file_bytes_, path_); !s.ok()) return Break(s);
  file_bytes_ += int64_t(pending_.size());
  pending_.clear();
  return absl::OkStatus();
}

absl::Status SequenceJournal::Sync() {
  RETURN_IF_ERROR(WritePending());
  if (options_.fsync)
    if (absl::Status s = SyncFd(fd_, path_); !s.ok()) return Break(s);
  ++counters_.syncs;
  // The records are durable now: a compaction that fails and leaves the old
  // file (a full disk) is reported in Stats and retried later, not here.
  if (options_.auto_compact && NeedsCompaction() && file_bytes_ >= compact_retry_at_) {
    if (absl::Status s = Compact(); !s.ok()) {
      if (!broken_.ok()) return broken_;
      ++counters_.compaction_failures;
      counters_.last_compaction_error = std::string(s.message());
      compact_retry_at_ = file_bytes_ + std::max(options_.compact_min_bytes, file_bytes_ / 2);
    }
  }
  return absl::OkStatus();
}

bool SequenceJournal::NeedsCompaction() const {
  const int64_t size = file_bytes_ + int64_t(pending_.size());
  const int64_t image = jf::kHeaderBytes + live_image_bytes_ +
                        int64_t(StoreAndWorkersImage(store_generation_, workers_).size());
  return size > std::max(options_.compact_min_bytes, 2 * image);
}

absl::Status SequenceJournal::Compact() {
  if (!broken_.ok()) return broken_;
  std::string image = jf::Header();
  image.append(StoreAndWorkersImage(store_generation_, workers_));
  image.reserve(image.size() + size_t(live_image_bytes_));
  for (const auto& [id, s] : live_) AppendImage(s, &image);
  bool placed = false;
  absl::StatusOr<int> fd = PlaceFile(path_, image, options_.fsync, true, &placed);
  if (!fd.ok()) return placed ? Break(fd.status()) : fd.status();
  CloseFd();
  fd_ = *fd;
  file_bytes_ = int64_t(image.size());
  pending_.clear();
  compact_retry_at_ = 0;
  ++counters_.compactions;
  return absl::OkStatus();
}

JournalStats SequenceJournal::Stats() const {
  JournalStats st = counters_;
  st.file_bytes = file_bytes_;
  st.pending_bytes = int64_t(pending_.size());
  st.live_image_bytes = jf::kHeaderBytes + live_image_bytes_ +
                        int64_t(StoreAndWorkersImage(store_generation_, workers_).size());
  st.live_sequences = int64_t(live_.size());
  return st;
}

}  // namespace paged
