// SPDX-License-Identifier: MIT
#pragma once
// RedisConcurrencyStorage: the concurrency storage that shares in-flight caps between replicas through Redis.
// Each scope is one sorted set (member = permit id, score = lease deadline on Redis's clock); one Lua script
// (concurrency_script.hpp) takes, releases and renews leases atomically. A replica that dies leaves its
// leases behind, and they stop counting when they run out. When Redis fails, try_acquire() applies
// RedisOptions::on_failure: fail_open admits (a degraded permit holding no lease), fail_closed throws
// airl::BackendError, local decides with an in-process store of the same caps.
//
// Keys (ids percent-encoded as in key_layout.hpp, with the same hash tags; "cc" sets them apart from the
// rate limiters' buckets, which never have that part):
//   <prefix>:{u=<user>}:cc:um:<cap>:<model>   <prefix>:{u=<user>}:cc:u:<cap>
//   <prefix>:{m=<model>}:cc:m:<cap>           <prefix>:{g}:cc:g:<cap>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
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
  out.assign(prefix);
  switch (scope.scope) {
    case Scope::user_model:
    case Scope::user:
      out.append(":{u=");
      append_percent_encoded(out, scope.user);
      out.append(scope.scope == Scope::user ? "}:cc:u:" : "}:cc:um:");
      append_percent_encoded(out, scope.tier);
      if (scope.scope == Scope::user_model) {
        out.push_back(':');
        append_percent_encoded(out, scope.model);
      }
      break;
    case Scope::model:
      out.append(":{m=");
      append_percent_encoded(out, scope.model);
      out.append("}:cc:m:");
      append_percent_encoded(out, scope.tier);
      break;
    case Scope::global:
      out.append(":{g}:cc:g:");
      append_percent_encoded(out, scope.tier);
      break;
  }
}

// EVALSHA of the script the connection loaded when it connected (the pool's script). After a NOSCRIPT
// (restart, SCRIPT FLUSH, failover) the same call goes as EVAL with `script`'s text, which loads and runs it in
// one atomic step. `call` starts with two placeholders this fills (command, SHA or text). Error replies
// become typed exceptions.
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
  RedisConnection::check_reply(*reply, "the airl concurrency script");
  return reply;
}

}  // namespace detail

class RedisConcurrencyStorage {
 public:
  // Connects lazily: does not fail when Redis is down. Throws std::invalid_argument on bad options
  // (as RedisStorage: empty key_prefix or one with '{' '}', pool_size 0, bad port, timeouts <= 0, ...).
  explicit RedisConcurrencyStorage(RedisOptions options = {}) {
    detail::validate_redis_options(options);
    state_ = std::make_unique<State>(std::move(options));
  }

  RedisConcurrencyStorage(RedisConcurrencyStorage&&) noexcept = default;
  RedisConcurrencyStorage& operator=(RedisConcurrencyStorage&&) noexcept = default;

  // Takes a lease for `id` in every slot or in none, in one script call on Redis's clock. Thread safety: safe.
  // When Redis fails: fail_open admits (degraded, LeaseLocation::nowhere), local decides in process
  // (degraded, LeaseLocation::fallback), fail_closed throws the airl::BackendError. Throws
  // std::invalid_argument on bad slots, a max_in_flight above 2^53, or two slots naming one scope.
  ConcurrencyResult try_acquire(std::span<const ConcurrencySlot> slots, const PermitId& id) {
    validate(slots);
    auto& scratch = detail::RedisScratch::for_this_thread();
    const auto member = id.hex();
    build_call(slots, "acquire", std::string_view(member.data(), member.size()), scratch, /*with_caps=*/true);
    try {
      const detail::Reply reply = run(scratch.args);
      return parse_acquire_reply(*reply, slots.size());
    } catch (const BackendError&) {
      switch (state_->options.on_failure) {
        case FailurePolicy::fail_closed: throw;
        case FailurePolicy::local: {
          ConcurrencyResult result = state_->local->try_acquire(slots, id);
          result.degraded = true;
          if (result.acquired) result.location = LeaseLocation::fallback;
          return result;
        }
        case FailurePolicy::fail_open: break;
      }
      ConcurrencyResult admitted;  // nothing is known about what is in flight: admit, holding nothing
      admitted.acquired = true;
      admitted.degraded = true;
      return admitted;
    }
  }

  // Drops `id`'s leases where try_acquire() put them. Thread safety: safe. Throws airl::BackendError when
  // Redis fails (the limiter swallows it: the leases run out); std::invalid_argument on bad slots.
  void release(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation where) {
    validate(slots);
    if (where == LeaseLocation::nowhere) return;
    if (where == LeaseLocation::fallback) {
      if (state_->local) state_->local->release(slots, id, LeaseLocation::store);
      return;
    }
    auto& scratch = detail::RedisScratch::for_this_thread();
    const auto member = id.hex();
    build_call(slots, "release", std::string_view(member.data(), member.size()), scratch, /*with_caps=*/false);
    run(scratch.args);
  }

  // Extends `id`'s leases if all are live (renewed), else drops what is left (lost). Thread safety: safe.
  // When Redis fails: fail_open and local answer assumed (the leases are not known to be lost), fail_closed
  // throws the airl::BackendError. Throws std::invalid_argument on bad slots.
  RenewStatus renew(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation where) {
    validate(slots);
    if (where == LeaseLocation::nowhere) return RenewStatus::assumed;
    if (where == LeaseLocation::fallback) {
      return state_->local ? state_->local->renew(slots, id, LeaseLocation::store) : RenewStatus::lost;
    }
    auto& scratch = detail::RedisScratch::for_this_thread();
    const auto member = id.hex();
    build_call(slots, "renew", std::string_view(member.data(), member.size()), scratch, /*with_caps=*/false);
    try {
      const detail::Reply reply = run(scratch.args);
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
    auto& scratch = detail::RedisScratch::for_this_thread();
    scratch.keys.resize(1);
    detail::redis_concurrency_key(scratch.keys[0], state_->options.key_prefix, slot.bucket);
    scratch.args.assign({"EVALSHA", "", "1", scratch.keys[0], "count"});
    const detail::Reply reply = run(scratch.args);
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

  detail::Reply run(std::span<std::string_view> args) {
    return state_->pool.run([&](detail::RedisConnection& connection) {
      return detail::eval_loaded_script(connection, args, detail::concurrency_script);
    });
  }

  static std::int64_t lease_us(const ConcurrencySlot& slot) {
    return std::chrono::duration_cast<std::chrono::microseconds>(slot.lease).count();
  }

  // EVALSHA <sha> <n> key1..keyn <op> <member> [(max_in_flight lease_us) per key | lease_us per key]
  // (release takes neither).
  void build_call(std::span<const ConcurrencySlot> slots, std::string_view op, std::string_view member,
                  detail::RedisScratch& scratch, bool with_caps) const {
    const std::size_t n = slots.size();
    scratch.keys.resize(n);
    scratch.numbers.clear();
    scratch.member.assign(member);
    for (std::size_t i = 0; i < n; ++i) {
      detail::redis_concurrency_key(scratch.keys[i], state_->options.key_prefix, slots[i].bucket);
      for (std::size_t j = 0; j < i; ++j) {
        if (scratch.keys[j] == scratch.keys[i]) {
          throw std::invalid_argument("airl::RedisConcurrencyStorage: two slots name the same scope");
        }
      }
    }
    scratch.numbers.push_back(std::to_string(n));
    if (op != "release") {
      for (const ConcurrencySlot& slot : slots) {
        if (with_caps) scratch.numbers.push_back(std::to_string(slot.max_in_flight));
        scratch.numbers.push_back(std::to_string(lease_us(slot)));
      }
    }
    // Built only now: the views below point into `numbers`, which no longer grows.
    scratch.args.assign({"EVALSHA", "", scratch.numbers[0]});
    scratch.args.insert(scratch.args.end(), scratch.keys.begin(), scratch.keys.end());
    scratch.args.insert(scratch.args.end(), {op, scratch.member});
    scratch.args.insert(scratch.args.end(), scratch.numbers.begin() + 1, scratch.numbers.end());
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
