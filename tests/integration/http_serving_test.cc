// The HTTP API of `paged --http` as real processes: paged-store
// (stories260K, f32), a CPU paged-worker paging every layer, and the
// coordinator with gRPC on a unix socket and HTTP on 127.0.0.1 (a free
// port, read from its "http listening on" line). Clients: curl (as users
// run it: curl -N for the event stream) and a small HTTP client.
//
// Greedy completions reproduce the README transcript, as the gRPC path does
// for the same request; the event stream assembles the same text and ends
// with [DONE]; errors are OpenAI-shaped with their status; a client that
// drops its stream cancels its sequence; /metrics parses as Prometheus text
// and counts the traffic; chat without a template is a clear 400, and with
// --chat-template it answers what gRPC answers for the same messages.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "paged/v1/admin.grpc.pb.h"
#include "paged/v1/inference.grpc.pb.h"
#include "tests/unit/http_client.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using json = nlohmann::json;
using testing::BinaryPath;
using ::testing::HasSubstr;
using testing::HttpCall;
using testing::Subprocess;

constexpr char kModel[] = "stories260K";

bool WaitUntil(const std::function<bool()>& pred, double timeout_s = 30) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// The text an event stream carries: each chunk's text (completions) or
// delta content (chat), concatenated; `finish` gets the last finish_reason.
std::string StreamText(const std::string& body, std::string* finish, bool* done) {
  std::string text;
  *done = false;
  for (const std::string& data : testing::SseData(body)) {
    if (data == "[DONE]") {
      *done = true;
      continue;
    }
    const json j = json::parse(data, nullptr, false);
    if (!j.is_object() || j["choices"].empty()) continue;
    const json& c = j["choices"][0];
    if (c.contains("text")) text += c["text"].get<std::string>();
    if (c.contains("delta") && c["delta"].contains("content"))
      text += c["delta"]["content"].get<std::string>();
    if (!c["finish_reason"].is_null()) *finish = c["finish_reason"].get<std::string>();
  }
  return text;
}

// curl on $PATH ("" when there is none).
std::string CurlPath() {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string candidate = dirs.substr(start, end - start) + "/curl";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return "";
}

class HttpServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
    segment_ = testing::UniqueSegmentName("http");
    store_ = std::make_unique<Subprocess>(std::vector<std::string>{
        BinaryPath("paged-store"), "--model=" + testing::Stories260KPath(), "--segment=" + segment_,
        "--weight-format=f32", "--kv-gib=0.01", "--remove-on-exit", "--quiet"});
    ASSERT_TRUE(store_->WaitForLine("ready")) << store_->output();
    grpc_address_ = "unix://" + dir_.File("paged.sock");
  }

  void TearDown() override {
    if (worker_) worker_->Signal(SIGKILL);
    inference_.reset();
    admin_.reset();
    if (paged_) {
      EXPECT_EQ(paged_->Signal(SIGTERM), 0) << paged_->output();
    }
    if (store_) {
      EXPECT_EQ(store_->Signal(SIGTERM), 0);
    }
  }

  void StartAll(std::vector<std::string> extra = {}, const std::string& token = "") {
    std::vector<std::string> argv = {BinaryPath("paged"), "--segment=" + segment_,
                                     "--listen=" + grpc_address_, "--http=127.0.0.1:0"};
    // The token from a file (paged) and the environment (the worker), as
    // systemd credentials and paged-up pass it: never on a command line.
    if (!token.empty()) {
      testing::WriteFile(dir_.File("token"), token + "\n");
      argv.push_back("--token-file=" + dir_.File("token"));
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    paged_ = std::make_unique<Subprocess>(argv);
    ASSERT_TRUE(paged_->WaitForLine("http listening on ", 30)) << paged_->output();
    std::smatch m;
    const std::string out = paged_->output();
    ASSERT_TRUE(std::regex_search(out, m, std::regex("http listening on ([0-9.]+:[0-9]+)"))) << out;
    http_ = m[1];
    auto channel = grpc::CreateChannel(grpc_address_, grpc::InsecureChannelCredentials());
    inference_ = v1::Inference::NewStub(channel);
    admin_ = v1::Admin::NewStub(channel);
    std::vector<std::string> w = {
        BinaryPath("paged-worker"), "--segment=" + segment_, "--device=cpu",
        "--gpu-budget=256MiB",      "--threads=1",           "--coordinator=" + grpc_address_,
        "--worker-id=w0",           "--resident=none"};
    if (!token.empty()) ::setenv("PAGED_TOKEN", token.c_str(), 1);
    worker_ = std::make_unique<Subprocess>(w);
    ::unsetenv("PAGED_TOKEN");
    ASSERT_TRUE(WaitUntil([&] {
      grpc::ClientContext ctx;
      if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
      v1::StatusResponse st;
      return admin_->Status(&ctx, v1::StatusRequest(), &st).ok() && st.workers_size() == 1 &&
             st.workers(0).state() == "ATTACHED";
    })) << paged_->output();
  }

  testing::HttpResult Post(const std::string& path, const json& body,
                           const std::vector<std::pair<std::string, std::string>>& h = {}) {
    return HttpCall(http_, "POST", path, body.dump(), h);
  }

  // curl, as a user runs it; returns {exit code, stdout and stderr}.
  std::pair<int, std::string> Curl(std::vector<std::string> args) {
    const std::string curl = CurlPath();
    if (curl.empty()) return {-1, "curl is not installed (scripts/install-deps.sh installs it)"};
    std::vector<std::string> argv = {curl, "-sS", "--max-time", "60"};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv, 90);
  }

  // The gRPC Generate answer's text and finish reason for `req`.
  std::string GrpcText(const v1::GenerateRequest& req, v1::GenerateResponse::FinishReason* reason) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = inference_->Generate(&ctx, req);
    v1::GenerateResponse msg;
    std::string text;
    while (reader->Read(&msg)) {
      text += msg.text();
      if (msg.finish_reason() != v1::GenerateResponse::FINISH_REASON_UNSPECIFIED)
        *reason = msg.finish_reason();
    }
    EXPECT_TRUE(reader->Finish().ok());
    return text;
  }

  std::string Metrics(const std::string& token = "") {
    std::vector<std::pair<std::string, std::string>> h;
    if (!token.empty()) h.push_back({"Authorization", "Bearer " + token});
    testing::HttpResult r = HttpCall(http_, "GET", "/metrics", "", h);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.body;
  }

  static void ExpectApiError(const testing::HttpResult& r, int status, const std::string& what) {
    EXPECT_EQ(r.status, status) << r.body << r.error;
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body;
    EXPECT_TRUE(j["error"]["type"].is_string()) << r.body;
    EXPECT_TRUE(j["error"].contains("param")) << r.body;
    EXPECT_TRUE(j["error"].contains("code")) << r.body;
    EXPECT_THAT(j["error"]["message"].get<std::string>(), HasSubstr(what)) << r.body;
  }

  testing::TempDir dir_;
  std::string segment_, grpc_address_, http_;
  std::unique_ptr<Subprocess> store_, paged_, worker_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

TEST_F(HttpServingTest, CompletionsReproduceTheTranscript) {
  ASSERT_NO_FATAL_FAILURE(StartAll());
  auto [code, models] = Curl({"http://" + http_ + "/v1/models"});
  ASSERT_EQ(code, 0) << models;
  const json m = json::parse(models);
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], kModel);

  // Greedy from BOS, 200 tokens: the README transcript, as gRPC gives it.
  const json req = {{"model", kModel},
                    {"prompt", {1}},
                    {"max_tokens", 200},
                    {"temperature", 0},
                    {"ignore_eos", true}};
  auto [c2, body] = Curl({"http://" + http_ + "/v1/completions", "-H",
                          "Content-Type: application/json", "-d", req.dump()});
  ASSERT_EQ(c2, 0) << body;
  const json r = json::parse(body);
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["model"], kModel);
  EXPECT_EQ(r["choices"][0]["text"], testing::StoriesTranscript());
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"],
            json({{"prompt_tokens", 1}, {"completion_tokens", 200}, {"total_tokens", 201}}));
  v1::GenerateRequest g;
  g.mutable_tokens()->add_ids(1);
  g.set_max_tokens(200);
  g.set_ignore_eos(true);
  v1::GenerateResponse::FinishReason reason{};
  EXPECT_EQ(GrpcText(g, &reason), r["choices"][0]["text"].get<std::string>());

  // The same as an event stream through curl -N: the same text, then [DONE].
  json sreq = req;
  sreq["stream"] = true;
  sreq["stream_options"] = {{"include_usage", true}};
  auto [c3, events] = Curl({"-N", "http://" + http_ + "/v1/completions", "-d", sreq.dump()});
  ASSERT_EQ(c3, 0) << events;
  std::string finish;
  bool done = false;
  EXPECT_EQ(StreamText(events, &finish, &done), testing::StoriesTranscript());
  EXPECT_EQ(finish, "length");
  EXPECT_TRUE(done);
  EXPECT_THAT(events, ::testing::EndsWith("data: [DONE]\n\n"));
  const std::vector<std::string> data = testing::SseData(events);
  ASSERT_GE(data.size(), 3u);
  EXPECT_EQ(json::parse(data[data.size() - 2])["usage"]["completion_tokens"], 200);
  EXPECT_GT(data.size(), 20u);  // streamed as it came, not in one piece

  // A text prompt with a stop string, as in serving_test.
  testing::HttpResult t = Post(
      "/v1/completions",
      {{"prompt", "Once upon a time"}, {"max_tokens", 60}, {"temperature", 0}, {"stop", "Lily"}});
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(json::parse(t.body)["choices"][0]["text"], ", there was a little girl named ");
  EXPECT_EQ(json::parse(t.body)["choices"][0]["finish_reason"], "stop");

  // Errors, OpenAI-shaped.
  ExpectApiError(HttpCall(http_, "POST", "/v1/completions", "{bad"), 400, "JSON");
  ExpectApiError(Post("/v1/completions", {{"model", "gpt-4"}, {"prompt", "x"}}), 404,
                 "does not exist");
  ExpectApiError(Post("/v1/completions", {{"prompt", "x"}, {"n", 2}}), 400, "'n'");
  ExpectApiError(Post("/v1/completions", {{"prompt", {1}}, {"max_tokens", 5000}}), 400, "context");
  ExpectApiError(HttpCall(http_, "GET", "/v1/completions"), 405, "POST");
  ExpectApiError(HttpCall(http_, "GET", "/v2/nothing"), 404, "Invalid URL");
  ExpectApiError(HttpCall(http_, "POST", "/v1/completions", std::string(9 << 20, ' ')), 413,
                 "over the limit");
  // stories260K has no chat template: a clear 400.
  ExpectApiError(Post("/v1/chat/completions",
                      {{"model", kModel}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}}),
                 400, "chat template");
}

TEST_F(HttpServingTest, ADroppedClientCancelsItsSequence) {
  ASSERT_NO_FATAL_FAILURE(StartAll());
  const std::string body =
      json({{"prompt", {1}}, {"max_tokens", 2000}, {"ignore_eos", true}, {"stream", true}}).dump();
  std::string id;
  {
    testing::RawConnection c(http_);
    ASSERT_TRUE(c.Send("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body));
    ASSERT_TRUE(c.ReadCount("data: ", 5, 30)) << c.received();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(c.received(), m, std::regex("\"id\":\"(cmpl-[0-9a-f]+)\"")));
    id = m[1];
  }  // dropped mid-stream
  // A non-streaming request dropped while it runs.
  const std::string whole =
      json({{"prompt", {1}}, {"max_tokens", 2000}, {"ignore_eos", true}}).dump();
  {
    testing::RawConnection c(http_);
    ASSERT_TRUE(c.Send("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
                       std::to_string(whole.size()) + "\r\n\r\n" + whole));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(WaitUntil([&] {
    grpc::ClientContext ctx;
    v1::ListSequencesResponse r;
    if (!admin_->ListSequences(&ctx, v1::ListSequencesRequest(), &r).ok()) return false;
    int finished = 0;
    for (const v1::SequenceInfo& s : r.sequences())
      finished += s.state() == "FINISHED" && s.generated_tokens() < 2000;
    return finished == 2;
  })) << paged_->output();
  grpc::ClientContext ctx;
  v1::ListSequencesResponse r;
  ASSERT_TRUE(admin_->ListSequences(&ctx, v1::ListSequencesRequest(), &r).ok());
  bool seen = false;
  for (const v1::SequenceInfo& s : r.sequences()) seen |= s.request_id() == id;
  EXPECT_TRUE(seen) << id;
  EXPECT_THAT(Metrics(), HasSubstr("paged_requests_total{status=\"cancelled\"} 2\n"));
}

TEST_F(HttpServingTest, MetricsCountTheTraffic) {
  ASSERT_NO_FATAL_FAILURE(StartAll());
  ASSERT_EQ(
      Post("/v1/completions", {{"prompt", {1}}, {"max_tokens", 40}, {"temperature", 0}}).status,
      200);
  ASSERT_EQ(Post("/v1/completions", {{"prompt", {1}}, {"n", 3}}).status, 400);
  const std::string text = Metrics();
  EXPECT_THAT(testing::NonExpositionLines(text), ::testing::IsEmpty());
  EXPECT_THAT(text, HasSubstr("paged_requests_total{status=\"length\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("paged_requests_total{status=\"rejected\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("paged_generated_tokens_total 40\n"));
  EXPECT_THAT(text, HasSubstr("paged_workers_attached 1\n"));
  EXPECT_THAT(text, HasSubstr("paged_kv_blocks_used 0\n"));
  EXPECT_THAT(text, HasSubstr("paged_time_to_first_token_seconds_count 1\n"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      text, m, std::regex("paged_worker_h2d_bytes_total\\{worker=\"w0\"\\} ([0-9.e+]+)")))
      << text;
  EXPECT_GT(std::stod(m[1]), 0);  // w0 pages every layer
  ASSERT_TRUE(std::regex_search(
      text, m, std::regex("paged_worker_d2h_bytes_total\\{worker=\"w0\"\\} ([0-9.e+]+)")));
  EXPECT_GT(std::stod(m[1]), 0);
  ASSERT_TRUE(std::regex_search(
      text, m, std::regex("paged_worker_h2d_bytes_per_second\\{worker=\"w0\"\\} ([0-9.e+]+)")));
  EXPECT_GT(std::stod(m[1]), 0);
  ASSERT_TRUE(std::regex_search(text, m, std::regex("paged_step_seconds_count ([0-9]+)")));
  EXPECT_GE(std::stoi(m[1]), 40);
}

// Issue 15, defect 4: on SIGTERM, curl streaming an answer gets an error
// event and [DONE] and a cleanly ended body (exit 0, not 18); a waiting
// non-streaming request gets a 503.
TEST_F(HttpServingTest, SigtermSaysGoodbyeToHttpClients) {
  ASSERT_NO_FATAL_FAILURE(StartAll());
  worker_->Signal(SIGKILL);  // requests now wait in the queue
  worker_.reset();
  std::pair<int, std::string> streamed, whole;
  std::thread a([&] {
    streamed = Curl({"-N", "http://" + http_ + "/v1/completions", "-d",
                     R"({"prompt": "Once upon a time", "max_tokens": 20, "stream": true})"});
  });
  std::thread b([&] {
    whole = Curl({"-w", "\nHTTP %{http_code}", "http://" + http_ + "/v1/completions", "-d",
                  R"({"prompt": "Once upon a time", "max_tokens": 20})"});
  });
  EXPECT_TRUE(WaitUntil([&] {  // (no ASSERT: the threads must be joined)
    grpc::ClientContext ctx;
    v1::StatusResponse st;
    return admin_->Status(&ctx, v1::StatusRequest(), &st).ok() && st.queue_depth() == 2;
  }));
  inference_.reset();
  admin_.reset();
  EXPECT_EQ(paged_->Signal(SIGTERM), 0) << paged_->output();
  paged_.reset();
  a.join();
  b.join();
  EXPECT_EQ(streamed.first, 0) << streamed.second;
  EXPECT_THAT(streamed.second, HasSubstr("data: {\"error\""));
  EXPECT_THAT(streamed.second, HasSubstr("shutting down"));
  EXPECT_THAT(streamed.second, HasSubstr("data: [DONE]"));
  EXPECT_EQ(whole.first, 0) << whole.second;
  EXPECT_THAT(whole.second, HasSubstr("HTTP 503"));
  EXPECT_THAT(whole.second, HasSubstr("\"code\":\"unavailable\""));
}

TEST_F(HttpServingTest, WithATokenTheApiNeedsIt) {
  ASSERT_NO_FATAL_FAILURE(StartAll({}, "s3cret"));
  ExpectApiError(HttpCall(http_, "GET", "/v1/models"), 401, "API key");
  ExpectApiError(Post("/v1/completions", {{"prompt", {1}}}, {{"Authorization", "Bearer nope"}}),
                 401, "API key");
  EXPECT_EQ(HttpCall(http_, "GET", "/metrics").status, 401);
  auto [code, out] =
      Curl({"-H", "Authorization: Bearer s3cret", "http://" + http_ + "/v1/completions", "-d",
            R"({"prompt":[1],"max_tokens":12,"temperature":0})"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(json::parse(out)["usage"]["completion_tokens"], 12);
  EXPECT_THAT(Metrics("s3cret"), HasSubstr("paged_requests_total{status=\"length\"} 1\n"));
}

TEST_F(HttpServingTest, ChatAnswersWhatGrpcAnswers) {
  // stories260K has no template of its own: name a format.
  ASSERT_NO_FATAL_FAILURE(StartAll({"--chat-template=chatml"}));
  const json messages = {{{"role", "system"}, {"content", "You tell stories."}},
                         {{"role", "user"}, {"content", "Once upon a time"}}};
  testing::HttpResult r = Post("/v1/chat/completions", {{"model", kModel},
                                                        {"messages", messages},
                                                        {"max_tokens", 30},
                                                        {"temperature", 0},
                                                        {"ignore_eos", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_THAT(j["id"].get<std::string>(), ::testing::StartsWith("chatcmpl-"));
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 30);
  v1::GenerateRequest g;
  for (const json& m : messages) {
    v1::ChatMessage* cm = g.mutable_chat()->add_messages();
    cm->set_role(m["role"].get<std::string>());
    cm->set_content(m["content"].get<std::string>());
  }
  g.mutable_chat()->set_add_generation_prompt(true);
  g.set_max_tokens(30);
  g.set_ignore_eos(true);
  v1::GenerateResponse::FinishReason reason{};
  const std::string grpc_text = GrpcText(g, &reason);
  EXPECT_EQ(j["choices"][0]["message"]["content"], grpc_text);

  // Streamed: the role first, then the same content.
  auto [code, events] = Curl({"-N", "http://" + http_ + "/v1/chat/completions", "-d",
                              json({{"messages", messages},
                                    {"max_tokens", 30},
                                    {"temperature", 0},
                                    {"ignore_eos", true},
                                    {"stream", true}})
                                  .dump()});
  ASSERT_EQ(code, 0) << events;
  const std::vector<std::string> data = testing::SseData(events);
  ASSERT_GE(data.size(), 2u) << events;
  EXPECT_EQ(json::parse(data[0])["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(json::parse(data[0])["object"], "chat.completion.chunk");
  std::string finish;
  bool done = false;
  EXPECT_EQ(StreamText(events, &finish, &done), grpc_text);
  EXPECT_EQ(finish, "length");
  EXPECT_TRUE(done);
}

}  // namespace
}  // namespace paged
