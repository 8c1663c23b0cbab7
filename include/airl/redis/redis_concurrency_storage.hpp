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
#include <optional>
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
#include "topology_metrics.hpp"

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
  // Movable: every member of a moved-from storage throws std::logic_error naming it.
  explicit RedisConcurrencyStorage(RedisOptions options = {})
      : RedisBackend(std::move(options), detail::concurrency_script, "the airl concurrency script",
                     "airl::RedisConcurrencyStorage") {}

  // Refuses a cap the script cannot enforce exactly: a max_in_flight above 2^53 (Lua numbers are doubles).
  // The limiter calls it for each cap at construction. Thread safety: safe. Throws std::invalid_argument.
  void validate_cap(const ConcurrencyCap& cap) const {
    core("validate_cap");
    check_max_in_flight(cap.max_in_flight, cap.name);
  }

  // Takes a lease for `id` in every slot or in none, in one script call on Redis's clock. Thread safety: safe.
  // When Redis fails (always degraded): fail_open admits (LeaseLocation::unconfirmed when the call had been
  // sent, so the permit still sends a release, else nowhere), local decides in process
  // (LeaseLocation::fallback), fail_closed refuses with Status::backend_unavailable. A call that was sent and
  // failed is also released later (with this storage's next calls), except under fail_open. Throws
  // std::invalid_argument on bad slots, a max_in_flight above 2^53, or two slots naming one scope;
  // airl::PermitIdInUse (nothing taken) when `id` is already in one of the scopes.
  ConcurrencyResult try_acquire(std::span<const ConcurrencySlot> slots, const PermitId& id) {
    core("try_acquire");
    validate(slots);
    std::vector<Part> parts = split(slots, "acquire", id);
    std::vector<detail::Outcome> outcomes = run(parts);
    std::vector<long long> verdict(parts.size(), -2);  // per part: 1 taken, 0 full, -1 id in use, -2 failed
    std::optional<ConcurrencyResult> denial;
    for (std::size_t p = 0; p < parts.size(); ++p) {
      try {
        const detail::Reply reply = outcomes[p].take();
        core().client.check(*reply);
        const ConcurrencyResult part = parse_acquire_reply(*reply, parts[p].slots.size(), verdict[p]);
        if (verdict[p] == 0 && (!denial || parts[p].slots[part.denied_by] < denial->denied_by)) {
          denial = part;
          denial->denied_by = parts[p].slots[part.denied_by];  // the first full cap of the whole request
        }
      } catch (const BackendError& error) {
        core().client.record(error);  // what last_backend_error() names as the cause of a degraded permit
        verdict[p] = -2;
      }
    }
    const bool whole = std::all_of(verdict.begin(), verdict.end(), [](long long v) { return v == 1; });
    if (whole) return ConcurrencyResult{.acquired = true, .location = LeaseLocation::store, .status = Status::allowed};
    // Across slots, the parts that took a lease give it back: all or nothing, as on one server.
    std::vector<std::size_t> taken;
    for (std::size_t p = 0; p < parts.size(); ++p) {
      if (verdict[p] == 1) taken.push_back(p);
    }
    release_parts(parts, taken);
    // A part that failed after being sent may still take a lease on a stalled server, which no permit owns
    // unless fail_open's permit (which releases everywhere) is what comes back: otherwise a release is queued.
    const bool in_use = std::count(verdict.begin(), verdict.end(), -1) > 0;
    const bool answered = in_use || denial.has_value();  // a part's refusal stands, whatever others did
    bool sent = false;
    for (std::size_t p = 0; p < parts.size(); ++p) {
      if (verdict[p] != -2 || !outcomes[p].sent) continue;
      sent = true;
      if (answered || core().fallback.policy() != FailurePolicy::fail_open) defer_release(parts[p]);
    }
    if (in_use) throw PermitIdInUse("airl: permit id already holds a lease in one of the scopes");
    if (denial) return *denial;
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

  // Drops `id`'s leases where try_acquire() put them (for unconfirmed, in Redis, in case the acquisition
  // ran). Thread safety: safe, also at exit. Throws airl::BackendError when Redis fails (the limiter swallows
  // it), after queueing the release for a retry with the next calls; std::invalid_argument on bad slots.
  void release(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation where) {
    core("release");
    validate(slots);
    if (where == LeaseLocation::nowhere) return;
    if (where == LeaseLocation::fallback) {
      if (core().fallback.local() != nullptr) core().fallback.local()->release(slots, id, LeaseLocation::store);
      return;
    }
    std::vector<Part> parts = split(slots, "release", id);
    std::vector<std::size_t> all(parts.size());
    for (std::size_t p = 0; p < parts.size(); ++p) all[p] = p;
    if (std::exception_ptr failed = release_parts(parts, all)) std::rethrow_exception(failed);
  }

  // Extends `id`'s leases if all are live (renewed), else drops what is left (lost). Thread safety: safe.
  // When Redis fails: fail_open and local answer assumed (the leases are not known to be lost), fail_closed
  // throws the airl::BackendError. A permit with no confirmed lease (nowhere, unconfirmed) is assumed
  // without asking Redis. Throws std::invalid_argument on bad slots.
  RenewStatus renew(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation where) {
    core("renew");
    validate(slots);
    if (where == LeaseLocation::nowhere || where == LeaseLocation::unconfirmed) return RenewStatus::assumed;
    if (where == LeaseLocation::fallback) {
      InMemoryConcurrencyStorage<SteadyClock>* local = core().fallback.local();
      return local != nullptr ? local->renew(slots, id, LeaseLocation::store) : RenewStatus::lost;
    }
    std::vector<Part> parts = split(slots, "renew", id);
    std::vector<detail::Outcome> outcomes = run(parts);
    std::vector<std::size_t> renewed;
    bool lost = false;
    std::exception_ptr failed;
    for (std::size_t p = 0; p < parts.size(); ++p) {
      try {
        const detail::Reply reply = outcomes[p].take();
        core().client.check(*reply);
        if (reply->type != REDIS_REPLY_INTEGER || (reply->integer != 0 && reply->integer != 1)) {
          throw ReplyError("airl: unexpected renew reply");
        }
        if (reply->integer == 1) renewed.push_back(p);
        else lost = true;
      } catch (const BackendError& error) {
        core().client.record(error);
        failed = std::current_exception();
      }
    }
    if (lost) {  // all or nothing: a lease lost in one slot gives up the others too
      release_parts(parts, renewed);
      return RenewStatus::lost;
    }
    if (!failed) return RenewStatus::renewed;
    if (core().fallback.policy() == FailurePolicy::fail_closed) std::rethrow_exception(failed);
    return RenewStatus::assumed;
  }

  // Live leases in `slot`'s scope now, in Redis. Thread safety: safe. Throws airl::BackendError when Redis
  // fails (no failure policy); std::invalid_argument on a bad slot.
  std::uint64_t in_flight(const ConcurrencySlot& slot) {
    core("in_flight");
    const std::span<const ConcurrencySlot> one(&slot, 1);
    validate(one);
    std::vector<Part> parts = split(one, "count", PermitId{});
    const detail::Reply reply = run(parts)[0].take();
    core().client.check(*reply);
    if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0) throw ReplyError("airl: unexpected count reply");
    return static_cast<std::uint64_t>(reply->integer);
  }

  // How the storage followed its servers (redirects, slot map reads, Sentinel rediscoveries). Thread
  // safety: safe. Throws std::logic_error when moved from.
  RedisTopologyMetrics topology_metrics() const { return core("topology_metrics").client.topology_metrics(); }

  // Releases waiting to be retried (failed releases, and acquisitions that failed after being sent).
  // Thread safety: safe. Throws only std::logic_error, when moved from.
  std::size_t pending_releases() const { return core("pending_releases").count.load(std::memory_order_relaxed); }

 private:
  friend struct detail::ReplyDecoderAccess;  // tests/fuzz/redis_reply_fuzz.cpp: parse_acquire_reply

  void validate(std::span<const ConcurrencySlot> slots) const {
    detail::validate_slots(slots, "airl::RedisConcurrencyStorage");
    core();  // not moved from
    for (const ConcurrencySlot& slot : slots) check_max_in_flight(slot.max_in_flight, slot.bucket.name);
  }

  static void check_max_in_flight(std::uint64_t max_in_flight, std::string_view cap) {
    if (max_in_flight > max_exact_count) {
      throw std::invalid_argument("airl::RedisConcurrencyStorage: cap '" + detail::echo(cap) +
                                  "': max_in_flight must be at most 2^53");
    }
  }

  // The slots of one call that share a Redis Cluster slot (all of them, off a cluster), and its script call.
  struct Part {
    std::vector<std::size_t> slots;  // indices into the call's slots
    detail::ScriptCall call;
    std::chrono::milliseconds longest_lease{0};
  };

  // One script call of `op` per cluster slot, each built: <n> key1..keyn <op> <member> [(max_in_flight
  // lease_us) per key | lease_us per key] (acquire takes both, renew the leases, release and count neither;
  // count takes no member). Throws std::invalid_argument when two slots name one scope.
  std::vector<Part> split(std::span<const ConcurrencySlot> slots, std::string_view op, const PermitId& id) const {
    detail::SlotParts<Part> split_parts;
    std::string key;
    for (std::size_t i = 0; i < slots.size(); ++i) {
      detail::redis_concurrency_key(key, core().options.key_prefix, slots[i].bucket);
      Part& part = split_parts.of(core().client.slot_of(key));
      if (std::find(part.call.keys.begin(), part.call.keys.end(), key) != part.call.keys.end()) {
        throw std::invalid_argument("airl::RedisConcurrencyStorage: two slots name the same scope");
      }
      part.slots.push_back(i);
      part.call.keys.push_back(key);
      part.longest_lease = std::max(part.longest_lease, slots[i].lease);
      if (op == "acquire") part.call.numbers.push_back(std::to_string(slots[i].max_in_flight));
      if (op == "acquire" || op == "renew") part.call.numbers.push_back(std::to_string(micros(slots[i].lease)));
    }
    std::vector<Part> parts = std::move(split_parts).take();
    const std::array<char, 32> hex = id.hex();
    for (Part& part : parts) {
      part.call.member.assign(hex.data(), hex.size());
      if (op == "count") part.call.finish(op, {});
      else part.call.finish(op, {part.call.member});
    }
    return parts;
  }

  // Runs the parts' calls in one run (each on its server, in parallel), after up to releases_per_call
  // releases waiting for a retry; returns the parts' outcomes. A waiting release Redis refuses is dropped;
  // one whose server fails waits again. Throws std::bad_alloc only.
  std::vector<detail::Outcome> run(std::vector<Part>& parts) {
    std::vector<detail::PendingRelease> retries = take_pending();
    std::vector<detail::Command> commands;
    const auto now = std::chrono::steady_clock::now();
    for (detail::PendingRelease& retry : retries) {
      if (retry.give_up <= now) continue;  // its lease has run out anyway
      retry.call.finish("release", {retry.call.member});
      commands.push_back(detail::Command{retry.call.words, retry.call.keys.front()});
    }
    const std::size_t first = commands.size();
    for (const Part& part : parts) commands.push_back(detail::Command{part.call.words, part.call.keys.front()});
    std::vector<detail::Outcome> outcomes = core().client.run(commands);
    std::vector<detail::PendingRelease> again;
    for (std::size_t r = 0, c = 0; r < retries.size(); ++r) {
      if (retries[r].give_up <= now) continue;
      if (outcomes[c++].error) again.push_back(std::move(retries[r]));
    }
    put_back(std::move(again));
    outcomes.erase(outcomes.begin(), outcomes.begin() + static_cast<std::ptrdiff_t>(first));
    return outcomes;
  }

  // Releases the id in parts[i] for each i of `which`, in one run; a part whose server fails is queued for a
  // retry. Returns the first fault (nothing when all answered). Throws std::bad_alloc only.
  std::exception_ptr release_parts(std::vector<Part>& parts, std::span<const std::size_t> which) {
    if (which.empty()) return nullptr;
    std::vector<Part> releases;
    for (const std::size_t p : which) {
      Part& release = releases.emplace_back();
      release.slots = parts[p].slots;
      release.longest_lease = parts[p].longest_lease;
      release.call.keys = parts[p].call.keys;
      release.call.member = parts[p].call.member;
    }
    // Words view their call's strings: built once the vector holding them no longer grows.
    for (Part& release : releases) release.call.finish("release", {release.call.member});
    std::vector<detail::Outcome> outcomes = run(releases);
    std::exception_ptr first;
    for (std::size_t r = 0; r < releases.size(); ++r) {
      if (!outcomes[r].error) continue;
      defer_release(releases[r]);
      if (!first) first = outcomes[r].error;
    }
    return first;
  }

  // Queues a release of `part`'s member in its keys, kept until the longest lease (counted from now, plus
  // the time a call may take) has passed. A full queue drops it: that lease runs out on its own.
  void defer_release(const Part& part) noexcept {
    try {
      Core& core = this->core();
      detail::PendingRelease entry;
      entry.call.keys = part.call.keys;
      entry.call.member = part.call.member;
      entry.give_up = std::chrono::steady_clock::now() + part.longest_lease + core.options.connect_timeout +
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

  // One part's acquire reply; `verdict` gets 1 (taken), 0 (a cap full: the result says which, as an index
  // among the part's slots) or -1 (the id holds a lease already). Throws ReplyError on a malformed reply.
  static ConcurrencyResult parse_acquire_reply(const redisReply& reply, std::size_t n, long long& verdict) {
    const auto integer = [&](std::size_t i) {
      if (i >= reply.elements || reply.element[i]->type != REDIS_REPLY_INTEGER) {
        throw ReplyError("airl: unexpected reply from the airl concurrency script");
      }
      return reply.element[i]->integer;
    };
    if (reply.type != REDIS_REPLY_ARRAY || reply.elements == 0) {
      throw ReplyError("airl: unexpected reply from the airl concurrency script");
    }
    verdict = integer(0);
    // {1} taken, {-1} id in use, {0, key, live, retry_us} full: any other shape is not the script's.
    if ((verdict == -1 || verdict == 1) && reply.elements == 1) return {};
    if (verdict != 0 || reply.elements != 4) throw ReplyError("airl: unexpected reply from the airl concurrency script");
    const long long key = integer(1);
    if (key < 1 || static_cast<std::size_t>(key) > n) throw ReplyError("airl: concurrency script named no key");
    const long long retry_us = integer(3);
    // -1 is "never" (a cap of 0); any other time is at most a lease (366 days): none wraps scaled to ns.
    if (retry_us < -1 || retry_us > static_cast<long long>(max_exact_count)) {
      throw ReplyError("airl: unexpected reply from the airl concurrency script");
    }
    return ConcurrencyResult{.denied_by = static_cast<std::size_t>(key - 1),
                             .retry_after = retry_us < 0 ? Decision::never : detail::ceil_to_ms(retry_us * 1000),
                             .status = Status::denied};
  }
};

static_assert(ConcurrencyStoragePolicy<RedisConcurrencyStorage>);

}  // namespace airl
