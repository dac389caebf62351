#include "daemon/services.h"

#include <google/protobuf/stubs/logging.h>

#include <chrono>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "daemon/bearer_token.h"
#include "daemon/generate_request.h"
#include "daemon/generation_stream.h"
#include "daemon/text_stream.h"
#include "proto/api_convert.h"

namespace paged {
namespace {

constexpr auto kPollPeriod =
    std::chrono::milliseconds(50);  // client disconnects are noticed this fast

// The field protobuf last refused to parse on this thread (its log line
// names it); the sync server parses a request and answers it on one thread.
thread_local std::string last_bad_utf8_field;

void ProtobufLog(google::protobuf::LogLevel level, const char* file, int line,
                 const std::string& message) {
  constexpr std::string_view kPrefix = "String field '";
  if (message.find("invalid UTF-8 data when parsing") != std::string::npos) {
    const size_t start = message.find(kPrefix);
    const size_t end =
        start == std::string::npos ? start : message.find('\'', start + kPrefix.size());
    if (end != std::string::npos)
      last_bad_utf8_field = message.substr(start + kPrefix.size(), end - start - kPrefix.size());
    Log(LogLevel::kDebug, "grpc", "%s", message.c_str());
    return;
  }
  Log(level >= google::protobuf::LOGLEVEL_ERROR ? LogLevel::kError : LogLevel::kWarning, "protobuf",
      "%s:%d: %s", file, line, message.c_str());
}

class ParseErrorInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit ParseErrorInterceptor(std::string method) : method_(std::move(method)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    using grpc::experimental::InterceptionHookPoints;
    if (m->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        m->GetRecvMessage() == nullptr) {
      unparsed_ = true;
      field_ = std::move(last_bad_utf8_field);
      last_bad_utf8_field.clear();
    }
    if (unparsed_ && m->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS) &&
        m->GetSendStatus().error_code() == grpc::StatusCode::INTERNAL) {
      m->ModifySendStatus(grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          field_.empty() ? absl::StrCat(method_,
                                        ": the request does not parse (a string field that is not "
                                        "valid UTF-8?)")
                         : absl::StrCat(method_, ": field ", field_,
                                        " is not valid UTF-8 (string fields must be UTF-8)")));
    }
    m->Proceed();
  }

 private:
  const std::string method_;
  bool unparsed_ = false;
  std::string field_;
};

class ParseErrorInterceptorFactoryImpl final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new ParseErrorInterceptor(info->method() != nullptr ? info->method() : "");
  }
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ParseErrorInterceptorFactory() {
  return std::make_unique<ParseErrorInterceptorFactoryImpl>();
}

void InstallProtobufParseErrorHook() {
  static const bool installed = [] {
    google::protobuf::SetLogHandler(&ProtobufLog);
    return true;
  }();
  (void)installed;
}

grpc::Status CheckBearerToken(const grpc::ServerContext& ctx, const std::string& token) {
  if (token.empty()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end())
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "a bearer token is required (authorization: Bearer T)");
  if (!BearerTokenMatches(std::string_view(it->second.data(), it->second.size()), token))
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the bearer token is wrong");
  return grpc::Status::OK;
}

// ---- Inference ----

grpc::Status InferenceService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  GenerationStream::Options options;
  // A client that stops reading is given up on (the coordinator cancels its
  // sequence after --stalled-stream-timeout): the blocked Write returns.
  options.on_stalled = [ctx] { ctx->TryCancel(); };
  const auto deadline = ctx->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
        deadline - std::chrono::system_clock::now());
    options.deadline = std::max<TimeUs>(Coordinator::Now() + left.count(), 1);
  }
  absl::StatusOr<std::unique_ptr<GenerationStream>> started =
      GenerationStream::Start(*coord_, *req, std::move(options));
  if (!started.ok()) return ToGrpcStatus(started.status());
  GenerationStream& gen = **started;

  auto stamp = [&](v1::GenerateResponse& m) {
    m.set_request_id(req->request_id());
    m.set_sequence_id(uint64_t(gen.sequence_id()));
  };
  for (;;) {
    GenerationStream::Chunk c = gen.Next(kPollPeriod);
    if (c.done && c.end == FinishReason::kShutdown)
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
    if (!c.done && ctx->IsCancelled()) {
      gen.Cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    v1::GenerateResponse msg;
    stamp(msg);
    msg.mutable_token_ids()->Add(c.token_ids.begin(), c.token_ids.end());
    msg.set_text(std::move(c.text));
    if ((msg.token_ids_size() > 0 || !msg.text().empty()) && !writer->Write(msg)) {
      gen.Cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    if (!c.done) continue;

    if (c.end == FinishReason::kDeadline)
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed");
    v1::GenerateResponse last;
    stamp(last);
    last.set_text(std::move(c.tail));
    last.set_finish_reason(ToProto(c.end));
    *last.mutable_usage() = gen.usage();
    writer->Write(last);
    if (c.end == FinishReason::kError) return grpc::Status(grpc::StatusCode::ABORTED, c.error);
    return grpc::Status::OK;
  }
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                                        v1::TokenizeResponse* resp) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  const Tokenizer* tok = coord_->tokenizer();
  if (tok == nullptr)
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "the model's segment carries no tokenizer");
  if (req->text().size() > kMaxPromptTextBytes)
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("text of ", req->text().size(), " bytes is over the limit of ",
                                     kMaxPromptTextBytes));
  for (int32_t id : tok->Encode(req->text(), req->add_bos())) {
    resp->add_ids(id);
    resp->add_pieces(SanitizeUtf8(tok->IdToPiece(id)));
  }
  return grpc::Status::OK;
}

// ---- Admin ----

grpc::Status AdminService::Status(grpc::ServerContext* ctx, const v1::StatusRequest*,
                                  v1::StatusResponse* resp) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  *resp = coord_->Status();
  return grpc::Status::OK;
}

grpc::Status AdminService::ListSequences(grpc::ServerContext* ctx, const v1::ListSequencesRequest*,
                                         v1::ListSequencesResponse* resp) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  *resp = coord_->ListSequences();
  return grpc::Status::OK;
}

grpc::Status AdminService::CancelSequence(grpc::ServerContext* ctx,
                                          const v1::CancelSequenceRequest* req,
                                          v1::CancelSequenceResponse*) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  if (req->sequence_id() == 0)
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "sequence_id is required");
  if (req->sequence_id() > uint64_t(std::numeric_limits<int64_t>::max()))
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no sequence ", req->sequence_id()));
  return ToGrpcStatus(coord_->CancelSequence(int64_t(req->sequence_id())));
}

grpc::Status AdminService::DrainWorker(grpc::ServerContext* ctx, const v1::DrainWorkerRequest* req,
                                       v1::DrainWorkerResponse*) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  if (req->worker_id().empty())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "worker_id is required");
  return ToGrpcStatus(coord_->DrainWorker(req->worker_id()));
}

grpc::Status AdminService::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                                      v1::ListModelsResponse* resp) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  *resp = coord_->ListModels();
  return grpc::Status::OK;
}

grpc::Status AdminService::ReportSupervision(grpc::ServerContext* ctx,
                                             const v1::ReportSupervisionRequest* req,
                                             v1::ReportSupervisionResponse*) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  if (req->processes_size() > 4096)
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "over 4096 processes");
  coord_->ReportSupervision(*req);
  return grpc::Status::OK;
}

// ---- WorkerLink ----

grpc::Status WorkerLinkService::CheckWorker(const grpc::ServerContext& ctx) const {
  if (grpc::Status s = CheckBearerToken(ctx, token_); !s.ok()) return s;
  if (require_client_certificate_ &&
      (ctx.auth_context() == nullptr || !ctx.auth_context()->IsPeerAuthenticated()))
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "a worker must present a TLS client certificate (the coordinator's "
                        "--tls-client-ca signs them)");
  return grpc::Status::OK;
}

grpc::Status WorkerLinkService::GetStepCaps(grpc::ServerContext* ctx, const v1::StepCapsRequest*,
                                            v1::StepCaps* resp) {
  if (grpc::Status s = CheckWorker(*ctx); !s.ok()) return s;
  const SchedulerConfig& c = coord_->options().scheduler;
  resp->set_max_step_tokens(c.max_step_tokens);
  resp->set_max_step_seqs(c.max_seqs_per_step);
  resp->set_max_context(c.max_context);
  return grpc::Status::OK;
}

grpc::Status WorkerLinkService::Attach(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) {
  if (grpc::Status s = CheckWorker(*ctx); !s.ok()) return s;
  v1::WorkerMessage first;
  if (!stream->Read(&first))
    return grpc::Status(grpc::StatusCode::CANCELLED, "the worker left before its hello");
  if (!first.has_hello())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message on WorkerLink must be a hello");
  absl::StatusOr<std::shared_ptr<Coordinator::Link>> attached =
      coord_->AttachWorker(first.hello(), [ctx] { ctx->TryCancel(); });
  if (!attached.ok()) return ToGrpcStatus(attached.status());
  Coordinator::Link& link = **attached;
  // Attached: the worker may now say so (log, READY=1). Steps follow.
  v1::CoordinatorMessage ack;
  ack.mutable_attached()->set_segment(coord_->options().segment);
  ack.mutable_attached()->set_segment_generation(coord_->options().segment_generation);
  if (!stream->Write(ack)) {
    coord_->DetachWorker(link);
    return grpc::Status(grpc::StatusCode::CANCELLED, "the worker left");
  }

  std::thread writer([&] {
    v1::CoordinatorMessage out;
    for (;;) {
      const Coordinator::Next n = coord_->NextMessage(link, &out, std::chrono::seconds(1));
      if (n == Coordinator::Next::kClosed) break;
      if (n == Coordinator::Next::kTimeout) continue;
      if (!stream->Write(out)) {
        ctx->TryCancel();  // the reader below returns too
        break;
      }
    }
  });
  absl::Status why;
  v1::WorkerMessage in;
  while (stream->Read(&in)) {
    why = coord_->OnWorkerMessage(link, in);
    if (!why.ok()) break;
  }
  coord_->DetachWorker(link);
  writer.join();
  return ToGrpcStatus(why);
}

}  // namespace paged
