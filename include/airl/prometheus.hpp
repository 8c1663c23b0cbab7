// SPDX-License-Identifier: MIT
#pragma once
// A limiter's metrics in the Prometheus text exposition format (version 0.0.4), for a /metrics endpoint:
//   <prefix>_decisions_total{result="allowed"|"denied"}        counter
//   <prefix>_denials_total{reason="<tier name>"|"key_capacity"|"backend_unavailable"}   counter
//   <prefix>_backend_errors_total                              counter
//   <prefix>_degraded_decisions_total                          counter (a failure policy decided)
//   <prefix>_active_keys                                       gauge
//   <prefix>_decision_latency_seconds                          histogram (one allow() in 64 per thread)
// and a concurrency limiter's (text(ConcurrencyMetrics)):
//   <prefix>_acquisitions_total{result="acquired"|"denied"}   counter
//   <prefix>_denials_total{reason="<cap name>"|"key_capacity"|"backend_unavailable"}   counter
//   <prefix>_permits_held                                      gauge (granted, not yet released or lost)
//   <prefix>_renewals_total{result="renewed"|"lost"}           counter
//   <prefix>_degraded_total                                    counter (a failure policy decided)
//   <prefix>_backend_errors_total, <prefix>_release_errors_total   counters
// Serve it with `content_type`. Label values are escaped as the format requires ('\', '"' and newline);
// bytes that are not valid UTF-8 become U+FFFD. One text per prefix: give each limiter (a shadow one too) its
// own prefix, so their families do not collide and shadow denials are not read as real 429s.

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "detail/text/prometheus_text.hpp"
#include "metrics.hpp"

namespace airl::prometheus {

inline constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

// The exposition text of a ConcurrencyLimiter's metrics(), every name starting with `prefix` + "_" (its own
// prefix by default, so it can be served next to a rate limiter's). Throws std::invalid_argument when
// `prefix` is not a valid metric name.
inline std::string text(const ConcurrencyMetrics& metrics, std::string_view prefix = "airl_concurrency") {
  detail::require_prefix(prefix);
  std::string out;
  const std::string base = std::string(prefix) + "_";
  detail::Writer w{out, base};
  const auto number = [](std::uint64_t n) { return std::to_string(n); };
  w.family("acquisitions_total", "counter", "try_acquire() calls, by result.");
  w.sample("acquisitions_total", "result", "acquired", number(metrics.acquired));
  w.sample("acquisitions_total", "result", "denied", number(metrics.denied));
  w.denials("Refusals, by the cap (or store-level reason) that refused.", metrics.denied_by_cap, metrics.denied_key_capacity, metrics.denied_backend_unavailable);
  w.single("permits_held", "gauge", "Permits granted in this process and not yet released, lost or abandoned.", metrics.held);
  w.family("renewals_total", "counter", "renew() calls, by result.");
  w.sample("renewals_total", "result", "renewed", number(metrics.renewed));
  w.sample("renewals_total", "result", "lost", number(metrics.leases_lost));
  w.single("degraded_total", "counter", "Acquisitions and renewals a failure policy decided without the store.", metrics.degraded);
  w.single("backend_errors_total", "counter", "Store faults.", metrics.backend_errors);
  w.single("release_errors_total", "counter", "Releases that failed in the store (their leases run out).", metrics.release_errors);
  return out;
}

// The exposition text of `metrics` (a limiter's metrics()), every name starting with `prefix` + "_".
// Throws std::invalid_argument when `prefix` is not a valid metric name.
inline std::string text(const Metrics& metrics, std::string_view prefix = "airl") {
  detail::require_prefix(prefix);
  std::string out;
  const std::string base = std::string(prefix) + "_";
  detail::Writer w{out, base};
  const auto number = [](std::uint64_t n) { return std::to_string(n); };

  w.family("decisions_total", "counter", "Rate-limit decisions, by result.");
  w.sample("decisions_total", "result", "allowed", number(metrics.allowed));
  w.sample("decisions_total", "result", "denied", number(metrics.denied));

  w.denials("Denials, by the tier (or store-level reason) that denied.", metrics.denied_by_tier, metrics.denied_key_capacity, metrics.denied_backend_unavailable);

  w.single("backend_errors_total", "counter", "Storage backend calls that failed.", metrics.backend_errors);

  w.single("degraded_decisions_total", "counter", "Decisions a failure policy made without the store.", metrics.degraded);

  w.single("active_keys", "gauge", "Buckets the store holds (expired ones until swept).", metrics.active_keys);

  w.family("decision_latency_seconds", "histogram", "Latency of allow(), one decision in 64 per thread.");
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b < latency_bucket_bounds_ns.size(); ++b) {
    cumulative += metrics.latency.counts[b];
    w.sample("decision_latency_seconds_bucket", "le", detail::seconds_text(latency_bucket_bounds_ns[b]), number(cumulative));
  }
  cumulative += metrics.latency.counts.back();
  w.sample("decision_latency_seconds_bucket", "le", "+Inf", number(cumulative));
  w.sample("decision_latency_seconds_sum", "", "", detail::seconds_text(metrics.latency.sum_ns));
  w.sample("decision_latency_seconds_count", "", "", number(cumulative));
  return out;
}

}  // namespace airl::prometheus
