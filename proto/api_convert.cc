#include "proto/api_convert.h"

#include <string>

namespace paged {

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode(int(s.code())), std::string(s.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  const int code = int(s.error_code());
  const absl::StatusCode c = code > 0 && code <= int(absl::StatusCode::kUnauthenticated)
                                 ? absl::StatusCode(code)
                                 : absl::StatusCode::kUnknown;
  return absl::Status(c, s.error_message());
}

v1::GenerateResponse::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return v1::GenerateResponse::FINISH_REASON_UNSPECIFIED;
    case FinishReason::kLength:
      return v1::GenerateResponse::LENGTH;
    case FinishReason::kEos:
      return v1::GenerateResponse::EOS;
    case FinishReason::kStop:
      return v1::GenerateResponse::STOP;
    case FinishReason::kCancelled:
      return v1::GenerateResponse::CANCELLED;
    case FinishReason::kDeadline:
    case FinishReason::kError:
    case FinishReason::kShutdown:
      break;
  }
  return v1::GenerateResponse::ERROR;
}

FinishReason FromProto(v1::GenerateResponse::FinishReason r) {
  switch (r) {
    case v1::GenerateResponse::LENGTH:
      return FinishReason::kLength;
    case v1::GenerateResponse::STOP:
      return FinishReason::kStop;
    case v1::GenerateResponse::EOS:
      return FinishReason::kEos;
    case v1::GenerateResponse::CANCELLED:
      return FinishReason::kCancelled;
    case v1::GenerateResponse::ERROR:
      return FinishReason::kError;
    default:
      return FinishReason::kNone;
  }
}

}  // namespace paged
