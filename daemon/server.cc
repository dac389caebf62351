#include "daemon/server.h"

#include <grp.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
#include "daemon/store_probe.h"
#include "proto/channel.h"
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
  s.prefix_cache = o.prefix_cache;
  if (o.max_overtake >= 0) s.max_overtake = o.max_overtake;
  if (absl::Status st = ValidateSchedulerConfig(s); !st.ok()) return st;
  c.chat_format = o.chat_format;

  tokenizer->reset();
  absl::StatusOr<LoadedTokenizer> loaded = LoadSegmentTokenizer(**seg);
  if (!loaded.ok()) return loaded.status();
  *tokenizer = std::move(loaded->tokenizer);
  c.chat_template = std::move(loaded->chat_template);
  return c;
}

namespace {

// The services whose health is reported (grpc.health.v1).
constexpr char kInferenceService[] = "paged.v1.Inference";
constexpr char kAdminService[] = "paged.v1.Admin";
constexpr char kWorkerLinkService[] = "paged.v1.WorkerLink";

// The file of a unix-socket address, "" for TCP.
std::string UnixSocketPath(const std::string& listen) {
  if (!absl::StartsWith(listen, "unix:")) return "";
  std::string path = listen.substr(5);
  if (absl::StartsWith(path, "//")) path = path.substr(2);
  return path;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  if (tls.key.empty()) return absl::InvalidArgumentError("--tls-cert needs --tls-key");
  auto cert = ReadPemFile(tls.cert, "--tls-cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadPemFile(tls.key, "--tls-key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions o(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!tls.client_ca.empty()) {
    auto ca = ReadPemFile(tls.client_ca, "--tls-client-ca");
    if (!ca.ok()) return ca.status();
    o.pem_root_certs = *ca;
    o.client_certificate_request = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  o.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(o);
}

// Many HTTP connections each hold a descriptor: take the hard limit.
void RaiseFileLimit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
}

}  // namespace

struct Server::Services {
  Services(Coordinator* c, const std::string& token, bool worker_certificates)
      : inference(c, token), admin(c, token), link(c, token, worker_certificates) {}
  InferenceService inference;
  AdminService admin;
  WorkerLinkService link;
};

absl::StatusOr<std::unique_ptr<Server>> Server::Start(Coordinator* coordinator,
                                                      const std::string& listen,
                                                      const std::string& token, int max_threads) {
  GrpcOptions o;
  o.listen = listen;
  o.token = token;
  o.max_threads = max_threads;
  return Start(coordinator, o);
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(Coordinator* coordinator,
                                                      const GrpcOptions& o) {
  const std::string& listen = o.listen;
  if (listen.empty()) return absl::InvalidArgumentError("--listen is empty");
  if (!o.tls.client_ca.empty() && !o.tls.enabled())
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = ServerCredentials(o.tls);
  if (!creds.ok()) return creds.status();
  gid_t group = gid_t(-1);
  if (!o.socket_group.empty()) {
    const struct group* g = ::getgrnam(o.socket_group.c_str());
    if (g == nullptr)
      return absl::InvalidArgumentError(
          absl::StrCat("--socket-group ", o.socket_group, ": no such group"));
    group = g->gr_gid;
  }
  InstallProtobufParseErrorHook();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<Server> s(new Server());
  s->coord_ = coordinator;
  s->services_ = std::make_unique<Services>(coordinator, o.token, !o.tls.client_ca.empty());
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(listen, *creds, &port);
  b.RegisterService(&s->services_->inference);
  b.RegisterService(&s->services_->admin);
  b.RegisterService(&s->services_->link);
  grpc::ResourceQuota quota("paged");
  quota.SetMaxThreads(std::max(o.max_threads, 8));
  b.SetResourceQuota(quota);
  // Notice vanished TCP peers (clients and workers) within a minute.
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(ParseErrorInterceptorFactory());
  b.experimental().SetInterceptorCreators(std::move(interceptors));
  // The unix socket is made with the mode asked for, never wider for a
  // moment (the umask is the process's: set around the bind only).
  const std::string socket_path = UnixSocketPath(listen);
  const bool set_mode = !socket_path.empty() && o.socket_mode != 0;
  const mode_t old_umask = set_mode ? ::umask(mode_t(~o.socket_mode & 0777)) : 0;
  s->server_ = b.BuildAndStart();
  if (set_mode) ::umask(old_umask);
  if (s->server_ == nullptr || port == 0)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen));
  if (set_mode) {
    if ((group != gid_t(-1) && ::chown(socket_path.c_str(), uid_t(-1), group) != 0) ||
        ::chmod(socket_path.c_str(), mode_t(o.socket_mode)) != 0)
      return absl::PermissionDeniedError(
          absl::StrCat("socket ", socket_path, ": ", std::strerror(errno)));
  }
  s->address_ = listen;
  if (!absl::StartsWith(listen, "unix:")) {
    const size_t colon = listen.rfind(':');
    if (colon != std::string::npos && listen.substr(colon + 1) == "0")
      s->address_ = absl::StrCat(listen.substr(0, colon), ":", port);
  }
  // Health per service: Inference follows readiness, the others liveness.
  if (grpc::HealthCheckServiceInterface* health = s->server_->GetHealthCheckService()) {
    health->SetServingStatus(kAdminService, true);
    health->SetServingStatus(kWorkerLinkService, true);
    coordinator->SetReadinessListener([health](bool ready) {
      health->SetServingStatus("", ready);
      health->SetServingStatus(kInferenceService, ready);
    });
  }
  return s;
}

Server::~Server() { Shutdown(); }

void Server::Shutdown() {
  if (server_ == nullptr) return;
  coord_->ClearReadinessListener();
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService())
    health->Shutdown();  // every service NOT_SERVING
  coord_->Shutdown();    // ends the streams: workers' links close, Generate answers UNAVAILABLE
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
  RaiseFileLimit();
  SdNotifyOrLog("STATUS=mapping segment " + o.segment);
  std::unique_ptr<const Tokenizer> tokenizer;
  absl::StatusOr<CoordinatorOptions> opts = CoordinatorOptionsFromSegment(o, &tokenizer);
  if (!opts.ok()) {
    std::fprintf(stderr, "paged: segment %s: %s\n", o.segment.c_str(),
                 std::string(opts.status().message()).c_str());
    return 1;
  }
  const SchedulerConfig sc = opts->scheduler;
  if (o.max_stream_backlog > 0) opts->max_stream_backlog = o.max_stream_backlog;
  if (o.stalled_stream_timeout_s > 0) opts->stalled_stream_timeout_s = o.stalled_stream_timeout_s;
  opts->journal_path = o.journal;
  if (o.resume_timeout_s > 0) opts->resume_timeout_s = o.resume_timeout_s;
  opts->store_probe = [segment = o.segment] { return ProbeStore(segment); };
  // Under systemd the watchdog is pinged from the coordinator's own loop: a
  // loop that stops turning stops the pings (docs/operations.md).
  SdWatchdogPinger watchdog;
  opts->on_tick = [&watchdog] { watchdog.Ping(); };
  absl::StatusOr<std::unique_ptr<Coordinator>> coord =
      Coordinator::Create(std::move(*opts), std::move(tokenizer));
  if (!coord.ok()) {
    std::fprintf(stderr, "paged: %s\n", std::string(coord.status().message()).c_str());
    return 2;
  }
  const std::string listen = o.listen.empty() ? DefaultListenAddress() : o.listen;
  GrpcOptions go;
  go.listen = listen;
  go.token = o.token;
  go.max_threads = o.max_threads;
  go.tls = o.tls;
  go.socket_mode = o.socket_mode;
  go.socket_group = o.socket_group;
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(coord->get(), go);
  if (!server.ok()) {
    std::fprintf(stderr, "paged: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  std::printf(
      "paged: %s; KV pool %d blocks of %d tokens (prefix cache %s); queue %d, step %d tokens / "
      "%d seqs, prefill chunk %d\n",
      (*coord)->options().model_name.c_str(), sc.total_blocks, sc.block_tokens,
      sc.prefix_cache ? "on" : "off", sc.max_queue, sc.max_step_tokens, sc.max_seqs_per_step,
      sc.prefill_chunk);
  if (const ChatTemplate* t = (*coord)->chat_template(); t != nullptr)
    std::printf("paged: chat prompts in %s\n", t->Describe().c_str());
  std::printf("paged: listening on %s%s%s\n", (*server)->address().c_str(),
              o.tls.enabled() ? " (TLS)" : "", o.token.empty() ? "" : " (bearer token)");
  std::unique_ptr<http::HttpApi> http_api;
  if (!o.http.empty()) {
    http::HttpOptions ho;
    ho.address = o.http;
    ho.token = o.token;
    ho.threads = o.http_threads;
    ho.tls_cert = o.tls.cert;
    ho.tls_key = o.tls.key;
    ho.allowed_hosts = o.http_allowed_hosts;
    ho.max_connections = o.http_max_connections;
    ho.max_connections_per_client = o.http_max_connections_per_client;
    ho.idle_timeout_s = o.http_idle_timeout_s;
    ho.header_timeout_s = o.http_header_timeout_s;
    absl::StatusOr<std::unique_ptr<http::HttpApi>> api = http::HttpApi::Start(coord->get(), ho);
    if (!api.ok()) {
      std::fprintf(stderr, "paged: --http: %s\n", std::string(api.status().message()).c_str());
      (*server)->Shutdown();
      return 1;
    }
    http_api = std::move(*api);
    std::printf("paged: http listening on %s%s%s\n", http_api->address().c_str(),
                o.tls.enabled() ? " (TLS)" : "", o.token.empty() ? "" : " (bearer token)");
  }
  std::fflush(stdout);
  // Under systemd: ready once the server listens (docs/operations.md).
  SdNotifyOrLog("READY=1\nSTATUS=listening on " + (*server)->address());
  const int sig = WaitForTerminationSignal();
  SdNotifyOrLog("STOPPING=1");
  std::printf("paged: signal %d, shutting down\n", sig);
  std::fflush(stdout);
  // HTTP clients get their goodbye first (an error event and [DONE], or a
  // 503), then the gRPC streams end with UNAVAILABLE.
  if (http_api) http_api->Stop();
  (*server)->Shutdown();
  return 0;
}

}  // namespace paged
