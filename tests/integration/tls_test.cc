// TLS for gRPC and HTTP with real processes and certificates made by
// openssl here: paged with --tls-cert/--tls-key and --tls-client-ca (workers
// must present a client certificate it signed), a worker attaching over TLS
// with its certificate, one without a certificate refused, pagectl over TLS,
// and curl over https; and paged-up deploying the whole service over TLS.
// (The official OpenAI clients over https are a manual step: docs/http.md.)
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "client/pagectl/make_model.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using testing::BinaryPath;
using ::testing::HasSubstr;
using testing::RunCommand;
using testing::Subprocess;

// A self-signed certificate and its key, for `cn` (and localhost, 127.0.0.1).
void MakeCertificate(const std::string& cert, const std::string& key, const std::string& cn) {
  auto [rc, out] = RunCommand({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                               "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out",
                               cert, "-days", "2", "-subj", "/CN=" + cn, "-addext",
                               "subjectAltName=DNS:localhost,IP:127.0.0.1"});
  ASSERT_EQ(rc, 0) << out;
}

// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick
// for port 0). A port made from the pid could be in use: it fell in the
// ephemeral range, where other tests' connections take theirs.
int FreeLocalPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

std::string Match(const std::string& text, const std::string& re) {
  std::smatch m;
  return std::regex_search(text, m, std::regex(re)) ? std::string(m[1]) : "";
}

TEST(TlsTest, GrpcAndHttpOverTlsWithWorkerCertificates) {
  testing::TempDir dir;
  const std::string server_cert = dir.File("server.pem"), server_key = dir.File("server.key");
  const std::string worker_cert = dir.File("worker.pem"), worker_key = dir.File("worker.key");
  ASSERT_NO_FATAL_FAILURE(MakeCertificate(server_cert, server_key, "localhost"));
  ASSERT_NO_FATAL_FAILURE(MakeCertificate(worker_cert, worker_key, "worker"));
  MakeModelOptions mo;
  mo.preset = "tiny";
  mo.out_dir = dir.File("tiny");
  ASSERT_TRUE(MakeModel(mo).ok());
  const std::string segment = testing::UniqueSegmentName("tls");
  Subprocess store({BinaryPath("paged-store"), "--model=" + dir.File("tiny"),
                    "--segment=" + segment, "--kv-gib=0.01", "--remove-on-exit", "--quiet"});
  ASSERT_TRUE(store.WaitForLine("ready")) << store.output();
  // The worker's self-signed certificate is its own CA.
  Subprocess paged({BinaryPath("paged"), "--segment=" + segment, "--listen=127.0.0.1:0",
                    "--http=127.0.0.1:0", "--tls-cert=" + server_cert, "--tls-key=" + server_key,
                    "--tls-client-ca=" + worker_cert});
  ASSERT_TRUE(paged.WaitForLine("http listening on", 30)) << paged.output();
  const std::string grpc = Match(paged.output(), "listening on (127\\.0\\.0\\.1:[0-9]+) \\(TLS\\)");
  const std::string http =
      Match(paged.output(), "http listening on (127\\.0\\.0\\.1:[0-9]+) \\(TLS\\)");
  ASSERT_FALSE(grpc.empty()) << paged.output();
  ASSERT_FALSE(http.empty()) << paged.output();

  const std::vector<std::string> worker = {
      BinaryPath("paged-worker"), "--segment=" + segment, "--device=cpu",
      "--gpu-budget=256MiB",      "--threads=1",          "--coordinator=" + grpc,
      "--tls-ca=" + server_cert};
  // Without a client certificate: refused.
  std::vector<std::string> anonymous = worker;
  anonymous.push_back("--worker-id=anonymous");
  Subprocess refused(anonymous);
  EXPECT_TRUE(refused.WaitForLine("must present a TLS client certificate", 30)) << refused.output();
  refused.Signal(SIGTERM);
  // With one: attached.
  std::vector<std::string> with_cert = worker;
  with_cert.insert(with_cert.end(),
                   {"--worker-id=w-tls", "--tls-cert=" + worker_cert, "--tls-key=" + worker_key});
  Subprocess attached(with_cert);
  ASSERT_TRUE(attached.WaitForLine("attached to", 60)) << attached.output();

  // pagectl over TLS (no client certificate needed for it).
  auto [rc, out] = RunCommand({BinaryPath("pagectl"), "status", "--wait-ready", "--json",
                               "--timeout=60s", "--server=" + grpc, "--tls-ca=" + server_cert});
  ASSERT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("w-tls"));
  auto [grc, gout] = RunCommand({BinaryPath("pagectl"), "generate", "--prompt-tokens=1", "-n", "4",
                                 "--server=" + grpc, "--tls-ca=" + server_cert});
  EXPECT_EQ(grc, 0) << gout;
  EXPECT_THAT(gout, HasSubstr("4 tokens"));
  // Plain gRPC to the TLS port gets nowhere.
  auto [prc, pout] =
      RunCommand({BinaryPath("pagectl"), "status", "--server=" + grpc, "--timeout=3s"});
  EXPECT_NE(prc, 0) << pout;

  // curl over https.
  auto [crc, body] = RunCommand({"curl", "-sS", "--max-time", "60", "--cacert", server_cert,
                                 "https://" + http + "/v1/completions", "-d",
                                 R"({"prompt": [1], "max_tokens": 4})"});
  ASSERT_EQ(crc, 0) << body;
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << body;
  EXPECT_EQ(j["usage"]["completion_tokens"], 4) << body;
  auto [vrc, vout] = RunCommand({"curl", "-sS", "--max-time", "10", "https://" + http + "/livez"});
  EXPECT_NE(vrc, 0) << "an unknown CA must fail verification: " << vout;

  EXPECT_EQ(attached.Signal(SIGTERM), 0) << attached.output();
  EXPECT_EQ(paged.Signal(SIGTERM), 0) << paged.output();
  EXPECT_EQ(store.Signal(SIGTERM), 0) << store.output();
}

// paged-up with --tls-cert/--tls-key: the coordinator serves TLS, the
// workers and paged-up's own calls check it against the certificate (its
// own CA), pagectl generates over TLS and plain gRPC gets nowhere.
TEST(TlsTest, PagedUpDeploysOverTls) {
  testing::TempDir dir;
  const std::string cert = dir.File("server.pem"), key = dir.File("server.key");
  ASSERT_NO_FATAL_FAILURE(MakeCertificate(cert, key, "localhost"));
  const std::string segment = testing::UniqueSegmentName("tls-up");
  const int port = FreeLocalPort();
  ASSERT_GT(port, 0) << "no free port on 127.0.0.1";
  const std::string target = "127.0.0.1:" + std::to_string(port);
  Subprocess up({std::string(PAGED_BINARY_DIR) + "/launcher/paged-up",
                 "--model=" + testing::Stories260KPath(), "--segment=" + segment,
                 "--weight-format=f32", "--kv-gib=0.02", "--device=cpu", "--gpu-budget=200MiB",
                 "--listen=" + target, "--remove-segment", "--tls-cert=" + cert, "--tls-key=" + key,
                 "--start-timeout=120", "--stop-timeout=5"});
  ASSERT_TRUE(up.WaitForLine("paged is up: " + target, 180)) << up.output();
  auto [grc, gout] = RunCommand({BinaryPath("pagectl"), "generate", "--prompt-tokens=1", "-n", "8",
                                 "--server=" + target, "--tls-ca=" + cert});
  EXPECT_EQ(grc, 0) << gout;
  EXPECT_THAT(gout, HasSubstr("8 tokens"));
  auto [prc, pout] =
      RunCommand({BinaryPath("pagectl"), "status", "--server=" + target, "--timeout=3s"});
  EXPECT_NE(prc, 0) << "plain gRPC to a TLS port: " << pout;
  EXPECT_EQ(up.Signal(SIGTERM), 0) << up.output();
}

}  // namespace
}  // namespace paged
