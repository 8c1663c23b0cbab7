// SPDX-License-Identifier: MIT
#pragma once
// One shard of the in-memory store: a lock, the buckets it guards (owned here, indexed by a BucketTable), and
// their expiry order.
//
// Buckets that share a window sit on one intrusive list ordered by their last admission, so the oldest end of
// each list is always the next bucket to expire. Purging pops expired buckets from those ends: O(1) per
// dropped bucket and never a scan, which is what lets normal traffic sweep a few keys per call.
// The shard also keeps the latest time any call used under its lock: calls read the clock before locking, and
// clamping to that time keeps every log and list of the shard in time order.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "bucket.hpp"
#include "bucket_table.hpp"
#include "inlining.hpp"
#include "key_hash.hpp"
#include "shard_mutex.hpp"
#include "window_log.hpp"

namespace airl::detail {

// "Already expired": the expiry reported for a bucket whose log holds nothing any more.
inline constexpr std::int64_t expired_ticks = std::numeric_limits<std::int64_t>::min();

// All members except mutex and expiry_hint require `mutex` to be held.
class alignas(64) BucketShard {
 public:
  ShardMutex mutex;
  // Earliest bucket expiry in this shard (never_ticks when none; possibly earlier than the truth, never later),
  // readable without the lock so sweeps skip idle shards.
  std::atomic<std::int64_t> expiry_hint{never_ticks};
  std::int64_t latest = std::numeric_limits<std::int64_t>::min();  // latest time used under the lock

  explicit BucketShard(std::uint64_t seed = 0) noexcept : seed_(seed) {}

  // The time a call holding the lock decides at: its clock reading, or the latest time already used here if
  // that is later (a call that read the clock before another took the lock). Every use of a time under the
  // lock goes through here, so the shard's timeline never goes back. Throws nothing.
  std::int64_t advance(std::int64_t read) noexcept {
    if (read > latest) latest = read;
    return latest;
  }
  BucketShard(const BucketShard&) = delete;
  BucketShard& operator=(const BucketShard&) = delete;
  ~BucketShard() {
    table_.for_each([](Bucket& bucket) { Bucket::Deleter{}(&bucket); });
  }

  void set_seed(std::uint64_t seed) noexcept { seed_ = seed; }

  // The bucket named `name` (whose hash is `hash`), or nullptr. Throws nothing.
  // The key compare as a functor whose call is forced inline (a lambda's call would stay out of line).
  struct NamedBy {
    const BucketRef& name;
    AIRL_DETAIL_HOT_INLINE bool operator()(const Bucket& bucket) const noexcept { return bucket.names(name); }
  };

  AIRL_DETAIL_HOT_INLINE Bucket* find(std::uint64_t hash, const BucketRef& name) const noexcept {
    return table_.find(hash, NamedBy{name});
  }

  // Starts loading the index slot where `hash` is looked up. Safe without the lock. Throws nothing.
  void prefetch(std::uint64_t hash) const noexcept { table_.prefetch_slot(hash); }

  // A new bucket, on no expiry list yet. Strong guarantee.
  Bucket& create(std::uint64_t hash, const BucketRef& name) {
    table_.reserve_one();
    Bucket::Owner bucket = Bucket::make(name);
    table_.insert(hash, bucket.get());
    return *bucket.release();
  }

  // Makes sure touch() with this window cannot fail. Strong guarantee.
  void prepare_list(std::int64_t window) {
    if (list_for(window) != lists_.size()) return;
    if (lists_.size() >= Bucket::unlisted) {
      throw std::length_error("airl::InMemoryStorage: more than 65535 distinct windows in one shard");
    }
    lists_.push_back(ExpiryList{window, nullptr, nullptr});
  }

  // Marks an admission: moves the bucket to the newest end of its window's list. Requires prepare_list(window)
  // and a non-empty log whose newest entry is the newest admission of the shard's lists.
  void touch(Bucket& bucket, std::int64_t window) noexcept {
    const auto index = static_cast<std::uint16_t>(list_for(window));
    ExpiryList& list = lists_[index];
    if (bucket.list == index && list.newest == &bucket) return;  // already the newest
    unlink(bucket);
    bucket.list = index;
    bucket.older = list.newest;
    bucket.newer = nullptr;
    if (list.newest != nullptr) list.newest->newer = &bucket; else list.oldest = &bucket;
    list.newest = &bucket;
    // A shorter window (or a first bucket) can expire before anything else here: the hint must not be later.
    const std::int64_t expiry = expiry_of(bucket, window);
    if (expiry < expiry_hint.load(std::memory_order_relaxed)) expiry_hint.store(expiry, std::memory_order_relaxed);
  }

  // Unlinks and frees `bucket`. Throws nothing.
  void erase(Bucket& bucket) noexcept {
    unlink(bucket);
    table_.erase(hash_bucket(seed_, bucket.ref()), &bucket);
    Bucket::Deleter{}(&bucket);
  }

  // Drops up to `at_most` buckets whose window holds nothing at `now`. Returns how many.
  std::size_t purge(std::int64_t now, std::size_t at_most) noexcept {
    std::size_t dropped = 0;
    for (ExpiryList& list : lists_) {
      while (dropped < at_most && list.oldest != nullptr && expiry_of(*list.oldest, list.window) <= now) {
        erase(*list.oldest);
        ++dropped;
      }
    }
    refresh_hint();
    return dropped;
  }

  // Drops every bucket `doomed` accepts. Returns how many. Visits every bucket of the shard.
  template <class Predicate>
  std::size_t erase_if(Predicate doomed) noexcept {
    std::size_t dropped = 0;
    table_.for_each([&](Bucket& bucket) {
      if (!doomed(bucket)) return;
      erase(bucket);
      ++dropped;
    });
    refresh_hint();
    return dropped;
  }

  // Appends the expiry times of (up to) the `count` buckets that expire first in each list of this shard.
  void earliest_expiries(std::size_t count, std::vector<std::int64_t>& out) const {
    for (const ExpiryList& list : lists_) {
      std::size_t taken = 0;
      for (const Bucket* bucket = list.oldest; bucket != nullptr && taken < count; bucket = bucket->newer, ++taken) {
        out.push_back(expiry_of(*bucket, list.window));
      }
    }
  }

  void refresh_hint() noexcept {
    std::int64_t earliest = never_ticks;
    for (const ExpiryList& list : lists_) {
      if (list.oldest != nullptr) earliest = std::min(earliest, expiry_of(*list.oldest, list.window));
    }
    // Store only on change: other threads read the hint, so an unchanged value should not dirty its line.
    if (expiry_hint.load(std::memory_order_relaxed) != earliest) expiry_hint.store(earliest, std::memory_order_relaxed);
  }

  // Gives the index's slots back after a mass expiry, so memory follows live buckets. Best effort.
  void compact() noexcept { table_.compact(); }

  std::size_t size() const noexcept { return table_.size(); }
  const BucketTable& table() const noexcept { return table_; }

 private:
  struct ExpiryList {
    std::int64_t window;
    Bucket* newest;
    Bucket* oldest;
  };

  // When the bucket's window stops holding anything: its newest entry's time plus the window.
  static std::int64_t expiry_of(const Bucket& bucket, std::int64_t window) noexcept {
    return bucket.log.empty() ? expired_ticks : bucket.log.newest_time() + window;
  }

  std::size_t list_for(std::int64_t window) const noexcept {
    std::size_t i = 0;
    while (i < lists_.size() && lists_[i].window != window) ++i;
    return i;
  }

  void unlink(Bucket& bucket) noexcept {
    if (!bucket.listed()) return;
    ExpiryList& list = lists_[bucket.list];
    if (bucket.newer != nullptr) bucket.newer->older = bucket.older; else list.newest = bucket.older;
    if (bucket.older != nullptr) bucket.older->newer = bucket.newer; else list.oldest = bucket.newer;
    bucket.newer = bucket.older = nullptr;
    bucket.list = Bucket::unlisted;
  }

  BucketTable table_;
  std::vector<ExpiryList> lists_;  // one per distinct window seen; a handful at most
  std::uint64_t seed_;
};

}  // namespace airl::detail
