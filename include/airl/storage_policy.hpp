// SPDX-License-Identifier: MIT
#pragma once
// The storage-policy interface every backend implements, stated once as a C++20 concept.
//
// A limiter turns one request into one Charge per tier and hands them to acquire() together; the storage
// decides them all-or-nothing under one lock set (in memory) or one Lua script (Redis) and records the
// request in every bucket only if every bucket has room. The rules it applies are in docs/DESIGN.md.

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "decision.hpp"
#include "quota.hpp"
#include "tier.hpp"

namespace airl {

// Names one bucket: a tier's (rate limits) or a cap's (concurrency caps, where it is called a scope). Only the
// ids its scope uses take part: user for Scope::user, model for Scope::model, both for Scope::user_model,
// neither for Scope::global. `name` (the tier's or the cap's) keeps two tiers or caps on one scope apart.
struct BucketRef {
  Scope scope = Scope::global;
  std::string_view name;
  std::string_view user;
  std::string_view model;
};

// One tier's share of a request: charge `cost` to `bucket` if it fits `quota`. `group` sorts charges into kinds
// that are reported apart (limiters put tiers counting requests in one and tiers counting cost in the other):
// see AcquireResult::other_group.
struct Charge {
  BucketRef bucket;
  Quota quota;
  std::uint64_t cost = 1;
  unsigned group = 0;
};

// What acquire() decided (decision.hpp): allowed (recorded in every bucket), replayed (the request id was
// already admitted in one of the buckets: allowed, recorded nowhere), denied (some bucket has no room),
// key_capacity or backend_unavailable (refused by the store, not by a bucket); refusals record nothing.
using AcquireStatus = Status;

// The binding charge among those of one group (chosen by the same rule as `binding`).
struct GroupBinding {
  bool present = false;  // false when every charge is in the binding charge's group
  std::size_t index = 0;
  std::uint64_t remaining = 0;
  std::chrono::milliseconds reset_after{0};
};

// What acquire() decided. `binding` indexes the charges: on denial the first denying one, otherwise the one
// closest to its limit as a fraction, remaining / limit (the first of equals). Times are rounded up to whole milliseconds. `degraded` means
// the store was not reached (a failure policy decided); it counts as a backend error in the metrics.
struct AcquireResult {
  AcquireStatus status = AcquireStatus::denied;
  std::size_t binding = 0;
  std::uint64_t remaining = 0;
  std::chrono::milliseconds retry_after{0};
  std::chrono::milliseconds reset_after{0};
  bool degraded = false;
  // For charges in more than one group: the binding charge among those outside `binding`'s group, so a
  // limiter of requests and tokens can report both (storages that decide from verdicts fill it; others may not).
  GroupBinding other_group = {};
};

// One request's part of a batch: its charges and (possibly empty) request id.
struct AcquireCall {
  std::span<const Charge> charges;
  std::string_view request_id;
};

// A storage policy. Every member must be safe to call from many threads at once.
//   acquire(charges, request_id)  all-or-nothing decision over 1..n charges naming distinct buckets
//                                 (request_id may be empty; a repeated bucket is std::invalid_argument)
//   usage(bucket, quota)          cost units counting in the bucket now
//   erase(buckets)                drops those buckets
//   erase_user(user)              drops every Scope::user and Scope::user_model bucket of that user
//   purge_expired()               drops buckets whose window holds nothing; returns how many
//   active_keys()                 buckets held now
// Optional: a storage that decides a batch faster than one call at a time (Redis pipelines it) also offers
//   std::vector<AcquireResult> acquire_many(std::span<const AcquireCall>)
// with the same rules per call, in order. Limiters fall back to acquire() in a loop without it.
template <class S>
concept BatchStoragePolicy = requires(S& storage, std::span<const AcquireCall> calls) {
  { storage.acquire_many(calls) } -> std::same_as<std::vector<AcquireResult>>;
};

// Optional: a storage that can settle a reservation (MultiTierLimiter::settle needs it; both shipped ones have it)
//   std::size_t settle(std::span<const Charge> charges, std::string_view request_id)
// expires each charge's bucket under charge.quota's window, then replaces the cost of the entry admitted with
// request_id by charge.cost (0 allowed) in every bucket that still holds it, all charges at once; returns how
// many buckets held it. Times do not change: a settled entry expires when it would have.
template <class S>
concept SettlingStoragePolicy = requires(S& storage, std::span<const Charge> charges, std::string_view id) {
  { storage.settle(charges, id) } -> std::same_as<std::size_t>;
};

// Optional: a storage that can refund a request that never ran (MultiTierLimiter::refund needs it; both shipped
// ones have it)
//   std::size_t refund(std::span<const Charge> charges, std::string_view request_id)
// settles as above (the limiter passes cost 0), then every bucket that held request_id forgets the id, so the
// same id is decided afresh; the entries stay at their times, costing what they were settled to.
template <class S>
concept RefundingStoragePolicy = SettlingStoragePolicy<S> && requires(S& storage, std::span<const Charge> charges,
                                                                       std::string_view id) {
  { storage.refund(charges, id) } -> std::same_as<std::size_t>;
};

template <class S>
concept StoragePolicy = std::movable<S> && requires(S& storage, const S& const_storage, std::span<const Charge> charges,
                                                     std::string_view id, const BucketRef& bucket, Quota quota,
                                                     std::span<const BucketRef> buckets) {
  { storage.acquire(charges, id) } -> std::same_as<AcquireResult>;
  { storage.usage(bucket, quota) } -> std::same_as<std::uint64_t>;
  { storage.erase(buckets) } -> std::same_as<void>;
  { storage.erase_user(id) } -> std::same_as<void>;
  { storage.purge_expired() } -> std::same_as<std::size_t>;
  { const_storage.active_keys() } -> std::same_as<std::size_t>;
};

}  // namespace airl
