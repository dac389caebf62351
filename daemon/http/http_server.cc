#include "daemon/http/http_server.h"

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <charconv>
#include <cstdio>
#include <deque>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"

namespace paged::http {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;

namespace {

// Bytes a client may send ahead (pipelined) while its response is pending.
constexpr size_t kMaxReadAhead = 64 << 10;
constexpr auto kStopGrace = std::chrono::seconds(5);
constexpr auto kLinger = std::chrono::seconds(2);

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
         ec == net::error::broken_pipe || ec == net::error::bad_descriptor;
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

// ---- The server's shared state ----

struct HttpServer::Impl {
  Impl(ServerOptions o, Handler h) : options(std::move(o)), handler(std::move(h)) {}

  Response Error(bhttp::status status, std::string_view message) const {
    if (options.error_response) return options.error_response(status, message);
    Response r{status, 11};
    r.set(bhttp::field::content_type, "text/plain; charset=utf-8");
    r.body() = absl::StrCat(std::string(message), "\n");
    return r;
  }
  void Accept();

  const ServerOptions options;
  const Handler handler;
  // Declared before the io_context: sessions destroyed with its pending
  // handlers unregister themselves here.
  absl::Mutex mu;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions ABSL_GUARDED_BY(mu);
  std::atomic<int> connections{0};  // atomics: read and written without mu
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
};

// ---- One connection ----

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(HttpServer::Impl& server, tcp::socket socket)
      : server_(server), stream_(std::move(socket)) {
    ++server_.connections;
    beast::error_code ec;
    const tcp::endpoint ep = stream_.socket().remote_endpoint(ec);
    if (!ec) peer_ = absl::StrCat(ep.address().to_string(), ":", ep.port());
  }
  ~Session() {
    {
      absl::MutexLock lock(&server_.mu);
      server_.sessions.erase(this);
    }
    --server_.connections;
  }

  void Run() {
    {
      absl::MutexLock lock(&server_.mu);
      server_.sessions[this] = weak_from_this();
    }
    net::post(stream_.get_executor(), [self = shared_from_this()] { self->ReadRequest(); });
  }

  net::any_io_executor executor() { return stream_.get_executor(); }
  const std::string& peer() const { return peer_; }

  // ---- The Exchange's operations, on the strand ----

  void DoRespond(uint64_t id, Response r) {
    if (!Current(id) || responded_) return;
    responded_ = true;
    r.version(version_);
    r.keep_alive(keep_alive_);
    r.prepare_payload();
    Enqueue({Serialize(r), nullptr, /*ends_exchange=*/true});
  }

  void DoStartChunked(uint64_t id, Response head) {
    if (!Current(id) || responded_) return;
    responded_ = true;
    chunked_ = true;
    head.version(version_);
    head.body().clear();
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

  void DoWriteChunk(uint64_t id, std::string data, std::function<void(bool)> written) {
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

  void DoEndChunked(uint64_t id) {
    if (!Current(id) || !chunked_ || ended_) return;
    ended_ = true;
    Enqueue({version_ >= 11 ? "0\r\n\r\n" : "", nullptr, true});
  }

  void DoOnClosed(uint64_t id, std::function<void()> fn) {
    if (Current(id)) {
      on_closed_ = std::move(fn);
    } else if (closed_ && id == exchange_id_ && ended_id_ != id) {
      fn();  // the client left before the handler asked
    }
  }

  // Closes the connection; a pending exchange sees OnClosed.
  void Close() {
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
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

 private:
  struct Out {
    std::string bytes;
    std::function<void(bool)> done;
    bool ends_exchange = false;
    bool close_after = false;
  };

  bool Current(uint64_t id) const { return !closed_ && exchange_open_ && id == exchange_id_; }

  // ---- Reading requests ----

  void ReadRequest() {
    if (closed_) return;
    parser_.emplace();
    parser_->header_limit(uint32_t(std::min<size_t>(server_.options.max_header_bytes, UINT32_MAX)));
    parser_->body_limit(server_.options.max_body_bytes);
    stream_.expires_after(server_.options.read_timeout);
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    const Request& req = parser_->get();
    if (!parser_->is_done() && beast::iequals(req[bhttp::field::expect], "100-continue"))
      Enqueue({"HTTP/1.1 100 Continue\r\n\r\n", nullptr, false});
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRequest(ec); });
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
    Response r = server_.Error(status, message);
    r.version(11);
    r.keep_alive(false);
    r.prepare_payload();
    Enqueue({Serialize(r), nullptr, false, /*close_after=*/true});
  }

  void OnRequest(beast::error_code ec) {
    if (ec) return OnReadError(ec);
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
    stream_.expires_never();  // the read's timer only: a pending write keeps its own
    stream_.async_read_some(
        buffer_.prepare(4096),
        [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWatch(ec, n); });
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
    stream_.expires_after(server_.options.write_timeout);  // the write's timer only
    net::async_write(
        stream_, net::buffer(out_.front().bytes),
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWritten(ec); });
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
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(kLinger);
    Drain();
  }

  void Drain() {
    stream_.async_read_some(net::buffer(drain_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec || self->closed_) return self->Close();
                              self->Drain();
                            });
  }

  void EndExchange() {
    if (closed_) return;
    exchange_open_ = false;
    ended_id_ = exchange_id_;
    on_closed_ = nullptr;
    if (!keep_alive_) return Close();
    if (watching_) {
      beast::error_code ec;
      stream_.socket().cancel(ec);  // OnWatch then reads the next request
    } else {
      ReadRequest();
    }
  }

  HttpServer::Impl& server_;
  beast::tcp_stream stream_;
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

// ---- Accepting ----

void HttpServer::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (stopping || !acceptor.is_open()) return;
    if (ec) {
      // Out of descriptors, say: try again shortly instead of spinning.
      Log(LogLevel::kWarning, "http", "accept: %s", ec.message().c_str());
      retry.expires_after(std::chrono::milliseconds(100));
      retry.async_wait([this](beast::error_code) {
        if (!stopping) Accept();
      });
      return;
    }
    if (connections.load() >= options.max_connections) {
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      std::make_shared<Session>(*this, std::move(socket))->Run();
    }
    Accept();
  });
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(ServerOptions options,
                                                              Handler handler) {
  if (options.threads < 1) return absl::InvalidArgumentError("HTTP threads must be >= 1");
  std::string host;
  uint16_t port = 0;
  if (absl::Status s = SplitHostPort(options.address, &host, &port); !s.ok()) return s;
  auto impl = std::make_unique<Impl>(std::move(options), std::move(handler));
  beast::error_code ec;
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

void HttpServer::Stop() {
  Impl& i = *impl_;
  if (i.stopped) return;
  i.stopped = true;
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
    for (auto& [p, weak] : i.sessions) {
      if (std::shared_ptr<Session> s = weak.lock()) open.push_back(std::move(s));
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
