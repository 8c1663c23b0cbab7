// SPDX-License-Identifier: MIT
#pragma once
// The gateway's connections, owned here rather than by cpp-httplib's listener, because every byte a client
// sends is hostile: cpp-httplib parses the requests and runs the routes, this file decides who gets a thread
// and for how long.
//
//   - One poller thread accepts and reads request heads (up to max_head_bytes) without holding a worker: a
//     client that trickles its headers, or keeps an idle connection, costs a file descriptor, not a thread.
//   - Connections are bounded in total and per client address; past either bound a connection is answered
//     (503 / 429) and closed at once.
//   - A request has one total read deadline, from its first byte to its body's last: past it the answer is
//     408 (head: by the poller; body: the route sees Exchange::timed_out()). Idle connections close after
//     idle_timeout.
//   - Complete heads go to a fixed pool of workers, which run cpp-httplib's parser and routes on a stream
//     that enforces the deadline. A route that leaves the body unread (it refused before reading) says
//     Connection: close; so does any answer the connection cannot outlive.
// The health and metrics endpoints get a listener of their own (its own port and threads), so no load on the
// API port can starve them.

#include <httplib.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "api_error.hpp"

namespace gateway {

struct ListenerOptions {
  std::size_t threads = 64;                           // requests handled at once
  std::size_t max_connections = 4096;                 // open connections in all
  std::size_t max_per_address = 32;                   // open connections from one client address (behind a
                                                      // proxy, all come from its address: raise it there)
  std::chrono::milliseconds request_timeout{10'000};  // a request's first byte to its last (head and body)
  std::chrono::milliseconds idle_timeout{5'000};      // a connection waiting for its next request
  std::chrono::milliseconds write_timeout{10'000};    // one write blocked for this long ends the connection
  std::size_t max_head_bytes = 16 * 1024;             // request line and headers
  std::size_t max_requests_per_connection = 100'000;
};

// cpp-httplib's server as a router: its parser, routes and response writer, driven by HttpListener.
class Router : public httplib::Server {
 public:
  using httplib::Server::process_request;
  // cpp-httplib streams a chunked response only while its server socket is valid: the listener's socket.
  void set_serving_socket(socket_t socket) { svr_sock_ = socket; }
};

// What the route serving a request may learn of, and tell, its connection. One per request, on the worker's
// thread: current_exchange() inside a route.
class Exchange {
 public:
  // The request's read deadline passed while its body was being read: answer 408.
  bool timed_out() const noexcept { return timed_out_; }
  // The route read the whole body: the connection may carry another request.
  void body_read() noexcept { body_read_ = true; }

 private:
  friend class HttpListener;
  friend class ConnectionStream;
  bool timed_out_ = false;
  bool body_read_ = false;
  bool declared_body_ = false;  // the request's head announced a body
  bool close_ = false;          // the response said Connection: close
};

namespace detail {
inline thread_local Exchange* current_exchange = nullptr;
}  // namespace detail

// The exchange of the request this thread is serving. Only valid inside a route run by HttpListener.
inline Exchange& current_exchange() { return *detail::current_exchange; }

// One connection's socket as cpp-httplib reads and writes it: first the bytes the poller read already, then
// the socket, never past the request's deadline; writes wait at most write_timeout each.
class ConnectionStream final : public httplib::Stream {
  using Clock = std::chrono::steady_clock;

 public:
  ConnectionStream(int fd, std::string pending, Clock::time_point deadline, std::chrono::milliseconds write_timeout,
                   const std::string& address, int port, Exchange& exchange)
      : fd_(fd), pending_(std::move(pending)), deadline_(deadline), write_timeout_(write_timeout),
        address_(address), port_(port), exchange_(exchange) {}

  bool is_readable() const override { return offset_ < pending_.size() || wait(POLLIN, deadline_); }
  bool is_writable() const override { return wait(POLLOUT, Clock::now() + write_timeout_); }

  ssize_t read(char* ptr, size_t size) override {
    if (offset_ < pending_.size()) {
      const std::size_t n = std::min(size, pending_.size() - offset_);
      std::memcpy(ptr, pending_.data() + offset_, n);
      offset_ += n;
      return static_cast<ssize_t>(n);
    }
    for (;;) {
      if (!wait(POLLIN, deadline_)) return -1;
      const ssize_t n = ::recv(fd_, ptr, size, 0);
      if (n >= 0) return n;
      if (errno != EAGAIN && errno != EINTR) return -1;
    }
  }

  ssize_t write(const char* ptr, size_t size) override {
    for (;;) {
      if (!wait(POLLOUT, Clock::now() + write_timeout_)) return -1;
      const ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
      if (n >= 0) return n;
      if (errno != EAGAIN && errno != EINTR) return -1;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = address_;
    port = port_;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    port = 0;
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&local), &length) == 0) address_of(local, ip, port);
  }
  socket_t socket() const override { return fd_; }

  // The bytes read ahead and not consumed: the start of the next request on this connection.
  std::string leftover() && { return pending_.substr(offset_); }
  bool failed() const noexcept { return failed_; }

  static void address_of(const sockaddr_storage& address, std::string& ip, int& port) {
    char text[INET6_ADDRSTRLEN] = "";
    if (address.ss_family == AF_INET) {
      const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
      ::inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
      port = ntohs(v4.sin_port);
    } else if (address.ss_family == AF_INET6) {
      const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
      ::inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
      port = ntohs(v6.sin6_port);
    }
    ip = text;
  }

 private:
  // Waits until the socket is ready for `events` or `deadline` passes; false then (or on a socket error).
  bool wait(short events, Clock::time_point deadline) const {
    for (;;) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        if (events == POLLIN) exchange_.timed_out_ = true;
        failed_ = true;
        return false;
      }
      pollfd watched{fd_, events, 0};
      const int ready = ::poll(&watched, 1, static_cast<int>(std::min<long long>(left, 1'000)));
      if (ready < 0 && errno != EINTR) break;
      if (ready > 0) {
        if ((watched.revents & events) != 0) return true;
        break;  // an error or a hang-up with nothing to read
      }
    }
    failed_ = true;
    return false;
  }

  const int fd_;
  std::string pending_;
  std::size_t offset_ = 0;
  const Clock::time_point deadline_;
  const std::chrono::milliseconds write_timeout_;
  const std::string& address_;
  const int port_;
  Exchange& exchange_;
  mutable bool failed_ = false;
};

class HttpListener {
  using Clock = std::chrono::steady_clock;

 public:
  // Called for each connection or request the listener refuses itself, with the status and a reason
  // ("too_many_connections", "too_many_connections_from_address", "request_timeout", "headers_too_large").
  using OnRefusal = std::function<void(int status, std::string_view reason)>;

  // Keeps a reference to `router`, which outlives the listener.
  HttpListener(Router& router, ListenerOptions options, OnRefusal on_refusal = {})
      : router_(router), options_(options), on_refusal_(std::move(on_refusal)) {
    router_.set_keep_alive_timeout(std::max<time_t>(1, static_cast<time_t>(options_.idle_timeout.count() / 1000)));
    router_.set_keep_alive_max_count(options_.max_requests_per_connection);
    router_.set_post_routing_handler([](const httplib::Request& req, httplib::Response& res) {
      if (Exchange* exchange = detail::current_exchange) {
        const std::string length = req.get_header_value("Content-Length");
        exchange->declared_body_ = (!length.empty() && length != "0") || req.has_header("Transfer-Encoding");
        if (exchange->declared_body_ && !exchange->body_read_ && res.get_header_value("Connection") != "close") {
          res.headers.erase("Keep-Alive");  // a body left unread ends the connection: say so
          res.set_header("Connection", "close");
        }
        exchange->close_ = res.get_header_value("Connection") == "close";
      }
    });
  }
  ~HttpListener() {
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  // Binds host:port (port 0: any free port). False, with errno, when it cannot.
  bool bind(const std::string& host, int port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || found == nullptr) return false;
    const int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int yes = 1;
    // SO_REUSEADDR only: SO_REUSEPORT would let a second gateway start on a taken port and share its traffic.
    const bool bound = fd >= 0 && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes) == 0 &&
                       ::bind(fd, found->ai_addr, found->ai_addrlen) == 0 && ::listen(fd, 1024) == 0;
    ::freeaddrinfo(found);
    if (!bound) {
      if (fd >= 0) ::close(fd);
      return false;
    }
    listen_fd_ = fd;
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
    std::string ip;
    ConnectionStream::address_of(local, ip, port_);
    return true;
  }

  int port() const noexcept { return port_; }

  // Serves until stop(): returns once every connection is closed and every worker has returned.
  void run() {
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) return;
    wake_read_ = pipe_fds[0];
    wake_write_.store(pipe_fds[1]);
    router_.set_serving_socket(listen_fd_);
    std::vector<std::thread> workers;
    for (std::size_t i = 0; i < options_.threads; ++i) workers.emplace_back([this] { work(); });
    poll_loop();
    {
      std::lock_guard lock(mutex_);
      workers_stop_ = true;
    }
    ready_changed_.notify_all();
    for (std::thread& worker : workers) worker.join();
    ::close(wake_read_);
    ::close(wake_write_.exchange(-1));
  }

  // Stops accepting and ends run(): idle connections close now, requests being served finish first (a stream
  // ends at its next chunk). Thread-safe; idempotent.
  void stop() {
    stopping_.store(true);
    router_.set_serving_socket(INVALID_SOCKET);
    wake();
  }

 private:
  struct Connection {
    int fd = -1;
    std::string address;
    int port = 0;
    std::string buffer;           // read, not yet handed to a request
    Clock::time_point deadline;   // of the request being read, or of the idle wait
    bool reading = false;         // a request has begun arriving
    bool lingering = false;       // answered and half-closed: reading what the client still sends, then closing
    std::size_t served = 0;
  };
  using Owned = std::unique_ptr<Connection>;

  void wake() {
    const int fd = wake_write_.load();
    if (fd >= 0) {
      const char byte = 0;
      (void)!::write(fd, &byte, 1);
    }
  }

  void refuse(int fd, int status, std::string_view reason, std::string message) {
    const std::string body = openai_error_body({status, status >= 500 ? "server_error" : "invalid_request_error",
                                                reason, std::move(message)});
    std::string response = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) +
                           "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                           "\r\nConnection: close\r\n";
    if (status == 429 || status == 503) response += "Retry-After: 1\r\nretry-after-ms: 1000\r\n";
    response += "\r\n" + body;
    (void)::send(fd, response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);  // best effort
    if (on_refusal_) on_refusal_(status, reason);
  }

  // Half-closes after an answer and reads what the client still sends for a moment, so the answer is not lost
  // to a reset (closing with unread bytes resets the connection).
  void linger(Connection& connection, Clock::time_point now) {
    ::shutdown(connection.fd, SHUT_WR);
    connection.lingering = true;
    connection.deadline = now + std::chrono::seconds(2);
  }

  void close_connection(Owned connection) {
    ::close(connection->fd);
    --open_;
    const auto found = per_address_.find(connection->address);
    if (found != per_address_.end() && --found->second == 0) per_address_.erase(found);
  }

  void accept_all(Clock::time_point now) {
    for (;;) {
      sockaddr_storage peer{};
      socklen_t length = sizeof peer;
      const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) accept_paused_until_ = now + std::chrono::milliseconds(100);
        return;
      }
      auto connection = std::make_unique<Connection>();
      connection->fd = fd;
      ConnectionStream::address_of(peer, connection->address, connection->port);
      if (open_ >= options_.max_connections) {
        refuse(fd, 503, "too_many_connections", "the gateway has too many open connections; retry shortly");
        ::close(fd);
        continue;
      }
      std::size_t& from_address = per_address_[connection->address];
      if (from_address >= options_.max_per_address) {
        refuse(fd, 429, "too_many_connections_from_address",
               "too many open connections from your address; reuse one (keep-alive) or close some");
        if (from_address == 0) per_address_.erase(connection->address);
        ::close(fd);
        continue;
      }
      ++from_address;
      ++open_;
      int yes = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);  // small replies: no Nagle delay
      connection->deadline = now + options_.idle_timeout;
      polled_.push_back(std::move(connection));
    }
  }

  // Reads what `connection` sent; true when it stays polled. A complete head goes to the workers. At most
  // 64 KiB per call: a fast sender (a lingering one) must not keep the poller from everyone else.
  bool read_head(Owned& connection, Clock::time_point now) {
    char chunk[4096];
    for (int reads = 0; reads < 16; ++reads) {
      const ssize_t n = ::recv(connection->fd, chunk, sizeof chunk, 0);
      if (n == 0) return false;  // the client closed
      if (n < 0) return errno == EAGAIN || errno == EINTR;
      if (connection->lingering) continue;  // discarded
      if (!connection->reading) {
        connection->reading = true;
        connection->deadline = now + options_.request_timeout;
      }
      connection->buffer.append(chunk, static_cast<std::size_t>(n));
      if (dispatch_if_complete(connection)) return false;
      if (connection->buffer.size() > options_.max_head_bytes) {
        refuse(connection->fd, 431, "headers_too_large",
               "request line and headers exceed " + std::to_string(options_.max_head_bytes) + " bytes");
        linger(*connection, now);
        return true;
      }
    }
    return true;
  }

  // Hands the connection to a worker when its buffer holds a whole head. True when it did.
  bool dispatch_if_complete(Owned& connection) {
    if (connection->buffer.find("\r\n\r\n") == std::string::npos) return false;
    {
      std::lock_guard lock(mutex_);
      ready_.push_back(std::move(connection));
    }
    ready_changed_.notify_one();
    return true;
  }

  void poll_loop() {
    std::vector<pollfd> watched;
    bool listening = true;
    for (;;) {
      Clock::time_point now = Clock::now();
      take_returned(now);
      if (stopping_.load()) {
        if (listening) {
          ::close(listen_fd_);
          listen_fd_ = -1;
          listening = false;
        }
        for (Owned& connection : polled_) close_connection(std::move(connection));
        polled_.clear();
        if (open_ == 0) return;
      }
      watched.assign({{wake_read_, POLLIN, 0}});
      const bool accepting = listening && now >= accept_paused_until_;
      if (accepting) watched.push_back({listen_fd_, POLLIN, 0});
      Clock::time_point next = now + std::chrono::seconds(1);
      if (!accepting && listening) next = std::min(next, accept_paused_until_);
      for (const Owned& connection : polled_) {
        watched.push_back({connection->fd, POLLIN, 0});
        next = std::min(next, connection->deadline);
      }
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
      if (::poll(watched.data(), watched.size(), static_cast<int>(std::max<long long>(0, wait))) < 0 && errno != EINTR) {
        return;
      }
      now = Clock::now();
      if (watched[0].revents != 0) {
        char drain[64];
        while (::read(wake_read_, drain, sizeof drain) > 0) {
        }
      }
      const std::size_t first = accepting ? 2 : 1;
      // Every polled connection either stays, moves to a worker, or closes; new ones are appended after.
      std::vector<Owned> still;
      still.reserve(polled_.size());
      for (std::size_t i = 0; i < polled_.size(); ++i) {
        Owned& connection = polled_[i];
        const short events = watched[first + i].revents;
        bool keep = true;
        if (events != 0) keep = read_head(connection, now);
        if (!connection) continue;  // dispatched
        if (keep && now >= connection->deadline) {
          if (connection->reading && !connection->lingering) {
            refuse(connection->fd, 408, "request_timeout",
                   "the request did not arrive within " + std::to_string(options_.request_timeout.count()) + " ms");
          }
          keep = false;
        }
        if (keep) {
          still.push_back(std::move(connection));
        } else {
          close_connection(std::move(connection));
        }
      }
      polled_ = std::move(still);
      if (accepting && (watched[1].revents & POLLIN) != 0) accept_all(now);
    }
  }

  // Takes back the connections workers finished with: polled again, or closed.
  void take_returned(Clock::time_point now) {
    std::vector<std::pair<Owned, bool>> returned;
    {
      std::lock_guard lock(mutex_);
      returned.swap(returned_);
    }
    for (auto& [connection, keep] : returned) {
      if (!keep || stopping_.load()) {
        if (keep) {
          close_connection(std::move(connection));
        } else {
          linger(*connection, now);
          polled_.push_back(std::move(connection));
        }
        continue;
      }
      connection->reading = !connection->buffer.empty();
      connection->deadline = now + (connection->reading ? options_.request_timeout : options_.idle_timeout);
      if (!dispatch_if_complete(connection)) polled_.push_back(std::move(connection));
    }
  }

  void work() {
    for (;;) {
      Owned connection;
      {
        std::unique_lock lock(mutex_);
        ready_changed_.wait(lock, [&] { return workers_stop_ || !ready_.empty(); });
        if (ready_.empty()) return;
        connection = std::move(ready_.front());
        ready_.pop_front();
      }
      const bool keep = serve(*connection);
      {
        std::lock_guard lock(mutex_);
        returned_.emplace_back(std::move(connection), keep);
      }
      wake();
    }
  }

  // Runs one request through the router; true when the connection may carry another.
  bool serve(Connection& connection) {
    Exchange exchange;
    ConnectionStream stream(connection.fd, std::move(connection.buffer), connection.deadline, options_.write_timeout,
                            connection.address, connection.port, exchange);
    const bool last = stopping_.load() || ++connection.served >= options_.max_requests_per_connection;
    bool client_closes = false;
    detail::current_exchange = &exchange;
    const bool answered = router_.process_request(stream, last, client_closes, nullptr);
    detail::current_exchange = nullptr;
    const bool failed = stream.failed();
    connection.buffer = std::move(stream).leftover();
    return answered && !failed && !last && !client_closes && !exchange.close_ &&
           (!exchange.declared_body_ || exchange.body_read_);
  }

  Router& router_;
  const ListenerOptions options_;
  const OnRefusal on_refusal_;
  int listen_fd_ = -1;
  int port_ = 0;
  int wake_read_ = -1;
  std::atomic<int> wake_write_{-1};
  std::atomic<bool> stopping_{false};
  Clock::time_point accept_paused_until_{};

  // The poller's own: the connections it watches, and how many are open (here or at a worker), per address.
  std::vector<Owned> polled_;
  std::size_t open_ = 0;
  std::unordered_map<std::string, std::size_t> per_address_;

  std::mutex mutex_;  // guards the hand-offs below
  std::condition_variable ready_changed_;
  std::deque<Owned> ready_;                       // complete heads, for the workers
  std::vector<std::pair<Owned, bool>> returned_;  // back from the workers: keep (true) or close
  bool workers_stop_ = false;
};

}  // namespace gateway
