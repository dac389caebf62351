#include "daemon/services.h"

#include <chrono>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "daemon/generate_request.h"
#include "daemon/text_stream.h"

namespace paged {
namespace {

constexpr auto kPollPeriod =
    std::chrono::milliseconds(50);  // client disconnects are noticed this fast

v1::GenerateResponse::FinishReason ProtoReason(FinishReason r) {
  switch (r) {
    case FinishReason::kEos:
      return v1::GenerateResponse::EOS;
    case FinishReason::kStop:
      return v1::GenerateResponse::STOP;
    case FinishReason::kLength:
      return v1::GenerateResponse::LENGTH;
    case FinishReason::kCancelled:
      return v1::GenerateResponse::CANCELLED;
    case FinishReason::kDeadline:
    case FinishReason::kNone:
      break;
  }
  return v1::GenerateResponse::ERROR;
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(s.code())),
                      std::string(s.message()));
}

grpc::Status CheckBearerToken(const grpc::ServerContext& ctx, const std::string& token) {
  if (token.empty()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end())
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "a bearer token is required (authorization: Bearer T)");
  const std::string want = "Bearer " + token;
  const std::string_view got(it->second.data(), it->second.size());
  // Constant time in the token's content.
  unsigned diff = got.size() == want.size() ? 0u : 1u;
  for (size_t i = 0; i < want.size(); ++i)
    diff |= unsigned(uint8_t(want[i]) ^ uint8_t(i < got.size() ? got[i] : 0));
  if (diff != 0)
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the bearer token is wrong");
  return grpc::Status::OK;
}

// ---- Inference ----

grpc::Status InferenceService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  absl::StatusOr<ParsedGenerate> parsed = coord_->ParseRequest(*req);
  if (!parsed.ok()) return ToGrpc(parsed.status());
  Request& r = parsed->request;
  const auto deadline = ctx->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
        deadline - std::chrono::system_clock::now());
    r.deadline = std::max<TimeUs>(Coordinator::Now() + left.count(), 1);
  }
  const int32_t prompt_tokens = int32_t(r.prompt.size());
  int32_t prev = r.prompt.back();
  absl::StatusOr<std::shared_ptr<Coordinator::Channel>> admitted = coord_->Admit(std::move(r));
  if (!admitted.ok()) return ToGrpc(admitted.status());
  Coordinator::Channel& ch = **admitted;

  const SpTokenizer* tok = coord_->tokenizer();
  TextStream text(std::move(parsed->stop_strings));
  v1::Usage usage;
  usage.set_prompt_tokens(prompt_tokens);
  auto stamp = [&](v1::GenerateResponse& m) {
    m.set_request_id(req->request_id());
    m.set_sequence_id(uint64_t(ch.seq_id));
  };
  for (;;) {
    Coordinator::Update u;
    if (!coord_->Wait(ch, kPollPeriod, &u)) {
      coord_->Release(ch);
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down");
    }
    if (ctx->IsCancelled()) {
      coord_->Release(ch);
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    v1::GenerateResponse msg;
    stamp(msg);
    for (size_t i = 0; i < u.tokens.size() && !text.stopped(); ++i) {
      const int32_t t = u.tokens[i];
      if (usage.generated_tokens() == 0)
        usage.set_time_to_first_token_s(double(Coordinator::Now() - ch.admitted_at) * 1e-6);
      usage.set_generated_tokens(usage.generated_tokens() + 1);
      usage.add_step_s(u.step_s[i]);
      msg.add_token_ids(t);
      // The eos or stop id that ends the sequence is streamed as an id, not as text.
      const bool ends = u.finished && i + 1 == u.tokens.size() &&
                        (u.reason == FinishReason::kEos || u.reason == FinishReason::kStop);
      if (tok != nullptr && !ends) text.Append(tok->DecodePiece(prev, t));
      prev = t;
    }
    msg.set_text(text.TakeReady());
    const bool done = text.stopped() || u.finished;
    if ((msg.token_ids_size() > 0 || !msg.text().empty()) && !writer->Write(msg)) {
      coord_->Release(ch);
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    if (!done) continue;

    coord_->Release(ch);  // cancels the sequence when a stop string ended it
    if (!text.stopped() && u.reason == FinishReason::kDeadline)
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed");
    v1::GenerateResponse last;
    stamp(last);
    last.set_text(text.TakeAll());
    last.set_finish_reason(text.stopped()    ? v1::GenerateResponse::STOP
                           : u.error.empty() ? ProtoReason(u.reason)
                                             : v1::GenerateResponse::ERROR);
    usage.set_total_s(double(Coordinator::Now() - ch.admitted_at) * 1e-6);
    *last.mutable_usage() = usage;
    writer->Write(last);
    if (!text.stopped() && !u.error.empty())
      return grpc::Status(grpc::StatusCode::ABORTED, u.error);
    return grpc::Status::OK;
  }
}

grpc::Status InferenceService::Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                                        v1::TokenizeResponse* resp) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  const SpTokenizer* tok = coord_->tokenizer();
  if (tok == nullptr)
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "the model's segment carries no tokenizer");
  if (req->text().size() > kMaxPromptTextBytes)
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("text of ", req->text().size(), " bytes is over the limit of ",
                                     kMaxPromptTextBytes));
  for (int32_t id : tok->Encode(req->text(), req->add_bos())) {
    resp->add_ids(id);
    resp->add_pieces(SanitizeUtf8(tok->vocab().pieces[size_t(id)]));
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
  return ToGrpc(coord_->CancelSequence(int64_t(req->sequence_id())));
}

grpc::Status AdminService::DrainWorker(grpc::ServerContext* ctx, const v1::DrainWorkerRequest* req,
                                       v1::DrainWorkerResponse*) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  if (req->worker_id().empty())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "worker_id is required");
  return ToGrpc(coord_->DrainWorker(req->worker_id()));
}

grpc::Status AdminService::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                                      v1::ListModelsResponse* resp) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  *resp = coord_->ListModels();
  return grpc::Status::OK;
}

// ---- WorkerLink ----

grpc::Status WorkerLinkService::Attach(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) {
  if (grpc::Status s = CheckBearerToken(*ctx, token_); !s.ok()) return s;
  v1::WorkerMessage first;
  if (!stream->Read(&first))
    return grpc::Status(grpc::StatusCode::CANCELLED, "the worker left before its hello");
  if (!first.has_hello())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message on WorkerLink must be a hello");
  absl::StatusOr<std::shared_ptr<Coordinator::Link>> attached =
      coord_->AttachWorker(first.hello(), [ctx] { ctx->TryCancel(); });
  if (!attached.ok()) return ToGrpc(attached.status());
  Coordinator::Link& link = **attached;

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
  return ToGrpc(why);
}

}  // namespace paged
