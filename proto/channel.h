// A client's gRPC channel to paged (workers, the SDK, pagectl, paged-up):
// plain, or TLS with the server's CA and, for workers, a client certificate.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace paged {

struct ClientTls {
  bool enable = false;      // TLS with the system's CA roots (or `ca`)
  std::string ca;           // PEM file: the CA that signed the server's certificate
  std::string cert, key;    // PEM files: this client's certificate (the worker link)
  std::string server_name;  // the name the server's certificate must carry ("": the target's host)
  bool enabled() const { return enable || !ca.empty() || !cert.empty(); }
};

// The text of a PEM file; INVALID_ARGUMENT "<what> <path>: cannot read it"
// when it cannot be read or is empty. The server's certificates too.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const char* what);

// A channel to `target` (unix:///path.sock or host:port), TLS when
// `tls.enabled()`. INVALID_ARGUMENT naming a PEM file that cannot be read, or
// a certificate without its key.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateClientChannel(
    const std::string& target, const ClientTls& tls,
    const grpc::ChannelArguments& args = grpc::ChannelArguments());

}  // namespace paged
