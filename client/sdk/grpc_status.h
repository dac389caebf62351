// absl::Status <-> grpc::Status. The two code spaces have the same numbers
// (both follow google.rpc.Code); the message is kept as it is.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace paged::client {

// The server's code and message as an absl::Status. A code outside the known
// range becomes UNKNOWN (keeping the message).
absl::Status FromGrpcStatus(const grpc::Status& s);

// For servers: an absl::Status as the gRPC status a client will see.
grpc::Status ToGrpcStatus(const absl::Status& s);

}  // namespace paged::client
