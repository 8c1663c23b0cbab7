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

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
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
    Plan& plan = plan_for(slots);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (plan.keys[i] == plan.keys[j]) {
          throw std::invalid_argument("airl::InMemoryConcurrencyStorage: two slots name the same scope");
        }
      }
    }
    Locks locks(*state_, plan.locked);
    const std::int64_t now = state_->clock.now().count();

    for (std::size_t i = 0; i < slots.size(); ++i) {
      detail::LeaseShard& shard = state_->shards[plan.shard_of[i]];
      const auto found = shard.scopes.find(std::string_view(plan.keys[i]));
      const std::size_t live = found == shard.scopes.end() ? 0 : found->second.live(now);
      if (live < slots[i].max_in_flight) continue;
      ConcurrencyResult denied;
      denied.denied_by = i;
      denied.retry_after = slots[i].max_in_flight == 0
                               ? Decision::never
                               : std::chrono::ceil<std::chrono::milliseconds>(
                                     std::chrono::nanoseconds{found->second.earliest() - now});
      for (std::size_t k = 0; k <= i; ++k) erase_if_empty(plan.shard_of[k], plan.keys[k]);
      return denied;
    }

    // Every slot has room. Make each scope and room for its lease first (what can throw), then add them all.
    std::array<detail::LeaseSet*, inline_slots> inline_sets{};
    std::vector<detail::LeaseSet*> heap_sets(slots.size() > inline_slots ? slots.size() : 0);
    const std::span<detail::LeaseSet*> sets =
        slots.size() > inline_slots ? std::span(heap_sets) : std::span(inline_sets).first(slots.size());
    try {
      for (std::size_t i = 0; i < slots.size(); ++i) {
        auto& scopes = state_->shards[plan.shard_of[i]].scopes;
        auto found = scopes.find(std::string_view(plan.keys[i]));
        if (found == scopes.end()) {
          found = scopes.try_emplace(plan.keys[i]).first;
          state_->keys.fetch_add(1, std::memory_order_relaxed);
        }
        sets[i] = &found->second;
        sets[i]->reserve_one();
      }
    } catch (...) {
      for (std::size_t i = 0; i < slots.size(); ++i) erase_if_empty(plan.shard_of[i], plan.keys[i]);
      throw;
    }
    for (std::size_t i = 0; i < slots.size(); ++i) sets[i]->add(id, now + lease_ns(slots[i]));
    ConcurrencyResult acquired;
    acquired.acquired = true;
    acquired.location = LeaseLocation::store;
    return acquired;
  }

  // Drops `id`'s leases in the slots' scopes; a scope left empty is erased. Thread safety: safe.
  // Throws std::invalid_argument on bad slots; std::logic_error when moved from; nothing else.
  void release(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation = LeaseLocation::store) {
    detail::validate_slots(slots, "airl::InMemoryConcurrencyStorage");
    Plan& plan = plan_for(slots);
    Locks locks(*state_, plan.locked);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      auto& scopes = state_->shards[plan.shard_of[i]].scopes;
      const auto found = scopes.find(std::string_view(plan.keys[i]));
      if (found != scopes.end() && found->second.remove(id)) erase_if_empty(plan.shard_of[i], plan.keys[i]);
    }
  }

  // If `id` holds a live lease in every slot, moves each to now + its slot's lease (renewed); otherwise drops
  // whatever `id` still holds (lost). Thread safety: safe. Throws std::invalid_argument on bad slots;
  // std::logic_error when moved from.
  RenewStatus renew(std::span<const ConcurrencySlot> slots, const PermitId& id, LeaseLocation = LeaseLocation::store) {
    detail::validate_slots(slots, "airl::InMemoryConcurrencyStorage");
    Plan& plan = plan_for(slots);
    Locks locks(*state_, plan.locked);
    const std::int64_t now = state_->clock.now().count();
    bool all_live = true;
    for (std::size_t i = 0; i < slots.size() && all_live; ++i) {
      const auto& scopes = state_->shards[plan.shard_of[i]].scopes;
      const auto found = scopes.find(std::string_view(plan.keys[i]));
      all_live = found != scopes.end() && found->second.holds(id, now);
    }
    for (std::size_t i = 0; i < slots.size(); ++i) {
      auto& scopes = state_->shards[plan.shard_of[i]].scopes;
      const auto found = scopes.find(std::string_view(plan.keys[i]));
      if (found == scopes.end()) continue;
      if (all_live) {
        found->second.extend(id, now + lease_ns(slots[i]));
      } else {
        found->second.remove(id);
        found->second.live(now);
        erase_if_empty(plan.shard_of[i], plan.keys[i]);
      }
    }
    return all_live ? RenewStatus::renewed : RenewStatus::lost;
  }

  // Live leases in `slot`'s scope now. Thread safety: safe. Throws std::invalid_argument on a bad slot;
  // std::logic_error when moved from.
  std::uint64_t in_flight(const ConcurrencySlot& slot) {
    const std::span<const ConcurrencySlot> one(&slot, 1);
    detail::validate_slots(one, "airl::InMemoryConcurrencyStorage");
    Plan& plan = plan_for(one);
    Locks locks(*state_, plan.locked);
    auto& scopes = state_->shards[plan.shard_of[0]].scopes;
    const auto found = scopes.find(std::string_view(plan.keys[0]));
    if (found == scopes.end()) return 0;
    const std::size_t live = found->second.live(state_->clock.now().count());
    erase_if_empty(plan.shard_of[0], plan.keys[0]);
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
  // Per thread and reused, so a warm thread builds no strings.
  struct Plan {
    std::vector<std::string> keys;
    std::vector<std::size_t> shard_of;
    std::vector<std::size_t> locked;
  };

  // Locks the planned shards in ascending order; unlocks in reverse.
  class Locks {
   public:
    Locks(State& state, const std::vector<std::size_t>& shards) noexcept : state_(state), shards_(shards) {
      for (const std::size_t s : shards_) state_.shards[s].mutex.lock();
    }
    ~Locks() {
      for (std::size_t i = shards_.size(); i > 0; --i) state_.shards[shards_[i - 1]].mutex.unlock();
    }
    Locks(const Locks&) = delete;
    Locks& operator=(const Locks&) = delete;

   private:
    State& state_;
    const std::vector<std::size_t>& shards_;
  };

  void require_usable() const {
    if (!state_) throw std::logic_error("airl::InMemoryConcurrencyStorage: used after being moved from");
  }

  static std::int64_t lease_ns(const ConcurrencySlot& slot) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(slot.lease).count();
  }

  Plan& plan_for(std::span<const ConcurrencySlot> slots) const {
    require_usable();
    thread_local Plan plan;
    plan.keys.resize(slots.size());
    plan.shard_of.resize(slots.size());
    plan.locked.clear();
    const detail::SeededKeyHash hash{state_->seed};
    for (std::size_t i = 0; i < slots.size(); ++i) {
      std::string& key = plan.keys[i];
      key.resize(detail::key_size(slots[i].bucket));
      detail::write_key(key.data(), slots[i].bucket);
      // The top bits pick the shard; the map uses the whole hash (reduced modulo its bucket count).
      plan.shard_of[i] = static_cast<std::size_t>(hash(key) >> 40) & (state_->options.shards - 1);
      plan.locked.push_back(plan.shard_of[i]);
    }
    std::sort(plan.locked.begin(), plan.locked.end());
    plan.locked.erase(std::unique(plan.locked.begin(), plan.locked.end()), plan.locked.end());
    return plan;
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
