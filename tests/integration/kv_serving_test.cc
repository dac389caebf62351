// KV on demand and the prefix cache as real processes: paged-store
// (stories260K, f32) with a KV pool of 8 full contexts, a CPU paged-worker,
// and the coordinator with HTTP on 127.0.0.1 and --chat-template=llama2.
//
// The bounded test: 64 OpenAI chat requests that omit max_tokens (so
// each may run to the end of the 2048-token context; they end at a stop
// string, as chat clients send them) all complete, and more than 8 run at
// once (reserving whole contexts would allow 8). Then a conversation resent
// with a new turn takes its history from the prefix cache and answers what
// the same request answers with the cache off.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "paged/v1/admin.grpc.pb.h"
#include "tests/unit/http_client.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using json = nlohmann::json;
using testing::BinaryPath;
using testing::HttpCall;
using testing::Subprocess;

// 8 contexts of 2048 tokens = 1024 blocks of 16; the store rounds to whole
// MiB, so this gives a few blocks more (checked below).
constexpr char kKvGib[] = "0.0197";
constexpr int kContext = 2048;

bool WaitUntil(const std::function<bool()>& pred, double timeout_s = 30) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

class KvServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
    segment_ = testing::UniqueSegmentName("kvod");
    store_ = std::make_unique<Subprocess>(std::vector<std::string>{
        BinaryPath("paged-store"), "--model=" + testing::Stories260KPath(), "--segment=" + segment_,
        "--weight-format=f32", std::string("--kv-gib=") + kKvGib, "--remove-on-exit", "--quiet"});
    ASSERT_TRUE(store_->WaitForLine("ready")) << store_->output();
  }

  void TearDown() override {
    StopServing();
    if (store_) {
      EXPECT_EQ(store_->Signal(SIGTERM), 0);
    }
  }

  void StopServing() {
    if (worker_) worker_->Signal(SIGKILL);
    worker_.reset();
    admin_.reset();
    if (paged_) {
      EXPECT_EQ(paged_->Signal(SIGTERM), 0) << paged_->output();
    }
    paged_.reset();
  }

  void StartServing(std::vector<std::string> extra = {}) {
    const std::string grpc = "unix://" + dir_.File("paged" + std::to_string(++starts_) + ".sock");
    std::vector<std::string> argv = {BinaryPath("paged"),      "--segment=" + segment_,
                                     "--listen=" + grpc,       "--http=127.0.0.1:0",
                                     "--chat-template=llama2", "--max-seqs-per-step=64",
                                     "--max-step-tokens=1024"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    paged_ = std::make_unique<Subprocess>(argv);
    ASSERT_TRUE(paged_->WaitForLine("http listening on ", 30)) << paged_->output();
    std::smatch m;
    const std::string out = paged_->output();
    ASSERT_TRUE(std::regex_search(out, m, std::regex("http listening on ([0-9.]+:[0-9]+)"))) << out;
    http_ = m[1];
    admin_ = v1::Admin::NewStub(grpc::CreateChannel(grpc, grpc::InsecureChannelCredentials()));
    worker_ = std::make_unique<Subprocess>(std::vector<std::string>{
        BinaryPath("paged-worker"), "--segment=" + segment_, "--device=cpu", "--gpu-budget=256MiB",
        "--threads=1", "--coordinator=" + grpc, "--worker-id=w0"});
    ASSERT_TRUE(WaitUntil([&] {
      v1::StatusResponse st;
      return Status(&st) && st.workers_size() == 1 && st.workers(0).state() == "ATTACHED";
    })) << paged_->output();
  }

  bool Status(v1::StatusResponse* st) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return admin_->Status(&ctx, v1::StatusRequest(), st).ok();
  }

  // A chat completion (without max_tokens unless `max_tokens` > 0).
  testing::HttpResult Chat(const json& messages, uint64_t seed, const json& stop,
                           int max_tokens = 0) {
    json body = {
        {"model", "stories260K"}, {"messages", messages}, {"temperature", 0.8}, {"seed", seed}};
    if (!stop.is_null()) body["stop"] = stop;
    if (max_tokens > 0) body["max_tokens"] = max_tokens;
    return HttpCall(http_, "POST", "/v1/chat/completions", body.dump());
  }

  testing::TempDir dir_;
  std::string segment_, http_;
  int starts_ = 0;
  std::unique_ptr<Subprocess> store_, paged_, worker_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

TEST_F(KvServingTest, SixtyFourChatsWithoutMaxTokensOnAPoolOfEightContextsAllComplete) {
  StartServing();
  v1::StatusResponse st;
  ASSERT_TRUE(Status(&st));
  const int64_t contexts = int64_t(st.kv_blocks_total()) * 16 / kContext;
  ASSERT_EQ(contexts, 8) << st.kv_blocks_total() << " blocks";

  std::atomic<bool> running{true};
  std::atomic<int> peak{0};
  std::thread watcher([&] {
    while (running) {
      v1::StatusResponse s;
      if (Status(&s)) peak = std::max(peak.load(), s.running_sequences());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  std::vector<testing::HttpResult> results(64);
  std::vector<std::thread> clients;
  for (int i = 0; i < 64; ++i) {
    clients.emplace_back([&, i] {
      const json messages = {{{"role", "user"},
                              {"content", "Tell me a story about a dog named Max and toy number " +
                                              std::to_string(i) + "."}}};
      results[size_t(i)] = Chat(messages, uint64_t(1000 + i), json::array({"."}));
    });
  }
  for (auto& t : clients) t.join();
  running = false;
  watcher.join();
  int stopped = 0;
  for (int i = 0; i < 64; ++i) {
    const testing::HttpResult& r = results[size_t(i)];
    ASSERT_EQ(r.status, 200) << i << ": " << r.body << r.error;
    const json j = json::parse(r.body);
    const std::string reason = j["choices"][0]["finish_reason"].get<std::string>();
    EXPECT_TRUE(reason == "stop" || reason == "length") << i << ": " << r.body;
    stopped += reason == "stop";
    EXPECT_GT(j["usage"]["completion_tokens"].get<int>(), 0) << i;
  }
  EXPECT_GT(stopped, 32) << "the stop string ends most replies";
  EXPECT_GT(peak.load(), 8) << "more at once than 8 whole-context reservations allow";
  ASSERT_TRUE(Status(&st));
  EXPECT_EQ(st.kv_blocks_used(), 0u);
  EXPECT_EQ(st.running_sequences(), 0);
  std::printf("64 chats without max_tokens on 8 contexts: peak %d running, %lld preemptions\n",
              peak.load(), static_cast<long long>(st.kv_preemptions()));
}

TEST_F(KvServingTest, AResentConversationComesFromThePrefixCacheAndAnswersTheSame) {
  // A long first turn so the history spans many blocks.
  json messages = {{{"role", "system"},
                    {"content",
                     "You are a storyteller. You tell short, kind stories about "
                     "animals and children who learn to share, help and be brave."}},
                   {{"role", "user"}, {"content", "Tell me a story about a cat and a ball."}}};
  auto turn = [&](uint64_t seed) {
    testing::HttpResult r = Chat(messages, seed, json(), 64);
    EXPECT_EQ(r.status, 200) << r.body << r.error;
    return json::parse(r.body, nullptr, false);
  };
  auto second_turn = [&](const json& first) {
    json m = messages;
    m.push_back({{"role", "assistant"}, {"content", first["choices"][0]["message"]["content"]}});
    m.push_back({{"role", "user"}, {"content", "And what did the cat do next?"}});
    return m;
  };

  std::string cached_answer, uncached_answer;
  int64_t hits = 0;
  for (const bool cache : {true, false}) {
    SCOPED_TRACE(cache ? "cache on" : "cache off");
    StartServing({std::string("--prefix-cache=") + (cache ? "true" : "false")});
    const json first = turn(7);
    ASSERT_TRUE(first.is_object());
    messages = second_turn(first);
    const json second = turn(8);
    ASSERT_TRUE(second.is_object());
    (cache ? cached_answer : uncached_answer) =
        second["choices"][0]["message"]["content"].get<std::string>();
    v1::StatusResponse st;
    ASSERT_TRUE(Status(&st));
    if (cache) {
      hits = st.cached_prompt_tokens();
      EXPECT_GT(st.kv_blocks_cached(), 0u);
      // OpenAI's usage field says so too, for this request's prompt.
      EXPECT_EQ(second["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), hits)
          << second.dump();
    } else {
      EXPECT_EQ(st.cached_prompt_tokens(), 0);
      EXPECT_FALSE(second["usage"].contains("prompt_tokens_details")) << second.dump();
    }
    messages.erase(messages.end() - 2, messages.end());
    StopServing();
  }
  // The second turn's prompt starts with the whole first exchange.
  EXPECT_GE(hits, 64) << "the history's blocks came from the cache";
  EXPECT_EQ(cached_answer, uncached_answer)
      << "KV rows from the cache give the same sampled answer as computing them";
}

}  // namespace
}  // namespace paged
