#include "daemon/http/http_server.h"

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <charconv>
#include <cstdio>
#include <deque>
#include <optional>
#include <sstream>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"

namespace paged::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

namespace {

// Bytes a client may send ahead (pipelined) while its response is pending.
constexpr size_t kMaxReadAhead = 64 << 10;
constexpr auto kStopGrace = std::chrono::seconds(5);
constexpr auto kLinger = std::chrono::seconds(2);

// Where a connection is. Idle and headers are the phases a connection at
// the limit may be closed in to make room (it has asked for nothing yet).
enum class Phase { kIdle, kHeaders, kBody, kBusy };

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Serialize(const Response& r) {
  std::ostringstream os;
  os << r;
  return std::move(os).str();
}

std::string SerializeHeader(const Response& r) {
  std::ostringstream os;
  os << r.base();
  return std::move(os).str();
}

// Errors that only mean the peer left (or we closed): nothing to answer.
bool IsDisconnect(const beast::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
         ec == net::error::eof || ec == net::error::connection_reset ||
         ec == net::error::operation_aborted || ec == beast::error::timeout ||
         ec == net::error::broken_pipe || ec == net::error::bad_descriptor ||
         ec.category() == net::error::get_ssl_category() || ec == net::ssl::error::stream_truncated;
}

// The client's IP address: connections are counted per address.
std::string ClientOf(const tcp::socket& socket) {
  beast::error_code ec;
  const tcp::endpoint ep = socket.remote_endpoint(ec);
  return ec ? std::string("?") : ep.address().to_string();
}

}  // namespace

absl::Status SplitHostPort(std::string_view address, std::string* host, uint16_t* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos)
    return absl::InvalidArgumentError(
        absl::StrCat("address '", std::string(address), "' is not HOST:PORT"));
  std::string_view h = address.substr(0, colon);
  const std::string_view p = address.substr(colon + 1);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  unsigned value = 0;
  const auto r = std::from_chars(p.data(), p.data() + p.size(), value);
  if (p.empty() || r.ec != std::errc() || r.ptr != p.data() + p.size() || value > 65535)
    return absl::InvalidArgumentError(
        absl::StrCat("address '", std::string(address), "': the port must be 0..65535"));
  if (h.find(':') != std::string_view::npos && address.front() != '[')
    return absl::InvalidArgumentError(absl::StrCat(
        "address '", std::string(address), "': write an IPv6 host in brackets ([::1]:8080)"));
  *host = std::string(h);
  *port = uint16_t(value);
  return absl::OkStatus();
}

// What the Exchange and the server need of a connection; BasicSession
// implements it over a plain or a TLS stream. The Do* methods and Close run
// on the connection's strand.
class Session : public std::enable_shared_from_this<Session> {
 public:
  virtual ~Session() = default;
  virtual net::any_io_executor executor() = 0;
  virtual const std::string& peer() const = 0;
  virtual void Run() = 0;
  virtual void Close() = 0;
  virtual void DoRespond(uint64_t id, Response r) = 0;
  virtual void DoStartChunked(uint64_t id, Response head) = 0;
  virtual void DoWriteChunk(uint64_t id, std::string data, std::function<void(bool)> written) = 0;
  virtual void DoEndChunked(uint64_t id) = 0;
  virtual void DoOnClosed(uint64_t id, std::function<void()> fn) = 0;
  virtual void DoAbort(uint64_t id) = 0;
  // Closes the connection unless it is answering a request (stopping).
  virtual void CloseIfIdle() = 0;
};

// ---- The server's shared state ----

struct HttpServer::Impl {
  // A connection as the limits see it.
  struct Entry {
    std::weak_ptr<Session> session;
    std::string client;
    Phase phase = Phase::kIdle;
    int64_t since_us = 0;  // when it entered its phase
    bool leaving = false;  // being closed to make room: not counted, not chosen again
  };

  Impl(ServerOptions o, Handler h) : options(std::move(o)), handler(std::move(h)) {}

  Response Error(bhttp::status status, std::string_view message) const {
    Response r;
    if (options.error_response) {
      r = options.error_response(status, message);
    } else {
      r = Response{status, 11};
      r.set(bhttp::field::content_type, "text/plain; charset=utf-8");
      r.body() = absl::StrCat(std::string(message), "\n");
    }
    return r;
  }
  void Accept();
  void Serve(tcp::socket socket, const std::string& client);
  void Refuse(tcp::socket socket);

  // Room for a new connection from `client`: at a limit (in all, or of
  // that client), an idle connection to close is picked (`victim`, marked
  // leaving). False: every connection is busy; refuse the new one.
  bool MakeRoom(const std::string& client, std::shared_ptr<Session>* victim)
      ABSL_LOCKS_EXCLUDED(mu);
  void Register(Session* s, const std::weak_ptr<Session>& weak, const std::string& client)
      ABSL_LOCKS_EXCLUDED(mu);
  // The oldest idle or header-reading connection (of `client` when not
  // empty), marked leaving; null when there is none.
  std::shared_ptr<Session> TakeVictimLocked(const std::string& client)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  void SetPhase(Session* s, Phase p) ABSL_LOCKS_EXCLUDED(mu);
  void Unregister(Session* s) ABSL_LOCKS_EXCLUDED(mu);

  const ServerOptions options;
  const Handler handler;
  // Set by Start before any connection, constant after.
  std::optional<ssl::context> tls;
  // Declared before the io_context: sessions destroyed with its pending
  // handlers unregister themselves here.
  absl::Mutex mu;
  std::unordered_map<Session*, Entry> sessions ABSL_GUARDED_BY(mu);
  std::unordered_map<std::string, int> per_client ABSL_GUARDED_BY(mu);  // not leaving
  int counted ABSL_GUARDED_BY(mu) = 0;                                  // not leaving
  // Atomics: read and written without mu.
  std::atomic<int> connections{0};  // Session objects alive
  std::atomic<int64_t> evicted{0}, refused{0};
  std::atomic<bool> stopping{false};
  net::io_context ioc;
  // Not under mu: `work`, `threads` and `stopped` are touched only by the
  // thread that starts and stops the server (Start, Stop); the acceptor and
  // the timer only on the acceptor's strand (and by Start, before the
  // threads run).
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  tcp::acceptor acceptor{net::make_strand(ioc)};
  net::steady_timer retry{acceptor.get_executor()};
  std::vector<std::thread> threads;
  bool stopped = false;
  bool accepting_stopped = false;
};

bool HttpServer::Impl::MakeRoom(const std::string& client, std::shared_ptr<Session>* victim) {
  absl::MutexLock lock(&mu);
  auto it = per_client.find(client);
  const bool client_full =
      it != per_client.end() && it->second >= options.max_connections_per_client;
  if (!client_full && counted < options.max_connections) return true;
  // The same client's oldest idle connection first; any client's when the
  // server as a whole is full.
  *victim = TakeVictimLocked(client);
  if (*victim == nullptr && !client_full) *victim = TakeVictimLocked("");
  return *victim != nullptr;
}

void HttpServer::Impl::Register(Session* s, const std::weak_ptr<Session>& weak,
                                const std::string& client) {
  absl::MutexLock lock(&mu);
  Entry& e = sessions[s];
  e.session = weak;
  e.client = client;
  e.phase = Phase::kIdle;
  e.since_us = NowUs();
  ++per_client[client];
  ++counted;
}

std::shared_ptr<Session> HttpServer::Impl::TakeVictimLocked(const std::string& client) {
  Entry* best = nullptr;
  for (auto& [p, e] : sessions) {
    if (e.leaving || (e.phase != Phase::kIdle && e.phase != Phase::kHeaders)) continue;
    if (!client.empty() && e.client != client) continue;
    if (best == nullptr || e.since_us < best->since_us) best = &e;
  }
  if (best == nullptr) return nullptr;
  std::shared_ptr<Session> s = best->session.lock();

  if (s == nullptr) return nullptr;  // being destroyed: it leaves by itself
  best->leaving = true;
  if (--per_client[best->client] <= 0) per_client.erase(best->client);
  --counted;
  return s;
}

void HttpServer::Impl::SetPhase(Session* s, Phase p) {
  absl::MutexLock lock(&mu);
  auto it = sessions.find(s);
  if (it == sessions.end() || it->second.phase == p) return;
  it->second.phase = p;
  it->second.since_us = NowUs();
}

void HttpServer::Impl::Unregister(Session* s) {
  absl::MutexLock lock(&mu);
  auto it = sessions.find(s);
  if (it == sessions.end()) return;
  if (!it->second.leaving) {
    if (--per_client[it->second.client] <= 0) per_client.erase(it->second.client);
    --counted;
  }
  sessions.erase(it);
}

// ---- One connection ----

template <class Stream>
class BasicSession final : public Session {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  template <class... StreamArgs>
  BasicSession(HttpServer::Impl& server, std::string peer, StreamArgs&&... args)
      : server_(server), stream_(std::forward<StreamArgs>(args)...), peer_(std::move(peer)) {
    ++server_.connections;
  }
  ~BasicSession() override {
    server_.Unregister(this);
    --server_.connections;
  }

  void Run() override {
    net::post(executor(), [self = Self()] {
      if constexpr (kTls) {
        self->Tcp().expires_after(self->server_.options.header_timeout);
        self->stream_.async_handshake(ssl::stream_base::server, [self](beast::error_code ec) {
          if (ec) {
            Log(LogLevel::kDebug, "http", "%s: TLS handshake: %s", self->peer_.c_str(),
                ec.message().c_str());
            return self->Close();
          }
          self->ReadRequest();
        });
      } else {
        self->ReadRequest();
      }
    });
  }

  net::any_io_executor executor() override { return stream_.get_executor(); }
  const std::string& peer() const override { return peer_; }

  // ---- The Exchange's operations, on the strand ----

  void DoRespond(uint64_t id, Response r) override {
    if (!Current(id) || responded_) return;
    responded_ = true;
    r.version(version_);
    r.keep_alive(keep_alive_ && !server_.stopping);
    r.set("X-Content-Type-Options", "nosniff");
    r.prepare_payload();
    Enqueue({Serialize(r), nullptr, /*ends_exchange=*/true});
  }

  void DoStartChunked(uint64_t id, Response head) override {
    if (!Current(id) || responded_) return;
    responded_ = true;
    chunked_ = true;
    head.version(version_);
    head.body().clear();
    head.set("X-Content-Type-Options", "nosniff");
    if (version_ >= 11) {
      head.keep_alive(keep_alive_);
      head.chunked(true);
    } else {
      keep_alive_ = false;  // HTTP/1.0: unframed, the end of the connection ends the body
      head.keep_alive(false);
      head.erase(bhttp::field::content_length);
    }
    Enqueue({SerializeHeader(head), nullptr, false});
  }

  void DoWriteChunk(uint64_t id, std::string data, std::function<void(bool)> written) override {
    if (!Current(id) || !chunked_ || ended_) {
      if (written) written(false);
      return;
    }
    if (data.empty()) {
      if (written) written(true);
      return;
    }
    if (version_ >= 11) {
      char size[20];
      const auto r = std::to_chars(size, size + sizeof(size), data.size(), 16);
      data = absl::StrCat(std::string(size, size_t(r.ptr - size)), "\r\n", data, "\r\n");
    }
    Enqueue({std::move(data), std::move(written), false});
  }

  void DoEndChunked(uint64_t id) override {
    if (!Current(id) || !chunked_ || ended_) return;
    ended_ = true;
    Enqueue({version_ >= 11 ? "0\r\n\r\n" : "", nullptr, true});
  }

  void DoOnClosed(uint64_t id, std::function<void()> fn) override {
    if (Current(id)) {
      on_closed_ = std::move(fn);
    } else if (closed_ && id == exchange_id_ && ended_id_ != id) {
      fn();  // the client left before the handler asked
    }
  }

  void DoAbort(uint64_t id) override {
    if (Current(id)) Close();
  }

  // Closes the connection; a pending exchange sees OnClosed.
  void Close() override {
    if (closed_) return;
    closed_ = true;
    if (exchange_open_) {
      exchange_open_ = false;
      if (on_closed_) {
        std::function<void()> f = std::move(on_closed_);
        on_closed_ = nullptr;
        f();
      }
    }
    // Queued writes (not the one in flight: it completes with an error) fail.
    std::deque<Out> queued;
    if (writing_ && !out_.empty()) {
      queued.assign(std::make_move_iterator(out_.begin() + 1), std::make_move_iterator(out_.end()));
      out_.erase(out_.begin() + 1, out_.end());
    } else {
      queued.swap(out_);
    }
    for (Out& o : queued) {
      if (o.done) o.done(false);
    }
    beast::error_code ec;
    Tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
    Tcp().close();
  }

  void CloseIfIdle() override {
    if (!exchange_open_) Close();
  }

 private:
  struct Out {
    std::string bytes;
    std::function<void(bool)> done;
    bool ends_exchange = false;
    bool close_after = false;
  };

  std::shared_ptr<BasicSession> Self() {
    return std::static_pointer_cast<BasicSession>(shared_from_this());
  }
  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }
  bool Current(uint64_t id) const { return !closed_ && exchange_open_ && id == exchange_id_; }

  // ---- Reading requests ----

  // Waits for a request to start (the idle deadline), unless bytes of one
  // are here already (pipelined).
  void ReadRequest() {
    if (closed_) return;
    if (server_.stopping) return Close();
    if (buffer_.size() > 0) return ReadHeader();
    server_.SetPhase(this, Phase::kIdle);
    Tcp().expires_after(server_.options.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096), [self = Self()](beast::error_code ec, size_t n) {
      if (!ec) self->buffer_.commit(n);
      if (ec || self->closed_) return self->Close();  // idle: just close
      self->ReadHeader();
    });
  }

  // The headers, from the request's first byte (the header deadline).
  void ReadHeader() {
    if (closed_) return;
    server_.SetPhase(this, Phase::kHeaders);
    parser_.emplace();
    parser_->header_limit(uint32_t(std::min<size_t>(server_.options.max_header_bytes, UINT32_MAX)));
    parser_->body_limit(server_.options.max_body_bytes);
    Tcp().expires_after(server_.options.header_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = Self()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    server_.SetPhase(this, Phase::kBody);
    const Request& req = parser_->get();
    if (!parser_->is_done() && beast::iequals(req[bhttp::field::expect], "100-continue"))
      Enqueue({"HTTP/1.1 100 Continue\r\n\r\n", nullptr, false});
    Tcp().expires_after(server_.options.read_timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = Self()](beast::error_code ec, size_t) { self->OnRequest(ec); });
  }

  void OnReadError(beast::error_code ec) {
    if (ec == bhttp::error::header_limit)
      return Refuse(bhttp::status::request_header_fields_too_large,
                    absl::StrCat("the request's headers are over ",
                                 server_.options.max_header_bytes, " bytes"));
    if (ec == bhttp::error::body_limit)
      return Refuse(bhttp::status::payload_too_large,
                    absl::StrCat("the request body is over the limit of ",
                                 server_.options.max_body_bytes, " bytes"));
    if (IsDisconnect(ec) || closed_) return Close();
    Refuse(bhttp::status::bad_request, absl::StrCat("malformed HTTP request: ", ec.message()));
  }

  // Answers an error the server found itself, then closes (the rest of the
  // request is not read).
  void Refuse(bhttp::status status, const std::string& message) {
    if (closed_) return;
    Log(LogLevel::kDebug, "http", "%s: %d %s", peer_.c_str(), int(status), message.c_str());
    server_.SetPhase(this, Phase::kBusy);
    Response r = server_.Error(status, message);
    r.version(11);
    r.keep_alive(false);
    r.set("X-Content-Type-Options", "nosniff");
    r.prepare_payload();
    Enqueue({Serialize(r), nullptr, false, /*close_after=*/true});
  }

  void OnRequest(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    server_.SetPhase(this, Phase::kBusy);
    Request req = parser_->release();
    parser_.reset();
    ++exchange_id_;
    exchange_open_ = true;
    responded_ = chunked_ = ended_ = false;
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    Watch();
    auto ex = std::make_shared<Exchange>(shared_from_this(), exchange_id_, std::move(req));
    try {
      server_.handler(ex);
    } catch (const std::exception& e) {
      Log(LogLevel::kError, "http", "handler failed: %s", e.what());
      DoRespond(exchange_id_, server_.Error(bhttp::status::internal_server_error, e.what()));
    }
  }

  // While a response is pending: reads what the client sends, to notice at
  // once when it goes away; bytes that arrive are kept for the next request.
  void Watch() {
    if (watching_ || closed_ || buffer_.size() >= kMaxReadAhead) return;
    watching_ = true;
    Tcp().expires_never();  // the read's timer only: a pending write keeps its own
    stream_.async_read_some(buffer_.prepare(4096), [self = Self()](beast::error_code ec, size_t n) {
      self->OnWatch(ec, n);
    });
  }

  void OnWatch(beast::error_code ec, size_t n) {
    watching_ = false;
    if (!ec) buffer_.commit(n);
    if (closed_) return;
    if (!exchange_open_) {
      // The response ended meanwhile (and cancelled this read): next request.
      if (ec && ec != net::error::operation_aborted) return Close();
      return ReadRequest();
    }
    if (ec) {
      Log(LogLevel::kDebug, "http", "%s went away: %s", peer_.c_str(), ec.message().c_str());
      return Close();
    }
    Watch();
  }

  // ---- Writing ----

  void Enqueue(Out o) {
    out_.push_back(std::move(o));
    Flush();
  }

  void Flush() {
    if (writing_ || out_.empty() || closed_) return;
    writing_ = true;
    Tcp().expires_after(server_.options.write_timeout);  // the write's timer only
    net::async_write(stream_, net::buffer(out_.front().bytes),
                     [self = Self()](beast::error_code ec, size_t) { self->OnWritten(ec); });
  }

  void OnWritten(beast::error_code ec) {
    writing_ = false;
    Out o = std::move(out_.front());
    out_.pop_front();
    if (ec) {
      if (o.done) o.done(false);
      return Close();
    }
    if (o.done) o.done(true);  // may queue more
    if (o.close_after) return Linger();
    if (o.ends_exchange) EndExchange();
    Flush();
  }

  // After an error answered before the request was read whole: stop
  // sending, and read (and drop) what the client still sends for a while
  // before closing, so that its unread bytes do not turn into a reset that
  // destroys the answer before the client reads it.
  void Linger() {
    if (closed_) return;
    beast::error_code ec;
    Tcp().socket().shutdown(tcp::socket::shutdown_send, ec);
    Tcp().expires_after(kLinger);
    Drain();
  }

  void Drain() {
    Tcp().async_read_some(net::buffer(drain_), [self = Self()](beast::error_code ec, size_t) {
      if (ec || self->closed_) return self->Close();
      self->Drain();
    });
  }

  void EndExchange() {
    if (closed_) return;
    exchange_open_ = false;
    ended_id_ = exchange_id_;
    on_closed_ = nullptr;
    if (!keep_alive_ || server_.stopping) return Close();
    if (watching_) {
      beast::error_code ec;
      Tcp().socket().cancel(ec);  // OnWatch then reads the next request
    } else {
      ReadRequest();
    }
  }

  HttpServer::Impl& server_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::string peer_;

  uint64_t exchange_id_ = 0;
  uint64_t ended_id_ = 0;       // the last exchange whose response was written whole
  bool exchange_open_ = false;  // a request is being answered
  bool responded_ = false;      // Respond or StartChunked was called
  bool chunked_ = false;
  bool ended_ = false;  // EndChunked was called
  bool keep_alive_ = true;
  unsigned version_ = 11;
  std::function<void()> on_closed_;

  bool watching_ = false;
  bool writing_ = false;
  bool closed_ = false;
  std::deque<Out> out_;  // the front one is being written when writing_
  char drain_[4096];
};

using PlainSession = BasicSession<beast::tcp_stream>;
using TlsSession = BasicSession<beast::ssl_stream<beast::tcp_stream>>;

// ---- Exchange ----

Exchange::Exchange(std::shared_ptr<Session> session, uint64_t id, Request request)
    : session_(std::move(session)), id_(id), request_(std::move(request)) {}

const std::string& Exchange::peer() const { return session_->peer(); }

void Exchange::Respond(Response r) {
  net::post(session_->executor(), [s = session_, id = id_, r = std::move(r)]() mutable {
    s->DoRespond(id, std::move(r));
  });
}

void Exchange::StartChunked(Response head) {
  net::post(session_->executor(), [s = session_, id = id_, h = std::move(head)]() mutable {
    s->DoStartChunked(id, std::move(h));
  });
}

void Exchange::WriteChunk(std::string data, std::function<void(bool)> written) {
  net::post(session_->executor(),
            [s = session_, id = id_, d = std::move(data), w = std::move(written)]() mutable {
              s->DoWriteChunk(id, std::move(d), std::move(w));
            });
}

void Exchange::EndChunked() {
  net::post(session_->executor(), [s = session_, id = id_] { s->DoEndChunked(id); });
}

void Exchange::Post(std::function<void()> fn) { net::post(session_->executor(), std::move(fn)); }

void Exchange::OnClosed(std::function<void()> fn) {
  net::post(session_->executor(), [s = session_, id = id_, f = std::move(fn)]() mutable {
    s->DoOnClosed(id, std::move(f));
  });
}

void Exchange::Abort() {
  net::post(session_->executor(), [s = session_, id = id_] { s->DoAbort(id); });
}

// ---- Accepting ----

void HttpServer::Impl::Serve(tcp::socket socket, const std::string& client) {
  beast::error_code ec;
  const tcp::endpoint ep = socket.remote_endpoint(ec);
  std::string peer = ec ? client : absl::StrCat(client, ":", ep.port());
  std::shared_ptr<Session> s;
  if (tls)
    s = std::make_shared<TlsSession>(*this, std::move(peer), std::move(socket), *tls);
  else
    s = std::make_shared<PlainSession>(*this, std::move(peer), std::move(socket));
  Register(s.get(), s, client);
  s->Run();
}

void HttpServer::Impl::Refuse(tcp::socket socket) {
  // A plain connection gets a 503 before it closes; a TLS one just closes.
  if (tls) return;
  struct Refused {
    tcp::socket socket;
    std::string bytes;
  };
  auto r = std::make_shared<Refused>(Refused{std::move(socket), {}});
  Response res = Error(bhttp::status::service_unavailable,
                       "the server is at its connection limit; retry later");
  res.version(11);
  res.keep_alive(false);
  res.set(bhttp::field::retry_after, "1");
  res.set("X-Content-Type-Options", "nosniff");
  res.prepare_payload();
  r->bytes = Serialize(res);
  net::async_write(r->socket, net::buffer(r->bytes), [r](beast::error_code, size_t) {
    beast::error_code ignored;
    r->socket.shutdown(tcp::socket::shutdown_both, ignored);
    r->socket.close(ignored);
  });
}

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (stopping || !acceptor.is_open()) return;
    if (ec) {
      // Out of descriptors: make room by closing the oldest idle connection
      // (never spin, never stop accepting).
      Log(LogLevel::kWarning, "http", "accept: %s", ec.message().c_str());
      if (ec == net::error::no_descriptors) {
        std::shared_ptr<Session> victim;
        {
          absl::MutexLock lock(&mu);
          victim = TakeVictimLocked("");
        }
        if (victim != nullptr) {
          ++evicted;
          net::post(victim->executor(), [victim] { victim->Close(); });
        }
      }
      retry.expires_after(std::chrono::milliseconds(10));
      retry.async_wait([this](beast::error_code) {
        if (!stopping) Accept();
      });
      return;
    }
    const std::string client = ClientOf(socket);
    std::shared_ptr<Session> victim;
    if (!MakeRoom(client, &victim)) {
      ++refused;
      Log(LogLevel::kDebug, "http", "%s refused: every connection is busy", client.c_str());
      Refuse(std::move(socket));
    } else {
      if (victim != nullptr) {
        ++evicted;
        net::post(victim->executor(), [victim] { victim->Close(); });
      }
      Serve(std::move(socket), client);
    }
    Accept();
  });
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(ServerOptions options,
                                                              Handler handler) {
  if (options.threads < 1) return absl::InvalidArgumentError("HTTP threads must be >= 1");
  if (options.max_connections < 1 || options.max_connections_per_client < 1)
    return absl::InvalidArgumentError("HTTP connection limits must be >= 1");
  std::string host;
  uint16_t port = 0;
  if (absl::Status s = SplitHostPort(options.address, &host, &port); !s.ok()) return s;
  auto impl = std::make_unique<Impl>(std::move(options), std::move(handler));
  beast::error_code ec;
  if (!impl->options.tls_cert.empty() || !impl->options.tls_key.empty()) {
    if (impl->options.tls_cert.empty() || impl->options.tls_key.empty())
      return absl::InvalidArgumentError("HTTPS needs both a certificate and a key");
    impl->tls.emplace(ssl::context::tls_server);
    ssl::context& c = *impl->tls;
    c.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    c.use_certificate_chain_file(impl->options.tls_cert, ec);
    if (ec)
      return absl::InvalidArgumentError(
          absl::StrCat("TLS certificate ", impl->options.tls_cert, ": ", ec.message()));
    c.use_private_key_file(impl->options.tls_key, ssl::context::pem, ec);
    if (ec)
      return absl::InvalidArgumentError(
          absl::StrCat("TLS key ", impl->options.tls_key, ": ", ec.message()));
  }
  tcp::resolver resolver(impl->ioc);
  const auto results = resolver.resolve(host.empty() ? "0.0.0.0" : host, std::to_string(port),
                                        tcp::resolver::passive, ec);
  if (ec || results.empty())
    return absl::InvalidArgumentError(absl::StrCat("HTTP address ", impl->options.address, ": ",
                                                   ec ? ec.message() : "no such host"));
  const tcp::endpoint ep = results.begin()->endpoint();
  tcp::acceptor& a = impl->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", impl->options.address, ": ", ec.message()));
  const tcp::endpoint bound = a.local_endpoint(ec);
  const std::string ip = bound.address().to_string();
  std::unique_ptr<HttpServer> s(new HttpServer(std::move(impl)));
  s->address_ = absl::StrCat(bound.address().is_v6() ? "[" + ip + "]" : ip, ":", bound.port());
  Impl& i = *s->impl_;
  i.work.emplace(i.ioc.get_executor());
  net::post(i.acceptor.get_executor(), [&i] { i.Accept(); });
  for (int t = 0; t < i.options.threads; ++t) i.threads.emplace_back([&i] { i.ioc.run(); });
  return s;
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

int HttpServer::connections() const { return impl_->connections.load(); }
int64_t HttpServer::evicted() const { return impl_->evicted.load(); }
int64_t HttpServer::refused() const { return impl_->refused.load(); }

void HttpServer::StopAccepting() {
  Impl& i = *impl_;
  if (i.accepting_stopped) return;
  i.accepting_stopped = true;
  i.stopping = true;
  net::post(i.acceptor.get_executor(), [&i] {
    beast::error_code ec;
    i.acceptor.close(ec);
    i.retry.cancel();
  });
  // Collected under the lock, closed (and maybe destroyed) outside it: a
  // session's destructor takes the lock.
  std::vector<std::shared_ptr<Session>> open;
  {
    absl::MutexLock lock(&i.mu);
    for (auto& [p, e] : i.sessions) {
      if (std::shared_ptr<Session> s = e.session.lock()) open.push_back(std::move(s));
    }
  }
  for (std::shared_ptr<Session>& s : open) {
    net::post(s->executor(), [s] { s->CloseIfIdle(); });
  }
}

void HttpServer::Stop(std::chrono::milliseconds grace) {
  Impl& i = *impl_;
  if (i.stopped) return;
  StopAccepting();
  // The answers in progress end (their connections close after them).
  const auto answered = std::chrono::steady_clock::now() + grace;
  while (i.connections.load() > 0 && std::chrono::steady_clock::now() < answered)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  i.stopped = true;
  std::vector<std::shared_ptr<Session>> open;
  {
    absl::MutexLock lock(&i.mu);
    for (auto& [p, e] : i.sessions) {
      if (std::shared_ptr<Session> s = e.session.lock()) open.push_back(std::move(s));
    }
  }
  for (std::shared_ptr<Session>& s : open) net::post(s->executor(), [s] { s->Close(); });
  open.clear();
  i.work.reset();
  const auto until = std::chrono::steady_clock::now() + kStopGrace;
  while (i.connections.load() > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  i.ioc.stop();
  for (std::thread& t : i.threads) t.join();
  i.threads.clear();
}

}  // namespace paged::http
