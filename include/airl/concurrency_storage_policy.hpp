// SPDX-License-Identifier: MIT
#pragma once
// The storage-policy interface of concurrency caps, stated once as a C++20 concept, with its vocabulary.
//
// A ConcurrencyLimiter turns one acquisition into one ConcurrencySlot per cap (the scope's key, its cap and
// its lease) and hands them to try_acquire() together: the storage takes a lease on every slot, or on none,
// under one lock set (in memory) or one Lua script (Redis). Each lease names its permit by a PermitId and
// counts until it is released or its deadline passes, so a holder that crashed stops counting on its own.

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

#include "decision.hpp"
#include "quota.hpp"
#include "storage_policy.hpp"
#include "tier.hpp"

namespace airl {

// At most `max_in_flight` permits at once in each `scope` (per user, per model, per user+model, or one for
// everyone); each lease runs out `lease` after it is taken or last renewed. `name` is what Permit::reason()
// reports when this cap is full. max_in_flight 0 denies everything.
struct ConcurrencyCap {
  std::string name;
  Scope scope;
  std::uint64_t max_in_flight;
  std::chrono::milliseconds lease;
};

// The identity of one permit: 128 bits, unique across processes. A limiter draws a base (96 random bits from
// the operating system, and the process id) and adds a counter; a forked child draws its own base before its
// first permit, so workers forked from one limiter never share ids. A storage that can see another process's
// leases (Redis) also refuses an id it already holds (PermitIdInUse) instead of overwriting that lease.
struct PermitId {
  std::uint64_t high = 0;
  std::uint64_t low = 0;

  friend constexpr bool operator==(const PermitId&, const PermitId&) noexcept = default;

  // 32 lowercase hex digits, high word first: the member the Redis storage writes. Throws nothing.
  constexpr std::array<char, 32> hex() const noexcept {
    constexpr char digits[] = "0123456789abcdef";
    std::array<char, 32> text{};
    for (int i = 0; i < 16; ++i) {
      text[static_cast<std::size_t>(i)] = digits[(high >> (60 - 4 * i)) & 0xFu];
      text[static_cast<std::size_t>(16 + i)] = digits[(low >> (60 - 4 * i)) & 0xFu];
    }
    return text;
  }
};

// One cap's share of an acquisition: a lease in the scope named by `bucket` (its `name` is the cap's name)
// if fewer than `max_in_flight` leases are live there, lasting `lease` from the moment it is taken.
struct ConcurrencySlot {
  BucketRef bucket;
  std::uint64_t max_in_flight = 0;
  std::chrono::milliseconds lease{0};
};

// Where a permit's leases live, so release and renew go back to the same place.
enum class LeaseLocation : unsigned char {
  nowhere,   // nothing was recorded: a denial, or a failure policy that admitted without any store
  store,     // in the storage itself
  fallback,  // in the storage's in-process fallback (Redis, FailurePolicy::local, while Redis was down)
  unconfirmed,  // a failure policy admitted after a call that reached for the store and failed (a timeout): the
                // store may still take the lease when it resumes. Release sends a best-effort release; renew
                // is assumed, without the store.
};

// Thrown by a storage's try_acquire() when the permit id already holds a lease in one of the scopes (in any
// process): nothing was taken. The limiter then draws a fresh id base and tries again. Not a BackendError, so
// no failure policy absorbs it.
struct PermitIdInUse : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What try_acquire() decided. A refusal says why in `status` (decision.hpp): denied (a cap was full: `denied_by`
// indexes the first full slot, in declared order, and `retry_after` is when that slot's earliest lease runs
// out, rounded up to whole milliseconds: an upper bound, since holders usually release before their lease
// ends; Decision::never when its max_in_flight is 0), key_capacity (the in-memory store is full) or
// backend_unavailable (the store could not be reached under FailurePolicy::fail_closed). `degraded` means a
// failure policy decided without the store.
struct ConcurrencyResult {
  bool acquired = false;
  bool degraded = false;
  LeaseLocation location = LeaseLocation::nowhere;
  std::size_t denied_by = 0;
  std::chrono::milliseconds retry_after{0};
  Status status = Status::denied;  // Status::allowed when acquired
};

// What renew() found.
enum class RenewStatus {
  renewed,  // every lease was live and now runs for its full lease again, from now
  lost,     // some lease had run out or was gone: the permit holds nothing any more (its other leases are dropped)
  assumed,  // the store could not be reached and the failure policy assumes the leases still hold
};

// A concurrency storage policy. Every member must be safe to call from many threads at once.
//   try_acquire(slots, id)       all-or-nothing: a lease for `id` in every slot, or in none
//   release(slots, id, where)    drops `id`'s leases (those already gone are ignored)
//   renew(slots, id, where)      extends `id`'s leases to each slot's lease from now, if all are live
//   in_flight(slot)              live leases in the slot's scope now
//   purge_expired()              drops run-out leases and empty scopes everywhere; returns scopes dropped
//   active_keys()                scopes held in process now
// `where` is the location try_acquire() reported. Backend faults throw airl::BackendError (or are turned
// into results by the storage's failure policy); caller mistakes throw std::invalid_argument. release() and
// renew() must not use thread-local state: a permit may be destroyed at exit, after its thread's is gone.
// Optional: validate_cap(cap) const, called by the limiter's constructor for every cap, throws
// std::invalid_argument for a cap the storage cannot enforce (ConcurrencyCapValidator below).
template <class S>
concept ConcurrencyStoragePolicy =
    std::movable<S> && requires(S& storage, const S& const_storage, std::span<const ConcurrencySlot> slots,
                                const ConcurrencySlot& slot, const PermitId& id, LeaseLocation where) {
      { storage.try_acquire(slots, id) } -> std::same_as<ConcurrencyResult>;
      { storage.release(slots, id, where) } -> std::same_as<void>;
      { storage.renew(slots, id, where) } -> std::same_as<RenewStatus>;
      { storage.in_flight(slot) } -> std::same_as<std::uint64_t>;
      { storage.purge_expired() } -> std::same_as<std::size_t>;
      { const_storage.active_keys() } -> std::same_as<std::size_t>;
    };

// A storage that refuses some caps up front (e.g. Redis: max_in_flight above 2^53), so a limiter fails at
// construction instead of at every try_acquire().
template <class S>
concept ConcurrencyCapValidator = requires(const S& storage, const ConcurrencyCap& cap) { storage.validate_cap(cap); };


}  // namespace airl
