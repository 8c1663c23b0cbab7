// SPDX-License-Identifier: MIT
#pragma once
// A hostile Redis for tests: a small RESP server on a free 127.0.0.1 port. Until a fault is armed it proxies
// every command to a real redis-server (redis_server.hpp), so a storage pointed at it works normally; an armed
// fault answers the commands it matches (the script calls, the connect handshake, or all) the wrong way: a
// reply of the wrong type, garbage, a reply cut in the middle then a close or silence, a huge bulk length, a
// valid reply one byte at a time, or a close right after the request. Disarming brings the proxy back, so the
// same storage shows its recovery.
//
// One thread accepts, one serves each client connection, commands one at a time (a pipeline is answered in
// order). Every wait is a poll of at most 20 ms that also watches the stop flag, and every wait on the real
// server is bounded, so the destructor ends all threads promptly. Also here: FullBacklog, a port whose
// connects hang (for connect timeouts).

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace airl::test {

// The end (offset past it) of the RESP value starting at data[at], or 0 when it has not all arrived yet.
// Throws std::runtime_error on bytes that are not RESP.
inline std::size_t resp_end(std::string_view data, std::size_t at = 0) {
  if (at >= data.size()) return 0;
  const std::size_t eol = data.find("\r\n", at);
  if (eol == std::string_view::npos) return 0;
  const std::size_t next = eol + 2;
  const auto number = [&] {
    long long n = 0;
    const char* first = data.data() + at + 1;
    const char* last = data.data() + eol;
    if (std::from_chars(first, last, n).ptr != last) throw std::runtime_error("fake redis: bad RESP length");
    return n;
  };
  switch (data[at]) {
    case '+':
    case '-':
    case ':': return next;
    case '$': {
      const long long n = number();
      if (n < 0) return next;
      const std::size_t end = next + static_cast<std::size_t>(n) + 2;
      return data.size() < end ? 0 : end;
    }
    case '*': {
      const long long n = number();
      std::size_t end = next;
      for (long long i = 0; i < n; ++i) {
        end = resp_end(data, end);
        if (end == 0) return 0;
      }
      return end;
    }
    default: throw std::runtime_error("fake redis: not RESP");
  }
}

// The first word of a command hiredis sent (*<n>\r\n$<len>\r\n<word>\r\n...), upper-cased.
inline std::string command_name(std::string_view command) {
  const std::size_t bulk = command.find("\r\n");
  if (bulk == std::string_view::npos || bulk + 2 >= command.size() || command[bulk + 2] != '$') return {};
  const std::size_t word = command.find("\r\n", bulk + 2);
  if (word == std::string_view::npos) return {};
  std::string name(command.substr(word + 2, command.find("\r\n", word + 2) - (word + 2)));
  for (char& c : name) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  return name;
}

class FakeRedis {
 public:
  // What an armed fault does to a command it matches.
  enum class Act {
    answer,               // writes `bytes` instead of the real reply, and goes on serving
    answer_then_close,    // writes `bytes`, then closes the connection
    answer_then_silence,  // writes `bytes`, then reads and ignores everything until the client leaves
    dribble,              // runs the command on the real server and writes its reply one byte per `interval`
                          // (each byte after a pause: an n-byte reply takes n intervals)
    close,                // closes the connection right after reading the command
  };
  // Which commands it matches.
  enum class Match {
    scripts,    // EVALSHA and EVAL (the storages' calls; the handshake passes)
    handshake,  // AUTH, SELECT, ROLE and SCRIPT (the connect handshake)
    any,
  };
  struct Fault {
    Act act = Act::answer;
    std::string bytes;                         // what answer* write
    Match match = Match::scripts;
    int times = -1;                            // matching commands that get it; -1: every one until disarm()
    std::chrono::milliseconds interval{1000};  // dribble: one byte per interval
  };

  // Listens on a free 127.0.0.1 port, proxying to the redis-server on `upstream_port`. Throws
  // std::runtime_error when it cannot listen.
  explicit FakeRedis(int upstream_port) : upstream_port_(upstream_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address = loopback(0);
    socklen_t size = sizeof(address);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        ::listen(listener_, 64) != 0 || ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
      if (listener_ >= 0) ::close(listener_);
      throw std::runtime_error("fake redis: cannot listen");
    }
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~FakeRedis() {
    stop_.store(true);
    acceptor_.join();
    for (Session& session : sessions_) session.thread.join();
    ::close(listener_);
  }
  FakeRedis(const FakeRedis&) = delete;
  FakeRedis& operator=(const FakeRedis&) = delete;

  int port() const noexcept { return port_; }

  // Arms `fault` for the next commands it matches (replacing any armed one).
  void arm(Fault fault) {
    std::lock_guard lock(mutex_);
    fault_ = std::move(fault);
  }
  // Back to a plain proxy.
  void disarm() {
    std::lock_guard lock(mutex_);
    fault_.reset();
  }
  // Commands that met a fault since this object was made.
  int faulted() const noexcept { return faulted_.load(); }
  // Of those, the ones that still ran on the real server (dribble).
  int ran_anyway() const noexcept { return ran_anyway_.load(); }
  // Connections accepted so far.
  int connections() const noexcept { return connections_.load(); }

 private:
  struct Session {
    std::thread thread;
    std::atomic<bool> done{false};
  };

  // Closes a socket when it goes.
  struct Socket {
    int fd = -1;
    explicit Socket(int f = -1) noexcept : fd(f) {}
    ~Socket() {
      if (fd >= 0) ::close(fd);
    }
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
  };

  static constexpr std::chrono::milliseconds step{20};
  static constexpr std::chrono::seconds upstream_limit{5};

  static sockaddr_in loopback(int port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    return address;
  }

  // Polls `fd` for `events` for at most `step`; the revents (0 on a timeout).
  static short poll_once(int fd, short events) {
    pollfd one{fd, events, 0};
    return ::poll(&one, 1, static_cast<int>(step.count())) > 0 ? one.revents : 0;
  }

  // Each reply goes out as written, as Redis sends them (Nagle would hold a pipeline's second reply for the
  // client's delayed ACK, 40 ms).
  static void no_delay(int fd) {
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }

  static bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
      const ssize_t sent = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (sent < 0 && errno == EINTR) continue;
      if (sent <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(sent));
    }
    return true;
  }

  void accept_loop() {
    while (!stop_.load()) {
      if ((poll_once(listener_, POLLIN) & POLLIN) == 0) continue;
      const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      const timeval send_limit{1, 0};  // a client that stops reading cannot block a write for long
      ::setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &send_limit, sizeof(send_limit));
      no_delay(client);
      connections_.fetch_add(1);
      // Sessions that ended are joined here, so a long test does not pile up threads.
      for (auto it = sessions_.begin(); it != sessions_.end();) {
        if (!it->done.load()) {
          ++it;
          continue;
        }
        it->thread.join();
        it = sessions_.erase(it);
      }
      Session& session = sessions_.emplace_back();
      session.thread = std::thread([this, client, &session] {
        serve(client);
        session.done.store(true);
      });
    }
  }

  // The armed fault, if `name` matches it (counting it).
  std::optional<Fault> take_fault(const std::string& name) {
    std::lock_guard lock(mutex_);
    if (!fault_ || fault_->times == 0) return std::nullopt;
    const bool script = name == "EVALSHA" || name == "EVAL";
    const bool handshake = name == "AUTH" || name == "SELECT" || name == "ROLE" || name == "SCRIPT";
    if ((fault_->match == Match::scripts && !script) || (fault_->match == Match::handshake && !handshake)) {
      return std::nullopt;
    }
    if (fault_->times > 0) --fault_->times;
    faulted_.fetch_add(1);
    return fault_;
  }

  // Runs `command` on the real server and reads its whole reply, within upstream_limit. False on a failure.
  bool round_trip(Socket& upstream, std::string_view command, std::string& reply) {
    if (upstream.fd < 0) {
      upstream.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const sockaddr_in address = loopback(upstream_port_);
      if (upstream.fd < 0 || ::connect(upstream.fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
        return false;
      }
      no_delay(upstream.fd);
    }
    if (!send_all(upstream.fd, command)) return false;
    reply.clear();
    const auto deadline = std::chrono::steady_clock::now() + upstream_limit;
    while (!stop_.load() && std::chrono::steady_clock::now() < deadline) {
      if ((poll_once(upstream.fd, POLLIN) & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buffer[4096];
      const ssize_t got = ::recv(upstream.fd, buffer, sizeof(buffer), 0);
      if (got <= 0) return false;
      reply.append(buffer, static_cast<std::size_t>(got));
      if (resp_end(reply) != 0) return true;
    }
    return false;
  }

  // Waits `interval`, in steps; false when the client left or the server stops meanwhile.
  bool pause(int client, std::chrono::milliseconds interval) {
    const auto until = std::chrono::steady_clock::now() + interval;
    while (std::chrono::steady_clock::now() < until) {
      if (stop_.load()) return false;
      if ((poll_once(client, POLLRDHUP) & (POLLRDHUP | POLLHUP | POLLERR)) != 0) return false;
    }
    return true;
  }

  // Closes the way a server process does, with a FIN after what was written: shuts the sending side, then
  // reads until the client closes too (closing with unread bytes would send a reset instead), bounded.
  void finish(int fd) {
    ::shutdown(fd, SHUT_WR);
    const auto deadline = std::chrono::steady_clock::now() + upstream_limit;
    while (!stop_.load() && std::chrono::steady_clock::now() < deadline) {
      if ((poll_once(fd, POLLIN) & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buffer[4096];
      if (::recv(fd, buffer, sizeof(buffer), 0) <= 0) return;
    }
  }

  // Serves one client connection until it closes, a fault closes it, or the server stops. Whether a command
  // meets the fault is decided as it arrives: commands pipelined behind a faulted one (the client sent them
  // together) meet it too, even if the test disarms while they wait.
  void serve(int fd) {
    const Socket client(fd);
    Socket upstream;
    std::string pending, reply;
    std::vector<std::pair<std::string, std::optional<Fault>>> commands;
    bool silent = false;
    while (!stop_.load()) {
      if ((poll_once(fd, POLLIN) & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      char buffer[4096];
      const ssize_t got = ::recv(fd, buffer, sizeof(buffer), 0);
      if (got <= 0) return;
      if (silent) continue;
      pending.append(buffer, static_cast<std::size_t>(got));
      commands.clear();
      try {
        for (std::size_t end = resp_end(pending); end != 0; end = resp_end(pending)) {
          std::string command = pending.substr(0, end);
          pending.erase(0, end);
          std::optional<Fault> fault = take_fault(command_name(command));
          commands.emplace_back(std::move(command), std::move(fault));
        }
      } catch (const std::runtime_error&) {
        return;  // the client sent what is not RESP: not one of ours
      }
      for (const auto& [command, fault] : commands) {
        if (!fault) {
          if (!round_trip(upstream, command, reply) || !send_all(fd, reply)) return;
          continue;
        }
        switch (fault->act) {
          case Act::answer:
            if (!send_all(fd, fault->bytes)) return;
            break;
          case Act::answer_then_close:
            send_all(fd, fault->bytes);
            return finish(fd);
          case Act::answer_then_silence:
            send_all(fd, fault->bytes);
            silent = true;
            break;
          case Act::close: return finish(fd);
          case Act::dribble:
            if (!round_trip(upstream, command, reply)) return;
            ran_anyway_.fetch_add(1);
            for (const char byte : reply) {
              if (!pause(fd, fault->interval) || !send_all(fd, std::string_view(&byte, 1))) return;
            }
            break;
        }
        if (silent) break;
      }
    }
  }

  int upstream_port_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> faulted_{0}, ran_anyway_{0}, connections_{0};
  std::mutex mutex_;
  std::optional<Fault> fault_;   // guarded by mutex_
  std::list<Session> sessions_;  // the acceptor's (and the destructor's, after the acceptor ended)
  std::thread acceptor_;
};

// A port on 127.0.0.1 whose connects hang: a listener with a full accept queue that never accepts (Linux
// drops the SYNs then), for connect timeouts. `full()` says whether filling the queue worked.
class FullBacklog {
 public:
  FullBacklog() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof(address);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        ::listen(listener_, 0) != 0 || ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
      throw std::runtime_error("full backlog: cannot listen");
    }
    port_ = ntohs(address.sin_port);
    // Connects until one does not complete within 200 ms: the queue is full from then on.
    for (int i = 0; i < 16 && !full_; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd < 0) break;
      fillers_.push_back(fd);
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) continue;
      if (errno != EINPROGRESS) break;
      pollfd one{fd, POLLOUT, 0};
      full_ = ::poll(&one, 1, 200) == 0;
    }
  }
  ~FullBacklog() {
    for (const int fd : fillers_) ::close(fd);
    if (listener_ >= 0) ::close(listener_);
  }
  FullBacklog(const FullBacklog&) = delete;
  FullBacklog& operator=(const FullBacklog&) = delete;

  int port() const noexcept { return port_; }
  bool full() const noexcept { return full_; }

 private:
  int listener_ = -1;
  int port_ = 0;
  bool full_ = false;
  std::vector<int> fillers_;
};

}  // namespace airl::test
