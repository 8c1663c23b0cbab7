// SPDX-License-Identifier: MIT
#pragma once
// One hiredis connection to one server: connect with timeouts, keepalive, AUTH + SELECT + SCRIPT LOAD in one
// round trip, then commands with a command timeout. Faults become typed airl::BackendError subclasses, and
// error replies too (check_reply: the one mapping of server errors). Not thread-safe: the pool hands each
// connection to one thread at a time. Works with hiredis 0.14 (Debian 12) and 1.x.

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

  // Connects, sets keepalive, and runs AUTH, SELECT and SCRIPT LOAD in one round trip, all within `budget`
  // (at most connect_timeout), so a hung server costs at most that. An empty `script` loads none (a
  // Sentinel, or a look at a cluster's slot map). `must_be_master`: ROLE too, refusing a replica (a
  // Sentinel's answer may be stale). Throws ConnectionError, TimeoutError, AuthError,
  // PermissionError or ReplyError (NotMasterError for a replica); on a throw the connection stays closed.
  void connect(std::string_view script, std::chrono::milliseconds budget, bool must_be_master = false) {
    close();
    const auto started = std::chrono::steady_clock::now();
    const timeval connect_tv = to_timeval(budget);
    redisContext* raw = endpoint_.unix_socket.empty()
                            ? redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, connect_tv)
                            : redisConnectUnixWithTimeout(endpoint_.unix_socket.c_str(), connect_tv);
    if (raw == nullptr) throw ConnectionError("airl: cannot allocate a Redis connection to " + where());
    std::unique_ptr<redisContext, ContextDeleter> context(raw);
    if (context->err != 0) throw_context_error(*context, "connect");
    if (endpoint_.unix_socket.empty()) redisEnableKeepAlive(context.get());

    // The handshake gets whatever is left of connect_timeout.
    const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    redisSetTimeout(context.get(), to_timeval(std::max(budget - spent, std::chrono::milliseconds{1})));
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
    context_ = std::move(context);
  }

  // Bounds the next commands' round trips by `timeout` (the rest of a call's deadline), or by the
  // command_timeout when that is shorter. Only touches the socket when the value changes.
  void limit_timeout(std::chrono::milliseconds timeout) {
    const auto wanted = std::clamp(timeout, std::chrono::milliseconds{1}, options_.command_timeout);
    if (wanted == timeout_ || !context_) return;
    redisSetTimeout(context_.get(), to_timeval(wanted));
    timeout_ = wanted;
  }

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
  // Writes everything queued, waiting at most the command timeout. Throws like command().
  void flush() {
    SigpipeGuard no_sigpipe;
    for (int done = 0; done == 0;) {
      if (redisBufferWrite(context_.get(), &done) != REDIS_OK) fail(*context_, "command");
    }
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

  // Sends what is queued (the first time) and reads the next reply. Call under a SigpipeGuard.
  Reply read_reply(redisContext& context, std::string_view what) {
    void* raw = nullptr;
    if (redisGetReply(&context, &raw) != REDIS_OK || raw == nullptr) fail(context, what);
    return Reply(static_cast<redisReply*>(raw));
  }

  [[noreturn]] void fail(redisContext& context, std::string_view what) {
    const int saved_errno = errno;
    const std::string text = context.errstr;
    const int code = context.err;
    if (&context == context_.get()) close();  // a broken stream cannot be trusted for the next command
    throw_error(code, saved_errno, text, what);
  }

  [[noreturn]] void throw_context_error(const redisContext& context, std::string_view what) const {
    throw_error(context.err, errno, context.errstr, what);
  }

  [[noreturn]] void throw_error(int code, int saved_errno, const std::string& text, std::string_view what) const {
    const std::string message = "airl: Redis " + std::string(what) + " to " + where() + " failed: " + text;
#ifdef REDIS_ERR_TIMEOUT
    if (code == REDIS_ERR_TIMEOUT) throw TimeoutError(message);
#endif
    if (code == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT ||
                                 saved_errno == EINPROGRESS || text.find("timed out") != std::string::npos ||
                                 text.find("temporarily unavailable") != std::string::npos)) {
      throw TimeoutError(message);
    }
    if (code == REDIS_ERR_PROTOCOL) throw ReplyError(message);
    throw ConnectionError(message);
  }

  RedisOptions options_;
  Endpoint endpoint_;
  std::unique_ptr<redisContext, ContextDeleter> context_;
  std::chrono::milliseconds timeout_{0};  // the socket timeout now in force
  std::string script_sha_;
  std::vector<const char*> argv_;  // append()'s argument arrays, kept between calls
  std::vector<std::size_t> lengths_;
};

}  // namespace airl::detail
