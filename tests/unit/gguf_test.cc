// The GGUF parser on crafted files: every value type, and every way a file
// can be malformed answered by one clear error naming the file.
#include "store/gguf.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/unit/gguf_builder.h"

namespace paged {
namespace {

using ::paged::testing::GgufBuilder;
using ::testing::HasSubstr;

constexpr std::string_view kOrigin = "crafted.gguf";

absl::StatusOr<GgufFile> Parse(const std::string& bytes) {
  return ParseGguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), kOrigin);
}

// Parses `bytes`, expects failure, and returns the message (which must start
// with the origin).
std::string ParseError(const std::string& bytes) {
  absl::StatusOr<GgufFile> f = Parse(bytes);
  EXPECT_FALSE(f.ok()) << "parsed unexpectedly";
  if (f.ok()) return "";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(f.status().message());
  EXPECT_THAT(msg, ::testing::StartsWith(std::string(kOrigin) + ": "));
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  return msg;
}

// A small valid file: a few keys and two tensors.
GgufBuilder Valid() {
  GgufBuilder b;
  b.String("general.architecture", "llama").U32("llama.block_count", 5);
  b.StringArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>"});
  b.F32Tensor("a", {4, 2});
  b.F32Tensor("b", {3});
  return b;
}

TEST(GgufTest, ParsesEveryValueType) {
  GgufBuilder b;
  b.U8("u8", 200).I8("i8", -100).U16("u16", 60000).I16("i16", -30000);
  b.U32("u32", 4000000000u).I32("i32", -2000000000).F32("f32", 1.5f).Bool("bool", true);
  b.String("str", "hello").U64("u64", 1ull << 40).I64("i64", -(1ll << 40)).F64("f64", 2.25);
  b.StringArray("strs", {"a", "", "ccc"}).F32Array("floats", {1.f, 2.f});
  b.I32Array("ints", {-1, 7}).Array<uint8_t>("bools", GgufBuilder::kBool, {1, 0});
  absl::StatusOr<GgufFile> f = Parse(b.Build());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version, 3u);
  EXPECT_EQ(f->kv.size(), 16u);
  EXPECT_EQ(*f->GetInt("u8"), 200);
  EXPECT_EQ(*f->GetInt("i8"), -100);
  EXPECT_EQ(*f->GetInt("u16"), 60000);
  EXPECT_EQ(*f->GetInt("i16"), -30000);
  EXPECT_EQ(*f->GetInt("u32"), 4000000000ll);
  EXPECT_EQ(*f->GetInt("i32"), -2000000000);
  EXPECT_EQ(*f->GetInt("u64"), 1ll << 40);
  EXPECT_EQ(*f->GetInt("i64"), -(1ll << 40));
  EXPECT_EQ(*f->GetFloat("f32"), 1.5);
  EXPECT_EQ(*f->GetFloat("f64"), 2.25);
  EXPECT_EQ(*f->GetFloat("u32"), 4e9);  // integers convert
  EXPECT_TRUE(*f->GetBool("bool"));
  EXPECT_EQ(*f->GetString("str"), "hello");
  EXPECT_EQ(TypeOf(*f->Find("u16")), GgufValueType::kUint16);
  ASSERT_TRUE(f->GetStringArray("strs").ok());
  EXPECT_THAT(**f->GetStringArray("strs"), ::testing::ElementsAre("a", "", "ccc"));
  EXPECT_THAT(*f->GetFloatArray("floats"), ::testing::ElementsAre(1.f, 2.f));
  EXPECT_THAT(*f->GetIntArray("ints"), ::testing::ElementsAre(-1, 7));
  const GgufArray* bools = *f->GetArray("bools");
  EXPECT_EQ(bools->elem_type(), GgufValueType::kBool);
  EXPECT_THAT(std::get<std::vector<bool>>(bools->elems), ::testing::ElementsAre(true, false));
  EXPECT_TRUE(f->tensors.empty());
}

TEST(GgufTest, GettersNameMissingKeysAndWrongTypes) {
  absl::StatusOr<GgufFile> f = Parse(Valid().Build());
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<int64_t> missing = f->GetInt("llama.context_length");
  EXPECT_TRUE(absl::IsNotFound(missing.status()));
  EXPECT_THAT(missing.status().message(),
              HasSubstr("crafted.gguf: metadata key 'llama.context_length' is missing"));
  absl::StatusOr<int64_t> wrong = f->GetInt("general.architecture");
  EXPECT_TRUE(absl::IsInvalidArgument(wrong.status()));
  EXPECT_THAT(wrong.status().message(),
              HasSubstr("'general.architecture' is STRING, expected an integer"));
  EXPECT_THAT(f->GetFloatArray("tokenizer.ggml.tokens").status().message(),
              HasSubstr("is ARRAY of STRING, expected an ARRAY of FLOAT32"));
  EXPECT_THAT(f->GetString("llama.block_count").status().message(),
              HasSubstr("is UINT32, expected STRING"));
  EXPECT_FALSE(f->GetIntArray("tokenizer.ggml.tokens").ok());
  EXPECT_FALSE(f->GetBool("llama.block_count").ok());

  GgufBuilder big;
  big.U64("huge", ~0ull);
  absl::StatusOr<GgufFile> g = Parse(big.Build());
  ASSERT_TRUE(g.ok());
  EXPECT_THAT(g->GetInt("huge").status().message(), HasSubstr("out of range"));
}

TEST(GgufTest, TensorInfosAndRanges) {
  absl::StatusOr<GgufFile> f = Parse(Valid().Build());
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->tensors.size(), 2u);
  EXPECT_EQ(f->data_start % 32, 0u);
  const GgufTensorInfo& a = f->tensors[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_THAT(a.ne, ::testing::ElementsAre(4, 2));
  EXPECT_EQ(a.type, 0u);
  EXPECT_EQ(a.numel, 8u);
  EXPECT_EQ(a.offset, 0u);
  EXPECT_EQ(a.begin, f->data_start);
  EXPECT_EQ(a.bytes(), 32u);
  const GgufTensorInfo* b = f->FindTensor("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->offset, 32u);
  EXPECT_EQ(b->begin, f->data_start + 32);
  EXPECT_EQ(b->end, b->begin + 12);
  EXPECT_EQ(f->FindTensor("c"), nullptr);
}

TEST(GgufTest, HonoursAlignmentAndVersion2) {
  GgufBuilder b = Valid();
  b.Alignment(64).Version(2);
  absl::StatusOr<GgufFile> f = Parse(b.Build());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version, 2u);
  EXPECT_EQ(f->alignment, 64u);
  EXPECT_EQ(f->data_start % 64, 0u);
  EXPECT_EQ(f->tensors[1].offset, 64u);
}

TEST(GgufTest, RejectsBadAlignment) {
  GgufBuilder b = Valid();
  b.U32("general.alignment", 48);
  EXPECT_THAT(ParseError(b.Build()), HasSubstr("general.alignment must be a power of two"));
  b.U32("general.alignment", 0);
  EXPECT_THAT(ParseError(b.Build()), HasSubstr("general.alignment must be a power of two"));
  b.String("general.alignment", "32");
  EXPECT_THAT(ParseError(b.Build()), HasSubstr("general.alignment"));
}

TEST(GgufTest, RejectsBadMagic) {
  EXPECT_THAT(ParseError(Valid().Magic("GGML").Build()), HasSubstr("bad magic"));
  EXPECT_THAT(ParseError("not a model at all"), HasSubstr("bad magic"));
}

TEST(GgufTest, RejectsBadVersion) {
  EXPECT_THAT(ParseError(Valid().Version(1).Build()), HasSubstr("unsupported GGUF version 1"));
  EXPECT_THAT(ParseError(Valid().Version(4).Build()), HasSubstr("unsupported GGUF version 4"));
  EXPECT_THAT(ParseError(Valid().Version(0x03000000).Build()), HasSubstr("big-endian"));
}

TEST(GgufTest, RejectsEmptyAndTruncatedHeader) {
  EXPECT_THAT(ParseError(""), HasSubstr("truncated"));
  EXPECT_FALSE(ParseGguf(nullptr, 0, kOrigin).ok());
  const std::string full = Valid().Build();
  EXPECT_THAT(ParseError(full.substr(0, 3)), HasSubstr("truncated: the magic"));
  EXPECT_THAT(ParseError(full.substr(0, 6)), HasSubstr("truncated: the version"));
  EXPECT_THAT(ParseError(full.substr(0, 12)), HasSubstr("truncated: the tensor count"));
  EXPECT_THAT(ParseError(full.substr(0, 20)), HasSubstr("truncated: the metadata count"));
}

TEST(GgufTest, RejectsTruncatedKv) {
  GgufBuilder b;
  b.U64("a.rather.long.key", 7);
  const std::string full = b.Build();
  // Cut inside the 8-byte value.
  EXPECT_THAT(ParseError(full.substr(0, full.size() - 3)),
              HasSubstr("truncated: metadata key 'a.rather.long.key' needs 8 bytes"));
  // Cut inside the key.
  EXPECT_THAT(ParseError(full.substr(0, 24 + 8 + 10)),
              HasSubstr("the key of metadata entry 0 claims 17 bytes"));
}

TEST(GgufTest, EveryTruncationFailsCleanly) {
  const std::string full = Valid().Build();
  ASSERT_TRUE(Parse(full).ok());
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    ParseError(full.substr(0, n));
  }
}

TEST(GgufTest, RejectsStringLengthPastEof) {
  GgufBuilder b;
  b.RawKv("name", GgufBuilder::kString, GgufBuilder::Le<uint64_t>(1000) + "abc");
  EXPECT_THAT(ParseError(b.Build()), HasSubstr("metadata key 'name' claims 1000 bytes at offset"));
  GgufBuilder k;  // a key length past the end
  std::string bytes =
      k.KvCount(1).Build() + GgufBuilder::Le<uint64_t>(1ull << 62) + std::string(16, 'x');
  EXPECT_THAT(ParseError(bytes), HasSubstr("the key of metadata entry 0 claims"));
}

TEST(GgufTest, RejectsHugeArrayCountWithoutAllocating) {
  GgufBuilder b;
  b.RawKv("tokenizer.ggml.tokens", GgufBuilder::kArray,
          GgufBuilder::Le<uint32_t>(GgufBuilder::kU32) + GgufBuilder::Le<uint64_t>(1ull << 60));
  EXPECT_THAT(ParseError(b.Build()),
              HasSubstr("'tokenizer.ggml.tokens' claims 1152921504606846976 elements of UINT32"));
  GgufBuilder s;
  s.RawKv("strs", GgufBuilder::kArray,
          GgufBuilder::Le<uint32_t>(GgufBuilder::kString) + GgufBuilder::Le<uint64_t>(1ull << 60));
  EXPECT_THAT(ParseError(s.Build()), HasSubstr("claims 1152921504606846976 elements of STRING"));
}

TEST(GgufTest, RejectsHugeCountsInHeader) {
  EXPECT_THAT(ParseError(Valid().KvCount(1ull << 60).Build()),
              HasSubstr("metadata count 1152921504606846976 cannot fit"));
  EXPECT_THAT(ParseError(Valid().TensorCount(~0ull).Build()),
              HasSubstr("tensor count 18446744073709551615 cannot fit"));
  // A count that fits the size check but not the content: clean truncation.
  EXPECT_THAT(ParseError(Valid().KvCount(4).Build()), HasSubstr("crafted.gguf"));
}

TEST(GgufTest, RejectsUnknownValueType) {
  GgufBuilder b;
  b.RawKv("odd", 13, GgufBuilder::Le<uint32_t>(0));
  EXPECT_THAT(ParseError(b.Build()),
              HasSubstr("the type of metadata key 'odd' is unknown value type 13"));
  GgufBuilder a;
  a.RawKv("odd", GgufBuilder::kArray, GgufBuilder::Le<uint32_t>(77) + GgufBuilder::Le<uint64_t>(1));
  EXPECT_THAT(ParseError(a.Build()), HasSubstr("unknown value type 77"));
}

TEST(GgufTest, RejectsNestedArraysBadBoolsAndDuplicateKeys) {
  GgufBuilder n;
  n.RawKv("nested", GgufBuilder::kArray,
          GgufBuilder::Le<uint32_t>(GgufBuilder::kArray) + GgufBuilder::Le<uint64_t>(1));
  EXPECT_THAT(ParseError(n.Build()), HasSubstr("array of arrays"));
  GgufBuilder b;
  b.RawKv("flag", GgufBuilder::kBool, std::string(1, '\x05'));
  EXPECT_THAT(ParseError(b.Build()), HasSubstr("metadata key 'flag' is BOOL but holds 5"));
  GgufBuilder d;
  d.U32("k", 1).RawKv("k", GgufBuilder::kU32, GgufBuilder::Le<uint32_t>(2));
  EXPECT_THAT(ParseError(d.Build()), HasSubstr("metadata key 'k' appears twice"));
}

TEST(GgufTest, RejectsTensorDataPastEof) {
  const std::string full = Valid().Build();
  EXPECT_THAT(ParseError(full.substr(0, full.size() - 1)),
              HasSubstr("tensor 'b' data (12 bytes at data offset 32"));
  EXPECT_THAT(ParseError(full.substr(0, full.size() - 1)),
              HasSubstr("runs past the end of the file"));
  GgufBuilder far = Valid();
  far.Tensor("c", {1}, GgufBuilder::kTypeF32, "", 1ull << 63);
  EXPECT_THAT(ParseError(far.Build()), HasSubstr("tensor 'c' data"));
  GgufBuilder wrap = Valid();  // offset + data start overflows uint64
  wrap.Tensor("c", {1}, GgufBuilder::kTypeF32, "", ~0ull - 31);
  EXPECT_THAT(ParseError(wrap.Build()), HasSubstr("runs past the end of the file"));
}

TEST(GgufTest, RejectsOverlappingTensors) {
  GgufBuilder b;
  b.F32Tensor("x", {16});
  b.Tensor("y", {8}, GgufBuilder::kTypeF32, std::string(32, '\0'), 32);
  b.Tensor("z", {8}, GgufBuilder::kTypeF32, std::string(32, '\0'), 32);
  EXPECT_THAT(ParseError(b.Build()), HasSubstr("overlap"));
  GgufBuilder c;
  c.F32Tensor("x", {16});  // [0, 64)
  c.Tensor("y", {8}, GgufBuilder::kTypeF32, std::string(32, '\0'), 32);
  EXPECT_THAT(ParseError(c.Build()), HasSubstr("tensors 'x'"));
  EXPECT_THAT(ParseError(c.Build()), HasSubstr("'y'"));
}

TEST(GgufTest, RejectsMisalignedOffset) {
  GgufBuilder b;
  b.Tensor("x", {4}, GgufBuilder::kTypeF32, std::string(16, '\0'), 4);
  EXPECT_THAT(ParseError(b.Build()),
              HasSubstr("tensor 'x' has offset 4, not a multiple of the alignment 32"));
}

TEST(GgufTest, RejectsBadShapes) {
  GgufBuilder overflow;
  overflow.Tensor("x", {1ull << 32, 1ull << 32}, GgufBuilder::kTypeF32, "");
  EXPECT_THAT(ParseError(overflow.Build()), HasSubstr("element count overflows"));
  GgufBuilder zero;
  zero.Tensor("x", {4, 0}, GgufBuilder::kTypeF32, "");
  EXPECT_THAT(ParseError(zero.Build()), HasSubstr("tensor 'x' has a zero dimension"));
  GgufBuilder five;
  five.Tensor("x", {1, 1, 1, 1, 1}, GgufBuilder::kTypeF32, std::string(4, '\0'));
  EXPECT_THAT(ParseError(five.Build()), HasSubstr("tensor 'x' has 5 dims"));
  GgufBuilder none;
  none.Tensor("x", {}, GgufBuilder::kTypeF32, "");
  EXPECT_THAT(ParseError(none.Build()), HasSubstr("tensor 'x' has 0 dims"));
}

TEST(GgufTest, RejectsQ8_0RowsThatAreNotWholeBlocks) {
  GgufBuilder b;
  b.Tensor("q", {48, 2}, GgufBuilder::kTypeQ8_0, std::string(34 * 3, '\0'));
  EXPECT_THAT(ParseError(b.Build()),
              HasSubstr("tensor 'q' is Q8_0 with row length 48, not a multiple of its block "
                        "size 32"));
  GgufBuilder ok;
  ok.Tensor("q", {64, 2}, GgufBuilder::kTypeQ8_0, std::string(34 * 4, '\0'));
  absl::StatusOr<GgufFile> f = Parse(ok.Build());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors[0].bytes(), 34u * 4);
}

TEST(GgufTest, UnknownTensorTypesAndDuplicates) {
  GgufBuilder u;
  u.Tensor("x", {4}, 99, std::string(16, '\0'));
  EXPECT_THAT(ParseError(u.Build()), HasSubstr("tensor 'x' has unknown ggml type 99"));
  // A known but (for models) unsupported type parses, with its size.
  GgufBuilder q;
  q.Tensor("x", {256}, 12, std::string(144, '\0'));
  absl::StatusOr<GgufFile> f = Parse(q.Build());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors[0].bytes(), 144u);
  EXPECT_EQ(GgmlTypeName(12), "Q4_K");
  EXPECT_EQ(GgmlTypeName(99), "type 99");
  GgufBuilder d;
  d.F32Tensor("x", {4}).F32Tensor("x", {4});
  EXPECT_THAT(ParseError(d.Build()), HasSubstr("tensor 'x' appears twice"));
}

}  // namespace
}  // namespace paged
