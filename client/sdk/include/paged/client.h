// The C++ client of a paged server: generate text, tokenize, and operate the
// service (status, sequences, drain, models). This is the SDK's public
// header: plain structs and absl::Status only, no generated protobuf or gRPC
// code (those stay inside libpaged_client).
//
// Installed (cmake --install, docs/client.md "Installing the C++ SDK"):
//
//   find_package(paged REQUIRED)
//   target_link_libraries(app PRIVATE paged::client)
//   #include <paged/client.h>
//
// In the paged tree, link `paged_client` and include
// "client/sdk/paged_client.h" (this header plus the in-tree wire-message calls).
//
//   auto client = paged::client::Client::Connect("unix:///tmp/paged.sock");
//   if (!client.ok()) return Fail(client.status());
//   paged::client::GenerateOptions g;
//   g.prompt = "Once upon a time";
//   g.max_tokens = 64;
//   auto r = client->Generate(g, [](const paged::client::TokenChunk& c) {
//     std::fputs(c.text.c_str(), stdout);  // each piece as soon as it is committed
//   });
//   if (!r.ok()) return Fail(r.status());
//   std::printf("\n%d tokens, finish: %s\n", r->usage.generated_tokens,
//   FinishReasonName(r->finish_reason));
//
// Errors: every call returns an absl::Status whose code is the server's gRPC
// code (the numbering is the same: RESOURCE_EXHAUSTED when the queue is full,
// INVALID_ARGUMENT for a bad request, UNAVAILABLE when the server cannot be
// reached, DEADLINE_EXCEEDED when the call's timeout passed,
// UNAUTHENTICATED for a missing or wrong token) and whose message is the
// server's. Arguments the server would reject anyway (an empty prompt,
// max_tokens <= 0, top_p outside (0, 1], ...) are answered with
// INVALID_ARGUMENT before anything is sent.
//
// Threads: a Client may be used from many threads at once (e.g. one Generate
// per thread); calls do not share state. A Client is movable, not copyable.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
// Installed beside this header as paged/common/finish_reason.h (a quoted
// include looks in this header's directory first); in the tree, common/.
#include "common/finish_reason.h"

namespace paged::client {

// How long a unary call (Status, Tokenize, ...) may take unless told.
inline constexpr absl::Duration kDefaultTimeout = absl::Seconds(10);

// TLS to the server. Off unless `enable` or any file is given.
struct TlsOptions {
  bool enable = false;      // TLS with the system's CA roots (or `ca`)
  std::string ca;           // PEM file: the CA that signed the server's certificate
  std::string cert, key;    // PEM files: a client certificate, when the server asks for one
  std::string server_name;  // the name the server's certificate must carry ("": the target's host)
  bool enabled() const { return enable || !ca.empty() || !cert.empty(); }
};

struct ConnectOptions {
  // Connect() waits this long for the connection and fails with UNAVAILABLE
  // when the server is not there. Zero: connect lazily on the first call.
  absl::Duration connect_timeout = absl::Seconds(5);
  TlsOptions tls;
};

// One message of a chat conversation.
struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// One generation request. Give exactly one of `prompt`, `prompt_tokens` and
// `messages`.
struct GenerateOptions {
  std::string prompt;                  // text; the server tokenizes it and adds BOS
  std::vector<int32_t> prompt_tokens;  // or token ids, sent as they are (add BOS yourself)
  // Or a conversation, rendered by the server with the model's chat template
  // (FAILED_PRECONDITION when the model has none); the reply stops at the
  // format's end of turn. With add_generation_prompt the prompt ends with the
  // assistant's turn opened, which is what a reply wants.
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;
  int max_tokens = 128;                   // tokens to generate, > 0
  std::vector<int32_t> stop_token_ids;    // stop (finish STOP) when one is generated
  std::vector<std::string> stop_strings;  // stop when the text contains one
  bool ignore_eos = false;                // keep going past the end-of-sequence token
  // Sampling. temperature 0 is greedy (then the rest does not matter).
  float temperature = 0.f;  // >= 0
  int top_k = 0;            // >= 0; 0: off
  float top_p = 1.f;        // in (0, 1]; 1: off
  uint64_t seed = 0;        // same seed, same request: same tokens
  std::string request_id;   // your id for the request, echoed back and shown in ListSequences
  // The whole generation must end within this; the server then stops the
  // sequence. Infinite by default.
  absl::Duration timeout = absl::InfiniteDuration();
  // When the stream breaks (UNAVAILABLE: the coordinator restarted), the call
  // reconnects with its request_id and continues from the tokens it has
  // (GenerateRequest.resume: the server's journal resumes the sequence,
  // docs/reliability.md), trying for up to this long. A request that had
  // received nothing and that the server does not know is sent again.
  // Zero: no resuming. Without a request_id, the call makes a random one.
  absl::Duration resume_within = absl::Seconds(30);
};

// One streamed message: the tokens the server committed since the last one,
// in order (each token exactly once), and their text. The text may be empty
// when a token ends mid-character; it then comes with a later chunk.
struct TokenChunk {
  std::vector<int32_t> token_ids;
  std::string text;
};

// Why a generation ended, and its name (common/finish_reason.h: one
// vocabulary for the server and its clients). A streamed result ends with
// kLength, kStop, kEos, kCancelled or kError.
using ::paged::FinishReason;
using ::paged::FinishReasonName;

struct Usage {
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double time_to_first_token_s = 0;
  double total_s = 0;
  std::vector<double> step_s;    // the time of each step that produced a token
  int cached_prompt_tokens = 0;  // prompt tokens whose KV came from the prefix cache
};

struct GenerateResult {
  std::vector<int32_t> token_ids;  // every generated token
  std::string text;                // their text (stop strings are not included)
  FinishReason finish_reason = FinishReason::kNone;
  Usage usage;
  std::string request_id;
  uint64_t sequence_id = 0;  // the server's id: Cancel() takes it
};

// ---- What the Admin calls answer (proto/paged/v1/admin.proto, field for field) ----

// How a worker lays the model out on its device.
struct MemoryPlan {
  uint64_t budget_bytes = 0;
  uint64_t planned_bytes = 0;
  int slots = 0;
  int resident_layers = 0;
  int paged_layers = 0;
  uint64_t kv_cache_blocks = 0;
  uint64_t paged_bytes_per_step = 0;
  std::string text;                 // as the worker prints it
  double link_h2d_bytes_per_s = 0;  // measured host-to-device bandwidth; 0: not measured
  // Expert-level paging: the device expert cache's slots of all the experts
  // (0: whole layers are paged).
  uint64_t expert_slots = 0;
  uint64_t total_experts = 0;
  uint64_t expert_cache_bytes = 0;
};

struct WorkerCounters {
  uint64_t steps = 0;
  uint64_t tokens = 0;
  uint64_t h2d_bytes = 0;
  uint64_t d2h_bytes = 0;
  double busy_s = 0;  // time spent in steps
  // Expert-level paging: routed experts found in the expert cache (hits),
  // copied in over the link (misses) or computed by the host in place.
  uint64_t expert_hits = 0;
  uint64_t expert_misses = 0;
  uint64_t expert_host = 0;
  uint64_t expert_evictions = 0;
  uint64_t expert_admitted = 0;    // host-computed experts also copied in for later steps
  uint64_t expert_prefetched = 0;  // copied in ahead, on the next layer's predicted routing
  uint64_t h2d_expert_bytes = 0;   // of h2d_bytes: experts copied in
  uint64_t host_expert_bytes = 0;  // experts the host computed in place
  // The hybrid step (docs/hybrid.md): weight bytes the host read in place
  // (its rows of the paged matrices and its experts), and its current share
  // of each paged matrix at one token row (a gauge; 0 without the step).
  uint64_t host_weight_bytes = 0;
  double host_share = 0;
};

struct WorkerInfo {
  std::string worker_id;  // "cpu:0", "cuda:1"
  std::string device;
  std::string state;  // ATTACHED, DRAINING, DRAINED, GONE
  MemoryPlan plan;
  int running_sequences = 0;
  WorkerCounters counters;
  int restarts = 0;
};

// One child of a supervisor (paged-up).
struct SupervisedProcess {
  std::string name;   // "store", "coordinator", "worker cpu:0"
  std::string state;  // RUNNING, RESTARTING, CRASH_LOOP, EXITED, FAILED
  int64_t pid = 0;    // 0 when not running
  int restarts = 0;
  int failures_in_a_row = 0;  // quick failures since it last ran stably
  std::string last_exit;      // "killed by signal 9 (Killed)"
  double next_restart_s = 0;  // RESTARTING / CRASH_LOOP: seconds until the next try
};

// What a supervisor reports (ReportSupervision).
struct SupervisionReport {
  std::string supervisor;  // "paged-up (pid 1234)"
  std::vector<SupervisedProcess> processes;
};

struct ServerStatus {
  std::string model;  // architecture and sizes
  std::string segment;
  std::string store_state;  // READY, ...
  std::vector<WorkerInfo> workers;
  int queue_depth = 0;
  int running_sequences = 0;
  double tokens_per_s = 0;  // over the last seconds
  double bytes_paged_per_s = 0;
  uint64_t kv_blocks_total = 0;
  uint64_t kv_blocks_used = 0;
  // The KV pool on demand and its prefix cache.
  uint64_t kv_blocks_cached = 0;     // published in the prefix cache
  int waiting_for_kv = 0;            // preempted sequences waiting for blocks
  int64_t kv_preemptions = 0;        // times a sequence waited for blocks
  int64_t prompt_tokens = 0;         // prompt tokens of the sequences that started
  int64_t cached_prompt_tokens = 0;  // of those, taken from the prefix cache
  int64_t kv_cache_evictions = 0;    // cached blocks taken back for new rows
  // The store's segment is READY and its process lives, and at least one
  // worker is ATTACHED; not_ready_reason says why not.
  bool ready = false;
  std::string not_ready_reason;
  // The paged-store process that holds the segment; 0 and false when none does.
  int64_t store_pid = 0;
  bool store_alive = false;
  // The processes a supervisor (paged-up) runs, as it last reported them.
  std::vector<SupervisedProcess> supervised;
  double supervised_report_age_s = 0;  // seconds since that report
};

struct SequenceInfo {
  uint64_t sequence_id = 0;
  std::string request_id;
  // QUEUED, RUNNING, FINISHED, HELD, PAUSED (its client is not reading its
  // stream: not scheduled until it reads, cancelled after a deadline)
  std::string state;
  std::string worker_id;
  int prompt_tokens = 0;
  int generated_tokens = 0;
};

struct ModelInfo {
  std::string name;
  std::string architecture;
  int n_layers = 0;
  int hidden_size = 0;
  int vocab_size = 0;
  int max_context = 0;
  std::string weight_format;
  // The chat format chat prompts are rendered in: "chatml", "llama2",
  // "llama3", "mistral", "gemma"; "" when chat prompts are refused.
  std::string chat_template;
};

class Client {
 public:
  // `target` is a gRPC target: "unix:///path/to.sock" or "host:port". A
  // non-empty `token` is sent as "authorization: Bearer <token>" with every
  // call. Fails with UNAVAILABLE (naming the target) when the server cannot
  // be reached within options.connect_timeout, and with INVALID_ARGUMENT for
  // an empty target.
  static absl::StatusOr<Client> Connect(std::string target, std::string token = "",
                                        ConnectOptions options = {});

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  const std::string& target() const;

  // Streams a generation. `on_token` (may be empty) runs on the calling
  // thread for every message that carries tokens or text, as soon as it
  // arrives. Returns the whole result when the stream ends, including a
  // generation the server finished with FinishReason::kError or kCancelled
  // (check finish_reason). A failed call returns its status; chunks already
  // delivered to `on_token` stay delivered.
  absl::StatusOr<GenerateResult> Generate(
      const GenerateOptions& options,
      const std::function<void(const TokenChunk&)>& on_token = {}) const;

  // The model's token ids for `text` (with BOS first when add_bos).
  absl::StatusOr<std::vector<int32_t>> Tokenize(std::string_view text, bool add_bos = true,
                                                absl::Duration timeout = kDefaultTimeout) const;

  // The service as a whole: model, store state, queue depth, running
  // sequences, throughput, KV blocks, and every worker with its device,
  // state (ATTACHED, DRAINING, DRAINED, GONE), memory plan, counters and
  // restarts.
  absl::StatusOr<ServerStatus> Status(absl::Duration timeout = kDefaultTimeout) const;
  // Sequences the server knows: id, request id, state, worker, token counts.
  absl::StatusOr<std::vector<SequenceInfo>> ListSequences(
      absl::Duration timeout = kDefaultTimeout) const;
  // Stops a sequence at its next step (its Generate stream ends with
  // FinishReason::kCancelled). NOT_FOUND for an unknown id.
  absl::Status Cancel(uint64_t sequence_id, absl::Duration timeout = kDefaultTimeout) const;
  // The worker finishes its sequences and takes no new ones.
  absl::Status Drain(std::string_view worker_id, absl::Duration timeout = kDefaultTimeout) const;
  // The models the server serves.
  absl::StatusOr<std::vector<ModelInfo>> ListModels(absl::Duration timeout = kDefaultTimeout) const;
  // For a supervisor (paged-up): how its children are; Status shows it.
  absl::Status ReportSupervision(const SupervisionReport& report,
                                 absl::Duration timeout = kDefaultTimeout) const;

 private:
  struct Impl;
  friend struct ClientAccess;  // the in-tree wire-message calls (client/sdk/paged_client.h)
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Checks a request the way the server would, without sending it.
absl::Status ValidateGenerateOptions(const GenerateOptions& options);

}  // namespace paged::client
