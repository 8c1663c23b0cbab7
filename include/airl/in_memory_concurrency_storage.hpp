// SPDX-License-Identifier: MIT
#pragma once
// The embedded concurrency storage: every scope's live leases in this process, behind sharded locks.
//
// A scope (one cap for one user, model, user+model, or everyone) is a LeaseSet in the shard its key hashes
// to (the binary-safe bucket key of detail/bucket_key.hpp, hashed with a per-store seed). try_acquire() locks
// the distinct shards of all its slots in ascending order (so two acquisitions never deadlock), reads the
// clock, and takes a lease in every slot or in none. A scope whose last lease goes is erased at once, so
// memory follows the permits in flight; scopes left holding only run-out leases (holders that never
// released) are dropped when next touched, or by purge_expired().
//
// No call uses thread-local state: a call's keys are encoded on its own stack (on the heap beyond 8 slots or
// 1 KiB of keys), so a permit destroyed at exit, after its thread's thread_locals are gone, still releases
// safely. Deadlines saturate at the clock's end instead of overflowing.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "clock.hpp"
#include "concurrency_storage_policy.hpp"
#include "decision.hpp"
#include "detail/bucket_key.hpp"
#include "detail/key_hash.hpp"
#include "detail/lease_set.hpp"
#include "detail/shard_mutex.hpp"

namespace airl {

struct InMemoryConcurrencyOptions {
  std::size_t shards = 16;  // independent locks; a power of two. More shards, less contention between scopes.
};

namespace detail {

// The seeded hash of an encoded scope key, for the shard choice and the shard's map.
struct SeededKeyHash {
  using is_transparent = void;
  std::uint64_t seed = 0;
  std::size_t operator()(std::string_view key) const noexcept {
    return static_cast<std::size_t>(hash_part(seed, key));
  }
};

// One shard: its lock and its scopes, on cache lines of their own.
struct alignas(64) LeaseShard {
  ShardMutex mutex;
  std::unordered_map<std::string, LeaseSet, SeededKeyHash, std::equal_to<>> scopes;
};

}  // namespace detail

template <ClockPolicy Clock = SteadyClock>
class InMemoryConcurrencyStorage {
 public:
  // Throws std::invalid_argument when `shards` is not a power of two.
  explicit InMemoryConcurrencyStorage(InMemoryConcurrencyOptions options = {}, Clock clock = Clock{}) {
    if (options.shards == 0 || (options.shards & (options.shards - 1)) != 0) {
      throw std::invalid_argument("airl::InMemoryConcurrencyOptions: shards must be a power of two");
    }
    state_ = std::make_unique<State>(options, std::move(clock));
  }

  InMemoryConcurrencyStorage(InMemoryConcurrencyStorage&&) noexcept = default;
  InMemoryConcurrencyStorage& operator=(InMemoryConcurrencyStorage&&) noexcept = default;

  // Takes a lease for `id` in every slot, or in none: denied at the first slot (in order) whose scope holds
  // max_in_flight live leases. A lease runs until now + its slot's lease. Thread safety: safe from any thread.
  // Throws std::invalid_argument on bad slots (see detail::validate_slots) or two slots naming one scope;
  // std::bad_alloc (nothing taken); std::logic_error when moved from.
  ConcurrencyResult try_acquire(std::span<const ConcurrencySlot> slots, const PermitId& id) {
    detail::validate_slots(slots, "airl::InMemoryConcurrencyStorage");
    require_usable();
    const Plan plan(*state_, slots);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (plan.key(i) == plan.key(j)) {
          throw std::invalid_argument("airl::InMemoryConcurrencyStorage: two slots name the same scope");
        }
      }
    }
    Locks locks(*state_, plan.locked());
    const std::int64_t now = state_->clock.now().count();

    for (std::size_t i = 0; i < slots.size(); ++i) {
      detail::LeaseShard& shard = state_->shards[plan.shard(i)];
      const auto found = shard.scopes.find(plan.key(i));
      const std::size_t live = found == shard.scopes.end() ? 0 : found->second.live(now);
      if (live < slots[i].max_in_flight) continue;
      ConcurrencyResult denied;
      denied.denied_by = i;
      denied.retry_after = slots[i].max_in_flight == 0
                               ? Decision::never
                               : std::chrono::ceil<std::chrono::milliseconds>(
                                     std::chrono::nanoseconds{saturating_sub(found->second.earliest(), now)});
      for (std::size_t k = 0; k <= i; ++k) erase_if_empty(plan.shard(k), plan.key(k));
      return denied;
    }

    // Every slot has room. Make each scope and room for its lease first (what can throw), then add them all.
    std::array<detail::LeaseSet*, inline_slots> inline_sets{};
    std::vector<detail::LeaseSet*> heap_sets(slots.size() > inline_slots ? slots.size() : 0);
    const std::span<detail::LeaseSet*> sets =
        slots.size() > inline_slots ? std::span(heap_sets) : std::span(inline_sets).first(slots.size());
    try {
      for (std::size_t i = 0; i < slots.size(); ++i) {
        auto& scopes = state_->shards[plan.shard(i)].scopes;
        auto found = scopes.find(plan.key(i));
        if (found == scopes.end()) {
          found = scopes.emplace(std::piecewise_construct, std::forward_as_tuple(plan.key(i)), std::forward_as_tuple())
                      .first;  // absent (just looked up): the key is built in the node, once
          state_->keys.fetch_add(1, std::memory_order_relaxed);
        }
        sets[i] = &found->second;
        sets[i]->reserve_one();
      }
    } catch (...) {
      for (std::size_t i = 0; i < slots.size(); ++i) erase_if_empty(plan.shard(i), plan.key(i));
      throw;
    }
    for (std::size_t i = 0; i < slots.size(); ++i) sets[i]->add(id, deadline_after(now, slots[i]));
    ConcurrencyResult acquired;
    acquired.acquired = true;
    acquired.location = LeaseLocation::store;
    return acquired;
  }

  // Drops `id`'s leases in the slots' scopes; a scope left empty is erased. Thread safety: safe, also from a
  // static object's destructor at exit. Throws std::invalid_argument on bad slots; std::logic_error when
  // moved from; std::bad_alloc only beyond 8 slots or 1 KiB of keys (nothing released).
  void release(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation = LeaseLocation::store) {
    detail::validate_slots(slots, "airl::InMemoryConcurrencyStorage");
    require_usable();
    const Plan plan(*state_, slots);
    Locks locks(*state_, plan.locked());
    for (std::size_t i = 0; i < slots.size(); ++i) {
      auto& scopes = state_->shards[plan.shard(i)].scopes;
      const auto found = scopes.find(plan.key(i));
      if (found != scopes.end() && found->second.remove(id)) erase_if_empty(plan.shard(i), plan.key(i));
    }
  }

  // If `id` holds a live lease in every slot, moves each to now + its slot's lease (renewed); otherwise drops
  // whatever `id` still holds (lost). Thread safety: safe, also at exit (as release()). Throws
  // std::invalid_argument on bad slots; std::logic_error when moved from; std::bad_alloc as release().
  RenewStatus renew(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation = LeaseLocation::store) {
    detail::validate_slots(slots, "airl::InMemoryConcurrencyStorage");
    require_usable();
    const Plan plan(*state_, slots);
    Locks locks(*state_, plan.locked());
    const std::int64_t now = state_->clock.now().count();
    bool all_live = true;
    for (std::size_t i = 0; i < slots.size() && all_live; ++i) {
      const auto& scopes = state_->shards[plan.shard(i)].scopes;
      const auto found = scopes.find(plan.key(i));
      all_live = found != scopes.end() && found->second.holds(id, now);
    }
    for (std::size_t i = 0; i < slots.size(); ++i) {
      auto& scopes = state_->shards[plan.shard(i)].scopes;
      const auto found = scopes.find(plan.key(i));
      if (found == scopes.end()) continue;
      if (all_live) {
        found->second.extend(id, deadline_after(now, slots[i]));
      } else {
        found->second.remove(id);
        found->second.live(now);
        erase_if_empty(plan.shard(i), plan.key(i));
      }
    }
    return all_live ? RenewStatus::renewed : RenewStatus::lost;
  }

  // Live leases in `slot`'s scope now. Thread safety: safe. Throws std::invalid_argument on a bad slot;
  // std::logic_error when moved from.
  std::uint64_t in_flight(const ConcurrencySlot& slot) {
    const std::span<const ConcurrencySlot> one(&slot, 1);
    detail::validate_slots(one, "airl::InMemoryConcurrencyStorage");
    require_usable();
    const Plan plan(*state_, one);
    Locks locks(*state_, plan.locked());
    auto& scopes = state_->shards[plan.shard(0)].scopes;
    const auto found = scopes.find(plan.key(0));
    if (found == scopes.end()) return 0;
    const std::size_t live = found->second.live(state_->clock.now().count());
    erase_if_empty(plan.shard(0), plan.key(0));
    return live;
  }

  // Drops run-out leases in every scope, one shard at a time, and erases the scopes left empty; returns how
  // many scopes it erased. Thread safety: safe (blocks each shard briefly). Throws std::logic_error when moved from.
  std::size_t purge_expired() {
    require_usable();
    std::size_t erased = 0;
    for (std::size_t s = 0; s < state_->options.shards; ++s) {
      detail::LeaseShard& shard = state_->shards[s];
      std::lock_guard lock(shard.mutex);
      const std::int64_t now = state_->clock.now().count();
      for (auto at = shard.scopes.begin(); at != shard.scopes.end();) {
        if (at->second.live(now) == 0) {
          at = shard.scopes.erase(at);
          ++erased;
        } else {
          ++at;
        }
      }
    }
    state_->keys.fetch_sub(erased, std::memory_order_relaxed);
    return erased;
  }

  // Scopes held now (including ones holding only run-out leases until they are next touched or purged).
  // Thread safety: safe. Throws nothing.
  std::size_t active_keys() const noexcept { return state_ ? state_->keys.load(std::memory_order_relaxed) : 0; }

 private:
  static constexpr std::size_t inline_slots = 8;

  using Scopes = decltype(detail::LeaseShard::scopes);

  struct State {
    State(InMemoryConcurrencyOptions opts, Clock c)
        : options(opts), clock(std::move(c)), shards(std::make_unique<detail::LeaseShard[]>(opts.shards)) {
      seed = detail::finish_hash(reinterpret_cast<std::uintptr_t>(shards.get()) ^
                                 static_cast<std::uint64_t>(SteadyClock{}.now().count()));
      for (std::size_t i = 0; i < opts.shards; ++i) {
        shards[i].scopes = Scopes(std::size_t{0}, detail::SeededKeyHash{seed});
      }
    }
    InMemoryConcurrencyOptions options;
    Clock clock;
    std::unique_ptr<detail::LeaseShard[]> shards;
    std::uint64_t seed = 0;
    std::atomic<std::size_t> keys{0};
  };

  // Where one call's slots live: their encoded keys, their shards, and the distinct shards in lock order.
  // Built on the caller's stack for up to inline_slots slots and inline_key_bytes of keys (the heap beyond),
  // never in thread-local buffers. Refers to itself: neither copied nor moved.
  class Plan {
   public:
    // Throws std::bad_alloc only beyond the inline sizes.
    Plan(const State& state, std::span<const ConcurrencySlot> slots) : size_(slots.size()) {
      if (size_ > inline_slots) {
        heap_numbers_.reset(new std::size_t[3 * size_]);
        numbers_ = heap_numbers_.get();
      }
      std::size_t* const ends = numbers_ + 2 * size_;  // key i is text_[end of key i-1, ends[i])
      std::size_t bytes = 0;
      for (std::size_t i = 0; i < size_; ++i) {
        bytes += detail::key_size(slots[i].bucket);
        ends[i] = bytes;
      }
      if (bytes > inline_text_.size()) {
        heap_text_.reset(new char[bytes]);
        text_ = heap_text_.get();
      }
      std::size_t* const shard_of = numbers_;
      std::size_t* const locked = numbers_ + size_;
      const detail::SeededKeyHash hash{state.seed};
      for (std::size_t i = 0; i < size_; ++i) {
        detail::write_key(text_ + start(i), slots[i].bucket);
        // The top bits pick the shard; the map uses the whole hash (reduced modulo its bucket count).
        shard_of[i] = static_cast<std::size_t>(hash(key(i)) >> 40) & (state.options.shards - 1);
        locked[i] = shard_of[i];
      }
      std::sort(locked, locked + size_);
      distinct_ = static_cast<std::size_t>(std::unique(locked, locked + size_) - locked);
    }
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;

    std::string_view key(std::size_t i) const noexcept {
      return {text_ + start(i), numbers_[2 * size_ + i] - start(i)};
    }
    std::size_t shard(std::size_t i) const noexcept { return numbers_[i]; }
    std::span<const std::size_t> locked() const noexcept { return {numbers_ + size_, distinct_}; }

   private:
    static constexpr std::size_t inline_key_bytes = 1024;

    std::size_t start(std::size_t i) const noexcept { return i == 0 ? 0 : numbers_[2 * size_ + i - 1]; }

    std::size_t size_;
    std::size_t distinct_ = 0;
    // Left uninitialised (each element is written before it is read): shard_of, locked, key ends; key text.
    std::array<std::size_t, 3 * inline_slots> inline_numbers_;
    std::array<char, inline_key_bytes> inline_text_;
    std::size_t* numbers_ = inline_numbers_.data();
    char* text_ = inline_text_.data();
    std::unique_ptr<std::size_t[]> heap_numbers_;
    std::unique_ptr<char[]> heap_text_;
  };

  // Locks the planned shards in ascending order; unlocks in reverse.
  class Locks {
   public:
    Locks(State& state, std::span<const std::size_t> shards) noexcept : state_(state), shards_(shards) {
      for (const std::size_t s : shards_) state_.shards[s].mutex.lock();
    }
    ~Locks() {
      for (std::size_t i = shards_.size(); i > 0; --i) state_.shards[shards_[i - 1]].mutex.unlock();
    }
    Locks(const Locks&) = delete;
    Locks& operator=(const Locks&) = delete;

   private:
    State& state_;
    std::span<const std::size_t> shards_;
  };

  void require_usable() const {
    if (!state_) throw std::logic_error("airl::InMemoryConcurrencyStorage: used after being moved from");
  }

  static std::int64_t lease_ns(const ConcurrencySlot& slot) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(slot.lease).count();
  }

  // now + the slot's lease, saturated at the largest time (a lease > 0 never overflows into the past).
  static std::int64_t deadline_after(std::int64_t now, const ConcurrencySlot& slot) noexcept {
    constexpr std::int64_t latest = std::numeric_limits<std::int64_t>::max();
    const std::int64_t lease = lease_ns(slot);
    return now > latest - lease ? latest : now + lease;
  }

  // a - b, saturated (a clock may start anywhere, even below zero). Throws nothing.
  static std::int64_t saturating_sub(std::int64_t a, std::int64_t b) noexcept {
    constexpr std::int64_t latest = std::numeric_limits<std::int64_t>::max();
    constexpr std::int64_t earliest = std::numeric_limits<std::int64_t>::min();
    if (b < 0 && a > latest + b) return latest;
    if (b > 0 && a < earliest + b) return earliest;
    return a - b;
  }

  // Erases the scope `key` of shard `s` if it holds no lease. Call with the shard locked. Throws nothing.
  void erase_if_empty(std::size_t s, std::string_view key) noexcept {
    auto& scopes = state_->shards[s].scopes;
    const auto found = scopes.find(key);
    if (found != scopes.end() && found->second.empty()) {
      scopes.erase(found);
      state_->keys.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  std::unique_ptr<State> state_;
};

static_assert(ConcurrencyStoragePolicy<InMemoryConcurrencyStorage<SteadyClock>>);
static_assert(ConcurrencyStoragePolicy<InMemoryConcurrencyStorage<ManualClock>>);

}  // namespace airl
