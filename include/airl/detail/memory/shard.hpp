// SPDX-License-Identifier: MIT
#pragma once
// One shard of the in-memory store: a lock and what it guards: the entries (owned here, indexed by an
// EntryTable), their expiry order, and the shard's timeline. State is the per-key state: a WindowLog (rate
// limits) or a LeaseSet (concurrency caps); it tells when it holds nothing any more (expiry(window)).
//
// Entries that share a window (or a lease length) sit on one intrusive list ordered by their last touch, so
// the oldest end of each list is always the next entry to expire. Purging pops expired entries from those
// ends: O(1) per dropped entry and never a scan, which is what lets normal traffic sweep a few keys per call.
// The shard also keeps the latest time any call used under its lock: calls read the clock before locking, and
// clamping to that time keeps every state and list of the shard in time order.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "../inlining.hpp"
#include "../shard_mutex.hpp"
#include "../thread_annotations.hpp"
#include "../ticks.hpp"
#include "bucket_key.hpp"
#include "entry.hpp"
#include "entry_table.hpp"

namespace airl::detail {

template <class State>
class alignas(64) Shard {
 public:
  using Item = Entry<State>;

  ShardMutex mutex;
  // Earliest expiry in this shard (never_ticks when none; possibly earlier than the truth, never later),
  // readable without the lock so sweeps skip idle shards.
  std::atomic<std::int64_t> expiry_hint{never_ticks};

  Shard() = default;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  ~Shard() AIRL_NO_THREAD_SAFETY_ANALYSIS {  // no other thread can reach a shard being destroyed
    table_.for_each([](Item& entry) { typename Item::Deleter{}(&entry); });
  }

  void set_seed(std::uint64_t seed) noexcept AIRL_NO_THREAD_SAFETY_ANALYSIS { seed_ = seed; }  // before sharing

  // The time a call holding the lock decides at: its clock reading, or the latest time already used here if
  // that is later (a call that read the clock before another took the lock). Every use of a time under the
  // lock goes through here, so the shard's timeline never goes back. Throws nothing.
  AIRL_DETAIL_HOT_INLINE std::int64_t advance(std::int64_t read) noexcept AIRL_REQUIRES(mutex) {
    if (read > latest_) latest_ = read;
    return latest_;
  }

  // The entry named `name` (whose hash is `hash`), or nullptr. Throws nothing.
  AIRL_DETAIL_HOT_INLINE Item* find(std::uint64_t hash, const BucketRef& name) const noexcept AIRL_REQUIRES(mutex) {
    return table_.find(hash, NamedBy{name});
  }

  // Starts loading the index slot where `hash` is looked up. Safe without the lock. Throws nothing.
  void prefetch(std::uint64_t hash) const noexcept AIRL_NO_THREAD_SAFETY_ANALYSIS { table_.prefetch_slot(hash); }

  // A new entry, with an empty state, on no expiry list yet. Strong guarantee: throws std::bad_alloc.
  Item& create(std::uint64_t hash, const BucketRef& name) AIRL_REQUIRES(mutex) {
    table_.reserve_one();
    typename Item::Owner entry = Item::make(name);
    table_.insert(hash, entry.get());
    return *entry.release();
  }

  // Makes sure touch() with this window cannot fail. Strong guarantee: throws std::bad_alloc, or
  // std::length_error past 65535 distinct windows in the shard.
  void prepare_list(std::int64_t window) AIRL_REQUIRES(mutex) {
    if (list_for(window) != lists_.size()) return;
    if (lists_.size() >= Item::unlisted) {
      throw std::length_error("airl: more than 65535 distinct windows in one shard of an in-memory store");
    }
    lists_.push_back(ExpiryList{window, nullptr, nullptr});
  }

  // Marks `entry` as touched now: moves it to the newest end of its window's list. Requires prepare_list(window)
  // and a state whose expiry is the newest of that list.
  void touch(Item& entry, std::int64_t window) noexcept AIRL_REQUIRES(mutex) {
    const auto index = static_cast<std::uint16_t>(list_for(window));
    ExpiryList& list = lists_[index];
    if (entry.list == index && list.newest == &entry) return;  // already the newest
    unlink(entry);
    entry.list = index;
    entry.older = list.newest;
    entry.newer = nullptr;
    if (list.newest != nullptr) list.newest->newer = &entry; else list.oldest = &entry;
    list.newest = &entry;
    // A shorter window (or a first entry) can expire before anything else here: the hint must not be later.
    const std::int64_t expiry = entry.state.expiry(window);
    if (expiry < expiry_hint.load(std::memory_order_relaxed)) expiry_hint.store(expiry, std::memory_order_relaxed);
  }

  // Unlinks and frees `entry`. Throws nothing.
  void erase(Item& entry) noexcept AIRL_REQUIRES(mutex) { erase(entry, hash_bucket(seed_, entry.ref())); }
  // The same for a caller that knows the entry's hash (a call that just found it): no decoding, no re-hashing.
  void erase(Item& entry, std::uint64_t hash) noexcept AIRL_REQUIRES(mutex) {
    unlink(entry);
    table_.erase(hash, &entry);
    typename Item::Deleter{}(&entry);
  }

  // Drops up to `at_most` entries that hold nothing at `now`. Returns how many.
  std::size_t purge(std::int64_t now, std::size_t at_most) noexcept AIRL_REQUIRES(mutex) {
    std::size_t dropped = 0;
    for (ExpiryList& list : lists_) {
      while (dropped < at_most && list.oldest != nullptr && list.oldest->state.expiry(list.window) <= now) {
        erase(*list.oldest);
        ++dropped;
      }
    }
    refresh_hint();
    return dropped;
  }

  // Drops every entry `doomed` accepts. Returns how many. Visits every entry of the shard.
  template <class Predicate>
  std::size_t erase_if(Predicate doomed) noexcept AIRL_REQUIRES(mutex) {
    std::size_t dropped = 0;
    table_.for_each([&](Item& entry) AIRL_NO_THREAD_SAFETY_ANALYSIS {  // runs inside this function
      if (!doomed(entry)) return;
      erase(entry);
      ++dropped;
    });
    refresh_hint();
    return dropped;
  }

  // Calls seen(expiry) for (up to) the `count` entries that expire first in each list of this shard.
  template <class Seen>
  void earliest_expiries(std::size_t count, Seen&& seen) const AIRL_REQUIRES(mutex) {
    for (const ExpiryList& list : lists_) {
      std::size_t taken = 0;
      for (const Item* entry = list.oldest; entry != nullptr && taken < count; entry = entry->newer, ++taken) {
        seen(entry->state.expiry(list.window));
      }
    }
  }

  // Makes expiry_hint exact. Throws nothing.
  void refresh_hint() noexcept AIRL_REQUIRES(mutex) {
    std::int64_t earliest = never_ticks;
    for (const ExpiryList& list : lists_) {
      if (list.oldest != nullptr) earliest = std::min(earliest, list.oldest->state.expiry(list.window));
    }
    // Store only on change: other threads read the hint, so an unchanged value should not dirty its line.
    if (expiry_hint.load(std::memory_order_relaxed) != earliest) expiry_hint.store(earliest, std::memory_order_relaxed);
  }

  // Gives the index's slots back after a mass expiry, so memory follows live entries. Best effort.
  void compact() noexcept AIRL_REQUIRES(mutex) { table_.compact(); }

  std::size_t size() const noexcept AIRL_REQUIRES(mutex) { return table_.size(); }
  const EntryTable<Item>& table() const noexcept AIRL_REQUIRES(mutex) { return table_; }

 private:
  struct ExpiryList {
    std::int64_t window;
    Item* newest;
    Item* oldest;
  };

  // The key compare as a functor whose call is forced inline (a lambda's call would stay out of line).
  struct NamedBy {
    const BucketRef& name;
    AIRL_DETAIL_HOT_INLINE bool operator()(const Item& entry) const noexcept { return entry.names(name); }
  };

  std::size_t list_for(std::int64_t window) const noexcept AIRL_REQUIRES(mutex) {
    std::size_t i = 0;
    while (i < lists_.size() && lists_[i].window != window) ++i;
    return i;
  }

  void unlink(Item& entry) noexcept AIRL_REQUIRES(mutex) {
    if (!entry.listed()) return;
    ExpiryList& list = lists_[entry.list];
    if (entry.newer != nullptr) entry.newer->older = entry.older; else list.newest = entry.older;
    if (entry.older != nullptr) entry.older->newer = entry.newer; else list.oldest = entry.newer;
    entry.newer = entry.older = nullptr;
    entry.list = Item::unlisted;
  }

  EntryTable<Item> table_ AIRL_GUARDED_BY(mutex);
  std::vector<ExpiryList> lists_ AIRL_GUARDED_BY(mutex);  // one per distinct window seen; a handful at most
  std::int64_t latest_ AIRL_GUARDED_BY(mutex) = std::numeric_limits<std::int64_t>::min();  // latest time used
  std::uint64_t seed_ = 0;  // set before the shard is shared, then only read
};

}  // namespace airl::detail
