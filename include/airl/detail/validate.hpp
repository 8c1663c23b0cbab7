// SPDX-License-Identifier: MIT
#pragma once
// Argument checks shared by every limiter. Each throws std::invalid_argument with a message that names
// the offending argument, before anything is read or written.

#include <algorithm>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../decision.hpp"
#include "../quota.hpp"
#include "../request.hpp"
#include "../storage_policy.hpp"
#include "../tier.hpp"

namespace airl::detail {

[[noreturn]] inline void refuse(const std::string& what) { throw std::invalid_argument("airl: " + what); }

inline void validate_id(std::string_view id, const char* what) {
  if (id.empty()) refuse(std::string(what) + " must not be empty");
  if (id.size() > max_id_length) {
    refuse(std::string(what) + " is " + std::to_string(id.size()) + " bytes; the maximum is " +
           std::to_string(max_id_length));
  }
}

inline void validate_quota(const Quota& quota, std::string_view tier) {
  if (quota.window.count() <= 0) refuse("tier '" + std::string(tier) + "': window must be > 0");
  if (quota.window > max_window) refuse("tier '" + std::string(tier) + "': window must be at most 366 days");
}

// Says which argument of a request is wrong. Called only when validate_request found one.
[[noreturn]] inline void refuse_request(std::string_view user, std::string_view model, std::uint64_t cost,
                                        std::string_view request_id) {
  validate_id(user, "user");
  validate_id(model, "model");
  if (cost == 0) refuse("cost must be at least 1");
  validate_id(request_id, "request_id");
  refuse("invalid request");  // not reached: one of the checks above throws
}

// One test for the common case (a valid request), so validation costs a few instructions per decision.
inline void validate_request(std::string_view user, std::string_view model, std::uint64_t cost,
                             std::string_view request_id) {
  // size - 1 wraps around for an empty id, so one unsigned compare checks "not empty and not too long".
  if (((user.size() - 1) >= max_id_length) | ((model.size() - 1) >= max_id_length) | (cost == 0) |
      (request_id.size() > max_id_length)) [[unlikely]] {
    refuse_request(user, model, cost, request_id);
  }
}

// Checks a bucket name handed to a storage directly: a known scope, each part at most 65535 bytes (limiters
// allow 4096).
inline bool known_scope(Scope scope) noexcept {
  return scope == Scope::user || scope == Scope::model || scope == Scope::user_model || scope == Scope::global;
}

inline void validate_bucket(const BucketRef& bucket, const char* where) {
  constexpr std::size_t most = 0xFFFF;
  if (!known_scope(bucket.scope)) refuse(std::string(where) + ": unknown scope");
  if (bucket.tier.size() > most || bucket.user.size() > most || bucket.model.size() > most) {
    refuse(std::string(where) + ": a tier, user or model is longer than 65535 bytes");
  }
}

// Says what is wrong with a charge handed to a storage directly. Called only when charge_is_valid() said no.
template <class Charge>
[[noreturn, gnu::noinline]] void refuse_charge(const Charge& charge, const char* storage) {
  validate_bucket(charge.bucket, storage);
  if (charge.quota.window.count() <= 0 || charge.quota.window > max_window) {
    refuse(std::string(storage) + "::acquire: window must be in (0, 366 days]");
  }
  if (charge.cost == 0) refuse(std::string(storage) + "::acquire: cost must be at least 1");
  refuse(std::string(storage) + "::acquire: invalid charge");  // not reached: one of the checks above throws
}

// A known scope, a window in (0, max_window], a cost >= 1 and parts of at most 65535 bytes, in one branch:
// unsigned wrap-around folds "> 0" into the range checks.
template <class Charge>
constexpr bool charge_is_valid(const Charge& charge) noexcept {
  constexpr std::size_t most = 0xFFFF;
  const auto window = static_cast<std::uint64_t>(charge.quota.window.count());
  return (static_cast<unsigned>(charge.bucket.scope) <= static_cast<unsigned>(Scope::global)) &
         (window - 1 < static_cast<std::uint64_t>(max_window.count())) & (charge.cost != 0) &
         ((charge.bucket.tier.size() | charge.bucket.user.size() | charge.bucket.model.size()) <= most);
}

// Checks what a storage is handed directly (limiters have validated their tiers and requests already):
// 1..n charges, each valid as charge_is_valid() says.
template <class Charges>
void validate_charges(const Charges& charges, const char* storage) {
  if (charges.empty()) refuse(std::string(storage) + "::acquire: no charges");
  for (const auto& charge : charges) {
    if (!charge_is_valid(charge)) [[unlikely]] refuse_charge(charge, storage);
  }
}

// Checks what a storage's settle() is handed: valid buckets and windows (a cost of 0 is a full refund).
template <class Charges>
void validate_settle_charges(const Charges& charges, const char* storage) {
  for (const auto& charge : charges) {
    validate_bucket(charge.bucket, storage);
    if (charge.quota.window.count() <= 0 || charge.quota.window > max_window) {
      refuse(std::string(storage) + "::settle: window must be in (0, 366 days]");
    }
  }
}

inline void validate_tiers(const std::vector<Tier>& tiers) {
  if (tiers.empty()) refuse("a limiter needs at least one tier");
  for (std::size_t i = 0; i < tiers.size(); ++i) {
    const Tier& tier = tiers[i];
    validate_id(tier.name, "tier name");
    if (tier.name == key_capacity_reason || tier.name == backend_unavailable_reason) {
      refuse("tier name '" + tier.name + "' is reserved");
    }
    switch (tier.scope) {
      case Scope::user: case Scope::model: case Scope::user_model: case Scope::global: break;
      default: refuse("tier '" + tier.name + "': unknown scope");
    }
    if (tier.unit != Unit::cost && tier.unit != Unit::requests) refuse("tier '" + tier.name + "': unknown unit");
    validate_quota(tier.quota, tier.name);
    const auto same_name = [&](const Tier& other) { return other.name == tier.name; };
    if (std::any_of(tiers.begin(), tiers.begin() + static_cast<std::ptrdiff_t>(i), same_name)) {
      refuse("duplicate tier name '" + tier.name + "'");
    }
  }
}

}  // namespace airl::detail
