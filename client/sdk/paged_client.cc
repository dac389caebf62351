#include "client/sdk/paged_client.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "paged/v1/admin.grpc.pb.h"
#include "paged/v1/inference.grpc.pb.h"
#include "proto/api_convert.h"
#include "proto/channel.h"

namespace paged::client {

namespace {

absl::Status ValidateTimeout(absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout must be > 0 (got ", absl::FormatDuration(timeout), ")"));
  }
  return absl::OkStatus();
}

// The file of a unix-socket target ("unix:///run/paged.sock", "unix:rel.sock"),
// "" for any other target.
std::string UnixSocketPath(const std::string& target) {
  constexpr std::string_view kUnix = "unix:";
  if (target.rfind(kUnix, 0) != 0) return "";
  std::string path = target.substr(kUnix.size());
  if (path.rfind("//", 0) == 0) path = path.substr(2);
  return path;
}

// A clear reason why a unix socket cannot be reached, or OK.
absl::Status CheckUnixSocket(const std::string& target, const std::string& path) {
  struct stat st {};
  const std::string where = absl::StrCat("cannot reach paged at ", target, ": ");
  if (::stat(path.c_str(), &st) != 0) {
    return absl::UnavailableError(
        absl::StrCat(where, path, " does not exist (is the server running? paged-up starts one)"));
  }
  if (!S_ISSOCK(st.st_mode))
    return absl::UnavailableError(absl::StrCat(where, path, " is not a socket"));
  if (::access(path.c_str(), R_OK | W_OK) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(where, "no permission to use ", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGenerateOptions(const GenerateOptions& o) {
  const int kinds =
      int(!o.prompt.empty()) + int(!o.prompt_tokens.empty()) + int(!o.messages.empty());
  if (kinds == 0) {
    return absl::InvalidArgumentError(
        "no prompt: set GenerateOptions.prompt (text), .prompt_tokens (token ids) or .messages "
        "(chat)");
  }
  if (kinds > 1) {
    return absl::InvalidArgumentError(
        "give only one of a text prompt, prompt token ids and chat messages");
  }
  for (size_t i = 0; i < o.messages.size(); ++i) {
    if (o.messages[i].role.empty())
      return absl::InvalidArgumentError(absl::StrCat("chat message ", i, " has no role"));
  }
  for (size_t i = 0; i < o.prompt_tokens.size(); ++i) {
    if (o.prompt_tokens[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token ", i, " is negative (", o.prompt_tokens[i], ")"));
    }
  }
  for (int32_t t : o.stop_token_ids) {
    if (t < 0) return absl::InvalidArgumentError(absl::StrCat("stop token id ", t, " is negative"));
  }
  for (const std::string& s : o.stop_strings) {
    if (s.empty()) return absl::InvalidArgumentError("a stop string is empty");
  }
  if (o.max_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be > 0 (got ", o.max_tokens, ")"));
  }
  if (!std::isfinite(o.temperature) || o.temperature < 0.f) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be >= 0 (got ", o.temperature, ")"));
  }
  if (o.top_k < 0)
    return absl::InvalidArgumentError(absl::StrCat("top_k must be >= 0 (got ", o.top_k, ")"));
  if (!(o.top_p > 0.f && o.top_p <= 1.f)) {
    return absl::InvalidArgumentError(absl::StrCat("top_p must be in (0, 1] (got ", o.top_p, ")"));
  }
  return ValidateTimeout(o.timeout);
}

// ---- Client -------------------------------------------------------------------

struct Client::Impl {
  std::string target;
  std::string token;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Inference::Stub> inference;
  std::unique_ptr<v1::Admin::Stub> admin;

  // Token and deadline on a fresh context. A timeout past a year is no deadline.
  void Prepare(grpc::ClientContext& ctx, absl::Duration timeout) const {
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    if (timeout < absl::Hours(24 * 365)) {
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(
                           absl::ToChronoNanoseconds(timeout)));
    }
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

const std::string& Client::target() const { return impl_->target; }

absl::StatusOr<Client> Client::Connect(std::string target, std::string token,
                                       ConnectOptions options) {
  if (target.empty())
    return absl::InvalidArgumentError("empty server address (want unix:///path.sock or host:port)");
  if (options.connect_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("connect_timeout must be >= 0");
  }
  const std::string socket_path = UnixSocketPath(target);
  if (!socket_path.empty() && options.connect_timeout > absl::ZeroDuration()) {
    if (absl::Status s = CheckUnixSocket(target, socket_path); !s.ok()) return s;
  }
  auto impl = std::make_unique<Impl>();
  impl->target = target;
  impl->token = std::move(token);
  grpc::ChannelArguments args;
  // A client that finds the server restarting should notice it is back soon.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetMaxReceiveMessageSize(64 << 20);
  ClientTls tls;
  tls.enable = options.tls.enable;
  tls.ca = options.tls.ca;
  tls.cert = options.tls.cert;
  tls.key = options.tls.key;
  tls.server_name = options.tls.server_name;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CreateClientChannel(target, tls, args);
  if (!channel.ok()) return channel.status();
  impl->channel = *std::move(channel);
  if (impl->channel == nullptr)
    return absl::InvalidArgumentError(absl::StrCat("bad server address '", target, "'"));
  if (options.connect_timeout > absl::ZeroDuration()) {
    const auto deadline = std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              absl::ToChronoNanoseconds(options.connect_timeout));
    if (!impl->channel->WaitForConnected(deadline)) {
      return absl::UnavailableError(absl::StrCat("cannot reach paged at ", target, " within ",
                                                 absl::FormatDuration(options.connect_timeout),
                                                 " (is the server running and listening there?)"));
    }
  }
  impl->inference = v1::Inference::NewStub(impl->channel);
  impl->admin = v1::Admin::NewStub(impl->channel);
  return Client(std::move(impl));
}

// A request id for a call that gives none and may resume: 128 random bits.
static std::string RandomRequestId() {
  std::random_device rd;
  std::string id = "req-";
  for (int i = 0; i < 4; ++i) absl::StrAppend(&id, absl::Hex(rd(), absl::kZeroPad8));
  return id;
}

absl::StatusOr<GenerateResult> Client::Generate(
    const GenerateOptions& o, const std::function<void(const TokenChunk&)>& on_token) const {
  if (absl::Status s = ValidateGenerateOptions(o); !s.ok()) return s;
  v1::GenerateRequest req;
  if (!o.prompt.empty()) {
    req.set_text(o.prompt);
  } else if (!o.messages.empty()) {
    v1::ChatMessages* chat = req.mutable_chat();
    for (const ChatMessage& m : o.messages) {
      v1::ChatMessage* out = chat->add_messages();
      out->set_role(m.role);
      out->set_content(m.content);
    }
    chat->set_add_generation_prompt(o.add_generation_prompt);
  } else {
    req.mutable_tokens()->mutable_ids()->Add(o.prompt_tokens.begin(), o.prompt_tokens.end());
  }
  req.set_max_tokens(o.max_tokens);
  req.mutable_stop_token_ids()->Add(o.stop_token_ids.begin(), o.stop_token_ids.end());
  for (const std::string& s : o.stop_strings) req.add_stop_strings(s);
  req.set_ignore_eos(o.ignore_eos);
  v1::SamplingParams* sp = req.mutable_sampling();
  sp->set_temperature(o.temperature);
  sp->set_top_k(o.top_k);
  sp->set_top_p(o.top_p);
  sp->set_seed(o.seed);
  const bool resumable = o.resume_within > absl::ZeroDuration();
  req.set_request_id(o.request_id.empty() && resumable ? RandomRequestId() : o.request_id);

  GenerateResult result;
  result.request_id = req.request_id();
  const absl::Time start = absl::Now();
  absl::Time give_up = absl::InfiniteFuture();  // set at the first break
  absl::Status broke;                           // why the stream first broke
  absl::Duration backoff = absl::Milliseconds(50);
  for (;;) {
    grpc::ClientContext ctx;
    impl_->Prepare(ctx, o.timeout - (absl::Now() - start));
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
        impl_->inference->Generate(&ctx, req);
    v1::GenerateResponse msg;
    TokenChunk chunk;
    while (reader->Read(&msg)) {
      if (msg.token_ids_size() > 0 || !msg.text().empty()) {
        chunk.token_ids.assign(msg.token_ids().begin(), msg.token_ids().end());
        chunk.text = msg.text();
        result.token_ids.insert(result.token_ids.end(), chunk.token_ids.begin(),
                                chunk.token_ids.end());
        result.text += chunk.text;
        if (on_token) on_token(chunk);
      }
      if (msg.sequence_id() != 0) result.sequence_id = msg.sequence_id();
      if (!msg.request_id().empty()) result.request_id = msg.request_id();
      if (msg.finish_reason() != v1::GenerateResponse::FINISH_REASON_UNSPECIFIED) {
        result.finish_reason = FromProto(msg.finish_reason());
      }
      if (msg.has_usage()) {
        const v1::Usage& u = msg.usage();
        result.usage.prompt_tokens = u.prompt_tokens();
        result.usage.generated_tokens = u.generated_tokens();
        result.usage.time_to_first_token_s = u.time_to_first_token_s();
        result.usage.total_s = u.total_s();
        result.usage.step_s.assign(u.step_s().begin(), u.step_s().end());
        result.usage.cached_prompt_tokens = u.cached_prompt_tokens();
      }
    }
    absl::Status s = FromGrpcStatus(reader->Finish());
    if (s.ok()) return result;
    if (!resumable || result.finish_reason != FinishReason::kNone) return broke.ok() ? s : broke;
    if (req.has_resume() && absl::IsNotFound(s)) {
      // The server has no journaled sequence under the id. Nothing received:
      // it never started for us, so it is sent again; else it is lost.
      if (!result.token_ids.empty())
        return absl::UnavailableError(absl::StrCat(broke.message(), "; resuming request_id '",
                                                   req.request_id(), "' failed: ", s.message()));
      req.clear_resume();
      continue;
    }
    if (!absl::IsUnavailable(s)) return broke.ok() ? s : broke;
    if (broke.ok()) {
      broke = s;
      give_up = absl::Now() + o.resume_within;
    }
    if (absl::Now() + backoff > give_up) return broke;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
    req.mutable_resume()->set_received(int32_t(result.token_ids.size()));
  }
}

absl::StatusOr<std::vector<int32_t>> Client::Tokenize(std::string_view text, bool add_bos,
                                                      absl::Duration timeout) const {
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  v1::TokenizeRequest req;
  req.set_text(std::string(text));
  req.set_add_bos(add_bos);
  v1::TokenizeResponse resp;
  grpc::ClientContext ctx;
  impl_->Prepare(ctx, timeout);
  if (absl::Status s = FromGrpcStatus(impl_->inference->Tokenize(&ctx, req, &resp)); !s.ok())
    return s;
  return std::vector<int32_t>(resp.ids().begin(), resp.ids().end());
}

// ---- Admin -------------------------------------------------------------------

struct ClientAccess {
  static const Client::Impl& Of(const Client& c) { return *c.impl_; }
};

namespace wire {

absl::StatusOr<v1::StatusResponse> Status(const Client& c, absl::Duration timeout) {
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  const auto& impl = ClientAccess::Of(c);
  v1::StatusResponse resp;
  grpc::ClientContext ctx;
  impl.Prepare(ctx, timeout);
  if (absl::Status s = FromGrpcStatus(impl.admin->Status(&ctx, v1::StatusRequest(), &resp));
      !s.ok())
    return s;
  return resp;
}

absl::StatusOr<std::vector<v1::SequenceInfo>> ListSequences(const Client& c,
                                                            absl::Duration timeout) {
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  const auto& impl = ClientAccess::Of(c);
  v1::ListSequencesResponse resp;
  grpc::ClientContext ctx;
  impl.Prepare(ctx, timeout);
  if (absl::Status s =
          FromGrpcStatus(impl.admin->ListSequences(&ctx, v1::ListSequencesRequest(), &resp));
      !s.ok()) {
    return s;
  }
  return std::vector<v1::SequenceInfo>(resp.sequences().begin(), resp.sequences().end());
}

absl::StatusOr<std::vector<v1::ModelInfo>> ListModels(const Client& c, absl::Duration timeout) {
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  const auto& impl = ClientAccess::Of(c);
  v1::ListModelsResponse resp;
  grpc::ClientContext ctx;
  impl.Prepare(ctx, timeout);
  if (absl::Status s = FromGrpcStatus(impl.admin->ListModels(&ctx, v1::ListModelsRequest(), &resp));
      !s.ok()) {
    return s;
  }
  return std::vector<v1::ModelInfo>(resp.models().begin(), resp.models().end());
}

absl::Status ReportSupervision(const Client& c, const v1::ReportSupervisionRequest& report,
                               absl::Duration timeout) {
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  const auto& impl = ClientAccess::Of(c);
  grpc::ClientContext ctx;
  impl.Prepare(ctx, timeout);
  v1::ReportSupervisionResponse resp;
  return FromGrpcStatus(impl.admin->ReportSupervision(&ctx, report, &resp));
}

namespace {

SupervisedProcess FromWire(const v1::SupervisedProcess& p) {
  SupervisedProcess out;
  out.name = p.name();
  out.state = p.state();
  out.pid = p.pid();
  out.restarts = p.restarts();
  out.failures_in_a_row = p.failures_in_a_row();
  out.last_exit = p.last_exit();
  out.next_restart_s = p.next_restart_s();
  return out;
}

WorkerInfo FromWire(const v1::WorkerInfo& w) {
  WorkerInfo out;
  out.worker_id = w.worker_id();
  out.device = w.device();
  out.state = w.state();
  const v1::MemoryPlan& p = w.plan();
  out.plan.budget_bytes = p.budget_bytes();
  out.plan.planned_bytes = p.planned_bytes();
  out.plan.slots = p.slots();
  out.plan.resident_layers = p.resident_layers();
  out.plan.paged_layers = p.paged_layers();
  out.plan.kv_cache_blocks = p.kv_cache_blocks();
  out.plan.paged_bytes_per_step = p.paged_bytes_per_step();
  out.plan.text = p.text();
  out.plan.link_h2d_bytes_per_s = p.link_h2d_bytes_per_s();
  out.plan.expert_slots = p.expert_slots();
  out.plan.total_experts = p.total_experts();
  out.plan.expert_cache_bytes = p.expert_cache_bytes();
  out.running_sequences = w.running_sequences();
  const v1::WorkerCounters& k = w.counters();
  out.counters.steps = k.steps();
  out.counters.tokens = k.tokens();
  out.counters.h2d_bytes = k.h2d_bytes();
  out.counters.d2h_bytes = k.d2h_bytes();
  out.counters.busy_s = k.busy_s();
  out.counters.expert_hits = k.expert_hits();
  out.counters.expert_misses = k.expert_misses();
  out.counters.expert_host = k.expert_host();
  out.counters.expert_evictions = k.expert_evictions();
  out.counters.expert_admitted = k.expert_admitted();
  out.counters.expert_prefetched = k.expert_prefetched();
  out.counters.h2d_expert_bytes = k.h2d_expert_bytes();
  out.counters.host_expert_bytes = k.host_expert_bytes();
  out.counters.host_weight_bytes = k.host_weight_bytes();
  out.counters.host_share = k.host_share();
  out.restarts = w.restarts();
  return out;
}

}  // namespace

ServerStatus FromWire(const v1::StatusResponse& s) {
  ServerStatus out;
  out.model = s.model();
  out.segment = s.segment();
  out.store_state = s.store_state();
  for (const v1::WorkerInfo& w : s.workers()) out.workers.push_back(FromWire(w));
  out.queue_depth = s.queue_depth();
  out.running_sequences = s.running_sequences();
  out.tokens_per_s = s.tokens_per_s();
  out.bytes_paged_per_s = s.bytes_paged_per_s();
  out.kv_blocks_total = s.kv_blocks_total();
  out.kv_blocks_used = s.kv_blocks_used();
  out.kv_blocks_cached = s.kv_blocks_cached();
  out.waiting_for_kv = s.waiting_for_kv();
  out.kv_preemptions = s.kv_preemptions();
  out.prompt_tokens = s.prompt_tokens();
  out.cached_prompt_tokens = s.cached_prompt_tokens();
  out.kv_cache_evictions = s.kv_cache_evictions();
  out.ready = s.ready();
  out.not_ready_reason = s.not_ready_reason();
  out.store_pid = s.store_pid();
  out.store_alive = s.store_alive();
  for (const v1::SupervisedProcess& p : s.supervised()) out.supervised.push_back(FromWire(p));
  out.supervised_report_age_s = s.supervised_report_age_s();
  return out;
}

SequenceInfo FromWire(const v1::SequenceInfo& s) {
  SequenceInfo out;
  out.sequence_id = s.sequence_id();
  out.request_id = s.request_id();
  out.state = s.state();
  out.worker_id = s.worker_id();
  out.prompt_tokens = s.prompt_tokens();
  out.generated_tokens = s.generated_tokens();
  return out;
}

ModelInfo FromWire(const v1::ModelInfo& m) {
  ModelInfo out;
  out.name = m.name();
  out.architecture = m.architecture();
  out.n_layers = m.n_layers();
  out.hidden_size = m.hidden_size();
  out.vocab_size = m.vocab_size();
  out.max_context = m.max_context();
  out.weight_format = m.weight_format();
  out.chat_template = m.chat_template();
  return out;
}

v1::ReportSupervisionRequest ToWire(const SupervisionReport& r) {
  v1::ReportSupervisionRequest out;
  out.set_supervisor(r.supervisor);
  for (const SupervisedProcess& p : r.processes) {
    v1::SupervisedProcess* q = out.add_processes();
    q->set_name(p.name);
    q->set_state(p.state);
    q->set_pid(p.pid);
    q->set_restarts(p.restarts);
    q->set_failures_in_a_row(p.failures_in_a_row);
    q->set_last_exit(p.last_exit);
    q->set_next_restart_s(p.next_restart_s);
  }
  return out;
}

}  // namespace wire

absl::StatusOr<ServerStatus> Client::Status(absl::Duration timeout) const {
  absl::StatusOr<v1::StatusResponse> s = wire::Status(*this, timeout);
  if (!s.ok()) return s.status();
  return wire::FromWire(*s);
}

absl::StatusOr<std::vector<SequenceInfo>> Client::ListSequences(absl::Duration timeout) const {
  absl::StatusOr<std::vector<v1::SequenceInfo>> seqs = wire::ListSequences(*this, timeout);
  if (!seqs.ok()) return seqs.status();
  std::vector<SequenceInfo> out;
  out.reserve(seqs->size());
  for (const v1::SequenceInfo& q : *seqs) out.push_back(wire::FromWire(q));
  return out;
}

absl::StatusOr<std::vector<ModelInfo>> Client::ListModels(absl::Duration timeout) const {
  absl::StatusOr<std::vector<v1::ModelInfo>> models = wire::ListModels(*this, timeout);
  if (!models.ok()) return models.status();
  std::vector<ModelInfo> out;
  out.reserve(models->size());
  for (const v1::ModelInfo& m : *models) out.push_back(wire::FromWire(m));
  return out;
}

absl::Status Client::ReportSupervision(const SupervisionReport& report,
                                       absl::Duration timeout) const {
  return wire::ReportSupervision(*this, wire::ToWire(report), timeout);
}

absl::Status Client::Cancel(uint64_t sequence_id, absl::Duration timeout) const {
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  v1::CancelSequenceRequest req;
  req.set_sequence_id(sequence_id);
  v1::CancelSequenceResponse resp;
  grpc::ClientContext ctx;
  impl_->Prepare(ctx, timeout);
  return FromGrpcStatus(impl_->admin->CancelSequence(&ctx, req, &resp));
}

absl::Status Client::Drain(std::string_view worker_id, absl::Duration timeout) const {
  if (worker_id.empty()) return absl::InvalidArgumentError("empty worker id");
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  v1::DrainWorkerRequest req;
  req.set_worker_id(std::string(worker_id));
  v1::DrainWorkerResponse resp;
  grpc::ClientContext ctx;
  impl_->Prepare(ctx, timeout);
  return FromGrpcStatus(impl_->admin->DrainWorker(&ctx, req, &resp));
}

}  // namespace paged::client
