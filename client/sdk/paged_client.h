// The C++ SDK as paged's own tools use it (pagectl, paged-up, the tests and
// benchmarks): the public API (paged/client.h, client/sdk/include/) plus the
// Admin answers as the wire messages, paged.v1 in proto/paged/v1/admin.proto,
// for pagectl's --json (the proto3 JSON mapping, as grpcurl prints it) and
// for paged-up. Not installed: users get paged/client.h, which carries no
// generated code. Link `paged_client`.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "paged/client.h"
#include "paged/v1/admin.pb.h"

namespace paged::client::wire {

// Client::Status, ListSequences, ListModels and ReportSupervision with the
// wire messages in place of the SDK's structs; the same errors.
absl::StatusOr<v1::StatusResponse> Status(const Client& c,
                                          absl::Duration timeout = kDefaultTimeout);
absl::StatusOr<std::vector<v1::SequenceInfo>> ListSequences(
    const Client& c, absl::Duration timeout = kDefaultTimeout);
absl::StatusOr<std::vector<v1::ModelInfo>> ListModels(const Client& c,
                                                      absl::Duration timeout = kDefaultTimeout);
absl::Status ReportSupervision(const Client& c, const v1::ReportSupervisionRequest& report,
                               absl::Duration timeout = kDefaultTimeout);

// The SDK's structs from the wire messages, field for field.
ServerStatus FromWire(const v1::StatusResponse& s);
SequenceInfo FromWire(const v1::SequenceInfo& s);
ModelInfo FromWire(const v1::ModelInfo& m);
v1::ReportSupervisionRequest ToWire(const SupervisionReport& r);

}  // namespace paged::client::wire
