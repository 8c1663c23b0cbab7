// SPDX-License-Identifier: MIT
#pragma once
// Tiers: a named quota on one scope (which requests share a bucket), counting cost or requests.

#include <string>
#include <string_view>

#include "quota.hpp"

namespace airl {

// Which bucket a tier counts in: per user (all models), per model (all users), per user+model, or one for everyone.
enum class Scope { user, model, user_model, global };

// What a tier counts: the request's cost (tokens, say), or 1 per request whatever its cost. One limiter can
// then enforce requests per minute and tokens per minute together, all-or-nothing.
enum class Unit { cost, requests };

// A named quota on one scope. The name is what Decision::reason reports when this tier denies.
struct Tier {
  std::string name;
  Scope scope;
  Quota quota;
  Unit unit = Unit::cost;
};

// The scope's name as used in docs and logs: "user", "model", "user_model", "global".
constexpr std::string_view to_string(Scope scope) noexcept {
  switch (scope) {
    case Scope::user: return "user";
    case Scope::model: return "model";
    case Scope::user_model: return "user_model";
    case Scope::global: return "global";
  }
  return "unknown";
}

// Whether `scope` is one of the four above (a value cast from an integer may not be). Throws nothing.
constexpr bool known_scope(Scope scope) noexcept {
  return scope == Scope::user || scope == Scope::model || scope == Scope::user_model || scope == Scope::global;
}
// Whether a bucket of `scope` is per user (then its user id names it), per model (its model id). Throw nothing.
constexpr bool scope_has_user(Scope scope) noexcept { return scope == Scope::user || scope == Scope::user_model; }
constexpr bool scope_has_model(Scope scope) noexcept { return scope == Scope::model || scope == Scope::user_model; }

}  // namespace airl
