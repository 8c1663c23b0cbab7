// SPDX-License-Identifier: MIT
#pragma once
// Argument checks shared by the limiters and the storages. Each throws std::invalid_argument with a message
// that names the offending argument, before anything is read or written.

#include <algorithm>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../decision.hpp"
#include "echo.hpp"
#include "../quota.hpp"
#include "../request.hpp"
#include "../storage_policy.hpp"
#include "../tier.hpp"

namespace airl::detail {

// Throws std::invalid_argument("airl: " + text), each "{}" in `text` replaced by the next value as echo.hpp
// bounds and escapes it. Out of line and cold: one place builds every refusal's message.
[[noreturn, gnu::cold, gnu::noinline]] inline void refuse(std::string_view text,
                                                          std::initializer_list<std::string_view> values = {}) {
  std::string message = "airl: ";
  auto value = values.begin();
  for (std::size_t at = 0; at < text.size(); ++at) {
    if (text.compare(at, 2, "{}") != 0 || value == values.end()) {
      message += text[at];
      continue;
    }
    append_echo(message, *value);
    ++value;
    ++at;
  }
  throw std::invalid_argument(message);
}

// Longest part (name, user or model) a storage accepts when handed keys directly (limiters allow 4096).
inline constexpr std::size_t max_part_length = 0xFFFF;

inline void validate_id(std::string_view id, const char* what) {
  if (id.empty()) refuse("{} must not be empty", {what});
  if (id.size() > max_id_length) {
    refuse("{} is {} bytes; the maximum is {}", {what, std::to_string(id.size()), std::to_string(max_id_length)});
  }
}

inline void validate_quota(const Quota& quota, std::string_view tier) {
  if (quota.window.count() <= 0) refuse("tier '{}': window must be > 0", {tier});
  if (quota.window > max_window) refuse("tier '{}': window must be at most 366 days", {tier});
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
  // size - 1 wraps around for an empty id, so one unsigned compare checks "not empty and not too long"; the
  // four checks are or-ed as integers, so no branch is taken per check.
  const auto bit = [](bool b) { return static_cast<unsigned>(b); };
  if ((bit((user.size() - 1) >= max_id_length) | bit((model.size() - 1) >= max_id_length) | bit(cost == 0) |
       bit(request_id.size() > max_id_length)) != 0) [[unlikely]] {
    refuse_request(user, model, cost, request_id);
  }
}

// Checks a bucket name handed to a storage directly: a known scope, each part at most max_part_length bytes.
inline void validate_bucket(const BucketRef& bucket, const char* where) {
  if (!known_scope(bucket.scope)) refuse("{}: unknown scope", {where});
  if (bucket.name.size() > max_part_length || bucket.user.size() > max_part_length ||
      bucket.model.size() > max_part_length) {
    refuse("{}: a tier, user or model is longer than 65535 bytes", {where});
  }
}

// A window in (0, max_window].
inline bool window_is_valid(std::chrono::milliseconds window) noexcept {
  return static_cast<std::uint64_t>(window.count()) - 1 < static_cast<std::uint64_t>(max_window.count());
}

// Says what is wrong with a charge handed to a storage directly. Called only when charge_is_valid() said no.
[[noreturn, gnu::noinline]] inline void refuse_charge(const Charge& charge, const char* storage) {
  validate_bucket(charge.bucket, storage);
  if (!window_is_valid(charge.quota.window)) refuse("{}::acquire: window must be in (0, 366 days]", {storage});
  if (charge.cost == 0) refuse("{}::acquire: cost must be at least 1", {storage});
  if (charge.quota.limit > max_exact_count) refuse("{}::acquire: limit must be at most 2^53", {storage});
  refuse("{}::acquire: invalid charge", {storage});  // not reached: one of the checks above throws
}

// A known scope, a window in (0, max_window], a cost >= 1, a limit of at most 2^53 (max_exact_count: what
// every storage counts exactly) and parts of at most max_part_length bytes, with one branch: unsigned
// wrap-around folds "> 0" into the range checks. A cost above 2^53 is valid: it exceeds every limit, so it
// is denied for good ('never'), as any cost above its limit.
constexpr bool charge_is_valid(const Charge& charge) noexcept {
  const auto window = static_cast<std::uint64_t>(charge.quota.window.count());
  const auto bit = [](bool b) { return static_cast<unsigned>(b); };
  return (bit(static_cast<unsigned>(charge.bucket.scope) <= static_cast<unsigned>(Scope::global)) &
          bit(window - 1 < static_cast<std::uint64_t>(max_window.count())) & bit(charge.cost != 0) &
          bit(charge.quota.limit <= max_exact_count) &
          bit((charge.bucket.name.size() | charge.bucket.user.size() | charge.bucket.model.size()) <= max_part_length)) != 0;
}

// Tells a storage that what it is handed comes from a limiter that built it from its validated tiers or caps,
// rules and request, so the storage need not check it again per call. A storage that takes it offers an
// overload with it as the last argument (acquire(charges, id, validated), try_acquire(slots, id, validated),
// release(slots, id, where, validated)); limiters call it when it exists.
struct Validated {
  explicit Validated() = default;
};
inline constexpr Validated validated{};

// Checks what a storage is handed directly (limiters have validated their tiers and requests already):
// 1..n charges, each valid as charge_is_valid() says.
inline void validate_charges(std::span<const Charge> charges, const char* storage) {
  if (charges.empty()) [[unlikely]] refuse("{}::acquire: no charges", {storage});
  for (const Charge& charge : charges) {
    if (!charge_is_valid(charge)) [[unlikely]] refuse_charge(charge, storage);
  }
}

// Checks what a storage's settle() is handed: valid buckets and windows (a cost of 0 is a full refund).
inline void validate_settle_charges(std::span<const Charge> charges, const char* storage) {
  for (const Charge& charge : charges) {
    validate_bucket(charge.bucket, storage);
    if (!window_is_valid(charge.quota.window)) refuse("{}::settle: window must be in (0, 366 days]", {storage});
  }
}

// Checks what a concurrency storage is handed directly (limiters have validated their caps already): 1..n
// slots (ConcurrencySlot), each with a known scope, a lease in (0, max_window] and parts of at most
// max_part_length bytes. Throws std::invalid_argument naming `storage`.
template <class Slots>
void validate_slots(const Slots& slots, const char* storage) {
  if (slots.empty()) refuse("{}: no slots", {storage});
  for (const auto& slot : slots) {
    if (!known_scope(slot.bucket.scope)) refuse("{}: unknown scope", {storage});
    if (!window_is_valid(slot.lease)) refuse("{}: lease must be in (0, 366 days]", {storage});
    if (slot.bucket.name.size() > max_part_length || slot.bucket.user.size() > max_part_length ||
        slot.bucket.model.size() > max_part_length) {
      refuse("{}: a cap name, user or model is longer than 65535 bytes", {storage});
    }
  }
}

inline void validate_tiers(const std::vector<Tier>& tiers) {
  if (tiers.empty()) refuse("a limiter needs at least one tier");
  for (std::size_t i = 0; i < tiers.size(); ++i) {
    const Tier& tier = tiers[i];
    validate_id(tier.name, "tier name");
    if (tier.name == key_capacity_reason || tier.name == backend_unavailable_reason) {
      refuse("tier name '{}' is reserved", {tier.name});
    }
    if (!known_scope(tier.scope)) refuse("tier '{}': unknown scope", {tier.name});
    if (tier.unit != Unit::cost && tier.unit != Unit::requests) refuse("tier '{}': unknown unit", {tier.name});
    validate_quota(tier.quota, tier.name);
    if (tier.quota.limit > max_exact_count) {  // as set_quota refuses it: no storage would decide it exactly
      refuse("tier '{}': limit must be at most 2^53 (what every storage decides exactly; 2^53 is as good as unlimited)",
             {tier.name});
    }
    const auto same_name = [&](const Tier& other) { return other.name == tier.name; };
    if (std::any_of(tiers.begin(), tiers.begin() + static_cast<std::ptrdiff_t>(i), same_name)) {
      refuse("duplicate tier name '{}'", {tier.name});
    }
  }
}

}  // namespace airl::detail
