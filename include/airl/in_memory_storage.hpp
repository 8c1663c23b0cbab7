// SPDX-License-Identifier: MIT
#pragma once
// The embedded storage: every bucket's window log in this process, behind sharded mutexes.
//
// A bucket lives in the shard its key hashes to. acquire() locks the shards of all its charges in ascending
// order, reads the clock once under those locks (so every log stays sorted), decides with the shared rule
// (detail/combine_verdicts.hpp) and records in every bucket or in none. Each call also sweeps a couple of
// expired buckets from the shards it holds, so memory follows live entries without a stop-the-world scan.

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "clock.hpp"
#include "detail/bucket_key.hpp"
#include "detail/bucket_shard.hpp"
#include "detail/combine_verdicts.hpp"
#include "detail/shard_locks.hpp"
#include "detail/validate.hpp"
#include "detail/window_log.hpp"
#include "storage_policy.hpp"

namespace airl {

struct InMemoryOptions {
  std::size_t shards = 64;   // independent locks; a power of two. More shards, less contention between keys.
  std::size_t max_keys = 0;  // most buckets held at once; 0 = unbounded. Caps memory under a flood of new ids.
};

namespace detail {

// Per-thread buffers for acquire(), so a warm thread decides without allocating.
struct AcquireScratch {
  std::vector<std::string> keys;
  std::vector<std::size_t> shard_of;
  std::vector<std::size_t> shards;  // sorted, unique
  std::vector<Bucket*> buckets;
  std::vector<WindowVerdict> verdicts;
  std::vector<char> created;

  void prepare(std::size_t count) {
    if (keys.size() < count) keys.resize(count);
    shard_of.resize(count);
    buckets.assign(count, nullptr);
    verdicts.resize(count);
    created.assign(count, 0);
  }

  static AcquireScratch& for_this_thread() {
    thread_local AcquireScratch scratch;
    return scratch;
  }
};

inline std::string& key_scratch_for_this_thread() {
  thread_local std::string key;
  return key;
}

// Sliding windows in the clock's unit (nanoseconds).
inline std::int64_t window_ns(const Quota& quota) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(quota.window).count();
}

}  // namespace detail

template <class Clock = SteadyClock>
class InMemoryStorage {
  static_assert(ClockPolicy<Clock>, "airl::InMemoryStorage: Clock must be a ClockPolicy (copyable, "
                                    "now() -> std::chrono::nanoseconds)");

 public:
  // Throws std::invalid_argument when `shards` is not a power of two (0 included).
  explicit InMemoryStorage(InMemoryOptions options = {}, Clock clock = Clock{})
      : options_(options), clock_(std::move(clock)) {
    if (!std::has_single_bit(options_.shards)) {
      throw std::invalid_argument("airl::InMemoryOptions: shards must be a power of two, got " +
                                  std::to_string(options_.shards));
    }
    shards_ = std::make_unique<detail::BucketShard[]>(options_.shards);
    shard_bits_ = std::countr_zero(options_.shards);
    key_count_ = std::make_unique<std::atomic<std::size_t>>(0);
  }

  InMemoryStorage(InMemoryStorage&&) noexcept = default;
  InMemoryStorage& operator=(InMemoryStorage&&) noexcept = default;

  // Decides the charges all-or-nothing and records the request in every bucket if all have room.
  // Thread safety: safe from any thread. Throws std::invalid_argument on no charges or two charges naming
  // one bucket; std::bad_alloc (then nothing was recorded).
  AcquireResult acquire(std::span<const Charge> charges, std::string_view request_id) {
    detail::validate_charges(charges, "airl::InMemoryStorage");
    require_usable();
    auto& scratch = detail::AcquireScratch::for_this_thread();
    scratch.prepare(charges.size());
    for (std::size_t i = 0; i < charges.size(); ++i) {
      detail::encode_bucket_key(scratch.keys[i], charges[i].bucket);
      scratch.shard_of[i] = shard_index(scratch.keys[i]);
      for (std::size_t j = 0; j < i; ++j) {
        if (scratch.keys[j] == scratch.keys[i]) {
          throw std::invalid_argument("airl::InMemoryStorage::acquire: two charges name the same bucket");
        }
      }
    }
    scratch.shards.assign(scratch.shard_of.begin(), scratch.shard_of.end());
    std::sort(scratch.shards.begin(), scratch.shards.end());
    scratch.shards.erase(std::unique(scratch.shards.begin(), scratch.shards.end()), scratch.shards.end());

    AcquireResult result;
    std::int64_t now = 0;
    std::size_t short_of_keys = 0;  // new buckets that did not fit under max_keys
    {
      detail::ShardLocks locks(shards_.get(), scratch.shards);
      now = clock_.now().count();
      find_buckets(charges, scratch, now);
      if (!request_id.empty() && holds_id(scratch, request_id)) {
        for (std::size_t i = 0; i < charges.size(); ++i) {
          scratch.verdicts[i] = log_of(scratch.buckets[i]).peek(now, detail::window_ns(charges[i].quota),
                                                                 charges[i].quota.limit);
        }
        result = detail::combine_verdicts(scratch.verdicts);
        result.status = AcquireStatus::replayed;
      } else {
        for (std::size_t i = 0; i < charges.size(); ++i) {
          scratch.verdicts[i] = log_of(scratch.buckets[i]).check(now, detail::window_ns(charges[i].quota),
                                                                  charges[i].quota.limit, charges[i].cost);
        }
        result = detail::combine_verdicts(scratch.verdicts);
        if (result.status == AcquireStatus::allowed) short_of_keys = admit(charges, request_id, scratch, now);
      }
      sweep(scratch.shards, now, incremental_sweep);
    }
    sweep_next_shard(scratch.shards, now);
    // Outside the locks: finding when enough buckets expire may have to look into every shard.
    if (short_of_keys != 0) {
      const auto missing = static_cast<std::size_t>(std::count(scratch.buckets.begin(), scratch.buckets.end(), nullptr));
      result = capacity_denial(missing, short_of_keys, now);
    }
    return result;
  }

  // Cost units counting in `bucket` now under `quota`'s window. Thread safety: safe from any thread.
  // Throws nothing but std::bad_alloc.
  std::uint64_t usage(const BucketRef& bucket, Quota quota) {
    require_usable();
    std::string& key = detail::key_scratch_for_this_thread();
    detail::encode_bucket_key(key, bucket);
    detail::BucketShard& shard = shards_[shard_index(key)];
    std::lock_guard lock(shard.mutex);
    detail::Bucket* found = shard.find(key);
    if (found == nullptr) return 0;
    found->log.expire(clock_.now().count(), detail::window_ns(quota));
    return found->log.usage();
  }

  // Drops the given buckets. Thread safety: safe from any thread. Throws nothing but std::bad_alloc.
  void erase(std::span<const BucketRef> buckets) {
    require_usable();
    std::string& key = detail::key_scratch_for_this_thread();
    for (const BucketRef& bucket : buckets) {
      detail::encode_bucket_key(key, bucket);
      detail::BucketShard& shard = shards_[shard_index(key)];
      std::lock_guard lock(shard.mutex);
      if (detail::Bucket* found = shard.find(key)) {
        shard.erase(*found);
        shard.refresh_hint();
        key_count_->fetch_sub(1, std::memory_order_relaxed);
      }
    }
  }

  // Drops every Scope::user and Scope::user_model bucket of `user`, and nothing else. Visits every bucket,
  // one shard lock at a time: an administrative call, not for the request path. Thread safety: safe.
  void erase_user(std::string_view user) {
    require_usable();
    for (std::size_t i = 0; i < options_.shards; ++i) {
      std::lock_guard lock(shards_[i].mutex);
      const std::size_t dropped = shards_[i].erase_if([user](std::string_view key) {
        const auto owner = detail::user_of_key(key);
        return owner && *owner == user;
      });
      key_count_->fetch_sub(dropped, std::memory_order_relaxed);
    }
  }

  // Drops every bucket whose window holds nothing now; returns how many. Cost: O(shards + dropped).
  // Thread safety: safe from any thread. Throws only what the clock throws.
  std::size_t purge_expired() {
    require_usable();
    std::size_t dropped = 0;
    for (std::size_t i = 0; i < options_.shards; ++i) {
      std::lock_guard lock(shards_[i].mutex);
      dropped += shards_[i].purge(clock_.now().count(), std::numeric_limits<std::size_t>::max());
      shards_[i].compact();
    }
    key_count_->fetch_sub(dropped, std::memory_order_relaxed);
    return dropped;
  }

  // Buckets held now (expired ones count until swept). Thread safety: safe. Throws nothing.
  std::size_t active_keys() const noexcept { return key_count_ ? key_count_->load(std::memory_order_relaxed) : 0; }

  const InMemoryOptions& options() const noexcept { return options_; }
  const Clock& clock() const noexcept { return clock_; }

 private:
  // Expired buckets dropped per shard per acquire(): more than one, so sweeping outpaces creation.
  static constexpr std::size_t incremental_sweep = 2;

  // A moved-from storage holds no shards: using it is a caller mistake, reported instead of crashing.
  void require_usable() const {
    if (!shards_) throw std::logic_error("airl::InMemoryStorage: used after being moved from");
  }

  // Normal traffic also sweeps shards it does not touch: each call looks at one more shard, round-robin per
  // thread, and drops a couple of its expired buckets if it has any and is free. So a flood of one-off keys is
  // reclaimed even when the remaining traffic hits only a few shards. Never blocks, never scans.
  void sweep_next_shard(std::span<const std::size_t> just_swept, std::int64_t now) noexcept {
    thread_local std::size_t cursor = 0;
    const std::size_t index = cursor++ & (options_.shards - 1);
    if (std::binary_search(just_swept.begin(), just_swept.end(), index)) return;
    detail::BucketShard& shard = shards_[index];
    if (shard.expiry_hint.load(std::memory_order_relaxed) > now || !shard.mutex.try_lock()) return;
    const std::size_t dropped = shard.purge(now, incremental_sweep);
    shard.mutex.unlock();
    if (dropped != 0) key_count_->fetch_sub(dropped, std::memory_order_relaxed);
  }

  std::size_t shard_index(std::string_view key) const noexcept {
    if (shard_bits_ == 0) return 0;
    const std::uint64_t mixed = static_cast<std::uint64_t>(detail::TransparentHash{}(key)) * 0x9E3779B97F4A7C15ull;
    return static_cast<std::size_t>(mixed >> (64 - shard_bits_));
  }

  static const detail::WindowLog& log_of(const detail::Bucket* bucket) noexcept {
    static const detail::WindowLog empty;
    return bucket == nullptr ? empty : bucket->log;
  }

  void find_buckets(std::span<const Charge> charges, detail::AcquireScratch& scratch, std::int64_t now) noexcept {
    for (std::size_t i = 0; i < charges.size(); ++i) {
      detail::Bucket* bucket = shards_[scratch.shard_of[i]].find(scratch.keys[i]);
      if (bucket != nullptr) bucket->log.expire(now, detail::window_ns(charges[i].quota));
      scratch.buckets[i] = bucket;
    }
  }

  static bool holds_id(const detail::AcquireScratch& scratch, std::string_view id) noexcept {
    return std::any_of(scratch.buckets.begin(), scratch.buckets.end(),
                       [id](const detail::Bucket* bucket) { return bucket != nullptr && bucket->log.holds_id(id); });
  }

  // Records the request in every bucket, creating missing ones. Returns 0, or when the store is full, how many
  // of the new buckets it needs did not fit (nothing recorded then). Strong guarantee: on an exception nothing
  // is recorded and no bucket is created.
  std::size_t admit(std::span<const Charge> charges, std::string_view request_id, detail::AcquireScratch& scratch,
                    std::int64_t now) {
    std::size_t missing = 0;
    if (const std::size_t short_of_keys = reserve_keys(charges, scratch, now, missing); short_of_keys != 0) {
      return short_of_keys;
    }
    std::size_t recorded = 0;
    try {
      for (std::size_t i = 0; i < charges.size(); ++i) {
        detail::BucketShard& shard = shards_[scratch.shard_of[i]];
        shard.prepare_list(detail::window_ns(charges[i].quota));
        if (scratch.buckets[i] == nullptr) {
          scratch.buckets[i] = &shard.create(scratch.keys[i]);
          scratch.created[i] = 1;
        }
      }
      for (; recorded < charges.size(); ++recorded) {
        scratch.buckets[recorded]->log.record(now, charges[recorded].cost, request_id);
      }
    } catch (...) {
      while (recorded > 0) scratch.buckets[--recorded]->log.undo_record();
      for (std::size_t i = 0; i < charges.size(); ++i) {
        if (scratch.created[i] != 0) shards_[scratch.shard_of[i]].erase(*scratch.buckets[i]);
      }
      key_count_->fetch_sub(missing, std::memory_order_relaxed);
      throw;
    }
    for (std::size_t i = 0; i < charges.size(); ++i) {
      shards_[scratch.shard_of[i]].touch(*scratch.buckets[i], detail::window_ns(charges[i].quota), now);
    }
    return 0;
  }

  // Counts the buckets admit() must create and reserves room for them under max_keys, sweeping expired
  // buckets first from the shards held, then from other shards that may have some (without waiting on them).
  // Returns 0 when reserved, else how many buckets are missing beyond max_keys.
  std::size_t reserve_keys(std::span<const Charge> charges, detail::AcquireScratch& scratch, std::int64_t now,
                           std::size_t& missing) {
    missing = static_cast<std::size_t>(std::count(scratch.buckets.begin(), scratch.buckets.end(), nullptr));
    if (missing == 0) return 0;
    if (options_.max_keys == 0) {
      key_count_->fetch_add(missing, std::memory_order_relaxed);
      return 0;
    }
    if (try_reserve(missing)) return 0;
    if (sweep(scratch.shards, now, std::numeric_limits<std::size_t>::max()) != 0) {
      find_buckets(charges, scratch, now);  // a swept bucket may have been one of ours
      missing = static_cast<std::size_t>(std::count(scratch.buckets.begin(), scratch.buckets.end(), nullptr));
      if (try_reserve(missing)) return 0;
    }
    for (std::size_t i = 0; i < options_.shards; ++i) {
      detail::BucketShard& shard = shards_[i];
      if (std::binary_search(scratch.shards.begin(), scratch.shards.end(), i)) continue;
      if (shard.expiry_hint.load(std::memory_order_relaxed) > now || !shard.mutex.try_lock()) continue;
      const std::size_t dropped = shard.purge(now, std::numeric_limits<std::size_t>::max());
      shard.mutex.unlock();
      key_count_->fetch_sub(dropped, std::memory_order_relaxed);
    }
    if (try_reserve(missing)) return 0;
    const std::size_t held = key_count_->load(std::memory_order_relaxed);
    return missing - std::min(missing, options_.max_keys - std::min(held, options_.max_keys));
  }

  bool try_reserve(std::size_t count) noexcept {
    std::size_t held = key_count_->load(std::memory_order_relaxed);
    do {
      if (count > options_.max_keys || held > options_.max_keys - count) return false;
    } while (!key_count_->compare_exchange_weak(held, held + count, std::memory_order_relaxed));
    return true;
  }

  // The refusal when `short_of_keys` of the `missing` new buckets do not fit: retry when that many buckets have
  // expired (absent other traffic), or never when the request alone needs more buckets than max_keys.
  // Called without any shard lock held.
  AcquireResult capacity_denial(std::size_t missing, std::size_t short_of_keys, std::int64_t now) const {
    AcquireResult result;
    result.status = AcquireStatus::key_capacity;
    const std::int64_t ready = missing > options_.max_keys ? detail::never_ns : nth_earliest_expiry(short_of_keys);
    result.retry_after = ready == detail::never_ns ? std::chrono::milliseconds::max()
                                                   : detail::ceil_to_ms(ready <= now ? 1 : ready - now);
    return result;
  }

  // When the `n`-th bucket to expire (counting from 1) expires; never_ns only when n > max_keys (then no wait
  // helps). Buckets another thread is creating right now are not visible yet: if fewer than n expiries are
  // seen, the answer is "soon" (now), which capacity_denial turns into 1 ms.
  std::int64_t nth_earliest_expiry(std::size_t n) const {
    if (n > options_.max_keys) return detail::never_ns;
    std::int64_t earliest = detail::never_ns;
    if (n == 1) {  // the common case: each shard publishes its earliest expiry
      for (std::size_t i = 0; i < options_.shards; ++i) {
        earliest = std::min(earliest, shards_[i].expiry_hint.load(std::memory_order_relaxed));
      }
      return earliest == detail::never_ns ? std::numeric_limits<std::int64_t>::min() : earliest;
    }
    thread_local std::vector<std::int64_t> expiries;
    expiries.clear();
    for (std::size_t i = 0; i < options_.shards; ++i) {
      std::lock_guard lock(shards_[i].mutex);
      shards_[i].earliest_expiries(n, expiries);
    }
    if (expiries.size() < n) return std::numeric_limits<std::int64_t>::min();
    std::nth_element(expiries.begin(), expiries.begin() + static_cast<std::ptrdiff_t>(n - 1), expiries.end());
    return expiries[n - 1];
  }

  // Drops up to `at_most` expired buckets from each held shard; returns how many.
  std::size_t sweep(std::span<const std::size_t> held, std::int64_t now, std::size_t at_most) noexcept {
    std::size_t dropped = 0;
    for (std::size_t index : held) dropped += shards_[index].purge(now, at_most);
    if (dropped != 0) key_count_->fetch_sub(dropped, std::memory_order_relaxed);
    return dropped;
  }

  InMemoryOptions options_;
  Clock clock_;
  std::unique_ptr<detail::BucketShard[]> shards_;
  int shard_bits_ = 0;
  std::unique_ptr<std::atomic<std::size_t>> key_count_;
};

static_assert(StoragePolicy<InMemoryStorage<SteadyClock>>);
static_assert(StoragePolicy<InMemoryStorage<ManualClock>>);

}  // namespace airl
