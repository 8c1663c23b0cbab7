// SPDX-License-Identifier: MIT
#pragma once
// The embedded concurrency storage: every scope's live leases in this process, in the sharded store both
// in-memory storages share (detail/memory/sharded_store.hpp). A scope (one cap for one user, model,
// user+model, or everyone) is a LeaseSet; try_acquire() locks the shards of all its slots and takes a lease in
// every slot or in none. A scope whose last lease goes is erased at once, so memory follows the permits in
// flight; scopes left holding only run-out leases (holders that never released) are dropped when next touched
// or swept. No call uses thread-local buffers, so a permit destroyed at exit, after its thread's
// thread_locals are gone, still releases safely. Deadlines saturate at the clock's end instead of overflowing.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <type_traits>

#include "clock.hpp"
#include "concurrency_storage_policy.hpp"
#include "decision.hpp"
#include "detail/memory/lease_set.hpp"
#include "detail/memory/sharded_store.hpp"
#include "detail/moved_from.hpp"
#include "detail/ticks.hpp"
#include "detail/validate.hpp"

namespace airl {

struct InMemoryConcurrencyOptions {
  std::size_t shards = 16;   // independent locks; a power of two. More shards, less contention between scopes.
  std::size_t max_keys = 0;  // most scopes held at once; 0 = unbounded (refusals: Status::key_capacity).
};

template <ClockPolicy Clock = SteadyClock>
class InMemoryConcurrencyStorage {
  using Call = detail::StoreCall<detail::LeaseSet>;
  static constexpr const char* name = "airl::InMemoryConcurrencyStorage";

 public:
  // Throws std::invalid_argument when `shards` is not a power of two.
  explicit InMemoryConcurrencyStorage(InMemoryConcurrencyOptions options = {}, Clock clock = Clock{})
      : clock_(std::move(clock)), store_(options.shards, options.max_keys, "airl::InMemoryConcurrencyOptions") {}

  // Movable. Every member of a moved-from storage throws std::logic_error naming it (besides what it lists);
  // destroying it or assigning to it works.
  InMemoryConcurrencyStorage(InMemoryConcurrencyStorage&&) noexcept = default;
  InMemoryConcurrencyStorage& operator=(InMemoryConcurrencyStorage&&) noexcept = default;

  // Takes a lease for `id` in every slot, or in none: denied at the first slot (in order) whose scope holds
  // max_in_flight live leases. A lease runs until now + its slot's lease. Thread safety: safe from any thread.
  // Throws std::invalid_argument on bad slots (see detail::validate_slots) or two slots naming one scope;
  // std::bad_alloc (nothing taken); std::logic_error when moved from.
  ConcurrencyResult try_acquire(std::span<const ConcurrencySlot> slots, const PermitId& id) {
    require_usable("try_acquire");
    detail::validate_slots(slots, name);
    return try_acquire(slots, id, detail::validated);
  }
  // The same for slots known to be valid (ConcurrencyLimiter's: detail::Validated). Throws
  // std::invalid_argument on two slots naming one scope; std::bad_alloc; std::logic_error when moved from.
  ConcurrencyResult try_acquire(std::span<const ConcurrencySlot> slots, const PermitId& id, detail::Validated) {
    require_usable("try_acquire");
    return by_extent(slots.size(), [&](auto extent) { return acquire<decltype(extent)::value>(slots, id); });
  }

  // Drops `id`'s leases in the slots' scopes; a scope left empty is erased. Thread safety: safe, also from a
  // static object's destructor at exit. Throws std::invalid_argument on bad slots; std::logic_error when
  // moved from; std::bad_alloc only beyond 8 slots (nothing released).
  void release(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation where = LeaseLocation::store) {
    require_usable("release");
    detail::validate_slots(slots, name);
    release(slots, id, where, detail::validated);
  }
  // The same for slots known to be valid (ConcurrencyLimiter's). Throws std::logic_error when moved from;
  // std::bad_alloc only beyond 8 slots.
  void release(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation, detail::Validated) {
    require_usable("release");
    by_extent(slots.size(), [&](auto extent) { give_back<decltype(extent)::value>(slots, id); });
  }

  // If `id` holds a live lease in every slot, moves each to now + its slot's lease (renewed); otherwise drops
  // whatever `id` still holds (lost). Thread safety: safe, also at exit (as release()). Throws
  // std::invalid_argument on bad slots; std::logic_error when moved from; std::bad_alloc as release().
  RenewStatus renew(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation = LeaseLocation::store) {
    require_usable("renew");
    detail::validate_slots(slots, name);
    Call call(store_, slots.size(), key_of(slots), name);
    return call.run(read_clock(), [&](Call& locked) {
      const std::int64_t now = locked.now();
      bool all_live = true;
      for (std::size_t i = 0; i < slots.size() && all_live; ++i) {
        all_live = locked.state(i) != nullptr && locked.state(i)->holds(id, now);
      }
      if (all_live) locked.prepare_lists();  // may throw: before anything changed
      for (std::size_t i = 0; i < slots.size(); ++i) {
        detail::LeaseSet* leases = locked.state(i);
        if (leases == nullptr) continue;
        if (all_live) {
          leases->extend(id, deadline_after(now, slots[i]));
          locked.touch(i);
        } else {
          leases->remove(id);
          locked.erase_if_empty(i);
        }
      }
      return all_live ? RenewStatus::renewed : RenewStatus::lost;
    });
  }

  // Live leases in `slot`'s scope now. Thread safety: safe. Throws std::invalid_argument on a bad slot;
  // std::logic_error when moved from.
  std::uint64_t in_flight(const ConcurrencySlot& slot) {
    require_usable("in_flight");
    const std::span<const ConcurrencySlot> one(&slot, 1);
    detail::validate_slots(one, name);
    Call call(store_, 1, key_of(one), name);
    return call.run(read_clock(), [](Call& locked) -> std::uint64_t {
      const std::size_t live = locked.state(0) == nullptr ? 0 : locked.state(0)->size();
      locked.erase_if_empty(0);
      return live;
    });
  }

  // Drops the scopes whose leases have all run out, one shard at a time; returns how many. Thread safety:
  // safe (blocks each shard briefly). Throws std::logic_error when moved from.
  std::size_t purge_expired() {
    require_usable("purge_expired");
    return store_.purge_expired(read_clock());
  }

  // Scopes held now (including ones holding only run-out leases until they are next touched or swept).
  // Thread safety: safe. Throws only std::logic_error, when moved from.
  std::size_t active_keys() const {
    require_usable("active_keys");
    return store_.keys();
  }

 private:
  // Every public member calls this first: a moved-from storage (its store's shards went with the move) throws
  // std::logic_error naming `member` (detail/moved_from.hpp).
  void require_usable(const char* member) const {
    detail::require_not_moved_from(store_.usable(), name, member);
  }

  // Calls work(extent) with the store call's number of keys as a constant: one or two caps, the common cases,
  // compile it for exactly that many (with one, every loop over keys disappears); more, for any number.
  template <class Work>
  static decltype(auto) by_extent(std::size_t keys, Work&& work) {
    switch (keys) {
      case 1: return work(std::integral_constant<std::size_t, 1>{});
      case 2: return work(std::integral_constant<std::size_t, 2>{});
      default: return work(std::integral_constant<std::size_t, std::dynamic_extent>{});
    }
  }

  template <std::size_t Extent>
  ConcurrencyResult acquire(std::span<const ConcurrencySlot> slots, const PermitId& id) {
    using ThisCall = detail::StoreCall<detail::LeaseSet, Extent>;
    ThisCall call(store_, slots.size(), key_of(slots), name);
    ConcurrencyResult result = call.run(read_clock(), [&](ThisCall& locked) {
      const std::int64_t now = locked.now();
      for (std::size_t i = 0; i < locked.size(); ++i) {
        detail::LeaseSet* leases = locked.state(i);
        if ((leases == nullptr ? 0 : leases->size()) < slots[i].max_in_flight) continue;
        const std::chrono::milliseconds wait =
            slots[i].max_in_flight == 0 ? Decision::never : detail::ceil_to_ms(saturating_sub(leases->earliest(), now));
        for (std::size_t k = 0; k <= i; ++k) locked.erase_if_empty(k);
        return ConcurrencyResult{.acquired = false, .denied_by = i, .retry_after = wait, .status = Status::denied};
      }
      const bool taken = locked.admit(
          [&](std::size_t i, detail::LeaseSet& leases) {
            leases.reserve_one();
            leases.add(id, deadline_after(now, slots[i]));
          },
          [&id](std::size_t, detail::LeaseSet& leases) { leases.remove(id); });
      return ConcurrencyResult{.acquired = taken, .location = taken ? LeaseLocation::store : LeaseLocation::nowhere,
                               .status = taken ? Status::allowed : Status::key_capacity};
    }, ThisCall::Sweep::yes);
    if (call.short_of_keys() != 0) result.retry_after = store_.capacity_retry(call);
    return result;
  }

  // The clock is read only when needed: a release that empties its scope (a scope's only permit, the common
  // case) decides nothing by time, so the call runs at its shards' latest time; a scope left holding other
  // leases reads the clock to drop those that ran out, as before. That time is at or after the shards'
  // (never back, as sharded_store.hpp promises), but the shards' timelines are not moved to it: a release
  // only removes leases, so nothing later is decided on the older time.
  template <std::size_t Extent>
  void give_back(std::span<const ConcurrencySlot> slots, const PermitId& id) {
    using ThisCall = detail::StoreCall<detail::LeaseSet, Extent>;
    ThisCall call(store_, slots.size(), key_of(slots), name);
    const auto shards_time = [] { return std::numeric_limits<std::int64_t>::min(); };
    call.run(shards_time, [&](ThisCall& locked) {
      std::optional<std::int64_t> now;
      for (std::size_t i = 0; i < locked.size(); ++i) {
        detail::LeaseSet* leases = locked.state(i);
        if (leases == nullptr || !leases->remove(id)) continue;
        if (!leases->empty()) {
          if (!now) now = std::max(clock_.now().count(), locked.now());
          leases->live(*now);
        }
        locked.erase_if_empty(i);
      }
      return 0;
    });
  }

  auto read_clock() const noexcept {
    return [this] { return clock_.now().count(); };
  }

  static auto key_of(std::span<const ConcurrencySlot> slots) noexcept {
    return [slots](std::size_t i) { return detail::StoreKey{&slots[i].bucket, detail::to_ticks(slots[i].lease)}; };
  }

  // now + the slot's lease, saturated at the largest time (a lease > 0 never overflows into the past).
  static std::int64_t deadline_after(std::int64_t now, const ConcurrencySlot& slot) noexcept {
    return detail::saturating_add(now, detail::to_ticks(slot.lease));
  }

  // a - b, saturated (a clock may start anywhere, even below zero). Throws nothing.
  static std::int64_t saturating_sub(std::int64_t a, std::int64_t b) noexcept {
    constexpr std::int64_t latest = std::numeric_limits<std::int64_t>::max();
    constexpr std::int64_t earliest = std::numeric_limits<std::int64_t>::min();
    if (b < 0 && a > latest + b) return latest;
    if (b > 0 && a < earliest + b) return earliest;
    return a - b;
  }

  Clock clock_;
  detail::ShardedStore<detail::LeaseSet> store_;
};

static_assert(ConcurrencyStoragePolicy<InMemoryConcurrencyStorage<SteadyClock>>);
static_assert(ConcurrencyStoragePolicy<InMemoryConcurrencyStorage<ManualClock>>);

}  // namespace airl
