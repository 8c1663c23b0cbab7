// SPDX-License-Identifier: MIT
#pragma once
// One hiredis connection to one server: connect with timeouts, keepalive, AUTH + SELECT + SCRIPT LOAD in one
// round trip, then commands with a command timeout. Faults become typed airl::BackendError subclasses, and
// error replies too (check_reply: the one mapping of server errors). Not thread-safe: the pool hands each
// connection to one thread at a time. Works with hiredis 0.14 (Debian 12) and 1.x.
//
// The socket timeout bounds each read and write; a deadline bounds them all together, so a server that
// answers one byte at a time, each byte within the socket timeout, still cannot hold a call past it.

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstring>
#include <ctime>
#include <exception>
#include <iterator>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <pthread.h>
#include <sys/time.h>

#include "../errors.hpp"
#include "../options.hpp"

namespace airl::detail {

struct ReplyDeleter {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* context) const noexcept { redisFree(context); }
};

inline timeval to_timeval(std::chrono::milliseconds duration) noexcept {
  const auto ms = std::max<std::chrono::milliseconds::rep>(duration.count(), 1);
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms % 1000) * 1000);
  return tv;
}

// Whether `reader` holds no byte of a reply it has not returned: nothing of the next one has arrived.
inline bool between_replies(const redisReader& reader) noexcept {
  if (reader.pos != reader.len) return false;  // bytes not parsed yet
  if (reader.ridx < 0) return true;
  // A reply begun (its type byte read) or a nested one under way is not nothing; an empty first task is what
  // asking for a reply before any byte came leaves.
#if HIREDIS_MAJOR >= 1
  return reader.ridx == 0 && reader.task != nullptr && reader.task[0]->type < 0;
#else
  return reader.ridx == 0 && reader.rstack[0].type < 0;
#endif
}

inline std::string_view reply_text(const redisReply& reply) noexcept {
  return reply.str == nullptr ? std::string_view{} : std::string_view(reply.str, reply.len);
}

// Writing to a socket the server closed raises SIGPIPE, which would kill the serving process. Block it on
// this thread for the duration of one hiredis call and swallow any SIGPIPE that call raised, without
// touching the process's signal dispositions. A SIGPIPE comes only with a failed write (EPIPE), which
// hiredis reports as an error and airl then throws; so a call that returns normally raised none, and costs
// two syscalls (block, restore). Only a call that throws looks for a SIGPIPE to swallow.
class SigpipeGuard {
 public:
  SigpipeGuard() noexcept : exceptions_(std::uncaught_exceptions()) {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    blocked_ = pthread_sigmask(SIG_BLOCK, &pipe_, &previous_) == 0;
    // While SIGPIPE was unblocked on this thread none can be pending for it (it would have been delivered);
    // a caller that blocks SIGPIPE itself may have one pending, which is the caller's and is left alone.
    if (blocked_ && sigismember(&previous_, SIGPIPE) == 1) {
      sigset_t pending;
      sigpending(&pending);
      was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    }
  }
  ~SigpipeGuard() {
    if (!blocked_) return;
    if (std::uncaught_exceptions() > exceptions_ && !was_pending_) {
      const timespec zero{0, 0};
      sigtimedwait(&pipe_, nullptr, &zero);  // swallows this call's SIGPIPE if it raised one; else EAGAIN
    }
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t previous_{};
  int exceptions_;
  bool was_pending_ = false;
  bool blocked_ = false;
};

// Where a connection goes: a TCP host and port, or a unix socket when `unix_socket` is set.
struct Endpoint {
  std::string host;
  int port = 0;
  std::string unix_socket;

  std::string text() const { return unix_socket.empty() ? host + ":" + std::to_string(port) : unix_socket; }
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

inline Endpoint endpoint_of(const RedisOptions& options) { return {options.host, options.port, options.unix_socket}; }

// One connection to Redis. Thread safety: one thread at a time (the pool hands each connection to one
// caller), since it reuses its own argument buffers.
class RedisConnection {
 public:
  RedisConnection(const RedisOptions& options, Endpoint endpoint) : options_(options), endpoint_(std::move(endpoint)) {}

  bool connected() const noexcept { return context_ != nullptr; }
  void close() noexcept { context_.reset(); }
  // Points the connection at another server (a new master after a failover); closes it.
  void retarget(Endpoint endpoint) {
    close();
    endpoint_ = std::move(endpoint);
  }
  // The SHA1 the server gave for the script (valid once connected).
  const std::string& script_sha() const noexcept { return script_sha_; }

  using Clock = std::chrono::steady_clock;

  // Connects, sets keepalive, and runs AUTH, SELECT and SCRIPT LOAD in one round trip, all within `budget`
  // (at most connect_timeout), so a hung server costs at most that. An empty `script` loads none (a
  // Sentinel, or a look at a cluster's slot map). `must_be_master`: ROLE too, refusing a replica (a
  // Sentinel's answer may be stale). Throws ConnectionError, TimeoutError, AuthError,
  // PermissionError or ReplyError (NotMasterError for a replica); on a throw the connection stays closed.
  void connect(std::string_view script, std::chrono::milliseconds budget, bool must_be_master = false) {
    close();
    closed_by_peer_ = false;
    const auto started = std::chrono::steady_clock::now();
    const timeval connect_tv = to_timeval(budget);
    redisContext* raw = endpoint_.unix_socket.empty()
                            ? redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, connect_tv)
                            : redisConnectUnixWithTimeout(endpoint_.unix_socket.c_str(), connect_tv);
    if (raw == nullptr) throw ConnectionError("airl: cannot allocate a Redis connection to " + where());
    std::unique_ptr<redisContext, ContextDeleter> context(raw);
    if (context->err != 0) throw_error(context->err, errno, context->errstr, "connect", budget);
    if (endpoint_.unix_socket.empty()) redisEnableKeepAlive(context.get());

    // The handshake gets whatever is left of connect_timeout.
    const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    timeout_ = std::max(budget - spent, std::chrono::milliseconds{1});
    redisSetTimeout(context.get(), to_timeval(timeout_));
    deadline_ = started + budget;
    bound_ = budget;
    at_deadline_ = true;  // the handshake's socket timeout ends at the deadline: a timeout names the budget
    std::vector<std::vector<std::string_view>> handshake;
    if (!options_.password.empty()) {
      if (options_.username.empty()) handshake.push_back({"AUTH", options_.password});
      else handshake.push_back({"AUTH", options_.username, options_.password});
    }
    const std::string database = std::to_string(options_.database);
    if (options_.database != 0) handshake.push_back({"SELECT", database});
    if (must_be_master) handshake.push_back({"ROLE"});
    if (!script.empty()) handshake.push_back({"SCRIPT", "LOAD", script});
    std::vector<Reply> replies = pipeline(*context, handshake, "handshake");
    for (std::size_t i = 0; i < replies.size(); ++i) {
      check_reply(*replies[i], handshake[i][0]);
    }
    if (must_be_master) {
      const redisReply& role = *replies[replies.size() - (script.empty() ? 1 : 2)];
      if (role.type != REDIS_REPLY_ARRAY || role.elements == 0 || reply_text(*role.element[0]) != "master") {
        throw NotMasterError("airl: " + where() + " is not the master (ROLE " +
                             (role.type == REDIS_REPLY_ARRAY && role.elements > 0 ? std::string(reply_text(*role.element[0])) : "?") + ")");
      }
    }
    if (!script.empty()) {
      const redisReply& sha = *replies.back();
      if (sha.type != REDIS_REPLY_STRING) throw ReplyError("airl: SCRIPT LOAD did not return a SHA1");
      script_sha_.assign(reply_text(sha));
    }

    redisSetTimeout(context.get(), to_timeval(options_.command_timeout));
    timeout_ = options_.command_timeout;
    deadline_ = Clock::time_point::max();  // until limit_timeout() sets the call's: each read and write alone
    at_deadline_ = false;
    context_ = std::move(context);
  }

  // Bounds the next commands' round trips together by `timeout` (the rest of a call's deadline), and each
  // read or write by the command_timeout when that is shorter. Only touches the socket when the value changes.
  void limit_timeout(std::chrono::milliseconds timeout) {
    deadline_ = Clock::now() + std::max(timeout, std::chrono::milliseconds{1});
    bound_ = timeout;
    at_deadline_ = timeout <= options_.command_timeout;
    closed_by_peer_ = false;
    set_socket_timeout(std::clamp(timeout, std::chrono::milliseconds{1}, options_.command_timeout));
  }

  // Whether the last fault was the server's end of the connection gone (EOF, reset, broken pipe) before a
  // byte of the next reply arrived: what a connection kept across a server restart meets on its first use.
  bool closed_by_peer() const noexcept { return closed_by_peer_; }

  // Runs one command: the words of `head` then those of `tail` (a script call's EVALSHA and SHA, then its
  // keys and arguments, without copying them). Throws like connect(); a connection-level fault also closes
  // the connection. An error reply is returned as a reply (REDIS_REPLY_ERROR), not thrown: the caller decides.
  Reply command(std::span<const std::string_view> head, std::span<const std::string_view> tail = {}) {
    SigpipeGuard no_sigpipe;
    append(*context_, head, tail, "command");
    return read_reply(*context_, "command");
  }

  // Queues one command to be sent by flush(); its reply is read by next_reply(), in order. With several
  // connections: queue on each, flush each, then read each, and the round trips overlap.
  void queue(std::span<const std::string_view> head, std::span<const std::string_view> tail = {}) {
    append(*context_, head, tail, "command");
  }
  // Writes everything queued, within the deadline. Throws like command().
  void flush() {
    SigpipeGuard no_sigpipe;
    write_all(*context_, "command");
  }
  // The next reply of what flush() wrote. Only reads (nothing is left to write after a flush), so it needs no
  // SIGPIPE guard. Throws like command().
  Reply next_reply() { return read_reply(*context_, "command"); }

  // Runs replies.size() commands in one round trip: words(i, head, tail) gives command i as command() takes
  // it; its reply goes to replies[i]. Same error handling as command().
  template <class Words>
  void pipeline(std::span<Reply> replies, Words&& words) {
    SigpipeGuard no_sigpipe;
    for (std::size_t i = 0; i < replies.size(); ++i) {
      std::span<const std::string_view> head, tail;
      words(i, head, tail);
      append(*context_, head, tail, "command");
    }
    for (Reply& reply : replies) reply = read_reply(*context_, "command");
  }

  // Where this connection goes.
  const Endpoint& endpoint() const noexcept { return endpoint_; }

  // The one mapping of an error reply to `what` to a typed error carrying the server's text: AuthError for a
  // refused AUTH, PermissionError for an ACL refusal (NOPERM), ReplyError for everything else (a script that
  // refused its arguments, OOM, READONLY, BUSY, ...). Returns if the reply is not an error.
  static void check_reply(const redisReply& reply, std::string_view what) {
    if (reply.type != REDIS_REPLY_ERROR) return;
    const std::string text(reply_text(reply));
    const std::string message = "airl: Redis refused " + std::string(what) + ": " + text;
    if (text.starts_with("WRONGPASS") || text.starts_with("NOAUTH") || text.find("invalid password") != std::string::npos ||
        text.find("invalid username-password") != std::string::npos) {
      throw AuthError(message);
    }
    if (text.starts_with("NOPERM")) throw PermissionError(message);
    throw ReplyError(message);
  }

 private:
  std::string where() const { return endpoint_.text(); }

  template <class Commands>
  std::vector<Reply> pipeline(redisContext& context, const Commands& commands, std::string_view what) {
    SigpipeGuard no_sigpipe;
    for (const auto& command : commands) append(context, command, {}, what);
    std::vector<Reply> replies;
    replies.reserve(std::size(commands));
    for (std::size_t i = 0; i < std::size(commands); ++i) replies.push_back(read_reply(context, what));
    return replies;
  }

  // Queues one command in hiredis's output buffer (sent by the next read_reply). The argument arrays are
  // the connection's own, reused: no allocation per call once they have grown.
  void append(redisContext& context, std::span<const std::string_view> head, std::span<const std::string_view> tail,
              std::string_view what) {
    argv_.clear();
    lengths_.clear();
    for (const auto& words : {head, tail}) {
      for (const std::string_view arg : words) {
        argv_.push_back(arg.data());
        lengths_.push_back(arg.size());
      }
    }
    if (redisAppendCommandArgv(&context, static_cast<int>(argv_.size()), argv_.data(), lengths_.data()) != REDIS_OK) {
      fail(context, what);
    }
  }

  // Sends what is queued (the first time) and reads the next reply, within the deadline: what hiredis's
  // redisGetReply does, with the deadline checked whenever a read or write leaves the work unfinished (the
  // usual round trip is one write and one read, and never looks at the clock). Call under a SigpipeGuard.
  Reply read_reply(redisContext& context, std::string_view what) {
    void* raw = nullptr;
    if (redisGetReplyFromReader(&context, &raw) != REDIS_OK) fail(context, what);
    if (raw == nullptr) {
      write_all(context, what);
      do {
        if (redisBufferRead(&context) != REDIS_OK) fail(context, what);
        if (redisGetReplyFromReader(&context, &raw) != REDIS_OK) fail(context, what);
      } while (raw == nullptr && before_deadline(context, what));
    }
    return Reply(static_cast<redisReply*>(raw));
  }

  // Writes everything queued, within the deadline.
  void write_all(redisContext& context, std::string_view what) {
    for (int done = 0;;) {
      if (redisBufferWrite(&context, &done) != REDIS_OK) fail(context, what);
      if (done != 0 || !before_deadline(context, what)) return;
    }
  }

  // Called when a read or write left the work unfinished: throws TimeoutError once the deadline has passed,
  // else shortens the socket timeout to what is left of it (when shorter) and returns true.
  bool before_deadline(redisContext& context, std::string_view what) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ - Clock::now());
    if (left.count() <= 0) {
      closed_by_peer_ = false;
      if (&context == context_.get()) close();
      throw_error(0, ETIMEDOUT, {}, what, bound_);
    }
    if (left < timeout_) {
      at_deadline_ = true;
      redisSetTimeout(&context, to_timeval(left));
      timeout_ = left;
    }
    return true;
  }

  void set_socket_timeout(std::chrono::milliseconds timeout) {
    if (timeout == timeout_ || !context_) return;
    redisSetTimeout(context_.get(), to_timeval(timeout));
    timeout_ = timeout;
  }

  [[noreturn]] void fail(redisContext& context, std::string_view what) {
    const int saved_errno = errno;
    const std::string text = context.errstr;
    const int code = context.err;
    // Nothing of a reply had arrived (the reader holds no partial reply, no unread byte): the server's end was
    // gone before it answered, as after a restart. A reply cut in the middle is not that.
    closed_by_peer_ = (code == REDIS_ERR_EOF || (code == REDIS_ERR_IO && (saved_errno == ECONNRESET || saved_errno == EPIPE))) &&
                      context.reader != nullptr && between_replies(*context.reader);
    if (&context == context_.get()) close();  // a broken stream cannot be trusted for the next command
    throw_error(code, saved_errno, text, what, at_deadline_ ? bound_ : timeout_);
  }

  // `waited`: the timeout in force, named when the fault was one (a timeout says how long it waited, and
  // where, rather than the errno text "Resource temporarily unavailable").
  [[noreturn]] void throw_error(int code, int saved_errno, const std::string& text, std::string_view what,
                                std::chrono::milliseconds waited) const {
    bool timed_out = code == 0;  // the deadline passed between reads
#ifdef REDIS_ERR_TIMEOUT
    timed_out = timed_out || code == REDIS_ERR_TIMEOUT;
#endif
    timed_out = timed_out || (code == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
                                                       saved_errno == ETIMEDOUT || saved_errno == EINPROGRESS ||
                                                       text.find("timed out") != std::string::npos ||
                                                       text.find("temporarily unavailable") != std::string::npos));
    if (timed_out) {
      throw TimeoutError("airl: Redis " + std::string(what) + " to " + where() + " timed out after " +
                         std::to_string(waited.count()) + " ms");
    }
    const std::string message = "airl: Redis " + std::string(what) + " to " + where() + " failed: " + text;
    if (code == REDIS_ERR_PROTOCOL) throw ReplyError(message);
    throw ConnectionError(message);
  }

  RedisOptions options_;
  Endpoint endpoint_;
  std::unique_ptr<redisContext, ContextDeleter> context_;
  std::chrono::milliseconds timeout_{0};  // the socket timeout now in force
  Clock::time_point deadline_ = Clock::time_point::max();  // by when the current reads and writes must end
  std::chrono::milliseconds bound_{0};   // the time deadline_ was set to allow (named by a timeout)
  bool at_deadline_ = false;             // timeout_ ends at deadline_: a timeout names bound_
  bool closed_by_peer_ = false;          // see closed_by_peer()
  std::string script_sha_;
  std::vector<const char*> argv_;  // append()'s argument arrays, kept between calls
  std::vector<std::size_t> lengths_;
};

}  // namespace airl::detail
