// SPDX-License-Identifier: MIT
#pragma once
// RedisConcurrencyStorage: the concurrency storage that shares in-flight caps between replicas through Redis.
// Each scope is one sorted set (member = permit id, score = lease deadline on Redis's clock); one Lua script
// (concurrency_script.hpp) takes, releases and renews leases atomically, through the one command path both
// Redis storages share (detail/script_client.hpp). A replica that dies leaves its leases behind, and they stop
// counting when they run out. When Redis fails, try_acquire() applies RedisOptions::on_failure as a rate
// decision does (detail/fallback.hpp): fail_open admits (a degraded permit holding no confirmed lease),
// fail_closed refuses with Status::backend_unavailable, local decides with an in-process store of the same caps.
//
// A call that timed out may still run when a stalled server resumes. So an acquisition that was sent and
// failed is not forgotten: under fail_open its permit sends a release when it ends; otherwise (and for every
// release that failed) the release waits in a small queue and goes out in the same pipeline as this storage's
// next call, on any thread, after the stalled call (Redis runs what it had received first). Ids are never
// reused, so a late release only ever frees its own lease.
//
// Call arguments are built in buffers of the call's own (no thread_local), so a permit released during
// static destruction at exit is safe.
//
// Keys (ids percent-encoded as in key_layout.hpp, with the same hash tags; "cc" sets them apart from the
// rate limiters' buckets, which never have that part):
//   <prefix>:{u=<user>}:cc:um:<cap>:<model>   <prefix>:{u=<user>}:cc:u:<cap>
//   <prefix>:{m=<model>}:cc:m:<cap>           <prefix>:{g}:cc:g:<cap>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../clock.hpp"
#include "../concurrency_storage_policy.hpp"
#include "../decision.hpp"
#include "../detail/lock.hpp"
#include "../detail/mutex.hpp"
#include "../detail/thread_annotations.hpp"
#include "../detail/validate.hpp"
#include "../detail/verdict.hpp"
#include "../in_memory_concurrency_storage.hpp"
#include "concurrency_script.hpp"
#include "detail/fallback.hpp"
#include "detail/script_client.hpp"
#include "errors.hpp"
#include "key_layout.hpp"
#include "options.hpp"

namespace airl {

namespace detail {

// The key of one concurrency scope, written into `out` (cleared first). See the layout above.
inline void redis_concurrency_key(std::string& out, std::string_view prefix, const BucketRef& scope) {
  redis_scoped_key(out, prefix, scope, "cc:");
}

// The words of one script call (ScriptWords) in buffers of its own: never thread_local, so a call made while
// the process exits (a static permit's release) uses no buffer that is already gone.
struct LeaseCallWords {
  std::vector<std::string> keys;
  std::vector<std::string> numbers;
  std::vector<std::string_view> words;
  std::array<char, 32> member{};

  std::string_view member_text() const noexcept { return {member.data(), member.size()}; }
};

// A release that could not be delivered (or an acquisition that failed after it was sent): retried with the
// storage's next calls, until `give_up` (by then the lease has run out on its own). Its words are built when
// it is sent: the queue moves entries, and views into a moved string are not kept.
struct PendingRelease {
  LeaseCallWords call;
  std::chrono::steady_clock::time_point give_up;
};

}  // namespace detail

class RedisConcurrencyStorage {
 public:
  // Most releases kept for a retry (beyond, a lease runs out on its own), and how many go with one call.
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
    if (cap.max_in_flight > max_exact_count) {
      throw std::invalid_argument("airl::RedisConcurrencyStorage: cap '" + cap.name +
                                  "': max_in_flight must be at most 2^53");
    }
  }

  // Takes a lease for `id` in every slot or in none, in one script call on Redis's clock. Thread safety: safe.
  // When Redis fails (always degraded): fail_open admits (LeaseLocation::unconfirmed when the call had been
  // sent, so the permit still sends a release, else nowhere), local decides in process
  // (LeaseLocation::fallback), fail_closed refuses with Status::backend_unavailable. A call that was sent and
  // failed is also released later (with this storage's next calls), except under fail_open. Throws
  // std::invalid_argument on bad slots, a max_in_flight above 2^53, or two slots naming one scope;
  // airl::PermitIdInUse (nothing taken) when `id` is already in one of the scopes.
  ConcurrencyResult try_acquire(std::span<const ConcurrencySlot> slots, const PermitId& id) {
    validate(slots);
    detail::LeaseCallWords call;
    build_call(slots, "acquire", id, call);
    bool sent = false;
    try {
      const detail::Reply reply = run(call, &sent);
      return parse_acquire_reply(*reply, slots.size());
    } catch (const BackendError&) {
      // Sent: a stalled server may still run it and take a lease no permit owns. fail_open's permit
      // releases it; otherwise a release is queued now.
      if (sent && state_->fallback.policy() != FailurePolicy::fail_open) defer_release(call, slots);
      ConcurrencyResult result = state_->fallback.decide(
          [&] {  // nothing is known about what is in flight: admit, holding nothing confirmed
            return ConcurrencyResult{.acquired = true,
                                     .location = sent ? LeaseLocation::unconfirmed : LeaseLocation::nowhere,
                                     .status = Status::allowed};
          },
          [&] {
            return ConcurrencyResult{.retry_after = std::max(state_->client.retry_hint(), std::chrono::milliseconds{1}),
                                     .status = Status::backend_unavailable};
          },
          [&](InMemoryConcurrencyStorage<SteadyClock>& local) {
            ConcurrencyResult decided = local.try_acquire(slots, id);
            if (decided.acquired) decided.location = LeaseLocation::fallback;
            return decided;
          });
      result.degraded = true;
      return result;
    }
  }

  // Drops `id`'s leases where try_acquire() put them (for unconfirmed, in Redis, in case the acquisition
  // ran). Thread safety: safe, also at exit. Throws airl::BackendError when Redis fails (the limiter swallows
  // it), after queueing the release for a retry with the next calls; std::invalid_argument on bad slots.
  void release(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation where) {
    validate(slots);
    if (where == LeaseLocation::nowhere) return;
    if (where == LeaseLocation::fallback) {
      if (state_->fallback.local() != nullptr) state_->fallback.local()->release(slots, id, LeaseLocation::store);
      return;
    }
    detail::LeaseCallWords call;
    build_call(slots, "release", id, call);
    try {
      run(call);
    } catch (const BackendError&) {
      defer_release(call, slots);
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
      InMemoryConcurrencyStorage<SteadyClock>* local = state_->fallback.local();
      return local != nullptr ? local->renew(slots, id, LeaseLocation::store) : RenewStatus::lost;
    }
    detail::LeaseCallWords call;
    build_call(slots, "renew", id, call);
    try {
      const detail::Reply reply = run(call);
      if (reply->type != REDIS_REPLY_INTEGER) throw ReplyError("airl: unexpected renew reply");
      return reply->integer == 1 ? RenewStatus::renewed : RenewStatus::lost;
    } catch (const BackendError&) {
      if (state_->fallback.policy() == FailurePolicy::fail_closed) throw;
      return RenewStatus::assumed;
    }
  }

  // Live leases in `slot`'s scope now, in Redis. Thread safety: safe. Throws airl::BackendError when Redis
  // fails (no failure policy); std::invalid_argument on a bad slot.
  std::uint64_t in_flight(const ConcurrencySlot& slot) {
    const std::span<const ConcurrencySlot> one(&slot, 1);
    validate(one);
    detail::LeaseCallWords call;
    build_call(one, "count", PermitId{}, call);
    const detail::Reply reply = run(call);
    if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0) throw ReplyError("airl: unexpected count reply");
    return static_cast<std::uint64_t>(reply->integer);
  }

  // Redis drops run-out leases itself (on each touch, and every key's TTL covers its newest lease); purges
  // the in-process fallback. Thread safety: safe. Throws std::logic_error when moved from.
  std::size_t purge_expired() {
    require_usable();
    return state_->fallback.local() != nullptr ? state_->fallback.local()->purge_expired() : 0;
  }

  // Scopes held in process: the local fallback's (Redis's keys are counted by Redis). Throws nothing.
  std::size_t active_keys() const noexcept {
    return state_ && state_->fallback.local() != nullptr ? state_->fallback.local()->active_keys() : 0;
  }

  // Releases waiting to be retried (failed releases, and acquisitions that failed after being sent).
  // Thread safety: safe. Throws nothing.
  std::size_t pending_releases() const noexcept {
    return state_ ? state_->pending_count.load(std::memory_order_relaxed) : 0;
  }

  // Whether the last round trip to Redis succeeded. Thread safety: safe. Throws nothing.
  bool healthy() const noexcept { return state_ && state_->client.healthy(); }

  // The options it was made with. Requires a storage not moved from. Throws nothing.
  const RedisOptions& options() const noexcept { return state_->options; }

 private:
  struct State {
    explicit State(RedisOptions opts)
        : options(std::move(opts)),
          client(options, detail::concurrency_script, "the airl concurrency script"),
          fallback(options.on_failure) {}
    RedisOptions options;
    detail::ScriptClient client;
    detail::Fallback<InMemoryConcurrencyStorage<SteadyClock>> fallback;
    detail::Mutex pending_mutex;
    std::vector<detail::PendingRelease> pending AIRL_GUARDED_BY(pending_mutex);  // oldest first, bounded
    std::atomic<std::size_t> pending_count{0};  // pending.size(), read without the lock
  };

  void require_usable() const {
    if (!state_) throw std::logic_error("airl::RedisConcurrencyStorage: used after being moved from");
  }

  void validate(std::span<const ConcurrencySlot> slots) const {
    detail::validate_slots(slots, "airl::RedisConcurrencyStorage");
    require_usable();
    for (const ConcurrencySlot& slot : slots) {
      if (slot.max_in_flight > max_exact_count) {
        throw std::invalid_argument("airl::RedisConcurrencyStorage: max_in_flight must be at most 2^53");
      }
    }
  }

  // Runs one script call, pipelined after up to releases_per_call releases waiting for a retry (one round
  // trip). `sent` (if given) is set once the calls are about to go out: a failure before that left nothing
  // behind in Redis. A waiting release Redis refuses is dropped; on a connection fault they wait again.
  detail::Reply run(const detail::LeaseCallWords& call, bool* sent = nullptr) {
    std::vector<detail::PendingRelease> retries = take_pending();
    if (retries.empty()) return state_->client.eval(call.words, sent);
    std::vector<detail::ScriptWords> calls;
    calls.reserve(retries.size() + 1);
    const auto now = std::chrono::steady_clock::now();
    for (detail::PendingRelease& retry : retries) {
      if (retry.give_up <= now) continue;  // its lease has run out anyway
      retry.call.numbers.clear();
      finish_words(retry.call, "release");
      calls.emplace_back(retry.call.words);
    }
    calls.emplace_back(call.words);
    std::vector<detail::Reply> replies;
    try {
      replies = state_->client.eval_many(calls, sent);
    } catch (const BackendError&) {
      put_back(std::move(retries));
      throw;
    }
    state_->client.check(*replies.back());
    return std::move(replies.back());
  }

  // Queues a release of `call`'s member in `call`'s keys, kept until every slot's lease (counted from now,
  // plus the time a call may take) has passed. A full queue drops it: that lease runs out on its own.
  void defer_release(const detail::LeaseCallWords& call, std::span<const ConcurrencySlot> slots) noexcept {
    try {
      std::chrono::milliseconds longest{0};
      for (const ConcurrencySlot& slot : slots) longest = std::max(longest, slot.lease);
      detail::PendingRelease entry;
      entry.call.keys = call.keys;
      entry.call.member = call.member;
      entry.give_up = std::chrono::steady_clock::now() + longest + state_->options.connect_timeout +
                      state_->options.command_timeout;
      detail::Lock lock(state_->pending_mutex);
      if (state_->pending.size() >= max_pending_releases) return;
      state_->pending.push_back(std::move(entry));
      state_->pending_count.store(state_->pending.size(), std::memory_order_relaxed);
    } catch (...) {  // std::bad_alloc: the lease runs out on its own
    }
  }

  // Takes up to releases_per_call waiting releases, oldest first.
  std::vector<detail::PendingRelease> take_pending() {
    std::vector<detail::PendingRelease> batch;
    if (state_->pending_count.load(std::memory_order_relaxed) == 0) return batch;
    detail::Lock lock(state_->pending_mutex);
    const std::size_t n = std::min(releases_per_call, state_->pending.size());
    batch.assign(std::make_move_iterator(state_->pending.begin()),
                 std::make_move_iterator(state_->pending.begin() + static_cast<std::ptrdiff_t>(n)));
    state_->pending.erase(state_->pending.begin(), state_->pending.begin() + static_cast<std::ptrdiff_t>(n));
    state_->pending_count.store(state_->pending.size(), std::memory_order_relaxed);
    return batch;
  }

  // Puts releases taken by take_pending() back at the front of the queue (as many as fit).
  void put_back(std::vector<detail::PendingRelease> batch) noexcept {
    if (batch.empty()) return;
    try {
      detail::Lock lock(state_->pending_mutex);
      const std::size_t room = max_pending_releases - std::min(max_pending_releases, state_->pending.size());
      const std::size_t back = std::min(room, batch.size());
      state_->pending.insert(state_->pending.begin(), std::make_move_iterator(batch.begin()),
                             std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(back)));
      state_->pending_count.store(state_->pending.size(), std::memory_order_relaxed);
    } catch (...) {  // std::bad_alloc: those leases run out on their own
    }
  }

  static std::int64_t lease_us(const ConcurrencySlot& slot) {
    return std::chrono::duration_cast<std::chrono::microseconds>(slot.lease).count();
  }

  // The call's words: <n> keys... <op> [<member>] <numbers...>, viewing call's buffers (built only now: the
  // views point into `keys` and `numbers`, which no longer grow).
  static void finish_words(detail::LeaseCallWords& call, std::string_view op) {
    call.numbers.insert(call.numbers.begin(), std::to_string(call.keys.size()));
    call.words.assign({call.numbers.front()});
    call.words.insert(call.words.end(), call.keys.begin(), call.keys.end());
    call.words.push_back(op);
    if (op != "count") call.words.push_back(call.member_text());
    call.words.insert(call.words.end(), call.numbers.begin() + 1, call.numbers.end());
  }

  // <n> key1..keyn <op> <member> [(max_in_flight lease_us) per key | lease_us per key] (acquire takes both,
  // renew the leases, release and count neither; count takes no member). Throws std::invalid_argument when
  // two slots name one scope.
  void build_call(std::span<const ConcurrencySlot> slots, std::string_view op, const PermitId& id,
                  detail::LeaseCallWords& call) const {
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
    if (op == "acquire" || op == "renew") {
      for (const ConcurrencySlot& slot : slots) {
        if (op == "acquire") call.numbers.push_back(std::to_string(slot.max_in_flight));
        call.numbers.push_back(std::to_string(lease_us(slot)));
      }
    }
    finish_words(call, op);
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
    const long long verdict = integer(0);
    if (verdict == -1) throw PermitIdInUse("airl: permit id already holds a lease in one of the scopes");
    if (verdict == 1) return ConcurrencyResult{.acquired = true, .location = LeaseLocation::store, .status = Status::allowed};
    const long long key = integer(1);
    if (key < 1 || static_cast<std::size_t>(key) > n) throw ReplyError("airl: concurrency script named no key");
    const long long retry_us = integer(3);
    return ConcurrencyResult{.denied_by = static_cast<std::size_t>(key - 1),
                             .retry_after = retry_us < 0 ? Decision::never : detail::ceil_to_ms(retry_us * 1000),
                             .status = Status::denied};
  }

  std::unique_ptr<State> state_;
};

static_assert(ConcurrencyStoragePolicy<RedisConcurrencyStorage>);

}  // namespace airl
