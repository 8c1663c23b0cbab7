// SPDX-License-Identifier: MIT
#pragma once
// The reference model: the rules of docs/DESIGN.md ("The rules", "Several tiers: all or nothing") and of
// AI-SERVING.md (plans, overrides, runtime quotas, shadow mode), written for clarity, not speed. Per bucket a
// plain list of (time, cost, id); every decision walks it. The differential tests (differential.hpp) drive
// this model and a real limiter with the same operations and require the same answers.
//
// Times are nanoseconds, as the limiter's clock gives them. Nothing here is shared with the library but its
// vocabulary types (Decision, Tier, Request, ...): the rules are written again, independently.

#include <airl/decision.hpp>
#include <airl/limiter_options.hpp>
#include <airl/plans.hpp>
#include <airl/request.hpp>
#include <airl/tier.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace airl::test {

class ReferenceModel {
 public:
  ReferenceModel(std::vector<Tier> tiers, LimiterOptions options) : tiers_(std::move(tiers)), options_(options) {}

  Decision allow(const Request& request, std::int64_t now) {
    const std::vector<std::uint64_t> limits = limits_for(request);  // throws on an unknown plan
    return decide(request, limits, now);
  }

  // Each in turn, after checking every request first (allow_many refuses the batch before deciding any).
  std::vector<Decision> allow_many(const std::vector<Request>& requests, std::int64_t now) {
    std::vector<std::vector<std::uint64_t>> limits;
    for (const Request& request : requests) limits.push_back(limits_for(request));
    std::vector<Decision> decisions;
    for (std::size_t i = 0; i < requests.size(); ++i) decisions.push_back(decide(requests[i], limits[i], now));
    return decisions;
  }

  // Rule 9: in the tiers counting cost (every tier, at cost 1, when none does), the live entry of this
  // request now costs `cost`.
  bool settle(const std::string& user, const std::string& model, const std::string& id, std::uint64_t cost,
              std::int64_t now) {
    const bool counts_cost = std::any_of(tiers_.begin(), tiers_.end(), [](const Tier& t) { return t.unit == Unit::cost; });
    bool held = false;
    for (std::size_t i = 0; i < tiers_.size(); ++i) {
      if (counts_cost && tiers_[i].unit == Unit::requests) continue;
      for (Entry& entry : live(bucket(i, user, model), i, now)) {
        if (entry.id_live && entry.id == qualified(user, model, id)) {
          entry.cost = counts_cost ? cost : 1;
          held = true;
        }
      }
    }
    return held;
  }

  // Rule 10: a settle to 0 in every tier, after which the entry no longer answers to the id.
  bool refund(const std::string& user, const std::string& model, const std::string& id, std::int64_t now) {
    bool held = false;
    for (std::size_t i = 0; i < tiers_.size(); ++i) {
      for (Entry& entry : live(bucket(i, user, model), i, now)) {
        if (entry.id_live && entry.id == qualified(user, model, id)) {
          entry.cost = 0;
          entry.id_live = false;
          held = true;
        }
      }
    }
    return held;
  }

  std::uint64_t usage(std::size_t tier, const std::string& user, const std::string& model, std::int64_t now) {
    std::uint64_t sum = 0;
    for (const Entry& entry : live(bucket(tier, user, model), tier, now)) sum += entry.cost;
    return sum;
  }

  // Every bucket of `user` (user and user_model tiers); with a model, only that pair's user_model buckets.
  void reset(const std::string& user, const std::optional<std::string>& model = std::nullopt) {
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      const auto& [tier, bucket_user, bucket_model] = it->first;
      const Scope scope = tiers_[tier].scope;
      const bool mine = model ? scope == Scope::user_model && bucket_user == user && bucket_model == *model
                              : (scope == Scope::user || scope == Scope::user_model) && bucket_user == user;
      it = mine ? buckets_.erase(it) : std::next(it);
    }
  }

  void set_quota(std::size_t tier, Quota quota) { tiers_[tier].quota = quota; }
  void set_plan(const std::string& name, const std::vector<PlanLimit>& limits) { plans_[name] = limits; }
  bool remove_plan(const std::string& name) { return plans_.erase(name) > 0; }
  void set_override(const LimitTarget& target, std::uint64_t limit) { overrides_[key(target)] = limit; }
  bool clear_override(const LimitTarget& target) { return overrides_.erase(key(target)) > 0; }

  const std::vector<Tier>& tiers() const { return tiers_; }

 private:
  struct Entry {
    std::int64_t time;
    std::uint64_t cost;
    std::string id;  // the qualified id, empty for none
    bool id_live;    // false once refunded
  };
  using BucketKey = std::tuple<std::size_t, std::string, std::string>;  // tier, user, model (as the scope has)

  static constexpr std::int64_t never_ns = std::numeric_limits<std::int64_t>::max();

  // One tier's answer for one request (durations in nanoseconds).
  struct Verdict {
    bool fits;
    std::uint64_t remaining;
    std::int64_t retry;
    std::int64_t reset;
  };

  static std::string qualified(const std::string& user, const std::string& model, const std::string& id) {
    return std::to_string(user.size()) + ":" + user + std::to_string(model.size()) + ":" + model + id;
  }

  static std::string key(const LimitTarget& target) { return target.tier + '\0' + target.user + '\0' + target.model; }

  std::int64_t window_ns(std::size_t tier) const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(tiers_[tier].quota.window).count();
  }

  std::vector<Entry>& bucket(std::size_t tier, const std::string& user, const std::string& model) {
    switch (tiers_[tier].scope) {
      case Scope::user: return buckets_[{tier, user, ""}];
      case Scope::model: return buckets_[{tier, "", model}];
      case Scope::user_model: return buckets_[{tier, user, model}];
      case Scope::global: break;
    }
    return buckets_[{tier, "", ""}];
  }

  // Rule 1: the entries that still count (the others are dropped: windows only shrink in the sequences, so
  // dropping early or late gives the same answers).
  std::vector<Entry>& live(std::vector<Entry>& log, std::size_t tier, std::int64_t now) {
    const std::int64_t window = window_ns(tier);
    std::erase_if(log, [&](const Entry& entry) { return entry.time + window <= now; });
    return log;
  }

  // The limit of each tier for this request: override user+model, user, model; the plan's; the tier's.
  std::vector<std::uint64_t> limits_for(const Request& request) const {
    const std::vector<PlanLimit>* plan = nullptr;
    if (!request.plan.empty()) {
      const auto found = plans_.find(std::string(request.plan));
      if (found == plans_.end()) throw std::invalid_argument("unknown plan");
      plan = &found->second;
    }
    std::vector<std::uint64_t> limits;
    for (std::size_t i = 0; i < tiers_.size(); ++i) {
      std::uint64_t limit = tiers_[i].quota.limit;
      if (plan != nullptr) {
        for (const PlanLimit& entry : *plan) {
          if (entry.tier == tiers_[i].name) limit = entry.limit;
        }
      }
      const std::string user(request.user), model(request.model);
      for (const LimitTarget& target : {LimitTarget{tiers_[i].name, "", model}, LimitTarget{tiers_[i].name, user, ""},
                                        LimitTarget{tiers_[i].name, user, model}}) {
        if (const auto found = overrides_.find(key(target)); found != overrides_.end()) limit = found->second;
      }
      limits.push_back(limit);
    }
    return limits;
  }

  static std::chrono::milliseconds ceil_ms(std::int64_t ns) {
    if (ns == never_ns) return Decision::never;
    return std::chrono::milliseconds{ns / 1'000'000 + (ns % 1'000'000 > 0 ? 1 : 0)};
  }

  static std::int64_t reset_of(const std::vector<Entry>& log, std::int64_t window, std::int64_t now) {
    return log.empty() ? 0 : log.back().time + window - now;
  }

  // Rules 2 to 7 for one bucket; `cost` 0 peeks (a replay, or a tier that had room in a denied request).
  Verdict verdict(const std::vector<Entry>& log, std::int64_t window, std::uint64_t limit, std::uint64_t cost,
                  std::int64_t now) const {
    std::uint64_t used = 0;
    for (const Entry& entry : log) used += entry.cost;
    const std::uint64_t room = used >= limit ? 0 : limit - used;
    if (cost <= room) return {true, room - cost, 0, cost == 0 ? reset_of(log, window, now) : window};
    Verdict denied{false, room, never_ns, reset_of(log, window, now)};
    if (cost <= limit) {  // rule 5: the oldest entries whose costs add up to what must expire
      const std::uint64_t need = used + cost - limit;
      std::uint64_t freed = 0;
      for (const Entry& entry : log) {
        freed += entry.cost;
        if (freed >= need) {
          denied.retry = entry.time + window - now;
          break;
        }
      }
    }
    return denied;
  }

  // Whether a (remaining of limit) is nearer its limit than b, as a fraction: a_remaining / a_limit <
  // b_remaining / b_limit, cross-multiplied in 128 bits. A limit of 0 is full (fraction 0).
  static bool tighter(std::uint64_t a_remaining, std::uint64_t a_limit, std::uint64_t b_remaining,
                      std::uint64_t b_limit) {
    __extension__ using wide = unsigned __int128;
    const wide a_num = a_limit == 0 ? 0 : a_remaining, a_den = a_limit == 0 ? 1 : a_limit;
    const wide b_num = b_limit == 0 ? 0 : b_remaining, b_den = b_limit == 0 ? 1 : b_limit;
    return a_num * b_den < b_num * a_den;
  }

  Decision decide(const Request& request, const std::vector<std::uint64_t>& limits, std::int64_t now) {
    const std::string user(request.user), model(request.model);
    const std::string id = request.request_id.empty() ? "" : qualified(user, model, std::string(request.request_id));
    const std::size_t n = tiers_.size();
    std::vector<std::vector<Entry>*> logs;
    for (std::size_t i = 0; i < n; ++i) logs.push_back(&live(bucket(i, user, model), i, now));

    bool replayed = false;  // rule 8: held in any of the request's buckets
    for (std::size_t i = 0; i < n && !id.empty(); ++i) {
      for (const Entry& entry : *logs[i]) replayed = replayed || (entry.id_live && entry.id == id);
    }
    std::vector<std::uint64_t> costs;
    for (std::size_t i = 0; i < n; ++i) costs.push_back(tiers_[i].unit == Unit::requests ? 1 : request.cost);

    std::vector<Verdict> verdicts;
    for (std::size_t i = 0; i < n; ++i) {
      verdicts.push_back(verdict(*logs[i], window_ns(i), limits[i], replayed ? 0 : costs[i], now));
    }
    const bool all_fit = std::all_of(verdicts.begin(), verdicts.end(), [](const Verdict& v) { return v.fits; });

    // The binding tier: the first that does not fit; when all fit, the nearest its limit (first of equals).
    std::size_t binding = 0;
    std::int64_t retry = 0;
    if (all_fit) {
      for (std::size_t i = 1; i < n; ++i) {
        if (tighter(verdicts[i].remaining, limits[i], verdicts[binding].remaining, limits[binding])) binding = i;
      }
    } else {
      binding = static_cast<std::size_t>(
          std::find_if(verdicts.begin(), verdicts.end(), [](const Verdict& v) { return !v.fits; }) - verdicts.begin());
      for (const Verdict& v : verdicts) {
        if (!v.fits) retry = std::max(retry, v.retry);
      }
      for (std::size_t i = 0; i < n; ++i) {  // nothing is charged: a tier with room reports it as it is
        if (verdicts[i].fits) verdicts[i] = verdict(*logs[i], window_ns(i), limits[i], 0, now);
      }
    }

    Decision decision;
    decision.status = !all_fit ? Status::denied : replayed ? Status::replayed : Status::allowed;
    decision.allowed = all_fit;
    decision.replayed = all_fit && replayed;
    decision.binding_tier = binding;
    decision.limit = limits[binding];
    decision.requested = costs[binding];
    decision.remaining = verdicts[binding].remaining;
    decision.reset_after = ceil_ms(verdicts[binding].reset);
    decision.retry_after = all_fit ? std::chrono::milliseconds{0} : ceil_ms(retry);
    decision.reason = all_fit ? "" : tiers_[binding].name;

    // The other unit: among its tiers, the first that does not fit, else the nearest its limit.
    std::optional<std::size_t> other;
    for (std::size_t i = 0; i < n; ++i) {
      if (tiers_[i].unit == tiers_[binding].unit) continue;
      if (!other) {
        other = i;
      } else if (verdicts[*other].fits &&
                 (!verdicts[i].fits || tighter(verdicts[i].remaining, limits[i], verdicts[*other].remaining, limits[*other]))) {
        other = i;
      }
    }
    if (other) decision.other_unit = TierState{*other, limits[*other], verdicts[*other].remaining, ceil_ms(verdicts[*other].reset)};

    if (all_fit && !replayed) {
      for (std::size_t i = 0; i < n; ++i) logs[i]->push_back(Entry{now, costs[i], id, !id.empty()});
    }
    if (options_.shadow && !decision.allowed) {
      decision.allowed = true;
      decision.shadow_denied = true;
    }
    return decision;
  }

  std::vector<Tier> tiers_;
  LimiterOptions options_;
  std::map<std::string, std::vector<PlanLimit>> plans_;
  std::map<std::string, std::uint64_t> overrides_;
  std::map<BucketKey, std::vector<Entry>> buckets_;
};

}  // namespace airl::test
