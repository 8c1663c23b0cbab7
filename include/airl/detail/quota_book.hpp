// SPDX-License-Identifier: MIT
#pragma once
// The rules a limiter's tiers follow at runtime: the tiers' current quotas, plans, per-user / per-model /
// per-user+model limit overrides and the plan resolver, behind one reader-writer lock.
//
// Deciding threads read it only once some rule was set (active()): a limiter configured once at construction
// pays one atomic load per decision and takes no lock. Changes are rare (an operator's action), so they take
// the lock exclusively; decisions that started before a change may still use the old limits, every decision
// that starts after it returns uses the new ones. Logs are never touched, so a change loses nothing recorded.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../plans.hpp"
#include "../storage_policy.hpp"
#include "../tier.hpp"
#include "transparent_hash.hpp"
#include "validate.hpp"

namespace airl::detail {

class QuotaBook {
 public:
  explicit QuotaBook(const std::vector<Tier>& tiers) {
    for (const Tier& tier : tiers) {
      names_.push_back(tier.name);
      scopes_.push_back(tier.scope);
      initial_.push_back(tier.quota);
    }
    quotas_ = initial_;
  }

  // Whether any rule was ever set; until then the tiers' own quotas apply and nothing here need be read.
  bool active() const noexcept { return active_.load(std::memory_order_acquire); }

  // Writes the quota each charge's tier has for this request into charges[i].quota (one charge per tier, in
  // tier order). `plan` empty: the resolver's plan for the user, if there is a resolver.
  // Throws std::invalid_argument on an unknown plan; whatever the resolver throws.
  void resolve(std::string_view user, std::string_view model, std::string_view plan, std::span<Charge> charges) const {
    std::shared_lock lock(mutex_);
    std::string resolved;
    if (plan.empty() && resolver_) {
      resolved = resolver_(user);
      plan = resolved;
    }
    const std::vector<std::optional<std::uint64_t>>* plan_limits = nullptr;
    if (!plan.empty()) {
      const auto found = plans_.find(plan);
      if (found == plans_.end()) refuse("unknown plan '" + std::string(plan) + "'");
      plan_limits = &found->second;
    }
    for (std::size_t i = 0; i < charges.size() && i < quotas_.size(); ++i) {
      Quota quota = quotas_[i];
      if (plan_limits != nullptr && (*plan_limits)[i]) quota.limit = *(*plan_limits)[i];
      if (const std::optional<std::uint64_t> limit = override_for(i, user, model)) quota.limit = *limit;
      charges[i].quota = quota;
    }
  }

  // Tier i's current quota for everyone (its limit before plans and overrides).
  Quota current(std::size_t tier) const {
    if (!active()) return initial_[tier];
    std::shared_lock lock(mutex_);
    return quotas_[tier];
  }

  void set_quota(std::size_t tier, Quota quota) {
    validate_quota(quota, names_[tier]);
    std::unique_lock lock(mutex_);
    quotas_[tier] = quota;
    activate();
  }

  // Throws std::invalid_argument on an empty or over-long name, an unknown or repeated tier, or a tier
  // whose bucket is shared between users (model, global).
  void set_plan(std::string_view name, const std::vector<PlanLimit>& limits) {
    validate_id(name, "plan name");
    std::vector<std::optional<std::uint64_t>> by_tier(names_.size());
    for (const PlanLimit& limit : limits) {
      const std::size_t tier = index_of(limit.tier);
      if (scopes_[tier] != Scope::user && scopes_[tier] != Scope::user_model) {
        refuse("plan '" + std::string(name) + "': tier '" + limit.tier + "' is shared between users (scope " +
               std::string(to_string(scopes_[tier])) + "), so it has one limit for everyone: use set_quota");
      }
      if (by_tier[tier]) refuse("plan '" + std::string(name) + "' names tier '" + limit.tier + "' twice");
      by_tier[tier] = limit.limit;
    }
    std::unique_lock lock(mutex_);
    plans_.insert_or_assign(std::string(name), std::move(by_tier));
    activate();
  }

  bool remove_plan(std::string_view name) {
    std::unique_lock lock(mutex_);
    const auto found = plans_.find(name);
    if (found == plans_.end()) return false;
    plans_.erase(found);
    return true;
  }

  void set_resolver(PlanResolver resolver) {
    std::unique_lock lock(mutex_);
    resolver_ = std::move(resolver);
    activate();
  }

  // Throws std::invalid_argument on an unknown tier, or ids the tier's scope does not have (see LimitTarget).
  void set_override(const LimitTarget& target, std::uint64_t limit) {
    std::string key = override_key(target);
    std::unique_lock lock(mutex_);
    const bool added = overrides_.insert_or_assign(std::move(key), limit).second;
    if (added) ++override_counts_[kind_of(target)];
    activate();
  }

  bool clear_override(const LimitTarget& target) {
    const std::string key = override_key(target);
    std::unique_lock lock(mutex_);
    const auto found = overrides_.find(key);
    if (found == overrides_.end()) return false;
    overrides_.erase(found);
    --override_counts_[kind_of(target)];
    return true;
  }

  std::size_t index_of(std::string_view tier) const {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == tier) return i;
    }
    refuse("no tier named '" + std::string(tier) + "'");
  }

 private:
  enum Kind : std::size_t { both = 0, user_only = 1, model_only = 2, kinds = 3 };

  static Kind kind_of(const LimitTarget& target) noexcept {
    if (!target.user.empty() && !target.model.empty()) return both;
    return target.user.empty() ? model_only : user_only;
  }

  // The most specific override of tier i for (user, model): user+model, then user, then model. Under the lock.
  std::optional<std::uint64_t> override_for(std::size_t tier, std::string_view user, std::string_view model) const {
    if (overrides_.empty()) return std::nullopt;
    const Scope scope = scopes_[tier];
    const bool has_user = scope == Scope::user || scope == Scope::user_model;
    const bool has_model = scope == Scope::model || scope == Scope::user_model;
    thread_local std::string key;
    const auto lookup = [&](Kind kind, std::string_view u, std::string_view m) -> std::optional<std::uint64_t> {
      if (override_counts_[kind] == 0) return std::nullopt;
      encode_key(key, tier, kind, u, m);
      const auto found = overrides_.find(std::string_view(key));
      return found == overrides_.end() ? std::nullopt : std::optional<std::uint64_t>(found->second);
    };
    if (has_user && has_model) {
      if (auto limit = lookup(both, user, model)) return limit;
    }
    if (has_user) {
      if (auto limit = lookup(user_only, user, {})) return limit;
    }
    if (has_model) return lookup(model_only, {}, model);
    return std::nullopt;
  }

  std::string override_key(const LimitTarget& target) const {
    const std::size_t tier = index_of(target.tier);
    if (target.user.empty() && target.model.empty()) {
      refuse("an override of tier '" + target.tier + "' needs a user, a model or both (set_quota changes the tier)");
    }
    if (!target.user.empty()) validate_id(target.user, "user");
    if (!target.model.empty()) validate_id(target.model, "model");
    const Scope scope = scopes_[tier];
    const bool user_ok = scope == Scope::user || scope == Scope::user_model;
    const bool model_ok = scope == Scope::model || scope == Scope::user_model;
    if ((!target.user.empty() && !user_ok) || (!target.model.empty() && !model_ok)) {
      refuse("tier '" + target.tier + "' (scope " + std::string(to_string(scope)) +
             ") has no bucket per " + (target.user.empty() || user_ok ? "model" : "user") + " to override");
    }
    std::string key;
    encode_key(key, tier, kind_of(target), target.user, target.model);
    return key;
  }

  // tier index, kind, then user and model each after its 4-byte length: no two targets share a key.
  static void encode_key(std::string& out, std::size_t tier, Kind kind, std::string_view user, std::string_view model) {
    out.clear();
    for (int shift = 0; shift < 32; shift += 8) out.push_back(static_cast<char>((tier >> shift) & 0xFFu));
    out.push_back(static_cast<char>('0' + kind));
    for (const std::string_view part : {user, model}) {
      const auto size = static_cast<std::uint32_t>(part.size());
      for (int shift = 0; shift < 32; shift += 8) out.push_back(static_cast<char>((size >> shift) & 0xFFu));
      out.append(part);
    }
  }

  void activate() noexcept { active_.store(true, std::memory_order_release); }

  // Fixed at construction, read without the lock. Until active_ is set, readers use initial_ and never
  // quotas_, so a reader that saw active_ false just before a change cannot race the write.
  std::vector<std::string> names_;
  std::vector<Scope> scopes_;
  std::vector<Quota> initial_;
  mutable std::shared_mutex mutex_;
  std::vector<Quota> quotas_;  // the tiers' quotas now: read and written under the lock
  std::unordered_map<std::string, std::vector<std::optional<std::uint64_t>>, TransparentHash, std::equal_to<>> plans_;
  std::unordered_map<std::string, std::uint64_t, TransparentHash, std::equal_to<>> overrides_;
  std::size_t override_counts_[kinds] = {0, 0, 0};
  PlanResolver resolver_;
  std::atomic<bool> active_{false};
};

}  // namespace airl::detail
