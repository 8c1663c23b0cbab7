// SPDX-License-Identifier: MIT
#pragma once
// The answer to one allow() call. A denial is a value, never an exception: the serving binary turns it
// into an HTTP 429 whose Retry-After and rate-limit headers come straight from these fields.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace airl {

// What decided a request: Decision::status, Permit::status() and a storage's AcquireResult::status. Code that
// decides (an HTTP status, a metric label) switches on it; the reason strings are for people.
enum class Status : unsigned char {
  allowed,              // admitted and recorded
  replayed,             // admitted: its request id was already admitted (charged nothing, recorded nowhere)
  denied,               // refused by a tier or a concurrency cap (the reason names it): recorded nowhere
  key_capacity,         // refused: the in-memory store holds its maximum number of keys and needed a new one
  backend_unavailable,  // refused: the store could not be reached and the failure policy is fail_closed
};

// Whether `status` admits the request (allowed or replayed). Throws nothing.
constexpr bool admits(Status status) noexcept { return status == Status::allowed || status == Status::replayed; }

// The status's name: "allowed", "replayed", "denied", "key_capacity", "backend_unavailable". Throws nothing.
constexpr std::string_view to_string(Status status) noexcept {
  switch (status) {
    case Status::allowed: return "allowed";
    case Status::replayed: return "replayed";
    case Status::denied: return "denied";
    case Status::key_capacity: return "key_capacity";
    case Status::backend_unavailable: return "backend_unavailable";
  }
  return "unknown";
}

// Decision::reason (and Permit::reason()) of a request refused with Status::key_capacity. No tier may use it.
inline constexpr std::string_view key_capacity_reason = "key_capacity";

// Decision::reason (and Permit::reason()) of a request refused with Status::backend_unavailable. No tier may
// use it.
inline constexpr std::string_view backend_unavailable_reason = "backend_unavailable";

// One tier's counters as a decision saw them.
struct TierState {
  std::size_t tier = 0;                      // index in the limiter's tiers()
  std::uint64_t limit = 0;                   // its limit in force
  std::uint64_t remaining = 0;               // units still admissible in it after this decision
  std::chrono::milliseconds reset_after{0};  // until its window holds nothing
};

struct Decision {
  using Status = airl::Status;
  static constexpr std::chrono::milliseconds never = std::chrono::milliseconds::max();

  bool allowed = false;                      // send the request on (shadow_denied admissions included)
  std::uint64_t limit = 0;                   // limit of the binding quota
  std::uint64_t remaining = 0;               // cost units still admissible in the binding quota after this decision
  std::uint64_t requested = 0;               // what the request asked of the binding quota: its cost there (1
                                             // in a tier counting requests)
  std::chrono::milliseconds retry_after{0};  // 0 when allowed (unless shadow_denied); else the smallest wait (rounded up to ms) after which
                                             // the same request passes absent other traffic; `never` when it never can
  std::chrono::milliseconds reset_after{0};  // until the binding window holds nothing
  std::string reason;                        // empty when allowed; else the denying tier's name (also set on a
                                             // shadow_denied admission)
  bool degraded = false;                     // set by backends that decide without their store
  bool replayed = false;                     // allowed because its request_id was already admitted (not charged again)
  std::size_t binding_tier = 0;              // index in the limiter's tiers() of the binding quota (limit,
                                             // remaining and reset_after describe it); 0 for key_capacity and
                                             // backend_unavailable denials, which no tier made
  bool shadow_denied = false;                // allowed only because the limiter is in shadow mode
                                             // (LimiterOptions::shadow): the limits denied it
  // With tiers of both units (requests and cost): the binding tier among those of the unit binding_tier does
  // not count, so a client sees its requests and its tokens. Empty otherwise.
  std::optional<TierState> other_unit = std::nullopt;
  // What the limits decided. Admissions are allowed or replayed; a refusal says who refused. In shadow mode
  // it is the limits' own answer, so a shadow admission (allowed, shadow_denied) keeps the refusal here.
  Status status = Status::denied;

  explicit operator bool() const noexcept { return allowed; }
};

}  // namespace airl
