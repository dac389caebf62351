// The whole service as real processes: paged-store (stories260K, f32), two
// CPU paged-workers and the coordinator `paged`, all on unix sockets in a
// temporary directory, driven through the generated paged.v1 stubs.
//
// 32 concurrent greedy streams reproduce the README transcript; with a worker
// SIGKILLed mid-generation they still do, every token exactly once; cancel
// (Admin and client disconnect), drain, bad inputs next to a long generation,
// and the bearer token.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/segment.h"
#include "paged/v1/admin.grpc.pb.h"
#include "paged/v1/inference.grpc.pb.h"
#include "tests/unit/test_util.h"
#include "tokenizer/segment_tokenizer.h"

namespace paged {
namespace {

using testing::BinaryPath;
using ::testing::HasSubstr;
using testing::Subprocess;
using Clock = std::chrono::steady_clock;

constexpr int kTranscriptTokens = 200;
const std::vector<int32_t> kFirstTokens = {403, 407, 261, 378, 432, 383,
                                           286, 261, 376, 298, 315, 421};

struct Generation {
  grpc::Status status;
  std::vector<int32_t> ids;
  std::string text;
  int messages = 0;
  bool has_final = false;
  v1::GenerateResponse final_msg;
  uint64_t sequence_id = 0;
};

// A Generate request from BOS (token id 1), greedy, eos ignored.
v1::GenerateRequest FromBos(int max_tokens, std::string request_id = "") {
  v1::GenerateRequest r;
  r.mutable_tokens()->add_ids(1);
  r.set_max_tokens(max_tokens);
  r.set_ignore_eos(true);
  r.set_request_id(std::move(request_id));
  return r;
}

// Reads a whole stream; `on_message` sees each message as it arrives.
Generation RunGenerate(v1::Inference::Stub& stub, const v1::GenerateRequest& req,
                       const std::function<void(const Generation&)>& on_message = nullptr,
                       grpc::ClientContext* ctx_in = nullptr) {
  grpc::ClientContext local;
  grpc::ClientContext& ctx = ctx_in ? *ctx_in : local;
  if (!ctx_in) ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  Generation g;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    ++g.messages;
    g.ids.insert(g.ids.end(), msg.token_ids().begin(), msg.token_ids().end());
    g.text += msg.text();
    g.sequence_id = msg.sequence_id();
    if (msg.finish_reason() != v1::GenerateResponse::FINISH_REASON_UNSPECIFIED) {
      g.has_final = true;
      g.final_msg = msg;
    }
    if (on_message) on_message(g);
  }
  g.status = reader->Finish();
  return g;
}

bool WaitUntil(const std::function<bool()>& pred, double timeout_s = 30) {
  const auto end = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (Clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// The raw bytes of the server reflection's answer to list_services (what
// grpcurl list sends), through the generic async stub: the reflection protos'
// stubs are not installed.
std::string ListServicesViaReflection(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::CompletionQueue cq;
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&](intptr_t tag) {
    void* got = nullptr;
    bool ok = false;
    return cq.Next(&got, &ok) && ok && got == reinterpret_cast<void*>(tag);
  };
  std::string bytes;
  call->StartCall(reinterpret_cast<void*>(1));
  if (step(1)) {
    grpc::Slice req(std::string("\x3a\x00", 2));  // ServerReflectionRequest{list_services: ""}
    grpc::ByteBuffer out(&req, 1), in;
    call->Write(out, reinterpret_cast<void*>(2));
    if (step(2)) {
      call->Read(&in, reinterpret_cast<void*>(3));
      if (step(3)) {
        std::vector<grpc::Slice> slices;
        if (in.Dump(&slices).ok()) {
          for (const grpc::Slice& sl : slices)
            bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
        }
      }
    }
  }
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  return bytes;
}

class ServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
    segment_ = testing::UniqueSegmentName("serving");
    store_ = std::make_unique<Subprocess>(std::vector<std::string>{
        BinaryPath("paged-store"), "--model=" + testing::Stories260KPath(), "--segment=" + segment_,
        "--weight-format=f32", "--kv-gib=0.01", "--remove-on-exit", "--quiet"});
    ASSERT_TRUE(store_->WaitForLine("ready")) << store_->output();
    auto seg = SegmentMapping::Open(segment_, SegmentMapping::Access::kReadOnly);
    ASSERT_TRUE(seg.ok()) << seg.status();
    auto loaded = LoadSegmentTokenizer(**seg);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_NE(loaded->tokenizer, nullptr);
    tokenizer_ = std::move(loaded->tokenizer);
    address_ = "unix://" + dir_.File("paged.sock");
  }

  void TearDown() override {
    for (auto& [id, w] : workers_) {
      if (w) w->Signal(SIGKILL);
    }
    inference_.reset();
    admin_.reset();
    channel_.reset();
    if (paged_) {
      EXPECT_EQ(paged_->Signal(SIGTERM), 0) << paged_->output();
    }
    if (store_) {
      EXPECT_EQ(store_->Signal(SIGTERM), 0);
    }
  }

  // The coordinator, then workers w0 (all layers resident) and w1 (every
  // layer paged through two slots), and waits until both are attached.
  void StartAll(const std::string& token = "") {
    StartCoordinator(token);
    StartWorker("w0", {"--resident=all"}, token);
    StartWorker("w1", {"--resident=none"}, token);
    ASSERT_TRUE(WaitForWorkers({"w0", "w1"}, token)) << paged_->output();
  }

  void StartCoordinator(const std::string& token = "") {
    std::vector<std::string> argv = {BinaryPath("paged"), "--segment=" + segment_,
                                     "--listen=" + address_};
    if (!token.empty()) argv.push_back("--token=" + token);
    paged_ = std::make_unique<Subprocess>(argv);
    ASSERT_TRUE(paged_->WaitForLine("listening on " + address_, 30)) << paged_->output();
    channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    inference_ = v1::Inference::NewStub(channel_);
    admin_ = v1::Admin::NewStub(channel_);
  }

  void StartWorker(const std::string& id, std::vector<std::string> extra = {},
                   const std::string& token = "") {
    std::vector<std::string> argv = {
        BinaryPath("paged-worker"), "--segment=" + segment_, "--device=cpu",
        "--gpu-budget=256MiB",      "--threads=1",           "--coordinator=" + address_,
        "--worker-id=" + id};
    if (!token.empty()) argv.push_back("--token=" + token);
    argv.insert(argv.end(), extra.begin(), extra.end());
    workers_[id] = std::make_unique<Subprocess>(argv);
  }

  absl::StatusOr<v1::StatusResponse> Status(const std::string& token = "") {
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::StatusResponse r;
    grpc::Status s = admin_->Status(&ctx, v1::StatusRequest(), &r);
    if (!s.ok()) return absl::UnknownError(s.error_message());
    return r;
  }

  const v1::WorkerInfo* FindWorker(const v1::StatusResponse& st, const std::string& id) {
    for (const v1::WorkerInfo& w : st.workers())
      if (w.worker_id() == id) return &w;
    return nullptr;
  }

  bool WaitForWorkers(const std::vector<std::string>& ids, const std::string& token = "") {
    return WaitUntil([&] {
      auto st = Status(token);
      if (!st.ok()) return false;
      for (const std::string& id : ids) {
        const v1::WorkerInfo* w = FindWorker(*st, id);
        if (w == nullptr || w->state() != "ATTACHED") return false;
      }
      return true;
    });
  }

  std::vector<v1::SequenceInfo> Sequences() {
    grpc::ClientContext ctx;
    v1::ListSequencesResponse r;
    EXPECT_TRUE(admin_->ListSequences(&ctx, v1::ListSequencesRequest(), &r).ok());
    return {r.sequences().begin(), r.sequences().end()};
  }

  // Nothing queued or running, no KV block held.
  bool WaitForIdle(double timeout_s = 20) {
    return WaitUntil(
        [&] {
          auto st = Status();
          return st.ok() && st->queue_depth() == 0 && st->running_sequences() == 0 &&
                 st->kv_blocks_used() == 0;
        },
        timeout_s);
  }

  // The checks every transcript stream passes: exactly the 200 tokens of the
  // README, once each, their text, and the usage.
  void ExpectTranscript(const Generation& g, const std::string& what) {
    SCOPED_TRACE(what);
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    ASSERT_EQ(g.ids.size(), size_t(kTranscriptTokens));
    EXPECT_TRUE(std::equal(kFirstTokens.begin(), kFirstTokens.end(), g.ids.begin()));
    EXPECT_EQ(tokenizer_->Decode(g.ids), testing::StoriesTranscript());
    EXPECT_EQ(g.text, testing::StoriesTranscript());
    ASSERT_TRUE(g.has_final);
    EXPECT_EQ(g.final_msg.finish_reason(), v1::GenerateResponse::LENGTH);
    const v1::Usage& u = g.final_msg.usage();
    EXPECT_EQ(u.prompt_tokens(), 1);
    EXPECT_EQ(u.generated_tokens(), kTranscriptTokens);
    EXPECT_EQ(u.step_s_size(), kTranscriptTokens);
    EXPECT_GT(u.time_to_first_token_s(), 0);
    EXPECT_GE(u.total_s(), u.time_to_first_token_s());
  }

  // 32 concurrent transcript streams; `on_progress(max tokens on a stream,
  // streams finished)` runs on the test thread while they go.
  std::vector<Generation> RunTranscripts(
      int n, const std::function<void(int, int)>& on_progress = nullptr) {
    std::atomic<int> max_tokens{0}, finished{0};
    std::vector<std::future<Generation>> futures;
    for (int i = 0; i < n; ++i) {
      futures.push_back(std::async(std::launch::async, [&, i] {
        Generation g =
            RunGenerate(*inference_, FromBos(kTranscriptTokens, "t" + std::to_string(i)),
                        [&](const Generation& s) {
                          int m = max_tokens.load();
                          while (int(s.ids.size()) > m &&
                                 !max_tokens.compare_exchange_weak(m, int(s.ids.size()))) {
                          }
                        });
        ++finished;
        return g;
      }));
    }
    if (on_progress) ProgressLoop(on_progress, max_tokens, finished, n);
    std::vector<Generation> out;
    for (auto& f : futures) out.push_back(f.get());
    return out;
  }

  void ProgressLoop(const std::function<void(int, int)>& f, std::atomic<int>& max_tokens,
                    std::atomic<int>& finished, int n) {
    while (finished.load() < n) {
      f(max_tokens.load(), finished.load());
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  testing::TempDir dir_;
  std::string segment_;
  std::string address_;
  std::unique_ptr<const Tokenizer> tokenizer_;
  std::unique_ptr<Subprocess> store_;
  std::unique_ptr<Subprocess> paged_;
  std::map<std::string, std::unique_ptr<Subprocess>> workers_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

TEST_F(ServingTest, ThirtyTwoStreamsReproduceTheTranscript) {
  ASSERT_NO_FATAL_FAILURE(StartAll());
  const std::vector<Generation> gens = RunTranscripts(32);
  for (size_t i = 0; i < gens.size(); ++i) ExpectTranscript(gens[i], "stream " + std::to_string(i));

  // Admin: the workers with their plans and counters, the pool, the rates.
  auto st = Status();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->segment(), segment_);
  EXPECT_EQ(st->store_state(), "READY");
  EXPECT_THAT(st->model(), HasSubstr("5 layers"));
  EXPECT_EQ(st->kv_blocks_total(), 524u);
  ASSERT_EQ(st->workers_size(), 2);
  uint64_t steps = 0;
  for (const v1::WorkerInfo& w : st->workers()) {
    EXPECT_EQ(w.state(), "ATTACHED") << w.worker_id();
    EXPECT_EQ(w.device(), "cpu");
    EXPECT_THAT(w.plan().text(), HasSubstr("memory plan"));
    EXPECT_GT(w.plan().budget_bytes(), 0u);
    EXPECT_EQ(w.restarts(), 0);
    steps += w.counters().steps();
  }
  EXPECT_EQ(FindWorker(*st, "w0")->plan().resident_layers(), 5);
  EXPECT_EQ(FindWorker(*st, "w1")->plan().paged_layers(), 5);
  EXPECT_GT(steps, 0u);
  EXPECT_GT(st->tokens_per_s(), 0);
  EXPECT_GT(st->bytes_paged_per_s(), 0);  // w1 pages every layer
  EXPECT_TRUE(WaitForIdle());

  // Tokenize and ListModels.
  grpc::ClientContext tctx;
  v1::TokenizeRequest treq;
  treq.set_text("Once upon a time");
  treq.set_add_bos(true);
  v1::TokenizeResponse tresp;
  ASSERT_TRUE(inference_->Tokenize(&tctx, treq, &tresp).ok());
  ASSERT_GE(tresp.ids_size(), 2);
  EXPECT_EQ(tresp.ids(0), 1);
  EXPECT_EQ(tresp.ids_size(), tresp.pieces_size());
  EXPECT_EQ(tokenizer_->Decode(std::vector<int32_t>(tresp.ids().begin() + 1, tresp.ids().end())),
            "Once upon a time");
  grpc::ClientContext mctx;
  v1::ListModelsResponse models;
  ASSERT_TRUE(admin_->ListModels(&mctx, v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).name(), "stories260K");
  EXPECT_EQ(models.models(0).vocab_size(), 512);
  EXPECT_EQ(models.models(0).weight_format(), "f32");

  // A text prompt streams text that continues it; stop strings end it.
  v1::GenerateRequest text_req;
  text_req.set_text("Once upon a time");
  text_req.set_max_tokens(60);
  text_req.add_stop_strings("Lily");
  Generation g = RunGenerate(*inference_, text_req);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.final_msg.finish_reason(), v1::GenerateResponse::STOP);
  EXPECT_EQ(g.text, ", there was a little girl named ");
  EXPECT_TRUE(WaitForIdle());

  // Health checking is on: grpc.health.v1.Health/Check answers SERVING.
  grpc::GenericStub generic(channel_);
  grpc::ClientContext hctx;
  grpc::Slice no_bytes(std::string{});
  grpc::ByteBuffer empty_req(&no_bytes, 1), resp;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&hctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &empty_req, &resp,
                    [&](grpc::Status s) { done.set_value(s); });
  ASSERT_TRUE(done.get_future().get().ok());
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(resp.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING

  // Server reflection is on: grpcurl can list the services.
  const std::string services = ListServicesViaReflection(channel_);
  EXPECT_THAT(services, HasSubstr("paged.v1.Inference"));
  EXPECT_THAT(services, HasSubstr("paged.v1.Admin"));
  EXPECT_THAT(services, HasSubstr("paged.v1.WorkerLink"));
}

TEST_F(ServingTest, AWorkerKilledMidGenerationLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(StartAll());
  int killed_at = -1, finished_at_kill = -1;
  const std::vector<Generation> gens = RunTranscripts(32, [&](int max_tokens, int finished) {
    if (killed_at < 0 && max_tokens >= 50) {
      killed_at = max_tokens;
      finished_at_kill = finished;
      EXPECT_EQ(workers_["w1"]->Signal(SIGKILL), 128 + SIGKILL);
    }
  });
  ASSERT_GE(killed_at, 50);
  EXPECT_LT(killed_at, kTranscriptTokens);
  EXPECT_EQ(finished_at_kill, 0);
  for (size_t i = 0; i < gens.size(); ++i) ExpectTranscript(gens[i], "stream " + std::to_string(i));

  auto st = Status();
  ASSERT_TRUE(st.ok());
  ASSERT_NE(FindWorker(*st, "w1"), nullptr);
  EXPECT_EQ(FindWorker(*st, "w1")->state(), "GONE");
  EXPECT_TRUE(WaitForIdle());

  // The worker restarts, re-attaches without a reload and serves again.
  StartWorker("w1", {"--resident=none"});
  ASSERT_TRUE(WaitForWorkers({"w0", "w1"}));
  st = Status();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(FindWorker(*st, "w1")->restarts(), 1);
  ExpectTranscript(RunGenerate(*inference_, FromBos(kTranscriptTokens)), "after the restart");
}

TEST_F(ServingTest, CancelViaAdminAndViaDisconnectFreeTheSequence) {
  ASSERT_NO_FATAL_FAILURE(StartAll());
  // Admin.CancelSequence: the stream ends with CANCELLED, its blocks are freed.
  std::atomic<uint64_t> seq{0};
  auto cancelled = std::async(std::launch::async, [&] {
    return RunGenerate(*inference_, FromBos(2000, "cancel-me"), [&](const Generation& g) {
      if (g.ids.size() >= 5) seq = g.sequence_id;
    });
  });
  ASSERT_TRUE(WaitUntil([&] { return seq.load() != 0; }));
  bool running = false;
  for (const v1::SequenceInfo& s : Sequences()) {
    if (s.request_id() == "cancel-me") {
      EXPECT_EQ(s.sequence_id(), seq.load());
      running = s.state() == "RUNNING";
    }
  }
  EXPECT_TRUE(running);
  {
    grpc::ClientContext ctx;
    v1::CancelSequenceRequest req;
    req.set_sequence_id(seq.load());
    v1::CancelSequenceResponse resp;
    ASSERT_TRUE(admin_->CancelSequence(&ctx, req, &resp).ok());
  }
  Generation g = cancelled.get();
  EXPECT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.final_msg.finish_reason(), v1::GenerateResponse::CANCELLED);
  EXPECT_LT(g.ids.size(), 2000u);
  EXPECT_EQ(g.final_msg.usage().generated_tokens(), int(g.ids.size()));
  EXPECT_TRUE(WaitForIdle());

  // Unknown and missing ids.
  for (uint64_t id : {uint64_t(0), uint64_t(987654321)}) {
    grpc::ClientContext ctx;
    v1::CancelSequenceRequest req;
    req.set_sequence_id(id);
    v1::CancelSequenceResponse resp;
    EXPECT_EQ(admin_->CancelSequence(&ctx, req, &resp).error_code(),
              id == 0 ? grpc::StatusCode::INVALID_ARGUMENT : grpc::StatusCode::NOT_FOUND);
  }

  // A client that disconnects: its sequence finishes and frees its blocks.
  grpc::ClientContext ctx;
  Generation d = RunGenerate(
      *inference_, FromBos(2000, "disconnect-me"),
      [&](const Generation& s) {
        if (s.ids.size() >= 5) ctx.TryCancel();
      },
      &ctx);
  EXPECT_EQ(d.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForIdle());
  for (const v1::SequenceInfo& s : Sequences()) {
    if (s.request_id() == "disconnect-me") {
      EXPECT_EQ(s.state(), "FINISHED");
      EXPECT_LT(s.generated_tokens(), 2000);
    }
  }
}

TEST_F(ServingTest, ADrainedWorkerExitsCleanlyAndTheOthersContinue) {
  ASSERT_NO_FATAL_FAILURE(StartAll());
  bool drained = false;
  const std::vector<Generation> gens = RunTranscripts(8, [&](int max_tokens, int) {
    if (!drained && max_tokens >= 20) {
      drained = true;
      grpc::ClientContext ctx;
      v1::DrainWorkerRequest req;
      req.set_worker_id("w0");
      v1::DrainWorkerResponse resp;
      grpc::Status s = admin_->DrainWorker(&ctx, req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
    }
  });
  for (size_t i = 0; i < gens.size(); ++i) ExpectTranscript(gens[i], "stream " + std::to_string(i));
  EXPECT_EQ(workers_["w0"]->Wait(20), 0) << workers_["w0"]->output();
  workers_.erase("w0");
  auto st = Status();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(FindWorker(*st, "w0")->state(), "DRAINED");
  EXPECT_EQ(FindWorker(*st, "w1")->state(), "ATTACHED");
  // New work goes to w1.
  ExpectTranscript(RunGenerate(*inference_, FromBos(kTranscriptTokens)), "after the drain");

  grpc::ClientContext ctx;
  v1::DrainWorkerRequest req;
  req.set_worker_id("no-such-worker");
  v1::DrainWorkerResponse resp;
  EXPECT_EQ(admin_->DrainWorker(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServingTest, BadInputsGetTheirStatusWhileALongGenerationCarriesOn) {
  ASSERT_NO_FATAL_FAILURE(StartAll());
  std::atomic<int> long_tokens{0};
  auto long_run = std::async(std::launch::async, [&] {
    return RunGenerate(*inference_, FromBos(2000, "long"),
                       [&](const Generation& g) { long_tokens = int(g.ids.size()); });
  });
  ASSERT_TRUE(WaitUntil([&] { return long_tokens.load() > 0; }));

  struct Case {
    std::string name;
    std::function<void(v1::GenerateRequest&)> edit;
    grpc::StatusCode code;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Case> cases = {
      {"no prompt", [](auto& r) { r.clear_tokens(); }, grpc::StatusCode::INVALID_ARGUMENT},
      {"empty prompt text", [](auto& r) { r.set_text(""); }, grpc::StatusCode::INVALID_ARGUMENT},
      {"empty token ids", [](auto& r) { r.mutable_tokens()->clear_ids(); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"token id = vocab", [](auto& r) { r.mutable_tokens()->add_ids(512); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"token id < 0", [](auto& r) { r.mutable_tokens()->add_ids(-3); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"max_tokens 0", [](auto& r) { r.set_max_tokens(0); }, grpc::StatusCode::INVALID_ARGUMENT},
      {"max_tokens -1", [](auto& r) { r.set_max_tokens(-1); }, grpc::StatusCode::INVALID_ARGUMENT},
      {"max_tokens huge", [](auto& r) { r.set_max_tokens(1 << 30); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"over the context", [](auto& r) { r.set_max_tokens(2048); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"temperature < 0", [](auto& r) { r.mutable_sampling()->set_temperature(-0.5f); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"temperature NaN", [&](auto& r) { r.mutable_sampling()->set_temperature(nan); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"top_p > 1", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"top_p < 0", [](auto& r) { r.mutable_sampling()->set_top_p(-0.1f); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"top_k < 0", [](auto& r) { r.mutable_sampling()->set_top_k(-1); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"stop id outside", [](auto& r) { r.add_stop_token_ids(100000); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"empty stop string", [](auto& r) { r.add_stop_strings(""); },
       grpc::StatusCode::INVALID_ARGUMENT},
      {"huge request id", [](auto& r) { r.set_request_id(std::string(10000, 'x')); },
       grpc::StatusCode::INVALID_ARGUMENT},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r = FromBos(10);
    c.edit(r);
    Generation g = RunGenerate(*inference_, r);
    EXPECT_EQ(g.status.error_code(), c.code) << c.name << ": " << g.status.error_message();
    EXPECT_FALSE(g.status.error_message().empty()) << c.name;
    EXPECT_EQ(g.messages, 0) << c.name;
  }

  // 1000 streams opened and abandoned at once (the vanishing client).
  {
    std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
    std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
    for (int i = 0; i < 1000; ++i) {
      ctxs.push_back(std::make_unique<grpc::ClientContext>());
      readers.push_back(inference_->Generate(ctxs.back().get(), FromBos(100, "abandoned")));
    }
    for (auto& c : ctxs) c->TryCancel();
    for (auto& r : readers) r->Finish();
  }
  EXPECT_LT(long_tokens.load(), 2000) << "the long generation ended before the bad inputs did";

  // The long generation finishes untouched, then everything is freed.
  Generation g = long_run.get();
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  ASSERT_EQ(g.ids.size(), 2000u);
  EXPECT_EQ(
      tokenizer_->Decode(std::vector<int32_t>(g.ids.begin(), g.ids.begin() + kTranscriptTokens)),
      testing::StoriesTranscript());
  EXPECT_EQ(g.final_msg.finish_reason(), v1::GenerateResponse::LENGTH);
  EXPECT_TRUE(WaitForIdle());
  int abandoned = 0;
  for (const v1::SequenceInfo& s : Sequences()) {
    EXPECT_EQ(s.state(), "FINISHED");
    abandoned += s.request_id() == "abandoned";
  }
  EXPECT_GT(abandoned, 0);  // the server saw them
  // And the service still serves.
  ExpectTranscript(RunGenerate(*inference_, FromBos(kTranscriptTokens)), "after the bad inputs");
}

TEST_F(ServingTest, WithATokenEveryCallNeedsIt) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator("s3cret"));
  StartWorker("w0", {"--resident=all"}, "s3cret");
  StartWorker("intruder", {"--resident=all"});  // no token: cannot attach
  ASSERT_TRUE(WaitForWorkers({"w0"}, "s3cret")) << paged_->output();

  EXPECT_EQ(RunGenerate(*inference_, FromBos(12)).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer wrong");
    v1::TokenizeResponse resp;
    EXPECT_EQ(inference_->Tokenize(&ctx, v1::TokenizeRequest(), &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    v1::StatusResponse resp;
    EXPECT_EQ(admin_->Status(&ctx, v1::StatusRequest(), &resp).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer s3cret");
  Generation g = RunGenerate(*inference_, FromBos(12), nullptr, &ctx);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_EQ(g.ids, kFirstTokens);
  auto st = Status("s3cret");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->workers_size(), 1);  // the intruder never attached
}

}  // namespace
}  // namespace paged
