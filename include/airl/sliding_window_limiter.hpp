// SPDX-License-Identifier: MIT
#pragma once
// SlidingWindowLimiter: one quota per (user, model). The single-tier special case of MultiTierLimiter,
// not a second implementation: it forwards every call to a one-tier MultiTierLimiter. It counts the requests'
// cost (tokens, say) unless built with Unit::requests ("60 requests per minute" whatever each one costs).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "multi_tier_limiter.hpp"

namespace airl {

template <class Storage>
class SlidingWindowLimiter {
 public:
  // The name of the single tier, reported in Decision::reason on denials.
  static constexpr std::string_view tier_name = "default";

  // Counts each request's cost in `quota` (Unit::cost). Throws std::invalid_argument when the window is <= 0
  // (or above max_window) or the limit above 2^53 (max_exact_count), on every storage.
  explicit SlidingWindowLimiter(Quota quota, Storage storage = Storage{}, LimiterOptions options = {})
      : SlidingWindowLimiter(quota, Unit::cost, std::move(storage), options) {}
  // Counts `unit` in `quota`: Unit::requests counts 1 per request whatever its cost (and <airl/http.hpp>
  // reports requests), Unit::cost the request's cost. Throws std::invalid_argument as above, or on an
  // unknown unit.
  explicit SlidingWindowLimiter(Quota quota, Unit unit, Storage storage = Storage{}, LimiterOptions options = {})
      : tiers_({Tier{std::string(tier_name), Scope::user_model, quota, unit}}, std::move(storage), options) {}

  // Movable. Every member of a moved-from limiter throws std::logic_error naming it (besides what it lists);
  // destroying it or assigning to it works.

  // Decides a request of cost 1. Thread safety: safe. Throws std::invalid_argument on bad ids.
  Decision allow(std::string_view user, std::string_view model) { return allow(Request{user, model}); }
  // Decides a request. Thread safety: safe. Throws std::invalid_argument on bad input, BackendError on faults.
  Decision allow(const Request& request) {
    return tiers_.template allow_in<1>(request, name);  // checks, in this class's name: one branch on the hot path
  }
  // Decides a batch in order, as allow() one by one would (one pipelined round trip on one Redis server).
  // Thread safety: safe. Throws like allow(), before deciding any request.
  std::vector<Decision> allow_many(std::span<const Request> requests) { return live("allow_many").allow_many(requests); }
  // Settles a reservation made with `request_id`: its recorded cost becomes actual_cost (see
  // MultiTierLimiter::settle). Returns false when it is unknown or expired. Thread safety: safe.
  // Throws std::invalid_argument on bad ids, BackendError on faults.
  bool settle(std::string_view user, std::string_view model, std::string_view request_id, std::uint64_t actual_cost)
    requires SettlingStoragePolicy<Storage>
  {
    return live("settle").settle(user, model, request_id, actual_cost);
  }
  // Refunds a request that never ran: its charge comes back and its id is forgotten (see
  // MultiTierLimiter::refund). Returns false when it is unknown or expired. Thread safety: safe.
  // Throws std::invalid_argument on bad ids, BackendError on faults.
  bool refund(std::string_view user, std::string_view model, std::string_view request_id)
    requires RefundingStoragePolicy<Storage>
  {
    return live("refund").refund(user, model, request_id);
  }
  // Units (cost, or requests) counting now for (user, model). Thread safety: safe. Throws std::invalid_argument
  // on bad ids.
  std::uint64_t usage(std::string_view user, std::string_view model) {
    return live("usage").usage(tier_name, user, model);
  }
  // Clears every model of `user`. Thread safety: safe. Throws std::invalid_argument on a bad id.
  void reset(std::string_view user) { live("reset").reset(user); }
  // Clears (user, model) only. Thread safety: safe. Throws std::invalid_argument on bad ids.
  void reset(std::string_view user, std::string_view model) { live("reset").reset(user, model); }
  // Drops buckets whose window holds nothing; returns how many. Thread safety: safe.
  std::size_t purge_expired() { return live("purge_expired").purge_expired(); }
  // A snapshot of the counters. Thread safety: safe.
  Metrics metrics() const { return live("metrics").metrics(); }

  // The quota and the single tier (named tier_name, with its unit: what <airl/http.hpp> describes in
  // RateLimit-Policy), the options and the storage. These throw only std::logic_error, when moved from.
  const Quota& quota() const { return live("quota").tiers().front().quota; }
  const std::vector<Tier>& tiers() const { return live("tiers").tiers(); }
  const LimiterOptions& options() const { return live("options").options(); }
  Storage& storage() { return live("storage").storage(); }
  const Storage& storage() const { return live("storage").storage(); }

 private:
  static constexpr const char* name = "airl::SlidingWindowLimiter";

  // The way every member but allow() reaches the limiter it wraps: throws std::logic_error naming `member`
  // when this limiter was moved from (the wrapped limiter checks again: these are not on the hot path).
  AIRL_DETAIL_HOT_INLINE MultiTierLimiter<Storage>& live(const char* member) {
    tiers_.require_usable(member, name);
    return tiers_;
  }
  AIRL_DETAIL_HOT_INLINE const MultiTierLimiter<Storage>& live(const char* member) const {
    tiers_.require_usable(member, name);
    return tiers_;
  }

  MultiTierLimiter<Storage> tiers_;
};

}  // namespace airl
