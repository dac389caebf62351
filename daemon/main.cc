// paged: the coordinator. Maps the store's segment read-only (model, KV pool
// geometry, tokenizer), lets workers attach over WorkerLink, and serves
// Inference and Admin (docs/serving.md), and with --http the OpenAI-compatible
// API and /metrics (docs/http.md). Under systemd it says READY=1 once the
// servers listen (docs/operations.md).
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "common/cli.h"
#include "common/config_file.h"
#include "common/signals.h"
#include "common/token.h"
#include "daemon/server.h"

ABSL_FLAG(std::string, segment, "paged", "the store's segment");
ABSL_FLAG(std::string, listen, "",
          "gRPC address: unix:///path.sock or host:port (default: "
          "unix://$XDG_RUNTIME_DIR/paged.sock or unix:///tmp/paged.sock)");
ABSL_FLAG(std::string, token, "", "bearer token (visible in ps: prefer --token-file)");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token required on Inference, Admin, WorkerLink and HTTP "
          "(else $PAGED_TOKEN, else the systemd credential paged-token)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: gRPC and HTTP over TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA of client certificates: workers must present one it signed");
ABSL_FLAG(std::string, socket_mode, "0660", "mode of the unix socket (octal)");
ABSL_FLAG(std::string, socket_group, "", "group of the unix socket (default: the process's)");
ABSL_FLAG(int, max_queue, 256, "waiting requests; more are RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_step_tokens, 512, "tokens of one step (all its sequences)");
ABSL_FLAG(int, max_seqs_per_step, 32, "sequences of one step (leased to one worker)");
ABSL_FLAG(int, prefill_chunk, 256, "prompt tokens of one sequence in one step");
ABSL_FLAG(bool, prefix_cache, true,
          "share the KV rows of committed prompt prefixes between requests (docs/scheduler.md)");
ABSL_FLAG(int, max_overtake, 32,
          "later requests that may start while one that cannot (KV blocks) waits; then it goes "
          "first");
ABSL_FLAG(int, max_threads, 512, "gRPC server threads");
ABSL_FLAG(int, max_stream_backlog, 256,
          "tokens a client may leave unread before its sequence is paused");
ABSL_FLAG(double, stalled_stream_timeout, 30,
          "seconds a paused client may read nothing before its sequence is cancelled");
ABSL_FLAG(std::string, journal, "",
          "the sequence journal: a restarted coordinator resumes the sequences it holds and "
          "clients continue their streams (docs/reliability.md); \"\" = none");
ABSL_FLAG(double, resume_timeout, 30,
          "seconds a restored sequence waits for its client to reconnect before it is cancelled");
ABSL_FLAG(std::string, chat_template, "",
          "chat prompt format instead of the checkpoint's template: chatml, llama2, llama3, "
          "mistral or gemma");
ABSL_FLAG(std::string, http, "",
          "HOST:PORT of the HTTP server: the OpenAI-compatible API and /metrics (off when empty)");
ABSL_FLAG(int, http_threads, 4, "HTTP server threads");
ABSL_FLAG(
    std::string, http_allowed_hosts, "",
    "without a token: Host/Origin names accepted besides localhost (comma-separated; *: any)");
ABSL_FLAG(int, http_max_connections, 1024, "HTTP connections in all");
ABSL_FLAG(int, http_max_connections_per_client, 256, "HTTP connections of one client address");
ABSL_FLAG(double, http_idle_timeout, 15, "seconds an HTTP connection may wait to start a request");
ABSL_FLAG(double, http_header_timeout, 10, "seconds to send a request's headers");
ABSL_FLAG(std::string, log_level, "info", "debug | info | warning | error");
ABSL_FLAG(std::string, config, "",
          "config file ([global] and [coordinator] keys; the command line wins)");

namespace {
bool IsFlag(const std::string& name) { return absl::FindCommandLineFlag(name) != nullptr; }
}  // namespace

int main(int argc, char** argv) {
  paged::BlockTerminationSignals();  // before any thread starts
  paged::ConfigArgs args(argc, argv, "coordinator", IsFlag, "paged");
  paged::ParseFlags(args.argc(), args.argv(),
                    "paged --segment NAME --listen unix:///path.sock|host:port [--token-file F] "
                    "[--tls-cert F --tls-key F] [--http HOST:PORT] [--config FILE] ...");
  paged::ServeOptions o;
  auto token = paged::ResolveToken(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file));
  unsigned mode = 0;
  if (!token.ok() || std::sscanf(absl::GetFlag(FLAGS_socket_mode).c_str(), "%o", &mode) != 1) {
    std::fprintf(stderr, "paged: %s\n",
                 token.ok() ? "--socket-mode: want an octal mode such as 0660"
                            : std::string(token.status().message()).c_str());
    return 2;
  }
  o.token = *token;
  o.socket_mode = mode;
  o.socket_group = absl::GetFlag(FLAGS_socket_group);
  o.tls = {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
           absl::GetFlag(FLAGS_tls_client_ca)};
  o.segment = absl::GetFlag(FLAGS_segment);
  o.listen = absl::GetFlag(FLAGS_listen);
  o.max_queue = absl::GetFlag(FLAGS_max_queue);
  o.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  o.max_seqs_per_step = absl::GetFlag(FLAGS_max_seqs_per_step);
  o.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  o.prefix_cache = absl::GetFlag(FLAGS_prefix_cache);
  o.max_overtake = absl::GetFlag(FLAGS_max_overtake);
  o.max_threads = absl::GetFlag(FLAGS_max_threads);
  o.max_stream_backlog = absl::GetFlag(FLAGS_max_stream_backlog);
  o.stalled_stream_timeout_s = absl::GetFlag(FLAGS_stalled_stream_timeout);
  o.journal = absl::GetFlag(FLAGS_journal);
  o.resume_timeout_s = absl::GetFlag(FLAGS_resume_timeout);
  o.chat_format = absl::GetFlag(FLAGS_chat_template);
  o.http = absl::GetFlag(FLAGS_http);
  o.http_threads = absl::GetFlag(FLAGS_http_threads);
  o.http_allowed_hosts = absl::GetFlag(FLAGS_http_allowed_hosts);
  o.http_max_connections = absl::GetFlag(FLAGS_http_max_connections);
  o.http_max_connections_per_client = absl::GetFlag(FLAGS_http_max_connections_per_client);
  o.http_idle_timeout_s = absl::GetFlag(FLAGS_http_idle_timeout);
  o.http_header_timeout_s = absl::GetFlag(FLAGS_http_header_timeout);
  o.log_level = absl::GetFlag(FLAGS_log_level);
  return paged::RunCoordinator(o);
}
