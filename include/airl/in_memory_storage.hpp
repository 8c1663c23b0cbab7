// SPDX-License-Identifier: MIT
#pragma once
// The embedded storage: every bucket's window log in this process, in the sharded store both in-memory
// storages share (detail/memory/sharded_store.hpp: shards, locks, sweeping, the key budget). This file is the
// rate limits' layer on it: a call locks its buckets, decides them with the window log's rule and the
// multi-tier rule (detail/verdict.hpp), and records in every bucket or in none. Time keeps the clock's full
// precision (nanoseconds).

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "clock.hpp"
#include "detail/validate.hpp"
#include "detail/memory/sharded_store.hpp"
#include "detail/part_array.hpp"
#include "detail/memory/window_log.hpp"
#include "detail/moved_from.hpp"
#include "detail/ticks.hpp"
#include "detail/verdict.hpp"
#include "storage_policy.hpp"

namespace airl {

struct InMemoryOptions {
  std::size_t shards = 64;   // independent locks; a power of two. More shards, less contention between keys.
  std::size_t max_keys = 0;  // most buckets held at once; 0 = unbounded. Caps memory under a flood of new ids.
};

namespace detail {

// What a missing bucket decides like: an empty log.
inline const WindowLog empty_window_log{};

}  // namespace detail

template <class Clock = SteadyClock>
class InMemoryStorage {
  static_assert(ClockPolicy<Clock>, "airl::InMemoryStorage: Clock must be a ClockPolicy (copyable, "
                                    "now() -> std::chrono::nanoseconds)");
  using Call = detail::StoreCall<detail::WindowLog>;
  template <std::size_t Extent>
  using CallOf = detail::StoreCall<detail::WindowLog, Extent>;
  static constexpr const char* name = "airl::InMemoryStorage";

 public:
  // Throws std::invalid_argument when `shards` is not a power of two (0 included).
  explicit InMemoryStorage(InMemoryOptions options = {}, Clock clock = Clock{})
      : options_(options), clock_(std::move(clock)), store_(options.shards, options.max_keys, "airl::InMemoryOptions") {}

  // Movable. Every member of a moved-from storage throws std::logic_error naming it (besides what it lists);
  // destroying it or assigning to it works.
  InMemoryStorage(InMemoryStorage&&) noexcept = default;
  InMemoryStorage& operator=(InMemoryStorage&&) noexcept = default;

  // Decides the charges all-or-nothing and records the request in every bucket if all have room.
  // Thread safety: safe from any thread. Throws std::invalid_argument on no charges, two charges naming one
  // bucket, an unknown scope, a window outside (0, max_window], cost 0, a limit above 2^53, or a tier, user or
  // model longer than 65535 bytes (a cost above 2^53 is a 'never' denial); std::bad_alloc or std::length_error (more than 65535 windows in a shard, or 2^28 - 1 live
  // entries in a bucket), and then nothing was recorded; std::logic_error on a moved-from storage.
  AIRL_DETAIL_HOT_INLINE AcquireResult acquire(std::span<const Charge> charges, std::string_view request_id) {
    require_usable("acquire");
    detail::validate_charges(charges, name);
    return decide(charges, request_id);
  }
  // The same for one charge known at compile time (a one-tier limiter calls this one): the same rule, in code
  // compiled for one bucket. Thread safety and throws: as above.
  template <std::size_t Extent>
    requires(Extent == 1)  // a template, so only a std::span<const Charge, 1> picks it
  AIRL_DETAIL_HOT_INLINE AcquireResult acquire(std::span<const Charge, Extent> charges, std::string_view request_id) {
    require_usable("acquire");
    detail::validate_charges(charges, name);
    return decide(charges, request_id);
  }

  // The same for charges a limiter built and validated (detail::validated): not checked again.
  template <std::size_t Extent>
  AIRL_DETAIL_HOT_INLINE AcquireResult acquire(std::span<const Charge, Extent> charges, std::string_view request_id,
                                               detail::Validated) {
    require_usable("acquire");
    return decide(charges, request_id);
  }

  // Replaces, in every charge's bucket that still holds `request_id`, that entry's cost by the charge's cost
  // (see SettlingStoragePolicy); all buckets under their locks at once. Returns how many held it.
  // Thread safety: safe from any thread. Throws std::invalid_argument on an unknown scope, a window outside
  // (0, max_window], a part longer than 65535 bytes, a repeated bucket, or a bucket's total that would pass
  // 2^53 (then nothing changed); std::bad_alloc, and then nothing changed; std::logic_error on a moved-from
  // storage.
  std::size_t settle(std::span<const Charge> charges, std::string_view request_id) {
    require_usable("settle");
    return change_costs(charges, request_id, /*forget_id=*/false);
  }

  // settle(), then every bucket that held `request_id` forgets it (see RefundingStoragePolicy): the same id is
  // decided afresh. Thread safety and throws: as settle().
  std::size_t refund(std::span<const Charge> charges, std::string_view request_id) {
    require_usable("refund");
    return change_costs(charges, request_id, /*forget_id=*/true);
  }

  // Cost units counting in `bucket` now under `quota`'s window. Thread safety: safe from any thread.
  // Throws std::invalid_argument on a window outside (0, max_window], an unknown scope or a part longer than
  // 65535 bytes; std::logic_error on a moved-from storage.
  std::uint64_t usage(const BucketRef& bucket, Quota quota) {
    require_usable("usage");
    detail::validate_quota(quota, bucket.name);
    detail::validate_bucket(bucket, "airl::InMemoryStorage::usage");
    Call call(store_, 1, one_key(bucket, quota.window), name);
    return call.run(read_clock(), [](Call& locked) -> std::uint64_t {
      return locked.state(0) == nullptr ? 0 : locked.state(0)->usage();
    });
  }

  // Drops the given buckets. Thread safety: safe from any thread.
  // Throws std::invalid_argument on an unknown scope or a part longer than 65535 bytes (before dropping any);
  // std::logic_error on a moved-from storage.
  void erase(std::span<const BucketRef> buckets) {
    require_usable("erase");
    for (const BucketRef& bucket : buckets) detail::validate_bucket(bucket, "airl::InMemoryStorage::erase");
    for (const BucketRef& bucket : buckets) {
      Call call(store_, 1, one_key(bucket, std::chrono::milliseconds{1}), name);
      call.run(read_clock(), [](Call& locked) {
        locked.erase(0);
        return 0;
      });
    }
  }

  // Drops every Scope::user and Scope::user_model bucket of `user`, and nothing else. Visits every bucket,
  // one shard lock at a time: an administrative call, not for the request path. Thread safety: safe.
  // Throws std::logic_error on a moved-from storage.
  void erase_user(std::string_view user) {
    require_usable("erase_user");
    store_.erase_if([user](const detail::Entry<detail::WindowLog>& entry) {
      const auto owner = detail::user_of_key(entry.key());
      return owner && *owner == user;
    });
  }

  // Drops every bucket whose window holds nothing now; returns how many. Cost: O(shards + dropped).
  // Thread safety: safe from any thread. Throws std::logic_error on a moved-from storage, else only what the
  // clock throws.
  std::size_t purge_expired() {
    require_usable("purge_expired");
    return store_.purge_expired(read_clock());
  }

  // Buckets held now (expired ones count until swept). Thread safety: safe. Throws only std::logic_error (as
  // options() and clock()), when moved from.
  std::size_t active_keys() const {
    require_usable("active_keys");
    return store_.keys();
  }

  const InMemoryOptions& options() const {
    require_usable("options");
    return options_;
  }
  const Clock& clock() const {
    require_usable("clock");
    return clock_;
  }

 private:
  std::size_t change_costs(std::span<const Charge> charges, std::string_view request_id, bool forget_id) {
    detail::validate_settle_charges(charges, name);
    Call call(store_, charges.size(), key_of(charges), name);
    if (charges.empty() || request_id.empty()) return 0;
    detail::PartArray<std::optional<std::uint64_t>> before(charges.size());
    return call.run(read_clock(), [&](Call& locked) {
      // The old costs first, so a failed change (a unit-cost log that cannot grow its totals) can be undone.
      std::size_t held = 0;
      for (std::size_t i = 0; i < charges.size(); ++i) {
        before.set(i, locked.state(i) != nullptr ? locked.state(i)->cost_of(request_id) : std::nullopt);
        if (before[i]) ++held;
      }
      std::size_t settled = 0;
      try {
        for (; settled < charges.size(); ++settled) {
          if (before[settled]) locked.state(settled)->replace_cost(request_id, charges[settled].cost);
        }
      } catch (...) {  // logs already changed are weighted now: restoring their costs allocates nothing
        while (settled > 0) {
          --settled;
          if (before[settled]) locked.state(settled)->replace_cost(request_id, *before[settled]);
        }
        throw;
      }
      if (forget_id) {  // after every cost changed: forgetting cannot fail, nor be undone
        for (std::size_t i = 0; i < charges.size(); ++i) {
          if (before[i]) locked.state(i)->forget_id(request_id);
        }
      }
      return held;
    });
  }

  // Every public member calls this first: a moved-from storage (its store's shards went with the move) throws
  // std::logic_error naming `member` (detail/moved_from.hpp).
  AIRL_DETAIL_HOT_INLINE void require_usable(const char* member) const {
    detail::require_not_moved_from(store_.usable(), name, member);
  }

  auto read_clock() const noexcept {
    return [this] { return clock_.now().count(); };
  }

  template <std::size_t Extent>
  static auto key_of(std::span<const Charge, Extent> charges) noexcept {
    return [charges](std::size_t i) {
      return detail::StoreKey{&charges[i].bucket, detail::to_ticks(charges[i].quota.window)};
    };
  }

  static auto one_key(const BucketRef& bucket, std::chrono::milliseconds window) noexcept {
    return [&bucket, window](std::size_t) { return detail::StoreKey{&bucket, detail::to_ticks(window)}; };
  }

  // acquire() for a known number of charges.
  template <std::size_t Extent>
  AcquireResult decide(std::span<const Charge, Extent> charges, std::string_view request_id) {
    CallOf<Extent> call(store_, charges.size(), key_of(charges), name);
    detail::PartArray<detail::WindowVerdict, Extent> verdicts(charges.size());
    const RequestId id{request_id, request_id.empty() ? 0 : detail::WindowLog::id_hash(request_id)};  // hashed once
    const auto work = [&](CallOf<Extent>& locked) AIRL_DETAIL_LAMBDA_INLINE {  // inlined: ~40 instructions saved
      return decide_locked(locked, charges, id, verdicts);
    };
    AcquireResult result = call.run(read_clock(), work, CallOf<Extent>::Sweep::yes);
    if (call.short_of_keys() != 0) [[unlikely]] {
      result = AcquireResult{.status = Status::key_capacity, .retry_after = store_.capacity_retry(call)};
    }
    return result;
  }

  // A request id and its hash (WindowLog::id_hash), taken before locking.
  struct RequestId {
    std::string_view text;
    std::uint64_t hash;
  };

  // The rule, under the buckets' locks: replay or check every bucket, combine, and record when all fit.
  template <std::size_t Extent>
  AIRL_DETAIL_HOT_INLINE static AcquireResult decide_locked(CallOf<Extent>& locked, std::span<const Charge, Extent> charges,
                                                            const RequestId& request_id,
                                                            detail::PartArray<detail::WindowVerdict, Extent>& verdicts) {
    const std::int64_t now = locked.now();
    const auto log = [&locked](std::size_t i) -> const detail::WindowLog& {
      const detail::WindowLog* state = locked.state(i);
      return state == nullptr ? detail::empty_window_log : *state;
    };
    bool replayed = false;
    if (!request_id.text.empty()) {
      for (std::size_t i = 0; i < charges.size(); ++i) {
        replayed = replayed || log(i).holds_id(request_id.text, request_id.hash);
      }
    }
    for (std::size_t i = 0; i < charges.size(); ++i) {
      const Charge& charge = charges[i];
      const std::int64_t window = detail::to_ticks(charge.quota.window);
      verdicts.set(i, replayed ? log(i).peek(now, window, charge.quota.limit)
                               : log(i).check(now, window, charge.quota.limit, charge.cost));
    }
    AcquireResult result = detail::combine_verdicts(verdicts.span(), charges, replayed);
    if (result.status == Status::denied) {  // nothing charged: tiers that had room report it as is
      for (std::size_t i = 0; i < charges.size(); ++i) {
        if (verdicts[i].fits) verdicts.set(i, log(i).peek(now, detail::to_ticks(charges[i].quota.window), charges[i].quota.limit));
      }
    }
    detail::note_other_group(result, verdicts.span(), charges);
    if (result.status == Status::allowed) admit(locked, charges, request_id);
    return result;
  }

  template <std::size_t Extent>
  static void admit(CallOf<Extent>& locked, std::span<const Charge, Extent> charges, const RequestId& id) {
    const std::int64_t now = locked.now();
    locked.admit([&](std::size_t i, detail::WindowLog& log) { log.record(now, charges[i].cost, id.text, id.hash); },
                 [](std::size_t, detail::WindowLog& log) { log.undo_record(); });
  }

  InMemoryOptions options_;
  Clock clock_;
  detail::ShardedStore<detail::WindowLog> store_;
};

static_assert(StoragePolicy<InMemoryStorage<SteadyClock>>);
static_assert(StoragePolicy<InMemoryStorage<ManualClock>>);
static_assert(RefundingStoragePolicy<InMemoryStorage<SteadyClock>>);

}  // namespace airl
