// SPDX-License-Identifier: MIT
#pragma once
// One shard of the in-memory store: a mutex, the buckets it guards, and their expiry order.
//
// Buckets that share a window sit on one intrusive list ordered by their last admission, so the oldest end
// of each list is always the next bucket to expire. Purging pops expired buckets from those ends: O(1) per
// dropped bucket and never a scan, which is what lets normal traffic sweep a few keys per call.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "transparent_hash.hpp"
#include "window_log.hpp"

namespace airl::detail {

struct Bucket {
  WindowLog log;
  std::int64_t window = 0;      // the expiry list this bucket is on, when `listed`
  bool listed = false;          // on an expiry list (a new bucket is not, until its first admission)
  std::int64_t expires_at = 0;  // last admission + window: from then on the bucket holds nothing
  Bucket* newer = nullptr;
  Bucket* older = nullptr;
  const std::string* key = nullptr;  // the map key that owns this bucket
};

// All members except expiry_hint require `mutex` to be held.
class BucketShard {
 public:
  std::mutex mutex;
  // Earliest expires_at in this shard (never_ns when empty), readable without the lock to skip idle shards.
  std::atomic<std::int64_t> expiry_hint{never_ns};

  Bucket* find(std::string_view key) noexcept {
    const auto found = buckets_.find(key);
    return found == buckets_.end() ? nullptr : &found->second;
  }

  // A new bucket, on no expiry list yet. Strong guarantee.
  Bucket& create(std::string_view key) {
    auto [it, inserted] = buckets_.try_emplace(std::string(key));
    it->second.key = &it->first;
    return it->second;
  }

  // Makes sure touch() with this window cannot fail. Strong guarantee.
  void prepare_list(std::int64_t window) {
    if (list_for(window) == nullptr) lists_.push_back(ExpiryList{window, nullptr, nullptr});
  }

  // Marks an admission at `now`: moves the bucket to the newest end of its window's list.
  // Requires prepare_list(window).
  void touch(Bucket& bucket, std::int64_t window, std::int64_t now) noexcept {
    unlink(bucket);
    ExpiryList& list = *list_for(window);
    bucket.window = window;
    bucket.listed = true;
    bucket.expires_at = now + window;
    bucket.older = list.newest;
    bucket.newer = nullptr;
    if (list.newest != nullptr) list.newest->newer = &bucket; else list.oldest = &bucket;
    list.newest = &bucket;
  }

  void erase(Bucket& bucket) noexcept {
    unlink(bucket);
    buckets_.erase(buckets_.find(std::string_view(*bucket.key)));
  }

  // Drops up to `at_most` buckets whose window holds nothing at `now`. Returns how many.
  std::size_t purge(std::int64_t now, std::size_t at_most) noexcept {
    std::size_t dropped = 0;
    for (ExpiryList& list : lists_) {
      while (dropped < at_most && list.oldest != nullptr && list.oldest->expires_at <= now) {
        erase(*list.oldest);
        ++dropped;
      }
    }
    refresh_hint();
    return dropped;
  }

  // Drops every bucket whose key satisfies `doomed`. Returns how many. Visits every bucket of the shard.
  template <class Predicate>
  std::size_t erase_if(Predicate doomed) noexcept {
    std::size_t dropped = 0;
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      if (doomed(std::string_view(it->first))) {
        unlink(it->second);
        it = buckets_.erase(it);
        ++dropped;
      } else {
        ++it;
      }
    }
    refresh_hint();
    return dropped;
  }

  // Appends the expiry times of (up to) the `count` buckets that expire first in this shard.
  void earliest_expiries(std::size_t count, std::vector<std::int64_t>& out) const {
    for (const ExpiryList& list : lists_) {
      std::size_t taken = 0;
      for (const Bucket* bucket = list.oldest; bucket != nullptr && taken < count; bucket = bucket->newer, ++taken) {
        out.push_back(bucket->expires_at);
      }
    }
  }

  void refresh_hint() noexcept {
    std::int64_t earliest = never_ns;
    for (const ExpiryList& list : lists_) {
      if (list.oldest != nullptr) earliest = std::min(earliest, list.oldest->expires_at);
    }
    // Store only on change: other threads read the hint, so an unchanged value should not dirty its line.
    if (expiry_hint.load(std::memory_order_relaxed) != earliest) expiry_hint.store(earliest, std::memory_order_relaxed);
  }

  // Gives back the hash table's slots after a mass expiry, so memory follows live buckets. Best effort.
  void compact() noexcept {
    if (buckets_.bucket_count() <= 64 || buckets_.size() * 8 > buckets_.bucket_count()) return;
    try {
      buckets_.rehash(0);
    } catch (...) {
    }
  }

  std::size_t size() const noexcept { return buckets_.size(); }

 private:
  struct ExpiryList {
    std::int64_t window;
    Bucket* newest;
    Bucket* oldest;
  };

  ExpiryList* list_for(std::int64_t window) noexcept {
    for (ExpiryList& list : lists_) {
      if (list.window == window) return &list;
    }
    return nullptr;
  }

  void unlink(Bucket& bucket) noexcept {
    if (!bucket.listed) return;
    ExpiryList& list = *list_for(bucket.window);
    if (bucket.newer != nullptr) bucket.newer->older = bucket.older; else list.newest = bucket.older;
    if (bucket.older != nullptr) bucket.older->newer = bucket.newer; else list.oldest = bucket.newer;
    bucket.newer = bucket.older = nullptr;
    bucket.listed = false;
  }

  std::unordered_map<std::string, Bucket, TransparentHash, std::equal_to<>> buckets_;
  std::vector<ExpiryList> lists_;  // one per distinct window seen; a handful at most
};

}  // namespace airl::detail
