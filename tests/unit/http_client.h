// A tiny HTTP/1.1 client for the tests of paged's HTTP server: whole
// requests through Boost.Beast (chunked bodies decoded), and a raw
// connection for the cases a client library hides (pipelining, half-read
// streams, disconnects, malformed requests). Blocking, with timeouts.
#pragma once

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace paged::testing {

struct HttpResult {
  int status = 0;  // 0: the request failed (error says why)
  std::string error;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

inline std::pair<std::string, std::string> SplitAddress(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  return {host_port.substr(0, colon), host_port.substr(colon + 1)};
}

// One request on a new connection; the response read whole.
inline HttpResult HttpCall(const std::string& address, const std::string& method,
                           const std::string& target, const std::string& body = "",
                           const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  namespace net = boost::asio;
  namespace bhttp = boost::beast::http;
  HttpResult out;
  try {
    net::io_context ioc;
    net::ip::tcp::resolver resolver(ioc);
    net::ip::tcp::socket socket(ioc);
    const auto [host, port] = SplitAddress(address);
    net::connect(socket, resolver.resolve(host, port));
    bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method), target, 11};
    req.set(bhttp::field::host, address);
    for (const auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    if (!body.empty() || method == "POST") req.prepare_payload();
    bhttp::write(socket, req);
    boost::beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 << 20);
    bhttp::read(socket, buffer, parser);
    const auto& res = parser.get();
    out.status = int(res.result_int());
    for (const auto& f : res) {
      std::string name(f.name_string());
      for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
      out.headers[name] = std::string(f.value());
    }
    out.body = res.body();
  } catch (const std::exception& e) {
    out.status = 0;
    out.error = e.what();
  }
  return out;
}

// A raw TCP connection (IPv4 HOST:PORT).
class RawConnection {
 public:
  explicit RawConnection(const std::string& address) {
    const auto [host, port] = SplitAddress(address);
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) return;
    fd_ = ::socket(res->ai_family, res->ai_socktype, 0);
    if (fd_ >= 0 && ::connect(fd_, res->ai_addr, res->ai_addrlen) != 0) Close();
    freeaddrinfo(res);
  }
  ~RawConnection() { Close(); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return fd_ >= 0; }
  bool Send(std::string_view bytes) {
    while (!bytes.empty() && fd_ >= 0) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(size_t(n));
    }
    return fd_ >= 0;
  }
  // Reads until everything received contains `needle` (true), or the peer
  // closes or `timeout_s` passes (false).
  bool ReadUntil(std::string_view needle, double timeout_s = 10) {
    const auto end = Deadline(timeout_s);
    while (received_.find(needle) == std::string::npos) {
      if (!ReadSome(end)) return false;
    }
    return true;
  }
  // Reads until `needle` occurs `n` times (true), or the peer closes or
  // `timeout_s` passes (false).
  bool ReadCount(std::string_view needle, int n, double timeout_s = 10) {
    const auto end = Deadline(timeout_s);
    while (Count(needle) < n) {
      if (!ReadSome(end)) return false;
    }
    return true;
  }
  // Reads until the peer closes (true) or `timeout_s` passes (false).
  bool WaitClosed(double timeout_s = 10) {
    const auto end = Deadline(timeout_s);
    while (ReadSome(end)) {
    }
    return closed_by_peer_;
  }
  // How many times `needle` occurs in what was received.
  int Count(std::string_view needle) const {
    int n = 0;
    for (size_t p = received_.find(needle); p != std::string::npos;
         p = received_.find(needle, p + needle.size()))
      ++n;
    return n;
  }
  const std::string& received() const { return received_; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  using Clock = std::chrono::steady_clock;
  static Clock::time_point Deadline(double timeout_s) {
    return Clock::now() +
           std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  }
  bool ReadSome(Clock::time_point end) {
    if (fd_ < 0 || closed_by_peer_) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, int(left.count())) <= 0) return false;
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) {
      closed_by_peer_ = true;
      return false;
    }
    received_.append(buf, size_t(n));
    return true;
  }
  int fd_ = -1;
  bool closed_by_peer_ = false;
  std::string received_;
};

// The JSON payloads of a server-sent event stream's "data: " lines, in order.
inline std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t eol = body.find('\n', pos);
    if (eol == std::string::npos) eol = body.size();
    const std::string_view line(body.data() + pos, eol - pos);
    if (line.substr(0, 6) == "data: ") out.emplace_back(line.substr(6));
    pos = eol + 1;
  }
  return out;
}

// The lines of `text` that are not in the Prometheus text format 0.0.4: a
// comment (# HELP / # TYPE) or a sample `name{label="value",...} number`.
inline std::vector<std::string> NonExpositionLines(const std::string& text) {
  static const std::regex help(R"(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*)");
  static const std::regex type(R"(# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram))");
  static const std::regex sample(
      R"([a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*")"
      R"((,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*")*\})? )"
      R"((-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|\+Inf|-Inf|NaN))");
  std::vector<std::string> bad;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!std::regex_match(line, help) && !std::regex_match(line, type) &&
        !std::regex_match(line, sample))
      bad.push_back(line);
  }
  return bad;
}

}  // namespace paged::testing
