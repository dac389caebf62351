// The sequence journal (daemon/sequence_journal.h): replay against a
// reference model, torn tails at every byte, corrupt records, compaction, bad
// headers, and a few thousand random mutations that must never crash.
#include "daemon/sequence_journal.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

namespace jf = journal_format;
using ::paged::testing::ReadFile;
using ::paged::testing::TempDir;
using ::paged::testing::WriteFile;
using ::testing::HasSubstr;
using State = std::map<int64_t, JournaledSequence>;

// No fsync: the tests check the format and the logic, not the disk.
JournalOptions Fast() {
  JournalOptions o;
  o.fsync = false;
  return o;
}

std::string Ints(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t x : v) absl::StrAppend(&s, x, ",");
  return s;
}

// Every field of every sequence, one line each: a readable diff on mismatch.
std::string Dump(const State& state) {
  std::ostringstream o;
  for (const auto& [id, s] : state) {
    const Request& r = s.request;
    uint32_t t = 0, p = 0;
    std::memcpy(&t, &r.sampling.temperature, 4);
    std::memcpy(&p, &r.sampling.top_p, 4);
    o << id << " seq=" << s.seq_id << " rid=" << r.request_id << " prompt=" << Ints(r.prompt)
      << " max=" << r.max_tokens << " stop=" << Ints(r.stop_ids) << " temp=" << t
      << " top_k=" << r.sampling.top_k << " top_p=" << p << " seed=" << r.sampling.seed
      << " deadline=" << r.deadline << "/" << s.deadline_unix_us << " ieos=" << r.ignore_eos
      << " gen=" << Ints(s.generated) << " c=" << s.committed_len << " blocks=" << Ints(s.blocks)
      << "\n";
  }
  return o.str();
}

int64_t FileSize(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? int64_t(st.st_size) : -1;
}

// The offsets of the records of a well-formed journal, and its end.
std::vector<int64_t> RecordOffsets(const std::string& bytes) {
  std::vector<int64_t> out;
  int64_t off = jf::kHeaderBytes;
  while (off + jf::kFrameBytes <= int64_t(bytes.size())) {
    out.push_back(off);
    uint32_t len = 0;
    std::memcpy(&len, bytes.data() + off, 4);
    off += jf::kFrameBytes + len;
  }
  out.push_back(off);
  return out;
}

// Drives a journal and a reference model of it with the same random inputs:
// admissions, prefill and decode commits (blocks grow as positions do, and
// now and then the whole list changes), finishes of every reason.
class Workload {
 public:
  explicit Workload(uint64_t seed) : rng_(seed) {}

  int32_t Rand(int32_t lo, int32_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<int32_t>(lo, hi)(rng_);
  }

  Request MakeRequest(int64_t id) {
    Request r;
    r.request_id = Rand(0, 4) == 0 ? "" : absl::StrCat("req-", id, "-", Rand(0, 1 << 30));
    r.prompt.resize(size_t(Rand(1, 40)));
    for (int32_t& t : r.prompt) t = Rand(0, 32000);
    r.max_tokens = Rand(1, 24);
    r.stop_ids.resize(size_t(Rand(0, 3)));
    for (int32_t& t : r.stop_ids) t = Rand(0, 32000);
    r.sampling.temperature = Rand(0, 1) ? 0.f : float(Rand(1, 200)) / 100.f;
    r.sampling.top_k = Rand(0, 50);
    r.sampling.top_p = float(Rand(1, 100)) / 100.f;
    r.sampling.seed = std::uniform_int_distribution<uint64_t>()(rng_);
    r.ignore_eos = Rand(0, 1) == 1;
    r.deadline = 12345;  // monotonic: not recorded
    return r;
  }

  // One input to both; returns whether it appended a record.
  bool Step(SequenceJournal& j, int32_t target_live = 12) {
    if (ref_.empty() || (int32_t(ref_.size()) < target_live && Rand(0, 2) == 0)) {
      const int64_t id = next_id_++;
      const Request r = MakeRequest(id);
      const int64_t deadline = Rand(0, 1) ? 0 : int64_t(1700000000) * 1000000 + Rand(0, 1 << 30);
      EXPECT_TRUE(j.Admit(id, r, deadline).ok());
      JournaledSequence s;
      s.seq_id = id;
      s.request = r;
      s.request.deadline = 0;
      s.deadline_unix_us = deadline;
      ref_[id] = s;
      return true;
    }
    auto it = ref_.begin();
    std::advance(it, Rand(0, int32_t(ref_.size()) - 1));
    JournaledSequence& s = it->second;
    const int32_t prompt = int32_t(s.request.prompt.size());
    if (Rand(0, 9) == 0 || int32_t(s.generated.size()) == s.request.max_tokens) {
      const FinishReason why = FinishReason(Rand(1, int32_t(FinishReason::kShutdown)));
      EXPECT_TRUE(j.Finish(s.seq_id, why).ok());
      ref_.erase(it);
      return true;
    }
    std::vector<int32_t> fresh;
    if (s.committed_len < prompt) {
      s.committed_len = std::min(prompt, s.committed_len + Rand(1, 16));
      if (s.committed_len == prompt) fresh.push_back(Rand(0, 32000));
    } else {
      s.committed_len += 1;
      fresh.push_back(Rand(0, 32000));
    }
    s.generated.insert(s.generated.end(), fresh.begin(), fresh.end());
    if (Rand(0, 19) == 0) {
      for (int32_t& b : s.blocks) b = next_block_++;  // a different list
    }
    while (int32_t(s.blocks.size()) * 16 < s.committed_len + 1) s.blocks.push_back(next_block_++);
    EXPECT_TRUE(j.Commit(s.seq_id, s.committed_len, fresh, s.blocks).ok());
    return true;
  }

  const State& ref() const { return ref_; }
  State& mutable_ref() { return ref_; }

 private:
  std::mt19937_64 rng_;
  State ref_;
  int64_t next_id_ = 1;
  int32_t next_block_ = 0;
};

// A journal file with a few hundred records (and the state they give).
struct Sample {
  std::string bytes;
  State state;
};
Sample MakeSample(const TempDir& dir, uint64_t seed, int steps) {
  const std::string path = dir.File(absl::StrCat("sample-", seed));
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
  EXPECT_TRUE(j.ok()) << j.status();
  Workload w(seed);
  for (int i = 0; i < steps; ++i) w.Step(*j);
  EXPECT_TRUE(j->Sync().ok());
  return Sample{ReadFile(path), w.ref()};
}

// ---- Round trips ----

TEST(SequenceJournalTest, CreatesAnEmptyJournalAndReopensIt) {
  TempDir dir;
  const std::string path = dir.File("journal");
  {
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path);  // fsync on
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_TRUE(j->recovery().created);
    EXPECT_TRUE(j->live().empty());
    EXPECT_EQ(FileSize(path), jf::kHeaderBytes);
    ASSERT_TRUE(j->Sync().ok());
  }
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_FALSE(j->recovery().created);
  EXPECT_EQ(j->recovery().records, 0);
  EXPECT_EQ(j->recovery().bytes_dropped, 0);
  EXPECT_EQ(ReadFile(path), jf::Header());
}

TEST(SequenceJournalTest, EveryFieldSurvivesAndDeadlinesAreWallClock) {
  TempDir dir;
  const std::string path = dir.File("journal");
  Request r;
  r.request_id = "chat-7f3a";
  r.prompt = {1, 0, 31999, 7};
  r.max_tokens = 100;
  r.stop_ids = {2, 13};
  r.sampling = {0.7f, 40, 0.95f, std::numeric_limits<uint64_t>::max()};
  r.deadline = 555;  // the scheduler's monotonic clock: not recorded
  r.ignore_eos = true;
  const int64_t deadline = int64_t(1767225600) * 1000000;
  {
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path);
    ASSERT_TRUE(j.ok()) << j.status();
    ASSERT_TRUE(j->Admit(41, r, deadline).ok());
    ASSERT_TRUE(j->Commit(41, 4, std::vector<int32_t>{9}, std::vector<int32_t>{3}).ok());
    ASSERT_TRUE(j->Commit(41, 5, std::vector<int32_t>{8}, std::vector<int32_t>{3}).ok());
    ASSERT_TRUE(j->Sync().ok());
    EXPECT_EQ(j->Stats().syncs, 1);
    EXPECT_EQ(j->Stats().records_appended, 3);
  }
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path);
  ASSERT_TRUE(j.ok()) << j.status();
  ASSERT_EQ(j->live().size(), 1u);
  const JournaledSequence& s = j->live().at(41);
  EXPECT_EQ(s.request.request_id, "chat-7f3a");
  EXPECT_EQ(s.request.prompt, r.prompt);
  EXPECT_EQ(s.request.max_tokens, 100);
  EXPECT_EQ(s.request.stop_ids, r.stop_ids);
  EXPECT_EQ(s.request.sampling.temperature, 0.7f);
  EXPECT_EQ(s.request.sampling.top_k, 40);
  EXPECT_EQ(s.request.sampling.top_p, 0.95f);
  EXPECT_EQ(s.request.sampling.seed, std::numeric_limits<uint64_t>::max());
  EXPECT_TRUE(s.request.ignore_eos);
  EXPECT_EQ(s.request.deadline, 0);
  EXPECT_EQ(s.deadline_unix_us, deadline);
  EXPECT_EQ(s.generated, (std::vector<int32_t>{9, 8}));
  EXPECT_EQ(s.committed_len, 5);
  EXPECT_EQ(s.blocks, (std::vector<int32_t>{3}));
  EXPECT_EQ(j->recovery().records, 3);
  EXPECT_EQ(j->recovery().max_seq_id, 41);
}

TEST(SequenceJournalTest, ManySequencesReplayToTheReferenceModel) {
  TempDir dir;
  const std::string path = dir.File("journal");
  Workload w(1);
  int64_t records = 0;
  // Five sessions, each reopening what the last one synced and going on.
  for (int session = 0; session < 5; ++session) {
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_EQ(j->recovery().records, records) << "session " << session;
    EXPECT_EQ(j->recovery().bytes_dropped, 0);
    ASSERT_EQ(Dump(j->live()), Dump(w.ref())) << "session " << session;
    records = 0;  // the file keeps growing (no compaction at this size)
    for (int i = 0; i < 600; ++i) {
      w.Step(*j);
      if (w.Rand(0, 7) == 0) {
        ASSERT_TRUE(j->Sync().ok());
      }
      ASSERT_EQ(Dump(j->live()), Dump(w.ref())) << "session " << session << " step " << i;
    }
    ASSERT_TRUE(j->Sync().ok());
    records = j->recovery().records + j->Stats().records_appended;
    EXPECT_EQ(FileSize(path), j->Stats().file_bytes);
    EXPECT_EQ(j->Stats().compactions, 0);
  }
  EXPECT_GT(records, 2500);
  EXPECT_FALSE(w.ref().empty());
}

TEST(SequenceJournalTest, OnlySyncedRecordsAreWritten) {
  TempDir dir;
  const std::string path = dir.File("journal");
  Workload w(2);
  {
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
    ASSERT_TRUE(j.ok());
    for (int i = 0; i < 20; ++i) w.Step(*j);
    EXPECT_GT(j->Stats().pending_bytes, 0);
    EXPECT_EQ(FileSize(path), jf::kHeaderBytes) << "appends are buffered";
  }  // closed without Sync
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok());
  EXPECT_TRUE(j->live().empty());
}

TEST(SequenceJournalTest, BadAppendsAreRefusedAndRecordNothing) {
  TempDir dir;
  const std::string path = dir.File("journal");
  JournalOptions o = Fast();
  o.limits.max_prompt_tokens = 8;
  o.limits.max_request_id_bytes = 16;
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, o);
  ASSERT_TRUE(j.ok());
  Request r;
  r.prompt = {1, 2, 3};
  r.max_tokens = 2;
  ASSERT_TRUE(j->Admit(1, r, 0).ok());
  const int64_t appended = j->Stats().records_appended;
  const std::vector<int32_t> none, one{5}, three{5, 6, 7};

  EXPECT_EQ(j->Admit(1, r, 0).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(j->Admit(0, r, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(j->Admit(2, r, -1).code(), absl::StatusCode::kInvalidArgument);
  Request bad = r;
  bad.prompt.clear();
  EXPECT_EQ(j->Admit(2, bad, 0).code(), absl::StatusCode::kInvalidArgument);
  bad = r;
  bad.prompt.assign(9, 1);
  EXPECT_THAT(j->Admit(2, bad, 0).message(), HasSubstr("at most 8"));
  bad = r;
  bad.request_id.assign(17, 'x');
  EXPECT_EQ(j->Admit(2, bad, 0).code(), absl::StatusCode::kInvalidArgument);
  bad = r;
  bad.max_tokens = 0;
  EXPECT_EQ(j->Admit(2, bad, 0).code(), absl::StatusCode::kInvalidArgument);
  bad = r;
  bad.stop_ids = {-4};
  EXPECT_EQ(j->Admit(2, bad, 0).code(), absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(j->Commit(9, 1, none, none).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(j->Commit(1, 3, three, one).code(), absl::StatusCode::kInvalidArgument)
      << "3 tokens over max_tokens 2";
  EXPECT_EQ(j->Commit(1, 5, one, one).code(), absl::StatusCode::kInvalidArgument)
      << "committed past prompt + generated";
  EXPECT_EQ(j->Commit(1, -1, none, one).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(j->Commit(1, 1, none, std::vector<int32_t>{-1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(j->Commit(1, 0, none, none).ok()) << "nothing changed";
  EXPECT_EQ(j->Finish(1, FinishReason::kNone).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(j->Finish(9, FinishReason::kEos).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(j->Stats().records_appended, appended) << "no refused append recorded anything";
  EXPECT_EQ(j->live().at(1).committed_len, 0);

  ASSERT_TRUE(j->Finish(1, FinishReason::kEos).ok());
  EXPECT_EQ(j->Finish(1, FinishReason::kEos).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(j->Admit(1, r, 0).ok()) << "a finished id may come back";
  ASSERT_TRUE(j->Sync().ok());
  j = SequenceJournal::Open(dir.File("other"), o);  // closes the first
  ASSERT_TRUE(j.ok());
  j = SequenceJournal::Open(path, o);
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(j->recovery().records, 3);
  ASSERT_EQ(j->live().size(), 1u);
}

// ---- Torn and corrupt records ----

TEST(SequenceJournalTest, ATornLastRecordIsDroppedAtEveryByteOffset) {
  TempDir dir;
  const std::string path = dir.File("journal");
  const std::string cut_path = dir.File("cut");
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok());
  Workload w(3);
  for (int i = 0; i < 40; ++i) w.Step(*j);
  ASSERT_TRUE(j->Sync().ok());
  // The last record of each kind: an admit, a commit (tokens and new
  // blocks), a finish.
  const int64_t id = w.ref().rbegin()->first + 100;
  Request r = w.MakeRequest(id);
  const std::vector<int32_t> gen{11}, blocks{900, 901, 902};
  const std::vector<std::function<absl::Status()>> last = {
      [&] { return j->Admit(id, r, 0); },
      [&] { return j->Commit(id, int32_t(r.prompt.size()), gen, blocks); },
      [&] { return j->Finish(id, FinishReason::kStop); },
  };
  for (size_t k = 0; k < last.size(); ++k) {
    const State before = j->live();
    const int64_t start = FileSize(path);
    ASSERT_TRUE(last[k]().ok());
    ASSERT_TRUE(j->Sync().ok());
    const std::string whole = ReadFile(path);
    const State after = j->live();
    for (int64_t cut = start + 1; cut < int64_t(whole.size()); ++cut) {
      WriteFile(cut_path, whole.substr(0, size_t(cut)));
      absl::StatusOr<SequenceJournal> c = SequenceJournal::Open(cut_path, Fast());
      ASSERT_TRUE(c.ok()) << c.status();
      const JournalRecovery& rec = c->recovery();
      ASSERT_EQ(Dump(c->live()), Dump(before)) << "record " << k << " cut at " << cut;
      EXPECT_EQ(rec.dropped_at, start);
      EXPECT_EQ(rec.bytes_dropped, cut - start);
      EXPECT_TRUE(rec.torn_tail) << rec.drop_reason;
      EXPECT_EQ(FileSize(cut_path), start) << "truncated";
    }
    absl::StatusOr<SequenceJournal> c = SequenceJournal::Open(path, Fast());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition) << "locked by j";
    WriteFile(cut_path, whole);
    c = SequenceJournal::Open(cut_path, Fast());
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(Dump(c->live()), Dump(after));
    EXPECT_EQ(c->recovery().bytes_dropped, 0);
  }
}

TEST(SequenceJournalTest, AppendsAfterARepairedTailReplayWhole) {
  TempDir dir;
  const std::string path = dir.File("journal");
  Workload w(4);
  {
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
    for (int i = 0; i < 50; ++i) w.Step(*j);
    ASSERT_TRUE(j->Sync().ok());
  }
  const std::string whole = ReadFile(path);
  const std::vector<int64_t> offs = RecordOffsets(whole);
  const int64_t last = offs[offs.size() - 2];
  WriteFile(path, whole.substr(0, size_t(last + 5)));
  State& ref = w.mutable_ref();
  {
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
    ASSERT_TRUE(j.ok());
    EXPECT_EQ(j->recovery().bytes_dropped, 5);
    ref = j->live();  // the reference loses the torn record too
    for (int i = 0; i < 50; ++i) w.Step(*j);
    ASSERT_TRUE(j->Sync().ok());
  }
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->recovery().bytes_dropped, 0);
  EXPECT_EQ(Dump(j->live()), Dump(w.ref()));
}

TEST(SequenceJournalTest, AZeroFilledTailIsATornTail) {
  TempDir dir;
  const Sample s = MakeSample(dir, 5, 60);
  const std::string path = dir.File("journal");
  WriteFile(path, s.bytes + std::string(4096, '\0'));
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(Dump(j->live()), Dump(s.state));
  EXPECT_EQ(j->recovery().bytes_dropped, 4096);
  EXPECT_TRUE(j->recovery().torn_tail);
  EXPECT_THAT(j->recovery().drop_reason, HasSubstr("zero-filled"));
}

TEST(SequenceJournalTest, ACorruptMiddleRecordStopsReplayThere) {
  TempDir dir;
  const std::string path = dir.File("journal");
  // The reference state after each record.
  std::vector<State> after;
  {
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
    Workload w(6);
    after.push_back({});
    for (int i = 0; i < 80; ++i) {
      ASSERT_TRUE(w.Step(*j));
      after.push_back(w.ref());
    }
    ASSERT_TRUE(j->Sync().ok());
  }
  const std::string whole = ReadFile(path);
  const std::vector<int64_t> offs = RecordOffsets(whole);
  ASSERT_EQ(offs.size(), after.size());
  for (size_t k : {size_t(1), size_t(30), size_t(60)}) {
    std::string bad = whole;
    bad[size_t(offs[k] + jf::kFrameBytes + 3)] ^= 0x40;  // in record k's payload
    WriteFile(path, bad);
    // Without repair: refused, the file untouched.
    JournalOptions strict = Fast();
    strict.repair = false;
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, strict);
    ASSERT_EQ(j.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(j.status().message(), HasSubstr(path));
    EXPECT_THAT(j.status().message(), HasSubstr(absl::StrCat("offset ", offs[k])));
    EXPECT_EQ(ReadFile(path), bad);
    // With repair: replay stops at record k, which is said, and the file is
    // cut there.
    j = SequenceJournal::Open(path, Fast());
    ASSERT_TRUE(j.ok()) << j.status();
    const JournalRecovery& rec = j->recovery();
    EXPECT_EQ(Dump(j->live()), Dump(after[k])) << "record " << k;
    EXPECT_EQ(rec.records, int64_t(k));
    EXPECT_EQ(rec.dropped_at, offs[k]);
    EXPECT_EQ(rec.bytes_dropped, int64_t(whole.size()) - offs[k]);
    EXPECT_FALSE(rec.torn_tail);
    EXPECT_THAT(rec.drop_reason, HasSubstr("checksum"));
    EXPECT_EQ(FileSize(path), offs[k]);
  }
}

TEST(SequenceJournalTest, AValidRecordThatContradictsTheStateStopsReplay) {
  TempDir dir;
  const Sample s = MakeSample(dir, 7, 40);
  // A well-framed commit for a sequence that was never admitted.
  std::string payload(1, char(jf::kCommit));
  payload.append(
      std::string("\x39\x05\0\0\0\0\0\0"
                  "\1\0\0\0"
                  "\0\0\0\0"
                  "\0\0\0\0"
                  "\0\0\0\0",
                  8 + 4 + 4 + 4 + 4));
  const std::string path = dir.File("journal");
  WriteFile(path, s.bytes + jf::Frame(payload) + jf::Frame(payload));
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_EQ(Dump(j->live()), Dump(s.state));
  EXPECT_EQ(j->recovery().dropped_at, int64_t(s.bytes.size()));
  EXPECT_FALSE(j->recovery().torn_tail);
  EXPECT_THAT(j->recovery().drop_reason, HasSubstr("sequence 1337 is not live"));
}

TEST(SequenceJournalTest, ABadHeaderIsRefusedNamingThePath) {
  TempDir dir;
  const std::string path = dir.File("journal");
  const std::string good = jf::Header();
  struct Case {
    std::string bytes;
    absl::StatusCode code;
    std::string says;
  };
  std::string v3 = good.substr(0, 8) + std::string("\3\0\0\0", 4);
  {
    const uint32_t crc = jf::Crc32c(v3);
    v3.append(reinterpret_cast<const char*>(&crc), 4);
  }
  std::string bad_crc = good;
  bad_crc[13] ^= 1;
  const Case cases[] = {
      {std::string("GGUF\3\0\0\0\0\0\0\0\0\0\0\0", 16), absl::StatusCode::kFailedPrecondition,
       "bad magic"},
      {v3, absl::StatusCode::kFailedPrecondition, "version 3; this build reads version 2"},
      {bad_crc, absl::StatusCode::kDataLoss, "checksum"},
      {"PAGED", absl::StatusCode::kFailedPrecondition, "no header"},
  };
  for (const Case& c : cases) {
    WriteFile(path, c.bytes);
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
    ASSERT_EQ(j.status().code(), c.code) << j.status();
    EXPECT_THAT(j.status().message(), HasSubstr(path));
    EXPECT_THAT(j.status().message(), HasSubstr(c.says));
    EXPECT_EQ(ReadFile(path), c.bytes) << "left alone";
  }
  // An empty file (touch) becomes an empty journal.
  WriteFile(path, "");
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok()) << j.status();
  EXPECT_TRUE(j->recovery().created);
  EXPECT_EQ(ReadFile(path), good);
}

TEST(SequenceJournalTest, OneProcessAtATimeAndALeftoverTmpIsRemoved) {
  TempDir dir;
  const std::string path = dir.File("journal");
  WriteFile(path + ".tmp", "half a compaction");
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok());
  // (It was created: the tmp file is ours to use then.)
  EXPECT_EQ(FileSize(path + ".tmp"), -1);
  absl::StatusOr<SequenceJournal> other = SequenceJournal::Open(path, Fast());
  ASSERT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), HasSubstr("in use by another process"));
  j = absl::InternalError("closed");
  WriteFile(path + ".tmp", "half a compaction");
  other = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(FileSize(path + ".tmp"), -1);
}

// ---- Compaction ----

TEST(SequenceJournalTest, CompactionKeepsExactlyTheLiveSequencesAndShrinks) {
  TempDir dir;
  const std::string path = dir.File("journal");
  Workload w(8);
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok());
  for (int i = 0; i < 2000; ++i) w.Step(*j, 6);
  ASSERT_TRUE(j->Sync().ok());
  const int64_t before = FileSize(path);
  ASSERT_TRUE(j->Compact().ok());
  const int64_t compacted = FileSize(path);
  EXPECT_LT(compacted * 4, before) << before << " -> " << compacted;
  EXPECT_EQ(compacted, j->Stats().live_image_bytes);
  EXPECT_EQ(compacted, j->Stats().file_bytes);
  EXPECT_EQ(Dump(j->live()), Dump(w.ref()));
  EXPECT_EQ(FileSize(path + ".tmp"), -1);
  {
    // Compacted while held: the new file is locked too.
    absl::StatusOr<SequenceJournal> other = SequenceJournal::Open(path, Fast());
    EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  }
  // Go on appending after the compaction; buffered records at a compaction
  // are in the fresh file without being written twice.
  for (int i = 0; i < 300; ++i) w.Step(*j, 6);
  ASSERT_TRUE(j->Compact().ok());
  for (int i = 0; i < 300; ++i) w.Step(*j, 6);
  ASSERT_TRUE(j->Sync().ok());
  j = absl::InternalError("closed");
  j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->recovery().bytes_dropped, 0);
  EXPECT_EQ(Dump(j->live()), Dump(w.ref()));
  // Compacting everything finished leaves just the header.
  std::vector<int64_t> ids;
  for (const auto& [id, s] : j->live()) ids.push_back(id);
  for (int64_t id : ids) ASSERT_TRUE(j->Finish(id, FinishReason::kShutdown).ok());
  ASSERT_TRUE(j->Compact().ok());
  EXPECT_EQ(ReadFile(path), jf::Header());
}

TEST(SequenceJournalTest, TheStoreAndTheWorkersSurviveReplayAndCompaction) {
  TempDir dir;
  const std::string path = dir.File("journal");
  {
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
    ASSERT_TRUE(j.ok());
    EXPECT_EQ(j->store_generation(), 0u);
    EXPECT_EQ(j->SetStore(0).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(j->Worker({"", 5, 1}).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(j->Worker({"cpu:0", 0, 1}).code(), absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE(j->SetStore(41).ok());
    ASSERT_TRUE(j->SetStore(42).ok());
    ASSERT_TRUE(j->Worker({"cpu:0", 100, 7}).ok());
    ASSERT_TRUE(j->Worker({"cpu:1", 101, 8}).ok());
    ASSERT_TRUE(j->Worker({"cpu:0", 102, 9}).ok());  // restarted: the last one counts
    const int64_t appended = j->Stats().records_appended;
    ASSERT_TRUE(j->Worker({"cpu:0", 102, 9}).ok());  // unchanged: nothing recorded
    ASSERT_TRUE(j->SetStore(42).ok());
    EXPECT_EQ(j->Stats().records_appended, appended);
    ASSERT_TRUE(j->Sync().ok());
  }
  auto check = [&](const SequenceJournal& j) {
    EXPECT_EQ(j.store_generation(), 42u);
    ASSERT_EQ(j.workers().size(), 2u);
    EXPECT_EQ(j.workers().at("cpu:0").pid, 102);
    EXPECT_EQ(j.workers().at("cpu:0").process_start, 9u);
    EXPECT_EQ(j.workers().at("cpu:1").pid, 101);
  };
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok());
  check(*j);
  ASSERT_TRUE(j->Compact().ok());
  EXPECT_EQ(FileSize(path), j->Stats().live_image_bytes);
  j = absl::InternalError("closed");
  j = SequenceJournal::Open(path, Fast());
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->recovery().bytes_dropped, 0);
  check(*j);
}

TEST(SequenceJournalTest, SyncCompactsOnItsOwnAndTheFileStaysBounded) {
  TempDir dir;
  const std::string path = dir.File("journal");
  JournalOptions o = Fast();
  o.compact_min_bytes = 8 << 10;
  Workload w(9);
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, o);
  ASSERT_TRUE(j.ok());
  int64_t largest = 0;
  for (int i = 0; i < 4000; ++i) {
    w.Step(*j, 8);
    if (i % 4 == 3) {
      ASSERT_TRUE(j->Sync().ok());
      const JournalStats st = j->Stats();
      largest = std::max(largest, st.file_bytes);
      EXPECT_LE(st.file_bytes, std::max<int64_t>(o.compact_min_bytes, 2 * st.live_image_bytes))
          << "step " << i;
    }
  }
  EXPECT_GT(j->Stats().compactions, 5);
  EXPECT_LE(largest, 16 << 10);
  j = absl::InternalError("closed");
  j = SequenceJournal::Open(path, o);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(Dump(j->live()), Dump(w.ref()));
}

TEST(SequenceJournalTest, AFailedCompactionLosesNothingAndIsRetried) {
  TempDir dir;
  const std::string path = dir.File("journal");
  JournalOptions o = Fast();
  o.compact_min_bytes = 4 << 10;
  Workload w(11);
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, o);
  ASSERT_TRUE(j.ok());
  // path.tmp cannot be created (a directory is in the way).
  ASSERT_EQ(::mkdir((path + ".tmp").c_str(), 0700), 0);
  for (int i = 0; i < 200; ++i) w.Step(*j, 4);
  const absl::Status c = j->Compact();
  EXPECT_FALSE(c.ok());
  EXPECT_THAT(c.message(), HasSubstr(".tmp"));
  for (int i = 0; i < 200; ++i) w.Step(*j, 4);
  ASSERT_TRUE(j->Sync().ok()) << "the records are durable; the compaction can wait";
  EXPECT_EQ(j->Stats().compaction_failures, 1);
  EXPECT_THAT(j->Stats().last_compaction_error, HasSubstr(".tmp"));
  EXPECT_EQ(j->Stats().compactions, 0);
  ASSERT_TRUE(j->Sync().ok());
  EXPECT_EQ(j->Stats().compaction_failures, 1) << "not retried at every Sync";
  ASSERT_EQ(::rmdir((path + ".tmp").c_str()), 0);
  for (int i = 0; i < 2000 && j->Stats().compactions == 0; ++i) {
    w.Step(*j, 4);
    ASSERT_TRUE(j->Sync().ok());
  }
  EXPECT_EQ(j->Stats().compactions, 1) << "retried once the file grew";
  j = absl::InternalError("closed");
  j = SequenceJournal::Open(path, o);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(Dump(j->live()), Dump(w.ref()));
}

// ---- Records beyond the limits ----

TEST(SequenceJournalTest, ARecordBeyondTheReadersLimitsIsCorrupt) {
  TempDir dir;
  const std::string path = dir.File("journal");
  {
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, Fast());
    Request r;
    r.prompt.assign(100, 3);
    r.max_tokens = 1;
    ASSERT_TRUE(j->Admit(1, r, 0).ok());
    r.prompt.assign(5000, 3);
    ASSERT_TRUE(j->Admit(2, r, 0).ok());
    ASSERT_TRUE(j->Sync().ok());
  }
  JournalOptions o = Fast();
  o.limits.max_prompt_tokens = 1000;
  absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, o);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->live().size(), 1u);
  EXPECT_EQ(j->recovery().records, 1);
  EXPECT_THAT(j->recovery().drop_reason, HasSubstr("beyond the limits"));
}

// ---- Random mutations: never a crash, never a hang ----

// Replays `bytes`; when the header is good, replaying the kept prefix again
// gives the same state with nothing dropped (a repaired file is clean).
void CheckReplay(const std::string& bytes, const JournalLimits& lim) {
  absl::StatusOr<JournalImage> a = ReplayJournal(bytes, lim);
  if (!a.ok()) return;
  const JournalRecovery& rec = a->recovery;
  ASSERT_LE(rec.valid_bytes, int64_t(bytes.size()));
  ASSERT_EQ(rec.valid_bytes + rec.bytes_dropped, int64_t(bytes.size()));
  absl::StatusOr<JournalImage> b = ReplayJournal(bytes.substr(0, size_t(rec.valid_bytes)), lim);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->recovery.bytes_dropped, 0);
  ASSERT_EQ(b->recovery.records, rec.records);
  ASSERT_EQ(Dump(b->live), Dump(a->live));
}

TEST(SequenceJournalFuzzTest, RandomMutationsNeverCrash) {
  TempDir dir;
  const Sample sample = MakeSample(dir, 10, 300);
  const std::string& base = sample.bytes;
  const std::vector<int64_t> offs = RecordOffsets(base);
  JournalLimits lim;
  lim.max_prompt_tokens = 4096;  // small limits: corrupt lengths stay cheap
  lim.max_generated_tokens = 4096;
  lim.max_blocks = 4096;
  std::mt19937_64 rng(20260101);
  auto pick = [&](int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(rng); };
  int64_t clean = 0, dropped = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = base;
    const int kind = int(pick(6));
    const int n = 1 + int(pick(4));
    for (int m = 0; m < n; ++m) {
      switch (kind) {
        case 0:  // flip bits anywhere (the header too)
          b[size_t(pick(int64_t(b.size())))] ^= char(1 << pick(8));
          break;
        case 1:  // overwrite a byte past the header
          b[size_t(jf::kHeaderBytes + pick(int64_t(b.size()) - jf::kHeaderBytes))] =
              char(pick(256));
          break;
        case 2:  // cut
          b.resize(size_t(pick(int64_t(b.size()) + 1)));
          break;
        case 3: {  // insert random bytes
          std::string junk(size_t(1 + pick(64)), '\0');
          for (char& c : junk) c = char(pick(256));
          b.insert(size_t(jf::kHeaderBytes + pick(int64_t(b.size()) - jf::kHeaderBytes + 1)), junk);
          break;
        }
        case 4: {  // duplicate or drop a whole record
          const size_t r = size_t(pick(int64_t(offs.size()) - 1));
          const std::string rec = base.substr(size_t(offs[r]), size_t(offs[r + 1] - offs[r]));
          if (pick(2) != 0)
            b += rec;
          else
            b = base.substr(0, size_t(offs[r])) + base.substr(size_t(offs[r + 1]));
          break;
        }
        case 5: {  // change a payload and fix its checksum: the decoder sees garbage
          const size_t r = size_t(pick(int64_t(offs.size()) - 1));
          std::string payload = base.substr(size_t(offs[r] + jf::kFrameBytes),
                                            size_t(offs[r + 1] - offs[r] - jf::kFrameBytes));
          const int64_t edits = 1 + pick(3);
          for (int64_t e = 0; e < edits && !payload.empty(); ++e) {
            const int64_t at = pick(int64_t(payload.size()));
            if (pick(4) == 0)
              payload.resize(size_t(at));
            else
              payload[size_t(at)] = char(pick(2) ? pick(256) : 0xff);
          }
          if (payload.empty()) payload = "\x02";
          b = base.substr(0, size_t(offs[r])) + jf::Frame(payload) +
              base.substr(size_t(offs[r + 1]));
          break;
        }
      }
    }
    CheckReplay(b, lim);
    if (::testing::Test::HasFatalFailure()) FAIL() << "iteration " << iter << " kind " << kind;
    absl::StatusOr<JournalImage> img = ReplayJournal(b, lim);
    if (img.ok()) (img->recovery.bytes_dropped == 0 ? clean : dropped) += 1;
  }
  EXPECT_GT(dropped, 1000);  // the mutations mostly hit
  // Pure noise after a good header.
  for (int iter = 0; iter < 500; ++iter) {
    std::string b = jf::Header();
    b.resize(size_t(jf::kHeaderBytes + pick(512)));
    for (size_t i = size_t(jf::kHeaderBytes); i < b.size(); ++i) b[i] = char(pick(256));
    CheckReplay(b, lim);
  }
  // And a few through the file: Open repairs, a reopen is clean and the same.
  const std::string path = dir.File("fuzzed");
  JournalOptions o = Fast();
  o.limits = lim;
  for (int iter = 0; iter < 100; ++iter) {
    std::string b = base;
    for (int m = 0; m < 3; ++m) b[size_t(pick(int64_t(b.size())))] ^= char(1 << pick(8));
    if (pick(2)) b.resize(size_t(pick(int64_t(b.size()) + 1)));
    WriteFile(path, b);
    absl::StatusOr<SequenceJournal> j = SequenceJournal::Open(path, o);
    if (!j.ok()) {
      EXPECT_THAT(j.status().message(), HasSubstr(path));
      continue;
    }
    const std::string state = Dump(j->live());
    j = absl::InternalError("closed");
    j = SequenceJournal::Open(path, o);
    ASSERT_TRUE(j.ok()) << j.status();
    EXPECT_EQ(j->recovery().bytes_dropped, 0);
    EXPECT_EQ(Dump(j->live()), state);
  }
  std::printf("mutations: %lld replayed clean, %lld with a dropped tail\n",
              static_cast<long long>(clean), static_cast<long long>(dropped));
}

}  // namespace
}  // namespace paged
