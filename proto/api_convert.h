// The one conversion between the project's types and the API's wire types,
// for servers and clients alike: status codes (absl::Status <-> grpc::Status;
// both follow google.rpc.Code, so the numbers are the same and the message
// is kept) and finish reasons (common/finish_reason.h <-> paged.v1).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "common/finish_reason.h"
#include "paged/v1/inference.pb.h"

namespace paged {

// An absl::Status as the gRPC status a client will see.
grpc::Status ToGrpcStatus(const absl::Status& s);
// A gRPC status as an absl::Status; a code outside the known range becomes
// UNKNOWN (keeping the message).
absl::Status FromGrpcStatus(const grpc::Status& s);

// kDeadline and kShutdown have no wire value: the server answers them with a
// status (DEADLINE_EXCEEDED, UNAVAILABLE) instead; they map to ERROR, like
// kError. kNone maps to FINISH_REASON_UNSPECIFIED.
v1::GenerateResponse::FinishReason ToProto(FinishReason r);
FinishReason FromProto(v1::GenerateResponse::FinishReason r);

}  // namespace paged
