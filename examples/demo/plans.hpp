// SPDX-License-Identifier: MIT
#pragma once
// The server's plans. Each plan is ONE airl::MultiTierLimiter whose tiers mix request counts
// (Unit::requests: 1 per request, whatever its size) and token budgets (Unit::cost: the request's tokens).
// One allow() decides them all together: a request is charged in every tier or in none, so a refusal by a
// request tier never leaves tokens charged, and the reverse.
//
// Every window is one second, so a few seconds of traffic show windows filling and sliding. The tiers are
// listed narrowest first, because a denial's `reason` names the first tier (in this order) that refused.
// The model and global tiers live in each plan's own limiter: "global" means "everyone on this plan".
// A fleet-wide cap would be one more limiter, or these tiers in a storage that all plans share.
// The limiters are templates over their storage: in memory by default, RedisStorage with --redis.

#include <airl/airl.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace demo {

template <class Storage>
struct Plan {
  std::string name;
  airl::MultiTierLimiter<Storage> limiter;
};

// One plan's limits, per 1 s sliding window.
struct PlanLimits {
  std::uint64_t user_model_rps;  // requests per (user, model)
  std::uint64_t user_model_tps;  // tokens per (user, model); above max_tokens, so any single request can fit
  std::uint64_t user_rps;        // requests per user, all models
  std::uint64_t model_tps;       // tokens per model, all users of the plan
  std::uint64_t global_rps;      // requests, all users and models of the plan
};

inline constexpr std::chrono::milliseconds plan_window{1000};

// The tiers of one plan, narrowest first. Throws nothing beyond std::bad_alloc.
inline std::vector<airl::Tier> plan_tiers(const PlanLimits& limits) {
  using airl::Scope;
  using airl::Unit;
  const auto quota = [](std::uint64_t limit) { return airl::Quota{limit, plan_window}; };
  return {
      {"user_model_rps", Scope::user_model, quota(limits.user_model_rps), Unit::requests},
      {"user_model_tps", Scope::user_model, quota(limits.user_model_tps), Unit::cost},
      {"user_rps", Scope::user, quota(limits.user_rps), Unit::requests},
      {"model_tps", Scope::model, quota(limits.model_tps), Unit::cost},
      {"global_rps", Scope::global, quota(limits.global_rps), Unit::requests},
  };
}

// The three plans, one limiter each, on the storage `make_storage(plan name)` returns. Each plan needs storage
// of its own: the plans share tier names, so one store would merge their model and global buckets.
// Throws std::invalid_argument if a tier is malformed.
template <class MakeStorage>
auto make_plans(MakeStorage make_storage) {
  using Storage = decltype(make_storage(std::string_view{}));
  struct Row {
    const char* name;
    PlanLimits limits;
  };
  // Columns:         user_model_rps  user_model_tps  user_rps  model_tps  global_rps
  const Row rows[] = {{"free",       {3,              5'000,          5,        10'000,    12}},
                      {"pro",        {6,              15'000,         10,       18'000,    16}},
                      {"enterprise", {18,             45'000,         32,       60'000,    55}}};
  std::vector<Plan<Storage>> plans;
  for (const Row& row : rows) {
    airl::MultiTierLimiter<Storage> limiter(plan_tiers(row.limits), make_storage(row.name));
    plans.push_back(Plan<Storage>{row.name, std::move(limiter)});
  }
  return plans;
}

}  // namespace demo
