// The C++ client SDK (client/sdk) and pagectl's server commands against a
// small in-test fake of the paged.v1 Inference and Admin services on a unix
// socket: status mapping, argument validation, streaming, bearer token,
// deadlines, and the tables and JSON pagectl prints.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <sstream>
#include <thread>

#include "client/pagectl/chat.h"
#include "client/pagectl/commands.h"
#include "client/pagectl/service_format.h"
#include "client/sdk/paged_client.h"
#include "paged/v1/admin.grpc.pb.h"
#include "paged/v1/inference.grpc.pb.h"
#include "proto/api_convert.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using client::Client;
using client::FinishReason;
using client::GenerateOptions;
using client::TokenChunk;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// ---- the fake server ------------------------------------------------------------

struct FakeState {
  std::mutex mu;
  std::string required_token;  // when set: calls without "Bearer <it>" are UNAUTHENTICATED
  std::vector<std::string>
      auth_seen;  // the authorization metadata of each Generate ("" when absent)
  std::atomic<int> generate_calls{0};
  std::atomic<bool> slow_admin{false};
  std::string last_drained;
  std::vector<v1::ChatMessages> chats;  // the chat prompt of each chat Generate
  // Each Generate's request_id and resume.received (-1: no resume).
  std::vector<std::pair<std::string, int>> resumes;
};

grpc::Status CheckToken(FakeState& st, grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  const auto it = md.find("authorization");
  const std::string auth = it == md.end() ? "" : std::string(it->second.data(), it->second.size());
  if (!st.required_token.empty() && auth != "Bearer " + st.required_token) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or wrong bearer token");
  }
  return grpc::Status::OK;
}

class FakeInference final : public v1::Inference::Service {
 public:
  explicit FakeInference(FakeState& st) : st_(st) {}

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* w) override {
    ++st_.generate_calls;
    {
      const auto& md = ctx->client_metadata();
      const auto it = md.find("authorization");
      std::lock_guard<std::mutex> lock(st_.mu);
      st_.auth_seen.push_back(it == md.end() ? ""
                                             : std::string(it->second.data(), it->second.size()));
    }
    if (grpc::Status s = CheckToken(st_, ctx); !s.ok()) return s;
    if (req->has_chat()) return Chat(*req, w);
    if (req->text() == "busy")
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue is full (64 waiting)");
    if (req->text() == "slow") {
      for (int i = 0; i < 1000 && !ctx->IsCancelled(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    }
    {
      std::lock_guard<std::mutex> lock(st_.mu);
      st_.resumes.emplace_back(req->request_id(),
                               req->has_resume() ? req->resume().received() : -1);
    }
    // A coordinator restart: the stream breaks after two tokens; the
    // journal then resumes it ("fail-midway"), or knows nothing of it.
    const bool breaks = req->text() == "fail-midway" || req->text() == "forgotten";
    if (req->has_resume() && req->text() == "forgotten")
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no sequence to resume");
    const int n = req->max_tokens();
    for (int i = req->has_resume() ? req->resume().received() : 0; i < n; ++i) {
      v1::GenerateResponse m;
      m.add_token_ids(100 + i);
      if (i != 1) m.set_text("t" + std::to_string(i) + " ");  // token 1 ends mid-character
      m.set_sequence_id(7);
      m.set_request_id(req->request_id());
      if (breaks && !req->has_resume() && i == 2) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker lost and no other worker");
      }
      if (i == n - 1) {
        m.set_finish_reason(v1::GenerateResponse::LENGTH);
        v1::Usage* u = m.mutable_usage();
        u->set_prompt_tokens(req->has_tokens() ? req->tokens().ids_size()
                                               : int(req->text().size()));
        u->set_generated_tokens(n);
        u->set_time_to_first_token_s(0.01);
        u->set_total_s(0.5);
        for (int k = 0; k < n; ++k) u->add_step_s(0.05);
      }
      w->Write(m);
    }
    return grpc::Status::OK;
  }

  // A chat prompt is answered " you said: " + the last message's content in
  // two messages (finish STOP); a last message "no template" is refused as a
  // server without a chat template refuses it.
  grpc::Status Chat(const v1::GenerateRequest& req, grpc::ServerWriter<v1::GenerateResponse>* w) {
    {
      std::lock_guard<std::mutex> lock(st_.mu);
      st_.chats.push_back(req.chat());
    }
    const std::string last =
        req.chat().messages().empty() ? "" : req.chat().messages().rbegin()->content();
    if (last == "no template") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "the model has no chat template; start paged with --chat-template NAME");
    }
    v1::GenerateResponse m;
    m.add_token_ids(200);
    m.set_text(" you said:");
    w->Write(m);
    m.Clear();
    m.add_token_ids(201);
    m.set_text(" " + last);
    m.set_finish_reason(v1::GenerateResponse::STOP);
    m.mutable_usage()->set_generated_tokens(2);
    w->Write(m);
    return grpc::Status::OK;
  }

  grpc::Status Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                        v1::TokenizeResponse* resp) override {
    if (grpc::Status s = CheckToken(st_, ctx); !s.ok()) return s;
    if (req->add_bos()) resp->add_ids(1);
    for (char c : req->text()) resp->add_ids(int(static_cast<unsigned char>(c)));
    return grpc::Status::OK;
  }

 private:
  FakeState& st_;
};

class FakeAdmin final : public v1::Admin::Service {
 public:
  explicit FakeAdmin(FakeState& st) : st_(st) {}

  grpc::Status Status(grpc::ServerContext* ctx, const v1::StatusRequest*,
                      v1::StatusResponse* r) override {
    if (grpc::Status s = CheckToken(st_, ctx); !s.ok()) return s;
    if (st_.slow_admin) {
      for (int i = 0; i < 1000 && !ctx->IsCancelled(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    r->set_model("llama 5 layers, dim 64, vocab 512 (f32)");
    r->set_segment("paged-test");
    r->set_store_state("READY");
    r->set_store_alive(true);
    r->set_store_pid(4242);
    r->set_ready(true);
    r->set_queue_depth(3);
    r->set_running_sequences(2);
    r->set_tokens_per_s(123.4);
    r->set_bytes_paged_per_s(2.5e9);
    r->set_kv_blocks_total(256);
    r->set_kv_blocks_used(64);
    for (int i = 0; i < 2; ++i) {
      v1::WorkerInfo* w = r->add_workers();
      w->set_worker_id("cpu:" + std::to_string(i));
      w->set_device("cpu");
      w->set_state(i == 0 ? "ATTACHED" : "DRAINING");
      w->set_running_sequences(1);
      w->mutable_plan()->set_resident_layers(2);
      w->mutable_plan()->set_paged_layers(3);
      w->mutable_plan()->set_slots(2);
      w->mutable_plan()->set_budget_bytes(uint64_t(200) << 20);
      w->mutable_counters()->set_steps(40 + uint64_t(i));
      w->mutable_counters()->set_tokens(900);
      w->set_restarts(i);
      if (i == 0) {  // pages experts: 148 of 200 routed experts from its cache
        w->mutable_plan()->set_expert_slots(18);
        w->mutable_plan()->set_total_experts(32);
        w->mutable_plan()->set_expert_cache_bytes(uint64_t(18) << 20);
        v1::WorkerCounters* c = w->mutable_counters();
        c->set_expert_hits(148);
        c->set_expert_misses(40);
        c->set_expert_host(12);
        c->set_expert_evictions(30);
        c->set_expert_admitted(5);
        c->set_expert_prefetched(0);
        c->set_h2d_expert_bytes(40 << 20);
        c->set_host_expert_bytes(12 << 20);
        // And runs the hybrid step: 84% of each paged matrix on the host.
        c->set_host_weight_bytes(30 << 20);
        c->set_host_share(0.84);
      }
    }
    return grpc::Status::OK;
  }
  grpc::Status ListSequences(grpc::ServerContext* ctx, const v1::ListSequencesRequest*,
                             v1::ListSequencesResponse* r) override {
    if (grpc::Status s = CheckToken(st_, ctx); !s.ok()) return s;
    v1::SequenceInfo* q = r->add_sequences();
    q->set_sequence_id(7);
    q->set_request_id("req-a");
    q->set_state("RUNNING");
    q->set_worker_id("cpu:0");
    q->set_prompt_tokens(5);
    q->set_generated_tokens(11);
    return grpc::Status::OK;
  }
  grpc::Status CancelSequence(grpc::ServerContext* ctx, const v1::CancelSequenceRequest* req,
                              v1::CancelSequenceResponse*) override {
    if (grpc::Status s = CheckToken(st_, ctx); !s.ok()) return s;
    if (req->sequence_id() != 7) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "no sequence " + std::to_string(req->sequence_id()));
    }
    return grpc::Status::OK;
  }
  grpc::Status DrainWorker(grpc::ServerContext* ctx, const v1::DrainWorkerRequest* req,
                           v1::DrainWorkerResponse*) override {
    if (grpc::Status s = CheckToken(st_, ctx); !s.ok()) return s;
    if (req->worker_id() != "cpu:0")
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no worker " + req->worker_id());
    std::lock_guard<std::mutex> lock(st_.mu);
    st_.last_drained = req->worker_id();
    return grpc::Status::OK;
  }
  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* r) override {
    if (grpc::Status s = CheckToken(st_, ctx); !s.ok()) return s;
    v1::ModelInfo* m = r->add_models();
    m->set_name("stories260K");
    m->set_architecture("llama");
    m->set_n_layers(5);
    m->set_hidden_size(64);
    m->set_vocab_size(512);
    m->set_max_context(512);
    m->set_weight_format("f32");
    m->set_chat_template("llama2");
    return grpc::Status::OK;
  }

 private:
  FakeState& st_;
};

class FakeServer {
 public:
  FakeServer() : inference_(state), admin_(state) {
    target_ = "unix://" + dir_.File("paged.sock");
    grpc::ServerBuilder b;
    b.AddListeningPort(target_, grpc::InsecureServerCredentials());
    b.RegisterService(&inference_);
    b.RegisterService(&admin_);
    server_ = b.BuildAndStart();
  }
  ~FakeServer() { server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2)); }
  const std::string& target() const { return target_; }
  bool ok() const { return server_ != nullptr; }

  FakeState state;

 private:
  testing::TempDir dir_;
  std::string target_;
  FakeInference inference_;
  FakeAdmin admin_;
  std::unique_ptr<grpc::Server> server_;
};

// ---- status mapping -----------------------------------------------------------------

TEST(GrpcStatusTest, EveryCodeMapsToTheSameAbslCodeWithTheServersMessage) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  for (int code = 1; code <= 16; ++code) {
    const absl::Status s =
        FromGrpcStatus(grpc::Status(grpc::StatusCode(code), "server says " + std::to_string(code)));
    EXPECT_EQ(int(s.code()), code);
    EXPECT_EQ(s.message(), "server says " + std::to_string(code));
    const grpc::Status back = ToGrpcStatus(s);
    EXPECT_EQ(int(back.error_code()), code);
    EXPECT_EQ(back.error_message(), "server says " + std::to_string(code));
  }
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full")),
            absl::ResourceExhaustedError("queue full"));
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode(99), "odd")), absl::UnknownError("odd"));
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

TEST(FinishReasonTest, WireValuesRoundTripAndServerOnlyEndingsAreErrors) {
  for (FinishReason r : {FinishReason::kNone, FinishReason::kLength, FinishReason::kEos,
                         FinishReason::kStop, FinishReason::kCancelled, FinishReason::kError}) {
    EXPECT_EQ(FromProto(ToProto(r)), r) << FinishReasonName(r);
  }
  EXPECT_EQ(ToProto(FinishReason::kDeadline), v1::GenerateResponse::ERROR);
  EXPECT_EQ(ToProto(FinishReason::kShutdown), v1::GenerateResponse::ERROR);
  EXPECT_EQ(FromProto(v1::GenerateResponse::FinishReason(42)), FinishReason::kNone);
  EXPECT_STREQ(FinishReasonName(FinishReason::kEos), "eos");
  EXPECT_STREQ(FinishReasonName(FinishReason::kNone), "");
}

// ---- argument validation --------------------------------------------------------------

TEST(ValidateGenerateOptionsTest, RejectsWhatTheServerWouldReject) {
  GenerateOptions good;
  good.prompt = "Once upon a time";
  EXPECT_TRUE(client::ValidateGenerateOptions(good).ok());
  GenerateOptions ids;
  ids.prompt_tokens = {1, 2, 3};
  EXPECT_TRUE(client::ValidateGenerateOptions(ids).ok());

  struct Case {
    const char* name;
    std::function<void(GenerateOptions&)> edit;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"no prompt", [](GenerateOptions& o) { o.prompt.clear(); }, "no prompt"},
      {"both prompts", [](GenerateOptions& o) { o.prompt_tokens = {1}; }, "only one of"},
      {"text and chat",
       [](GenerateOptions& o) {
         o.messages = {{"user", "hi"}};
       },
       "only one of"},
      {"chat role empty",
       [](GenerateOptions& o) {
         o.prompt.clear(), o.messages = {{"user", "hi"}, {"", "x"}};
       },
       "chat message 1 has no role"},
      {"negative id",
       [](GenerateOptions& o) {
         o.prompt.clear(), o.prompt_tokens = {1, -5};
       },
       "prompt token 1 is negative"},
      {"max_tokens 0", [](GenerateOptions& o) { o.max_tokens = 0; }, "max_tokens must be > 0"},
      {"max_tokens < 0", [](GenerateOptions& o) { o.max_tokens = -3; },
       "max_tokens must be > 0 (got -3)"},
      {"temperature < 0", [](GenerateOptions& o) { o.temperature = -0.5f; },
       "temperature must be >= 0"},
      {"temperature nan", [](GenerateOptions& o) { o.temperature = std::nanf(""); }, "temperature"},
      {"top_k < 0", [](GenerateOptions& o) { o.top_k = -1; }, "top_k must be >= 0"},
      {"top_p 0", [](GenerateOptions& o) { o.top_p = 0.f; }, "top_p must be in (0, 1]"},
      {"top_p > 1", [](GenerateOptions& o) { o.top_p = 1.5f; }, "top_p must be in (0, 1]"},
      {"stop id < 0", [](GenerateOptions& o) { o.stop_token_ids = {-1}; }, "stop token id -1"},
      {"empty stop", [](GenerateOptions& o) { o.stop_strings = {""}; }, "stop string is empty"},
      {"timeout 0", [](GenerateOptions& o) { o.timeout = absl::ZeroDuration(); },
       "timeout must be > 0"},
  };
  for (const Case& c : cases) {
    GenerateOptions o = good;
    c.edit(o);
    const absl::Status s = client::ValidateGenerateOptions(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.message)) << c.name;
  }
}

TEST(ClientTest, InvalidArgumentsNeverReachTheServer) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto c = Client::Connect(server.target());
  ASSERT_TRUE(c.ok()) << c.status();
  GenerateOptions o;
  o.prompt = "hi";
  o.max_tokens = 0;
  EXPECT_EQ(c->Generate(o).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server.state.generate_calls.load(), 0);
  EXPECT_EQ(c->Drain("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Status(absl::ZeroDuration()).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- connecting -------------------------------------------------------------------------

TEST(ConnectTest, AMissingUnixSocketFailsClearly) {
  testing::TempDir dir;
  const std::string path = dir.File("nobody-home.sock");
  auto c = Client::Connect("unix://" + path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(path + " does not exist"));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("is the server running?"));

  testing::WriteFile(dir.File("plain-file"), "x");
  auto f = Client::Connect("unix:" + dir.File("plain-file"));
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("is not a socket"));

  EXPECT_EQ(Client::Connect("").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConnectTest, AnUnreachableTcpServerFailsWithinTheConnectTimeout) {
  client::ConnectOptions o;
  o.connect_timeout = absl::Milliseconds(300);
  const auto t0 = std::chrono::steady_clock::now();
  auto c = Client::Connect("127.0.0.1:1", "", o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("127.0.0.1:1"));
  EXPECT_LT(s, 5.0);
}

TEST(ConnectTest, ALazyClientFailsOnItsFirstCall) {
  testing::TempDir dir;
  client::ConnectOptions lazy;
  lazy.connect_timeout = absl::ZeroDuration();
  auto c = Client::Connect("unix://" + dir.File("later.sock"), "", lazy);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->Status(absl::Seconds(2)).status().code(), absl::StatusCode::kUnavailable);
}

// ---- calls against the fake ---------------------------------------------------------------

TEST(ClientTest, GenerateStreamsEveryChunkAndReturnsTheWholeResult) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto c = Client::Connect(server.target());
  ASSERT_TRUE(c.ok()) << c.status();
  GenerateOptions o;
  o.prompt_tokens = {1};
  o.max_tokens = 4;
  o.request_id = "mine";
  std::vector<TokenChunk> chunks;
  auto r = c->Generate(o, [&](const TokenChunk& ch) { chunks.push_back(ch); });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(chunks.size(), 4u);
  EXPECT_THAT(chunks[0].token_ids, ElementsAre(100));
  EXPECT_EQ(chunks[0].text, "t0 ");
  EXPECT_THAT(chunks[1].token_ids, ElementsAre(101));  // no text yet: mid-character
  EXPECT_EQ(chunks[1].text, "");
  EXPECT_THAT(r->token_ids, ElementsAre(100, 101, 102, 103));
  EXPECT_EQ(r->text, "t0 t2 t3 ");
  EXPECT_EQ(r->finish_reason, FinishReason::kLength);
  EXPECT_STREQ(client::FinishReasonName(r->finish_reason), "length");
  EXPECT_EQ(r->usage.prompt_tokens, 1);
  EXPECT_EQ(r->usage.generated_tokens, 4);
  EXPECT_DOUBLE_EQ(r->usage.time_to_first_token_s, 0.01);
  EXPECT_EQ(r->usage.step_s.size(), 4u);
  EXPECT_EQ(r->sequence_id, 7u);
  EXPECT_EQ(r->request_id, "mine");
  // No callback is fine too.
  auto quiet = c->Generate(o);
  ASSERT_TRUE(quiet.ok());
  EXPECT_EQ(quiet->token_ids.size(), 4u);
}

TEST(ClientTest, ServerErrorsComeBackWithTheirCodeAndMessage) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto c = Client::Connect(server.target());
  ASSERT_TRUE(c.ok()) << c.status();
  GenerateOptions o;
  o.prompt = "busy";
  auto r = c->Generate(o);
  EXPECT_EQ(r.status(), absl::ResourceExhaustedError("queue is full (64 waiting)"));

  o.prompt = "fail-midway";
  o.resume_within = absl::ZeroDuration();  // no resuming
  int delivered = 0;
  r = c->Generate(o, [&](const TokenChunk&) { ++delivered; });
  EXPECT_EQ(r.status(), absl::UnavailableError("worker lost and no other worker"));
  EXPECT_EQ(delivered, 2);  // what came before the error stays delivered

  EXPECT_EQ(c->Cancel(9), absl::NotFoundError("no sequence 9"));
  EXPECT_EQ(c->Drain("cuda:5"), absl::NotFoundError("no worker cuda:5"));
}

// A broken stream (the coordinator restarted) is resumed under the
// request's id from the tokens received: the caller sees one whole stream.
TEST(ClientTest, ABrokenStreamIsResumedWhereItBroke) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto c = Client::Connect(server.target());
  ASSERT_TRUE(c.ok()) << c.status();
  GenerateOptions o;
  o.prompt = "fail-midway";
  o.max_tokens = 5;
  std::vector<int32_t> seen;
  auto r = c->Generate(o, [&](const TokenChunk& ch) {
    seen.insert(seen.end(), ch.token_ids.begin(), ch.token_ids.end());
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->token_ids, ElementsAre(100, 101, 102, 103, 104));
  EXPECT_EQ(seen, r->token_ids);  // each token once
  EXPECT_EQ(r->finish_reason, FinishReason::kLength);
  {
    std::lock_guard<std::mutex> lock(server.state.mu);
    const auto& calls = server.state.resumes;
    ASSERT_EQ(calls.size(), 2u);
    EXPECT_THAT(calls[0].first, ::testing::StartsWith("req-"));  // made up: none given
    EXPECT_EQ(calls[0].first.size(), 4u + 32u);
    EXPECT_EQ(calls[0].second, -1);
    EXPECT_EQ(calls[1].first, calls[0].first);
    EXPECT_EQ(calls[1].second, 2);
    server.state.resumes.clear();
  }
  // A server that cannot resume it (no journal): the tokens received are
  // not thrown away silently; the call fails naming why.
  o.prompt = "forgotten";
  o.request_id = "mine";
  r = c->Generate(o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("resuming request_id 'mine' failed"));
}

TEST(ClientTest, TheBearerTokenIsSentWhenGiven) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  GenerateOptions o;
  o.prompt = "hi";
  o.max_tokens = 1;
  {
    auto anon = Client::Connect(server.target());
    ASSERT_TRUE(anon.ok());
    ASSERT_TRUE(anon->Generate(o).ok());
  }
  server.state.required_token = "s3cret";
  {
    auto anon = Client::Connect(server.target());
    ASSERT_TRUE(anon.ok());
    EXPECT_EQ(anon->Generate(o).status(),
              absl::UnauthenticatedError("missing or wrong bearer token"));
    EXPECT_EQ(anon->Status().status().code(), absl::StatusCode::kUnauthenticated);
  }
  auto authed = Client::Connect(server.target(), "s3cret");
  ASSERT_TRUE(authed.ok());
  EXPECT_TRUE(authed->Generate(o).ok());
  EXPECT_TRUE(authed->Status().ok());
  std::lock_guard<std::mutex> lock(server.state.mu);
  EXPECT_THAT(server.state.auth_seen, ElementsAre("", "", "Bearer s3cret"));
}

TEST(ClientTest, DeadlinesAreKeptPerCall) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto c = Client::Connect(server.target());
  ASSERT_TRUE(c.ok());
  GenerateOptions o;
  o.prompt = "slow";
  o.timeout = absl::Milliseconds(200);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(c->Generate(o).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);

  server.state.slow_admin = true;
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(c->Status(absl::Milliseconds(200)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

TEST(ClientTest, AdminAndTokenizeCalls) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto c = Client::Connect(server.target());
  ASSERT_TRUE(c.ok());
  // The public API answers with the SDK's own structs, field for field.
  auto s = c->Status();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->store_state, "READY");
  EXPECT_EQ(s->store_pid, 4242);
  EXPECT_TRUE(s->store_alive);
  EXPECT_TRUE(s->ready);
  EXPECT_EQ(s->queue_depth, 3);
  EXPECT_DOUBLE_EQ(s->bytes_paged_per_s, 2.5e9);
  EXPECT_EQ(s->kv_blocks_used, 64u);
  ASSERT_EQ(s->workers.size(), 2u);
  EXPECT_EQ(s->workers[1].worker_id, "cpu:1");
  EXPECT_EQ(s->workers[1].state, "DRAINING");
  EXPECT_EQ(s->workers[1].plan.paged_layers, 3);
  EXPECT_EQ(s->workers[1].plan.budget_bytes, uint64_t(200) << 20);
  EXPECT_EQ(s->workers[1].counters.steps, 41u);
  EXPECT_EQ(s->workers[1].restarts, 1);
  // Expert-level paging's plan and counters (issue 14).
  EXPECT_EQ(s->workers[0].plan.expert_slots, 18u);
  EXPECT_EQ(s->workers[0].plan.total_experts, 32u);
  EXPECT_EQ(s->workers[0].plan.expert_cache_bytes, uint64_t(18) << 20);
  const client::WorkerCounters& k = s->workers[0].counters;
  EXPECT_EQ(k.expert_hits, 148u);
  EXPECT_EQ(k.expert_misses, 40u);
  EXPECT_EQ(k.expert_host, 12u);
  EXPECT_EQ(k.expert_evictions, 30u);
  EXPECT_EQ(k.expert_admitted, 5u);
  EXPECT_EQ(k.expert_prefetched, 0u);
  EXPECT_EQ(k.h2d_expert_bytes, uint64_t(40) << 20);
  EXPECT_EQ(k.host_expert_bytes, uint64_t(12) << 20);
  EXPECT_EQ(k.host_weight_bytes, uint64_t(30) << 20);
  EXPECT_DOUBLE_EQ(k.host_share, 0.84);
  EXPECT_EQ(s->workers[1].plan.expert_slots, 0u);
  EXPECT_EQ(s->workers[1].counters.expert_hits, 0u);
  EXPECT_EQ(s->workers[1].counters.host_weight_bytes, 0u);
  EXPECT_DOUBLE_EQ(s->workers[1].counters.host_share, 0);
  auto seqs = c->ListSequences();
  ASSERT_TRUE(seqs.ok());
  ASSERT_EQ(seqs->size(), 1u);
  EXPECT_EQ((*seqs)[0].sequence_id, 7u);
  EXPECT_EQ((*seqs)[0].request_id, "req-a");
  EXPECT_EQ((*seqs)[0].generated_tokens, 11);
  EXPECT_TRUE(c->Cancel(7).ok());
  EXPECT_TRUE(c->Drain("cpu:0").ok());
  EXPECT_EQ(server.state.last_drained, "cpu:0");
  auto models = c->ListModels();
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ((*models)[0].name, "stories260K");
  EXPECT_EQ((*models)[0].chat_template, "llama2");
  EXPECT_EQ((*models)[0].max_context, 512);
  auto ids = c->Tokenize("ab");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(1, 'a', 'b'));
  ids = c->Tokenize("ab", /*add_bos=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre('a', 'b'));
}

// The public structs and the wire messages convert field for field (the
// supervisor's report out, the supervised processes back in Status).
TEST(ClientTest, SupervisionConvertsToAndFromTheWire) {
  client::SupervisionReport report;
  report.supervisor = "paged-up (pid 1)";
  client::SupervisedProcess p;
  p.name = "worker cuda:1";
  p.state = "CRASH_LOOP";
  p.pid = 77;
  p.restarts = 3;
  p.failures_in_a_row = 2;
  p.last_exit = "killed by signal 9 (Killed)";
  p.next_restart_s = 1.5;
  report.processes.push_back(p);
  const v1::ReportSupervisionRequest w = client::wire::ToWire(report);
  EXPECT_EQ(w.supervisor(), "paged-up (pid 1)");
  ASSERT_EQ(w.processes_size(), 1);
  EXPECT_EQ(w.processes(0).last_exit(), "killed by signal 9 (Killed)");

  v1::StatusResponse st;
  *st.mutable_supervised() = w.processes();
  st.set_supervised_report_age_s(0.25);
  const client::ServerStatus back = client::wire::FromWire(st);
  ASSERT_EQ(back.supervised.size(), 1u);
  const client::SupervisedProcess& q = back.supervised[0];
  EXPECT_EQ(q.name, p.name);
  EXPECT_EQ(q.state, p.state);
  EXPECT_EQ(q.pid, p.pid);
  EXPECT_EQ(q.restarts, p.restarts);
  EXPECT_EQ(q.failures_in_a_row, p.failures_in_a_row);
  EXPECT_EQ(q.last_exit, p.last_exit);
  EXPECT_DOUBLE_EQ(q.next_restart_s, p.next_restart_s);
  EXPECT_DOUBLE_EQ(back.supervised_report_age_s, 0.25);
}

// The SDK's structs mirror the Admin messages field for field: a field added
// to admin.proto must be added to paged/client.h and to wire::FromWire / ToWire.
TEST(ClientTest, TheStructsHaveEveryFieldOfTheAdminMessages) {
  const std::vector<std::pair<const google::protobuf::Descriptor*, int>> mirrored = {
      {v1::StatusResponse::descriptor(), 22},   {v1::WorkerInfo::descriptor(), 7},
      {v1::MemoryPlan::descriptor(), 12},       {v1::WorkerCounters::descriptor(), 15},
      {v1::SupervisedProcess::descriptor(), 7}, {v1::ReportSupervisionRequest::descriptor(), 2},
      {v1::SequenceInfo::descriptor(), 6},      {v1::ModelInfo::descriptor(), 8},
  };
  for (const auto& [message, fields] : mirrored) {
    EXPECT_EQ(message->field_count(), fields)
        << message->full_name() << " changed: update paged/client.h and client/sdk/paged_client.cc";
  }
}

TEST(ClientTest, OneClientServesManyThreadsAtOnce) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto c = Client::Connect(server.target());
  ASSERT_TRUE(c.ok());
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      GenerateOptions o;
      o.prompt_tokens = {1, t};
      o.max_tokens = 5 + t;
      auto r = c->Generate(o);
      if (r.ok() && int(r->token_ids.size()) == 5 + t) ++good;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), 8);
}

// ---- pagectl ---------------------------------------------------------------------------------

TEST(PagectlFormatTest, StatusTableHasTheServiceAndOneRowPerWorker) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto c = Client::Connect(server.target());
  ASSERT_TRUE(c.ok());
  auto s = client::wire::Status(*c);
  ASSERT_TRUE(s.ok());
  const std::string plain = pagectl::FormatStatus(*s, /*color=*/false);
  EXPECT_THAT(plain, HasSubstr("llama 5 layers"));
  EXPECT_THAT(plain, HasSubstr("READY (segment paged-test), process 4242"));
  EXPECT_THAT(plain, HasSubstr("ready       yes"));
  EXPECT_THAT(plain, HasSubstr("3 waiting, 2 running"));
  EXPECT_THAT(plain, HasSubstr("123.4 tokens/s, 2.50 GB/s paged"));
  EXPECT_THAT(plain, HasSubstr("64 / 256 used (25.0%)"));
  EXPECT_THAT(
      plain,
      HasSubstr("WORKER  DEVICE  STATE     RUNNING  RESIDENT/PAGED  STEPS  TOKENS  RESTARTS"));
  EXPECT_THAT(plain,
              HasSubstr("cpu:0   cpu     ATTACHED  1        2/3             40     900     0"));
  EXPECT_THAT(plain,
              HasSubstr("cpu:1   cpu     DRAINING  1        2/3             41     900     1"));
  // The worker that pages experts says how its cache does; the other nothing.
  EXPECT_THAT(plain,
              HasSubstr("cpu:0 experts: 74.0% from the cache (148 hits, 40 copied, 12 on the "
                        "host), 30 evictions; cache 18 of 32 experts (18.00 MiB)\n"));
  EXPECT_THAT(plain, Not(HasSubstr("cpu:1 experts")));
  // The one that runs the hybrid step says its host share and bytes read in place.
  EXPECT_THAT(plain, HasSubstr("cpu:0 hybrid: host 84% of paged rows, 30.00 MiB read in place\n"));
  EXPECT_THAT(plain, Not(HasSubstr("cpu:1 hybrid")));
  EXPECT_THAT(plain, Not(HasSubstr("\033[")));
  EXPECT_THAT(pagectl::FormatStatus(*s, /*color=*/true), HasSubstr("\033[32mATTACHED"));
  EXPECT_THAT(pagectl::FormatWorkers(*s, false), HasSubstr("200.00 MiB"));
  EXPECT_THAT(pagectl::FormatWorkers(*s, false),
              HasSubstr("cpu:0 hybrid: host 84% of paged rows, 30.00 MiB read in place\n"));
  EXPECT_THAT(pagectl::FormatWorkers(*s, false), Not(HasSubstr("cpu:1 hybrid")));
  EXPECT_THAT(pagectl::FormatWorkers(*s, false),
              HasSubstr("cpu:0 experts: 74.0% from the cache (148 hits, 40 copied, 12 on the "
                        "host), 30 evictions; cache 18 of 32 experts (18.00 MiB)\n"));
  EXPECT_THAT(pagectl::FormatWorkers(*s, false), Not(HasSubstr("cpu:1 experts")));

  const nlohmann::json j = pagectl::ProtoToJson(*s);
  EXPECT_EQ(j["workers"].size(), 2u);
  EXPECT_EQ(j["workers"][1]["restarts"], 1);
  EXPECT_EQ(j["kv_blocks_used"], "64");  // the proto3 JSON mapping: 64-bit integers are strings
  EXPECT_EQ(j["workers"][0]["counters"]["expert_hits"], "148");
  EXPECT_EQ(j["workers"][0]["plan"]["expert_slots"], "18");
  EXPECT_EQ(j["workers"][1]["counters"]["expert_hits"], "0");
  EXPECT_EQ(j["workers"][0]["counters"]["host_weight_bytes"], std::to_string(30 << 20));
  EXPECT_DOUBLE_EQ(j["workers"][0]["counters"]["host_share"].get<double>(), 0.84);
  EXPECT_EQ(j["workers"][1]["counters"]["host_weight_bytes"], "0");
}

// Issue 15, defects 3 and 9: status says whether the service is ready and
// why not, whether the store process lives, and loudly which supervised
// processes are not running.
TEST(PagectlFormatTest, StatusShowsReadinessTheStoreProcessAndCrashLoops) {
  v1::StatusResponse s;
  s.set_segment("seg");
  s.set_store_state("READY");
  s.set_store_alive(true);
  s.set_store_pid(4242);
  s.set_ready(true);
  std::string plain = pagectl::FormatStatus(s, false);
  EXPECT_THAT(plain, HasSubstr("ready       yes"));
  EXPECT_THAT(plain, HasSubstr("READY (segment seg), process 4242"));
  s.set_ready(false);
  s.set_not_ready_reason("no paged-store process holds segment seg");
  s.set_store_alive(false);
  s.set_store_pid(0);
  v1::SupervisedProcess* p = s.add_supervised();
  p->set_name("worker cuda:1");
  p->set_state("CRASH_LOOP");
  p->set_failures_in_a_row(7);
  p->set_last_exit("killed by signal 9 (Killed)");
  p->set_next_restart_s(12);
  v1::SupervisedProcess* ok = s.add_supervised();
  ok->set_name("store");
  ok->set_state("RUNNING");
  plain = pagectl::FormatStatus(s, false);
  EXPECT_THAT(plain, HasSubstr("ready       no: no paged-store process holds segment seg"));
  EXPECT_THAT(plain, HasSubstr("READY (segment seg), but no paged-store process holds it"));
  EXPECT_THAT(plain, HasSubstr("! worker cuda:1 is CRASH_LOOP: it failed 7 times in a row (last: "
                               "killed by signal 9 (Killed)); next try in 12 s"));
  EXPECT_THAT(plain, Not(HasSubstr("! store")));
  EXPECT_THAT(pagectl::FormatStatus(s, true), HasSubstr("\033[31m! worker cuda:1"));
}

TEST(PagectlFormatTest, TokenListsAndUsage) {
  auto ids = pagectl::ParseTokenList("1,2, 3");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(1, 2, 3));
  EXPECT_EQ(pagectl::ParseTokenList("1,x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pagectl::ParseTokenList("-4").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pagectl::ParseTokenList(" , ").status().code(), absl::StatusCode::kInvalidArgument);

  client::GenerateResult r;
  r.token_ids = {5, 6};
  r.text = "hi";
  r.finish_reason = FinishReason::kEos;
  r.usage.generated_tokens = 2;
  r.usage.prompt_tokens = 1;
  r.usage.total_s = 0.5;
  r.usage.time_to_first_token_s = 0.041;
  EXPECT_EQ(pagectl::FormatUsageLine(r),
            "2 tokens (prompt 1) in 0.50 s, first token 41 ms, 4.0 tokens/s, finish: eos");
  const nlohmann::json j = pagectl::GenerateResultToJson(r);
  EXPECT_EQ(j["text"], "hi");
  EXPECT_EQ(j["finish_reason"], "eos");
  EXPECT_EQ(j["usage"]["generated_tokens"], 2);
}

TEST(PagectlCommandTest, CommandsTalkToTheServer) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  pagectl::Flags f;
  f.server = server.target();
  f.prompt_tokens = "1";
  f.max_tokens = 3;
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(pagectl::RunCommand("generate", f, "usage"), 0);
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "t0 t2 \n");

  f.json = true;
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(pagectl::RunCommand("generate", f, "usage"), 0);
  const nlohmann::json g = nlohmann::json::parse(::testing::internal::GetCapturedStdout());
  EXPECT_EQ(g["token_ids"], nlohmann::json({100, 101, 102}));
  EXPECT_EQ(g["finish_reason"], "length");

  ::testing::internal::CaptureStdout();
  EXPECT_EQ(pagectl::RunCommand("status", f, "usage"), 0);
  EXPECT_EQ(nlohmann::json::parse(::testing::internal::GetCapturedStdout())["workers"].size(), 2u);

  f.json = false;
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(pagectl::RunCommand("sequences", f, "usage"), 0);
  EXPECT_THAT(::testing::internal::GetCapturedStdout(), HasSubstr("req-a"));

  f.args = {"7"};
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(pagectl::RunCommand("cancel", f, "usage"), 0);
  EXPECT_THAT(::testing::internal::GetCapturedStdout(), HasSubstr("cancelled sequence 7"));
  f.args = {"8"};
  EXPECT_EQ(pagectl::RunCommand("cancel", f, "usage"), 1);  // NOT_FOUND from the server
  f.args = {"seven"};
  EXPECT_EQ(pagectl::RunCommand("cancel", f, "usage"), 2);
  f.args = {};
  EXPECT_EQ(pagectl::RunCommand("cancel", f, "usage"), 2);  // no id
  EXPECT_EQ(pagectl::RunCommand("no-such-command", f, "usage"), 2);

  f.prompt = "x";  // and --prompt-tokens: both
  EXPECT_EQ(pagectl::RunCommand("generate", f, "usage"), 2);

  pagectl::Flags nowhere;
  nowhere.server = "unix:///nonexistent/paged.sock";
  EXPECT_EQ(pagectl::RunCommand("status", nowhere, "usage"), 1);
}

// ---- chat ---------------------------------------------------------------------------------

TEST(ClientTest, ChatMessagesGoOutAsAChatPrompt) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  auto c = Client::Connect(server.target());
  ASSERT_TRUE(c.ok()) << c.status();
  GenerateOptions o;
  o.messages = {{"system", "Be brief."}, {"user", "hi"}};
  o.max_tokens = 5;
  auto r = c->Generate(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, " you said: hi");
  EXPECT_EQ(r->finish_reason, FinishReason::kStop);
  std::lock_guard<std::mutex> lock(server.state.mu);
  ASSERT_EQ(server.state.chats.size(), 1u);
  const v1::ChatMessages& chat = server.state.chats[0];
  ASSERT_EQ(chat.messages_size(), 2);
  EXPECT_EQ(chat.messages(0).role(), "system");
  EXPECT_EQ(chat.messages(0).content(), "Be brief.");
  EXPECT_EQ(chat.messages(1).role(), "user");
  EXPECT_TRUE(chat.add_generation_prompt());
}

struct ChatRun {
  int exit_code = -1;
  std::string out, err;
};

ChatRun RunChatOn(const FakeServer& server, const pagectl::Flags& f, const std::string& input,
                  bool interactive = false) {
  auto c = Client::Connect(server.target());
  EXPECT_TRUE(c.ok()) << c.status();
  std::istringstream in(input);
  std::ostringstream out, err;
  pagectl::ChatIo io;
  io.in = &in;
  io.out = &out;
  io.err = &err;
  io.interactive = interactive;
  ChatRun r;
  r.exit_code = pagectl::RunChat(f, *c, io);
  r.out = out.str();
  r.err = err.str();
  return r;
}

TEST(PagectlChatTest, EachLineIsATurnOfOneConversation) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  pagectl::Flags f;
  f.system = "Be brief.";
  f.max_tokens = 16;
  const ChatRun r = RunChatOn(server, f, "hello\n\n  second \r\n/reset\nthird\n/exit\nnever\n");
  EXPECT_EQ(r.exit_code, 0);
  // The replies, one per turn, without the leading space.
  EXPECT_EQ(r.out, "you said: hello\nyou said: second\nyou said: third\n");
  EXPECT_EQ(r.err, "");  // nothing for people when not interactive
  std::lock_guard<std::mutex> lock(server.state.mu);
  ASSERT_EQ(server.state.chats.size(), 3u);
  auto roles = [](const v1::ChatMessages& m) {
    std::vector<std::string> out;
    for (const v1::ChatMessage& x : m.messages()) out.push_back(x.role() + ":" + x.content());
    return out;
  };
  EXPECT_THAT(roles(server.state.chats[0]), ElementsAre("system:Be brief.", "user:hello"));
  EXPECT_THAT(
      roles(server.state.chats[1]),
      ElementsAre("system:Be brief.", "user:hello", "assistant: you said: hello", "user:second"));
  // After /reset: only the system message and the new line.
  EXPECT_THAT(roles(server.state.chats[2]), ElementsAre("system:Be brief.", "user:third"));
}

TEST(PagectlChatTest, JsonPrintsOneObjectPerTurn) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  pagectl::Flags f;
  f.json = true;
  const ChatRun r = RunChatOn(server, f, "a\nb");  // the last line without a newline counts
  EXPECT_EQ(r.exit_code, 0);
  std::istringstream lines(r.out);
  std::string line;
  std::vector<nlohmann::json> turns;
  while (std::getline(lines, line)) turns.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(turns.size(), 2u);
  EXPECT_EQ(turns[0]["turn"], 0);
  EXPECT_EQ(turns[0]["user"], "a");
  EXPECT_EQ(turns[0]["text"], " you said: a");
  EXPECT_EQ(turns[0]["finish_reason"], "stop");
  EXPECT_EQ(turns[1]["turn"], 1);
  EXPECT_EQ(turns[1]["text"], " you said: b");
  EXPECT_EQ(turns[1]["token_ids"], nlohmann::json({200, 201}));
}

TEST(PagectlChatTest, AFailedTurnEndsAPipedChatButNotAnInteractiveOne) {
  FakeServer server;
  ASSERT_TRUE(server.ok());
  pagectl::Flags f;
  ChatRun r = RunChatOn(server, f, "no template\nhello\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err,
              HasSubstr("pagectl chat: FAILED_PRECONDITION: the model has no chat template"));

  r = RunChatOn(server, f, "no template\nhello\n/bogus\n", /*interactive=*/true);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "you said: hello\n");
  EXPECT_THAT(r.err, HasSubstr("you> "));
  EXPECT_THAT(r.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(r.err, HasSubstr("finish: stop"));  // the usage line
  EXPECT_THAT(r.err, HasSubstr("unknown command /bogus"));
  EXPECT_THAT(r.err, Not(HasSubstr("\033[")));  // no colour asked
  std::lock_guard<std::mutex> lock(server.state.mu);
  // The failed turn left the conversation: "hello" went alone.
  ASSERT_EQ(server.state.chats.size(), 3u);
  ASSERT_EQ(server.state.chats[2].messages_size(), 1);
  EXPECT_EQ(server.state.chats[2].messages(0).content(), "hello");
}

TEST(PagectlChatTest, BadArgumentsBeforeConnecting) {
  pagectl::Flags f;
  f.server = "unix:///nonexistent/paged.sock";
  f.max_tokens = 0;
  EXPECT_EQ(pagectl::RunCommand("chat", f, "usage"), 2);
  f.max_tokens = 4;
  f.top_p = 2.f;
  EXPECT_EQ(pagectl::RunCommand("chat", f, "usage"), 2);
  f.top_p = 1.f;
  EXPECT_EQ(pagectl::RunCommand("chat", f, "usage"), 1);  // no server
  f.args = {"extra"};
  EXPECT_EQ(pagectl::RunCommand("chat", f, "usage"), 2);
}

TEST(PagectlFormatTest, ModelsShowTheChatFormatAndFinishReasonsTheirColour) {
  v1::ModelInfo m;
  m.set_name("stories260K");
  m.set_chat_template("llama2");
  EXPECT_THAT(pagectl::FormatModels({m}, false), HasSubstr("CHAT"));
  EXPECT_THAT(pagectl::FormatModels({m}, false), HasSubstr("llama2"));
  m.clear_chat_template();
  EXPECT_THAT(pagectl::FormatModels({m}, false), ::testing::EndsWith("-\n"));
  client::GenerateResult r;
  r.finish_reason = FinishReason::kError;
  EXPECT_THAT(pagectl::FormatUsageLine(r, /*color=*/true),
              HasSubstr("finish: \033[31merror\033[0m"));
  EXPECT_THAT(pagectl::FormatUsageLine(r, /*color=*/false), ::testing::EndsWith("finish: error"));
}

}  // namespace
}  // namespace paged
