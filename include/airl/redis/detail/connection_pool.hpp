// SPDX-License-Identifier: MIT
#pragma once
// A fixed-size pool of connections to one Redis server, shared by all threads. Connections are made lazily (the service
// may start before Redis), remade after a fault, and a failed connect starts an exponential backoff during
// which calls fail at once instead of piling up on a dead server. No call waits longer than
// connect_timeout + command_timeout for a connection.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../../detail/lock.hpp"
#include "../../detail/mutex.hpp"
#include "../../detail/thread_annotations.hpp"
#include "../errors.hpp"
#include "../options.hpp"
#include "connection.hpp"

namespace airl::detail {

class RedisConnectionPool {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds first_backoff{10};
  static constexpr std::chrono::milliseconds max_backoff{1000};

  // `must_be_master`: every connect checks ROLE (Sentinel mode: the address came from a Sentinel).
  RedisConnectionPool(const RedisOptions& options, const Endpoint& endpoint, std::string_view script,
                      bool must_be_master = false)
      : options_(options), script_(script), must_be_master_(must_be_master), endpoint_(endpoint) {
    Lock lock(mutex_);
    for (std::size_t i = 0; i < options_.pool_size; ++i) idle_.push_back(std::make_unique<RedisConnection>(options_, endpoint));
  }
  RedisConnectionPool(const RedisConnectionPool&) = delete;
  RedisConnectionPool& operator=(const RedisConnectionPool&) = delete;

  // A connected connection borrowed until the lease ends. Call failed(error) when a command on it threw
  // (a lost connection then counts against the server's health), succeeded() when it answered.
  class Lease {
   public:
    Lease(RedisConnectionPool& pool, std::unique_ptr<RedisConnection> connection)
        : pool_(&pool), connection_(std::move(connection)) {}
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)),
          connection_(std::move(other.connection_)),
          settled_(other.settled_),
          reused_(other.reused_) {}
    Lease& operator=(Lease&& other) noexcept {
      if (this != &other) {
        Lease ended(std::move(*this));  // gives its connection back as its destructor says
        pool_ = std::exchange(other.pool_, nullptr);
        connection_ = std::move(other.connection_);
        settled_ = other.settled_;
        reused_ = other.reused_;
      }
      return *this;
    }
    // A lease ended neither succeeded() nor failed() (an exception other than a BackendError, between
    // writing commands and reading their replies) may leave replies unread: the connection is closed, so
    // the next caller never reads another call's replies.
    ~Lease() {
      if (pool_ == nullptr || !connection_) return;
      if (!settled_) connection_->close();
      pool_->give_back(std::move(connection_));
    }
    RedisConnection& connection() noexcept { return *connection_; }
    RedisConnectionPool& pool() noexcept { return *pool_; }
    // Whether the connection was already open when borrowed (kept from an earlier call), not opened for this one.
    bool reused() const noexcept { return reused_; }
    void succeeded() {
      settled_ = true;
      pool_->record_success();
    }
    // A lost connection is remade on its next use; only failed connects back off, so a restart of Redis that
    // leaves every pooled connection stale is no long backoff (and the script client sends the call again on
    // a fresh connection: it costs no failed call either).
    void failed(const BackendError& error) {
      settled_ = true;  // a fault closed the connection already, or left it usable (an error reply)
      if (!connection_->connected()) pool_->record_failure(error, /*connect_failed=*/false);
    }

   private:
    RedisConnectionPool* pool_;
    std::unique_ptr<RedisConnection> connection_;
    bool settled_ = false;
    bool reused_ = false;

    friend class RedisConnectionPool;
  };

  // Borrows a connection and connects it if needed, by `deadline`; `fresh`: a newly opened one (a pooled one
  // was just found dead: its idle neighbours may be too). Thread safety: safe. Throws TimeoutError when no
  // connection frees up in time; while backing off after a failed connect, the same kind of error as that
  // connect (ConnectionError, TimeoutError, AuthError, PermissionError) at once; otherwise whatever
  // connecting throws (airl::BackendError subclasses).
  Lease lease(Clock::time_point deadline, bool fresh = false) {
    Lease lease(*this, borrow(deadline, fresh));
    RedisConnection& connection = lease.connection();
    lease.reused_ = connection.connected();
    if (!connection.connected()) {
      throw_if_backing_off();
      // No time left (a second run of a call that timed out): a connect that cannot succeed is not tried, so
      // it starts no backoff that would fail the next calls.
      if (Clock::now() >= deadline) {
        throw TimeoutError("airl: Redis connect to " + connection.endpoint().text() +
                           " not tried: the call's deadline had passed");
      }
      try {
        connection.connect(script_, std::min(options_.connect_timeout, remaining(deadline)), must_be_master_);
      } catch (const BackendError& error) {
        record_failure(error, /*connect_failed=*/true);
        throw;
      }
    }
    connection.limit_timeout(remaining(deadline));
    return lease;
  }

  // Points the pool at another server (the master a Sentinel names after a failover): each connection
  // reconnects there on its next use. Thread safety: safe.
  void retarget(const Endpoint& endpoint) {
    Lock lock(mutex_);
    if (endpoint == endpoint_) return;
    endpoint_ = endpoint;
    backoff_ = std::chrono::milliseconds{0};  // a new server: no backoff inherited from the old one
    next_attempt_ = Clock::time_point{};
  }

  Endpoint endpoint() const {
    Lock lock(mutex_);
    return endpoint_;
  }

  // Whether the last round trip to Redis succeeded. Thread safety: safe. Throws nothing.
  bool healthy() const noexcept {
    Lock lock(mutex_);
    return healthy_;
  }

  // How long until the next connect attempt (0 when not backing off). Thread safety: safe.
  std::chrono::milliseconds retry_hint() const {
    Lock lock(mutex_);
    const auto now = Clock::now();
    return now >= next_attempt_ ? std::chrono::milliseconds{0}
                                : std::chrono::ceil<std::chrono::milliseconds>(next_attempt_ - now);
  }

 private:
  static std::chrono::milliseconds remaining(Clock::time_point deadline) {
    return std::max(std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()), std::chrono::milliseconds{1});
  }

  // What kind of fault the last failed connect was, so calls during the backoff report it faithfully.
  enum class FailureKind { connection, timeout, auth, permission, reply };

  static FailureKind kind_of(const BackendError& error) noexcept {
    if (dynamic_cast<const AuthError*>(&error) != nullptr) return FailureKind::auth;
    if (dynamic_cast<const PermissionError*>(&error) != nullptr) return FailureKind::permission;
    if (dynamic_cast<const TimeoutError*>(&error) != nullptr) return FailureKind::timeout;
    if (dynamic_cast<const ReplyError*>(&error) != nullptr) return FailureKind::reply;
    return FailureKind::connection;
  }

  void throw_if_backing_off() const {
    Lock lock(mutex_);
    const auto now = Clock::now();
    if (now >= next_attempt_) return;
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next_attempt_ - now);
    const std::string message = last_error_ + " (not retried for another " + std::to_string(wait.count()) + " ms)";
    switch (last_kind_) {
      case FailureKind::auth: throw AuthError(message);
      case FailureKind::permission: throw PermissionError(message);
      case FailureKind::timeout: throw TimeoutError(message);
      case FailureKind::reply: throw ReplyError(message);
      case FailureKind::connection: throw ConnectionError(message);
    }
    throw ConnectionError(message);
  }

  std::unique_ptr<RedisConnection> borrow(Clock::time_point deadline, bool fresh) {
    Lock lock(mutex_);
    if (!wait_for_idle(deadline)) {
      throw TimeoutError("airl: no free Redis connection within connect_timeout + command_timeout (pool_size " +
                         std::to_string(options_.pool_size) + ")");
    }
    // Prefer a connected connection: a closed one costs a connect. A fresh one: prefer a closed one.
    auto wanted = std::find_if(idle_.rbegin(), idle_.rend(), [&](const auto& c) { return c->connected() != fresh; });
    auto chosen = wanted != idle_.rend() ? std::prev(wanted.base()) : std::prev(idle_.end());
    std::unique_ptr<RedisConnection> connection = std::move(*chosen);
    idle_.erase(chosen);
    if (fresh) connection->close();
    if (connection->endpoint() != endpoint_) connection->retarget(endpoint_);
    return connection;
  }

  // Waits until a connection is idle or the deadline passes; false then. Requires the lock (the wait gives it
  // up meanwhile, as a condition variable's does).
  bool wait_for_idle(Clock::time_point deadline) AIRL_REQUIRES(mutex_) {
    std::unique_lock native(mutex_.native(), std::adopt_lock);
    const bool idle = freed_.wait_until(native, deadline, [this]() AIRL_NO_THREAD_SAFETY_ANALYSIS { return !idle_.empty(); });
    native.release();  // the lock stays held: Lock gives it back
    return idle;
  }

  void give_back(std::unique_ptr<RedisConnection> connection) noexcept {
    {
      Lock lock(mutex_);
      idle_.push_back(std::move(connection));
    }
    freed_.notify_one();
  }

  void record_success() {
    Lock lock(mutex_);
    healthy_ = true;
    backoff_ = std::chrono::milliseconds{0};
    next_attempt_ = Clock::time_point{};
  }

  void record_failure(const BackendError& error, bool connect_failed) {
    Lock lock(mutex_);
    healthy_ = false;
    last_error_.assign(error.what());
    last_kind_ = kind_of(error);
    if (!connect_failed) return;
    backoff_ = backoff_.count() == 0 ? first_backoff : std::min(backoff_ * 2, max_backoff);
    next_attempt_ = Clock::now() + backoff_;
  }

  RedisOptions options_;
  std::string script_;
  bool must_be_master_;
  mutable Mutex mutex_;
  Endpoint endpoint_ AIRL_GUARDED_BY(mutex_);
  std::condition_variable freed_;
  std::vector<std::unique_ptr<RedisConnection>> idle_ AIRL_GUARDED_BY(mutex_);
  bool healthy_ AIRL_GUARDED_BY(mutex_) = true;
  std::chrono::milliseconds backoff_ AIRL_GUARDED_BY(mutex_){0};
  Clock::time_point next_attempt_ AIRL_GUARDED_BY(mutex_){};
  std::string last_error_ AIRL_GUARDED_BY(mutex_);
  FailureKind last_kind_ AIRL_GUARDED_BY(mutex_) = FailureKind::connection;
};

}  // namespace airl::detail
