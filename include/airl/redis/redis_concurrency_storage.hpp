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
#include "detail/redis_backend.hpp"
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

// A release that could not be delivered (or an acquisition that failed after it was sent): retried with the
// storage's next calls, until `give_up` (by then the lease has run out on its own). Its words are built when
// it is sent: the queue moves entries, and views into a moved string are not kept.
struct PendingRelease {
  ScriptCall call;
  std::chrono::steady_clock::time_point give_up;
};

// The caps storage's own state: releases waiting for a retry, oldest first.
struct PendingReleases {
  Mutex mutex;
  std::vector<PendingRelease> queue AIRL_GUARDED_BY(mutex);
  std::atomic<std::size_t> count{0};  // queue.size(), read without the lock
};

}  // namespace detail

class RedisConcurrencyStorage
    : public detail::RedisBackend<InMemoryConcurrencyStorage<SteadyClock>, detail::PendingReleases> {
 public:
  // Most releases kept for a retry (beyond, a lease runs out on its own), and how many go with one call.
  static constexpr std::size_t max_pending_releases = 1024;
  static constexpr std::size_t releases_per_call = 16;

  // Connects lazily: does not fail when Redis is down. Throws std::invalid_argument on bad options
  // (as RedisStorage: empty key_prefix or one with '{' '}', pool_size 0, bad port, timeouts <= 0, ...).
  explicit RedisConcurrencyStorage(RedisOptions options = {})
      : RedisBackend(std::move(options), detail::concurrency_script, "the airl concurrency script",
                     "airl::RedisConcurrencyStorage") {}

  // Refuses a cap the script cannot enforce exactly: a max_in_flight above 2^53 (Lua numbers are doubles).
  // The limiter calls it for each cap at construction. Thread safety: safe. Throws std::invalid_argument.
  void validate_cap(const ConcurrencyCap& cap) const { check_max_in_flight(cap.max_in_flight, cap.name); }

  // Takes a lease for `id` in every slot or in none, in one script call on Redis's clock. Thread safety: safe.
  // When Redis fails (always degraded): fail_open admits (LeaseLocation::unconfirmed when the call had been
  // sent, so the permit still sends a release, else nowhere), local decides in process
  // (LeaseLocation::fallback), fail_closed refuses with Status::backend_unavailable. A call that was sent and
  // failed is also released later (with this storage's next calls), except under fail_open. Throws
  // std::invalid_argument on bad slots, a max_in_flight above 2^53, or two slots naming one scope;
  // airl::PermitIdInUse (nothing taken) when `id` is already in one of the scopes.
  ConcurrencyResult try_acquire(std::span<const ConcurrencySlot> slots, const PermitId& id) {
    validate(slots);
    detail::ScriptCall call;
    build_call(slots, "acquire", id, call);
    bool sent = false;
    try {
      const detail::Reply reply = run(call, &sent);
      return parse_acquire_reply(*reply, slots.size());
    } catch (const BackendError&) {
      // Sent: a stalled server may still run it and take a lease no permit owns. fail_open's permit
      // releases it; otherwise a release is queued now.
      if (sent && core().fallback.policy() != FailurePolicy::fail_open) defer_release(call, slots);
      ConcurrencyResult result = core().fallback.decide(
          [&] {  // nothing is known about what is in flight: admit, holding nothing confirmed
            return ConcurrencyResult{.acquired = true,
                                     .location = sent ? LeaseLocation::unconfirmed : LeaseLocation::nowhere,
                                     .status = Status::allowed};
          },
          [&] {
            return ConcurrencyResult{.retry_after = std::max(core().client.retry_hint(), std::chrono::milliseconds{1}),
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
      if (core().fallback.local() != nullptr) core().fallback.local()->release(slots, id, LeaseLocation::store);
      return;
    }
    detail::ScriptCall call;
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
      InMemoryConcurrencyStorage<SteadyClock>* local = core().fallback.local();
      return local != nullptr ? local->renew(slots, id, LeaseLocation::store) : RenewStatus::lost;
    }
    detail::ScriptCall call;
    build_call(slots, "renew", id, call);
    try {
      const detail::Reply reply = run(call);
      if (reply->type != REDIS_REPLY_INTEGER) throw ReplyError("airl: unexpected renew reply");
      return reply->integer == 1 ? RenewStatus::renewed : RenewStatus::lost;
    } catch (const BackendError&) {
      if (core().fallback.policy() == FailurePolicy::fail_closed) throw;
      return RenewStatus::assumed;
    }
  }

  // Live leases in `slot`'s scope now, in Redis. Thread safety: safe. Throws airl::BackendError when Redis
  // fails (no failure policy); std::invalid_argument on a bad slot.
  std::uint64_t in_flight(const ConcurrencySlot& slot) {
    const std::span<const ConcurrencySlot> one(&slot, 1);
    validate(one);
    detail::ScriptCall call;
    build_call(one, "count", PermitId{}, call);
    const detail::Reply reply = run(call);
    if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0) throw ReplyError("airl: unexpected count reply");
    return static_cast<std::uint64_t>(reply->integer);
  }

  // Releases waiting to be retried (failed releases, and acquisitions that failed after being sent).
  // Thread safety: safe. Throws nothing.
  std::size_t pending_releases() const noexcept { return usable() ? core().count.load(std::memory_order_relaxed) : 0; }

 private:
  void validate(std::span<const ConcurrencySlot> slots) const {
    detail::validate_slots(slots, "airl::RedisConcurrencyStorage");
    core();  // not moved from
    for (const ConcurrencySlot& slot : slots) check_max_in_flight(slot.max_in_flight, slot.bucket.name);
  }

  static void check_max_in_flight(std::uint64_t max_in_flight, std::string_view cap) {
    if (max_in_flight > max_exact_count) {
      throw std::invalid_argument("airl::RedisConcurrencyStorage: cap '" + std::string(cap) +
                                  "': max_in_flight must be at most 2^53");
    }
  }

  // Runs one script call, pipelined after up to releases_per_call releases waiting for a retry (one round
  // trip). `sent` (if given) is set once the calls are about to go out: a failure before that left nothing
  // behind in Redis. A waiting release Redis refuses is dropped; on a connection fault they wait again.
  detail::Reply run(const detail::ScriptCall& call, bool* sent = nullptr) {
    std::vector<detail::PendingRelease> retries = take_pending();
    if (retries.empty()) return core().client.eval(call.words, sent);
    std::vector<detail::ScriptWords> calls;
    calls.reserve(retries.size() + 1);
    const auto now = std::chrono::steady_clock::now();
    for (detail::PendingRelease& retry : retries) {
      if (retry.give_up <= now) continue;  // its lease has run out anyway
      retry.call.finish("release", {retry.call.member});
      calls.emplace_back(retry.call.words);
    }
    calls.emplace_back(call.words);
    std::vector<detail::Reply> replies;
    try {
      replies = core().client.eval_many(calls, sent);
    } catch (const BackendError&) {
      put_back(std::move(retries));
      throw;
    }
    core().client.check(*replies.back());
    return std::move(replies.back());
  }

  // Queues a release of `call`'s member in `call`'s keys, kept until every slot's lease (counted from now,
  // plus the time a call may take) has passed. A full queue drops it: that lease runs out on its own.
  void defer_release(const detail::ScriptCall& call, std::span<const ConcurrencySlot> slots) noexcept {
    try {
      std::chrono::milliseconds longest{0};
      for (const ConcurrencySlot& slot : slots) longest = std::max(longest, slot.lease);
      detail::PendingRelease entry;
      entry.call.keys = call.keys;
      entry.call.member = call.member;
      Core& core = this->core();
      entry.give_up = std::chrono::steady_clock::now() + longest + core.options.connect_timeout +
                      core.options.command_timeout;
      detail::Lock lock(core.mutex);
      if (core.queue.size() >= max_pending_releases) return;
      core.queue.push_back(std::move(entry));
      core.count.store(core.queue.size(), std::memory_order_relaxed);
    } catch (...) {  // std::bad_alloc: the lease runs out on its own
    }
  }

  // Takes up to releases_per_call waiting releases, oldest first.
  std::vector<detail::PendingRelease> take_pending() {
    std::vector<detail::PendingRelease> batch;
    Core& core = this->core();
    if (core.count.load(std::memory_order_relaxed) == 0) return batch;
    detail::Lock lock(core.mutex);
    const auto end = core.queue.begin() + static_cast<std::ptrdiff_t>(std::min(releases_per_call, core.queue.size()));
    batch.assign(std::make_move_iterator(core.queue.begin()), std::make_move_iterator(end));
    core.queue.erase(core.queue.begin(), end);
    core.count.store(core.queue.size(), std::memory_order_relaxed);
    return batch;
  }

  // Puts releases taken by take_pending() back at the front of the queue (as many as fit).
  void put_back(std::vector<detail::PendingRelease> batch) noexcept {
    const auto now = std::chrono::steady_clock::now();  // those run() skipped are given up, not queued again
    std::erase_if(batch, [&](const detail::PendingRelease& release) { return release.give_up <= now; });
    if (batch.empty()) return;
    try {
      Core& core = this->core();
      detail::Lock lock(core.mutex);
      const std::size_t room = max_pending_releases - std::min(max_pending_releases, core.queue.size());
      const auto end = batch.begin() + static_cast<std::ptrdiff_t>(std::min(room, batch.size()));
      core.queue.insert(core.queue.begin(), std::make_move_iterator(batch.begin()), std::make_move_iterator(end));
      core.count.store(core.queue.size(), std::memory_order_relaxed);
    } catch (...) {  // std::bad_alloc: those leases run out on their own
    }
  }

  // <n> key1..keyn <op> <member> [(max_in_flight lease_us) per key | lease_us per key] (acquire takes both,
  // renew the leases, release and count neither; count takes no member). Throws std::invalid_argument when
  // two slots name one scope.
  void build_call(std::span<const ConcurrencySlot> slots, std::string_view op, const PermitId& id,
                  detail::ScriptCall& call) const {
    const std::size_t n = slots.size();
    call.keys.resize(n);
    call.numbers.clear();
    const std::array<char, 32> hex = id.hex();
    call.member.assign(hex.data(), hex.size());
    for (std::size_t i = 0; i < n; ++i) {
      detail::redis_concurrency_key(call.keys[i], core().options.key_prefix, slots[i].bucket);
      for (std::size_t j = 0; j < i; ++j) {
        if (call.keys[j] == call.keys[i]) {
          throw std::invalid_argument("airl::RedisConcurrencyStorage: two slots name the same scope");
        }
      }
    }
    if (op == "acquire" || op == "renew") {
      for (const ConcurrencySlot& slot : slots) {
        if (op == "acquire") call.numbers.push_back(std::to_string(slot.max_in_flight));
        call.numbers.push_back(std::to_string(micros(slot.lease)));
      }
    }
    if (op == "count") {
      call.finish(op, {});
    } else {
      call.finish(op, {call.member});
    }
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

};

static_assert(ConcurrencyStoragePolicy<RedisConcurrencyStorage>);

}  // namespace airl
