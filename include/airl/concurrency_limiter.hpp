// SPDX-License-Identifier: MIT
#pragma once
// ConcurrencyLimiter: caps on the requests in flight, per user, model, user+model or globally. Rate limits
// say how much work may start per window; GPU capacity is also about how much is running at once, and a
// long completion holds its slot for as long as it streams.
//
// try_acquire(user, model) takes one lease per cap, all-or-nothing, and returns a Permit that gives them back
// when it is destroyed. A lease counts until released or until it runs out, so a holder that crashed (on
// Redis: a process that died) stops counting on its own; a holder that works longer than the lease renews it.
// The storage does the bookkeeping (in_memory_concurrency_storage.hpp, redis/redis_concurrency_storage.hpp).
//
// Each permit has a 128-bit id: a base drawn per limiter (random bits and the process id) plus a counter.
// A process forked after the limiter was built draws its own base before its first permit, so pre-fork
// workers never repeat each other's ids (on Redis that would let one worker's lease overwrite, and its
// release free, another's).

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#ifndef AIRL_HAS_FORK  // POSIX: fork() exists, and permit ids must notice it
#if defined(__unix__) || defined(__APPLE__)
#define AIRL_HAS_FORK 1
#else
#define AIRL_HAS_FORK 0
#endif
#endif
#if AIRL_HAS_FORK
#include <pthread.h>
#include <unistd.h>
#endif

#include "concurrency_storage_policy.hpp"
#include "decision.hpp"
#include "detail/validate.hpp"
#include "errors.hpp"
#include "in_memory_concurrency_storage.hpp"
#include "permit.hpp"
#include "quota.hpp"
#include "tier.hpp"

namespace airl {

// ConcurrencyCap (a cap: name, scope, max_in_flight, lease) is in concurrency_storage_policy.hpp.

// A snapshot of a concurrency limiter's counters.
struct ConcurrencyMetrics {
  std::uint64_t acquired = 0;        // permits granted (degraded ones included)
  std::uint64_t denied = 0;          // try_acquire() calls refused because a cap was full
  std::uint64_t held = 0;            // permits granted and not yet released, lost or abandoned (in this process)
  std::uint64_t renewed = 0;         // renew() calls that extended the leases, or assumed them (an outage, or a
                                     // degraded permit holding no confirmed lease)
  std::uint64_t leases_lost = 0;     // renew() calls that found a lease already run out
  std::uint64_t degraded = 0;        // acquisitions and renewals a failure policy decided without the store
  std::uint64_t backend_errors = 0;  // store faults: thrown, absorbed by a failure policy, or swallowed on release
  std::uint64_t release_errors = 0;  // releases that failed in the store (swallowed; Redis retries them before
                                     // its next calls, else those leases run out)
};

namespace detail {

// How many times fork() has made this process a child (counted by a pthread_atfork handler, installed by
// watch_forks()). A permit id base drawn under an older count was inherited from the parent. Throws nothing.
inline std::atomic<std::uint64_t>& fork_generation() noexcept {
  static std::atomic<std::uint64_t> generation{0};
  return generation;
}

// Installs the fork counter's handler, once per process. Thread safety: safe. Throws nothing.
inline void watch_forks() noexcept {
#if AIRL_HAS_FORK
  static const bool installed = [] {
    return ::pthread_atfork(nullptr, nullptr, [] { fork_generation().fetch_add(1, std::memory_order_relaxed); }) == 0;
  }();
  (void)installed;
#endif
}

// This process's id, mixed into permit ids (two live processes on one host never share a base). Throws nothing.
inline std::uint32_t process_id() noexcept {
#if AIRL_HAS_FORK
  return static_cast<std::uint32_t>(::getpid());
#else
  return 0;
#endif
}

// Throws std::invalid_argument unless the caps are usable: at least one; names non-empty, at most
// max_id_length bytes, unique and not a reserved reason; a known scope; a lease in (0, max_window].
inline void validate_caps(const std::vector<ConcurrencyCap>& caps) {
  if (caps.empty()) refuse("a concurrency limiter needs at least one cap");
  for (std::size_t i = 0; i < caps.size(); ++i) {
    const ConcurrencyCap& cap = caps[i];
    validate_id(cap.name, "cap name");
    if (cap.name == key_capacity_reason || cap.name == backend_unavailable_reason) {
      refuse("cap name '" + cap.name + "' is reserved");
    }
    if (!known_scope(cap.scope)) refuse("cap '" + cap.name + "': unknown scope");
    if (cap.lease.count() <= 0) refuse("cap '" + cap.name + "': lease must be > 0");
    if (cap.lease > max_window) refuse("cap '" + cap.name + "': lease must be at most 366 days");
    for (std::size_t j = 0; j < i; ++j) {
      if (caps[j].name == cap.name) refuse("duplicate cap name '" + cap.name + "'");
    }
  }
}

}  // namespace detail

template <class Storage = InMemoryConcurrencyStorage<>>
class ConcurrencyLimiter {
  static_assert(ConcurrencyStoragePolicy<Storage>,
                "airl::ConcurrencyLimiter: Storage must satisfy airl::ConcurrencyStoragePolicy "
                "(see include/airl/concurrency_storage_policy.hpp)");

 public:
  // Throws std::invalid_argument on an empty cap list, an empty, over-long, reserved or duplicate cap name,
  // an unknown scope, a lease <= 0 or above max_window, or a cap the storage cannot enforce (its
  // validate_cap(): on Redis a max_in_flight above 2^53). May be built before fork(): each process draws its
  // own permit ids.
  explicit ConcurrencyLimiter(std::vector<ConcurrencyCap> caps, Storage storage = Storage{}) {
    detail::validate_caps(caps);
    if constexpr (ConcurrencyCapValidator<Storage>) {
      for (const ConcurrencyCap& cap : caps) storage.validate_cap(cap);
    }
    core_ = std::make_shared<Core>(std::move(caps), std::move(storage));
  }

  ConcurrencyLimiter(ConcurrencyLimiter&&) noexcept = default;
  ConcurrencyLimiter& operator=(ConcurrencyLimiter&&) noexcept = default;

  // Takes a lease in every cap's scope for (user, model), or in none: the permit is acquired only if every
  // scope has fewer than its cap in flight; a denied permit names the first full cap. Thread safety: safe
  // from any thread. Throws std::invalid_argument on an empty or over-long user or model; airl::BackendError
  // when the store fails and its failure policy does not absorb it (no permit holds anything; a call that
  // timed out may still take its lease when the store resumes, and the Redis storage then releases it
  // before its next calls); airl::PermitIdInUse if three fresh ids were all held already (never expected);
  // std::logic_error when the limiter was moved from.
  [[nodiscard]] Permit try_acquire(std::string_view user, std::string_view model) {
    detail::validate_request(user, model, 1, {});
    Core& core = require_usable();
    Permit permit;
    ConcurrencyResult result;
    for (int attempt = 1;; ++attempt) {
      permit.ticket_.id = core.next_id();
      try {
        result = core.counting_backend_errors([&] {
          return core.with_slots(user, model,
                                 [&](auto slots) { return core.storage.try_acquire(slots, permit.ticket_.id); });
        });
        break;
      } catch (const PermitIdInUse&) {
        if (attempt == max_id_attempts) throw;
        core.draw_id_base(/*forced=*/true);  // this base collides with another process's: leave it
      }
    }
    permit.degraded_ = result.degraded;
    if (result.degraded) {  // a failure policy decided: the store failed
      core.count(core.degraded_count);
      core.count(core.backend_error_count);
    }
    if (!result.acquired) {
      core.count(core.denied_count);
      permit.ticket_.id = PermitId{};
      permit.denied_by_ = result.denied_by < core.caps.size() ? result.denied_by : 0;
      permit.reason_ = core.caps[permit.denied_by_].name;
      permit.retry_after_ = result.retry_after;
      return permit;
    }
    // The ids are copied only once the leases are taken; should that fail, the leases are given back.
    permit.ticket_.location = result.location;
    try {
      permit.ticket_.user.assign(user);
      permit.ticket_.model.assign(model);
    } catch (...) {
      core.release_slots(user, model, permit.ticket_);
      throw;
    }
    permit.owner_ = core_;
    permit.acquired_.store(true, std::memory_order_relaxed);
    core.count(core.acquired_count);
    core.count(core.held_count);
    return permit;
  }

  // Live permits in `cap`'s scope for (user, model) now (the ids the scope does not use are ignored).
  // Thread safety: safe. Throws std::invalid_argument on an unknown cap or an invalid id; airl::BackendError
  // when the store fails.
  std::uint64_t in_flight(std::string_view cap, std::string_view user, std::string_view model) {
    detail::validate_request(user, model, 1, {});
    Core& core = require_usable();
    const ConcurrencyCap& found = core.cap_named(cap);
    const ConcurrencySlot slot{BucketRef{found.scope, found.name, user, model}, found.max_in_flight, found.lease};
    return core.counting_backend_errors([&] { return core.storage.in_flight(slot); });
  }

  // Drops run-out leases and empty scopes held in process; returns how many scopes went. Thread safety: safe.
  std::size_t purge_expired() {
    Core& core = require_usable();
    return core.counting_backend_errors([&] { return core.storage.purge_expired(); });
  }

  // A snapshot of the counters. Thread safety: safe. Throws nothing.
  ConcurrencyMetrics metrics() const noexcept {
    ConcurrencyMetrics metrics;
    if (!core_) return metrics;
    const auto read = [](const std::atomic<std::uint64_t>& counter) { return counter.load(std::memory_order_relaxed); };
    metrics.acquired = read(core_->acquired_count);
    metrics.denied = read(core_->denied_count);
    metrics.held = read(core_->held_count);
    metrics.renewed = read(core_->renewed_count);
    metrics.leases_lost = read(core_->lost_count);
    metrics.degraded = read(core_->degraded_count);
    metrics.backend_errors = read(core_->backend_error_count);
    metrics.release_errors = read(core_->release_error_count);
    return metrics;
  }

  // The caps, in declared order (Permit::denied_by() indexes them). Throws std::logic_error when moved from.
  const std::vector<ConcurrencyCap>& caps() const { return require_usable().caps; }
  // The storage, shared with the permits this limiter granted. Throws std::logic_error when moved from.
  Storage& storage() { return require_usable().storage; }
  const Storage& storage() const { return require_usable().storage; }

 private:
  using PermitTicket = detail::PermitTicket;

  // What the limiter and its permits share: the caps, the storage and the counters. Permits hold it by
  // shared_ptr, so a permit outliving its limiter still releases into the right store.
  struct Core final : detail::PermitOwner {
    Core(std::vector<ConcurrencyCap> c, Storage s) : caps(std::move(c)), storage(std::move(s)) {
      detail::watch_forks();
      draw_id_base(/*forced=*/true);
    }

    // A fresh id: the base plus a counter, unique in this process and, with overwhelming probability, across
    // processes. The base is drawn again first in a process forked since it was drawn (the parent's base
    // would repeat the parent's ids). Throws only what draw_id_base() throws.
    PermitId next_id() {
      if (detail::fork_generation().load(std::memory_order_acquire) != id_generation.load(std::memory_order_acquire)) {
        draw_id_base(/*forced=*/false);
      }
      return PermitId{id_high.load(std::memory_order_relaxed),
                      id_low.load(std::memory_order_relaxed) + id_counter.fetch_add(1, std::memory_order_relaxed)};
    }

    // Draws the id base: the high word's top half and the low word from std::random_device, the high word's
    // bottom half the process id. Unless `forced`, only when the process forked since the last draw.
    // Thread safety: safe. Throws what std::random_device throws (it cannot be opened).
    void draw_id_base(bool forced) {
      std::lock_guard lock(id_mutex);
      const std::uint64_t generation = detail::fork_generation().load(std::memory_order_acquire);
      if (!forced && generation == id_generation.load(std::memory_order_relaxed)) return;  // another thread did
      std::random_device device;
      const std::uint64_t high = (std::uint64_t{device()} << 32) | detail::process_id();
      const std::uint64_t low = (std::uint64_t{device()} << 32) ^ device();
      id_high.store(high, std::memory_order_relaxed);
      id_low.store(low, std::memory_order_relaxed);
      id_generation.store(generation, std::memory_order_release);
    }

    // Calls `work(slots)` with one slot per cap for (user, model): on the stack for up to 8 caps.
    template <class Work>
    decltype(auto) with_slots(std::string_view user, std::string_view model, Work&& work) const {
      const auto fill = [&](std::span<ConcurrencySlot> slots) {
        for (std::size_t i = 0; i < caps.size(); ++i) {
          slots[i] = ConcurrencySlot{BucketRef{caps[i].scope, caps[i].name, user, model}, caps[i].max_in_flight,
                                     caps[i].lease};
        }
        return std::span<const ConcurrencySlot>(slots.data(), caps.size());
      };
      if (caps.size() <= inline_caps) {
        std::array<ConcurrencySlot, inline_caps> slots;
        return work(fill(slots));
      }
      std::vector<ConcurrencySlot> slots(caps.size());
      return work(fill(slots));
    }

    template <class Call>
    decltype(auto) counting_backend_errors(Call&& call) {
      try {
        return call();
      } catch (const BackendError&) {
        count(backend_error_count);
        throw;
      }
    }

    void release_slots(std::string_view user, std::string_view model, const PermitTicket& ticket) noexcept {
      try {
        with_slots(user, model, [&](auto slots) { storage.release(slots, ticket.id, ticket.location); });
      } catch (const BackendError&) {
        count(backend_error_count);
        count(release_error_count);
      } catch (...) {
        count(release_error_count);  // e.g. std::bad_alloc building the call: the leases run out
      }
    }

    void release(const PermitTicket& ticket) noexcept override {
      if (ticket.location != LeaseLocation::nowhere) release_slots(ticket.user, ticket.model, ticket);
      uncount(held_count);
    }

    RenewStatus renew(const PermitTicket& ticket) override {
      if (ticket.location == LeaseLocation::nowhere || ticket.location == LeaseLocation::unconfirmed) {
        count(renewed_count);  // a degraded permit holds no confirmed lease: nothing to extend or lose
        return RenewStatus::assumed;
      }
      const RenewStatus status = counting_backend_errors([&] {
        return with_slots(ticket.user, ticket.model,
                          [&](auto slots) { return storage.renew(slots, ticket.id, ticket.location); });
      });
      switch (status) {
        case RenewStatus::renewed: count(renewed_count); break;
        case RenewStatus::assumed:
          count(renewed_count);
          count(degraded_count);
          count(backend_error_count);
          break;
        case RenewStatus::lost:
          count(lost_count);
          uncount(held_count);
          break;
      }
      return status;
    }

    void abandon(const PermitTicket&) noexcept override { uncount(held_count); }

    const ConcurrencyCap& cap_named(std::string_view name) const {
      for (const ConcurrencyCap& cap : caps) {
        if (cap.name == name) return cap;
      }
      throw std::invalid_argument("airl: no concurrency cap named '" + std::string(name) + "'");
    }

    static void count(std::atomic<std::uint64_t>& counter) noexcept { counter.fetch_add(1, std::memory_order_relaxed); }
    static void uncount(std::atomic<std::uint64_t>& counter) noexcept {
      counter.fetch_sub(1, std::memory_order_relaxed);
    }

    std::vector<ConcurrencyCap> caps;
    Storage storage;
    std::mutex id_mutex;  // serialises draws of the base
    std::atomic<std::uint64_t> id_high{0}, id_low{0}, id_counter{0};
    std::atomic<std::uint64_t> id_generation{0};  // the fork_generation() the base was drawn under
    std::atomic<std::uint64_t> acquired_count{0}, denied_count{0}, held_count{0}, renewed_count{0}, lost_count{0},
        degraded_count{0}, backend_error_count{0}, release_error_count{0};
  };

  static constexpr std::size_t inline_caps = 8;
  static constexpr int max_id_attempts = 3;

  // A moved-from limiter has no core: using it is a caller mistake, reported instead of crashing.
  Core& require_usable() const {
    if (!core_) throw std::logic_error("airl: concurrency limiter used after being moved from");
    return *core_;
  }

  std::shared_ptr<Core> core_;
};

}  // namespace airl
