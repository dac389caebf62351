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

struct ServeOptions {
  std::string segment = "paged";
  std::string listen;  // unix:///path.sock or host:port; "": DefaultListenAddress()
  std::string token;   // bearer token required on every paged.v1 service when set
  // Scheduler knobs; 0 keeps the SchedulerConfig default.
  int32_t max_queue = 0;
  int32_t max_step_tokens = 0;
  int32_t max_seqs_per_step = 0;
  int32_t prefill_chunk = 0;
  // --chat-template NAME: the chat format instead of the checkpoint's
  // template ("" keeps the checkpoint's).
  std::string chat_format;
  int max_threads =
      512;  // gRPC threads (ResourceQuota): abandoned streams cannot exhaust the process
  // --http HOST:PORT: the OpenAI-compatible API and /metrics ("": off).
  std::string http;
  int http_threads = 4;  // the HTTP server's event-loop threads
  std::string log_level = "info";
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
  // Serves `coordinator` (not owned; it must outlive the server) on `listen`.
  // UNAVAILABLE when the address cannot be bound.
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
