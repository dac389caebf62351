// `paged`, the coordinator process, as a library: map the store's segment,
// build the Coordinator, serve Inference, Admin and WorkerLink (plus gRPC
// health checking and server reflection) on a unix socket or TCP.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/coordinator.h"

namespace grpc {
class Server;
}

namespace paged {

// TLS for a server: its certificate chain and key (PEM files); off when
// `cert` is empty.
struct TlsFiles {
  std::string cert;
  std::string key;
  // gRPC only: a PEM CA bundle for client certificates. A client that
  // presents one must be signed by it, and a worker (WorkerLink) must present
  // one; other clients may connect without (the bearer token guards them).
  std::string client_ca;
  bool enabled() const { return !cert.empty(); }
};

struct ServeOptions {
  std::string segment = "paged";
  std::string listen;  // unix:///path.sock or host:port; "": DefaultListenAddress()
  std::string token;   // bearer token required on every paged.v1 service when set
  TlsFiles tls;        // gRPC and HTTP
  // The unix socket's mode and group ("": the process's group).
  unsigned socket_mode = 0660;
  std::string socket_group;
  // Back-pressure (CoordinatorOptions); 0 keeps the default.
  int32_t max_stream_backlog = 0;
  double stalled_stream_timeout_s = 0;
  // The sequence journal's path ("": none) and the resume window
  // (CoordinatorOptions).
  std::string journal;
  double resume_timeout_s = 30;
  // Scheduler knobs; 0 keeps the SchedulerConfig default.
  int32_t max_queue = 0;
  int32_t max_step_tokens = 0;
  int32_t max_seqs_per_step = 0;
  int32_t prefill_chunk = 0;
  bool prefix_cache = true;
  int32_t max_overtake = -1;  // -1: the default
  // --chat-template NAME: the chat format instead of the checkpoint's
  // template ("" keeps the checkpoint's).
  std::string chat_format;
  int max_threads =
      512;  // gRPC threads (ResourceQuota): abandoned streams cannot exhaust the process
  // --http HOST:PORT: the OpenAI-compatible API and /metrics ("": off).
  std::string http;
  int http_threads = 4;  // the HTTP server's event-loop threads
  // HTTP Host / Origin values accepted besides loopback ones when there is no
  // token (comma-separated host names or IPs; "*": any).
  std::string http_allowed_hosts;
  int http_max_connections = 1024;
  int http_max_connections_per_client = 256;
  double http_idle_timeout_s = 15;    // no request started (a fresh or keep-alive connection)
  double http_header_timeout_s = 10;  // from a request's first byte to its last header
  std::string log_level = "info";
};

// The gRPC server's options.
struct GrpcOptions {
  std::string listen;
  std::string token;
  int max_threads = 512;  // ResourceQuota: abandoned streams cannot exhaust the process
  TlsFiles tls;
  unsigned socket_mode = 0660;  // a unix socket's mode (0: as the umask makes it)
  std::string socket_group;     // and group ("": the process's)
};

// unix://$XDG_RUNTIME_DIR/paged.sock, or unix:///tmp/paged.sock without it.
std::string DefaultListenAddress();

// Maps segment `o.segment` read-only (it must be READY): the model config,
// the KV pool geometry and the tokenizer (when the segment carries one), and
// builds the coordinator's options from them and the flags.
absl::StatusOr<CoordinatorOptions> CoordinatorOptionsFromSegment(
    const ServeOptions& o, std::unique_ptr<const Tokenizer>* tokenizer);

class Server {
 public:
  // Serves `coordinator` (not owned; it must outlive the server) on
  // `o.listen`, with gRPC health checking per service: paged.v1.Inference
  // (and "") SERVING only while the coordinator is ready, paged.v1.Admin and
  // paged.v1.WorkerLink while it runs. UNAVAILABLE when the address cannot be
  // bound, INVALID_ARGUMENT for unreadable TLS files or an unknown group.
  static absl::StatusOr<std::unique_ptr<Server>> Start(Coordinator* coordinator,
                                                       const GrpcOptions& o);
  static absl::StatusOr<std::unique_ptr<Server>> Start(Coordinator* coordinator,
                                                       const std::string& listen,
                                                       const std::string& token,
                                                       int max_threads = 512);
  ~Server();
  // The address it listens on (a TCP port 0 resolved to the bound port).
  const std::string& address() const { return address_; }
  // Closes the workers' links, ends the streams and stops the server.
  void Shutdown();

 private:
  struct Services;
  Server() = default;
  Coordinator* coord_ = nullptr;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

// The whole process: options from the segment, coordinator, server; prints
// "paged: listening on ADDR", serves until SIGINT / SIGTERM (block them in
// main before any thread starts). Returns the exit code.
int RunCoordinator(const ServeOptions& o);

}  // namespace paged
