// The service under abuse (issue 15), against a running deployment:
//  1. idle flood: --idle-connections TCP connections to the HTTP port that
//     send nothing, then /health and a completion, timed (and the same
//     without the flood, for comparison);
//  2. unread streams: --unread-streams gRPC Generate streams that never read
//     (a small receive window, as a stuck client has), then a normal
//     request's time to first token and the KV pool they hold; then how
//     long until the coordinator gives up on them (--stalled-stream-timeout
//     of paged) and the pool is free again.
// Prints a table (docs/reliability.md quotes it).
//
//   abuse_bench --http 127.0.0.1:8000 --server unix:///tmp/paged.sock
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netdb.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "client/sdk/paged_client.h"
#include "common/cli.h"
#include "paged/v1/inference.grpc.pb.h"

ABSL_FLAG(std::string, http, "127.0.0.1:8000", "HOST:PORT of paged's HTTP server (IPv4)");
ABSL_FLAG(std::string, server, "unix:///tmp/paged.sock", "gRPC target of the coordinator");
ABSL_FLAG(int, idle_connections, 2000, "idle TCP connections of the flood");
ABSL_FLAG(int, samples, 20, "timed /health requests per case");
ABSL_FLAG(int, unread_streams, 40, "gRPC streams that never read");
ABSL_FLAG(int, max_tokens, 4000, "max_tokens of each unread stream");
ABSL_FLAG(double, give_up_wait, 120, "seconds to wait for the unread streams to be cancelled");

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

int Connect(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host_port.substr(0, colon).c_str(), host_port.substr(colon + 1).c_str(), &hints,
                  &res) != 0)
    return -1;
  int fd = ::socket(res->ai_family, res->ai_socktype, 0);
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd;
}

// One request on a new connection (Connection: close); the status, or 0.
int Http(const std::string& addr, const std::string& method, const std::string& path,
         const std::string& body = "") {
  const int fd = Connect(addr);
  if (fd < 0) return 0;
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string req = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\n" +
                          "Connection: close\r\nContent-Length: " + std::to_string(body.size()) +
                          "\r\n\r\n" + body;
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != ssize_t(req.size())) {
    ::close(fd);
    return 0;
  }
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) got.append(buf, size_t(n));
  ::close(fd);
  return got.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(got.c_str() + 9) : 0;
}

struct Timing {
  double p50 = 0, max = 0;
  int failed = 0;
};

Timing TimeHealth(const std::string& addr, int n) {
  std::vector<double> ms;
  Timing t;
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    const int status = Http(addr, "GET", "/health");
    ms.push_back(Ms(Clock::now() - t0));
    t.failed += status != 200;
  }
  std::sort(ms.begin(), ms.end());
  t.p50 = ms[ms.size() / 2];
  t.max = ms.back();
  return t;
}

double TimeCompletion(const std::string& addr, int* status) {
  const auto t0 = Clock::now();
  *status = Http(addr, "POST", "/v1/completions", R"({"prompt": [1], "max_tokens": 16})");
  return Ms(Clock::now() - t0);
}

// Time to the first token of a 16-token request, through the SDK.
double FirstTokenMs(paged::client::Client& c, bool* ok) {
  paged::client::GenerateOptions g;
  g.prompt_tokens = {1};
  g.max_tokens = 16;
  const auto t0 = Clock::now();
  double first = -1;
  auto r = c.Generate(g, [&](const paged::client::TokenChunk& ch) {
    if (first < 0 && !ch.token_ids.empty()) first = Ms(Clock::now() - t0);
  });
  *ok = r.ok();
  return first;
}

}  // namespace

int main(int argc, char** argv) {
  paged::ParseFlags(argc, argv, "abuse_bench --http HOST:PORT --server TARGET");
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
  const std::string http = absl::GetFlag(FLAGS_http);
  const int samples = absl::GetFlag(FLAGS_samples);

  // 1. The idle flood.
  const Timing base = TimeHealth(http, samples);
  int base_status = 0;
  const double base_completion = TimeCompletion(http, &base_status);
  std::vector<int> idle;
  const int n_idle = absl::GetFlag(FLAGS_idle_connections);
  for (int i = 0; i < n_idle; ++i) {
    const int fd = Connect(http);
    if (fd >= 0) idle.push_back(fd);
  }
  const Timing flooded = TimeHealth(http, samples);
  int flood_status = 0;
  const double flood_completion = TimeCompletion(http, &flood_status);
  for (int fd : idle) ::close(fd);
  std::printf(
      "| case | /health p50 (ms) | /health max (ms) | failed | 16-token completion (ms) |\n");
  std::printf("|---|---|---|---|---|\n");
  std::printf("| no flood | %.1f | %.1f | %d of %d | %.1f (HTTP %d) |\n", base.p50, base.max,
              base.failed, samples, base_completion, base_status);
  std::printf("| %zu idle connections open | %.1f | %.1f | %d of %d | %.1f (HTTP %d) |\n",
              idle.size(), flooded.p50, flooded.max, flooded.failed, samples, flood_completion,
              flood_status);

  // 2. Streams that never read.
  auto client = paged::client::Client::Connect(absl::GetFlag(FLAGS_server));
  if (!client.ok()) {
    std::fprintf(stderr, "abuse_bench: %s\n", std::string(client.status().message()).c_str());
    return 1;
  }
  bool ok = false;
  const double ttft_base = FirstTokenMs(*client, &ok);
  grpc::ChannelArguments small;
  small.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  small.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8192);
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server),
                                           grpc::InsecureChannelCredentials(), small);
  auto stub = paged::v1::Inference::NewStub(channel);
  paged::v1::GenerateRequest big;
  big.mutable_tokens()->add_ids(1);
  big.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  big.set_ignore_eos(true);
  big.set_request_id(std::string(200, 'u'));  // large messages fill the window sooner
  const int n_unread = absl::GetFlag(FLAGS_unread_streams);
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<paged::v1::GenerateResponse>>> unread;
  const auto t_unread = Clock::now();
  for (int i = 0; i < n_unread; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    unread.push_back(stub->Generate(ctxs.back().get(), big));
  }
  // Until they are all paused (or a while).
  int paused = 0;
  uint64_t used = 0, total = 1;
  for (int i = 0; i < 600 && paused < n_unread; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto seqs = client->ListSequences();
    if (!seqs.ok()) continue;
    paused = 0;
    for (const auto& s : *seqs) paused += s.state == "PAUSED";
  }
  if (auto st = client->Status(); st.ok()) {
    used = st->kv_blocks_used;
    total = std::max<uint64_t>(st->kv_blocks_total, 1);
  }
  const double ttft_unread = FirstTokenMs(*client, &ok);
  std::printf(
      "\n| unread gRPC streams | paused | KV pool held | time to first token of a "
      "normal request (ms) |\n|---|---|---|---|\n");
  std::printf("| 0 | - | - | %.1f |\n", ttft_base);
  std::printf("| %d | %d after %.1f s | %.0f%% | %.1f%s |\n", n_unread, paused,
              std::chrono::duration<double>(Clock::now() - t_unread).count(),
              100.0 * double(used) / double(total), ttft_unread, ok ? "" : " (failed)");
  const auto t_wait = Clock::now();
  double freed_s = -1;
  while (std::chrono::duration<double>(Clock::now() - t_wait).count() <
         absl::GetFlag(FLAGS_give_up_wait)) {
    auto st = client->Status();
    if (st.ok() && st->kv_blocks_used == 0) {
      freed_s = std::chrono::duration<double>(Clock::now() - t_unread).count();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::printf(
      "\nKV pool free again %.1f s after the unread streams opened (paged "
      "--stalled-stream-timeout cancels them)\n",
      freed_s);
  for (auto& c : ctxs) c->TryCancel();
  for (auto& u : unread) u->Finish();
  return 0;
}
