// The HTTP server's plumbing (daemon/http/http_server.h) with a test
// handler: keep-alive and pipelining, 100-continue, the size limits, the
// read timeout, chunked responses (and HTTP/1.0), a client that goes away
// while its response is pending, and Stop with exchanges in flight.
#include "daemon/http/http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/unit/http_client.h"
#include "tests/unit/test_util.h"

namespace paged::http {
namespace {

using ::testing::HasSubstr;
using testing::HttpCall;
using testing::RawConnection;

class HttpServerTest : public ::testing::Test {
 protected:
  void Start(ServerOptions o = {}) {
    o.address = "127.0.0.1:0";
    o.threads = 2;
    auto s = HttpServer::Start(std::move(o), [this](std::shared_ptr<Exchange> ex) { Handle(ex); });
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
  }

  void Handle(std::shared_ptr<Exchange> ex) {
    const std::string target(ex->request().target());
    ++requests_;
    if (target == "/echo") {
      Response r{bhttp::status::ok, 11};
      r.body() = "echo:" + ex->request().body();
      return ex->Respond(std::move(r));
    }
    if (target == "/chunks") {
      Response head{bhttp::status::ok, 11};
      head.set(bhttp::field::content_type, "text/event-stream");
      ex->StartChunked(std::move(head));
      ex->WriteChunk("a");
      ex->WriteChunk("");  // nothing to send
      ex->WriteChunk("bc", [ex](bool ok) {
        EXPECT_TRUE(ok);
        ex->WriteChunk("d");
        ex->EndChunked();
      });
      return;
    }
    if (target == "/park") {  // never answers
      std::lock_guard<std::mutex> lock(park_mu_);
      ++parked_;
      park_cv_.notify_all();
      return;
    }
    if (target == "/hang") {  // never answers; tells when the client leaves
      ex->OnClosed([this] { closed_.set_value(); });
      hanging_.set_value();
      return;
    }
    Response r{bhttp::status::not_found, 11};
    r.body() = "no";
    ex->Respond(std::move(r));
  }

  void TearDown() override {
    if (server_) server_->Stop();  // before the promises its handlers set
  }

  bool WaitParked(int n) {
    std::unique_lock<std::mutex> lock(park_mu_);
    return park_cv_.wait_for(lock, std::chrono::seconds(10), [&] { return parked_ >= n; });
  }

  std::unique_ptr<HttpServer> server_;
  std::mutex park_mu_;
  std::condition_variable park_cv_;
  int parked_ = 0;
  std::atomic<int> requests_{0};
  std::promise<void> hanging_, closed_;
};

TEST_F(HttpServerTest, AnswersAndKeepsTheConnectionAlive) {
  ASSERT_NO_FATAL_FAILURE(Start());
  EXPECT_THAT(server_->address(), ::testing::StartsWith("127.0.0.1:"));
  testing::HttpResult r = HttpCall(server_->address(), "POST", "/echo", "hi");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "echo:hi");
  EXPECT_EQ(HttpCall(server_->address(), "GET", "/other").status, 404);

  // Two requests on one connection, the second sent before the first is
  // answered (pipelined): two answers, in order.
  RawConnection c(server_->address());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(
      c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
             "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwo"));
  ASSERT_TRUE(c.ReadUntil("echo:two")) << c.received();
  EXPECT_LT(c.received().find("echo:one"), c.received().find("echo:two"));
  // Still open for a third.
  ASSERT_TRUE(c.Send("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_TRUE(c.ReadCount("HTTP/1.1 200 OK", 3)) << c.received();

  // Connection: close is honoured.
  RawConnection d(server_->address());
  ASSERT_TRUE(d.Send("GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  EXPECT_TRUE(d.WaitClosed());
  EXPECT_THAT(d.received(), HasSubstr("echo:"));
}

TEST_F(HttpServerTest, ContinuesAfterExpect100) {
  ASSERT_NO_FATAL_FAILURE(Start());
  RawConnection c(server_->address());
  ASSERT_TRUE(c.Send(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"));
  ASSERT_TRUE(c.ReadUntil("HTTP/1.1 100 Continue\r\n\r\n")) << c.received();
  ASSERT_TRUE(c.Send("body"));
  EXPECT_TRUE(c.ReadUntil("echo:body")) << c.received();
}

TEST_F(HttpServerTest, RefusesWhatIsTooLargeOrMalformed) {
  ServerOptions o;
  o.max_body_bytes = 1024;
  o.max_header_bytes = 2048;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  testing::HttpResult r = HttpCall(server_->address(), "POST", "/echo", std::string(2000, 'x'));
  EXPECT_EQ(r.status, 413) << r.error;
  EXPECT_THAT(r.body, HasSubstr("over the limit of 1024 bytes"));
  EXPECT_EQ(HttpCall(server_->address(), "POST", "/echo", std::string(1024, 'x')).status, 200);
  r = HttpCall(server_->address(), "GET", "/echo", "", {{"X-Big", std::string(4000, 'y')}});
  EXPECT_EQ(r.status, 431) << r.error;

  // A 413 is answered from the header alone, and the connection closes.
  RawConnection big(server_->address());
  ASSERT_TRUE(big.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n"));
  EXPECT_TRUE(big.WaitClosed());
  EXPECT_THAT(big.received(), HasSubstr("HTTP/1.1 413"));

  RawConnection bad(server_->address());
  ASSERT_TRUE(bad.Send("NOT HTTP AT ALL\r\n\r\n"));
  EXPECT_TRUE(bad.WaitClosed());
  EXPECT_THAT(bad.received(), HasSubstr("HTTP/1.1 400"));
  EXPECT_EQ(requests_.load(), 1);  // only the good one reached the handler
}

TEST_F(HttpServerTest, ClosesIdleAndSlowConnectionsAtTheirDeadlines) {
  ServerOptions o;
  o.idle_timeout = std::chrono::milliseconds(300);
  o.header_timeout = std::chrono::milliseconds(300);
  o.read_timeout = std::chrono::milliseconds(300);
  ASSERT_NO_FATAL_FAILURE(Start(o));
  RawConnection idle(server_->address());  // sends nothing at all
  RawConnection headers(server_->address());
  ASSERT_TRUE(headers.Send("GET /echo HTTP/1.1\r\nHost: x\r\n"));  // never finished
  RawConnection body(server_->address());
  ASSERT_TRUE(body.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"));
  EXPECT_TRUE(idle.WaitClosed(5));
  EXPECT_TRUE(headers.WaitClosed(5));
  EXPECT_TRUE(body.WaitClosed(5));
  // A keep-alive connection that answered is idle again: closed in time too.
  RawConnection kept(server_->address());
  ASSERT_TRUE(kept.Send("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(kept.ReadUntil("echo:"));
  EXPECT_TRUE(kept.WaitClosed(5));
  EXPECT_THAT(kept.received(), HasSubstr("X-Content-Type-Options: nosniff"));
}

// Issue 15, defect 1: 2,000 idle connections (more than the 1,024 allowed,
// all from one address) leave room for other requests: each new connection
// closes the oldest idle one.
TEST_F(HttpServerTest, TwoThousandIdleConnectionsDoNotLockOthersOut) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 2000; ++i) {
    idle.push_back(std::make_unique<RawConnection>(server_->address()));
    ASSERT_TRUE(idle.back()->connected()) << i;
  }
  const auto t0 = std::chrono::steady_clock::now();
  testing::HttpResult r = HttpCall(server_->address(), "POST", "/echo", "hi");
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "echo:hi");
  std::printf("a request with 2000 idle connections open: %.1f ms\n", ms);
  // One client: its own cap (the evicted ones close as their strands run).
  for (int i = 0; i < 500 && server_->connections() > 256; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_LE(server_->connections(), 256);
  EXPECT_GE(server_->evicted(), 2000 - 256);
}

// Connections that are busy answering are never closed to make room: a
// server full of them refuses the next connection with a 503.
TEST_F(HttpServerTest, AServerFullOfBusyConnectionsRefusesWith503) {
  ServerOptions o;
  o.max_connections = 2;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  RawConnection a(server_->address());
  ASSERT_TRUE(a.Send("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n"));
  hanging_.get_future().wait();
  RawConnection b(server_->address());  // idle: closed to make room for c
  RawConnection c(server_->address());
  EXPECT_TRUE(b.WaitClosed(5));
  ASSERT_TRUE(c.Send("GET /park HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(WaitParked(1));
  // a and c are both answering: nothing to close, d is refused.
  RawConnection d(server_->address());
  EXPECT_TRUE(d.WaitClosed(5));
  EXPECT_THAT(d.received(), HasSubstr("HTTP/1.1 503"));
  EXPECT_THAT(d.received(), HasSubstr("Retry-After: 1"));
  EXPECT_EQ(server_->refused(), 1);
  EXPECT_EQ(server_->evicted(), 1);
}

// The per-client cap: one address cannot take every slot from the others.
TEST_F(HttpServerTest, OneClientHasItsOwnCap) {
  ServerOptions o;
  o.max_connections_per_client = 3;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  std::vector<std::unique_ptr<RawConnection>> conns;
  for (int i = 0; i < 6; ++i) conns.push_back(std::make_unique<RawConnection>(server_->address()));
  // The three oldest were closed to make room for the three newest.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(conns[size_t(i)]->WaitClosed(5)) << i;
  EXPECT_EQ(HttpCall(server_->address(), "POST", "/echo", "x").status, 200);
}

// HTTPS with a self-signed certificate made by openssl, called with curl.
TEST_F(HttpServerTest, ServesHttpsWithASelfSignedCertificate) {
  testing::TempDir dir;
  const std::string cert = dir.File("cert.pem"), key = dir.File("key.pem");
  auto [rc, out] = testing::RunCommand({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                                        "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"});
  ASSERT_EQ(rc, 0) << out;
  ServerOptions o;
  o.tls_cert = cert;
  o.tls_key = key;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  auto [crc, body] = testing::RunCommand({"curl", "-sS", "--cacert", cert, "-d", "over tls",
                                          "https://" + server_->address() + "/echo"});
  EXPECT_EQ(crc, 0) << body;
  EXPECT_EQ(body, "echo:over tls");
  // Plain HTTP to the TLS port gets nowhere.
  testing::HttpResult plain = HttpCall(server_->address(), "POST", "/echo", "x");
  EXPECT_NE(plain.status, 200);
  ServerOptions bad;
  bad.address = "127.0.0.1:0";
  bad.tls_cert = dir.File("missing.pem");
  bad.tls_key = key;
  EXPECT_EQ(HttpServer::Start(bad, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(HttpServerTest, StopAcceptingClosesIdleConnectionsAndLetsAnswersFinish) {
  ASSERT_NO_FATAL_FAILURE(Start());
  RawConnection idle(server_->address());
  RawConnection busy(server_->address());
  ASSERT_TRUE(busy.Send("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n"));
  hanging_.get_future().wait();
  server_->StopAccepting();
  EXPECT_TRUE(idle.WaitClosed(5));
  EXPECT_FALSE(busy.WaitClosed(0.3));  // still answering
  server_->Stop();
  EXPECT_TRUE(busy.WaitClosed(5));
}

TEST_F(HttpServerTest, StreamsChunks) {
  ASSERT_NO_FATAL_FAILURE(Start());
  testing::HttpResult r = HttpCall(server_->address(), "GET", "/chunks");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.headers["transfer-encoding"], "chunked");
  EXPECT_EQ(r.body, "abcd");
  // HTTP/1.0: no chunk framing; the end of the connection ends the body.
  RawConnection c(server_->address());
  ASSERT_TRUE(c.Send("GET /chunks HTTP/1.0\r\n\r\n"));
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_THAT(c.received(), HasSubstr("\r\n\r\nabcd"));
  EXPECT_THAT(c.received(), ::testing::Not(HasSubstr("chunked")));
}

TEST_F(HttpServerTest, NoticesAClientThatGoesAwayWhileWaiting) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto closed = closed_.get_future();
  {
    RawConnection c(server_->address());
    ASSERT_TRUE(c.Send("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n"));
    hanging_.get_future().wait();
  }  // closed here, nothing written to it
  EXPECT_EQ(closed.wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

TEST_F(HttpServerTest, StopClosesPendingExchanges) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto closed = closed_.get_future();
  RawConnection c(server_->address());
  ASSERT_TRUE(c.Send("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n"));
  hanging_.get_future().wait();
  server_->Stop();
  EXPECT_EQ(closed.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_TRUE(c.WaitClosed());
}

TEST(HttpAddressTest, SplitsHostAndPort) {
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(SplitHostPort("127.0.0.1:8080", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 8080);
  ASSERT_TRUE(SplitHostPort("[::1]:0", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  ASSERT_TRUE(SplitHostPort(":9000", &host, &port).ok());
  EXPECT_EQ(host, "");
  for (const char* bad : {"localhost", "h:", "h:70000", "h:x", "::1:80"})
    EXPECT_FALSE(SplitHostPort(bad, &host, &port).ok()) << bad;
  ServerOptions o;
  o.address = "127.0.0.1:x";
  EXPECT_EQ(HttpServer::Start(o, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace paged::http
