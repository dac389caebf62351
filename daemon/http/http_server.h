// An HTTP/1.1 server on Boost.Beast / Asio: the plumbing under paged's
// OpenAI-compatible API and /metrics (daemon/http/front_end.h).
//
// A few event-loop threads serve every connection asynchronously (no thread
// per connection, none blocked on a generation). Per connection: keep-alive
// and pipelining, `Expect: 100-continue`, limits on the header and body size
// (431 / 413, then the connection closes), deadlines to start a request
// (idle), to send its headers and its body, and one per write (a client
// that stops reading). A response is either whole (Content-Length) or
// chunked (Transfer-Encoding: chunked; HTTP/1.0 clients get it unframed and
// the connection closes at its end), for server-sent events. Every response
// carries `X-Content-Type-Options: nosniff`. Optionally over TLS.
//
// Connections are bounded, and accepting never starves: at the limit (in
// all, or of one client address) a new connection closes the oldest one of
// those that are idle or still sending headers (the same client's first);
// only when every connection is busy answering is it refused (503).
//
// While a response is pending the server keeps reading the connection, so a
// client that goes away is noticed at once (Exchange::OnClosed), also while
// nothing is being written: a generation waiting in the queue is cancelled.
// Bytes a client sends meanwhile (a pipelined request) are kept for later.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace paged::http {

namespace bhttp = boost::beast::http;
using Request = bhttp::request<bhttp::string_body>;
using Response = bhttp::response<bhttp::string_body>;

struct ServerOptions {
  std::string address;  // HOST:PORT (an IP or a name; "[::1]:8080"); port 0 picks a free one
  int threads = 4;      // event-loop threads
  size_t max_header_bytes = 64 << 10;  // request line and headers; more: 431
  size_t max_body_bytes = 8 << 20;     // more: 413
  // The longest a connection may wait for a request to start (a fresh one,
  // or a keep-alive one between requests), then to send the request's
  // headers (from its first byte), then its body.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(15)};
  std::chrono::milliseconds header_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds read_timeout{std::chrono::seconds(60)};
  // To write one response or chunk (a client that stopped reading).
  std::chrono::milliseconds write_timeout{std::chrono::seconds(60)};
  int max_connections = 1024;            // in all
  int max_connections_per_client = 256;  // of one client IP address
  // TLS (PEM files): HTTPS when set.
  std::string tls_cert, tls_key;
  // The response for an error the server answers by itself (413, 431, 400
  // for a malformed request); a plain-text body when not set.
  std::function<Response(bhttp::status, std::string_view message)> error_response;
};

class Session;

// One request and its response. Every method may be called from any
// thread; the callbacks run on the connection's strand, one at a time, as do
// the functions given to Post. Calls after the response has ended (or the
// connection closed) do nothing.
class Exchange {
 public:
  Exchange(std::shared_ptr<Session> session, uint64_t id, Request request);
  const Request& request() const { return request_; }
  // The client's address ("127.0.0.1:53211").
  const std::string& peer() const;

  // Ends the exchange with a whole response. Version, keep-alive and
  // Content-Length are set from the request and the body.
  void Respond(Response r);
  // Starts a chunked response with `head`'s status and fields (its body is
  // ignored); then WriteChunk, then EndChunked.
  void StartChunked(Response head);
  // Sends `data` (not empty) as one chunk; `written(ok)` runs on the strand
  // once it is written (ok false: the connection failed, or the exchange had
  // ended).
  void WriteChunk(std::string data, std::function<void(bool ok)> written = nullptr);
  void EndChunked();
  // Runs `fn` on the connection's strand.
  void Post(std::function<void()> fn);
  // `fn` runs once, on the strand, if the client goes away (or the
  // connection fails or the server stops) before the response has ended.
  // Set it in the handler, before anything that may take a while.
  void OnClosed(std::function<void()> fn);
  // Closes the connection (a client given up on); OnClosed runs.
  void Abort();

 private:
  const std::shared_ptr<Session> session_;
  const uint64_t id_;
  const Request request_;
};

using Handler = std::function<void(std::shared_ptr<Exchange>)>;

class HttpServer {
 public:
  // Binds, listens and starts the threads. `handler` runs on a connection's
  // strand for each request; it must not block (answer, or start work that
  // answers later). INVALID_ARGUMENT for a malformed address, UNAVAILABLE
  // when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(ServerOptions options, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // HOST:PORT as bound (port 0 resolved).
  const std::string& address() const { return address_; }
  // Stops accepting and closes the connections that are not answering a
  // request (the rest finish their answers; a keep-alive one then closes).
  void StopAccepting();
  // StopAccepting, waits up to `grace` for the answers in progress to end,
  // closes every connection (pending exchanges see OnClosed), waits for the
  // handlers to finish (up to 5 s) and joins the threads.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(0));
  // Connections open now, and refused or evicted so far (for tests, logs).
  int connections() const;
  int64_t evicted() const;
  int64_t refused() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string address_;
};

// "host:port" -> host and port; INVALID_ARGUMENT when malformed. An IPv6
// host is written in brackets ("[::1]:80"); the brackets are removed.
absl::Status SplitHostPort(std::string_view address, std::string* host, uint16_t* port);

}  // namespace paged::http
