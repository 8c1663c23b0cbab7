// SPDX-License-Identifier: MIT
#pragma once
// One request as the serving binary sees it, just before dispatch.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace airl {

// `cost` is 1 for requests-per-window, or a token count. `request_id` (optional) makes retries idempotent:
// an id already admitted for the same user and model within the window is not charged twice.
struct Request {
  std::string_view user;
  std::string_view model;
  std::uint64_t cost = 1;
  std::string_view request_id = {};
  std::string_view plan = {};  // the user's plan (MultiTierLimiter::set_plan); empty: the resolver's, or none
};

// Longest user, model, request id or tier name accepted, in bytes. Longer ids are refused, not truncated.
inline constexpr std::size_t max_id_length = 4096;

}  // namespace airl
