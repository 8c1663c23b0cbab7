// SPDX-License-Identifier: MIT
#pragma once
// Vocabulary of what is limited: a quota (limit per window), the scopes a tier can key on,
// a tier (a named quota on one scope), and one request as the serving binary sees it.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace airl {

// `limit` cost units admitted per sliding `window`. limit 0 denies everything; window must be > 0.
struct Quota {
  std::uint64_t limit;
  std::chrono::milliseconds window;
};

// One request about to be dispatched. `cost` is 1 for requests-per-window, or a token count.
// `request_id` (optional) makes retries idempotent: an id already admitted in the window is not charged twice.
struct Request {
  std::string_view user;
  std::string_view model;
  std::uint64_t cost = 1;
  std::string_view request_id = {};
};

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

// Longest user, model, request id or tier name accepted, in bytes. Longer ids are refused, not truncated.
inline constexpr std::size_t max_id_length = 4096;

// Longest window accepted (366 days): keeps every timestamp sum far from overflowing 64-bit nanoseconds.
inline constexpr std::chrono::milliseconds max_window = std::chrono::hours(24 * 366);

// Decision::reason of a request refused because the store holds InMemoryOptions::max_keys live keys.
// No tier may use this name.
inline constexpr std::string_view key_capacity_reason = "key_capacity";

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

}  // namespace airl
