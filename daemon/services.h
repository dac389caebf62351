// The gRPC services of `paged`: thin adapters over the Coordinator. Each
// checks the bearer token (when one is set), validates its input and maps
// absl statuses to gRPC codes one to one (the codes share their numbers).
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "daemon/coordinator.h"
#include "paged/v1/admin.grpc.pb.h"
#include "paged/v1/inference.grpc.pb.h"
#include "paged/v1/worker_link.grpc.pb.h"

namespace paged {

// OK when `token` is empty or the call carries `authorization: Bearer TOKEN`;
// UNAUTHENTICATED otherwise.
grpc::Status CheckBearerToken(const grpc::ServerContext& ctx, const std::string& token);

class InferenceService final : public v1::Inference::Service {
 public:
  InferenceService(Coordinator* coordinator, std::string token)
      : coord_(coordinator), token_(std::move(token)) {}

  // Streams each committed token (ids and text) as its step's write-back is
  // acknowledged, then a final message with the finish reason and usage.
  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                        v1::TokenizeResponse* resp) override;

 private:
  Coordinator* coord_;
  const std::string token_;
};

class AdminService final : public v1::Admin::Service {
 public:
  AdminService(Coordinator* coordinator, std::string token)
      : coord_(coordinator), token_(std::move(token)) {}

  grpc::Status Status(grpc::ServerContext* ctx, const v1::StatusRequest* req,
                      v1::StatusResponse* resp) override;
  grpc::Status ListSequences(grpc::ServerContext* ctx, const v1::ListSequencesRequest* req,
                             v1::ListSequencesResponse* resp) override;
  grpc::Status CancelSequence(grpc::ServerContext* ctx, const v1::CancelSequenceRequest* req,
                              v1::CancelSequenceResponse* resp) override;
  grpc::Status DrainWorker(grpc::ServerContext* ctx, const v1::DrainWorkerRequest* req,
                           v1::DrainWorkerResponse* resp) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* req,
                          v1::ListModelsResponse* resp) override;
  grpc::Status ReportSupervision(grpc::ServerContext* ctx, const v1::ReportSupervisionRequest* req,
                                 v1::ReportSupervisionResponse* resp) override;

 private:
  Coordinator* coord_;
  const std::string token_;
};

class WorkerLinkService final : public v1::WorkerLink::Service {
 public:
  // `require_client_certificate`: a worker must present a TLS client
  // certificate the server verified (the server's --tls-client-ca).
  WorkerLinkService(Coordinator* coordinator, std::string token,
                    bool require_client_certificate = false)
      : coord_(coordinator),
        token_(std::move(token)),
        require_client_certificate_(require_client_certificate) {}

  // Hello, then Attached (the hello was accepted), then steps out (a writer
  // thread drains the worker's outbox) and results in (this thread), until
  // the stream ends: then the worker is gone.
  grpc::Status Attach(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) override;
  // The scheduler's caps on a step, which a worker plans its memory for.
  grpc::Status GetStepCaps(grpc::ServerContext* ctx, const v1::StepCapsRequest* req,
                           v1::StepCaps* resp) override;

 private:
  // The bearer token and, when required, the worker's client certificate.
  grpc::Status CheckWorker(const grpc::ServerContext& ctx) const;

  Coordinator* coord_;
  const std::string token_;
  const bool require_client_certificate_;
};

// A request that does not parse (a proto3 string field holding invalid
// UTF-8) reaches no handler: gRPC answers INTERNAL with an empty message.
// This interceptor answers INVALID_ARGUMENT instead, naming the message and,
// when protobuf said which, the field. Install the factory on the server
// builder; InstallProtobufParseErrorHook() once per process.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ParseErrorInterceptorFactory();
void InstallProtobufParseErrorHook();

}  // namespace paged
