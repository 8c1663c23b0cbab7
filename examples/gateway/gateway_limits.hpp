// SPDX-License-Identifier: MIT
#pragma once
// The gateway's limits behind one small interface, so the backend can be chosen at start (--redis) while
// the limiters stay compile-time templates: BackendLimits<RateStorage, SlotStorage> is instantiated once for
// memory and once for Redis, and the HTTP code only sees Limits.
//
// Admission order: the concurrency caps first, then every rate tier. A slot is free to give back (the permit
// is released when the request is refused later), a charged rate tier is not: so a request refused anywhere
// is charged nowhere, as airl's multi-tier rule says.

#include <airl/airl.hpp>
#include <airl/http.hpp>
#include <airl/prometheus.hpp>
#include <airl/redis/topology_metrics.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway_config.hpp"

namespace gateway {

struct Admission {
  bool admitted = false;
  bool cap_refused = false;  // a concurrency cap (or its store) refused: `permit` says why, `decision` is unset
  airl::Decision decision;   // the rate limiter's decision (when the caps admitted)
  airl::Permit permit;       // held while the completion runs; releases itself
};

struct Health {
  bool healthy = true;     // the backend answered just now
  std::string backend;     // "memory" or "redis"
  std::string detail;      // why not, when not
};

class Limits {
 public:
  virtual ~Limits() = default;

  // Decides `request` in every cap (when `hold_slot`) and every rate tier. Thread-safe. A store that cannot
  // answer is answered by its failure policy (under fail_closed a refusal with Status::backend_unavailable).
  // Throws std::invalid_argument on a bad user, model or id.
  virtual Admission admit(const airl::Request& request, bool hold_slot) = 0;

  // Settles an admitted request at its actual cost (tokens). Thread-safe. False when nothing held it.
  virtual bool settle(std::string_view user, std::string_view model, std::string_view request_id,
                      std::uint64_t actual_cost) = 0;

  // Refunds a request admitted with `request_id` that never ran (see airl's MultiTierLimiter::refund).
  // Thread-safe. False when nothing held it.
  virtual bool refund(std::string_view user, std::string_view model, std::string_view request_id) = 0;

  // The tiers in force for this user, model and plan (for the RateLimit-Policy headers).
  virtual std::vector<airl::Tier> tiers_for(std::string_view user, std::string_view model,
                                            std::string_view plan) const = 0;

  // The limiters' Prometheus text: airl_* counts every admission the caps and tiers decided, and
  // airl_denials_total every refusal by its reason (tier, cap, key_capacity, backend_unavailable);
  // airl_concurrency_* is the caps' own view.
  virtual std::string metrics_text() const = 0;

  // Asks the backend now (one round trip on Redis). Thread-safe. Throws nothing.
  virtual Health health() = 0;
};

template <class RateStorage, class SlotStorage>
class BackendLimits final : public Limits {
 public:
  BackendLimits(const Config& config, RateStorage rates, SlotStorage slots, std::string backend_name)
      : rates_(config.tiers(), std::move(rates)), backend_name_(std::move(backend_name)) {
    for (const auto& [name, limits] : config.plans) rates_.set_plan(name, limits);
    if (!config.in_flight.empty()) slots_.emplace(config.in_flight, std::move(slots));
  }

  Admission admit(const airl::Request& request, bool hold_slot) override {
    Admission admission;
    if (hold_slot && slots_) {
      admission.permit = slots_->try_acquire(request.user, request.model);
      if (!admission.permit) {
        admission.cap_refused = true;
        return admission;
      }
    }
    admission.decision = rates_.allow(request);
    admission.admitted = admission.decision.allowed;
    if (!admission.admitted) admission.permit.release();  // refused by a rate tier: the slot goes back now
    return admission;
  }

  bool settle(std::string_view user, std::string_view model, std::string_view request_id,
              std::uint64_t actual_cost) override {
    return rates_.settle(user, model, request_id, actual_cost);
  }

  bool refund(std::string_view user, std::string_view model, std::string_view request_id) override {
    return rates_.refund(user, model, request_id);
  }

  std::vector<airl::Tier> tiers_for(std::string_view user, std::string_view model,
                                    std::string_view plan) const override {
    return rates_.tiers_for(user, model, plan);
  }

  std::string metrics_text() const override {
    airl::Metrics admissions = rates_.metrics();
    if (!slots_) return airl::prometheus::text(admissions) + topology_text();
    // A request the caps refused never reached the rate tiers: it is one more denied decision, by its cap.
    const airl::ConcurrencyMetrics caps = slots_->metrics();
    admissions.denied += caps.denied;
    admissions.denied_key_capacity += caps.denied_key_capacity;
    admissions.denied_backend_unavailable += caps.denied_backend_unavailable;
    for (const airl::CapDenials& cap : caps.denied_by_cap) admissions.denied_by_tier.push_back({cap.cap, cap.denied});
    return airl::prometheus::text(admissions) + airl::prometheus::text(caps, "airl_concurrency") + topology_text();
  }

  // Redirects, slot map reads and Sentinel rediscoveries, when the limits live in Redis (rates and caps
  // summed: each storage follows the servers on its own).
  std::string topology_text() const {
    if constexpr (requires(const RateStorage& storage) { storage.topology_metrics(); }) {
      airl::RedisTopologyMetrics sum = rates_.storage().topology_metrics();
      if (slots_) sum += slots_->storage().topology_metrics();
      return airl::prometheus::text(sum);
    } else {
      return {};
    }
  }

  Health health() override {
    Health health{true, backend_name_, ""};
    if constexpr (requires(RateStorage& storage) { storage.healthy(); }) {
      try {
        // A real round trip: healthy() alone only remembers the last request's, which may be minutes old.
        (void)rates_.usage("model_rpm", "airl-healthz", "airl-healthz");
        health.healthy = rates_.storage().healthy();
      } catch (const std::exception& error) {
        health.healthy = false;
        health.detail = error.what();
      }
    }
    return health;
  }

 private:
  airl::MultiTierLimiter<RateStorage> rates_;
  std::optional<airl::ConcurrencyLimiter<SlotStorage>> slots_;  // none when the config sets no caps
  std::string backend_name_;
};

}  // namespace gateway
