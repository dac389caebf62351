#include "tokenizer/sp_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "store/gguf_model.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int32_t kUnk = 0;
constexpr int32_t kBos = 1;
constexpr int32_t kEos = 2;
constexpr int32_t kFirstByte = 3;  // <0x00> .. <0xFF> are ids 3 .. 258

// A llama-style vocabulary: <unk>, <s>, </s>, the 256 byte tokens (when
// `bytes`), then `normal` pieces ("▁" for a space) with their scores.
Vocab MakeVocab(const std::vector<std::pair<std::string, float>>& normal, bool bytes = true) {
  Vocab v;
  auto add = [&](std::string piece, float score, int32_t type) {
    v.pieces.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<unk>", 0, Vocab::kUnknown);
  add("<s>", 0, Vocab::kControl);
  add("</s>", 0, Vocab::kControl);
  if (bytes) {
    static const char* kHex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b)
      add(std::string("<0x") + kHex[b / 16] + kHex[b % 16] + ">", 0, Vocab::kByte);
  }
  for (const auto& [piece, score] : normal) add(piece, score, Vocab::kNormal);
  v.unk_id = kUnk;
  v.bos_id = kBos;
  v.eos_id = kEos;
  return v;
}

// Pieces for "hello world"-like text; merges in score order:
// he > ll > hell > llo > hello > ▁hello, and ▁w > or > ▁wor > ld > ▁world.
std::vector<std::pair<std::string, float>> HelloPieces() {
  return {
      {"\xE2\x96\x81", -1},  // ▁
      {"h", -1},
      {"e", -1},
      {"l", -1},
      {"o", -1},
      {"w", -1},
      {"r", -1},
      {"d", -1},
      {"a", -1},
      {"b", -1},
      {"c", -1},
      {",", -1},
      {".", -1},
      {"he", 10},
      {"ll", 9},
      {"hell", 8},
      {"llo", 7},
      {"hello", 6},
      {"▁hello", 5},
      {"▁w", 4},
      {"or", 3.5},
      {"▁wor", 3},
      {"ld", 2},
      {"▁world", 1},
      {"▁▁", 0.5},
      {"é", -1},
      {"世", -1},
      {"▁a", 0.1},
      {"▁b", 0.1},
  };
}

SpTokenizer MakeTokenizer(const Vocab& v) {
  auto t = SpTokenizer::Create(v);
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

int32_t Byte(unsigned char b) { return kFirstByte + b; }

// llama2.c's O(n^2) encoder, as a reference: merge the best-scoring adjacent
// pair (strictly greater wins, so ties go left) until none is a piece. Byte
// tokens are found by their "<0xNN>" text.
std::vector<int32_t> ReferenceEncode(const Vocab& v, std::string_view text, bool add_bos) {
  std::unordered_map<std::string, int32_t> ids;
  for (size_t i = v.size(); i-- > 0;) {
    if (v.types[i] == Vocab::kNormal || v.types[i] == Vocab::kUserDefined)
      ids[v.pieces[i]] = static_cast<int32_t>(i);
  }
  std::vector<int32_t> out;
  if (add_bos && v.bos_id >= 0) out.push_back(v.bos_id);
  if (text.empty()) return out;
  std::string norm = "▁";
  for (char c : text) norm += c == ' ' ? std::string("▁") : std::string(1, c);
  // Well-formed UTF-8 characters, else single bytes; checked by decoding.
  std::vector<std::string> syms;
  for (size_t i = 0; i < norm.size();) {
    const auto c = static_cast<unsigned char>(norm[i]);
    size_t len = c < 0x80                 ? 1
                 : c >= 0xC2 && c <= 0xDF ? 2
                 : c >= 0xE0 && c <= 0xEF ? 3
                 : c >= 0xF0 && c <= 0xF4 ? 4
                                          : 1;
    if (len > 1) {
      if (i + len > norm.size()) len = 1;
      uint32_t cp = len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
      for (size_t k = 1; k < len; ++k) {
        const auto d = static_cast<unsigned char>(norm[i + k]);
        if ((d & 0xC0) != 0x80) len = 1;
        cp = cp << 6 | (d & 0x3F);
        if (len == 1) break;
      }
      const uint32_t min_cp = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
      if (len > 1 && (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) len = 1;
    }
    syms.push_back(norm.substr(i, len));
    i += len;
  }
  while (true) {
    float best = -INFINITY;
    size_t at = syms.size();
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      auto it = ids.find(syms[i] + syms[i + 1]);
      if (it != ids.end() && v.scores[it->second] > best) {
        best = v.scores[it->second];
        at = i;
      }
    }
    if (at == syms.size()) break;
    syms[at] += syms[at + 1];
    syms.erase(syms.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  for (const std::string& s : syms) {
    if (auto it = ids.find(s); it != ids.end()) {
      out.push_back(it->second);
      continue;
    }
    for (unsigned char b : s) {
      static const char* kHex = "0123456789ABCDEF";
      const std::string piece = std::string("<0x") + kHex[b / 16] + kHex[b % 16] + ">";
      auto f = std::find(v.pieces.begin(), v.pieces.end(), piece);
      out.push_back(f == v.pieces.end() ? v.unk_id : static_cast<int32_t>(f - v.pieces.begin()));
    }
  }
  return out;
}

// Random text over `alphabet` (strings, so that multi-byte characters stay whole).
std::string RandomText(std::mt19937& rng, const std::vector<std::string>& alphabet, int max_len) {
  std::string s;
  const int len = static_cast<int>(rng() % static_cast<unsigned>(max_len));
  for (int i = 0; i < len; ++i) s += alphabet[rng() % alphabet.size()];
  return s;
}

class SpTokenizerTest : public ::testing::Test {
 protected:
  SpTokenizer tok_ = MakeTokenizer(MakeVocab(HelloPieces()));
  int32_t Id(std::string_view piece) const {
    const int32_t id = tok_.PieceToId(piece);
    EXPECT_GE(id, 0) << piece;
    return id;
  }
};

TEST_F(SpTokenizerTest, MergesByScore) {
  EXPECT_THAT(tok_.Encode("hello", false), ElementsAre(Id("▁hello")));
  EXPECT_THAT(tok_.Encode("hello world", true), ElementsAre(kBos, Id("▁hello"), Id("▁world")));
  // "helo": he, then no "hel"/"lo" piece.
  EXPECT_THAT(tok_.Encode("helo", false), ElementsAre(Id("▁"), Id("he"), Id("l"), Id("o")));
  // "hello": "llo" is queued but never formed, "hell" outscores it.
  EXPECT_THAT(tok_.Encode("hellow", false), ElementsAre(Id("▁hello"), Id("w")));
  EXPECT_THAT(tok_.Encode("llo", false), ElementsAre(Id("▁"), Id("llo")));
}

TEST(SpTokenizer, TiesMergeLeftmost) {
  SpTokenizer t =
      MakeTokenizer(MakeVocab({{"▁", 0}, {"a", 0}, {"b", 0}, {"c", 0}, {"ab", 1}, {"bc", 1}}));
  EXPECT_THAT(t.Encode("abc", false),
              ElementsAre(t.PieceToId("▁"), t.PieceToId("ab"), t.PieceToId("c")));
  SpTokenizer u =
      MakeTokenizer(MakeVocab({{"▁", 0}, {"a", 0}, {"b", 0}, {"c", 0}, {"ab", 1}, {"bc", 2}}));
  EXPECT_THAT(u.Encode("abc", false),
              ElementsAre(u.PieceToId("▁"), u.PieceToId("a"), u.PieceToId("bc")));
  // Same-score pairs far apart: both merge.
  EXPECT_THAT(t.Encode("ab ab", false), ElementsAre(t.PieceToId("▁"), t.PieceToId("ab"),
                                                    t.PieceToId("▁"), t.PieceToId("ab")));
}

TEST_F(SpTokenizerTest, EmptyText) {
  EXPECT_THAT(tok_.Encode("", false), IsEmpty());
  EXPECT_THAT(tok_.Encode("", true), ElementsAre(kBos));
  EXPECT_EQ(tok_.Decode({}), "");
}

TEST_F(SpTokenizerTest, LeadingSpaceRule) {
  // A dummy space is prepended: "a" encodes as "▁a".
  EXPECT_THAT(tok_.Encode("a", false), ElementsAre(Id("▁a")));
  // Text that starts with a space keeps it: "▁▁a", where ▁▁ outscores ▁a.
  EXPECT_THAT(tok_.Encode(" a", false), ElementsAre(Id("▁▁"), Id("a")));
  EXPECT_EQ(tok_.Decode(tok_.Encode(" a", false)), " a");
  EXPECT_EQ(tok_.Decode(tok_.Encode(" a", true)), " a");
  // The first piece's space is dropped after BOS and at the start, not later.
  EXPECT_EQ(tok_.DecodePiece(kBos, Id("▁hello")), "hello");
  EXPECT_EQ(tok_.DecodePiece(SpTokenizer::kStartOfSequence, Id("▁hello")), "hello");
  EXPECT_EQ(tok_.DecodePiece(Id("he"), Id("▁hello")), " hello");
  EXPECT_EQ(tok_.DecodePiece(kEos, Id("▁hello")), " hello");
  EXPECT_EQ(tok_.Decode(std::vector<int32_t>{kBos, Id("▁hello"), Id("▁world")}), "hello world");
  EXPECT_EQ(tok_.Decode(std::vector<int32_t>{Id("he"), Id("▁hello")}), "he hello");
}

TEST_F(SpTokenizerTest, WhitespaceRuns) {
  // "▁a▁▁b": ▁▁ (0.5) merges before ▁a and ▁b (0.1), so "b" stays alone.
  EXPECT_THAT(tok_.Encode("a  b", false), ElementsAre(Id("▁a"), Id("▁▁"), Id("b")));
  // Newlines and tabs are not spaces: they stay characters, here bytes.
  EXPECT_THAT(tok_.Encode("a\n\tb", false), ElementsAre(Id("▁a"), Byte('\n'), Byte('\t'), Id("b")));
  for (std::string s : {"a  b", "   ", " ", "a   ", "\n\n", " \t a \n b  ", "hello   world  "}) {
    EXPECT_EQ(tok_.Decode(tok_.Encode(s, false)), s);
    EXPECT_EQ(tok_.Decode(tok_.Encode(s, true)), s);
  }
}

TEST_F(SpTokenizerTest, UnicodeAndByteFallback) {
  const std::string text = "héllo 世界 🙂";
  const std::vector<int32_t> ids = tok_.Encode(text, true);
  std::vector<int32_t> want = {kBos, Id("▁"), Id("h"), Id("é"), Id("llo"), Id("▁"), Id("世")};
  for (unsigned char b : std::string("界")) want.push_back(Byte(b));  // not a piece
  want.push_back(Id("▁"));
  for (unsigned char b : std::string("🙂")) want.push_back(Byte(b));
  EXPECT_THAT(ids, ElementsAreArray(want));
  EXPECT_EQ(tok_.Decode(ids), text);
}

TEST_F(SpTokenizerTest, DecodeByteTokens) {
  EXPECT_EQ(tok_.DecodePiece(kBos, Byte('A')), "A");
  EXPECT_EQ(tok_.DecodePiece(kBos, Byte(' ')), " ");  // a byte is never stripped
  EXPECT_EQ(tok_.DecodePiece(kBos, Byte(0xE4)), "\xE4");
  // 世 = E4 B8 96 split over three byte tokens reassembles.
  EXPECT_EQ(tok_.Decode(std::vector<int32_t>{Byte(0xE4), Byte(0xB8), Byte(0x96)}), "世");
  EXPECT_EQ(tok_.Decode(std::vector<int32_t>{Byte(0x00), Byte(0xFF)}), std::string("\x00\xFF", 2));
}

TEST_F(SpTokenizerTest, DecodeSpecials) {
  EXPECT_EQ(tok_.DecodePiece(kBos, kBos), "");
  EXPECT_EQ(tok_.DecodePiece(Id("a"), kEos), "");
  EXPECT_EQ(tok_.DecodePiece(Id("a"), kUnk), "\xE2\x96\x85");  // ▅, as llama.cpp prints it
  EXPECT_EQ(tok_.DecodePiece(Id("a"), -5), "");
  EXPECT_EQ(tok_.DecodePiece(Id("a"), 100000), "");
  EXPECT_TRUE(tok_.IsEos(kEos));
  EXPECT_FALSE(tok_.IsEos(kBos));
  EXPECT_FALSE(tok_.IsEos(-1));
  EXPECT_TRUE(tok_.IsBos(kBos));
  EXPECT_TRUE(tok_.IsControl(kBos));
  EXPECT_TRUE(tok_.IsControl(kEos));
  EXPECT_FALSE(tok_.IsControl(Id("a")));
  EXPECT_EQ(tok_.bos_id(), kBos);
  EXPECT_EQ(tok_.eos_id(), kEos);
  EXPECT_EQ(tok_.unk_id(), kUnk);
  EXPECT_EQ(tok_.PieceToId("<s>"), kBos);
  EXPECT_EQ(tok_.PieceToId("<0x41>"), Byte('A'));
  EXPECT_EQ(tok_.PieceToId("nope"), -1);
}

TEST_F(SpTokenizerTest, ControlTokensInTextArePlainText) {
  const std::vector<int32_t> ids = tok_.Encode("<s>a</s>", false);
  for (int32_t id : ids) {
    EXPECT_NE(id, kBos);
    EXPECT_NE(id, kEos);
  }
  EXPECT_EQ(tok_.Decode(ids), "<s>a</s>");
}

TEST_F(SpTokenizerTest, InvalidUtf8IsBytes) {
  const std::string cases[] = {
      "\xFF\xFE",
      "a\xE4\xB8",
      "\xE4\xB8"
      "a",
      "\x80",
      "\xC0\xAF",
      "\xED\xA0\x80",
      "\xF4\x90\x80\x80",
      "\xF0\x9F\x99",
      std::string("a\0b", 3),
  };
  for (const std::string& s : cases) {
    const std::vector<int32_t> ids = tok_.Encode(s, true);
    EXPECT_EQ(tok_.Decode(ids), s);
  }
  EXPECT_THAT(tok_.Encode("\xFF", false), ElementsAre(Id("▁"), Byte(0xFF)));
  // A truncated 世 is two bytes, then the 'a' still merges as a piece.
  EXPECT_THAT(tok_.Encode("\xE4\xB8"
                          "a",
                          false),
              ElementsAre(Id("▁"), Byte(0xE4), Byte(0xB8), Id("a")));
}

TEST_F(SpTokenizerTest, RoundTripManyStrings) {
  const std::vector<std::string> alphabet = {
      "a",  "b", "c", "h", "e",  "l",  "o",    "w", "r", "d",    " ",    " ",    "\n",
      "\t", ",", ".", "é", "世", "界", "🙂", "x", "Z", "\xFF", "\x80", "\xE4", "0"};
  std::mt19937 rng(42);
  for (int iter = 0; iter < 2000; ++iter) {
    const std::string s = RandomText(rng, alphabet, 40);
    const bool bos = iter % 2 == 0;
    const std::vector<int32_t> ids = tok_.Encode(s, bos);
    ASSERT_EQ(tok_.Decode(ids), s) << "iteration " << iter;
    // Streaming, one piece at a time, gives the same text.
    std::string streamed;
    int32_t prev = SpTokenizer::kStartOfSequence;
    for (int32_t id : ids) {
      streamed += tok_.DecodePiece(prev, id);
      prev = id;
    }
    ASSERT_EQ(streamed, s);
  }
  // Random bytes.
  for (int iter = 0; iter < 500; ++iter) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 256);
    ASSERT_EQ(tok_.Decode(tok_.Encode(s, true)), s);
  }
}

TEST(SpTokenizer, MatchesQuadraticReference) {
  const Vocab v = MakeVocab(HelloPieces());
  const SpTokenizer t = MakeTokenizer(v);
  const std::vector<std::string> alphabet = {
      "a", "b",  "h", "e",  "l",    "l",    "o",    "w",    "o",     "r",     "d", " ",
      " ", "\n", "é", "世", "🙂", "\xFF", "\xE4", "\xB8", "hello", "world", "ab"};
  std::mt19937 rng(7);
  for (int iter = 0; iter < 3000; ++iter) {
    const std::string s = RandomText(rng, alphabet, 30);
    ASSERT_EQ(t.Encode(s, true), ReferenceEncode(v, s, true)) << "text: " << s;
  }
}

TEST_F(SpTokenizerTest, LongText) {
  std::string s;
  while (s.size() < 64 * 1024) s += "hello world, héllo 世界 🙂\nabc  ";
  const std::vector<int32_t> ids = tok_.Encode(s, true);
  EXPECT_EQ(tok_.Decode(ids), s);
  EXPECT_LT(ids.size(), s.size());
}

TEST(SpTokenizer, NoByteTokensFallsBackToUnkPerCharacter) {
  SpTokenizer t = MakeTokenizer(MakeVocab({{"▁", 0}, {"a", 0}}, /*bytes=*/false));
  EXPECT_THAT(t.Encode("a世🙂", false),
              ElementsAre(t.PieceToId("▁"), t.PieceToId("a"), kUnk, kUnk));
  EXPECT_EQ(t.Decode(t.Encode("a世", true)), "a\xE2\x96\x85");
}

TEST(SpTokenizer, CreateValidates) {
  EXPECT_EQ(SpTokenizer::Create(Vocab{}).status().code(), absl::StatusCode::kInvalidArgument);

  Vocab v = MakeVocab({{"a", 0}});
  v.scores.pop_back();
  auto s = SpTokenizer::Create(v);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("scores"));

  v = MakeVocab({{"a", 0}});
  v.types.push_back(Vocab::kNormal);
  EXPECT_EQ(SpTokenizer::Create(v).status().code(), absl::StatusCode::kInvalidArgument);

  v = MakeVocab({{"a", 0}});
  v.bos_id = static_cast<int32_t>(v.size());
  s = SpTokenizer::Create(v);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("bos"));

  v = MakeVocab({{"a", 0}});
  v.eos_id = -2;
  EXPECT_EQ(SpTokenizer::Create(v).status().code(), absl::StatusCode::kInvalidArgument);

  v = MakeVocab({{"a", std::nanf("")}});
  EXPECT_EQ(SpTokenizer::Create(v).status().code(), absl::StatusCode::kInvalidArgument);

  // Neither unk nor a complete set of byte tokens: some text is unencodable.
  v = MakeVocab({{"a", 0}}, /*bytes=*/false);
  v.unk_id = -1;
  s = SpTokenizer::Create(v);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("<0x00>"));

  // With all byte tokens, unk is not needed; no BOS is fine too.
  v = MakeVocab({{"a", 0}});
  v.unk_id = -1;
  v.bos_id = -1;
  auto ok = SpTokenizer::Create(v);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT(ok->Encode("a", true),
              ElementsAre(Byte(0xE2), Byte(0x96), Byte(0x81), ok->PieceToId("a")));
}

TEST(SpTokenizer, CopiesAndMovesKeepWorking) {
  SpTokenizer a = MakeTokenizer(MakeVocab(HelloPieces()));
  const std::vector<int32_t> want = a.Encode("hello world", true);
  SpTokenizer b = a;
  SpTokenizer c = std::move(a);
  EXPECT_EQ(b.Encode("hello world", true), want);
  EXPECT_EQ(c.Encode("hello world", true), want);
  EXPECT_EQ(c.Decode(want), "hello world");
}

// ---- The real model's vocabulary ------------------------------------------

// The README's greedy transcript of stories260K (prompt = BOS only).
constexpr char kStoriesTranscript[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
    "One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. "
    "She said, \"I want to play with your ball, but I can't find it.\"\n"
    "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to "
    "do.\"\n"
    "Lily didn't want to help her mom, so she";

class Stories260KTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = testing::Stories260KPath();
    PAGED_REQUIRE_FIXTURE(path, "../shared/models/stories260K.gguf");
    auto src = OpenGgufModel(path);
    ASSERT_TRUE(src.ok()) << src.status();
    auto t = SpTokenizer::Create((*src)->vocab);
    ASSERT_TRUE(t.ok()) << t.status();
    tok_.emplace(*std::move(t));
  }
  std::optional<SpTokenizer> tok_;
};

TEST_F(Stories260KTokenizerTest, MatchesQuadraticReference) {
  std::vector<std::string> alphabet = {" ", " ", "\n", ",",    ".",   "\"",
                                       "'", "é", "世", "🙂", "\xFF"};
  for (const std::string_view word :
       {"Once", "upon", "a", "time", "there", "was", "little", "girl", "named", "Lily", "She",
        "loved", "play", "outside", "park", "ball", "didn't"})
    alphabet.emplace_back(word);
  for (char c = 'a'; c <= 'z'; ++c) alphabet.emplace_back(1, c);
  std::mt19937 rng(11);
  for (int iter = 0; iter < 1000; ++iter) {
    const std::string s = RandomText(rng, alphabet, 40);
    ASSERT_EQ(tok_->Encode(s, true), ReferenceEncode(tok_->vocab(), s, true)) << "text: " << s;
  }
  EXPECT_EQ(tok_->Encode(kStoriesTranscript, true),
            ReferenceEncode(tok_->vocab(), kStoriesTranscript, true));
}

TEST_F(Stories260KTokenizerTest, Specials) {
  EXPECT_EQ(tok_->vocab_size(), 512u);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_EQ(tok_->unk_id(), 0);
  EXPECT_TRUE(tok_->IsEos(2));
  EXPECT_EQ(tok_->PieceToId("<0x0A>"), 3 + 0x0A);
}

TEST_F(Stories260KTokenizerTest, DecodesTheKnownFirstTokens) {
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421};
  const std::string text = tok_->Decode(ids);
  EXPECT_EQ(text, "Once upon a time, there was a little girl");
  EXPECT_EQ(std::string_view(kStoriesTranscript).substr(0, text.size()), text);
  // Streaming gives the same text piece by piece.
  std::string streamed;
  for (size_t i = 1; i < ids.size(); ++i) streamed += tok_->DecodePiece(ids[i - 1], ids[i]);
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(tok_->DecodePiece(1, 403), "Once");
  EXPECT_EQ(tok_->DecodePiece(432, 383), " there");
}

TEST_F(Stories260KTokenizerTest, EncodesOnceUponATime) {
  EXPECT_THAT(tok_->Encode("Once upon a time", true), ElementsAre(1, 403, 407, 261, 378));
  const std::vector<int32_t> ids = tok_->Encode(kStoriesTranscript, true);
  ASSERT_GE(ids.size(), 13u);
  EXPECT_THAT(std::vector<int32_t>(ids.begin(), ids.begin() + 13),
              ElementsAre(1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421));
}

TEST_F(Stories260KTokenizerTest, TranscriptRoundTrips) {
  const std::vector<int32_t> ids = tok_->Encode(kStoriesTranscript, true);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(tok_->Decode(ids), kStoriesTranscript);
  EXPECT_EQ(tok_->Decode(tok_->Encode(kStoriesTranscript, false)), kStoriesTranscript);
  // Newlines are byte tokens in this vocabulary.
  EXPECT_NE(std::find(ids.begin(), ids.end(), 3 + 0x0A), ids.end());
  for (std::string s :
       {"héllo 世界 🙂", "  two  spaces ", "tab\there", "", "<s>not special</s>"})
    EXPECT_EQ(tok_->Decode(tok_->Encode(s, true)), s);
}

}  // namespace
}  // namespace paged
