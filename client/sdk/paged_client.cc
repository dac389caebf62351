#include "client/sdk/paged_client.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
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
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      CreateClientChannel(target, options.tls, args);
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
  req.set_request_id(o.request_id);

  grpc::ClientContext ctx;
  impl_->Prepare(ctx, o.timeout);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      impl_->inference->Generate(&ctx, req);
  GenerateResult result;
  result.request_id = o.request_id;
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
    }
  }
  if (absl::Status s = FromGrpcStatus(reader->Finish()); !s.ok()) return s;
  return result;
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

absl::StatusOr<v1::StatusResponse> Client::Status(absl::Duration timeout) const {
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  v1::StatusResponse resp;
  grpc::ClientContext ctx;
  impl_->Prepare(ctx, timeout);
  if (absl::Status s = FromGrpcStatus(impl_->admin->Status(&ctx, v1::StatusRequest(), &resp));
      !s.ok())
    return s;
  return resp;
}

absl::StatusOr<std::vector<v1::SequenceInfo>> Client::ListSequences(absl::Duration timeout) const {
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  v1::ListSequencesResponse resp;
  grpc::ClientContext ctx;
  impl_->Prepare(ctx, timeout);
  if (absl::Status s =
          FromGrpcStatus(impl_->admin->ListSequences(&ctx, v1::ListSequencesRequest(), &resp));
      !s.ok()) {
    return s;
  }
  return std::vector<v1::SequenceInfo>(resp.sequences().begin(), resp.sequences().end());
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

absl::StatusOr<std::vector<v1::ModelInfo>> Client::ListModels(absl::Duration timeout) const {
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  v1::ListModelsResponse resp;
  grpc::ClientContext ctx;
  impl_->Prepare(ctx, timeout);
  if (absl::Status s =
          FromGrpcStatus(impl_->admin->ListModels(&ctx, v1::ListModelsRequest(), &resp));
      !s.ok()) {
    return s;
  }
  return std::vector<v1::ModelInfo>(resp.models().begin(), resp.models().end());
}

}  // namespace paged::client

namespace paged::client {

absl::Status Client::ReportSupervision(const v1::ReportSupervisionRequest& report,
                                       absl::Duration timeout) const {
  if (absl::Status s = ValidateTimeout(timeout); !s.ok()) return s;
  grpc::ClientContext ctx;
  impl_->Prepare(ctx, timeout);
  v1::ReportSupervisionResponse resp;
  return FromGrpcStatus(impl_->admin->ReportSupervision(&ctx, report, &resp));
}

}  // namespace paged::client
