// SPDX-License-Identifier: MIT
#pragma once
// MultiTierLimiter: several quotas checked together, all-or-nothing. The one mechanism every rate limiter uses:
// a request becomes one Charge per tier, the storage decides them in one acquire(), and the result becomes
// a Decision and a count in the metrics. SlidingWindowLimiter is this with a single tier.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clock.hpp"
#include "decision.hpp"
#include "detail/inlining.hpp"
#include "detail/limiter/counters.hpp"
#include "detail/limiter/quota_book.hpp"
#include "detail/limiter/reason_text.hpp"
#include "detail/limiter/request_id.hpp"
#include "detail/moved_from.hpp"
#include "detail/part_array.hpp"
#include "detail/validate.hpp"
#include "errors.hpp"
#include "limiter_options.hpp"
#include "metrics.hpp"
#include "plans.hpp"
#include "quota.hpp"
#include "request.hpp"
#include "storage_policy.hpp"
#include "tier.hpp"

namespace airl {

template <class Storage>
class SlidingWindowLimiter;

template <class Storage>
class MultiTierLimiter {
  static_assert(StoragePolicy<Storage>, "airl::MultiTierLimiter: Storage must satisfy airl::StoragePolicy "
                                        "(see include/airl/storage_policy.hpp)");

 public:
  // Movable. Every member of a moved-from limiter throws std::logic_error (besides what it lists); destroying
  // it or assigning to it works.

  // Throws std::invalid_argument on an empty tier list, an empty, reserved or duplicate tier name, a
  // window <= 0 (or above max_window), or a limit above 2^53 (max_exact_count, as set_quota), on every storage.
  explicit MultiTierLimiter(std::vector<Tier> tiers, Storage storage = Storage{}, LimiterOptions options = {})
      : tiers_(std::move(tiers)), storage_(std::move(storage)), options_(options), counters_(tiers_.size()) {
    detail::validate_tiers(tiers_);
    rules_ = std::make_unique<detail::RuleSlot>();
    reasons_.reserve(tiers_.size());
    for (const Tier& tier : tiers_) reasons_.emplace_back(tier.name);
  }

  // Decides a request of cost 1 without a request id. See allow(const Request&).
  Decision allow(std::string_view user, std::string_view model) { return allow(Request{user, model}); }

  // Admits the request in every tier, or in none. Thread safety: safe from any thread.
  // Throws std::invalid_argument on an empty or over-long user, model or request id, or cost 0;
  // airl::BackendError when a storage without a failure policy fails (nothing recorded).
  Decision allow(const Request& request) { return allow_in<std::dynamic_extent>(request); }

  // Decides a batch of requests, each all-or-nothing across tiers, in order: the same decisions as calling
  // allow() for each in turn. On one Redis server the batch is one pipelined round trip (on a cluster, one
  // more per request split across slots: docs/REDIS.md). Every request is validated
  // before any is decided. Thread safety: safe. Throws like allow().
  std::vector<Decision> allow_many(std::span<const Request> requests) {
    require_usable("allow_many");
    for (const Request& request : requests) {
      detail::validate_request(request.user, request.model, request.cost, request.request_id);
    }
    // Every request's rules are resolved (an unknown plan refused) before any is decided: a batch is refused
    // whole or decided whole, never half-recorded behind an exception.
    std::vector<Charge> charges(requests.size() * tiers_.size());
    std::vector<std::string> ids(requests.size());
    std::vector<AcquireCall> calls(requests.size());
    for (std::size_t i = 0; i < requests.size(); ++i) {
      std::span<Charge> mine(charges.data() + i * tiers_.size(), tiers_.size());
      for (std::size_t t = 0; t < tiers_.size(); ++t) mine[t] = charge_of(t, requests[i]);
      resolve_rules(mine, requests[i]);
      if (!requests[i].request_id.empty()) {
        detail::encode_request_id(ids[i], requests[i].user, requests[i].model, requests[i].request_id);
      }
      calls[i] = AcquireCall{mine, ids[i]};
    }
    std::vector<Decision> decisions;
    decisions.reserve(requests.size());
    if constexpr (BatchStoragePolicy<Storage>) {
      const std::vector<AcquireResult> results = counting_backend_errors([&] { return storage_.acquire_many(calls); });
      for (std::size_t i = 0; i < results.size() && i < calls.size(); ++i) {
        decisions.push_back(to_decision(results[i], calls[i].charges));
      }
    } else {
      for (const AcquireCall& call : calls) {
        const AcquireResult result = counting_backend_errors([&] { return storage_.acquire(call.charges, call.request_id); });
        decisions.push_back(to_decision(result, call.charges));
      }
    }
    return decisions;
  }

  // Settles a reservation: the request admitted for (user, model) with `request_id` really cost
  // `actual_cost`. In every tier that counts cost and still holds it, its recorded cost becomes actual_cost
  // (a refund when lower; an extra charge when higher, even beyond the limit: the tokens were spent); its time
  // does not change, so it still expires with its window. Tiers that count requests are left as they are.
  // Returns false when no cost tier holds the request (unknown id, expired there, or never admitted, as a
  // shadow-denied one); a limiter without cost tiers says whether a tier still holds it. Settling again with
  // the same cost changes nothing; a later settle replaces an earlier one.
  // Thread safety: safe, also against concurrent allow() and settle() of the same request.
  // Throws std::invalid_argument on an empty or over-long user, model or request_id, or an actual_cost above
  // 2^53 (what every storage counts exactly); airl::BackendError when the store fails (the reservation then
  // stands until it expires).
  bool settle(std::string_view user, std::string_view model, std::string_view request_id, std::uint64_t actual_cost)
    requires SettlingStoragePolicy<Storage>
  {
    require_usable("settle");
    if (actual_cost > max_exact_count) detail::refuse("actual_cost must be at most 2^53");
    const auto& settling = settle_charges(user, model, request_id, actual_cost, /*every_tier=*/false);
    return counting_backend_errors([&] { return storage_.settle(settling.charges, settling.id); }) != 0;
  }

  // Refunds a request that never ran (the queue was full, the upstream failed before starting): everything
  // admitting it with `request_id` charged comes back, in every tier (requests tiers too), and the id is
  // forgotten, so a retry with the same id is decided afresh, as a new request. Its entries stay at their
  // times costing nothing. Returns false when no tier holds it. Thread safety: safe, as settle().
  // Throws std::invalid_argument on an empty or over-long user, model or request_id; airl::BackendError when
  // the store fails (the charge then stands until it expires).
  bool refund(std::string_view user, std::string_view model, std::string_view request_id)
    requires RefundingStoragePolicy<Storage>
  {
    require_usable("refund");
    const auto& refunding = settle_charges(user, model, request_id, 0, /*every_tier=*/true);
    return counting_backend_errors([&] { return storage_.refund(refunding.charges, refunding.id); }) != 0;
  }

  // Cost units counting now in `tier`'s bucket for (user, model). Thread safety: safe.
  // Throws std::invalid_argument on an unknown tier or an invalid id.
  std::uint64_t usage(std::string_view tier, std::string_view user, std::string_view model) {
    require_usable("usage");
    detail::validate_request(user, model, 1, {});
    const std::size_t index = index_of(tier);
    const Quota quota = current(index);  // the window is the tier's, whoever asks
    return counting_backend_errors([&] { return storage_.usage(bucket_of(tiers_[index], user, model), quota); });
  }

  // Clears every bucket of `user` (its user and user_model tiers, all models); nothing of other users.
  // Metrics are kept. Thread safety: safe. Throws std::invalid_argument on an empty or over-long user.
  void reset(std::string_view user) {
    require_usable("reset");
    detail::validate_id(user, "user");
    counting_backend_errors([&] { storage_.erase_user(user); });
  }

  // Clears the user_model buckets of this pair only. Thread safety: safe.
  // Throws std::invalid_argument on an empty or over-long id.
  void reset(std::string_view user, std::string_view model) {
    require_usable("reset");
    detail::validate_request(user, model, 1, {});
    std::vector<BucketRef> buckets;
    for (const Tier& tier : tiers_) {
      if (tier.scope == Scope::user_model) buckets.push_back(bucket_of(tier, user, model));
    }
    counting_backend_errors([&] { storage_.erase(buckets); });
  }

  // Drops buckets whose window holds nothing; returns how many. Thread safety: safe.
  std::size_t purge_expired() {
    require_usable("purge_expired");
    return counting_backend_errors([&] { return storage_.purge_expired(); });
  }

  // A snapshot of the counters. Thread safety: safe; never blocks deciding threads. Throws only std::bad_alloc
  // (and std::logic_error when moved from, as every member).
  Metrics metrics() const {
    require_usable("metrics");
    const auto totals = counters_.totals();
    Metrics metrics;
    metrics.allowed = totals.allowed;
    metrics.denied = totals.denied;
    metrics.backend_errors = totals.backend_errors;
    metrics.active_keys = storage_.active_keys();
    metrics.degraded = totals.degraded;
    metrics.denied_key_capacity = totals.key_capacity;
    metrics.denied_backend_unavailable = totals.backend_unavailable;
    for (std::size_t i = 0; i < totals.denied_by_tier.size() && i < tiers_.size(); ++i) {
      metrics.denied_by_tier.push_back({tiers_[i].name, totals.denied_by_tier[i]});
    }
    metrics.latency.counts = totals.latency;
    metrics.latency.sum_ns = totals.latency_sum_ns;
    return metrics;
  }

  // Plans, overrides and runtime changes (docs/AI-SERVING.md). Each change applies to every decision that
  // starts after it returns, on every thread; logs already recorded are kept. For a request, the limit of a
  // tier is, from most to least specific: an override for its user+model, for its user, for its model; its
  // plan's limit; the tier's own. Windows are the tiers' own (see plans.hpp): a shorter window drops older
  // entries at the next decision on each bucket; a longer one counts what is still logged, but a bucket idle
  // since before the change may already have been dropped under the old window (and on Redis by its TTL).
  // Until the first change a limiter reads none of this (one atomic load per decision).

  // Changes a tier's quota (limit and window) for everyone. Thread safety: safe.
  // Throws std::invalid_argument on an unknown tier, a window outside (0, max_window] or a limit above 2^53.
  void set_quota(std::string_view tier, Quota quota) {
    require_usable("set_quota");
    book().set_quota(index_of(tier), quota);
  }
  // Adds or replaces a plan: limits for some of the tiers (the others keep theirs). A request uses the plan
  // it names (Request::plan), else the resolver's, else none. Thread safety: safe. Throws
  // std::invalid_argument on an empty or over-long name, an unknown or repeated tier, a tier shared
  // between users (Scope::model, Scope::global), or a limit above 2^53.
  void set_plan(std::string_view plan, const std::vector<PlanLimit>& limits) {
    require_usable("set_plan");
    book().set_plan(plan, limits);
  }
  // Removes a plan; returns whether it existed. Requests still naming it are then refused
  // (std::invalid_argument), so reassign users first. Thread safety: safe.
  bool remove_plan(std::string_view plan) {
    require_usable("remove_plan");
    return book().remove_plan(plan);
  }
  // Sets the function mapping a user to a plan for requests that name none (an empty function removes it).
  // See PlanResolver for what it may do. Thread safety: safe.
  void set_plan_resolver(PlanResolver resolver) {
    require_usable("set_plan_resolver");
    book().set_resolver(std::move(resolver));
  }
  // Sets the limit of one tier for one user, model or user+model, above any plan. Thread safety: safe.
  // Throws std::invalid_argument on an unknown tier, no user and no model, an id the tier's scope does not
  // have (a model on a user tier, say), an over-long id, or a limit above 2^53.
  void set_override(const LimitTarget& target, std::uint64_t limit) {
    require_usable("set_override");
    book().set_override(target, limit);
  }
  // Removes an override; returns whether it existed. Thread safety: safe. Throws like set_override.
  bool clear_override(const LimitTarget& target) {
    require_usable("clear_override");
    return book().clear_override(target);
  }
  // The tiers as they apply to this request now: each with the limit the rules above give it (for
  // <airl/http.hpp>'s headers, which then advertise the user's own limits). Thread safety: safe.
  // Throws std::invalid_argument on an unknown plan; whatever the resolver throws.
  std::vector<Tier> tiers_for(std::string_view user, std::string_view model, std::string_view plan = {}) const {
    require_usable("tiers_for");
    std::vector<Tier> tiers = tiers_;
    std::vector<Charge> charges(tiers_.size());
    for (std::size_t i = 0; i < tiers_.size(); ++i) charges[i].quota = tiers_[i].quota;
    resolve_rules(charges, Request{user, model, 1, {}, plan});
    for (std::size_t i = 0; i < tiers.size(); ++i) tiers[i].quota = charges[i].quota;
    return tiers;
  }

  // The tiers as constructed (names, scopes, units and initial quotas); tiers_for() gives the ones in force.
  // These four throw std::logic_error when the limiter was moved from, else nothing.
  const std::vector<Tier>& tiers() const {
    require_usable("tiers");
    return tiers_;
  }
  const LimiterOptions& options() const {
    require_usable("options");
    return options_;
  }
  Storage& storage() {
    require_usable("storage");
    return storage_;
  }
  const Storage& storage() const {
    require_usable("storage");
    return storage_;
  }

 private:
  template <class>
  friend class SlidingWindowLimiter;  // decides in one tier: allow_in<1>

  // allow() for `Extent` tiers (std::dynamic_extent: any number). SlidingWindowLimiter decides in exactly one:
  // its charge count is known at compile time, and only that path is compiled (and run) for it. `owner` names
  // the class a moved-from refusal names (the one check of the path).
  template <std::size_t Extent>
  Decision allow_in(const Request& request, const char* owner = name) {
    require_usable("allow", owner);
    if (counters_.sample_latency()) [[unlikely]] return timed_allow<Extent>(request);
    detail::validate_request(request.user, request.model, request.cost, request.request_id);
    return decide<Extent>(request);
  }

  // allow() for the sampled decisions the latency histogram records: times a nested allow_in(), which
  // sample_latency() has already let through untimed (it counts that call, see there).
  // A call that throws is timed too: a backend that fails slowly is what the histogram should show.
  template <std::size_t Extent>
  AIRL_DETAIL_NOINLINE Decision timed_allow(const Request& request) {
    const auto start = SteadyClock{}.now();
    try {
      Decision decision = allow_in<Extent>(request);
      counters_.record_latency(SteadyClock{}.now() - start);
      return decision;
    } catch (...) {
      counters_.record_latency(SteadyClock{}.now() - start);
      throw;
    }
  }

  // The storage's decision on the request's charges (Extent of them, when known), as a Decision: one charge
  // per tier with the quota in force for this request (up to inline_parts on the stack). The request id is
  // built only after the rules are resolved: a plan resolver may decide on limiters itself, which reuses this
  // thread's request-id buffer.
  template <std::size_t Extent>
  Decision decide(const Request& request) {
    detail::PartArray<Charge, Extent> room(tiers_.size());
    for (std::size_t i = 0; i < room.size(); ++i) room.make(i, [&] { return charge_of(i, request); });
    resolve_rules(room.span(), request);
    const std::span<const Charge, Extent> charges = room.span();
    const std::string_view request_id = qualified_request_id(request);
    return to_decision(counting_backend_errors([&] {
                         // A storage that trusts charges built here skips checking them again.
                         if constexpr (requires { storage_.acquire(charges, request_id, detail::validated); }) {
                           return storage_.acquire(charges, request_id, detail::validated);
                         } else {
                           return storage_.acquire(charges, request_id);
                         }
                       }),
                       charges);
  }

  struct SettleCall {
    const std::vector<Charge>& charges;
    const std::string& id;
  };
  // The charges that settle (user, model, request_id) at `cost`: in every tier, or only where a settle changes
  // anything (the cost tiers, or every tier of a limiter counting requests only, at cost 1). Per thread.
  SettleCall settle_charges(std::string_view user, std::string_view model, std::string_view request_id,
                            std::uint64_t cost, bool every_tier) {
    detail::validate_request(user, model, 1, request_id);
    detail::validate_id(request_id, "request_id");
    thread_local std::string id;
    detail::encode_request_id(id, user, model, request_id);
    thread_local std::vector<Charge> charges;
    charges.clear();
    const bool counts_cost = std::any_of(tiers_.begin(), tiers_.end(), [](const Tier& t) { return t.unit == Unit::cost; });
    for (std::size_t i = 0; i < tiers_.size(); ++i) {
      const Tier& tier = tiers_[i];
      if (!every_tier && counts_cost && tier.unit == Unit::requests) continue;  // nothing to settle there
      charges.push_back(Charge{bucket_of(tier, user, model), current(i), every_tier || counts_cost ? cost : 1});
    }
    return {charges, id};
  }

  // Runs a storage call; a BackendError it throws is counted in the metrics, then passed on.
  template <class Call>
  decltype(auto) counting_backend_errors(Call&& call) {
    try {
      return call();
    } catch (const BackendError&) {
      counters_.count_backend_error();
      throw;
    }
  }

  static constexpr const char* name = "airl::MultiTierLimiter";

  // Every public member calls this first: a moved-from limiter (its rules_ went with the move) throws
  // std::logic_error naming `owner` and `member` (detail/moved_from.hpp).
  AIRL_DETAIL_HOT_INLINE void require_usable(const char* member, const char* owner = name) const {
    detail::require_not_moved_from(rules_ != nullptr, owner, member);
  }

  static BucketRef bucket_of(const Tier& tier, std::string_view user, std::string_view model) noexcept {
    return BucketRef{tier.scope, tier.name, user, model};
  }

  // The request id as the storage remembers it, bound to (user, model); empty when the request has none.
  // Built in a per-thread buffer, so a warm thread does not allocate.
  static std::string_view qualified_request_id(const Request& request) {
    if (request.request_id.empty()) return {};
    thread_local std::string buffer;
    detail::encode_request_id(buffer, request.user, request.model, request.request_id);
    return buffer;
  }

  // Tier i's charge for `request`, at the tier's own quota: its cost, or 1 in a tier that counts requests.
  Charge charge_of(std::size_t i, const Request& request) const noexcept {
    const Tier& tier = tiers_[i];
    return Charge{bucket_of(tier, request.user, request.model), tier.quota,
                  tier.unit == Unit::requests ? 1 : request.cost, static_cast<unsigned>(tier.unit)};
  }

  // Writes into the charges the quotas in force for this request, once any rule was set (plans, overrides,
  // runtime quotas). Throws std::invalid_argument on an unknown plan; what a plan resolver throws.
  void resolve_rules(std::span<Charge> charges, const Request& request) const {
    if (const detail::QuotaRules* rules = rules_->active()) [[unlikely]] {
      rules->resolve(rules->book, request.user, request.model, request.plan, charges);
    } else if (!request.plan.empty()) [[unlikely]] {
      detail::refuse("unknown plan '{}'", {request.plan});
    }
  }

  // Tier i's quota for everyone now (set_quota changes it).
  Quota current(std::size_t tier) const {
    const detail::QuotaRules* rules = rules_->active();
    return rules == nullptr ? tiers_[tier].quota : rules->current(rules->book, tier);
  }

  std::size_t index_of(std::string_view tier) const {
    for (std::size_t i = 0; i < tiers_.size(); ++i) {
      if (tiers_[i].name == tier) return i;
    }
    detail::refuse("no tier named '{}'", {tier});
  }

  // The runtime rules, made on the first change.
  detail::QuotaBook& book() { return rules_->book(tiers_); }

  // What Decision::reason says for `result`: empty when allowed.
  AIRL_DETAIL_HOT_INLINE std::string reason_of(const AcquireResult& result) const {
    switch (result.status) {
      case Status::denied:  // a storage names one of the charges; a faulty one gets no name, not UB
        return result.binding < reasons_.size() ? reasons_[result.binding].copy() : std::string{};
      case Status::key_capacity: return std::string(key_capacity_reason);
      case Status::backend_unavailable: return std::string(backend_unavailable_reason);
      case Status::allowed:
      case Status::replayed: break;
    }
    return {};
  }

  // The Decision for `result`, which decided `charges` (their quotas give the binding limit).
  template <std::size_t Extent>
  AIRL_DETAIL_HOT_INLINE Decision to_decision(const AcquireResult& result, std::span<const Charge, Extent> charges) {
    Decision decision{.reason = reason_of(result)};  // built in place: no second copy of the text
    decision.status = result.status;
    decision.allowed = admits(result.status);
    decision.replayed = result.status == Status::replayed;
    decision.degraded = result.degraded;
    decision.remaining = result.remaining;
    decision.reset_after = result.reset_after;
    if (!decision.allowed) decision.retry_after = result.retry_after;
    if (result.binding < tiers_.size() && result.binding < charges.size()) {
      decision.limit = charges[result.binding].quota.limit;
      decision.requested = charges[result.binding].cost;
      decision.binding_tier = result.binding;
    }
    if (result.other_group.present && result.other_group.index < charges.size()) {
      decision.other_unit = TierState{result.other_group.index, charges[result.other_group.index].quota.limit,
                                      result.other_group.remaining, result.other_group.reset_after};
    }
    if (result.degraded) counters_.count_degraded();
    counters_.count(result.status, result.binding);
    if (options_.shadow && !decision.allowed) [[unlikely]] {  // counted as denied above; admitted anyway
      decision.allowed = true;
      decision.shadow_denied = true;
    }
    return decision;
  }

  std::vector<Tier> tiers_;
  std::vector<detail::ReasonText> reasons_;  // tiers_[i].name, ready to copy into Decision::reason
  Storage storage_;
  LimiterOptions options_;
  std::unique_ptr<detail::RuleSlot> rules_;  // runtime rules; behind a pointer so the limiter stays movable
  detail::DecisionCounters counters_;
};

}  // namespace airl
