// SPDX-License-Identifier: MIT
#pragma once
// RedisConcurrencyStorage: the concurrency storage that shares in-flight caps between replicas through Redis.
// Each scope is one sorted set (member = permit id, score = lease deadline on Redis's clock); one Lua script
// (concurrency_script.hpp) takes, releases and renews leases atomically. A replica that dies leaves its
// leases behind, and they stop counting when they run out. When Redis fails, try_acquire() applies
// RedisOptions::on_failure: fail_open admits (a degraded permit holding no confirmed lease), fail_closed
// throws airl::BackendError, local decides with an in-process store of the same caps.
//
// A call that timed out may still run when a stalled server resumes. So an acquisition that was sent and
// failed is not forgotten: under fail_open its permit sends a release when it ends; otherwise (and for every
// release that failed) the release waits in a small queue and is sent before this storage's next calls, on
// any thread, after the stalled call (Redis runs what it had received first). Ids are never reused, so a
// late release only ever frees its own lease.
//
// Call arguments are built in buffers of the call's own (no thread_local), so a permit released during
// static destruction at exit is safe.
//
// Keys (ids percent-encoded as in key_layout.hpp, with the same hash tags; "cc" sets them apart from the
// rate limiters' buckets, which never have that part):
//   <prefix>:{u=<user>}:cc:um:<cap>:<model>   <prefix>:{u=<user>}:cc:u:<cap>
//   <prefix>:{m=<model>}:cc:m:<cap>           <prefix>:{g}:cc:g:<cap>

#include <chrono>
#include <cstddef>
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../clock.hpp"
#include "../concurrency_limiter.hpp"
#include "../concurrency_storage_policy.hpp"
#include "../decision.hpp"
#include "../in_memory_concurrency_storage.hpp"
#include "concurrency_script.hpp"
#include "connection_pool.hpp"
#include "errors.hpp"
#include "key_layout.hpp"
#include "options.hpp"
#include "redis_storage.hpp"

namespace airl {

namespace detail {

// The key of one concurrency scope, written into `out` (cleared first). See the layout above.
inline void redis_concurrency_key(std::string& out, std::string_view prefix, const BucketRef& scope) {
  redis_scoped_key(out, prefix, scope, "cc:");
}

// EVALSHA of the script the connection loaded when it connected (the pool's script). After a NOSCRIPT
// (restart, SCRIPT FLUSH, failover) the same call goes as EVAL with `script`'s text, which loads and runs it in
// one atomic step. `call` starts with two placeholders this fills (command, SHA or text). Error replies
// become typed exceptions: the script's AIRL_ID_IN_USE becomes airl::PermitIdInUse, others BackendErrors.
inline Reply eval_loaded_script(RedisConnection& connection, std::span<std::string_view> call,
                                std::string_view script) {
  call[0] = "EVALSHA";
  call[1] = connection.script_sha();
  Reply reply = connection.command(call);
  if (reply->type == REDIS_REPLY_ERROR && reply_text(*reply).starts_with("NOSCRIPT")) {
    call[0] = "EVAL";
    call[1] = script;
    reply = connection.command(call);
  }
  if (reply->type == REDIS_REPLY_ERROR && reply_text(*reply).starts_with("AIRL_ID_IN_USE")) {
    throw PermitIdInUse("airl: " + std::string(reply_text(*reply)));
  }
  RedisConnection::check_reply(*reply, "the airl concurrency script");
  return reply;
}

// One script call's arguments, in buffers of its own: never thread_local, so a call made while the
// process exits (a static permit's release) uses no buffer that is already gone.
struct ConcurrencyCall {
  std::vector<std::string> keys;
  std::vector<std::string> numbers;
  std::vector<std::string_view> args;
  std::array<char, 32> member{};

  std::string_view member_text() const noexcept { return {member.data(), member.size()}; }
};

// A release that could not be delivered (or an acquisition that failed after it was sent): retried before
// the storage's next calls, until `give_up` (by then the lease has run out on its own).
struct PendingRelease {
  std::vector<std::string> keys;
  std::array<char, 32> member{};
  std::chrono::steady_clock::time_point give_up;
};

}  // namespace detail

class RedisConcurrencyStorage {
 public:
  // Most releases kept for a retry (beyond, a lease runs out on its own), and how many go before one call.
  static constexpr std::size_t max_pending_releases = 1024;
  static constexpr std::size_t releases_per_call = 16;

  // Connects lazily: does not fail when Redis is down. Throws std::invalid_argument on bad options
  // (as RedisStorage: empty key_prefix or one with '{' '}', pool_size 0, bad port, timeouts <= 0, ...).
  explicit RedisConcurrencyStorage(RedisOptions options = {}) {
    detail::validate_redis_options(options);
    state_ = std::make_unique<State>(std::move(options));
  }

  RedisConcurrencyStorage(RedisConcurrencyStorage&&) noexcept = default;
  RedisConcurrencyStorage& operator=(RedisConcurrencyStorage&&) noexcept = default;

  // Refuses a cap the script cannot enforce exactly: a max_in_flight above 2^53 (Lua numbers are doubles).
  // The limiter calls it for each cap at construction. Thread safety: safe. Throws std::invalid_argument.
  void validate_cap(const ConcurrencyCap& cap) const {
    if (cap.max_in_flight > detail::redis_max_exact) {
      throw std::invalid_argument("airl::RedisConcurrencyStorage: cap '" + cap.name +
                                  "': max_in_flight must be at most 2^53");
    }
  }

  // Takes a lease for `id` in every slot or in none, in one script call on Redis's clock. Thread safety: safe.
  // When Redis fails: fail_open admits (degraded; LeaseLocation::unconfirmed when the call had been sent,
  // so the permit still sends a release, else nowhere), local decides in process (degraded,
  // LeaseLocation::fallback), fail_closed throws the airl::BackendError. A call that was sent and failed
  // is also released later (before this storage's next calls), except under fail_open. Throws
  // std::invalid_argument on bad slots, a max_in_flight above 2^53, or two slots naming one scope;
  // airl::PermitIdInUse (nothing taken) when `id` is already in one of the scopes.
  ConcurrencyResult try_acquire(std::span<const ConcurrencySlot> slots, const PermitId& id) {
    validate(slots);
    detail::ConcurrencyCall call;
    build_call(slots, "acquire", id, call);
    bool sent = false;
    try {
      const detail::Reply reply = run(call.args, &sent);
      return parse_acquire_reply(*reply, slots.size());
    } catch (const BackendError&) {
      const FailurePolicy policy = state_->options.on_failure;
      // Sent: a stalled server may still run it and take a lease no permit owns. fail_open's permit
      // releases it; otherwise a release is queued now.
      if (sent && policy != FailurePolicy::fail_open) defer_release(std::move(call), slots);
      switch (policy) {
        case FailurePolicy::fail_closed: throw;
        case FailurePolicy::local: {
          ConcurrencyResult result = state_->local->try_acquire(slots, id);
          result.degraded = true;
          if (result.acquired) result.location = LeaseLocation::fallback;
          return result;
        }
        case FailurePolicy::fail_open: break;
      }
      ConcurrencyResult admitted;  // nothing is known about what is in flight: admit, holding nothing confirmed
      admitted.acquired = true;
      admitted.degraded = true;
      admitted.location = sent ? LeaseLocation::unconfirmed : LeaseLocation::nowhere;
      return admitted;
    }
  }

  // Drops `id`'s leases where try_acquire() put them (for unconfirmed, in Redis, in case the acquisition
  // ran). Thread safety: safe, also at exit. Throws airl::BackendError when Redis fails (the limiter swallows
  // it), after queueing the release for a retry before the next calls; std::invalid_argument on bad slots.
  void release(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation where) {
    validate(slots);
    if (where == LeaseLocation::nowhere) return;
    if (where == LeaseLocation::fallback) {
      if (state_->local) state_->local->release(slots, id, LeaseLocation::store);
      return;
    }
    detail::ConcurrencyCall call;
    build_call(slots, "release", id, call);
    try {
      run(call.args);
    } catch (const BackendError&) {
      defer_release(std::move(call), slots);
      throw;
    }
  }

  // Extends `id`'s leases if all are live (renewed), else drops what is left (lost). Thread safety: safe.
  // When Redis fails: fail_open and local answer assumed (the leases are not known to be lost), fail_closed
  // throws the airl::BackendError. A permit with no confirmed lease (nowhere, unconfirmed) is assumed
  // without asking Redis. Throws std::invalid_argument on bad slots.
  RenewStatus renew(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation where) {
    validate(slots);
    if (where == LeaseLocation::nowhere || where == LeaseLocation::unconfirmed) return RenewStatus::assumed;
    if (where == LeaseLocation::fallback) {
      return state_->local ? state_->local->renew(slots, id, LeaseLocation::store) : RenewStatus::lost;
    }
    detail::ConcurrencyCall call;
    build_call(slots, "renew", id, call);
    try {
      const detail::Reply reply = run(call.args);
      if (reply->type != REDIS_REPLY_INTEGER) throw ReplyError("airl: unexpected renew reply");
      return reply->integer == 1 ? RenewStatus::renewed : RenewStatus::lost;
    } catch (const BackendError&) {
      if (state_->options.on_failure == FailurePolicy::fail_closed) throw;
      return RenewStatus::assumed;
    }
  }

  // Live leases in `slot`'s scope now, in Redis. Thread safety: safe. Throws airl::BackendError when Redis
  // fails (no failure policy); std::invalid_argument on a bad slot.
  std::uint64_t in_flight(const ConcurrencySlot& slot) {
    const std::span<const ConcurrencySlot> one(&slot, 1);
    validate(one);
    std::string key;
    detail::redis_concurrency_key(key, state_->options.key_prefix, slot.bucket);
    std::array<std::string_view, 5> args = {"EVALSHA", "", "1", key, "count"};
    const detail::Reply reply = run(args);
    if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0) throw ReplyError("airl: unexpected count reply");
    return static_cast<std::uint64_t>(reply->integer);
  }

  // Redis drops run-out leases itself (on each touch, and every key's TTL covers its newest lease); purges
  // the in-process fallback. Thread safety: safe. Throws std::logic_error when moved from.
  std::size_t purge_expired() {
    require_usable();
    return state_->local ? state_->local->purge_expired() : 0;
  }

  // Scopes held in process: the local fallback's (Redis's keys are counted by Redis). Throws nothing.
  std::size_t active_keys() const noexcept { return state_ && state_->local ? state_->local->active_keys() : 0; }

  // Releases waiting to be retried (failed releases, and acquisitions that failed after being sent).
  // Thread safety: safe. Throws nothing.
  std::size_t pending_releases() const noexcept {
    return state_ ? state_->pending_count.load(std::memory_order_relaxed) : 0;
  }

  // Whether the last round trip to Redis succeeded. Thread safety: safe. Throws nothing.
  bool healthy() const noexcept { return state_ && state_->pool.healthy(); }

  // The options it was made with. Requires a storage not moved from. Throws nothing.
  const RedisOptions& options() const noexcept { return state_->options; }

 private:
  struct State {
    explicit State(RedisOptions opts) : options(std::move(opts)), pool(options, detail::concurrency_script) {
      if (options.on_failure == FailurePolicy::local) {
        local = std::make_unique<InMemoryConcurrencyStorage<SteadyClock>>();
      }
    }
    RedisOptions options;
    detail::RedisConnectionPool pool;
    std::unique_ptr<InMemoryConcurrencyStorage<SteadyClock>> local;  // only with FailurePolicy::local
    std::mutex pending_mutex;
    std::vector<detail::PendingRelease> pending;  // oldest first, at most max_pending_releases
    std::atomic<std::size_t> pending_count{0};    // pending.size(), read without the lock
  };

  void require_usable() const {
    if (!state_) throw std::logic_error("airl::RedisConcurrencyStorage: used after being moved from");
  }

  void validate(std::span<const ConcurrencySlot> slots) const {
    detail::validate_slots(slots, "airl::RedisConcurrencyStorage");
    require_usable();
    for (const ConcurrencySlot& slot : slots) {
      if (slot.max_in_flight > detail::redis_max_exact) {
        throw std::invalid_argument("airl::RedisConcurrencyStorage: max_in_flight must be at most 2^53");
      }
    }
  }

  // Runs one script call, after sending the releases waiting for a retry. `sent` (if given) is set once the
  // call itself is about to go out: a failure before that left nothing behind in Redis.
  detail::Reply run(std::span<std::string_view> args, bool* sent = nullptr) {
    return state_->pool.run([&](detail::RedisConnection& connection) {
      deliver_pending(connection);
      if (sent != nullptr) *sent = true;
      return detail::eval_loaded_script(connection, args, detail::concurrency_script);
    });
  }

  // Queues a release of `call`'s member in `call`'s keys, kept until every slot's lease (counted from now,
  // plus the time a call may take) has passed. A full queue drops it: that lease runs out on its own.
  void defer_release(detail::ConcurrencyCall&& call, std::span<const ConcurrencySlot> slots) noexcept {
    try {
      std::chrono::milliseconds longest{0};
      for (const ConcurrencySlot& slot : slots) longest = std::max(longest, slot.lease);
      detail::PendingRelease entry;
      entry.keys = std::move(call.keys);
      entry.member = call.member;
      entry.give_up = std::chrono::steady_clock::now() + longest + state_->options.connect_timeout +
                      state_->options.command_timeout;
      std::lock_guard lock(state_->pending_mutex);
      if (state_->pending.size() >= max_pending_releases) return;
      state_->pending.push_back(std::move(entry));
      state_->pending_count.store(state_->pending.size(), std::memory_order_relaxed);
    } catch (...) {  // std::bad_alloc: the lease runs out on its own
    }
  }

  // Sends up to releases_per_call waiting releases on `connection`, oldest first. A release Redis refuses is
  // dropped; on a connection fault the undelivered ones go back to the queue and the fault propagates.
  void deliver_pending(detail::RedisConnection& connection) {
    if (state_->pending_count.load(std::memory_order_relaxed) == 0) return;
    std::vector<detail::PendingRelease> batch;
    {
      std::lock_guard lock(state_->pending_mutex);
      const std::size_t n = std::min(releases_per_call, state_->pending.size());
      batch.assign(std::make_move_iterator(state_->pending.begin()),
                   std::make_move_iterator(state_->pending.begin() + static_cast<std::ptrdiff_t>(n)));
      state_->pending.erase(state_->pending.begin(), state_->pending.begin() + static_cast<std::ptrdiff_t>(n));
      state_->pending_count.store(state_->pending.size(), std::memory_order_relaxed);
    }
    const auto now = std::chrono::steady_clock::now();
    std::size_t next = 0;
    try {
      for (; next < batch.size(); ++next) {
        const detail::PendingRelease& entry = batch[next];
        if (entry.give_up <= now) continue;  // its lease has run out anyway
        const std::string count = std::to_string(entry.keys.size());
        std::vector<std::string_view> args = {"EVALSHA", "", count};
        args.insert(args.end(), entry.keys.begin(), entry.keys.end());
        args.insert(args.end(), {"release", std::string_view(entry.member.data(), entry.member.size())});
        try {
          detail::eval_loaded_script(connection, args, detail::concurrency_script);
        } catch (const BackendError&) {
          if (!connection.connected()) throw;  // a connection fault; else Redis refused it: drop it
        }
      }
    } catch (...) {
      std::lock_guard lock(state_->pending_mutex);
      const std::size_t room = max_pending_releases - std::min(max_pending_releases, state_->pending.size());
      const std::size_t back = std::min(room, batch.size() - next);
      state_->pending.insert(state_->pending.begin(), std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(next)),
                             std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(next + back)));
      state_->pending_count.store(state_->pending.size(), std::memory_order_relaxed);
      throw;
    }
  }

  static std::int64_t lease_us(const ConcurrencySlot& slot) {
    return std::chrono::duration_cast<std::chrono::microseconds>(slot.lease).count();
  }

  // EVALSHA <sha> <n> key1..keyn <op> <member> [(max_in_flight lease_us) per key | lease_us per key]
  // (acquire takes both, renew the leases, release neither). Throws std::invalid_argument when two slots
  // name one scope.
  void build_call(std::span<const ConcurrencySlot> slots, std::string_view op, const PermitId& id,
                  detail::ConcurrencyCall& call) const {
    const std::size_t n = slots.size();
    call.keys.resize(n);
    call.numbers.clear();
    call.member = id.hex();
    for (std::size_t i = 0; i < n; ++i) {
      detail::redis_concurrency_key(call.keys[i], state_->options.key_prefix, slots[i].bucket);
      for (std::size_t j = 0; j < i; ++j) {
        if (call.keys[j] == call.keys[i]) {
          throw std::invalid_argument("airl::RedisConcurrencyStorage: two slots name the same scope");
        }
      }
    }
    call.numbers.reserve(1 + 2 * n);
    call.numbers.push_back(std::to_string(n));
    if (op != "release") {
      for (const ConcurrencySlot& slot : slots) {
        if (op == "acquire") call.numbers.push_back(std::to_string(slot.max_in_flight));
        call.numbers.push_back(std::to_string(lease_us(slot)));
      }
    }
    // Built only now: the views below point into `numbers`, which no longer grows.
    call.args.assign({"EVALSHA", "", call.numbers[0]});
    call.args.insert(call.args.end(), call.keys.begin(), call.keys.end());
    call.args.insert(call.args.end(), {op, call.member_text()});
    call.args.insert(call.args.end(), call.numbers.begin() + 1, call.numbers.end());
  }

  static ConcurrencyResult parse_acquire_reply(const redisReply& reply, std::size_t n) {
    const auto integer = [&](std::size_t i) {
      if (i >= reply.elements || reply.element[i]->type != REDIS_REPLY_INTEGER) {
        throw ReplyError("airl: unexpected reply from the airl concurrency script");
      }
      return reply.element[i]->integer;
    };
    if (reply.type != REDIS_REPLY_ARRAY || reply.elements == 0) {
      throw ReplyError("airl: unexpected reply from the airl concurrency script");
    }
    ConcurrencyResult result;
    if (integer(0) == 1) {
      result.acquired = true;
      result.location = LeaseLocation::store;
      return result;
    }
    const long long key = integer(1);
    if (key < 1 || static_cast<std::size_t>(key) > n) throw ReplyError("airl: concurrency script named no key");
    result.denied_by = static_cast<std::size_t>(key - 1);
    const long long retry_us = integer(3);
    result.retry_after = retry_us < 0
                             ? Decision::never
                             : std::chrono::ceil<std::chrono::milliseconds>(std::chrono::microseconds{retry_us});
    return result;
  }

  std::unique_ptr<State> state_;
};

static_assert(ConcurrencyStoragePolicy<RedisConcurrencyStorage>);

using RedisConcurrencyLimiter = ConcurrencyLimiter<RedisConcurrencyStorage>;

}  // namespace airl
