// HF tokenizer.json tokenizers against the real HF `tokenizers` package: the
// fixtures in tests/golden/tokenizers/ were built and their expected ids
// computed by scripts/make_tokenizer_fixtures.py (docs/tokenizers.md). Then
// malformed files, thread safety, long prompts, and a checkpoint's tokenizer
// going through the store into a segment and out of LoadSegmentTokenizer.
#include "tokenizer/hf_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/segment.h"
#include "common/tokenizer_bundle.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "store/gguf.h"
#include "store/gguf_model.h"
#include "store/gguf_tokenizer.h"
#include "store/hf_checkpoint.h"
#include "store/hf_tokenizer_files.h"
#include "store/safetensors_writer.h"
#include "store/store_service.h"
#include "tests/unit/gguf_builder.h"
#include "tests/unit/test_util.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/hf_regex.h"
#include "tokenizer/segment_tokenizer.h"
#include "tokenizer/sp_tokenizer.h"

namespace paged {
namespace {

using nlohmann::json;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::string FixtureDir(const std::string& name) {
  return testing::SourceDir() + "/tests/golden/tokenizers/" + name;
}

std::vector<int32_t> Ids(const json& j) { return j.get<std::vector<int32_t>>(); }

// The fixture's tokenizer as the store reads a checkpoint directory.
std::unique_ptr<const Tokenizer> LoadFixture(const std::string& name) {
  absl::StatusOr<HfTokenizerFiles> files = ReadHfTokenizerFiles(FixtureDir(name));
  EXPECT_TRUE(files.ok()) << files.status();
  if (!files.ok()) return nullptr;
  EXPECT_EQ(files->bundle.kind, TokenizerKind::kHfJson);
  absl::StatusOr<std::unique_ptr<const Tokenizer>> t = CreateTokenizer(files->bundle, name);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

json LoadCases(const std::string& name) {
  return json::parse(paged::testing::ReadFile(FixtureDir(name) + "/cases.json"));
}

std::string Show(const std::string& text) {
  return text.size() > 80 ? text.substr(0, 80) + "..." : text;
}

// ---------------------------------------------------------------------------
// The fixtures: every case as HF gives it.

class HfFixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tok_ = LoadFixture(GetParam());
    ASSERT_NE(tok_, nullptr);
    cases_ = LoadCases(GetParam());
    ASSERT_GE(cases_["cases"].size(), 40u);
  }
  std::unique_ptr<const Tokenizer> tok_;
  json cases_;
};

TEST_P(HfFixtureTest, EncodesAsHf) {
  EXPECT_EQ(tok_->vocab_size(), cases_["vocab_size"].get<size_t>());
  for (const json& c : cases_["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(tok_->Encode(text, /*add_bos=*/true, /*parse_special=*/true), Ids(c["ids"]))
        << "text: " << Show(text);
    EXPECT_EQ(tok_->Encode(text, /*add_bos=*/false, /*parse_special=*/true),
              Ids(c["ids_no_special"]))
        << "text: " << Show(text);
  }
}

// HF's encode_special_tokens: special tokens written in the text are plain
// text, the other added tokens still match.
TEST_P(HfFixtureTest, SpecialTokensAsPlainText) {
  for (const json& c : cases_["cases"]) {
    ASSERT_TRUE(c.contains("ids_split_special"));
    const std::string text = c["text"];
    EXPECT_EQ(tok_->Encode(text, /*add_bos=*/true, /*parse_special=*/false),
              Ids(c["ids_split_special"]))
        << "text: " << Show(text);
  }
}

TEST_P(HfFixtureTest, DecodesAsHf) {
  for (const json& c : cases_["cases"]) {
    EXPECT_EQ(tok_->Decode(Ids(c["ids"])), c["decoded"].get<std::string>())
        << "text: " << Show(c["text"]);
  }
}

TEST_P(HfFixtureTest, PiecesAreTheVocabulary) {
  for (const json& c : cases_["cases"]) {
    if (!c.contains("tokens")) continue;
    const std::vector<int32_t> ids = Ids(c["ids"]);
    const auto tokens = c["tokens"].get<std::vector<std::string>>();
    ASSERT_EQ(ids.size(), tokens.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      // HF reports an added token's matched text (lstrip / rstrip included).
      if (tok_->IsControl(ids[i])) continue;
      EXPECT_EQ(tok_->IdToPiece(ids[i]), tokens[i]) << "text: " << Show(c["text"]);
      EXPECT_EQ(tok_->PieceToId(tokens[i]), ids[i]);
    }
  }
  EXPECT_EQ(tok_->IdToPiece(-1), "");
  EXPECT_EQ(tok_->IdToPiece(int32_t(tok_->vocab_size())), "");
  EXPECT_EQ(tok_->PieceToId("no such piece at all"), -1);
}

// The pieces a stream shows add up to the decoded text (TextStream repairs
// invalid UTF-8 the way HF's lossy decode does). For SentencePiece-style
// decoders, text with special tokens past the leading BOS is the exception:
// HF strips the leading space of the whole text, a stream strips it after
// any BOS or at the start (docs/tokenizers.md).
TEST_P(HfFixtureTest, StreamedPiecesAddUpToDecode) {
  const bool byte_level = GetParam() == "llama3_bpe" || GetParam() == "qwen2_bpe";
  int checked = 0;
  for (const json& c : cases_["cases"]) {
    const std::vector<int32_t> ids = Ids(c["ids"]);
    bool special_inside = false;
    for (size_t i = 1; i < ids.size(); ++i)
      special_inside = special_inside || tok_->IsControl(ids[i]);
    if (!byte_level && special_inside) continue;
    ++checked;
    std::string streamed;
    int32_t prev = Tokenizer::kStartOfSequence;
    for (int32_t id : ids) {
      streamed += tok_->DecodePiece(prev, id);
      prev = id;
    }
    EXPECT_EQ(ToValidUtf8(streamed), c["decoded"].get<std::string>())
        << "text: " << Show(c["text"]);
  }
  EXPECT_GE(checked, 35);
}

TEST_P(HfFixtureTest, ConcurrentEncodesAgree) {
  std::vector<std::vector<int32_t>> want;
  for (const json& c : cases_["cases"]) want.push_back(Ids(c["ids"]));
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        size_t i = 0;
        for (const json& c : cases_["cases"]) {
          if (tok_->Encode(c["text"].get<std::string>(), true, true) != want[i++]) ++bad[size_t(t)];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(bad, ElementsAre(0, 0, 0, 0));
}

// A 1 MiB prompt: encodes (no quadratic step, no regex stack limit) and
// decodes back to itself.
TEST_P(HfFixtureTest, MegabytePrompt) {
  // The texts HF decodes back to themselves (no specials, no NFC changes).
  std::vector<std::string> texts;
  for (const json& c : cases_["cases"]) {
    const std::string t = c["text"];
    if (!t.empty() && c["decoded"] == t && t.find('<') == std::string::npos) texts.push_back(t);
  }
  ASSERT_GE(texts.size(), 25u);
  std::string text;
  for (size_t i = 0; text.size() < (1u << 20); ++i) text += texts[i % texts.size()] + " ";
  text += std::string(100000, ' ') + std::string(100000, 'a') + "\n";
  const std::vector<int32_t> ids = tok_->Encode(text, false, false);
  ASSERT_FALSE(ids.empty());
  if (GetParam() != "metaspace_spbpe") {  // its decoder drops the first token's spaces
    EXPECT_TRUE(tok_->Decode(ids) == ToValidUtf8(text)) << "1 MiB round trip differs";
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfFixtureTest,
                         ::testing::Values("llama3_bpe", "qwen2_bpe", "llama2_spbpe",
                                           "metaspace_spbpe"));

// ---------------------------------------------------------------------------
// What each family's special tokens and options do.

TEST(HfTokenizerTest, Llama3SpecialsAndEos) {
  auto tok = LoadFixture("llama3_bpe");
  ASSERT_NE(tok, nullptr);
  const int32_t bot = tok->PieceToId("<|begin_of_text|>");
  const int32_t eot = tok->PieceToId("<|eot_id|>");
  const int32_t eos = tok->PieceToId("<|end_of_text|>");
  ASSERT_GE(bot, 0);
  EXPECT_EQ(tok->bos_id(), bot);
  EXPECT_EQ(tok->eos_id(), eot);  // tokenizer_config's eos_token
  EXPECT_TRUE(tok->IsEos(eot));
  EXPECT_TRUE(tok->IsEos(eos));  // generation_config's eos_token_id list
  EXPECT_FALSE(tok->IsEos(bot));
  EXPECT_TRUE(tok->IsControl(eot));
  EXPECT_FALSE(tok->IsControl(tok->PieceToId("Hello")));
  EXPECT_EQ(tok->DecodePiece(Tokenizer::kStartOfSequence, eot), "");
  EXPECT_THAT(tok->Encode("<|eot_id|>", false, true), ElementsAre(eot));
  EXPECT_THAT(tok->Encode("<|eot_id|>", false, false), Not(Contains(eot)));
  EXPECT_THAT(tok->Encode("", true, true), ElementsAre(bot));
  EXPECT_TRUE(tok->Encode("", false, true).empty());
  // ignore_merges: a whole pre-token in the vocab is one token.
  EXPECT_THAT(tok->Encode(" quokka", false), ElementsAre(tok->PieceToId("Ġquokka")));
}

TEST(HfTokenizerTest, Qwen2AddedTokens) {
  auto tok = LoadFixture("qwen2_bpe");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->eos_id(), tok->PieceToId("<|im_end|>"));
  EXPECT_TRUE(tok->IsEos(tok->PieceToId("<|endoftext|>")));
  // No BOS to add; non-special added tokens match without parse_special.
  const int32_t think = tok->PieceToId("<think>");
  EXPECT_THAT(tok->Encode("<think>", true, false), ElementsAre(think));
  EXPECT_FALSE(tok->IsControl(think));
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{think}), "<think>");
  // Without ignore_merges, a whole word in the vocab is still merged up.
  EXPECT_THAT(tok->Encode(" quokka", false), Not(ElementsAre(tok->PieceToId("Ġquokka"))));
}

TEST(HfTokenizerTest, ByteLevelStreamsRawBytes) {
  auto tok = LoadFixture("llama3_bpe");
  ASSERT_NE(tok, nullptr);
  // "日" is three bytes; the fixture's small vocab splits it.
  const std::vector<int32_t> ids = tok->Encode("日", false);
  ASSERT_GT(ids.size(), 1u);
  std::string streamed;
  int32_t prev = Tokenizer::kStartOfSequence;
  for (int32_t id : ids) {
    const std::string piece = tok->DecodePiece(prev, id);
    EXPECT_LT(piece.size(), 3u);  // part of the character
    streamed += piece;
    prev = id;
  }
  EXPECT_EQ(streamed, "日");
}

TEST(HfTokenizerTest, SentencePieceStyleLeadingSpace) {
  auto tok = LoadFixture("llama2_spbpe");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  const std::vector<int32_t> ids = tok->Encode("The dog", true);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[0], 1);
  // "▁The" after BOS loses its space; the same piece mid-stream keeps it.
  EXPECT_EQ(tok->DecodePiece(1, ids[1]), "The");
  EXPECT_EQ(tok->DecodePiece(ids[2], ids[1]), " The");
  EXPECT_EQ(tok->DecodePiece(Tokenizer::kStartOfSequence, ids[1]), "The");
  // A byte token streams its byte.
  EXPECT_EQ(tok->DecodePiece(ids[1], tok->PieceToId("<0x41>")), "A");
}

TEST(HfTokenizerTest, AddBosTokenOverridesTheTemplate) {
  const std::string text = paged::testing::ReadFile(FixtureDir("llama2_spbpe") + "/tokenizer.json");
  HfTokenizerOptions o;
  o.add_bos_token = false;
  auto t = HfTokenizer::Create(text, o, "tokenizer.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT((*t)->Encode("", true), ElementsAre());
  EXPECT_EQ((*t)->bos_id(), 1);  // still known: from the template
  o.add_bos_token = true;
  t = HfTokenizer::Create(text, o, "tokenizer.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT((*t)->Encode("", true), ElementsAre(1));
}

TEST(HfTokenizerTest, OptionsRoundTripThroughJson) {
  HfTokenizerOptions o;
  o.bos_token = "<s>";
  o.eos_token = "</s>";
  o.add_bos_token = false;
  o.eos_token_ids = {2, 7};
  auto back = HfTokenizerOptions::FromJson(o.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->bos_token, "<s>");
  EXPECT_EQ(back->eos_token, "</s>");
  EXPECT_EQ(back->add_bos_token, std::optional<bool>(false));
  EXPECT_THAT(back->eos_token_ids, ElementsAre(2, 7));
  EXPECT_FALSE(HfTokenizerOptions::FromJson("[1]").ok());
  EXPECT_FALSE(HfTokenizerOptions::FromJson("{\"eos_token_ids\": [-1]}").ok());
}

// ---------------------------------------------------------------------------
// Hand-made tokenizers: the pieces HF's fixtures do not reach.

// vocab {a, b, c, ab, abc} with merges "a b", "ab c" (ids 0..4).
json TinyTokenizer() {
  return json{
      {"model",
       {{"type", "BPE"},
        {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}, {"1", 5}, {"2", 6}}},
        {"merges", json::array({json::array({"a", "b"}), "ab c"})}}},
      {"added_tokens", json::array()}};
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> Make(const json& j) {
  return HfTokenizer::Create(j.dump(), {}, "/ckpt/tokenizer.json");
}

TEST(HfTokenizerTest, MergesByRank) {
  auto t = Make(TinyTokenizer());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT((*t)->Encode("abcab", false), ElementsAre(4, 3));
  EXPECT_THAT((*t)->Encode("cba", false), ElementsAre(2, 1, 0));
  // No decoder: HF joins the tokens with spaces.
  EXPECT_EQ((*t)->Decode(std::vector<int32_t>{4, 3}), "abc ab");
  // A character outside the vocab, with no unk and no byte fallback: dropped
  // (and its neighbours then merge, as in HF).
  EXPECT_THAT((*t)->Encode("axb", false), ElementsAre(3));
  EXPECT_THAT((*t)->Encode("xa", false), ElementsAre(0));
}

TEST(HfTokenizerTest, DigitsAndMetaspaceAlways) {
  json j = TinyTokenizer();
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({json{{"type", "Digits"}, {"individual_digits", true}},
                                     json{{"type", "Metaspace"},
                                          {"replacement", "c"},
                                          {"prepend_scheme", "always"},
                                          {"split", true}}})}};
  auto t = Make(j);
  ASSERT_TRUE(t.ok()) << t.status();
  // "ab12" -> Digits: "ab", "1", "2"; Metaspace "always" prepends "c" to
  // each: "cab", "c1", "c2".
  EXPECT_THAT((*t)->Encode("ab12", false), ElementsAre(2, 3, 2, 5, 2, 6));
}

TEST(HfTokenizerTest, SplitBehaviors) {
  const std::string text = "a,,b,c";
  const std::vector<std::pair<size_t, size_t>> commas = {{1, 2}, {2, 3}, {4, 5}};
  auto split = [&](SplitBehavior b, bool invert = false) {
    std::vector<std::string> out;
    for (std::string_view p : SplitAtMatches(text, commas, invert, b)) out.emplace_back(p);
    return out;
  };
  EXPECT_THAT(split(SplitBehavior::kRemoved), ElementsAre("a", "b", "c"));
  EXPECT_THAT(split(SplitBehavior::kIsolated), ElementsAre("a", ",", ",", "b", ",", "c"));
  EXPECT_THAT(split(SplitBehavior::kMergedWithPrevious), ElementsAre("a,", ",", "b,", "c"));
  EXPECT_THAT(split(SplitBehavior::kMergedWithNext), ElementsAre("a", ",", ",b", ",c"));
  EXPECT_THAT(split(SplitBehavior::kContiguous), ElementsAre("a", ",,", "b", ",", "c"));
  EXPECT_THAT(split(SplitBehavior::kRemoved, /*invert=*/true), ElementsAre(",", ",", ","));
}

TEST(HfTokenizerTest, ByteLevelAlphabet) {
  EXPECT_EQ(ByteLevelChar(' '), "\xC4\xA0");   // Ġ
  EXPECT_EQ(ByteLevelChar('\n'), "\xC4\x8A");  // Ċ
  EXPECT_EQ(ByteLevelChar('A'), "A");
  std::string all, back;
  for (int b = 0; b < 256; ++b) all.push_back(char(b));
  std::string mapped;
  AppendByteLevel(all, &mapped);
  ASSERT_TRUE(AppendByteLevelBytes(mapped, &back));
  EXPECT_EQ(back, all);
  EXPECT_FALSE(AppendByteLevelBytes("日", &back));
}

TEST(HfTokenizerTest, InvalidUtf8InputIsReplaced) {
  auto tok = LoadFixture("llama3_bpe");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("a\xFF"
                        "b",
                        false),
            tok->Encode("a\xEF\xBF\xBD"
                        "b",
                        false));
  EXPECT_EQ(ToValidUtf8("\xE6\x97"), "\xEF\xBF\xBD");  // a truncated character: one U+FFFD
  EXPECT_EQ(ToValidUtf8("\xC0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

// ---------------------------------------------------------------------------
// Malformed files: one INVALID_ARGUMENT naming the file and the problem.

void ExpectError(const absl::StatusOr<std::unique_ptr<HfTokenizer>>& t, std::string_view what) {
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("/ckpt/tokenizer.json: "));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(std::string(what)));
  EXPECT_EQ(std::string(t.status().message()).find('\n'), std::string::npos);
}

TEST(HfTokenizerErrorTest, NotJson) {
  ExpectError(HfTokenizer::Create("{\"model\": \n[", {}, "/ckpt/tokenizer.json"), "not valid JSON");
  ExpectError(HfTokenizer::Create("[1, 2]", {}, "/ckpt/tokenizer.json"), "not a JSON object");
  ExpectError(HfTokenizer::Create("", {}, "/ckpt/tokenizer.json"), "not valid JSON");
}

TEST(HfTokenizerErrorTest, Model) {
  json j = TinyTokenizer();
  j.erase("model");
  ExpectError(Make(j), "no 'model'");
  for (const char* type : {"WordPiece", "Unigram", "WordLevel"}) {
    j = TinyTokenizer();
    j["model"]["type"] = type;
    ExpectError(Make(j), absl::StrCat("unsupported model type \"", type, "\""));
  }
  j = TinyTokenizer();
  j["model"]["merges"].push_back("a zz");
  ExpectError(Make(j), "merge 3 names 'zz', not in the vocab");
  j = TinyTokenizer();
  j["model"]["merges"].push_back("b c");
  ExpectError(Make(j), "merge 3 makes 'bc', not in the vocab");
  j = TinyTokenizer();
  j["model"]["merges"].push_back("a b c");
  ExpectError(Make(j), "is not two tokens");
  j = TinyTokenizer();
  j["model"]["merges"].push_back(7);
  ExpectError(Make(j), "merge 3 is 7");
  j = TinyTokenizer();
  j["model"]["vocab"]["x"] = -3;
  ExpectError(Make(j), "token 'x' has id -3");
  j = TinyTokenizer();
  j["model"]["vocab"] = json::array();
  ExpectError(Make(j), "'vocab' is missing or not an object");
  j = TinyTokenizer();
  j["model"]["dropout"] = 0.1;
  ExpectError(Make(j), "dropout is not supported");
  j = TinyTokenizer();
  j["model"]["continuing_subword_prefix"] = "##";
  ExpectError(Make(j), "'continuing_subword_prefix' is not supported");
}

TEST(HfTokenizerErrorTest, Components) {
  json j = TinyTokenizer();
  j["normalizer"] = {{"type", "BertNormalizer"}};
  ExpectError(Make(j), "unsupported normalizer 'BertNormalizer'");
  j = TinyTokenizer();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "Lowercase"}}})}};
  ExpectError(Make(j), "unsupported normalizer 'Lowercase'");
  j = TinyTokenizer();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  ExpectError(Make(j), "unsupported pre_tokenizer 'Whitespace'");
  j = TinyTokenizer();
  j["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"Regex", "(unclosed"}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  ExpectError(Make(j), "bad regex '(unclosed'");
  j["pre_tokenizer"]["pattern"] = {{"Regex", "a"}};
  j["pre_tokenizer"]["behavior"] = "Sideways";
  ExpectError(Make(j), "unknown split behavior 'Sideways'");
  j = TinyTokenizer();
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}};
  ExpectError(Make(j), "unsupported decoder 'WordPiece'");
  j = TinyTokenizer();
  j["post_processor"] = {{"type", "BertProcessing"}};
  ExpectError(Make(j), "unsupported post_processor 'BertProcessing'");
  j = TinyTokenizer();
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"special_tokens", json::object()}};
  ExpectError(Make(j), "special token '<s>' is not in 'special_tokens'");
  j = TinyTokenizer();
  j["added_tokens"] = json::array({{{"id", 9}, {"content", "<x>"}, {"special", true}},
                                   {{"id", 9}, {"content", "<y>"}, {"special", true}}});
  ExpectError(Make(j), "added token '<y>': id 9 is also '<x>'");
}

// ---------------------------------------------------------------------------
// Checkpoints: tokenizer files -> store -> segment -> LoadSegmentTokenizer.

// A llama checkpoint (hidden 8, 2 layers) with `vocab` rows.
void WriteCheckpoint(const std::string& dir, int64_t vocab) {
  json config = {{"model_type", "llama"},    {"hidden_size", 8},
                 {"intermediate_size", 16},  {"num_hidden_layers", 2},
                 {"num_attention_heads", 2}, {"num_key_value_heads", 1},
                 {"vocab_size", vocab},      {"max_position_embeddings", 64},
                 {"rms_norm_eps", 1e-5},     {"tie_word_embeddings", true},
                 {"eos_token_id", 0}};
  paged::testing::WriteFile(dir + "/config.json", config.dump());
  std::vector<SafetensorsEntry> e = {{"model.embed_tokens.weight", "F32", {vocab, 8}},
                                     {"model.norm.weight", "F32", {8}}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    e.push_back({p + "input_layernorm.weight", "F32", {8}});
    e.push_back({p + "self_attn.q_proj.weight", "F32", {8, 8}});
    e.push_back({p + "self_attn.k_proj.weight", "F32", {4, 8}});
    e.push_back({p + "self_attn.v_proj.weight", "F32", {4, 8}});
    e.push_back({p + "self_attn.o_proj.weight", "F32", {8, 8}});
    e.push_back({p + "post_attention_layernorm.weight", "F32", {8}});
    e.push_back({p + "mlp.gate_proj.weight", "F32", {16, 8}});
    e.push_back({p + "mlp.up_proj.weight", "F32", {16, 8}});
    e.push_back({p + "mlp.down_proj.weight", "F32", {8, 16}});
  }
  auto w = SafetensorsWriter::Create(dir + "/model.safetensors", e);
  ASSERT_TRUE(w.ok()) << w.status();
  const std::string data((*w)->data_bytes(), '\0');
  ASSERT_TRUE((*w)->Append(data.data(), data.size()).ok());
  ASSERT_TRUE((*w)->Finish().ok());
}

void CopyFixture(const std::string& name, const std::string& dir) {
  for (const auto& f : std::filesystem::directory_iterator(FixtureDir(name))) {
    const std::string file = f.path().filename().string();
    if (file == "cases.json" || file == "chat_cases.json") continue;
    std::filesystem::copy_file(f.path(), dir + "/" + file);
  }
}

TEST(HfTokenizerStoreTest, CheckpointTokenizerReachesTheSegment) {
  paged::testing::TempDir dir;
  WriteCheckpoint(dir.path(), 1110);
  CopyFixture("llama3_bpe", dir.path());
  StoreOptions o;
  o.model_path = dir.path();
  o.segment = paged::testing::UniqueSegmentName("hftok");
  o.layout.weight_format = "f32";
  o.layout.kv_gib = 0.001;
  o.remove_on_exit = true;
  o.quiet = true;
  o.threads = 1;
  auto store = Store::Start(o);
  ASSERT_TRUE(store.ok()) << store.status();
  auto seg = SegmentMapping::Open(o.segment, SegmentMapping::Access::kReadOnly);
  ASSERT_TRUE(seg.ok()) << seg.status();
  const SegmentHeader& h = (*seg)->header();
  EXPECT_EQ(h.tokenizer_kind, uint32_t(TokenizerKind::kHfJson));
  EXPECT_EQ(h.layout_version, kLayoutVersion);

  auto loaded = LoadSegmentTokenizer(**seg);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_NE(loaded->tokenizer, nullptr);
  const json config =
      json::parse(paged::testing::ReadFile(FixtureDir("llama3_bpe") + "/tokenizer_config.json"));
  EXPECT_EQ(loaded->chat_template, config["chat_template"].get<std::string>());
  const json cases = LoadCases("llama3_bpe");
  for (const json& c : cases["cases"])
    EXPECT_EQ(loaded->tokenizer->Encode(c["text"].get<std::string>(), true, true), Ids(c["ids"]));

  // The model stops on config.json's eos and the tokenizer's (eos_token,
  // generation_config's list).
  std::vector<int32_t> eos(h.model.eos_ids, h.model.eos_ids + h.model.n_eos);
  EXPECT_THAT(eos, ElementsAre(0, loaded->tokenizer->PieceToId("<|eot_id|>"),
                               loaded->tokenizer->PieceToId("<|end_of_text|>")));
  // Vocab and SentencePiece readers see no SentencePiece vocabulary.
  EXPECT_EQ((*seg)->ReadVocab().status().code(), absl::StatusCode::kNotFound);
}

TEST(HfTokenizerStoreTest, CheckpointFiles) {
  paged::testing::TempDir dir;
  WriteCheckpoint(dir.path(), 956);
  // No tokenizer: ids only, and no error.
  auto src = OpenHfCheckpoint(dir.path());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(src->get()->tokenizer.kind, TokenizerKind::kNone);
  const uint64_t bare = src->get()->fingerprint;

  CopyFixture("metaspace_spbpe", dir.path());
  src = OpenHfCheckpoint(dir.path());
  ASSERT_TRUE(src.ok()) << src.status();
  const TokenizerBundle& b = src->get()->tokenizer;
  EXPECT_EQ(b.kind, TokenizerKind::kHfJson);
  EXPECT_NE(src->get()->fingerprint, bare);  // the tokenizer files are part of its identity
  // chat_template as a list: the "default" entry.
  EXPECT_THAT(b.chat_template, HasSubstr("[INST]"));
  EXPECT_THAT(b.chat_template, Not(HasSubstr("tools")));
  auto options = HfTokenizerOptions::FromJson(b.options);
  ASSERT_TRUE(options.ok());
  EXPECT_EQ(options->bos_token, "<s>");  // from an AddedToken object

  // chat_template.jinja when tokenizer_config.json has none.
  json config = json::parse(paged::testing::ReadFile(dir.File("tokenizer_config.json")));
  config.erase("chat_template");
  paged::testing::WriteFile(dir.File("tokenizer_config.json"), config.dump());
  paged::testing::WriteFile(dir.File("chat_template.jinja"), "{{ messages }}");
  src = OpenHfCheckpoint(dir.path());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(src->get()->tokenizer.chat_template, "{{ messages }}");

  // A malformed file: one line naming it.
  paged::testing::WriteFile(dir.File("generation_config.json"), "{\"eos_token_id\": \"x\"}");
  auto bad = OpenHfCheckpoint(dir.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("generation_config.json: 'eos_token_id'"));
  std::filesystem::remove(dir.File("generation_config.json"));
  paged::testing::WriteFile(dir.File("tokenizer_config.json"), "{\"bos_token\": 3}");
  bad = OpenHfCheckpoint(dir.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("tokenizer_config.json: 'bos_token' is an integer"));
  paged::testing::WriteFile(dir.File("tokenizer_config.json"), "{}");
  paged::testing::WriteFile(dir.File("tokenizer.json"), "{\"model\": {\"type\": \"Unigram\"}}");
  bad = OpenHfCheckpoint(dir.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("tokenizer.json: unsupported model type \"Unigram\""));
}

TEST(HfTokenizerStoreTest, GgufChatTemplate) {
  paged::testing::GgufBuilder b;
  b.String("general.architecture", "llama");
  b.U32("llama.context_length", 64).U32("llama.embedding_length", 8);
  b.U32("llama.block_count", 1).U32("llama.feed_forward_length", 16);
  b.U32("llama.attention.head_count", 2).U32("llama.attention.head_count_kv", 2);
  b.F32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  b.String("tokenizer.ggml.model", "llama");
  b.StringArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "h", "i",
                                          "\xE2\x96\x81h", "\xE2\x96\x81hi"});
  b.F32Array("tokenizer.ggml.scores", {0, 0, 0, -1, -2, -3, -4, -5});
  b.I32Array("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1, 1, 1});
  b.String("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}");
  b.F32Tensor("token_embd.weight", {8, 8});
  b.F32Tensor("output_norm.weight", {8});
  for (const char* t : {"attn_norm.weight", "ffn_norm.weight"})
    b.F32Tensor(std::string("blk.0.") + t, {8});
  for (const char* t : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"})
    b.F32Tensor(std::string("blk.0.") + t, {8, 8});
  b.F32Tensor("blk.0.ffn_gate.weight", {8, 16}).F32Tensor("blk.0.ffn_up.weight", {8, 16});
  b.F32Tensor("blk.0.ffn_down.weight", {16, 8});
  paged::testing::TempDir dir;
  paged::testing::WriteFile(dir.File("m.gguf"), b.Build());
  auto src = OpenGgufModel(dir.File("m.gguf"));
  ASSERT_TRUE(src.ok()) << src.status();
  const TokenizerBundle& bundle = src->get()->tokenizer;
  EXPECT_EQ(bundle.kind, TokenizerKind::kSentencePieceGguf);
  EXPECT_EQ(bundle.chat_template, "{% for m in messages %}{{ m.content }}{% endfor %}");
  auto tok = CreateTokenizer(TokenizerBundleOf(**src), "m.gguf");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode("hi", true), ElementsAre(1, 7));
  // parse_special: "<s>" written in the text is BOS, SentencePiece style
  // (the dummy prefix goes on the text after it); without, it is text.
  EXPECT_THAT((*tok)->Encode("<s>hi", false, true), ElementsAre(1, 7));
  EXPECT_THAT((*tok)->Encode("hi</s>", false, true), ElementsAre(7, 2));
  EXPECT_THAT((*tok)->Encode("<s>hi", false, false), Not(Contains(1)));
  EXPECT_EQ((*tok)->IdToPiece(7), "\xE2\x96\x81hi");
}

// A Llama 3 GGUF's byte-level vocabulary (tokens, types, merges, pre
// "llama-bpe"), made from the llama3_bpe fixture, encodes as HF does.
TEST(HfTokenizerStoreTest, GgufGpt2VocabularyAsHf) {
  const json tj =
      json::parse(paged::testing::ReadFile(FixtureDir("llama3_bpe") + "/tokenizer.json"));
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  auto put = [&](const std::string& t, int32_t id, int32_t type) {
    if (tokens.size() <= size_t(id)) {
      tokens.resize(size_t(id) + 1);
      types.resize(size_t(id) + 1, 1);
    }
    tokens[size_t(id)] = t;
    types[size_t(id)] = type;
  };
  for (const auto& [t, id] : tj["model"]["vocab"].items()) put(t, id.get<int32_t>(), 1);
  for (const json& a : tj["added_tokens"]) put(a["content"], a["id"].get<int32_t>(), 3);
  std::vector<std::string> merges;
  for (const json& m : tj["model"]["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m[0].get<std::string>() + " " + m[1].get<std::string>());
  paged::testing::GgufBuilder b;
  b.String("tokenizer.ggml.model", "gpt2").String("tokenizer.ggml.pre", "llama-bpe");
  b.StringArray("tokenizer.ggml.tokens", tokens).I32Array("tokenizer.ggml.token_type", types);
  b.StringArray("tokenizer.ggml.merges", merges);
  const std::string bytes = b.Build();
  auto f = ParseGguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "l3.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  ModelConfig c;
  c.vocab = int32_t(tokens.size());
  c.bos_id = int32_t(std::find(tokens.begin(), tokens.end(), "<|begin_of_text|>") - tokens.begin());
  c.n_eos = 1;
  c.eos_ids[0] = int32_t(std::find(tokens.begin(), tokens.end(), "<|eot_id|>") - tokens.begin());
  auto bundle = GgufBpeTokenizer(*f, c);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  ASSERT_TRUE(bundle->has_value());
  auto tok = CreateTokenizer(**bundle, "l3.gguf");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), c.bos_id);
  EXPECT_TRUE((*tok)->IsEos(c.eos_ids[0]));
  for (const json& cs : LoadCases("llama3_bpe")["cases"]) {
    const std::string text = cs["text"];
    EXPECT_EQ((*tok)->Encode(text, true, true), Ids(cs["ids"])) << "text: " << Show(text);
    EXPECT_EQ((*tok)->Decode(Ids(cs["ids"])), cs["decoded"].get<std::string>());
  }
  // A pre-tokenizer we do not know: no tokenizer (ids only), not an error.
  b.String("tokenizer.ggml.pre", "falcon");
  const std::string other = b.Build();
  f = ParseGguf(reinterpret_cast<const uint8_t*>(other.data()), other.size(), "f.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  bundle = GgufBpeTokenizer(*f, c);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_FALSE(bundle->has_value());
}

TEST(TokenizerBundleTest, RoundTripAndCorruption) {
  TokenizerBundle b;
  b.kind = TokenizerKind::kHfJson;
  b.payload = "{\"model\": {}}";
  b.chat_template = "{{ x }}";
  b.options = "{}";
  const std::string blob = SerializeTokenizerBundle(b);
  auto back = ParseTokenizerBundle(blob);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kind, b.kind);
  EXPECT_EQ(back->payload, b.payload);
  EXPECT_EQ(back->chat_template, b.chat_template);
  EXPECT_EQ(back->options, b.options);
  for (size_t cut : {size_t(0), size_t(7), size_t(20), blob.size() - 1}) {
    auto bad = ParseTokenizerBundle(blob.substr(0, cut));
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << cut;
  }
  std::string wrong_kind = blob;
  wrong_kind[8] = 9;
  EXPECT_THAT(std::string(ParseTokenizerBundle(wrong_kind).status().message()),
              HasSubstr("unknown tokenizer kind 9"));
  // Unknown trailing fields are skipped.
  std::string more = blob;
  more[12] = 4;
  more += std::string("\x03\0\0\0\0\0\0\0abc", 11);
  auto extended = ParseTokenizerBundle(more);
  ASSERT_TRUE(extended.ok()) << extended.status();
  EXPECT_EQ(extended->options, "{}");
}

}  // namespace
}  // namespace paged
