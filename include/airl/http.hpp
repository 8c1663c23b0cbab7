// SPDX-License-Identifier: MIT
#pragma once
// What a serving binary sends back with a decision or a permit: the status code, the rate-limit response
// headers and, for a refusal, a body: OpenAI's error shape (what OpenAI's SDKs read) or application/problem+json
// (RFC 9457). Plain strings, no HTTP library needed. Every answer is chosen by the status (Decision::status,
// Permit::status()), never by comparing reason strings.
//
// Headers (response_headers):
//   Retry-After, retry-after-ms       denials a wait helps: the wait in whole seconds rounded up, and in ms
//   x-should-retry: false             denials no wait helps (the request costs more than a tier's limit)
//   RateLimit-Policy                  every tier: "name";q=<limit>;w=<window seconds>;qu=<unit>, the unit being
//                                     "requests" or, for tiers that count cost (tokens), "airl-tokens" (the
//                                     ratelimit-headers draft registers no unit for tokens: a vendor value)
//   RateLimit                         the binding tier, and the other unit's binding tier when the tiers count
//                                     both: "name";r=<remaining>;t=<seconds>; t is when more than r is usable
//                                     again: on a denial the Retry-After time for every item, else when the
//                                     tier's window is empty
//   x-ratelimit-limit-<unit>,         OpenAI's names, for the same tiers, <unit> being "requests" or
//   x-ratelimit-remaining-<unit>,     "tokens" by what the tier counts; the reset as a duration ("1s", "6m0s"),
//   x-ratelimit-reset-<unit>          when the window is empty again (as OpenAI describes it)
// A degraded decision (the store unreachable, decided by its failure policy) gets RateLimit-Policy and, when
// refused, the retry headers, but no RateLimit and no x-ratelimit-* counters: the shared quota's are unknown
// (fail_open's would be made up, local's count one replica).
// The binding tier is the denying one, or on admission the one closest to its limit (as a fraction); Decision::other_unit
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

}  // namespace airl::http

namespace airl::detail {

// The refusal headers every answer shares: Retry-After and retry-after-ms when `wait` helps, else
// x-should-retry: false (OpenAI's SDKs read it: retrying cannot succeed).
inline void add_retry_headers(std::vector<http::Header>& headers, std::chrono::milliseconds wait) {
  if (wait == Decision::never) {
    headers.push_back({"x-should-retry", "false"});
    return;
  }
  headers.push_back({"Retry-After", std::to_string(std::max<std::uint64_t>(1, ceil_seconds(wait)))});
  headers.push_back({"retry-after-ms", std::to_string(std::max<std::int64_t>(1, wait.count()))});
}

inline void require_refusal(bool refused, const char* function) {
  if (!refused) throw std::invalid_argument(std::string("airl::http::") + function + ": nothing was refused");
}

}  // namespace airl::detail

namespace airl::http {

inline constexpr std::string_view problem_content_type = "application/problem+json";
inline constexpr std::string_view openai_content_type = "application/json";
inline constexpr std::string_view quota_exceeded_type = "https://iana.org/assignments/http-problem-types#quota-exceeded";
// The body's message when the store could not be reached: nothing about where the store is.
inline constexpr std::string_view store_unavailable_message = "rate limit store unavailable";

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
    value += tier.unit == Unit::requests ? ";qu=\"requests\"" : ";qu=\"airl-tokens\"";
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
  if (!decision.allowed) detail::add_retry_headers(headers, decision.retry_after);
  headers.push_back({"RateLimit-Policy", policy_header_value(tiers)});
  // No tier's counters when the store or the backend refused, or when a failure policy decided without the
  // store (degraded): fail_open's are made up (as if empty) and local's count one replica, not the quota.
  const bool from_tier = !decision.degraded && decision.status != Status::key_capacity &&
                         decision.status != Status::backend_unavailable;
  if (!from_tier) return headers;
  const TierState binding{decision.binding_tier, decision.limit, decision.remaining, decision.reset_after};
  std::vector<TierState> described{binding};
  if (decision.other_unit && tiers[decision.other_unit->tier].unit != tiers[binding.tier].unit) {
    described.push_back(*decision.other_unit);
  }
  // On a denial nothing more is usable in any tier before Retry-After: every item's t says that moment, so no
  // t points earlier than Retry-After (nor later: Retry-After is never earlier than a t).
  const bool waiting = !decision.allowed && decision.retry_after != Decision::never;
  std::string current;
  for (const TierState& state : described) {
    if (!current.empty()) current += ", ";
    detail::append_sf_string(current, tiers[state.tier].name);
    current += ";r=";
    detail::append_sf_integer(current, state.remaining);
    current += ";t=";
    detail::append_sf_integer(current, waiting ? retry_after_seconds(decision)
                                                     : detail::ceil_seconds(state.reset_after));
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

// The OpenAI-shaped body of a denial, {"error":{"message","type","param","code"}}, as OpenAI answers:
//   a tier denied, a wait helps     type "requests" or "tokens" (the tier's unit), code "rate_limit_exceeded",
//                                   "Rate limit reached on <tier> (<unit> per <window>): Limit L, Used U,
//                                   Requested R. Please try again in <wait>."
//   a tier denied, no wait helps    the same type and code, "Request too large for <tier> (<unit> per
//                                   <window>): Limit L, Requested R. ..." (send it with x-should-retry: false)
//   the store was full              type "requests", code "rate_limit_exceeded"
//   the store was unreachable       503: type "server_error", code "rate_limit_store_unavailable"
// Serve it as `openai_content_type`. Throws std::invalid_argument when the decision was allowed or its tier is
// not one of `tiers`.
inline std::string openai_error_json(const Decision& decision, std::span<const Tier> tiers) {
  detail::require_refusal(!decision.allowed, "openai_error_json");
  if (decision.status == Status::backend_unavailable) {
    return detail::openai_error_body(store_unavailable_message, "server_error", "rate_limit_store_unavailable");
  }
  const std::string wait = decision.retry_after == Decision::never
                               ? std::string()
                               : " Please try again in " + detail::duration_text(decision.retry_after) + ".";
  if (decision.status == Status::key_capacity) {
    return detail::openai_error_body("The rate limiter tracks too many keys to admit a new one." + wait,
                                           "requests", "rate_limit_exceeded");
  }
  if (decision.binding_tier >= tiers.size()) {
    throw std::invalid_argument("airl::http: the decision's binding tier is not in the tiers given");
  }
  const Tier& tier = tiers[decision.binding_tier];
  const std::string what = detail::policy_identifier(tier.name) + " (" + std::string(unit_name(tier.unit)) +
                           " per " + detail::duration_text(tier.quota.window) + "): Limit " +
                           std::to_string(decision.limit);
  std::string message;
  if (decision.retry_after == Decision::never) {
    message = "Request too large for " + what + ", Requested " + std::to_string(decision.requested) +
              ". The request must be made smaller: it cannot fit however long it waits.";
  } else {
    const std::uint64_t used = decision.limit - std::min(decision.limit, decision.remaining);
    message = "Rate limit reached on " + what + ", Used " + std::to_string(used) + ", Requested " +
              std::to_string(decision.requested) + "." + wait;
  }
  return detail::openai_error_body(message, unit_name(tier.unit), "rate_limit_exceeded");
}

// The application/problem+json body of a denial (RFC 9457): the quota-exceeded problem type with its
// violated-policies member (draft-ietf-httpapi-ratelimit-headers) naming the denying tier as the headers
// name it (a Decision names the first denying tier only), or "key_capacity" when the store was full; and
// "retry-after" in seconds when a wait helps (an airl extension member). A backend_unavailable denial is not
// a quota matter: it gets a plain 503 problem. Throws std::invalid_argument when the decision was allowed.
inline std::string problem_json(const Decision& decision) {
  detail::require_refusal(!decision.allowed, "problem_json");
  const int status = status_code(decision);
  std::string body = "{\"type\":";
  if (status == 503) {
    body += "\"about:blank\",\"title\":\"Service Unavailable\",\"status\":503,\"detail\":";
    detail::append_json_string(body, store_unavailable_message);
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

// The headers of a refused permit: Retry-After (`retry_after` rounded up to whole seconds, at least 1) and
// retry-after-ms; x-should-retry: false instead when no wait helps (a cap of 0 in flight). An acquired permit
// gets none. Throws std::bad_alloc only.
inline std::vector<Header> response_headers(const Permit& permit,
                                            std::chrono::milliseconds retry_after = default_permit_retry_after) {
  std::vector<Header> headers;
  if (status_code(permit) == 200) return headers;
  detail::add_retry_headers(headers, permit.retry_after() == Decision::never ? Decision::never : retry_after);
  return headers;
}

// Why a permit was refused, in words; `status` is its status code.
inline std::string permit_refusal_text(const Permit& permit, int status) {
  if (status == 503) return std::string(store_unavailable_message);
  if (permit.status() == Status::key_capacity) return "the store of the concurrency caps is full";
  return "too many requests in flight: " + permit.reason() + " is full";
}

// The OpenAI-shaped body of a refused permit: 429 with type "requests" and code "rate_limit_exceeded", or 503
// with type "server_error" and code "rate_limit_store_unavailable". Throws std::invalid_argument when the
// permit was acquired.
inline std::string openai_error_json(const Permit& permit,
                                     std::chrono::milliseconds retry_after = default_permit_retry_after) {
  const int status = status_code(permit);
  detail::require_refusal(status != 200, "openai_error_json");
  if (status == 503) {
    return detail::openai_error_body(store_unavailable_message, "server_error", "rate_limit_store_unavailable");
  }
  std::string message = permit_refusal_text(permit, status);
  message[0] = static_cast<char>(message[0] - 'a' + 'A');
  message += permit.retry_after() == Decision::never
                 ? ": no request can run."
                 : ". Please try again in " + detail::duration_text(retry_after) + ".";
  return detail::openai_error_body(message, "requests", "rate_limit_exceeded");
}

// The application/problem+json body of a refused permit (RFC 9457): 429 naming the full cap (or the full
// store), or 503 when the store could not be reached; "retry-after" in seconds as the headers say it.
// Throws std::invalid_argument when the permit was acquired.
inline std::string problem_json(const Permit& permit,
                                std::chrono::milliseconds retry_after = default_permit_retry_after) {
  const int status = status_code(permit);
  detail::require_refusal(status != 200, "problem_json");
  std::string body = "{\"type\":\"about:blank\",\"title\":";
  body += status == 503 ? "\"Service Unavailable\",\"status\":503" : "\"Too Many Requests\",\"status\":429";
  body += ",\"detail\":";
  detail::append_json_string(body, permit_refusal_text(permit, status));
  if (permit.retry_after() != Decision::never) {
    body += ",\"retry-after\":" + std::to_string(std::max<std::uint64_t>(1, detail::ceil_seconds(retry_after)));
  }
  body += "}";
  return body;
}

}  // namespace airl::http
