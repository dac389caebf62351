// `pagectl chat` and `pagectl status --wait-ready` against real processes:
// paged-store (stories260K, f32; its GGUF has no chat template), the
// coordinator `paged` and one CPU worker, on a unix socket in a temporary
// directory.
//
//  - Without --chat-template the coordinator serves, and a chat turn fails
//    with FAILED_PRECONDITION naming the flag.
//  - With --chat-template llama2, two lines piped into `pagectl chat --json`
//    get two replies, each equal (greedy) to what `pagectl generate` gives for
//    the token ids of the conversation rendered and tokenized here.
//  - `pagectl status --wait-ready --segment` started before anything else
//    waits through the missing segment and server, then prints the status.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "daemon/chat_template.h"
#include "store/gguf_model.h"
#include "tests/unit/test_util.h"
#include "tokenizer/sp_tokenizer.h"

namespace paged {
namespace {

using testing::BinaryPath;
using ::testing::HasSubstr;
using testing::RunCommand;
using testing::Subprocess;

constexpr int kReplyTokens = 24;

// The JSON lines of `out` (other lines, e.g. from stderr, skipped).
std::vector<nlohmann::json> JsonLines(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '{') v.push_back(nlohmann::json::parse(line));
  }
  return v;
}

class ChatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
    segment_ = testing::UniqueSegmentName("chat");
    address_ = "unix://" + dir_.File("paged.sock");
  }

  void TearDown() override {
    if (worker_) worker_->Signal(SIGKILL);
    StopCoordinator();
    if (store_) {
      EXPECT_EQ(store_->Signal(SIGTERM), 0);
    }
  }

  void StartStore() {
    store_ = std::make_unique<Subprocess>(std::vector<std::string>{
        BinaryPath("paged-store"), "--model=" + testing::Stories260KPath(), "--segment=" + segment_,
        "--weight-format=f32", "--kv-gib=0.01", "--remove-on-exit", "--quiet"});
    ASSERT_TRUE(store_->WaitForLine("ready")) << store_->output();
  }

  void StartCoordinator(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {BinaryPath("paged"), "--segment=" + segment_,
                                     "--listen=" + address_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    paged_ = std::make_unique<Subprocess>(argv);
    ASSERT_TRUE(paged_->WaitForLine("listening on " + address_, 30)) << paged_->output();
  }

  void StopCoordinator() {
    if (paged_) {
      EXPECT_EQ(paged_->Signal(SIGTERM), 0) << paged_->output();
    }
    paged_.reset();
  }

  void StartWorker() {
    worker_ = std::make_unique<Subprocess>(std::vector<std::string>{
        BinaryPath("paged-worker"), "--segment=" + segment_, "--device=cpu", "--gpu-budget=256MiB",
        "--threads=1", "--coordinator=" + address_, "--worker-id=w0"});
  }

  // `pagectl ARGS` with `input` on its stdin; stdout only when `quiet_stderr`.
  std::pair<int, std::string> Pagectl(const std::string& input, const std::string& args,
                                      bool quiet_stderr = true) {
    const std::string cmd = "printf '%s' '" + input + "' | '" + BinaryPath("pagectl") + "' " +
                            args + " --server=" + address_ + (quiet_stderr ? " 2>/dev/null" : "");
    return RunCommand({"/bin/sh", "-c", cmd}, 120);
  }

  testing::TempDir dir_;
  std::string segment_, address_;
  std::unique_ptr<Subprocess> store_, paged_, worker_;
};

TEST_F(ChatTest, WithoutATemplateChatIsRefusedAndTheRestServes) {
  StartStore();
  StartCoordinator();
  auto [rc, out] = Pagectl("hello\n", "chat", /*quiet_stderr=*/false);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_THAT(out, HasSubstr("FAILED_PRECONDITION: the model has no chat template; start paged "
                             "with --chat-template NAME"));
  auto [mrc, models] = Pagectl("", "models --json");
  ASSERT_EQ(mrc, 0) << models;
  EXPECT_EQ(nlohmann::json::parse(models)["models"][0]["chat_template"], "");
}

TEST_F(ChatTest, PipedLinesGetTheRepliesGenerateGivesForTheRenderedPrompt) {
  StartStore();
  StartCoordinator({"--chat-template=llama2"});
  EXPECT_THAT(paged_->output(), HasSubstr("chat prompts in the llama2 format"));
  StartWorker();

  const std::string n = " -n " + std::to_string(kReplyTokens);
  auto [rc, out] = Pagectl("Once upon a time\nWhat did Lily do?\n", "chat --json" + n);
  ASSERT_EQ(rc, 0) << out;
  const std::vector<nlohmann::json> turns = JsonLines(out);
  ASSERT_EQ(turns.size(), 2u) << out;

  // The same prompts, rendered and tokenized here, through plain generate.
  auto src = OpenGgufModel(testing::Stories260KPath());
  ASSERT_TRUE(src.ok()) << src.status();
  auto tok = SpTokenizer::Create((*src)->vocab);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const ChatTemplate llama2 = *ChatTemplate::FromName("llama2");
  std::vector<ChatTurn> conversation;
  const char* users[] = {"Once upon a time", "What did Lily do?"};
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    conversation.push_back({"user", users[i]});
    absl::StatusOr<std::string> text = llama2.Render(conversation, true);
    ASSERT_TRUE(text.ok()) << text.status();
    const std::vector<int32_t> ids = tok->Encode(*text, false, /*parse_special=*/true);
    EXPECT_EQ(ids.front(), 1);  // <s> as BOS
    auto [grc, gout] =
        Pagectl("", "generate --json --prompt-tokens=" + absl::StrJoin(ids, ",") + n);
    ASSERT_EQ(grc, 0) << gout;
    const nlohmann::json g = nlohmann::json::parse(gout);
    EXPECT_EQ(turns[size_t(i)]["user"], users[i]);
    EXPECT_EQ(turns[size_t(i)]["usage"]["prompt_tokens"], int(ids.size()));
    EXPECT_EQ(turns[size_t(i)]["token_ids"], g["token_ids"]);
    EXPECT_EQ(turns[size_t(i)]["text"], g["text"]);
    EXPECT_FALSE(g["text"].get<std::string>().empty());
    conversation.push_back({"assistant", turns[size_t(i)]["text"].get<std::string>()});
  }

  // Plain text output: the same replies, one after the other.
  auto [prc, plain] = Pagectl("Once upon a time\n", "chat" + n);
  ASSERT_EQ(prc, 0) << plain;
  std::string first = turns[0]["text"];
  first.erase(0, first.find_first_not_of(' '));
  EXPECT_EQ(plain, first + (first.empty() || first.back() != '\n' ? "\n" : ""));

  auto [mrc, models] = Pagectl("", "models --json");
  ASSERT_EQ(mrc, 0) << models;
  EXPECT_EQ(nlohmann::json::parse(models)["models"][0]["chat_template"], "llama2");
}

TEST_F(ChatTest, StatusWaitReadyWaitsForTheWholeService) {
  // Started first: no segment, no server yet.
  Subprocess wait({BinaryPath("pagectl"), "status", "--wait-ready", "--segment=" + segment_,
                   "--server=" + address_, "--timeout=120s"});
  ASSERT_TRUE(wait.WaitForLine("waiting for segment " + segment_ + ": it does not exist yet", 30))
      << wait.output();
  StartStore();
  StartCoordinator();
  ASSERT_TRUE(wait.WaitForLine("waiting for a worker to attach", 30)) << wait.output();
  StartWorker();
  EXPECT_EQ(wait.Wait(60), 0) << wait.output();
  EXPECT_THAT(wait.output(), HasSubstr("pagectl: ready after"));
  EXPECT_THAT(wait.output(), HasSubstr("READY (segment " + segment_ + ")"));
  EXPECT_THAT(wait.output(), HasSubstr("1 attached of 1"));
  EXPECT_EQ(wait.output().find('\033'), std::string::npos);  // not a terminal: no colours

  // A deadline that passes is an error naming what was awaited.
  StopCoordinator();
  auto [rc, out] = RunCommand(
      {BinaryPath("pagectl"), "status", "--wait-ready", "--server=" + address_, "--timeout=1s"});
  EXPECT_EQ(rc, 1) << out;
  EXPECT_THAT(out, HasSubstr("DEADLINE_EXCEEDED: not ready within 1s: still waiting for paged at " +
                             address_));
}

}  // namespace
}  // namespace paged
