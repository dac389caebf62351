// The published chat templates executed by ChatTemplate (the Jinja engine),
// byte for byte against what transformers renders:
//
// - tests/golden/chat_templates/goldens.json: every template of that folder
//   (Llama 3.1 / 3.2 / 3.3, Qwen2.5, Qwen3, Mistral 7B v0.3 and Nemo, Gemma 2
//   and 3, Phi-3.5, gpt-oss) over fixed conversations, with and without
//   add_generation_prompt, rendered by scripts/make_chat_template_goldens.py
//   (transformers' apply_chat_template, or jinja2 set up as transformers sets
//   it up); where the template raises, ChatTemplate must refuse with the
//   template's message.
// - tests/golden/tokenizers/*/chat_cases.json: the tokenizer fixtures'
//   templates as transformers 5.17 rendered them, here through the whole
//   checkpoint path: tokenizer files -> tokenizer -> its BOS / EOS -> template.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/chat_template.h"
#include "store/hf_tokenizer_files.h"
#include "tests/unit/test_util.h"
#include "tokenizer/segment_tokenizer.h"

namespace paged {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string GoldenDir() { return testing::SourceDir() + "/tests/golden/chat_templates"; }

std::string ReadIfPresent(const std::string& path) {
  return std::filesystem::exists(path) ? testing::ReadFile(path) : "";
}

// 2026-01-15 10:30, the goldens' strftime_now.
std::tm FixedNow() {
  std::tm tm{};
  tm.tm_year = 2026 - 1900;
  tm.tm_mon = 0;
  tm.tm_mday = 15;
  tm.tm_hour = 10;
  tm.tm_min = 30;
  tm.tm_wday = 4;
  tm.tm_yday = 14;
  return tm;
}

std::vector<ChatTurn> Turns(const json& messages) {
  std::vector<ChatTurn> turns;
  for (const json& m : messages) turns.push_back({m["role"], m["content"]});
  return turns;
}

absl::StatusOr<ChatTemplate> TemplateOf(const json& t) {
  ChatTemplateOptions o;
  if (t["bos_token"].is_string()) o.bos_token = t["bos_token"];
  if (t["eos_token"].is_string()) o.eos_token = t["eos_token"];
  o.now = FixedNow;
  return ChatTemplate::FromSource(
      testing::ReadFile(GoldenDir() + "/" + t["file"].get<std::string>()), o);
}

TEST(ChatTemplateGoldenTest, EveryPublishedTemplateRendersAsTransformers) {
  const std::string text = ReadIfPresent(GoldenDir() + "/goldens.json");
  PAGED_REQUIRE_FIXTURE(text, "tests/golden/chat_templates/goldens.json");
  const json goldens = json::parse(text);
  std::map<std::string, std::vector<ChatTurn>> conversations;
  for (const auto& [name, messages] : goldens["conversations"].items()) {
    conversations[name] = Turns(messages);
  }
  int rendered = 0;
  int raised = 0;
  for (const json& t : goldens["templates"]) {
    SCOPED_TRACE(t["file"].get<std::string>());
    absl::StatusOr<ChatTemplate> tmpl = TemplateOf(t);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    ASSERT_TRUE(tmpl->executed()) << tmpl->fallback_reason();
    for (const json& c : t["cases"]) {
      const std::string conversation = c["conversation"];
      const bool gen = c["add_generation_prompt"];
      SCOPED_TRACE(conversation + (gen ? " with" : " without") + " add_generation_prompt");
      absl::StatusOr<std::string> got = tmpl->Render(conversations.at(conversation), gen);
      if (c.contains("rendered")) {
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(*got, c["rendered"].get<std::string>());
        ++rendered;
      } else {
        ASSERT_FALSE(got.ok()) << "renders where the template raises: " << c["error"];
        EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
        // "TemplateError: <the template's message>"
        const std::string error = c["error"];
        const std::string prefix = "TemplateError: ";
        if (error.rfind(prefix, 0) == 0) {
          EXPECT_THAT(got.status().message(), HasSubstr(error.substr(prefix.size())));
        }
        ++raised;
      }
    }
  }
  EXPECT_EQ(rendered + raised, 330);  // 11 templates x 15 conversations x 2
  EXPECT_GT(raised, 0);
}

TEST(ChatTemplateGoldenTest, EndOfTurnOfEachTemplate) {
  const std::string text = ReadIfPresent(GoldenDir() + "/goldens.json");
  PAGED_REQUIRE_FIXTURE(text, "tests/golden/chat_templates/goldens.json");
  const std::map<std::string, std::vector<std::string>> want = {
      {"meta-llama-Llama-3.1-8B-Instruct.jinja", {"<|eot_id|>"}},
      {"meta-llama-Llama-3.2-3B-Instruct.jinja", {"<|eot_id|>"}},
      {"meta-llama-Llama-3.3-70B-Instruct.jinja", {"<|eot_id|>"}},
      {"Qwen-Qwen2.5-7B-Instruct.jinja", {"<|im_end|>"}},
      {"Qwen-Qwen3-0.6B.jinja", {"<|im_end|>"}},
      {"mistralai-Mistral-7B-Instruct-v0.3.jinja", {"</s>"}},
      {"mistralai-Mistral-Nemo-Instruct-2407.jinja", {"</s>"}},
      {"google-gemma-2-2b-it.jinja", {"<end_of_turn>"}},
      {"google-gemma-3-it.jinja", {"<end_of_turn>"}},
      {"microsoft-Phi-3.5-mini-instruct.jinja", {"<|end|>"}},
      {"openai-gpt-oss-120b.jinja", {"<|return|>", "<|call|>"}},
  };
  for (const json& t : json::parse(text)["templates"]) {
    const std::string file = t["file"];
    SCOPED_TRACE(file);
    absl::StatusOr<ChatTemplate> tmpl = TemplateOf(t);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    EXPECT_EQ(tmpl->end_of_turn(), want.at(file));
  }
}

// The tokenizer fixtures' templates and renderings by transformers 5.17.0
// (scripts/make_tokenizer_fixtures.py), with BOS and EOS from the tokenizer
// paged loads from the same files.
TEST(ChatTemplateGoldenTest, TokenizerFixturesRenderAsTransformers) {
  const std::string root = testing::SourceDir() + "/tests/golden/tokenizers";
  int checked = 0;
  for (const char* name : {"llama2_spbpe", "llama3_bpe", "metaspace_spbpe", "qwen2_bpe"}) {
    SCOPED_TRACE(name);
    const std::string dir = root + "/" + name;
    const std::string cases = ReadIfPresent(dir + "/chat_cases.json");
    PAGED_REQUIRE_FIXTURE(cases, dir + "/chat_cases.json");
    absl::StatusOr<HfTokenizerFiles> files = ReadHfTokenizerFiles(dir);
    ASSERT_TRUE(files.ok()) << files.status();
    absl::StatusOr<std::unique_ptr<const Tokenizer>> tok = CreateTokenizer(files->bundle, name);
    ASSERT_TRUE(tok.ok()) << tok.status();
    absl::StatusOr<ChatTemplate> tmpl =
        ChatTemplate::FromSource(files->bundle.chat_template, ChatTemplateOptionsFor(tok->get()));
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    ASSERT_TRUE(tmpl->executed()) << tmpl->fallback_reason();
    for (const json& c : json::parse(cases)) {
      absl::StatusOr<std::string> got =
          tmpl->Render(Turns(c["messages"]), c["add_generation_prompt"]);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, c["rendered"].get<std::string>());
      ++checked;
    }
  }
  EXPECT_EQ(checked, 16);
}

TEST(ChatTemplateGoldenTest, BosAndEosComeFromTheTokenizer) {
  const std::string dir = testing::SourceDir() + "/tests/golden/tokenizers/llama3_bpe";
  absl::StatusOr<HfTokenizerFiles> files = ReadHfTokenizerFiles(dir);
  PAGED_REQUIRE_FIXTURE(std::string(files.ok() ? "present" : ""), dir);
  absl::StatusOr<std::unique_ptr<const Tokenizer>> tok = CreateTokenizer(files->bundle, "llama3");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const ChatTemplateOptions o = ChatTemplateOptionsFor(tok->get());
  EXPECT_EQ(o.bos_token, "<|begin_of_text|>");
  EXPECT_EQ(o.eos_token, "<|eot_id|>");
  EXPECT_EQ(ChatTemplateOptionsFor(nullptr).bos_token, "");
}

}  // namespace
}  // namespace paged
