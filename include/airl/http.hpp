// SPDX-License-Identifier: MIT
#pragma once
// What a serving binary sends back with a decision or a permit: the status code, the rate-limit response
// headers and, for a refusal, an application/problem+json body. Plain strings, no HTTP library needed. Every
// answer is chosen by the status (Decision::status, Permit::status()), never by comparing reason strings.
//
// Headers (response_headers):
//   Retry-After                       denials: whole seconds, rounded up (omitted when no wait helps)
//   RateLimit-Policy                  every tier: "name";q=<limit>;w=<window seconds>, plus qu="requests" for
//                                     tiers that count requests and airl-unit="tokens" for tiers that count
//                                     cost (draft-ietf-httpapi-ratelimit-headers-11 has no unit for tokens)
//   RateLimit                         the binding tier, and the other unit's binding tier when the tiers count
//                                     both: "name";r=<remaining>;t=<seconds until more than r> (for the
//                                     denying tier the retry time, else until its window is empty)
//   x-ratelimit-limit-<unit>,         OpenAI's names, for the same tiers, <unit> being "requests" or
//   x-ratelimit-remaining-<unit>,     "tokens" by what the tier counts; the reset as a duration ("1s", "6m0s")
//   x-ratelimit-reset-<unit>
// The binding tier is the denying one, or on admission the one with the least remaining; Decision::other_unit
// is the same choice among the tiers of the other unit, so with a requests tier and a tokens tier both kinds
// of x-ratelimit-* headers are present.
// Names and parameters are written as Structured Fields: a tier name's '"' and '\' are escaped and bytes
// outside printable ASCII (and '%') are written %xx. Build the headers from the decision that decides the
// response: a shadow limiter's decisions describe its candidate limits, which clients should not pace by.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "decision.hpp"
#include "detail/text/http_text.hpp"
#include "permit.hpp"
#include "tier.hpp"

namespace airl::http {

struct Header {
  std::string name;
  std::string value;
  bool operator==(const Header&) const = default;
};

inline constexpr std::string_view problem_content_type = "application/problem+json";
inline constexpr std::string_view quota_exceeded_type = "https://iana.org/assignments/http-problem-types#quota-exceeded";

// The status code of a refusal: 503 when the store could not be reached (it is not the client's doing), else 429.
constexpr int refusal_status_code(Status status) noexcept { return status == Status::backend_unavailable ? 503 : 429; }

// 200 when allowed (shadow-mode admissions included), 503 for backend_unavailable, else 429. Throws nothing.
inline int status_code(const Decision& decision) noexcept {
  return decision.allowed ? 200 : refusal_status_code(decision.status);
}

// A denial's wait in whole seconds, rounded up and at least 1, as Retry-After says it. Requires a wait that
// helps (retry_after != Decision::never).
inline std::uint64_t retry_after_seconds(const Decision& decision) noexcept {
  return std::max<std::uint64_t>(1, detail::ceil_seconds(decision.retry_after));
}

// The unit name a tier's counters are reported in: "requests" or "tokens".
constexpr std::string_view unit_name(Unit unit) noexcept { return unit == Unit::requests ? "requests" : "tokens"; }

// The RateLimit-Policy value for these tiers (a limiter's tiers()). Throws std::invalid_argument on no tiers.
inline std::string policy_header_value(std::span<const Tier> tiers) {
  if (tiers.empty()) throw std::invalid_argument("airl::http: no tiers to describe");
  std::string value;
  for (const Tier& tier : tiers) {
    if (!value.empty()) value += ", ";
    detail::append_sf_string(value, tier.name);
    value += ";q=";
    detail::append_sf_integer(value, tier.quota.limit);
    value += ";w=";  // windows below a second are advertised as 1 s: a client pacing by it is never too fast
    detail::append_sf_integer(value, std::max<std::uint64_t>(1, detail::ceil_seconds(tier.quota.window)));
    value += tier.unit == Unit::requests ? ";qu=\"requests\"" : ";airl-unit=\"tokens\"";
  }
  return value;
}

// The response headers for `decision`, made by a limiter with these tiers (pass limiter.tiers(), or
// limiter.tiers_for(user, model) when plans or overrides give users their own limits).
// RateLimit and the x-ratelimit-* headers describe the binding tier and, for a limiter counting requests and
// tokens, the binding tier of the other unit too (Decision::other_unit), so both kinds are always present.
// Throws std::invalid_argument when a tier the decision names is not one of `tiers`.
inline std::vector<Header> response_headers(const Decision& decision, std::span<const Tier> tiers) {
  if (decision.binding_tier >= tiers.size() || (decision.other_unit && decision.other_unit->tier >= tiers.size())) {
    throw std::invalid_argument("airl::http: the decision's binding tier is not in the tiers given");
  }
  std::vector<Header> headers;
  if (!decision.allowed && decision.retry_after != Decision::never) {
    headers.push_back({"Retry-After", std::to_string(retry_after_seconds(decision))});
  }
  headers.push_back({"RateLimit-Policy", policy_header_value(tiers)});
  const bool from_tier = decision.status != Status::key_capacity && decision.status != Status::backend_unavailable;
  if (!from_tier) return headers;  // no tier's counters: the store or the backend refused
  const TierState binding{decision.binding_tier, decision.limit, decision.remaining, decision.reset_after};
  std::vector<TierState> described{binding};
  if (decision.other_unit && tiers[decision.other_unit->tier].unit != tiers[binding.tier].unit) {
    described.push_back(*decision.other_unit);
  }
  std::string current;
  for (const TierState& state : described) {
    if (!current.empty()) current += ", ";
    detail::append_sf_string(current, tiers[state.tier].name);
    current += ";r=";
    detail::append_sf_integer(current, state.remaining);
    // t: when the client may use more than r again. For the denying tier that is the retry time (draft 11,
    // section 6: Retry-After should not point earlier than it); else when the window holds nothing.
    current += ";t=";
    const bool waiting = !decision.allowed && decision.retry_after != Decision::never && state.tier == binding.tier;
    detail::append_sf_integer(current, detail::ceil_seconds(waiting ? decision.retry_after : state.reset_after));
  }
  headers.push_back({"RateLimit", std::move(current)});
  for (const TierState& state : described) {
    const std::string unit(unit_name(tiers[state.tier].unit));
    headers.push_back({"x-ratelimit-limit-" + unit, std::to_string(state.limit)});
    headers.push_back({"x-ratelimit-remaining-" + unit, std::to_string(state.remaining)});
    headers.push_back({"x-ratelimit-reset-" + unit, detail::duration_text(state.reset_after)});
  }
  return headers;
}

// The application/problem+json body of a denial (RFC 9457): the quota-exceeded problem type with its
// violated-policies member (draft-ietf-httpapi-ratelimit-headers-11) naming the denying tier as the headers
// name it (a Decision names the first denying tier only), or "key_capacity" when the store was full; and
// "retry-after" in seconds when a wait helps (an airl extension member). A backend_unavailable denial is not
// a quota matter: it gets a plain 503 problem. Throws std::invalid_argument when the decision was allowed.
inline std::string problem_json(const Decision& decision) {
  if (decision.allowed) throw std::invalid_argument("airl::http::problem_json: the decision was allowed");
  const int status = status_code(decision);
  std::string body = "{\"type\":";
  if (status == 503) {
    body += "\"about:blank\",\"title\":\"Service Unavailable\",\"status\":503";
  } else {
    detail::append_json_string(body, quota_exceeded_type);
    body += ",\"title\":\"Request cannot be satisfied as assigned quota has been exceeded\",\"status\":429";
  }
  if (decision.retry_after != Decision::never) {
    body += ",\"retry-after\":" + std::to_string(retry_after_seconds(decision));
  }
  if (status != 503) {
    body += ",\"violated-policies\":[";
    detail::append_json_string(body, detail::policy_identifier(decision.reason));
    body += "]";
  }
  body += "}";
  return body;
}

// --- A refused Permit (ConcurrencyLimiter::try_acquire) ---
//
// A slot frees when a request in flight ends, usually within seconds, not when a lease runs out: so a refused
// permit is answered with a short Retry-After hint the caller chooses (default 1 s), never with the lease
// length or Permit::retry_after() (the latest a slot can stay taken).

inline constexpr std::chrono::milliseconds default_permit_retry_after{1000};

// 200 when acquired; 503 when the store could not be reached (Status::backend_unavailable), else 429.
// Throws nothing.
inline int status_code(const Permit& permit) noexcept {
  return permit.acquired() || permit.status() == Status::allowed ? 200 : refusal_status_code(permit.status());
}

// The headers of a refused permit: Retry-After, `retry_after` rounded up to whole seconds (at least 1);
// none when no wait helps (a cap of 0 in flight). An acquired permit gets none. Throws std::bad_alloc only.
inline std::vector<Header> response_headers(const Permit& permit,
                                            std::chrono::milliseconds retry_after = default_permit_retry_after) {
  std::vector<Header> headers;
  if (status_code(permit) == 200 || permit.retry_after() == Decision::never) return headers;
  headers.push_back({"Retry-After", std::to_string(std::max<std::uint64_t>(1, detail::ceil_seconds(retry_after)))});
  return headers;
}

// The application/problem+json body of a refused permit (RFC 9457): 429 naming the full cap (or the full
// store), or 503 when the store could not be reached; "retry-after" in seconds as the headers say it.
// Throws std::invalid_argument when the permit was acquired.
inline std::string problem_json(const Permit& permit,
                                std::chrono::milliseconds retry_after = default_permit_retry_after) {
  const int status = status_code(permit);
  if (status == 200) throw std::invalid_argument("airl::http::problem_json: the permit was acquired");
  std::string body = "{\"type\":\"about:blank\",\"title\":";
  std::string why;
  if (status == 503) {
    body += "\"Service Unavailable\",\"status\":503";
    why = "the store of the concurrency caps is unavailable";
  } else {
    body += "\"Too Many Requests\",\"status\":429";
    why = permit.status() == Status::key_capacity ? "the store of the concurrency caps is full"
                                                      : "too many requests in flight: " + permit.reason() + " is full";
  }
  body += ",\"detail\":";
  detail::append_json_string(body, why);
  if (permit.retry_after() != Decision::never) {
    body += ",\"retry-after\":" + std::to_string(std::max<std::uint64_t>(1, detail::ceil_seconds(retry_after)));
  }
  body += "}";
  return body;
}

}  // namespace airl::http
