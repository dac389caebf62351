// paged-worker: maps a store's segment, plans its device budget (for the
// coordinator's step caps, asked first, where its step limits are auto),
// pages the model through device slots, and serves the coordinator's steps
// (--coordinator). Without a coordinator it checks itself by generating
// --check-tokens greedy tokens from BOS and exits.
#include <atomic>
#include <csignal>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "common/cli.h"
#include "common/config_file.h"
#include "common/log.h"
#include "common/signals.h"
#include "common/size_flag.h"
#include "common/step.h"
#include "common/token.h"
#include "worker/engine/generator.h"
#include "worker/link/worker_link.h"
#include "worker/pager/worker_runtime.h"

ABSL_FLAG(std::string, segment, "paged", "the store's segment");
ABSL_FLAG(std::string, coordinator, "", "coordinator gRPC target (unix:///path.sock or host:port)");
ABSL_FLAG(std::string, worker_id, "", "stable worker id (default: the device)");
ABSL_FLAG(std::string, token, "", "bearer token (visible in ps: prefer --token-file)");
ABSL_FLAG(std::string, token_file, "",
          "file holding the coordinator's bearer token (else $PAGED_TOKEN, else the systemd "
          "credential paged-token)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA of the coordinator's certificate: attach over TLS");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate for the coordinator (TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "name the coordinator's certificate carries, when not the --coordinator host");
ABSL_FLAG(std::string, device, "cpu", "cuda:N or cpu");
ABSL_FLAG(std::string, gpu_budget, "4GiB", "device memory budget (4GiB, 512MiB or bytes)");
ABSL_FLAG(int, slots, 2, "layer slots (>= 2)");
ABSL_FLAG(std::string, resident, "auto", "resident layers: auto | none | all | N");
ABSL_FLAG(std::string, max_step_tokens, "auto",
          "new tokens in the largest step: auto (the coordinator's --max-step-tokens; 2048 "
          "without a coordinator) or a count");
ABSL_FLAG(std::string, max_step_seqs, "auto",
          "sequences in the largest step: auto (the coordinator's --max-seqs-per-step; 64 without "
          "a coordinator) or a count");
ABSL_FLAG(std::string, max_step_kv_tokens, "auto",
          "KV rows the largest step reads (each slot's KV area): auto (at least one full context; "
          "the budget the resident layers leave grows it, up to every sequence at full context) "
          "or a count");
ABSL_FLAG(int, check_tokens, 8, "greedy tokens generated from BOS as a self-check");
ABSL_FLAG(int, threads, 0, "CPU threads");
ABSL_FLAG(std::string, share, "auto",
          "share weight blocks with the other workers of this GPU and its peers: auto (on for "
          "cuda) | on | off");
ABSL_FLAG(bool, shared_in_place, true,
          "use a layer another worker of this GPU holds in place (false: copy it into the slots "
          "like a peer's)");
ABSL_FLAG(
    std::string, peer_copies, "auto",
    "page layers a peer GPU holds from it: auto (when that link measures faster) | off | force");
ABSL_FLAG(
    std::string, host_compute, "auto",
    "the hybrid step: the share of each paged matrix the host CPU computes in place: auto "
    "(balanced per step from the link and CPU bandwidths measured at start, then tuned on the "
    "steps) | planned (not tuned) | off | 0..1");
ABSL_FLAG(int, host_threads, 0, "threads of the host executor (0: every CPU of this process)");
ABSL_FLAG(std::string, host_pin, "none",
          "CPUs the host executor's threads are pinned to: none | all | a list like 0-15");
ABSL_FLAG(std::string, host_activations, "f32",
          "the host executor's activations: f32 (exact, the reference's numbers) | q8 (8 bits per "
          "block of 256 for q4_k / q5_k / q6_k weights, integer products as llama.cpp's CPU path)");
ABSL_FLAG(bool, expert_paging, true,
          "a mixture of experts: page experts one by one through a device expert cache "
          "(false: whole layers, experts included)");
ABSL_FLAG(std::string, expert_eviction, "lfu", "the device expert cache's policy: lru | lfu");
ABSL_FLAG(double, expert_host_share, 1,
          "experts paged, with the host side: the share of the missing experts with few rows "
          "that the host computes in place (0..1; -1: host / (host + link) bandwidth)");
ABSL_FLAG(std::string, expert_misses, "copy",
          "experts paged: the missing experts the host does not compute are copied into the "
          "device expert cache (copy) or read by the device's kernels in place over the link "
          "(mapped)");
ABSL_FLAG(bool, tune_expert_share, false,
          "experts paged, with the host side: tune the host's share of the missing experts on "
          "the steps, starting from --expert-host-share");
ABSL_FLAG(bool, expert_prefetch, false,
          "experts paged: predict each sparse layer's experts one layer early and copy them ahead");
ABSL_FLAG(std::string, log_level, "info", "debug | info | warning | error");
ABSL_FLAG(std::string, config, "",
          "config file ([global] and [worker] keys; the command line wins)");

namespace {

bool IsFlag(const std::string& name) { return absl::FindCommandLineFlag(name) != nullptr; }

// Greedy tokens from BOS through the whole pipeline, printed.
int SelfCheck(paged::WorkerRuntime& w, int n) {
  auto tokens = w.SelfCheck(n);
  if (!tokens.ok()) {
    std::fprintf(stderr, "paged-worker: self-check failed: %s\n",
                 std::string(tokens.status().message()).c_str());
    return 1;
  }
  std::printf("paged-worker: self-check tokens:");
  for (int32_t t : *tokens) std::printf(" %d", t);
  std::printf("\npaged-worker: ready\n");
  return 0;
}

// The coordinator link of the flags (coordinator empty: none).
absl::Status MakeLinkOptions(const paged::WorkerOptions& o, paged::LinkOptions* link) {
  link->coordinator = absl::GetFlag(FLAGS_coordinator);
  if (link->coordinator.empty()) return absl::OkStatus();
  link->worker_id =
      absl::GetFlag(FLAGS_worker_id).empty() ? o.device : absl::GetFlag(FLAGS_worker_id);
  auto token = paged::ResolveToken(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file));
  if (!token.ok()) return token.status();
  link->token = *token;
  link->tls.ca = absl::GetFlag(FLAGS_tls_ca);
  link->tls.cert = absl::GetFlag(FLAGS_tls_cert);
  link->tls.key = absl::GetFlag(FLAGS_tls_key);
  link->tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  link->segment = o.segment;
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  paged::BlockTerminationSignals();  // before any thread starts
  paged::ConfigArgs args(argc, argv, "worker", IsFlag, "paged-worker");
  paged::ParseFlags(
      args.argc(), args.argv(),
      "paged-worker --segment NAME --device cuda:N|cpu --gpu-budget BYTES [--slots S] "
      "[--resident auto|none|all|N] [--coordinator TARGET] [--config FILE]");
  paged::WorkerOptions o;
  if (absl::Status s = paged::ConfigureLog("paged-worker", absl::GetFlag(FLAGS_log_level));
      !s.ok()) {
    std::fprintf(stderr, "paged-worker: --log-level: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  o.segment = absl::GetFlag(FLAGS_segment);
  o.device = absl::GetFlag(FLAGS_device);
  o.limits.slots = absl::GetFlag(FLAGS_slots);
  o.limits.resident = absl::GetFlag(FLAGS_resident);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.share = absl::GetFlag(FLAGS_share);
  o.shared_in_place = absl::GetFlag(FLAGS_shared_in_place);
  o.host_compute = absl::GetFlag(FLAGS_host_compute);
  o.host_threads = absl::GetFlag(FLAGS_host_threads);
  o.host_pin = absl::GetFlag(FLAGS_host_pin);
  o.host_activations = absl::GetFlag(FLAGS_host_activations);
  auto peer = paged::ParsePeerCopies(absl::GetFlag(FLAGS_peer_copies));
  if (!peer.ok()) {
    std::fprintf(stderr, "paged-worker: %s\n", std::string(peer.status().message()).c_str());
    return 2;
  }
  o.peer_copies = *peer;
  o.limits.expert_paging = absl::GetFlag(FLAGS_expert_paging);
  o.limits.expert_prefetch = absl::GetFlag(FLAGS_expert_prefetch);
  auto eviction = paged::ParseExpertEviction(absl::GetFlag(FLAGS_expert_eviction));
  if (!eviction.ok()) {
    std::fprintf(stderr, "paged-worker: %s\n", std::string(eviction.status().message()).c_str());
    return 2;
  }
  o.expert_eviction = *eviction;
  o.expert_host_share = absl::GetFlag(FLAGS_expert_host_share);
  auto mapped = paged::ParseExpertMisses(absl::GetFlag(FLAGS_expert_misses));
  absl::Status share = paged::CheckExpertHostShare(o.expert_host_share);
  if (!mapped.ok() || !share.ok()) {
    std::fprintf(stderr, "paged-worker: %s\n",
                 std::string((mapped.ok() ? share : mapped.status()).message()).c_str());
    return 2;
  }
  o.expert_misses_mapped = *mapped;
  o.tune_expert_share = absl::GetFlag(FLAGS_tune_expert_share);
  auto budget = paged::ParseByteSize(absl::GetFlag(FLAGS_gpu_budget), "gpu-budget");
  if (!budget.ok()) {
    std::fprintf(stderr, "paged-worker: %s\n", std::string(budget.status().message()).c_str());
    return 2;
  }
  o.gpu_budget = *budget;
  paged::LinkOptions link;
  if (absl::Status s = MakeLinkOptions(o, &link); !s.ok()) {
    std::fprintf(stderr, "paged-worker: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  // Step limits left at auto take the coordinator's caps: asked before planning.
  const paged::StepFlags step{absl::GetFlag(FLAGS_max_step_tokens),
                              absl::GetFlag(FLAGS_max_step_seqs),
                              absl::GetFlag(FLAGS_max_step_kv_tokens)};
  absl::StatusOr<bool> from_caps = paged::ResolveStepLimitsUntilSignalled(step, link, &o.limits);
  if (!from_caps.ok()) {
    if (from_caps.status().code() == absl::StatusCode::kCancelled) return 0;  // stopped waiting
    std::fprintf(stderr, "paged-worker: %s\n", std::string(from_caps.status().message()).c_str());
    return 2;
  }
  auto w = paged::WorkerRuntime::Start(o);
  if (!w.ok()) {
    std::fprintf(stderr, "paged-worker: %s\n", std::string(w.status().message()).c_str());
    return 1;
  }
  std::printf("paged-worker: segment %s on %s (step limits: %d tokens, %d sequences%s)\n%s%s\n%s",
              o.segment.c_str(), (*w)->backend().name().c_str(), o.limits.max_step_tokens,
              o.limits.max_step_seqs,
              *from_caps && (step.tokens == "auto" || step.seqs == "auto")
                  ? ", auto from the coordinator's caps"
                  : "",
              (*w)->plan().Describe().c_str(), (*w)->pager().sharing().Describe().c_str(),
              (*w)->DescribeHybrid().c_str());
  std::fflush(stdout);
  if (!link.coordinator.empty()) {
    link.max_step_tokens = o.limits.max_step_tokens;
    link.max_step_seqs = o.limits.max_step_seqs;
    return paged::ServeUntilSignalled(**w, link).ok() ? 0 : 1;
  }
  return SelfCheck(**w, absl::GetFlag(FLAGS_check_tokens));
}
