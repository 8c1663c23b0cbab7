// SPDX-License-Identifier: MIT
#pragma once
// The limiters under test behind one call, allow(user, model, cost) -> bool, so each scenario is written once
// and registered for every subject: the floor, the naive ports, airl's RateLimiter and a 3-tier
// MultiTierRateLimiter (user_model at the scenario's quota, user at 10x, global at 1000x, same window), and the
// RateLimiter and the floor on the coarse clock, and RateLimiter with and without request ids.

#include <airl/airl.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "baselines.hpp"
#include "minimal_exact.hpp"

namespace airl_bench {

// airl's one-tier limiter on a given clock.
template <class Clock>
class AirlOnClock {
 public:
  explicit AirlOnClock(airl::Quota quota) : limiter_(quota) {}
  bool allow(std::string_view user, std::string_view model, std::uint64_t cost) {
    return limiter_.allow(airl::Request{user, model, cost}).allowed;
  }

 private:
  airl::SlidingWindowLimiter<airl::InMemoryStorage<Clock>> limiter_;
};

// airl::RateLimiter (steady clock).
using AirlSingle = AirlOnClock<airl::SteadyClock>;
// RateLimiter on CoarseSteadyClock (CLOCK_MONOTONIC_COARSE): the same decisions at tick resolution, for the
// clock's share of the floor.
using AirlCoarse = AirlOnClock<airl::CoarseSteadyClock>;

// The floor with the coarse clock: what AirlCoarse is compared with.
class FloorCoarse {
 public:
  explicit FloorCoarse(airl::Quota /*unused*/) {}
  bool allow(std::string_view user, std::string_view model, std::uint64_t cost) {
    return floor_.allow_at(airl::CoarseSteadyClock{}.now().count(), user, model, cost);
  }

 private:
  Floor floor_{airl::Quota{1, std::chrono::seconds(1)}};
};

// RateLimiter on a ManualClock moved 10 us per decision, with or without a unique 36-character request id
// per decision (both format it, so the pair differs only in what airl does with it): every bucket then holds
// the same entries in both, however fast each runs. With 1000 keys round-robin and a 1 s window, each bucket
// holds 100 entries (and their ids).
template <bool WithIds>
class AirlIds {
 public:
  explicit AirlIds(airl::Quota quota) : limiter_(quota, airl::InMemoryStorage<airl::ManualClock>({}, clock_)) {}
  bool allow(std::string_view user, std::string_view model, std::uint64_t cost) {
    std::uint64_t n = next_++;
    for (std::size_t at = 0; at < 16; ++at, n >>= 4) id_[at + (at >= 8 ? 1 : 0)] = "0123456789abcdef"[n & 15];
    const std::string_view id = WithIds ? std::string_view(id_.data(), id_.size()) : std::string_view();
    const bool allowed = limiter_.allow(airl::Request{.user = user, .model = model, .cost = cost, .request_id = id}).allowed;
    clock_.advance(std::chrono::microseconds(10));
    return allowed;
  }

 private:
  airl::ManualClock clock_;
  airl::SlidingWindowLimiter<airl::InMemoryStorage<airl::ManualClock>> limiter_;
  std::array<char, 36> id_ = {'0', '0', '0', '0', '0', '0', '0', '0', '-', '0', '0', '0', '0', '-', '4', '0', '0', '0',
                              '-', 'a', '0', '0', '0', '-', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0'};
  std::uint64_t next_ = 0;
};
using AirlNoIds = AirlIds<false>;
using AirlWithIds = AirlIds<true>;

class AirlMulti {
 public:
  explicit AirlMulti(airl::Quota quota)
      : limiter_({{"user_model", airl::Scope::user_model, quota},
                  {"user", airl::Scope::user, {quota.limit * 10, quota.window}},
                  {"global", airl::Scope::global, {quota.limit * 1000, quota.window}}}) {}
  bool allow(std::string_view user, std::string_view model, std::uint64_t cost) {
    return limiter_.allow(airl::Request{user, model, cost}).allowed;
  }

 private:
  airl::MultiTierRateLimiter limiter_;
};

// Names used in benchmark names (and by summary.py).
template <class Subject> inline constexpr std::string_view subject_name = "?";
template <> inline constexpr std::string_view subject_name<Floor> = "floor";
template <> inline constexpr std::string_view subject_name<NaiveLimiter> = "naive";
template <> inline constexpr std::string_view subject_name<NaiveWeightedLimiter> = "naive_weighted";
template <> inline constexpr std::string_view subject_name<AirlSingle> = "airl";
template <> inline constexpr std::string_view subject_name<AirlMulti> = "airl_multi3";
template <> inline constexpr std::string_view subject_name<AirlCoarse> = "airl_coarse";
template <> inline constexpr std::string_view subject_name<FloorCoarse> = "floor_coarse";
template <> inline constexpr std::string_view subject_name<MinimalExact> = "minimal_exact";
template <> inline constexpr std::string_view subject_name<AirlNoIds> = "airl_no_id";
template <> inline constexpr std::string_view subject_name<AirlWithIds> = "airl_id";

}  // namespace airl_bench
