// The HTTP front end in-process (daemon/http/front_end.h): a Coordinator
// with a fake worker thread (no tokenizer: token prompts, no text), the real
// HTTP server on 127.0.0.1. Routes, the bearer token, OpenAI-shaped errors,
// completions whole and streamed, the queue-full 429, clients that go away
// while queued (their sequences are cancelled) and /metrics in the
// exposition grammar. The real model's text is checked by
// tests/integration/http_api_test.cc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "daemon/http/front_end.h"
#include "tests/unit/fake_coordinator.h"
#include "tests/unit/http_client.h"

namespace paged::http {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using testing::HttpCall;
using testing::RawConnection;

// A worker thread: each sequence's next token is 3 + (its position % 40), so
// the 10th token of a sequence from a 2-token prompt is 3 + 11 = 14.
class FakeWorker {
 public:
  explicit FakeWorker(Coordinator& c) : c_(c) {
    v1::Hello h;
    h.set_worker_id("fake0");
    h.set_device("fake");
    h.set_segment("fake-segment");
    h.mutable_plan()->set_link_h2d_bytes_per_s(1e6);
    auto l = c.AttachWorker(h, [] {});
    EXPECT_TRUE(l.ok()) << l.status();
    link_ = *l;
    thread_ = std::thread([this] { Run(); });
  }
  ~FakeWorker() {
    stop_ = true;
    thread_.join();
    c_.DetachWorker(*link_);
  }

 private:
  void Run() {
    uint64_t steps = 0;
    while (!stop_) {
      v1::CoordinatorMessage m;
      if (c_.NextMessage(*link_, &m, std::chrono::milliseconds(10)) !=
              Coordinator::Next::kMessage ||
          !m.has_step())
        continue;
      v1::WorkerMessage reply;
      v1::StepResult* r = reply.mutable_result();
      r->set_step_id(m.step().step_id());
      r->set_step_s(0.002);
      for (const v1::SeqStep& s : m.step().sequences())
        r->add_next_tokens(3 + (s.start_pos() + s.tokens_size()) % 40);
      ++steps;
      r->mutable_counters()->set_steps(steps);
      r->mutable_counters()->set_h2d_bytes(steps * 1000);
      r->mutable_counters()->set_d2h_bytes(steps * 10);
      r->mutable_counters()->set_busy_s(double(steps) * 0.002);
      if (!c_.OnWorkerMessage(*link_, reply).ok()) return;
    }
  }

  Coordinator& c_;
  std::shared_ptr<Coordinator::Link> link_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class HttpApiTest : public ::testing::Test {
 protected:
  void Start(bool worker, const std::string& token = "", int max_queue = 16) {
    auto c = Coordinator::Create(testing::FakeCoordinatorOptions(max_queue), {});
    ASSERT_TRUE(c.ok()) << c.status();
    coord_ = std::move(*c);
    if (worker) worker_ = std::make_unique<FakeWorker>(*coord_);
    HttpOptions o;
    o.address = "127.0.0.1:0";
    o.token = token;
    o.threads = 2;
    auto api = HttpApi::Start(coord_.get(), o);
    ASSERT_TRUE(api.ok()) << api.status();
    api_ = std::move(*api);
    addr_ = api_->address();
  }
  void TearDown() override {
    if (api_) api_->Stop();
    worker_.reset();
    api_.reset();
    coord_.reset();
  }

  testing::HttpResult Post(const std::string& path, const std::string& body,
                           const std::vector<std::pair<std::string, std::string>>& h = {}) {
    return HttpCall(addr_, "POST", path, body, h);
  }

  static void ExpectApiError(const testing::HttpResult& r, int status, const std::string& type,
                             const std::string& what) {
    EXPECT_EQ(r.status, status) << r.body << r.error;
    EXPECT_EQ(r.headers.at("content-type"), "application/json");
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    ASSERT_TRUE(j.contains("error")) << r.body;
    const json& e = j["error"];
    EXPECT_EQ(e["type"], type) << r.body;
    EXPECT_THAT(e["message"].get<std::string>(), HasSubstr(what));
    EXPECT_TRUE(e.contains("param"));
    EXPECT_TRUE(e.contains("code"));
  }

  bool WaitUntil(const std::function<bool()>& pred) {
    for (int i = 0; i < 500; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
  }

  std::unique_ptr<Coordinator> coord_;
  std::unique_ptr<FakeWorker> worker_;
  std::unique_ptr<HttpApi> api_;
  std::string addr_;
};

TEST_F(HttpApiTest, RoutesAndErrors) {
  ASSERT_NO_FATAL_FAILURE(Start(false));
  testing::HttpResult r = HttpCall(addr_, "GET", "/livez");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  EXPECT_EQ(r.headers["x-content-type-options"], "nosniff");
  r = HttpCall(addr_, "GET", "/v1/models");
  ASSERT_EQ(r.status, 200);
  const json models = json::parse(r.body);
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "fake");
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_EQ(models["data"][0]["owned_by"], "paged");
  EXPECT_GT(models["data"][0]["created"].get<int64_t>(), 1600000000);
  r = HttpCall(addr_, "GET", "/v1/models/fake");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body)["id"], "fake");
  ExpectApiError(HttpCall(addr_, "GET", "/v1/models/gpt-4"), 404, "invalid_request_error",
                 "does not exist");
  ExpectApiError(HttpCall(addr_, "GET", "/v1/engines"), 404, "invalid_request_error",
                 "Invalid URL (GET /v1/engines)");
  r = HttpCall(addr_, "GET", "/v1/completions");
  ExpectApiError(r, 405, "invalid_request_error", "use POST");
  EXPECT_EQ(r.headers["allow"], "POST");
  ExpectApiError(HttpCall(addr_, "DELETE", "/metrics"), 405, "invalid_request_error", "use GET");
  ExpectApiError(Post("/v1/completions", "{nope"), 400, "invalid_request_error", "valid JSON");
  ExpectApiError(Post("/v1/completions", R"({"prompt":"text needs a tokenizer"})"), 400,
                 "invalid_request_error", "tokenizer");
  ExpectApiError(Post("/v1/completions", R"({"prompt":[1],"max_tokens":1000})"), 400,
                 "invalid_request_error", "context");
  ExpectApiError(Post("/v1/completions", R"({"model":"other","prompt":[1]})"), 404,
                 "invalid_request_error", "does not exist");
  ExpectApiError(Post("/v1/completions", std::string(9 << 20, ' ')), 413, "invalid_request_error",
                 "over the limit");
  // A chat prompt without a chat template: a 4xx/5xx in OpenAI's shape.
  r = Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}]})");
  EXPECT_TRUE(r.status == 400 || r.status == 501) << r.status << r.body;
  EXPECT_TRUE(json::parse(r.body, nullptr, false).contains("error")) << r.body;
}

TEST_F(HttpApiTest, TheTokenIsRequiredWhenSet) {
  ASSERT_NO_FATAL_FAILURE(Start(true, "s3cret"));
  EXPECT_EQ(HttpCall(addr_, "GET", "/health").status, 200);  // probes are always open
  EXPECT_EQ(HttpCall(addr_, "GET", "/livez").status, 200);
  // With a token, any Host: a page cannot know the token.
  EXPECT_EQ(HttpCall(addr_, "GET", "/v1/models", "",
                     {{"Host", "evil.example"}, {"Authorization", "Bearer s3cret"}})
                .status,
            200);
  for (const char* path : {"/v1/models", "/metrics"}) {
    testing::HttpResult r = HttpCall(addr_, "GET", path);
    ExpectApiError(r, 401, "invalid_request_error", "API key");
    EXPECT_EQ(r.headers["www-authenticate"], "Bearer");
    EXPECT_EQ(json::parse(r.body)["error"]["code"], "invalid_api_key");
    ExpectApiError(HttpCall(addr_, "GET", path, "", {{"Authorization", "Bearer wrong"}}), 401,
                   "invalid_request_error", "API key");
    EXPECT_EQ(HttpCall(addr_, "GET", path, "", {{"Authorization", "Bearer s3cret"}}).status, 200);
  }
  ExpectApiError(Post("/v1/completions", R"({"prompt":[1]})"), 401, "invalid_request_error",
                 "API key");
  EXPECT_EQ(
      Post("/v1/completions", R"({"prompt":[1]})", {{"Authorization", "Bearer s3cret"}}).status,
      200);
}

TEST_F(HttpApiTest, CompletionsWholeAndStreamed) {
  ASSERT_NO_FATAL_FAILURE(Start(true));
  testing::HttpResult r = Post("/v1/completions", R"({"prompt":[1,5],"max_tokens":8})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "fake");
  EXPECT_THAT(j["id"].get<std::string>(), ::testing::StartsWith("cmpl-"));
  EXPECT_EQ(r.headers["x-request-id"], j["id"]);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["choices"][0]["text"], "");  // no tokenizer: ids only
  EXPECT_EQ(j["usage"],
            json({{"prompt_tokens", 2}, {"completion_tokens", 8}, {"total_tokens", 10}}));

  // A stop id ends it with "stop": the 10th token is 3 + 11 = 14.
  r = Post("/v1/completions", R"({"prompt":[1,5],"max_tokens":20,"stop_token_ids":[14]})");
  j = json::parse(r.body);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["completion_tokens"], 10);

  // Streamed with the usage chunk: the final chunk, the usage, [DONE].
  r = Post(
      "/v1/completions",
      R"({"prompt":[1,5],"max_tokens":4,"stream":true,"stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  EXPECT_EQ(r.headers["transfer-encoding"], "chunked");
  std::vector<std::string> events = testing::SseData(r.body);
  ASSERT_GE(events.size(), 3u) << r.body;
  EXPECT_EQ(events.back(), "[DONE]");
  const json usage = json::parse(events[events.size() - 2]);
  EXPECT_EQ(usage["choices"], json::array());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 4);
  const json last = json::parse(events[events.size() - 3]);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(last["usage"].is_null());

  // Several in parallel, each whole.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      testing::HttpResult x = Post("/v1/completions", R"({"prompt":[1],"max_tokens":30})");
      ok += x.status == 200 && json::parse(x.body)["usage"]["completion_tokens"] == 30;
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
}

TEST_F(HttpApiTest, AFullQueueIs429AndClientsThatLeaveAreCancelled) {
  ASSERT_NO_FATAL_FAILURE(Start(/*worker=*/false, "", /*max_queue=*/2));
  // Two requests wait in the queue (no worker); a third does not fit.
  const std::string body = R"({"prompt":[1],"max_tokens":5})";
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
      "application/json\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  auto a = std::make_unique<RawConnection>(addr_);
  auto b = std::make_unique<RawConnection>(addr_);
  ASSERT_TRUE(a->Send(req));
  ASSERT_TRUE(b->Send(req));
  ASSERT_TRUE(WaitUntil([&] { return coord_->Status().queue_depth() == 2; }));
  testing::HttpResult r = Post("/v1/completions", body);
  ExpectApiError(r, 429, "rate_limit_error", "queue is full");
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "queue_full");

  // The waiting clients go away: their sequences are cancelled at once.
  a.reset();
  b.reset();
  ASSERT_TRUE(WaitUntil([&] { return coord_->Status().queue_depth() == 0; }));
  int finished = 0;
  const v1::ListSequencesResponse seqs = coord_->ListSequences();
  for (const v1::SequenceInfo& s : seqs.sequences()) {
    EXPECT_EQ(s.state(), "FINISHED");
    EXPECT_THAT(s.request_id(), ::testing::StartsWith("cmpl-"));
    ++finished;
  }
  EXPECT_EQ(finished, 2);
  const std::string metrics = HttpCall(addr_, "GET", "/metrics").body;
  EXPECT_THAT(metrics, HasSubstr("paged_requests_total{status=\"cancelled\"} 2\n"));
  EXPECT_THAT(metrics, HasSubstr("paged_requests_total{status=\"rejected\"} 1\n"));
}

// Issue 15, defect 9: liveness and readiness apart. Ready only with a worker
// attached (and the store READY: daemon/store_probe.h, tested with real
// processes in tests/integration/readiness_test.cc).
TEST_F(HttpApiTest, LivenessAndReadiness) {
  ASSERT_NO_FATAL_FAILURE(Start(false));
  ASSERT_TRUE(WaitUntil([&] { return coord_->Live(); }));
  EXPECT_EQ(HttpCall(addr_, "GET", "/livez").status, 200);
  for (const char* path : {"/readyz", "/health"}) {
    testing::HttpResult r = HttpCall(addr_, "GET", path);
    EXPECT_EQ(r.status, 503) << path;
    EXPECT_EQ(r.body, "not ready: no worker is attached\n");
  }
  worker_ = std::make_unique<FakeWorker>(*coord_);
  EXPECT_EQ(HttpCall(addr_, "GET", "/readyz").status, 200);
  EXPECT_EQ(HttpCall(addr_, "GET", "/health").body, "ok\n");
  ExpectApiError(HttpCall(addr_, "POST", "/readyz"), 405, "invalid_request_error", "use GET");
}

// Issue 15, defect 5: without a token, only requests addressed to this
// machine (or to --http-allowed-hosts) are served, so that a web page cannot
// drive the API (DNS rebinding, a cross-site text/plain POST).
TEST_F(HttpApiTest, WithoutATokenOnlyLoopbackHostsAndOrigins) {
  ASSERT_NO_FATAL_FAILURE(Start(true));
  const std::string body = R"({"prompt":[1],"max_tokens":2})";
  for (const char* host :
       {"localhost", "LOCALHOST:8000", "127.0.0.1:9", "127.1.2.3", "[::1]:80", "app.localhost"}) {
    testing::HttpResult r = Post("/v1/completions", body, {{"Host", host}});
    EXPECT_EQ(r.status, 200) << host << " " << r.body;
    EXPECT_EQ(r.headers["x-content-type-options"], "nosniff");
  }
  for (const char* host : {"evil.example", "evil.example:8000", "10.0.0.1", "localhost.evil.com",
                           "127.0.0.1.evil.com"}) {
    testing::HttpResult r = Post("/v1/completions", body, {{"Host", host}});
    ExpectApiError(r, 403, "invalid_request_error", "not this machine");
    EXPECT_EQ(json::parse(r.body)["error"]["code"], "forbidden_host") << host;
  }
  // A page of another site posting text/plain (a CORS-simple request).
  ExpectApiError(Post("/v1/completions", body,
                      {{"Origin", "http://evil.example"}, {"Content-Type", "text/plain"}}),
                 403, "invalid_request_error", "Origin");
  ExpectApiError(HttpCall(addr_, "GET", "/metrics", "", {{"Origin", "null"}}), 403,
                 "invalid_request_error", "Origin");
  EXPECT_EQ(Post("/v1/completions", body, {{"Origin", "http://localhost:3000"}}).status, 200);
  // Probes answer whatever the Host (load balancers use the machine's IP).
  EXPECT_EQ(HttpCall(addr_, "GET", "/livez", "", {{"Host", "10.0.0.1:8000"}}).status, 200);

  // Named hosts are allowed too.
  api_->Stop();
  api_.reset();
  HttpOptions o;
  o.address = "127.0.0.1:0";
  o.allowed_hosts = "api.example.com, 10.0.0.1";
  auto api = HttpApi::Start(coord_.get(), o);
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_EQ(
      HttpCall((*api)->address(), "GET", "/v1/models", "", {{"Host", "api.example.com"}}).status,
      200);
  EXPECT_EQ(HttpCall((*api)->address(), "GET", "/v1/models", "", {{"Host", "10.0.0.1:80"}}).status,
            200);
  EXPECT_EQ(HttpCall((*api)->address(), "GET", "/v1/models", "", {{"Host", "10.0.0.2"}}).status,
            403);
}

TEST(HttpHostTest, LoopbackNames) {
  EXPECT_EQ(HostOf("Example.COM:80"), "example.com");
  EXPECT_EQ(HostOf("[::1]:8000"), "::1");
  EXPECT_EQ(HostOf("http://localhost:3000"), "localhost");
  EXPECT_EQ(HostOf("https://a.b/path"), "a.b");
  EXPECT_EQ(HostOf("::1"), "");  // IPv6 in a Host needs brackets
  EXPECT_TRUE(IsLoopbackHost("localhost."));
  EXPECT_TRUE(IsLoopbackHost("127.255.0.1"));
  EXPECT_FALSE(IsLoopbackHost("128.0.0.1"));
  EXPECT_FALSE(IsLoopbackHost("[::2]"));
  EXPECT_FALSE(IsLoopbackHost(""));
}

// Issue 15, defect 1, through the API: with 2,000 idle connections open,
// /health and a completion still answer.
TEST_F(HttpApiTest, AnswersWithTwoThousandIdleConnectionsOpen) {
  ASSERT_NO_FATAL_FAILURE(Start(true));
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 2000; ++i) {
    idle.push_back(std::make_unique<RawConnection>(addr_));
    ASSERT_TRUE(idle.back()->connected()) << i;
  }
  auto t0 = std::chrono::steady_clock::now();
  testing::HttpResult h = HttpCall(addr_, "GET", "/health");
  const double health_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(h.status, 200) << h.error;
  t0 = std::chrono::steady_clock::now();
  testing::HttpResult c = Post("/v1/completions", R"({"prompt":[1,5],"max_tokens":8})");
  const double completion_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(c.status, 200) << c.error << c.body;
  std::printf("with 2000 idle connections: /health %.1f ms, an 8-token completion %.1f ms\n",
              health_ms, completion_ms);
}

// Issue 15, defect 4: on shutdown a streaming client gets an error event and
// [DONE] (and the end of the chunked body), a waiting one a 503.
TEST_F(HttpApiTest, StopSaysGoodbye) {
  ASSERT_NO_FATAL_FAILURE(Start(/*worker=*/false));  // requests wait in the queue
  const auto request = [](const std::string& body) {
    return "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  };
  RawConnection stream(addr_);
  ASSERT_TRUE(stream.Send(request(R"({"prompt":[1],"max_tokens":5,"stream":true})")));
  ASSERT_TRUE(stream.ReadUntil("text/event-stream"));
  RawConnection whole(addr_);
  ASSERT_TRUE(whole.Send(request(R"({"prompt":[1],"max_tokens":5})")));
  ASSERT_TRUE(WaitUntil([&] { return coord_->Status().queue_depth() == 2; }));
  api_->Stop();
  EXPECT_TRUE(stream.WaitClosed(5));
  EXPECT_THAT(stream.received(), HasSubstr("data: {\"error\""));
  EXPECT_THAT(stream.received(), HasSubstr("shutting down"));
  EXPECT_THAT(stream.received(), HasSubstr("data: [DONE]"));
  EXPECT_THAT(stream.received(), HasSubstr("\r\n0\r\n\r\n"));  // the chunked body ends
  EXPECT_TRUE(whole.WaitClosed(5));
  EXPECT_THAT(whole.received(), HasSubstr("HTTP/1.1 503"));
  EXPECT_THAT(whole.received(), HasSubstr("\"code\":\"unavailable\""));
}

void ExpectPrometheusText(const std::string& text) {
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_THAT(testing::NonExpositionLines(text), ::testing::IsEmpty());
}

// The value of the sample `series` (name and labels as rendered); NaN when absent.
double Sample(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return std::nan("");
  return std::stod(text.substr(at + series.size() + 2));
}

TEST_F(HttpApiTest, MetricsAfterTraffic) {
  ASSERT_NO_FATAL_FAILURE(Start(true));
  ASSERT_EQ(Post("/v1/completions", R"({"prompt":[1,5],"max_tokens":12})").status, 200);
  testing::HttpResult r = HttpCall(addr_, "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  ExpectPrometheusText(r.body);
  EXPECT_THAT(r.body, HasSubstr("paged_requests_total{status=\"length\"} 1\n"));
  EXPECT_THAT(r.body, HasSubstr("paged_generated_tokens_total 12\n"));
  EXPECT_THAT(r.body, HasSubstr("paged_prompt_tokens_total 2\n"));
  EXPECT_THAT(r.body, HasSubstr("paged_time_to_first_token_seconds_count 1\n"));
  EXPECT_THAT(r.body, HasSubstr("paged_workers_attached 1\n"));
  EXPECT_THAT(r.body, HasSubstr("paged_worker_restarts_total{worker=\"fake0\"} 0\n"));
  EXPECT_THAT(r.body,
              HasSubstr("paged_worker_link_h2d_bytes_per_second{worker=\"fake0\"} 1000000\n"));
  // 1000 bytes per 2 ms step: 500 KB/s achieved, half the 1 MB/s link.
  EXPECT_NEAR(Sample(r.body, "paged_worker_h2d_bytes_per_second{worker=\"fake0\"}"), 5e5, 1);
  EXPECT_NEAR(Sample(r.body, "paged_worker_pcie_bound_fraction{worker=\"fake0\"}"), 0.5, 1e-6);
  EXPECT_THAT(r.body, HasSubstr("paged_kv_blocks_free 64\n"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      r.body, m, std::regex("paged_worker_h2d_bytes_total\\{worker=\"fake0\"\\} ([0-9]+)")));
  EXPECT_GT(std::stoll(m[1]), 0);
  ASSERT_TRUE(std::regex_search(r.body, m, std::regex("paged_step_seconds_count ([0-9]+)")));
  EXPECT_GE(std::stoll(m[1]), 12);
}

}  // namespace
}  // namespace paged::http
