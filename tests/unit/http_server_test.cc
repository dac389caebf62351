// The HTTP server's plumbing (daemon/http/http_server.h) with a test
// handler: keep-alive and pipelining, 100-continue, the size limits, the
// read timeout, chunked responses (and HTTP/1.0), a client that goes away
// while its response is pending, and Stop with exchanges in flight.
#include "daemon/http/http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "tests/unit/http_client.h"

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
    if (target == "/hang") {  // never answers; tells when the client leaves
      ex->OnClosed([this] { closed_.set_value(); });
      hanging_.set_value();
      return;
    }
    Response r{bhttp::status::not_found, 11};
    r.body() = "no";
    ex->Respond(std::move(r));
  }

  std::unique_ptr<HttpServer> server_;
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

TEST_F(HttpServerTest, ClosesIdleConnectionsAfterTheReadTimeout) {
  ServerOptions o;
  o.read_timeout = std::chrono::milliseconds(200);
  ASSERT_NO_FATAL_FAILURE(Start(o));
  RawConnection c(server_->address());
  ASSERT_TRUE(c.Send("GET /echo HTTP/1.1\r\nHost: x\r\n"));  // never finished
  EXPECT_TRUE(c.WaitClosed(5));
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
