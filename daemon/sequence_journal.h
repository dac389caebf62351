// The sequence journal: the coordinator's live sequences in a file beside
// the store's segment, so that a restarted coordinator resumes every
// sequence from its committed length instead of dropping it (issue 15;
// docs/reliability.md, "The sequence journal").
//
// The file is a 16-byte header (magic "PAGEDJNL", format version, header
// CRC32C) and then records, each framed as
//   u32 length | u32 crc32c(length bytes + payload) | payload (length bytes)
// all little-endian. The payload's first byte is its kind:
//   kAdmit  {seq_id, request_id, prompt, max_tokens, stop_ids, temperature,
//            top_k, top_p, seed, ignore_eos, deadline (wall-clock us)}
//   kCommit {seq_id, committed length, newly committed generated tokens
//            (appended), KV blocks kept from the last list + blocks after them}
//   kFinish {seq_id, reason}
//   kStore  {segment generation}: the store's segment whose KV pool the
//            block lists index (the last one counts)
//   kWorker {worker_id, pid, process start time}: a worker process that
//            attached (the last one of each id counts), so that a restarted
//            coordinator can wait until no process of the old one still
//            writes KV rows (the fence, docs/reliability.md)
// Replaying the records in order gives the live sequences: admitted and not
// finished, each with its request, generated tokens, committed length and
// last KV block list; and the store and the workers.
//
// Durability contract:
//  - Admit / Commit / Finish validate, update the in-memory state (live())
//    and buffer the record. Nothing is written to the file yet.
//  - Sync() writes every buffered record and fdatasyncs the file. When it
//    returns OK, everything appended before it survives a crash of the
//    process or the machine. One Sync covers any number of records (group
//    commit): the coordinator appends a step's commits and finishes and
//    syncs ONCE, before it emits those tokens to clients, so a token a
//    client saw is never lost. Records appended after the last successful
//    Sync may or may not survive a crash, each whole or not at all, in order
//    (a torn last record is dropped at the next Open).
//  - A failed write or fsync leaves the journal broken: every later append,
//    Sync or Compact returns that error (after a failed fsync the page cache
//    cannot be trusted; fsyncgate). Validation errors (a bad argument) are
//    not sticky and append nothing.
//  - Compact() rewrites the file holding only the live sequences (path.tmp,
//    fsync, rename over path, fsync the directory); a crash at any point
//    leaves either the old file or the new one, each complete. Sync compacts
//    on its own (auto_compact) when the file passes
//    max(compact_min_bytes, 2 x the live sequences' size); such a compaction
//    failing before its rename (a full disk) does not fail the Sync (its
//    records are durable): Stats counts it and a later Sync tries again.
//
// One process owns a journal: Open takes an exclusive flock and fails with
// FAILED_PRECONDITION while another process holds it. Not thread-safe: one
// caller at a time (the coordinator's mutex).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/finish_reason.h"
#include "daemon/scheduler.h"

namespace paged {

// Bounds on one sequence. An append beyond them is INVALID_ARGUMENT; a
// record beyond them in a file is corrupt. They also bound the length a
// record frame may declare, so a corrupt length never allocates more.
struct JournalLimits {
  int32_t max_prompt_tokens = 1 << 20;
  int32_t max_generated_tokens = 1 << 20;
  int32_t max_stop_ids = 4096;
  int32_t max_blocks = 1 << 20;  // KV blocks of one sequence
  int32_t max_request_id_bytes = 1024;
};

struct JournalOptions {
  JournalLimits limits;
  // Sync fdatasyncs. false: Sync only writes, into the page cache: what it
  // wrote survives a crash of the process (SIGKILL, the coordinator
  // restarted) but not of the machine. On tmpfs (/run, /dev/shm) an fsync
  // costs next to nothing and a machine crash loses the file anyway.
  bool fsync = true;
  // At Open, a bad record (torn or corrupt) and everything after it are
  // truncated away. false: Open fails with DATA_LOSS and leaves the file alone.
  bool repair = true;
  // Sync compacts when the file is larger than max(compact_min_bytes,
  // 2 x live_image_bytes()).
  bool auto_compact = true;
  int64_t compact_min_bytes = int64_t(64) << 20;
};

// One live sequence.
struct JournaledSequence {
  int64_t seq_id = 0;
  // As admitted, except request.deadline: always 0 here (the scheduler's
  // clock is monotonic and does not survive a restart); see deadline_unix_us.
  Request request;
  int64_t deadline_unix_us = 0;    // 0: none; else wall-clock (CLOCK_REALTIME) microseconds
  std::vector<int32_t> generated;  // committed generated tokens, in order
  int32_t committed_len = 0;       // KV rows [0, committed_len) committed
  std::vector<int32_t> blocks;     // its KV block list at its last commit
};

// A worker process that attached to the coordinator that wrote the journal.
struct JournaledWorker {
  std::string worker_id;
  int64_t pid = 0;
  uint64_t process_start = 0;  // common/process.h ProcessStartTime; 0: unknown
};

// What Open found.
struct JournalRecovery {
  bool created = false;       // no file (or an empty one) was there: a fresh journal
  int64_t records = 0;        // valid records replayed
  int64_t valid_bytes = 0;    // header + those records: the file's length after repair
  int64_t max_seq_id = 0;     // the largest seq id any replayed record names
  int64_t bytes_dropped = 0;  // from the first bad record to the end (truncated); 0: none
  int64_t dropped_at = -1;    // that record's offset; -1: none
  bool torn_tail = false;     // the bad record was the file's last (a write cut short):
                              // false means corruption with bytes after it
  std::string drop_reason;    // "" or why the record is bad ("checksum mismatch", ...)
};

struct JournalStats {
  int64_t file_bytes = 0;        // written to the file (header included)
  int64_t pending_bytes = 0;     // appended, not yet written
  int64_t live_image_bytes = 0;  // what a compaction would write (header included)
  int64_t live_sequences = 0;
  int64_t records_appended = 0;
  int64_t syncs = 0;
  int64_t compactions = 0;
  int64_t compaction_failures = 0;    // automatic ones that left the old file (retried later)
  std::string last_compaction_error;  // "" or the last such failure
};

// The replay of a journal's bytes without a file: what Open does to the
// file's contents. Errors only for a bad header (FAILED_PRECONDITION: not a
// journal, or another format version; DATA_LOSS: its checksum); bad records
// stop the replay (JournalRecovery says where and why) and never fail it.
struct JournalImage {
  std::map<int64_t, JournaledSequence> live;
  uint64_t store_generation = 0;  // the last kStore; 0: none
  std::map<std::string, JournaledWorker> workers;
  JournalRecovery recovery;
};
absl::StatusOr<JournalImage> ReplayJournal(std::string_view bytes, const JournalLimits& limits);

class SequenceJournal {
 public:
  // Opens the journal at `path` and replays it, or creates an empty one
  // (mode 0600: it holds prompts) when there is none; see recovery() for what
  // was found. Errors name the path: FAILED_PRECONDITION for a file that is
  // not a journal of this version or one held by another process; DATA_LOSS
  // for a bad header checksum, or a bad record when options.repair is false;
  // the errno's code for I/O. A leftover path.tmp (a compaction cut short)
  // is removed.
  static absl::StatusOr<SequenceJournal> Open(const std::string& path,
                                              const JournalOptions& options = {});

  SequenceJournal(SequenceJournal&& other) noexcept;
  SequenceJournal& operator=(SequenceJournal&& other) noexcept;
  SequenceJournal(const SequenceJournal&) = delete;
  SequenceJournal& operator=(const SequenceJournal&) = delete;
  // Closes the file. Does NOT sync: call Sync first for what must survive.
  ~SequenceJournal();

  // A sequence was admitted. `request.deadline` is ignored (monotonic clock);
  // `deadline_unix_us` (0: none) is recorded. INVALID_ARGUMENT: seq_id < 1,
  // an empty prompt, max_tokens < 1, a negative token or stop id, or a field
  // beyond the limits; ALREADY_EXISTS: seq_id is live.
  absl::Status Admit(int64_t seq_id, const Request& request, int64_t deadline_unix_us);

  // A sequence's step was committed: its committed length is now
  // `committed_len`, `new_generated` extends its generated tokens, and
  // `blocks` is its whole KV block list (the record stores only what changed
  // since the last commit). Nothing changed: nothing is recorded.
  // NOT_FOUND: not live; INVALID_ARGUMENT: more tokens than max_tokens or the
  // limits, committed_len outside [0, prompt + generated], a negative id.
  absl::Status Commit(int64_t seq_id, int32_t committed_len, std::span<const int32_t> new_generated,
                      std::span<const int32_t> blocks);

  // A sequence ended (any reason but kNone). NOT_FOUND: not live.
  absl::Status Finish(int64_t seq_id, FinishReason reason);

  // The store's segment generation the block lists refer to (recorded only
  // when it changes). INVALID_ARGUMENT for 0.
  absl::Status SetStore(uint64_t generation);
  // A worker process attached (recorded only when it differs from the last
  // record of that id). INVALID_ARGUMENT: an empty or too long id, pid < 1.
  absl::Status Worker(const JournaledWorker& worker);

  // Writes the buffered records and fdatasyncs (the contract above); then
  // compacts if auto_compact and the file is due.
  absl::Status Sync();

  // Writes the live sequences to a fresh file that replaces the journal (the
  // contract above). Buffered records are not written: the fresh file holds
  // their effect. On an error before the rename the old file stays and
  // nothing is lost; an error after it leaves the journal broken.
  absl::Status Compact();
  bool NeedsCompaction() const;

  // Every sequence admitted and not finished, by seq id, with everything
  // appended so far (synced or not).
  const std::map<int64_t, JournaledSequence>& live() const { return live_; }
  uint64_t store_generation() const { return store_generation_; }  // 0: none recorded
  const std::map<std::string, JournaledWorker>& workers() const { return workers_; }
  const JournalRecovery& recovery() const { return recovery_; }
  JournalStats Stats() const;
  const std::string& path() const { return path_; }

 private:
  SequenceJournal(std::string path, const JournalOptions& options, int fd);

  // Validates and applies an encoded record to live_, then buffers it.
  absl::Status Append(std::string payload);
  // Writes pending_ at the end of the file.
  absl::Status WritePending();
  // Records a failure that leaves the journal broken and returns it.
  absl::Status Break(absl::Status s);
  void CloseFd();

  std::string path_;
  JournalOptions options_;
  int fd_ = -1;
  absl::Status broken_;  // sticky I/O failure
  std::map<int64_t, JournaledSequence> live_;
  int64_t live_image_bytes_ = 0;  // records of live_, framed (header not included)
  uint64_t store_generation_ = 0;
  std::map<std::string, JournaledWorker> workers_;
  JournalRecovery recovery_;
  std::string pending_;  // framed records not yet written
  int64_t file_bytes_ = 0;
  int64_t compact_retry_at_ = 0;  // after a failed automatic compaction: not before this size
  JournalStats counters_;         // records_appended, syncs, compactions and their failures
};

// The file format's pieces, for tests that forge or mutate journals.
namespace journal_format {
inline constexpr char kMagic[8] = {'P', 'A', 'G', 'E', 'D', 'J', 'N', 'L'};
inline constexpr uint32_t kVersion = 2;
inline constexpr int64_t kHeaderBytes = 16;  // magic, version, crc32c of the 12 bytes before
inline constexpr int64_t kFrameBytes = 8;    // length, crc32c
enum RecordKind : uint8_t { kAdmit = 1, kCommit = 2, kFinish = 3, kStore = 4, kWorker = 5 };

// CRC-32C (Castagnoli), extending `crc` (0 to start).
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);
// A fresh journal's header.
std::string Header();
// `payload` framed as a record (length and checksum prepended).
std::string Frame(std::string_view payload);
// The largest payload a record may have under `limits`.
int64_t MaxPayloadBytes(const JournalLimits& limits);
}  // namespace journal_format

}  // namespace paged
