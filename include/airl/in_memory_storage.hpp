// SPDX-License-Identifier: MIT
#pragma once
// The embedded storage: every bucket's window log in this process, behind sharded locks.
//
// A bucket lives in the shard its key hashes to. acquire() hashes each charge's bucket once (no key string is
// built), reads the clock, locks the shards of all its charges in ascending order, decides with the shared rule
// (detail/combine_verdicts.hpp) and records in every bucket or in none. Each call also sweeps a couple of
// expired buckets from the shards it holds and peeks at one more, so memory follows live entries without a
// stop-the-world scan.
//
// Time keeps the clock's full precision (nanoseconds). The clock is read just before locking, and each shard's
// timeline never goes back: a call that read the clock just before another call took the lock uses that call's
// (later) time, so logs and expiry lists stay in time order.

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "clock.hpp"
#include "detail/bucket_key.hpp"
#include "detail/bucket_shard.hpp"
#include "detail/combine_verdicts.hpp"
#include "detail/inlining.hpp"
#include "detail/key_hash.hpp"
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

// Where one charge of an acquire() lives, found once per call. Trivial, so arrays of it start uninitialised.
struct PlannedCharge {
  std::uint64_t hash;
  std::size_t shard;
  Bucket* bucket;  // nullptr while the bucket does not exist
  bool created;    // made by this call (removed again if the call fails)
};

// Per-call working memory: on the stack for up to N charges.
template <std::size_t N>
struct InlinePlan {
  std::array<PlannedCharge, N> charges;
  std::array<WindowVerdict, N> verdicts;
  std::array<std::size_t, N> shards;
};

// Per-thread working memory for calls with more charges than the stack plan holds.
struct HeapPlan {
  std::vector<PlannedCharge> charges;
  std::vector<WindowVerdict> verdicts;
  std::vector<std::size_t> shards;

  static HeapPlan& for_this_thread(std::size_t count) {
    thread_local HeapPlan plan;
    plan.charges.resize(count);
    plan.verdicts.resize(count);
    plan.shards.resize(count);
    return plan;
  }
};

// A seed for one store's hash, different per store and per process. Not secret, just not fixed.
inline std::uint64_t fresh_seed(const void* where) noexcept {
  static std::atomic<std::uint64_t> counter{0};
  const auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  const auto address = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(where));
  return finish_hash(now ^ finish_hash(address + counter.fetch_add(hash_multiplier, std::memory_order_relaxed)));
}

// What a missing bucket decides like: an empty log. At namespace scope so reading it needs no guard.
inline const WindowLog empty_window_log{};

// The store's time unit: the clock's nanoseconds.
inline std::int64_t to_ticks(std::chrono::nanoseconds time) noexcept { return time.count(); }
inline std::int64_t window_ticks(const Quota& quota) noexcept {
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
    seed_ = detail::fresh_seed(shards_.get());
    for (std::size_t i = 0; i < options_.shards; ++i) shards_[i].set_seed(seed_);
    shard_bits_ = std::countr_zero(options_.shards);
    key_count_ = std::make_unique<std::atomic<std::size_t>>(0);
  }

  InMemoryStorage(InMemoryStorage&&) noexcept = default;
  InMemoryStorage& operator=(InMemoryStorage&&) noexcept = default;

  // Decides the charges all-or-nothing and records the request in every bucket if all have room.
  // Thread safety: safe from any thread. Throws std::invalid_argument on no charges, two charges naming one
  // bucket, an unknown scope, a window outside (0, max_window], cost 0, or a tier, user or model longer than
  // 65535 bytes; std::bad_alloc or std::length_error (more than 65535 windows in a shard, or 2^28 - 1 live
  // entries in a bucket), and then nothing was recorded; std::logic_error on a moved-from storage.
  AcquireResult acquire(std::span<const Charge> charges, std::string_view request_id) {
    if (charges.size() == 1 && detail::charge_is_valid(charges.front()) && shards_) [[likely]] {
      return decide_one(charges.front(), request_id);  // the common case
    }
    return decide_many(charges, request_id);
  }

  // Replaces, in every charge's bucket that still holds `request_id`, that entry's cost by the charge's cost
  // (see SettlingStoragePolicy); all buckets under their locks at once. Returns how many held it.
  // Thread safety: safe from any thread. Throws std::invalid_argument on an unknown scope, a window outside
  // (0, max_window], a part longer than 65535 bytes or a repeated bucket; std::bad_alloc, and then nothing
  // changed; std::logic_error on a moved-from storage.
  std::size_t settle(std::span<const Charge> charges, std::string_view request_id) {
    require_usable();
    detail::validate_settle_charges(charges, "airl::InMemoryStorage");
    if (charges.empty() || request_id.empty()) return 0;
    thread_local std::vector<detail::PlannedCharge> plan;
    thread_local std::vector<std::size_t> held;
    plan.clear();
    held.clear();
    for (std::size_t i = 0; i < charges.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (detail::same_bucket(charges[j].bucket, charges[i].bucket)) {
          throw std::invalid_argument("airl::InMemoryStorage::settle: two charges name the same bucket");
        }
      }
      const std::uint64_t hash = detail::hash_bucket(seed_, charges[i].bucket);
      plan.push_back(detail::PlannedCharge{hash, shard_index(hash), nullptr, false});
      held.push_back(plan.back().shard);
    }
    std::sort(held.begin(), held.end());
    held.erase(std::unique(held.begin(), held.end()), held.end());
    const std::int64_t read = detail::to_ticks(clock_.now());
    detail::ShardLocks locks(shards_.get(), held);
    std::int64_t now = read;
    for (const std::size_t index : held) now = shards_[index].advance(now);
    for (const std::size_t index : held) shards_[index].latest = now;
    find_buckets(charges, std::span(plan), now);
    // The old costs first, so a failed change (a unit-cost log that cannot grow its totals) can be undone.
    thread_local std::vector<std::optional<std::uint64_t>> before;
    before.assign(charges.size(), std::nullopt);
    for (std::size_t i = 0; i < charges.size(); ++i) {
      if (plan[i].bucket != nullptr) before[i] = plan[i].bucket->log.cost_of(request_id);
    }
    std::size_t settled = 0;
    try {
      for (; settled < charges.size(); ++settled) {
        if (before[settled]) plan[settled].bucket->log.replace_cost(request_id, charges[settled].cost);
      }
    } catch (...) {  // logs already changed are weighted now: restoring their costs allocates nothing
      while (settled > 0) {
        --settled;
        if (before[settled]) plan[settled].bucket->log.replace_cost(request_id, *before[settled]);
      }
      throw;
    }
    return static_cast<std::size_t>(std::count_if(before.begin(), before.end(), [](const auto& cost) { return cost.has_value(); }));
  }

  // Cost units counting in `bucket` now under `quota`'s window. Thread safety: safe from any thread.
  // Throws std::invalid_argument on a window outside (0, max_window], an unknown scope or a part longer than
  // 65535 bytes; std::logic_error on a moved-from storage.
  std::uint64_t usage(const BucketRef& bucket, Quota quota) {
    require_usable();
    detail::validate_quota(quota, bucket.tier);
    detail::validate_bucket(bucket, "airl::InMemoryStorage::usage");
    const std::uint64_t hash = detail::hash_bucket(seed_, bucket);
    detail::BucketShard& shard = shards_[shard_index(hash)];
    const std::int64_t read = detail::to_ticks(clock_.now());
    std::lock_guard lock(shard.mutex);
    detail::Bucket* found = shard.find(hash, bucket);
    if (found == nullptr) return 0;
    found->log.expire(shard.advance(read), detail::window_ticks(quota));
    return found->log.usage();
  }

  // Drops the given buckets. Thread safety: safe from any thread.
  // Throws std::invalid_argument on an unknown scope or a part longer than 65535 bytes (before dropping any);
  // std::logic_error on a moved-from storage.
  void erase(std::span<const BucketRef> buckets) {
    require_usable();
    for (const BucketRef& bucket : buckets) detail::validate_bucket(bucket, "airl::InMemoryStorage::erase");
    for (const BucketRef& bucket : buckets) {
      const std::uint64_t hash = detail::hash_bucket(seed_, bucket);
      detail::BucketShard& shard = shards_[shard_index(hash)];
      std::lock_guard lock(shard.mutex);
      if (detail::Bucket* found = shard.find(hash, bucket)) {
        shard.erase(*found);
        shard.refresh_hint();
        key_count_->fetch_sub(1, std::memory_order_relaxed);
      }
    }
  }

  // Drops every Scope::user and Scope::user_model bucket of `user`, and nothing else. Visits every bucket,
  // one shard lock at a time: an administrative call, not for the request path. Thread safety: safe.
  // Throws std::logic_error on a moved-from storage.
  void erase_user(std::string_view user) {
    require_usable();
    for (std::size_t i = 0; i < options_.shards; ++i) {
      std::lock_guard lock(shards_[i].mutex);
      const std::size_t dropped = shards_[i].erase_if([user](const detail::Bucket& bucket) {
        const auto owner = detail::user_of_key(bucket.key());
        return owner && *owner == user;
      });
      key_count_->fetch_sub(dropped, std::memory_order_relaxed);
    }
  }

  // Drops every bucket whose window holds nothing now; returns how many. Cost: O(shards + dropped).
  // Thread safety: safe from any thread. Throws std::logic_error on a moved-from storage, else only what the
  // clock throws.
  std::size_t purge_expired() {
    require_usable();
    std::size_t dropped = 0;
    for (std::size_t i = 0; i < options_.shards; ++i) {
      const std::int64_t now = detail::to_ticks(clock_.now());
      std::lock_guard lock(shards_[i].mutex);
      dropped += shards_[i].purge(shards_[i].advance(now), std::numeric_limits<std::size_t>::max());
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
  // Charges decided with working memory on the stack (the limiters keep up to this many tiers inline too).
  static constexpr std::size_t inline_charges = 8;

  // A moved-from storage holds no shards: using it is a caller mistake, reported instead of crashing.
  void require_usable() const {
    if (!shards_) throw std::logic_error("airl::InMemoryStorage: used after being moved from");
  }

  std::size_t shard_index(std::uint64_t hash) const noexcept {
    return shard_bits_ == 0 ? 0 : static_cast<std::size_t>(hash >> (64 - shard_bits_));
  }

  // acquire() for several charges (or one that is invalid: it throws), out of line so the one-charge path
  // inlined into the limiter keeps a small stack frame.
  AIRL_DETAIL_NOINLINE AcquireResult decide_many(std::span<const Charge> charges, std::string_view request_id) {
    detail::validate_charges(charges, "airl::InMemoryStorage");  // one charge gets here only invalid or moved from: throws
    require_usable();
    if (charges.size() <= inline_charges) {
      detail::InlinePlan<inline_charges> plan;
      const std::size_t n = charges.size();
      return decide(charges, request_id, std::span(plan.charges).first(n), std::span(plan.verdicts).first(n),
                    std::span(plan.shards).first(n));
    }
    detail::HeapPlan& plan = detail::HeapPlan::for_this_thread(charges.size());
    return decide(charges, request_id, std::span(plan.charges), std::span(plan.verdicts), std::span(plan.shards));
  }

  // The decision for one charge: decide() without its loops, one shard, one lock. Same rules, same order.
  AcquireResult decide_one(const Charge& charge, std::string_view request_id) {
    const std::uint64_t hash = detail::hash_bucket(seed_, charge.bucket);
    std::size_t index = shard_index(hash);
    detail::BucketShard& shard = shards_[index];
    shard.prefetch(hash);
    const std::int64_t read = detail::to_ticks(clock_.now());  // before locking: keeps the lock held briefly
    const std::int64_t window = detail::window_ticks(charge.quota);

    detail::PlannedCharge plan{hash, index, nullptr, false};
    const std::span<const Charge, 1> charges(&charge, 1);
    const std::span<detail::PlannedCharge, 1> plans(&plan, 1);
    const std::span<const std::size_t> held(&index, 1);
    detail::WindowVerdict verdict;
    bool replayed = false;
    std::int64_t now;
    std::size_t short_of_keys = 0;
    {  // the critical section: only what needs the bucket (two threads on one hot key wait for each other here)
      std::lock_guard lock(shard.mutex);
      now = shard.advance(read);
      plan.bucket = shard.find(hash, charge.bucket);
      if (plan.bucket != nullptr) {
        plan.bucket->log.prefetch();
        plan.bucket->log.expire(now, window);
      }
      const detail::WindowLog& log = log_of(plan.bucket);
      if (!request_id.empty() && log.holds_id(request_id)) {
        verdict = log.peek(now, window, charge.quota.limit);
        replayed = true;
      } else {
        verdict = log.check(now, window, charge.quota.limit, charge.cost);
        if (verdict.fits) short_of_keys = admit(charges, request_id, plans, held, now);
      }
      sweep(held, now, incremental_sweep);
    }
    sweep_next_shard(held, now);
    if (short_of_keys != 0) return capacity_denial(count_missing(plans), short_of_keys, now);
    AcquireResult result = detail::single_verdict(verdict);
    if (replayed) result.status = AcquireStatus::replayed;
    return result;
  }

  // The decision for 1..n charges; E is their count when known at compile time (1), else dynamic_extent.
  template <std::size_t E>
  AcquireResult decide(std::span<const Charge, E> charges, std::string_view request_id,
                       std::span<detail::PlannedCharge, E> plan, std::span<detail::WindowVerdict, E> verdicts,
                       std::span<std::size_t, E> shard_buffer) {
    std::size_t held_count = 0;
    for (std::size_t i = 0; i < charges.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (detail::same_bucket(charges[j].bucket, charges[i].bucket)) {
          throw std::invalid_argument("airl::InMemoryStorage::acquire: two charges name the same bucket");
        }
      }
      const std::uint64_t hash = detail::hash_bucket(seed_, charges[i].bucket);
      plan[i] = detail::PlannedCharge{hash, shard_index(hash), nullptr, false};
      // Insert the shard into the sorted, unique list of shards to lock.
      std::size_t at = held_count;
      while (at > 0 && shard_buffer[at - 1] > plan[i].shard) --at;
      if (at > 0 && shard_buffer[at - 1] == plan[i].shard) continue;
      for (std::size_t k = held_count; k > at; --k) shard_buffer[k] = shard_buffer[k - 1];
      shard_buffer[at] = plan[i].shard;
      ++held_count;
    }
    const std::span<const std::size_t> held = shard_buffer.first(held_count);
    for (const detail::PlannedCharge& charge : plan) shards_[charge.shard].prefetch(charge.hash);
    const std::int64_t read = detail::to_ticks(clock_.now());  // before locking: keeps the lock held briefly

    AcquireResult result;
    std::int64_t now = read;
    std::size_t short_of_keys = 0;  // new buckets that did not fit under max_keys
    {
      detail::ShardLocks locks(shards_.get(), held);
      for (const std::size_t index : held) now = shards_[index].advance(now);
      for (const std::size_t index : held) shards_[index].latest = now;  // all held shards at the latest of them
      find_buckets(charges, plan, now);
      if (!request_id.empty() && holds_id(plan, request_id)) {
        for (std::size_t i = 0; i < charges.size(); ++i) {
          verdicts[i] = log_of(plan[i].bucket).peek(now, detail::window_ticks(charges[i].quota), charges[i].quota.limit);
        }
        result = detail::combine_verdicts(verdicts);
        detail::note_other_group(result, verdicts, charges);
        result.status = AcquireStatus::replayed;
      } else {
        for (std::size_t i = 0; i < charges.size(); ++i) {
          verdicts[i] = log_of(plan[i].bucket).check(now, detail::window_ticks(charges[i].quota),
                                                     charges[i].quota.limit, charges[i].cost);
        }
        result = detail::combine_verdicts(verdicts);
        if (result.status == AcquireStatus::denied) {  // nothing charged: tiers that had room report it as is
          for (std::size_t i = 0; i < charges.size(); ++i) {
            if (verdicts[i].fits) {
              verdicts[i] = log_of(plan[i].bucket).peek(now, detail::window_ticks(charges[i].quota), charges[i].quota.limit);
            }
          }
        }
        detail::note_other_group(result, verdicts, charges);
        if (result.status == AcquireStatus::allowed) short_of_keys = admit(charges, request_id, plan, held, now);
      }
      sweep(held, now, incremental_sweep);
    }
    sweep_next_shard(held, now);
    // Outside the locks: finding when enough buckets expire may have to look into every shard.
    if (short_of_keys != 0) result = capacity_denial(count_missing(plan), short_of_keys, now);
    return result;
  }

  // Normal traffic also sweeps shards it does not touch: each call looks at one more shard, round-robin per
  // thread, and drops a couple of its expired buckets if it has any and is free. So a flood of one-off keys is
  // reclaimed even when the remaining traffic hits only a few shards. Never blocks, never scans.
  void sweep_next_shard(std::span<const std::size_t> just_swept, std::int64_t now) noexcept {
    thread_local std::size_t cursor = 0;
    const std::size_t index = cursor++ & (options_.shards - 1);
    detail::BucketShard& shard = shards_[index];
    if (shard.expiry_hint.load(std::memory_order_relaxed) > now) return;
    if (std::find(just_swept.begin(), just_swept.end(), index) != just_swept.end() || !shard.mutex.try_lock()) return;
    const std::size_t dropped = shard.purge(shard.advance(now), incremental_sweep);
    shard.mutex.unlock();
    if (dropped != 0) key_count_->fetch_sub(dropped, std::memory_order_relaxed);
  }

  static const detail::WindowLog& log_of(const detail::Bucket* bucket) noexcept {
    return bucket == nullptr ? detail::empty_window_log : bucket->log;
  }

  template <std::size_t E>
  static std::size_t count_missing(std::span<detail::PlannedCharge, E> plan) noexcept {
    return static_cast<std::size_t>(
        std::count_if(plan.begin(), plan.end(), [](const detail::PlannedCharge& c) { return c.bucket == nullptr; }));
  }

  template <std::size_t E>
  void find_buckets(std::span<const Charge, E> charges, std::span<detail::PlannedCharge, E> plan,
                    std::int64_t now) noexcept {
    for (std::size_t i = 0; i < charges.size(); ++i) {
      detail::Bucket* bucket = shards_[plan[i].shard].find(plan[i].hash, charges[i].bucket);
      if (bucket != nullptr) {
        bucket->log.prefetch();
        bucket->log.expire(now, detail::window_ticks(charges[i].quota));
      }
      plan[i].bucket = bucket;
    }
  }

  template <std::size_t E>
  static bool holds_id(std::span<detail::PlannedCharge, E> plan, std::string_view id) noexcept {
    return std::any_of(plan.begin(), plan.end(), [id](const detail::PlannedCharge& charge) {
      return charge.bucket != nullptr && charge.bucket->log.holds_id(id);
    });
  }

  // Records the request in every bucket, creating missing ones. Returns 0, or when the store is full, how many
  // of the new buckets it needs did not fit (nothing recorded then). Strong guarantee: on an exception nothing
  // is recorded and no bucket is created.
  template <std::size_t E>
  std::size_t admit(std::span<const Charge, E> charges, std::string_view request_id,
                    std::span<detail::PlannedCharge, E> plan, std::span<const std::size_t> held, std::int64_t now) {
    std::size_t missing = 0;
    if (const std::size_t short_of_keys = reserve_keys(charges, plan, held, now, missing); short_of_keys != 0) {
      return short_of_keys;
    }
    std::size_t recorded = 0;
    try {
      for (std::size_t i = 0; i < charges.size(); ++i) {
        detail::BucketShard& shard = shards_[plan[i].shard];
        shard.prepare_list(detail::window_ticks(charges[i].quota));
        if (plan[i].bucket == nullptr) {
          plan[i].bucket = &shard.create(plan[i].hash, charges[i].bucket);
          plan[i].created = true;
        }
      }
      for (; recorded < charges.size(); ++recorded) plan[recorded].bucket->log.record(now, charges[recorded].cost, request_id);
    } catch (...) {
      while (recorded > 0) plan[--recorded].bucket->log.undo_record();
      for (detail::PlannedCharge& charge : plan) {
        if (charge.created) {
          shards_[charge.shard].erase(*charge.bucket);
          charge.bucket = nullptr;
          charge.created = false;
        }
      }
      key_count_->fetch_sub(missing, std::memory_order_relaxed);
      throw;
    }
    for (std::size_t i = 0; i < charges.size(); ++i) {
      shards_[plan[i].shard].touch(*plan[i].bucket, detail::window_ticks(charges[i].quota));
    }
    return 0;
  }

  // Counts the buckets admit() must create and reserves room for them under max_keys, sweeping expired
  // buckets first from the shards held, then from other shards that may have some (without waiting on them).
  // Returns 0 when reserved, else how many buckets are missing beyond max_keys.
  template <std::size_t E>
  std::size_t reserve_keys(std::span<const Charge, E> charges, std::span<detail::PlannedCharge, E> plan,
                           std::span<const std::size_t> held, std::int64_t now, std::size_t& missing) {
    missing = count_missing(plan);
    if (missing == 0) return 0;
    if (options_.max_keys == 0) {
      key_count_->fetch_add(missing, std::memory_order_relaxed);
      return 0;
    }
    if (try_reserve(missing)) return 0;
    if (sweep(held, now, std::numeric_limits<std::size_t>::max()) != 0) {
      find_buckets(charges, plan, now);  // a swept bucket may have been one of ours
      missing = count_missing(plan);
      if (try_reserve(missing)) return 0;
    }
    for (std::size_t i = 0; i < options_.shards; ++i) {
      detail::BucketShard& shard = shards_[i];
      if (std::find(held.begin(), held.end(), i) != held.end()) continue;
      if (shard.expiry_hint.load(std::memory_order_relaxed) > now || !shard.mutex.try_lock()) continue;
      const std::size_t dropped = shard.purge(shard.advance(now), std::numeric_limits<std::size_t>::max());
      shard.mutex.unlock();
      key_count_->fetch_sub(dropped, std::memory_order_relaxed);
    }
    if (try_reserve(missing)) return 0;
    const std::size_t count = key_count_->load(std::memory_order_relaxed);
    return missing - std::min(missing, options_.max_keys - std::min(count, options_.max_keys));
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
    const std::int64_t ready = missing > options_.max_keys ? detail::never_ticks : nth_earliest_expiry(short_of_keys);
    result.retry_after = ready == detail::never_ticks ? std::chrono::milliseconds::max()
                                                      : detail::ceil_to_ms(ready <= now ? 1 : ready - now);
    return result;
  }

  // When the `n`-th bucket to expire (counting from 1) expires; never_ticks only when n > max_keys (then no
  // wait helps). Buckets another thread is creating right now are not visible yet: if fewer than n expiries
  // are seen, the answer is "soon" (expired_ticks), which capacity_denial turns into 1 ms.
  std::int64_t nth_earliest_expiry(std::size_t n) const {
    if (n > options_.max_keys) return detail::never_ticks;
    if (n == 1) {
      const std::int64_t earliest = earliest_expiry();
      return earliest == detail::never_ticks ? detail::expired_ticks : earliest;
    }
    thread_local std::vector<std::int64_t> expiries;
    expiries.clear();
    for (std::size_t i = 0; i < options_.shards; ++i) {
      std::lock_guard lock(shards_[i].mutex);
      shards_[i].earliest_expiries(n, expiries);
    }
    if (expiries.size() < n) return detail::expired_ticks;
    std::nth_element(expiries.begin(), expiries.begin() + static_cast<std::ptrdiff_t>(n - 1), expiries.end());
    return expiries[n - 1];
  }

  // The earliest bucket expiry of the store. Each shard's hint is a lower bound (an admission to its oldest
  // bucket does not raise it), so the shard with the lowest hint is refreshed under its lock until the lowest
  // value is an exact one: usually one or two shards are locked, not all of them.
  std::int64_t earliest_expiry() const {
    struct Candidate {
      std::int64_t expiry;
      bool exact;
    };
    thread_local std::vector<Candidate> candidates;
    candidates.resize(options_.shards);
    for (std::size_t i = 0; i < options_.shards; ++i) {
      candidates[i] = Candidate{shards_[i].expiry_hint.load(std::memory_order_relaxed), false};
    }
    for (;;) {
      const auto lowest = std::min_element(candidates.begin(), candidates.end(),
                                           [](const Candidate& a, const Candidate& b) { return a.expiry < b.expiry; });
      if (lowest->exact || lowest->expiry == detail::never_ticks) return lowest->expiry;
      detail::BucketShard& shard = shards_[static_cast<std::size_t>(lowest - candidates.begin())];
      std::lock_guard lock(shard.mutex);
      shard.refresh_hint();
      *lowest = Candidate{shard.expiry_hint.load(std::memory_order_relaxed), true};
    }
  }

  // Drops up to `at_most` expired buckets from each held shard that has some; returns how many.
  std::size_t sweep(std::span<const std::size_t> held, std::int64_t now, std::size_t at_most) noexcept {
    std::size_t dropped = 0;
    for (const std::size_t index : held) {
      if (shards_[index].expiry_hint.load(std::memory_order_relaxed) <= now) dropped += shards_[index].purge(now, at_most);
    }
    if (dropped != 0) key_count_->fetch_sub(dropped, std::memory_order_relaxed);
    return dropped;
  }

  InMemoryOptions options_;
  Clock clock_;
  std::unique_ptr<detail::BucketShard[]> shards_;
  std::uint64_t seed_ = 0;
  int shard_bits_ = 0;
  std::unique_ptr<std::atomic<std::size_t>> key_count_;
};

static_assert(StoragePolicy<InMemoryStorage<SteadyClock>>);
static_assert(StoragePolicy<InMemoryStorage<ManualClock>>);
static_assert(SettlingStoragePolicy<InMemoryStorage<SteadyClock>>);

}  // namespace airl
