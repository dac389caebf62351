// The safetensors parser on malformed files, and the writer round trip.
#include "store/safetensors.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/mapped_file.h"
#include "store/safetensors_writer.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// A safetensors file: the 8-byte little-endian length, `header`, `data`.
std::string Raw(std::string_view header, std::string_view data = "", uint64_t claimed_len = ~0ull) {
  const uint64_t n = claimed_len == ~0ull ? header.size() : claimed_len;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char(uint8_t(n >> (8 * i)));
  out.append(header);
  out.append(data);
  return out;
}

// A header with the one tensor 'x'; `dtype` is JSON text (quotes included).
std::string OneTensor(std::string_view dtype, std::string_view shape, std::string_view offsets) {
  return R"({"x": {"dtype": )" + std::string(dtype) + R"(, "shape": )" + std::string(shape) +
         R"(, "data_offsets": )" + std::string(offsets) + "}}";
}

class SafetensorsTest : public ::testing::Test {
 protected:
  // Writes `bytes` to model.safetensors in a fresh directory, maps and parses it.
  absl::StatusOr<SafetensorsFile> ParseBytes(const std::string& bytes) {
    path_ = dir_.File("model.safetensors");
    paged::testing::WriteFile(path_, bytes);
    auto file = MappedFile::Open(path_);
    if (!file.ok()) return file.status();
    file_ = *std::move(file);
    return ParseSafetensors(file_->data(), file_->size(), path_);
  }
  // The error of parsing `bytes`, checked to name the file.
  absl::Status ParseError(const std::string& bytes) {
    absl::StatusOr<SafetensorsFile> f = ParseBytes(bytes);
    EXPECT_FALSE(f.ok());
    if (f.ok()) return absl::OkStatus();
    EXPECT_THAT(Msg(f.status()), HasSubstr("model.safetensors: "));
    EXPECT_EQ(Msg(f.status()).find('\n'), std::string::npos);
    return f.status();
  }

  paged::testing::TempDir dir_;
  std::string path_;
  std::unique_ptr<MappedFile> file_;
};

TEST_F(SafetensorsTest, ParsesValidFile) {
  const std::string header =
      R"({"b": {"dtype": "F16", "shape": [2, 3], "data_offsets": [16, 28]},)"
      R"( "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
      R"( "e": {"dtype": "BF16", "shape": [0, 5], "data_offsets": [28, 28]},)"
      R"( "__metadata__": {"format": "pt"}})";
  auto f = ParseBytes(Raw(header, std::string(28, 'x')));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->data_start, 8 + header.size());
  ASSERT_EQ(f->tensors.size(), 3u);
  // File order, absolute offsets.
  EXPECT_EQ(f->tensors[0].name, "a");
  EXPECT_EQ(f->tensors[0].dtype, "F32");
  EXPECT_EQ(f->tensors[0].shape, std::vector<int64_t>({4}));
  EXPECT_EQ(f->tensors[0].begin, f->data_start);
  EXPECT_EQ(f->tensors[0].end, f->data_start + 16);
  EXPECT_EQ(f->tensors[1].name, "b");
  EXPECT_EQ(f->tensors[1].shape, std::vector<int64_t>({2, 3}));
  EXPECT_EQ(f->tensors[1].begin, f->data_start + 16);
  EXPECT_EQ(f->tensors[2].name, "e");
  EXPECT_EQ(f->tensors[2].begin, f->tensors[2].end);
  EXPECT_EQ(f->metadata.at("format"), "pt");
}

TEST_F(SafetensorsTest, AcceptsKnownNonFloatDtypes) {
  // The parser knows every safetensors dtype; the model reader narrows them.
  auto f = ParseBytes(Raw(R"({"i": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}})",
                          std::string(16, '\0')));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors[0].dtype, "I64");
}

TEST_F(SafetensorsTest, EmptyFile) {
  const absl::Status s = ParseError("");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Msg(s), HasSubstr("too short"));
}

TEST_F(SafetensorsTest, TruncatedFile) {
  const absl::Status s = ParseError(std::string("\x10\x00\x00", 3));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Msg(s), HasSubstr("file is 3 bytes, too short"));
}

TEST_F(SafetensorsTest, HeaderLengthPastEof) {
  const absl::Status s = ParseError(Raw("{}", "", 100));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Msg(s), HasSubstr("header length 100 runs past the end of the file (10 bytes)"));
}

TEST_F(SafetensorsTest, HeaderClaims2To60Bytes) {
  const absl::Status s = ParseError(Raw("{}", "", uint64_t{1} << 60));
  EXPECT_THAT(Msg(s), HasSubstr("header length 1152921504606846976 exceeds the limit"));
}

TEST_F(SafetensorsTest, BadJson) {
  const absl::Status s = ParseError(Raw(R"({"a": {"dtype": )"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("header is not valid JSON"));
}

TEST_F(SafetensorsTest, BadJsonMessageQuotesNoInput) {
  const absl::Status s = ParseError(Raw("{\"a\n\xff"));
  EXPECT_THAT(Msg(s), HasSubstr("header is not valid JSON"));
  EXPECT_THAT(Msg(s), ::testing::Not(HasSubstr("\xff")));
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  EXPECT_THAT(Msg(ParseError(Raw("[1, 2]"))),
              HasSubstr("header is an array, expected a JSON object"));
}

TEST_F(SafetensorsTest, EntryNotAnObject) {
  EXPECT_THAT(Msg(ParseError(Raw(R"({"x": 5})"))),
              HasSubstr("tensor 'x' entry is an integer, expected an object"));
}

TEST_F(SafetensorsTest, MissingFields) {
  EXPECT_THAT(Msg(ParseError(Raw(R"({"x": {"dtype": "F32", "shape": [1]}})"))),
              HasSubstr("tensor 'x' lacks 'data_offsets'"));
  EXPECT_THAT(Msg(ParseError(Raw(R"({"x": {"shape": [1], "data_offsets": [0, 4]}})"))),
              HasSubstr("tensor 'x' lacks 'dtype'"));
}

TEST_F(SafetensorsTest, WrongFieldTypes) {
  EXPECT_THAT(Msg(ParseError(Raw(R"({"x": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})"))),
              HasSubstr("tensor 'x' field 'dtype' is an integer, expected a string"));
  EXPECT_THAT(
      Msg(ParseError(Raw(R"({"x": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}})"))),
      HasSubstr("tensor 'x' field 'shape' is a string, expected a list of integers"));
  EXPECT_THAT(
      Msg(ParseError(Raw(R"({"x": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})"))),
      HasSubstr("tensor 'x' shape holds a number, expected integers"));
  EXPECT_THAT(
      Msg(ParseError(Raw(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, "4"]}})"))),
      HasSubstr("tensor 'x' data_offsets must be two non-negative integers"));
  EXPECT_THAT(
      Msg(ParseError(Raw(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})"))),
      HasSubstr("tensor 'x' data_offsets must be two non-negative integers"));
  EXPECT_THAT(
      Msg(ParseError(Raw(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})"))),
      HasSubstr("tensor 'x' data_offsets must be two non-negative integers"));
}

TEST_F(SafetensorsTest, UnknownDtype) {
  EXPECT_THAT(
      Msg(ParseError(Raw(R"({"x": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}})", "a"))),
      HasSubstr("tensor 'x' has unknown dtype 'Q4'"));
}

TEST_F(SafetensorsTest, NegativeDim) {
  EXPECT_THAT(
      Msg(ParseError(Raw(R"({"x": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 0]}})"))),
      HasSubstr("tensor 'x' has negative dimension -1"));
}

TEST_F(SafetensorsTest, NumelOverflow) {
  EXPECT_THAT(Msg(ParseError(Raw(OneTensor(R"("F32")", "[4294967296, 4294967296, 2]", "[0, 0]")))),
              HasSubstr("tensor 'x' shape [4294967296, 4294967296, 2] has too many elements"));
  // numel fits, numel * element size does not.
  EXPECT_THAT(Msg(ParseError(Raw(OneTensor(R"("F64")", "[4611686018427387904]", "[0, 0]")))),
              HasSubstr("has too many elements"));
  EXPECT_THAT(Msg(ParseError(Raw(OneTensor(R"("F64")", "[18446744073709551615]", "[0, 0]")))),
              HasSubstr("tensor 'x' has dimension 18446744073709551615 too large"));
}

TEST_F(SafetensorsTest, OffsetsReversed) {
  EXPECT_THAT(Msg(ParseError(Raw(R"({"x": {"dtype": "U8", "shape": [4], "data_offsets": [8, 4]}})",
                                 std::string(8, 'x')))),
              HasSubstr("tensor 'x' data_offsets [8, 4] end before they begin"));
}

TEST_F(SafetensorsTest, OffsetsPastTheData) {
  const absl::Status s = ParseError(Raw(
      R"({"x": {"dtype": "U8", "shape": [99], "data_offsets": [0, 99]}})", std::string(64, 'x')));
  EXPECT_EQ(Msg(s),
            path_ + ": tensor 'x' data_offsets [0, 99] past the end of the data (64 bytes)");
}

TEST_F(SafetensorsTest, HugeOffsetsPastTheData) {
  const std::string huge = "18446744073709551615";
  EXPECT_THAT(Msg(ParseError(Raw(OneTensor(R"("U8")", "[0]", "[" + huge + ", " + huge + "]")))),
              HasSubstr("past the end of the data (0 bytes)"));
}

TEST_F(SafetensorsTest, SizeMismatchWithShape) {
  EXPECT_THAT(
      Msg(ParseError(Raw(R"({"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})",
                         std::string(16, 'x')))),
      HasSubstr("tensor 'x' data_offsets [0, 12] hold 12 bytes but F32 [2, 2] needs 16"));
}

TEST_F(SafetensorsTest, OverlappingOffsets) {
  const std::string header = R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                             R"( "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})";
  EXPECT_THAT(Msg(ParseError(Raw(header, std::string(24, 'x')))),
              HasSubstr("tensors 'a' [0, 16] and 'b' [8, 24] overlap"));
}

TEST_F(SafetensorsTest, RangeInsideAnotherOverlaps) {
  const std::string header = R"({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]},)"
                             R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},)"
                             R"( "c": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}})";
  EXPECT_THAT(Msg(ParseError(Raw(header, std::string(32, 'x')))), HasSubstr("overlap"));
}

TEST_F(SafetensorsTest, EmptyTensorsNeverOverlap) {
  const std::string header = R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
                             R"( "z": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}})";
  EXPECT_TRUE(ParseBytes(Raw(header, std::string(16, 'x'))).ok());
}

TEST_F(SafetensorsTest, BadMetadata) {
  EXPECT_THAT(Msg(ParseError(Raw(R"({"__metadata__": {"k": 1}})"))),
              HasSubstr("__metadata__ value of 'k' is an integer, expected a string"));
  EXPECT_THAT(Msg(ParseError(Raw(R"({"__metadata__": [1]})"))),
              HasSubstr("__metadata__ is an array, expected an object"));
}

TEST_F(SafetensorsTest, EveryTruncationAndByteFlipIsHandled) {
  // Not a fuzzer, but cheap: every prefix and many one-byte corruptions of a
  // valid file parse to a value or a clear error, never a crash.
  const std::string header = R"({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},)"
                             R"( "b": {"dtype": "F16", "shape": [3], "data_offsets": [16, 22]}})";
  const std::string good = Raw(header, std::string(22, 'x'));
  for (size_t n = 0; n < good.size(); ++n) {
    const std::string prefix = good.substr(0, n);
    EXPECT_FALSE(
        ParseSafetensors(reinterpret_cast<const uint8_t*>(prefix.data()), prefix.size(), "t").ok())
        << n;
  }
  for (size_t i = 0; i < good.size(); ++i) {
    for (const char c : {'\0', '"', '9', '-', '[', '}', '\xff'}) {
      std::string bad = good;
      bad[i] = c;
      auto f = ParseSafetensors(reinterpret_cast<const uint8_t*>(bad.data()), bad.size(), "t");
      if (f.ok()) {
        for (const auto& t : f->tensors) {
          EXPECT_LE(t.begin, t.end);
          EXPECT_LE(t.end, bad.size());
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Writer

TEST_F(SafetensorsTest, WriterRoundTrip) {
  const std::string path = dir_.File("out.safetensors");
  const std::vector<SafetensorsEntry> entries = {
      {"w", "F32", {2, 3}}, {"n", "BF16", {5}}, {"empty", "F16", {0}}, {"h", "F16", {2, 2}}};
  auto w = SafetensorsWriter::Create(path, entries, {{"format", "pt"}});
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->data_bytes(), 24u + 10u + 0u + 8u);
  std::string payload;
  for (int i = 0; i < 42; ++i) payload.push_back(char(i * 7));
  // Appends may split tensors anywhere.
  ASSERT_TRUE((*w)->Append(payload.data(), 5).ok());
  ASSERT_TRUE((*w)->Append(payload.data() + 5, 0).ok());
  ASSERT_TRUE((*w)->Append(payload.data() + 5, 37).ok());
  ASSERT_TRUE((*w)->Finish().ok());

  auto file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto f = ParseSafetensors((*file)->data(), (*file)->size(), path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->data_start % 8, 0u);  // the header is padded to 8 bytes
  EXPECT_EQ((*file)->size(), f->data_start + 42);
  EXPECT_EQ(f->metadata.at("format"), "pt");
  ASSERT_EQ(f->tensors.size(), 4u);
  // File order is the order of the entries.
  EXPECT_EQ(f->tensors[0].name, "w");
  EXPECT_EQ(f->tensors[1].name, "n");
  EXPECT_EQ(f->tensors[3].name, "h");
  EXPECT_EQ(f->tensors[0].shape, std::vector<int64_t>({2, 3}));
  EXPECT_EQ(f->tensors[1].dtype, "BF16");
  EXPECT_EQ(std::memcmp((*file)->data() + f->tensors[1].begin, payload.data() + 24, 10), 0);
  EXPECT_EQ(std::memcmp((*file)->data() + f->tensors[3].begin, payload.data() + 34, 8), 0);
}

TEST_F(SafetensorsTest, WriterFinishChecksByteCount) {
  const std::string path = dir_.File("short.safetensors");
  auto w = SafetensorsWriter::Create(path, {{"w", "F32", {2}}});
  ASSERT_TRUE(w.ok());
  const char bytes[12] = {};
  ASSERT_TRUE((*w)->Append(bytes, 4).ok());
  const absl::Status s = (*w)->Finish();
  EXPECT_THAT(Msg(s), HasSubstr("short.safetensors: wrote 4 data bytes but the header declares 8"));
}

TEST_F(SafetensorsTest, WriterRejectsExtraBytes) {
  auto w = SafetensorsWriter::Create(dir_.File("long.safetensors"), {{"w", "F32", {2}}});
  ASSERT_TRUE(w.ok());
  const char bytes[12] = {};
  EXPECT_THAT(Msg((*w)->Append(bytes, 12)),
              HasSubstr("long.safetensors: appending 12 bytes after 0 exceeds the 8 data bytes"));
}

TEST_F(SafetensorsTest, WriterRejectsBadEntries) {
  EXPECT_THAT(
      Msg(SafetensorsWriter::Create(dir_.File("a.safetensors"), {{"w", "Q4", {2}}}).status()),
      HasSubstr("a.safetensors: tensor 'w' has unknown dtype 'Q4'"));
  EXPECT_THAT(
      Msg(SafetensorsWriter::Create(dir_.File("a.safetensors"), {{"w", "F32", {-2}}}).status()),
      HasSubstr("tensor 'w' has negative dimension -2"));
  EXPECT_THAT(Msg(SafetensorsWriter::Create(dir_.File("a.safetensors"),
                                            {{"w", "F32", {2}}, {"w", "F16", {2}}})
                      .status()),
              HasSubstr("tensor 'w' named twice"));
}

TEST_F(SafetensorsTest, WriterCannotCreate) {
  EXPECT_THAT(Msg(SafetensorsWriter::Create(dir_.File("no/such/dir.safetensors"), {}).status()),
              HasSubstr("dir.safetensors: cannot create"));
}

}  // namespace
}  // namespace paged
