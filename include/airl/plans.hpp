// SPDX-License-Identifier: MIT
#pragma once
// Plans and overrides: the vocabulary for giving users different limits on the same tiers at runtime
// (MultiTierLimiter::set_plan, set_override, set_quota). docs/AI-SERVING.md, "Plans, overrides and runtime
// changes", explains the precedence.
//
// Plans and overrides set limits only. A tier's window belongs to the tier (set_quota changes it for
// everyone), so a bucket expires its entries the same way whoever asks: no request can make another's
// entries disappear by naming a shorter window.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace airl {

// One tier's limit in a plan, e.g. {"tpm", 1'000'000}. Only tiers whose bucket belongs to one user
// (Scope::user, Scope::user_model) can differ by plan; a shared bucket has one limit for everyone.
struct PlanLimit {
  std::string tier;
  std::uint64_t limit;
};

// What an override applies to: one tier, and a user, a model, or both (empty = any). Which combinations a
// tier accepts follows its scope: user_model tiers take user, model or both; user tiers a user; model tiers
// a model. Global tiers have one bucket: change their limit with set_quota.
struct LimitTarget {
  std::string tier;
  std::string user = {};
  std::string model = {};
};

// Maps a user to a plan name, or "" for no plan (the tiers' own limits). Called on every decision of a
// request that names no plan, from the deciding thread, with no lock held: it must be thread-safe and should
// be fast (it is on the decision path); it may call limiters, this one included. May throw; the exception
// passes out of allow() and nothing is recorded.
using PlanResolver = std::function<std::string(std::string_view user)>;

}  // namespace airl
