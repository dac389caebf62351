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
#include "daemon/server.h"

ABSL_FLAG(std::string, segment, "paged", "the store's segment");
ABSL_FLAG(std::string, listen, "",
          "gRPC address: unix:///path.sock or host:port (default: "
          "unix://$XDG_RUNTIME_DIR/paged.sock or unix:///tmp/paged.sock)");
ABSL_FLAG(std::string, token, "", "bearer token required on Inference, Admin and WorkerLink");
ABSL_FLAG(int, max_queue, 256, "waiting requests; more are RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_step_tokens, 512, "tokens of one step (all its sequences)");
ABSL_FLAG(int, max_seqs_per_step, 32, "sequences of one step (leased to one worker)");
ABSL_FLAG(int, prefill_chunk, 256, "prompt tokens of one sequence in one step");
ABSL_FLAG(int, max_threads, 512, "gRPC server threads");
ABSL_FLAG(std::string, chat_template, "",
          "chat prompt format instead of the checkpoint's template: chatml, llama2, llama3, "
          "mistral or gemma");
ABSL_FLAG(std::string, http, "",
          "HOST:PORT of the HTTP server: the OpenAI-compatible API and /metrics (off when empty)");
ABSL_FLAG(int, http_threads, 4, "HTTP server threads");
ABSL_FLAG(std::string, log_level, "info", "debug | info | warning | error");
ABSL_FLAG(std::string, config, "",
          "config file ([global] and [coordinator] keys; the command line wins)");

namespace {

bool IsFlag(const std::string& name) { return absl::FindCommandLineFlag(name) != nullptr; }

}  // namespace

int main(int argc, char** argv) {
  paged::BlockTerminationSignals();  // before any thread starts
  paged::ConfigArgs args(argc, argv, "coordinator", IsFlag, "paged");
  paged::ParseFlags(
      args.argc(), args.argv(),
      "paged --segment NAME --listen unix:///path.sock|host:port [--token T] [--max-queue N] "
      "[--max-step-tokens N] [--max-seqs-per-step N] [--prefill-chunk N] [--chat-template NAME] "
      "[--http HOST:PORT] [--config FILE]");
  paged::ServeOptions o;
  o.segment = absl::GetFlag(FLAGS_segment);
  o.listen = absl::GetFlag(FLAGS_listen);
  o.token = absl::GetFlag(FLAGS_token);
  o.max_queue = absl::GetFlag(FLAGS_max_queue);
  o.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  o.max_seqs_per_step = absl::GetFlag(FLAGS_max_seqs_per_step);
  o.prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  o.max_threads = absl::GetFlag(FLAGS_max_threads);
  o.chat_format = absl::GetFlag(FLAGS_chat_template);
  o.http = absl::GetFlag(FLAGS_http);
  o.http_threads = absl::GetFlag(FLAGS_http_threads);
  o.log_level = absl::GetFlag(FLAGS_log_level);
  return paged::RunCoordinator(o);
}
