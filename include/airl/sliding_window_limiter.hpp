// SPDX-License-Identifier: MIT
#pragma once
// SlidingWindowLimiter: one quota per (user, model). The single-tier special case of MultiTierLimiter,
// not a second implementation: it forwards every call to a one-tier MultiTierLimiter.

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

  // Throws std::invalid_argument when the window is <= 0 (or above max_window).
  explicit SlidingWindowLimiter(Quota quota, Storage storage = Storage{}, LimiterOptions options = {})
      : tiers_({Tier{std::string(tier_name), Scope::user_model, quota}}, std::move(storage), options) {}

  // Decides a request of cost 1. Thread safety: safe. Throws std::invalid_argument on bad ids.
  Decision allow(std::string_view user, std::string_view model) { return allow(Request{user, model}); }
  // Decides a request. Thread safety: safe. Throws std::invalid_argument on bad input, BackendError on faults.
  Decision allow(const Request& request) { return tiers_.template allow_in<1>(request); }
  // Decides a batch in order, as allow() one by one would (one pipelined round trip on Redis).
  // Thread safety: safe. Throws like allow(), before deciding any request.
  std::vector<Decision> allow_many(std::span<const Request> requests) { return tiers_.allow_many(requests); }
  // Settles a reservation made with `request_id`: its recorded cost becomes actual_cost (see
  // MultiTierLimiter::settle). Returns false when it is unknown or expired. Thread safety: safe.
  // Throws std::invalid_argument on bad ids, BackendError on faults.
  bool settle(std::string_view user, std::string_view model, std::string_view request_id, std::uint64_t actual_cost)
    requires SettlingStoragePolicy<Storage>
  {
    return tiers_.settle(user, model, request_id, actual_cost);
  }
  // Refunds a request that never ran: its charge comes back and its id is forgotten (see
  // MultiTierLimiter::refund). Returns false when it is unknown or expired. Thread safety: safe.
  // Throws std::invalid_argument on bad ids, BackendError on faults.
  bool refund(std::string_view user, std::string_view model, std::string_view request_id)
    requires RefundingStoragePolicy<Storage>
  {
    return tiers_.refund(user, model, request_id);
  }
  // Cost units counting now for (user, model). Thread safety: safe. Throws std::invalid_argument on bad ids.
  std::uint64_t usage(std::string_view user, std::string_view model) { return tiers_.usage(tier_name, user, model); }
  // Clears every model of `user`. Thread safety: safe. Throws std::invalid_argument on a bad id.
  void reset(std::string_view user) { tiers_.reset(user); }
  // Clears (user, model) only. Thread safety: safe. Throws std::invalid_argument on bad ids.
  void reset(std::string_view user, std::string_view model) { tiers_.reset(user, model); }
  // Drops buckets whose window holds nothing; returns how many. Thread safety: safe.
  std::size_t purge_expired() { return tiers_.purge_expired(); }
  // A snapshot of the counters. Thread safety: safe.
  Metrics metrics() const { return tiers_.metrics(); }

  const Quota& quota() const noexcept { return tiers_.tiers().front().quota; }
  // The single tier, named tier_name (what <airl/http.hpp> describes in RateLimit-Policy).
  const std::vector<Tier>& tiers() const noexcept { return tiers_.tiers(); }
  const LimiterOptions& options() const noexcept { return tiers_.options(); }
  Storage& storage() noexcept { return tiers_.storage(); }
  const Storage& storage() const noexcept { return tiers_.storage(); }

 private:
  MultiTierLimiter<Storage> tiers_;
};

}  // namespace airl
