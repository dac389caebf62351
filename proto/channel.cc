#include "proto/channel.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace paged {

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream text;
  if (f) text << f.rdbuf();
  if (!f || text.str().empty())
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": cannot read it"));
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateClientChannel(
    const std::string& target, const ClientTls& tls, const grpc::ChannelArguments& args) {
  if (!tls.enabled())
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  if (tls.cert.empty() != tls.key.empty())
    return absl::InvalidArgumentError("a TLS client certificate needs its key (and the reverse)");
  grpc::SslCredentialsOptions o;
  if (!tls.ca.empty()) {
    auto ca = ReadPemFile(tls.ca, "TLS CA");
    if (!ca.ok()) return ca.status();
    o.pem_root_certs = *ca;
  }
  if (!tls.cert.empty()) {
    auto cert = ReadPemFile(tls.cert, "TLS certificate");
    if (!cert.ok()) return cert.status();
    auto key = ReadPemFile(tls.key, "TLS key");
    if (!key.ok()) return key.status();
    o.pem_cert_chain = *cert;
    o.pem_private_key = *key;
  }
  grpc::ChannelArguments a = args;
  if (!tls.server_name.empty()) a.SetSslTargetNameOverride(tls.server_name);
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(o), a);
}

}  // namespace paged
