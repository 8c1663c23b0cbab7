// SPDX-License-Identifier: MIT
#pragma once
// The in-memory engine both in-memory storages are made of: keys in shards, each shard behind its own lock,
// generic over the per-key state (a WindowLog for rate limits, a LeaseSet for concurrency caps).
//
// One call works on 1..n keys at once (a request's tiers, an acquisition's caps) through a StoreCall, which
// does the same prologue for every operation: hash each key once (no key string is built), pick the shards,
// sort them, read the clock, lock them in ascending order (so two calls never deadlock), bring each shard's
// timeline up to the latest of them, and find the keys' entries, expired to now. The storage then decides
// with its state's rule, and admit() creates the missing entries under the key budget and records in every
// entry or in none. On the way out each call sweeps a couple of expired entries from the shards it holds and
// looks at one more shard (key_budget.hpp), so memory follows live keys.
//
// The clock is read just before locking, and each shard's timeline never goes back: a call that read the
// clock just before another took the lock uses that call's (later) time, so states and expiry lists stay in
// time order. Nothing here uses thread-local buffers (a permit may be released during exit).

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "../inlining.hpp"
#include "../part_array.hpp"
#include "../key_hash.hpp"
#include "../lock.hpp"
#include "../thread_annotations.hpp"
#include "bucket_key.hpp"
#include "key_budget.hpp"
#include "shard.hpp"

namespace airl::detail {

// A seed for one store's hash, different per store and per process. Not secret, just not fixed.
inline std::uint64_t fresh_seed(const void* where) noexcept {
  static std::atomic<std::uint64_t> counter{0};
  const auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  const auto address = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(where));
  return finish_hash(now ^ finish_hash(address + counter.fetch_add(hash_multiplier, std::memory_order_relaxed)));
}

template <class State, std::size_t Extent>
class StoreCall;

// One key of a call as its storage names it: the bucket (which must outlive the call) and the window (or
// lease) of its expiry list, in the store's time unit.
struct StoreKey {
  const BucketRef* name;
  std::int64_t window;
};

template <class State>
class ShardedStore {
 public:
  using ShardType = Shard<State>;

  // Throws std::invalid_argument (naming `owner`) when `shards` is not a power of two (0 included).
  ShardedStore(std::size_t shards, std::size_t max_keys, const char* owner) : shard_count_(shards) {
    if (!std::has_single_bit(shards)) {
      throw std::invalid_argument(std::string(owner) + ": shards must be a power of two, got " + std::to_string(shards));
    }
    shards_ = std::make_unique<ShardType[]>(shards);
    seed_ = fresh_seed(shards_.get());
    for (std::size_t i = 0; i < shards; ++i) shards_[i].set_seed(seed_);
    shard_bits_ = std::countr_zero(shards);
    budget_ = std::make_unique<KeyBudget>(max_keys);
  }

  ShardedStore(ShardedStore&&) noexcept = default;
  ShardedStore& operator=(ShardedStore&&) noexcept = default;

  // Whether the store still has its shards (a moved-from one has none). Throws nothing.
  bool usable() const noexcept { return shards_ != nullptr; }
  // Keys held now (expired ones count until swept). Throws nothing.
  std::size_t keys() const noexcept { return budget_ ? budget_->count() : 0; }

  // Drops every entry `doomed(entry)` accepts, one shard lock at a time; returns how many. Visits every entry.
  template <class Predicate>
  std::size_t erase_if(Predicate doomed) {
    std::size_t dropped = 0;
    for (std::size_t i = 0; i < shard_count_; ++i) {
      Lock lock(shards_[i].mutex);
      dropped += shards_[i].erase_if(doomed);
    }
    budget_->release(dropped);
    return dropped;
  }

  // Drops every entry that holds nothing at the time `read_clock()` gives, one shard at a time; returns how
  // many. Cost: O(shards + dropped).
  template <class ReadClock>
  std::size_t purge_expired(ReadClock&& read_clock) {
    std::size_t dropped = 0;
    for (std::size_t i = 0; i < shard_count_; ++i) {
      const std::int64_t now = read_clock();
      ShardType& shard = shards_[i];
      Lock lock(shard.mutex);
      dropped += shard.purge(shard.advance(now), std::numeric_limits<std::size_t>::max());
      shard.compact();
    }
    budget_->release(dropped);
    return dropped;
  }

  // The wait of a call refused for want of keys (StoreCall::short_of_keys()). Call with no lock held.
  template <std::size_t Extent>
  AIRL_DETAIL_COLD std::chrono::milliseconds capacity_retry(const StoreCall<State, Extent>& call) const {
    return detail::capacity_retry(shards_.get(), shard_count_, *budget_, call.missing(), call.short_of_keys(), call.now());
  }

 private:
  template <class, std::size_t>
  friend class StoreCall;

  std::size_t shard_of(std::uint64_t hash) const noexcept {
    return shard_bits_ == 0 ? 0 : static_cast<std::size_t>(hash >> (64 - shard_bits_));
  }

  std::size_t shard_count_;
  std::unique_ptr<ShardType[]> shards_;
  std::uint64_t seed_ = 0;
  int shard_bits_ = 0;
  std::unique_ptr<KeyBudget> budget_;  // behind a pointer: the store stays movable
};

// One call's keys: where they live, then, while their shards are locked, their entries. Built on the caller's
// stack for up to inline_parts keys (on the heap beyond), never in thread-local buffers. Extent is the number
// of keys when the caller knows it at compile time (1 for one-tier limiters: every loop then disappears).
template <class State, std::size_t Extent = std::dynamic_extent>
class StoreCall {
 public:
  using Item = Entry<State>;

  // Takes `count` keys: key_of(i) gives key i as a StoreKey. Throws std::invalid_argument (naming `owner`)
  // when two keys are the same, std::bad_alloc beyond inline_parts keys. Requires a store not moved from: its
  // storage checks that first, in every member (detail/moved_from.hpp), so the hot path checks once.
  template <class KeyOf>
  AIRL_DETAIL_HOT_INLINE StoreCall(ShardedStore<State>& store, std::size_t count, KeyOf&& key_of, const char* owner)
      : store_(store), shards_(store.shards_.get()), parts_(count), held_(count) {
    for (std::size_t i = 0; i < size(); ++i) {
      const StoreKey key = key_of(i);
      for (std::size_t j = 0; j < i; ++j) {
        if (same_bucket(*parts_[j].ref, *key.name)) [[unlikely]] refuse_repeated(owner);
      }
      const std::uint64_t hash = hash_bucket(store.seed_, *key.name);
      const Part& part = parts_.make(i, [&] { return Part{key.name, key.window, hash, store.shard_of(hash), nullptr, false}; });
      // Insert the shard into the sorted, unique list of shards to lock.
      std::size_t at = held_count_;
      while (at > 0 && held_[at - 1] > part.shard) --at;
      if (at > 0 && held_[at - 1] == part.shard) continue;
      for (std::size_t k = held_count_; k > at; --k) held_.set(k, held_[k - 1]);
      held_.set(at, part.shard);
      ++held_count_;
    }
  }
  StoreCall(const StoreCall&) = delete;
  StoreCall& operator=(const StoreCall&) = delete;

  // Whether a call also sweeps (key_budget.hpp): the calls that admit do, so memory follows live keys under
  // any traffic; reads and administrative calls leave the store as they found it.
  enum class Sweep : bool { no, yes };

  // Reads the clock (read_clock() -> nanoseconds), locks the shards, finds each key's entry and expires its
  // state to now, runs work(*this) and returns what it returns; then sweeps if asked. Throws what work throws
  // (the locks are given back first).
  template <class ReadClock, class Work>
  AIRL_DETAIL_HOT_INLINE auto run(ReadClock&& read_clock, Work&& work, Sweep sweep = Sweep::no) {
    for (std::size_t i = 0; i < size(); ++i) shards_[parts_[i].shard].prefetch(parts_[i].hash);
    now_ = read_clock();  // before locking: keeps the locks held briefly
    auto result = locked(work, sweep);
    if (sweep == Sweep::yes) sweep_next_shard(shards_, store_.shard_count_, held(), now_, *store_.budget_);
    return result;
  }

  // --- Inside work(): the shards are locked. ---

  std::size_t size() const noexcept { return parts_.size(); }
  // The time of this call: the clock's reading, or later if a shard had already used a later time.
  std::int64_t now() const noexcept { return now_; }
  // Key i's state, or nullptr while it has no entry.
  State* state(std::size_t i) noexcept { return parts_[i].entry == nullptr ? nullptr : &parts_[i].entry->state; }

  // Creates the missing entries under the key budget, then calls record(i, state) for every key (it may throw:
  // strong guarantee, undo(i, state) takes back what record did and must not throw), then marks every entry
  // touched now. Returns false, creating and recording nothing, when the store is full (short_of_keys()).
  template <class Record, class Undo>
  AIRL_DETAIL_HOT_INLINE bool admit(Record&& record, Undo&& undo) {
    if (!reserve_keys()) [[unlikely]] return false;
    std::size_t recorded = 0;
    try {
      prepare_lists();
      for (std::size_t i = 0; i < size(); ++i) {
        Shard<State>& shard = shards_[parts_[i].shard];
        shard.mutex.assert_held();
        if (parts_[i].entry == nullptr) {
          parts_[i].entry = &shard.create(parts_[i].hash, *parts_[i].ref);
          parts_[i].created = true;
        }
      }
      for (; recorded < size(); ++recorded) record(recorded, parts_[recorded].entry->state);
    } catch (...) {
      roll_back(recorded, undo);
      throw;
    }
    for (std::size_t i = 0; i < size(); ++i) touch(i);
    return true;
  }

  // Gives every key's window its expiry list in its shard, so touch() cannot fail. Throws std::length_error
  // (more than 65535 windows in a shard) or std::bad_alloc; an empty list changes nothing that counts.
  void prepare_lists() {
    for (std::size_t i = 0; i < size(); ++i) {
      Shard<State>& shard = shards_[parts_[i].shard];
      shard.mutex.assert_held();
      shard.prepare_list(parts_[i].window);
    }
  }

  // Marks key i's entry touched now (its state's expiry moved to the newest of its list). Requires an entry
  // and prepare_lists() (admit() prepares them).
  void touch(std::size_t i) noexcept {
    Shard<State>& shard = shards_[parts_[i].shard];
    shard.mutex.assert_held();
    shard.touch(*parts_[i].entry, parts_[i].window);
  }

  // Drops key i's entry, if it has one. Throws nothing.
  void erase(std::size_t i) noexcept {
    if (parts_[i].entry == nullptr) return;
    Shard<State>& shard = shards_[parts_[i].shard];
    shard.mutex.assert_held();
    shard.erase(*parts_[i].entry, parts_[i].hash);
    parts_[i].entry = nullptr;
    store_.budget_->release(1);
  }

  // Drops key i's entry if its state holds nothing. Throws nothing.
  void erase_if_empty(std::size_t i) noexcept {
    if (parts_[i].entry != nullptr && parts_[i].entry->state.empty()) erase(i);
  }

  // --- After run(): ---

  // How many of the call's new keys did not fit under max_keys when admit() returned false (else 0).
  std::size_t short_of_keys() const noexcept { return short_of_keys_; }
  // How many new keys the call needed.
  std::size_t missing() const noexcept { return missing_; }

 private:
  friend class ShardedStore<State>;

  struct Part {
    const BucketRef* ref;
    std::int64_t window;
    std::uint64_t hash;
    std::size_t shard;
    Item* entry;   // nullptr while the key has no entry
    bool created;  // made by this call (removed again if the call fails)
  };

  // The distinct shards held, ascending: the lock order. One for a one-key call (a static extent: no loop).
  static constexpr std::size_t held_extent = Extent == 1 ? 1 : std::dynamic_extent;
  using Held = std::span<const std::size_t, held_extent>;
  Held held() noexcept {
    if constexpr (Extent == 1) {
      return Held(&parts_[0].shard, 1);
    } else {
      return held_.span().first(held_count_);
    }
  }

  // Locks the call's shards in ascending order for a scope; unlocks in reverse. The set is dynamic, which
  // the analysis cannot follow: each use of a shard says it holds it (ShardMutex::assert_held).
  class ShardLocks {
   public:
    ShardLocks(Shard<State>* shards, Held indices) noexcept AIRL_NO_THREAD_SAFETY_ANALYSIS
        : shards_(shards), indices_(indices) {
      for (const std::size_t index : indices_) shards_[index].mutex.lock();
    }
    ~ShardLocks() AIRL_NO_THREAD_SAFETY_ANALYSIS {
      for (std::size_t i = indices_.size(); i > 0; --i) shards_[indices_[i - 1]].mutex.unlock();
    }
    ShardLocks(const ShardLocks&) = delete;
    ShardLocks& operator=(const ShardLocks&) = delete;

   private:
    Shard<State>* shards_;
    Held indices_;
  };

  [[noreturn]] AIRL_DETAIL_COLD static void refuse_repeated(const char* owner) {
    throw std::invalid_argument(std::string(owner) + ": two parts of one call name the same key");
  }

  template <class Work>
  AIRL_DETAIL_HOT_INLINE auto locked(Work& work, Sweep sweep) {
    const ShardLocks locks(shards_, held());
    for (const std::size_t index : held()) {
      Shard<State>& shard = shards_[index];
      shard.mutex.assert_held();
      now_ = shard.advance(now_);
    }
    if (held().size() > 1) {
      for (const std::size_t index : held()) {  // all at the latest of them
        Shard<State>& shard = shards_[index];
        shard.mutex.assert_held();
        shard.advance(now_);
      }
    }
    find_entries();
    auto result = work(*this);
    if (sweep == Sweep::yes) sweep_held(shards_, held(), now_, incremental_sweep, *store_.budget_);
    return result;
  }

  AIRL_DETAIL_HOT_INLINE void find_entries() noexcept {
    for (std::size_t i = 0; i < size(); ++i) {
      Shard<State>& shard = shards_[parts_[i].shard];
      shard.mutex.assert_held();
      Item* entry = shard.find(parts_[i].hash, *parts_[i].ref);
      if (entry != nullptr) {
        entry->state.prefetch();
        entry->state.expire(now_, parts_[i].window);
      }
      parts_[i].entry = entry;
    }
  }

  std::size_t count_missing() noexcept {
    std::size_t missing = 0;
    for (std::size_t i = 0; i < size(); ++i) missing += std::size_t{parts_[i].entry == nullptr};
    return missing;
  }

  // Takes back a failed admission: the `recorded` first records, then the entries this call created.
  template <class Undo>
  AIRL_DETAIL_COLD void roll_back(std::size_t recorded, Undo& undo) noexcept {
    while (recorded > 0) {
      --recorded;
      undo(recorded, parts_[recorded].entry->state);
    }
    for (std::size_t i = 0; i < size(); ++i) {
      if (!parts_[i].created) continue;
      Shard<State>& shard = shards_[parts_[i].shard];
      shard.mutex.assert_held();
      shard.erase(*parts_[i].entry, parts_[i].hash);
      parts_[i].entry = nullptr;
      parts_[i].created = false;
    }
    store_.budget_->release(missing_);
  }

  // Takes room in the key budget for the entries admit() must create, sweeping expired entries first from
  // the shards held, then from other shards that may have some (without waiting on them). False, with
  // short_of_keys_ set, when there is not enough.
  bool reserve_keys() {
    missing_ = count_missing();
    if (missing_ == 0) [[likely]] return true;
    return reserve_missing_keys();
  }
  AIRL_DETAIL_COLD bool reserve_missing_keys() {
    KeyBudget& budget = *store_.budget_;
    if (budget.try_take(missing_)) return true;
    if (sweep_held(shards_, held(), now_, std::numeric_limits<std::size_t>::max(), budget) != 0) {
      find_entries();  // a swept entry may have been one of ours
      missing_ = count_missing();
      if (budget.try_take(missing_)) return true;
    }
    for (std::size_t i = 0; i < store_.shard_count_; ++i) {
      if (std::find(held().begin(), held().end(), i) != held().end()) continue;
      sweep_if_free(shards_[i], now_, std::numeric_limits<std::size_t>::max(), budget);
    }
    if (budget.try_take(missing_)) return true;
    short_of_keys_ = std::max<std::size_t>(1, budget.short_of(missing_));  // at least 1: room taken meanwhile
    return false;
  }

  ShardedStore<State>& store_;
  Shard<State>* shards_;  // the store's
  PartArray<Part, Extent> parts_;
  PartArray<std::size_t, Extent> held_;  // see held()
  std::size_t held_count_ = 0;
  std::int64_t now_ = 0;
  std::size_t missing_ = 0;
  std::size_t short_of_keys_ = 0;
};

}  // namespace airl::detail
