#include "daemon/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/sd_notify.h"
#include "common/segment.h"
#include "common/signals.h"
#include "common/status.h"
#include "daemon/http/front_end.h"
#include "daemon/services.h"
#include "tokenizer/segment_tokenizer.h"

namespace paged {

std::string DefaultListenAddress() {
  const char* dir = std::getenv("XDG_RUNTIME_DIR");
  if (dir != nullptr && dir[0] == '/') return absl::StrCat("unix://", dir, "/paged.sock");
  return "unix:///tmp/paged.sock";
}

absl::StatusOr<CoordinatorOptions> CoordinatorOptionsFromSegment(
    const ServeOptions& o, std::unique_ptr<const Tokenizer>* tokenizer) {
  absl::StatusOr<std::unique_ptr<SegmentMapping>> seg =
      SegmentMapping::Open(o.segment, SegmentMapping::Access::kReadOnly);
  if (!seg.ok()) return seg.status();
  const SegmentHeader& h = (*seg)->header();
  CoordinatorOptions c;
  c.segment = o.segment;
  c.segment_generation = h.generation;
  c.store_state = std::string(SegmentStateName(LoadState(h)));
  c.weight_format = std::string(WeightFormatName(static_cast<WeightFormat>(h.weight_format)));
  c.model = h.model;
  const std::string path(h.model_path, strnlen(h.model_path, sizeof(h.model_path)));
  c.model_name = path.empty() ? o.segment : std::filesystem::path(path).stem().string();
  if (c.model_name.empty()) c.model_name = o.segment;

  SchedulerConfig& s = c.scheduler;
  s = SchedulerConfigForModel(h.model);
  s.block_tokens = int32_t(h.block_tokens);
  s.total_blocks =
      int32_t(std::min<uint64_t>(h.kv_n_blocks, uint64_t(std::numeric_limits<int32_t>::max())));
  if (o.max_queue != 0) s.max_queue = o.max_queue;
  if (o.max_step_tokens != 0) s.max_step_tokens = o.max_step_tokens;
  if (o.max_seqs_per_step != 0) s.max_seqs_per_step = o.max_seqs_per_step;
  if (o.prefill_chunk != 0) s.prefill_chunk = o.prefill_chunk;
  if (absl::Status st = ValidateSchedulerConfig(s); !st.ok()) return st;
  c.chat_format = o.chat_format;

  tokenizer->reset();
  absl::StatusOr<LoadedTokenizer> loaded = LoadSegmentTokenizer(**seg);
  if (!loaded.ok()) return loaded.status();
  *tokenizer = std::move(loaded->tokenizer);
  c.chat_template = std::move(loaded->chat_template);
  return c;
}

struct Server::Services {
  Services(Coordinator* c, const std::string& token)
      : inference(c, token), admin(c, token), link(c, token) {}
  InferenceService inference;
  AdminService admin;
  WorkerLinkService link;
};

absl::StatusOr<std::unique_ptr<Server>> Server::Start(Coordinator* coordinator,
                                                      const std::string& listen,
                                                      const std::string& token, int max_threads) {
  if (listen.empty()) return absl::InvalidArgumentError("--listen is empty");
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<Server> s(new Server());
  s->coord_ = coordinator;
  s->services_ = std::make_unique<Services>(coordinator, token);
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&s->services_->inference);
  b.RegisterService(&s->services_->admin);
  b.RegisterService(&s->services_->link);
  grpc::ResourceQuota quota("paged");
  quota.SetMaxThreads(std::max(max_threads, 8));
  b.SetResourceQuota(quota);
  // Notice vanished TCP peers (clients and workers) within a minute.
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  s->server_ = b.BuildAndStart();
  if (s->server_ == nullptr || port == 0)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen));
  s->address_ = listen;
  if (!absl::StartsWith(listen, "unix:")) {
    const size_t colon = listen.rfind(':');
    if (colon != std::string::npos && listen.substr(colon + 1) == "0")
      s->address_ = absl::StrCat(listen.substr(0, colon), ":", port);
  }
  return s;
}

Server::~Server() { Shutdown(); }

void Server::Shutdown() {
  if (server_ == nullptr) return;
  coord_->Shutdown();  // ends the streams: workers' links close, Generate answers UNAVAILABLE
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
  server_.reset();
}

int RunCoordinator(const ServeOptions& o) {
  absl::StatusOr<LogLevel> level = ParseLogLevel(o.log_level);
  if (!level.ok()) {
    std::fprintf(stderr, "paged: --log-level: %s\n", std::string(level.status().message()).c_str());
    return 2;
  }
  SetLogLevel(*level);
  SdNotifyOrLog("STATUS=mapping segment " + o.segment);
  std::unique_ptr<const Tokenizer> tokenizer;
  absl::StatusOr<CoordinatorOptions> opts = CoordinatorOptionsFromSegment(o, &tokenizer);
  if (!opts.ok()) {
    std::fprintf(stderr, "paged: segment %s: %s\n", o.segment.c_str(),
                 std::string(opts.status().message()).c_str());
    return 1;
  }
  const SchedulerConfig sc = opts->scheduler;
  absl::StatusOr<std::unique_ptr<Coordinator>> coord =
      Coordinator::Create(std::move(*opts), std::move(tokenizer));
  if (!coord.ok()) {
    std::fprintf(stderr, "paged: %s\n", std::string(coord.status().message()).c_str());
    return 2;
  }
  const std::string listen = o.listen.empty() ? DefaultListenAddress() : o.listen;
  absl::StatusOr<std::unique_ptr<Server>> server =
      Server::Start(coord->get(), listen, o.token, o.max_threads);
  if (!server.ok()) {
    std::fprintf(stderr, "paged: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  std::printf(
      "paged: %s; KV pool %d blocks of %d tokens; queue %d, step %d tokens / %d seqs, prefill "
      "chunk %d\n",
      (*coord)->options().model_name.c_str(), sc.total_blocks, sc.block_tokens, sc.max_queue,
      sc.max_step_tokens, sc.max_seqs_per_step, sc.prefill_chunk);
  if (const ChatTemplate* t = (*coord)->chat_template(); t != nullptr)
    std::printf("paged: chat prompts in the %s format\n", std::string(t->name()).c_str());
  std::printf("paged: listening on %s%s\n", (*server)->address().c_str(),
              o.token.empty() ? "" : " (bearer token)");
  std::unique_ptr<http::HttpApi> http_api;
  if (!o.http.empty()) {
    http::HttpOptions ho;
    ho.address = o.http;
    ho.token = o.token;
    ho.threads = o.http_threads;
    absl::StatusOr<std::unique_ptr<http::HttpApi>> api = http::HttpApi::Start(coord->get(), ho);
    if (!api.ok()) {
      std::fprintf(stderr, "paged: --http: %s\n", std::string(api.status().message()).c_str());
      (*server)->Shutdown();
      return 1;
    }
    http_api = std::move(*api);
    std::printf("paged: http listening on %s%s\n", http_api->address().c_str(),
                o.token.empty() ? "" : " (bearer token)");
  }
  std::fflush(stdout);
  // Under systemd: ready once the server listens (docs/operations.md).
  SdNotifyOrLog("READY=1\nSTATUS=listening on " + (*server)->address());
  SdWatchdog watchdog;
  const int sig = WaitForTerminationSignal();
  SdNotifyOrLog("STOPPING=1");
  std::printf("paged: signal %d, shutting down\n", sig);
  std::fflush(stdout);
  if (http_api) http_api->Stop();  // HTTP clients' sequences are released first
  (*server)->Shutdown();
  return 0;
}

}  // namespace paged
