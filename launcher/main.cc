// paged-up: store, coordinator and workers of a local deployment in one
// command, supervised; Ctrl-C stops them all.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "common/cli.h"
#include "common/token.h"
#include "launcher/launcher.h"

ABSL_FLAG(std::string, model, "", "HF checkpoint directory or .gguf file");
ABSL_FLAG(std::string, segment, "paged", "shared memory segment name");
ABSL_FLAG(std::string, weight_format, "native", "native | f32 | f16 | bf16 | int8 | int4");
ABSL_FLAG(double, kv_gib, 1.0, "KV pool size in GiB");
ABSL_FLAG(std::string, listen, "unix:///tmp/paged.sock",
          "coordinator address: unix:///path.sock or host:port");
ABSL_FLAG(std::string, device, "auto",
          "auto (every GPU, else the CPU) | cpu | cuda | cuda:0,cuda:1 (a GPU named twice gets two "
          "workers that share its weights)");
ABSL_FLAG(std::string, gpu_budget, "auto",
          "device memory per worker (e.g. 40GiB); auto: 85% of each GPU");
ABSL_FLAG(int, workers, 0, "workers (0: one per GPU, or 1 on the CPU)");
ABSL_FLAG(std::string, token, "", "bearer token (visible in ps: prefer --token-file)");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token the coordinator requires (else $PAGED_TOKEN); the "
          "children get it in their environment, never on their command lines");
ABSL_FLAG(bool, remove_segment, false,
          "remove the segment when paged-up stops, however the store ended (default: keep it for "
          "a fast restart)");
ABSL_FLAG(std::string, journal, "auto",
          "the coordinator's sequence journal, so that a restarted coordinator resumes every "
          "stream: auto = /dev/shm/SEGMENT.journal, \"\" = none (removed with the segment)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate of the coordinator: gRPC (workers, clients) and HTTP over TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA that signed --tls-cert (default: --tls-cert itself, self-signed)");
ABSL_FLAG(double, restart_backoff, 0.5,
          "seconds before a failed child's first restart (doubled per quick failure)");
ABSL_FLAG(double, max_restart_backoff, 30,
          "the longest restart delay; a child in a crash loop is retried this often");
ABSL_FLAG(std::string, store_args, "", "extra flags for paged-store, space-separated");
ABSL_FLAG(std::string, coordinator_args, "", "extra flags for paged, space-separated");
ABSL_FLAG(std::string, worker_args, "", "extra flags for every paged-worker, space-separated");
ABSL_FLAG(std::string, bin_dir, "",
          "where paged-store, paged and paged-worker are (default: beside paged-up, the build "
          "tree, $PATH)");
ABSL_FLAG(double, start_timeout, 600, "seconds for each start-up stage");
ABSL_FLAG(double, stop_timeout, 10, "seconds each stage gets to stop before SIGKILL");
ABSL_FLAG(bool, dry_run, false, "print the commands and exit");

namespace {
std::vector<std::string> Words(const std::string& s) {
  return absl::StrSplit(s, absl::ByAnyChar(" \t\n"), absl::SkipEmpty());
}
}  // namespace

int main(int argc, char** argv) {
  paged::ParseFlags(
      argc, argv,
      "paged-up --model PATH [--segment NAME] [--weight-format F] [--kv-gib G] [--listen ADDR]\n"
      "         [--device auto|cpu|cuda|cuda:N,...] [--gpu-budget BYTES] [--workers N] "
      "[--dry-run]");
  paged::launcher::LaunchOptions o;
  o.model = absl::GetFlag(FLAGS_model);
  o.segment = absl::GetFlag(FLAGS_segment);
  o.weight_format = absl::GetFlag(FLAGS_weight_format);
  o.kv_gib = absl::GetFlag(FLAGS_kv_gib);
  o.listen = absl::GetFlag(FLAGS_listen);
  o.device = absl::GetFlag(FLAGS_device);
  o.gpu_budget = absl::GetFlag(FLAGS_gpu_budget);
  o.workers = absl::GetFlag(FLAGS_workers);
  auto token = paged::ResolveToken(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file));
  if (!token.ok()) {
    std::fprintf(stderr, "paged-up: %s\n", std::string(token.status().message()).c_str());
    return 2;
  }
  o.token = *token;
  o.restart_backoff_s = absl::GetFlag(FLAGS_restart_backoff);
  o.max_restart_backoff_s = absl::GetFlag(FLAGS_max_restart_backoff);
  o.remove_segment = absl::GetFlag(FLAGS_remove_segment);
  o.journal = absl::GetFlag(FLAGS_journal);
  o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key = absl::GetFlag(FLAGS_tls_key);
  o.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  o.store_args = Words(absl::GetFlag(FLAGS_store_args));
  o.coordinator_args = Words(absl::GetFlag(FLAGS_coordinator_args));
  o.worker_args = Words(absl::GetFlag(FLAGS_worker_args));
  o.bin_dir = absl::GetFlag(FLAGS_bin_dir);
  o.start_timeout_s = absl::GetFlag(FLAGS_start_timeout);
  o.stop_timeout_s = absl::GetFlag(FLAGS_stop_timeout);
  o.dry_run = absl::GetFlag(FLAGS_dry_run);
  return paged::launcher::Launch(o);
}
