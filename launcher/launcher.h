// paged-up: a whole local deployment in one command. Starts paged-store
// (waits until its segment is READY), the coordinator `paged` (waits until it
// listens), then one paged-worker per visible GPU or N CPU workers; prints
// "paged is up: ADDR" once a worker has attached; from then on restarts any
// child that fails (the store re-attaches its segment, workers re-attach to
// a restarted coordinator), with backoff, never giving up on one without
// saying so (crash loops are reported to the coordinator: `pagectl status`);
// and on SIGINT/SIGTERM stops workers, coordinator and store in that order.
// The token reaches the children in their environment (PAGED_TOKEN), never
// in argv.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launcher/supervisor.h"
#include "worker/device.h"

namespace paged::launcher {

struct LaunchOptions {
  std::string model;  // HF checkpoint directory or .gguf file
  std::string segment = "paged";
  std::string weight_format = "native";
  double kv_gib = 1.0;
  std::string listen = "unix:///tmp/paged.sock";  // the coordinator's address
  std::string device = "auto";                    // auto | cpu | cuda | cuda:N[,cuda:M...]
  std::string gpu_budget =
      "auto";         // per worker; auto: 85% of each GPU, the worker's default on the CPU
  int workers = 0;    // 0: one per GPU (auto, cuda) or 1 (cpu); N: that many
  std::string token;  // bearer token the coordinator requires, when set (resolved: common/token.h)
  // The store removes the segment when it stops, and paged-up removes it
  // after the store is gone, however it ended (a crash, a SIGKILL).
  bool remove_segment = false;
  // The coordinator's sequence journal (paged --journal): "auto" is
  // /dev/shm/SEGMENT.journal, beside the segment; "" is none. With it a
  // restarted coordinator resumes every stream (docs/reliability.md).
  std::string journal = "auto";
  // TLS for the coordinator's gRPC (and HTTP) port: its certificate and key
  // (paged --tls-cert / --tls-key), and the CA that signed it, which the
  // workers and paged-up's own calls check it against ("": the certificate
  // itself, a self-signed one).
  std::string tls_cert, tls_key, tls_ca;
  std::vector<std::string> store_args, coordinator_args,
      worker_args;                    // extra flags, passed as they are
  std::string bin_dir;                // look for the binaries here first
  double start_timeout_s = 600;       // store READY, coordinator listening, first worker attached
  double stop_timeout_s = 10;         // per stage: SIGTERM, then SIGKILL
  double restart_backoff_s = 0.5;     // the first restart's delay, doubled per quick failure
  double max_restart_backoff_s = 30;  // the longest; a crash loop is retried this often
  bool dry_run = false;               // print the commands and exit
};

// Where the three binaries are.
struct Binaries {
  std::string store, coordinator, worker;
};

// Finds a binary: `bin_dir` first when set, then beside this executable, then
// the build tree's layout around it (build/launcher/paged-up next to
// build/store/, build/daemon/, build/worker/), then $PATH. "" when not found.
std::string FindBinary(const std::string& name, const std::string& bin_dir,
                       const std::string& self_dir);
// All three, or NOT_FOUND naming what is missing and where it looked.
absl::StatusOr<Binaries> FindBinaries(const std::string& bin_dir);

// The processes of a deployment, before any starts.
struct Deployment {
  ChildSpec store;
  ChildSpec coordinator;
  std::vector<ChildSpec> workers;
  std::string client_target;  // how clients and workers reach the coordinator
};

// Decides the deployment (pure): validates the options and picks the workers
// from `gpus` (what ListGpus() found) and `device`. `cpu_threads` is split
// among CPU workers.
absl::StatusOr<Deployment> PlanDeployment(const LaunchOptions& o, const std::vector<GpuInfo>& gpus,
                                          const Binaries& bins, int cpu_threads);

// How a client reaches a listen address: unix targets as they are, a
// wildcard host (0.0.0.0, [::], *) as localhost.
std::string ClientTarget(const std::string& listen);

// The coordinator's journal path of `o.journal` ("auto": beside the
// segment in /dev/shm); "" for none.
std::string JournalPath(const LaunchOptions& o);

// A command line as a shell would take it.
std::string CommandLine(const std::vector<std::string>& argv);

// Runs the deployment until SIGINT/SIGTERM (exit code 0) or until the store or
// the coordinator dies, no worker is left, or start-up fails (1; the reason
// on stderr). Call from main() before any other thread starts.
int Launch(const LaunchOptions& o);

}  // namespace paged::launcher
