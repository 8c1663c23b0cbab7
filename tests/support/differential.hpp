// SPDX-License-Identifier: MIT
#pragma once
// The differential driver: one random sequence of operations and time steps, from a seed, run against the
// reference model (reference_model.hpp) and a real MultiTierLimiter on the same ManualClock. Every Decision
// field, every usage(), settle() and refund() answer, and every refusal must be equal. A difference comes back
// as text naming the seed, the step and both answers; reproduce it with AIRL_DIFFERENTIAL_SEED=<seed>.
//
// What a sequence draws: 1-4 tiers of random scope and unit, limits 0 to 2^40, windows 1 ms to 5 h; costs
// 1 to 2^40 (mostly near the limits, where the answers change); a few users, models and request ids, so ids
// are reused and replayed; settles, refunds, usage, resets, runtime quotas, plans and overrides; shadow mode
// for some sequences; time steps of 0, a few microseconds, exactly a window (the boundary) and hours. Time
// moves in whole microseconds, the Redis script's unit. Windows only shrink at runtime: a window that grows
// again may find entries dropped under the shorter one (DESIGN.md says so), which is not a rule to compare.

#include <airl/multi_tier_limiter.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "reference_model.hpp"

namespace airl::test {

struct DifferentialLimits {
  int steps = 150;  // operations per sequence
};

// What the sequences exercised (the model's answers), so a test can show the generator reaches every rule.
struct DifferentialCoverage {
  std::size_t allowed = 0, denied = 0, never = 0, replayed = 0, shadow_denied = 0, other_unit = 0, refused = 0;
  std::size_t settled = 0, refunded = 0, boundary_steps = 0, binding_not_first = 0;
  void count(const Decision& d) {
    allowed += d.status == Status::allowed;
    denied += d.status == Status::denied;
    never += d.retry_after == Decision::never;
    replayed += d.replayed;
    shadow_denied += d.shadow_denied;
    other_unit += d.other_unit.has_value();
    binding_not_first += d.binding_tier > 0;
  }
};

inline std::string describe(const Decision& d) {
  std::ostringstream out;
  out << "{status=" << to_string(d.status) << " allowed=" << d.allowed << " limit=" << d.limit
      << " remaining=" << d.remaining << " requested=" << d.requested << " retry_after=" << d.retry_after.count()
      << " reset_after=" << d.reset_after.count() << " reason='" << d.reason << "' degraded=" << d.degraded
      << " replayed=" << d.replayed << " binding_tier=" << d.binding_tier << " shadow_denied=" << d.shadow_denied;
  if (d.other_unit) {
    out << " other_unit={tier=" << d.other_unit->tier << " limit=" << d.other_unit->limit
        << " remaining=" << d.other_unit->remaining << " reset_after=" << d.other_unit->reset_after.count() << "}";
  }
  return out.str() + "}";
}

inline bool same(const Decision& a, const Decision& b) {
  const auto other = [](const Decision& d) {
    return d.other_unit ? std::make_tuple(true, d.other_unit->tier, d.other_unit->limit, d.other_unit->remaining,
                                          d.other_unit->reset_after)
                        : std::make_tuple(false, std::size_t{0}, std::uint64_t{0}, std::uint64_t{0},
                                          std::chrono::milliseconds{0});
  };
  return a.status == b.status && a.allowed == b.allowed && a.limit == b.limit && a.remaining == b.remaining &&
         a.requested == b.requested && a.retry_after == b.retry_after && a.reset_after == b.reset_after &&
         a.reason == b.reason && a.degraded == b.degraded && a.replayed == b.replayed &&
         a.binding_tier == b.binding_tier && a.shadow_denied == b.shadow_denied && other(a) == other(b);
}

// One sequence. `make` builds the limiter under test on `clock` for the drawn tiers and options (a fresh key
// space each time). Returns the first difference, or nothing.
template <class Storage>
std::optional<std::string> run_differential(
    std::uint64_t seed, ManualClock clock,
    const std::function<MultiTierLimiter<Storage>(std::vector<Tier>, LimiterOptions)>& make,
    DifferentialCoverage& coverage, DifferentialLimits limits = {}) {
  std::mt19937_64 rng(seed);
  const auto below = [&](std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng); };
  const auto chance = [&](int percent) { return below(100) < static_cast<std::uint64_t>(percent); };
  const auto pick = [&](const auto& items) { return items[below(items.size())]; };

  using namespace std::chrono;
  const std::vector<milliseconds> windows = {1ms, 2ms, 7ms, 50ms, 1s, 60s, 1h, 5h};
  const auto draw_limit = [&]() -> std::uint64_t {
    const std::uint64_t kind = below(100);
    if (kind < 5) return 0;
    if (kind < 50) return 1 + below(10);
    if (kind < 80) return 10 + below(1000);
    return 1 + below(std::uint64_t{1} << 40);
  };

  std::vector<Tier> tiers;
  const std::size_t tier_count = 1 + below(4);
  const Scope scopes[] = {Scope::user, Scope::model, Scope::user_model, Scope::global};
  for (std::size_t i = 0; i < tier_count; ++i) {
    tiers.push_back(Tier{"t" + std::to_string(i), scopes[below(4)], Quota{draw_limit(), pick(windows)},
                         chance(30) ? Unit::requests : Unit::cost});
  }
  LimiterOptions options;
  options.shadow = chance(20);
  MultiTierLimiter<Storage> limiter = make(tiers, options);
  ReferenceModel model(tiers, options);

  const std::vector<std::string> users = {"u0", "u1", "u2"}, models = {"m0", "m1"};
  const std::vector<std::string> ids = {"r0", "r1", "r2", "r3", "r4"}, plans = {"p0", "p1", "p2"};
  const auto now = [&] { return clock.now().count(); };
  const auto draw_cost = [&]() -> std::uint64_t {
    const std::uint64_t limit = model.tiers()[below(model.tiers().size())].quota.limit;
    switch (below(6)) {
      case 0: return 1;
      case 1: return limit == 0 ? 1 : 1 + below(limit);
      case 2: return limit == 0 ? 1 : limit;
      case 3: return limit + 1;
      case 4: return 1 + below(std::uint64_t{1} << 40);
      default: return limit < 4 ? 1 : 1 + below(limit / 4);
    }
  };
  // Owned strings for a request's views.
  struct Drawn {
    std::string user, model, id, plan;
    std::uint64_t cost;
    Request request() const { return Request{user, model, cost, id, plan}; }
  };
  const auto draw_request = [&] {
    return Drawn{pick(users), pick(models), chance(50) ? pick(ids) : "", chance(15) ? pick(plans) : "", draw_cost()};
  };

  std::vector<std::string> trail;  // the operations so far, for the report (the last 80 are printed)
  std::string step_text;
  const auto differ = [&](int step, const std::string& what) {
    std::ostringstream out;
    out << "seed " << seed << ", step " << step << " (" << step_text << "): " << what << "\n  tiers:";
    for (const Tier& t : tiers) {
      out << " " << t.name << "{" << to_string(t.scope) << ", " << (t.unit == Unit::requests ? "requests" : "cost")
          << ", " << t.quota.limit << "/" << t.quota.window.count() << "ms}";
    }
    out << (options.shadow ? " shadow" : "") << "\n  before:";
    for (std::size_t i = trail.size() > 80 ? trail.size() - 80 : 0; i < trail.size(); ++i) out << "\n    " << trail[i];
    out << "\n  reproduce: AIRL_DIFFERENTIAL_SEED=" << seed;
    return std::optional<std::string>(out.str());
  };
  // Runs `call` on both; they must both throw std::invalid_argument or both return.
  const auto both = [&](auto&& real, auto&& reference, int step) -> std::optional<std::string> {
    bool real_threw = false, model_threw = false;
    try {
      real();
    } catch (const std::invalid_argument&) {
      real_threw = true;
    }
    try {
      reference();
    } catch (const std::invalid_argument&) {
      model_threw = true;
    }
    coverage.refused += model_threw;
    if (real_threw != model_threw) {
      return differ(step, std::string("refusal differs: limiter ") + (real_threw ? "threw" : "returned") +
                              ", model " + (model_threw ? "threw" : "returned"));
    }
    return std::nullopt;
  };

  for (int step = 0; step < limits.steps; ++step) {
    const std::uint64_t op = below(100);
    std::optional<std::string> difference;
    if (op < 40) {
      const Drawn drawn = draw_request();
      step_text = "allow " + drawn.user + "/" + drawn.model + " cost " + std::to_string(drawn.cost) + " id '" +
                  drawn.id + "' plan '" + drawn.plan + "' at " + std::to_string(now());
      Decision real, reference;
      difference = both([&] { real = limiter.allow(drawn.request()); },
                        [&] { reference = model.allow(drawn.request(), now()); }, step);
      coverage.count(reference);
      if (!difference && !same(real, reference)) {
        difference = differ(step, "decision differs\n  limiter " + describe(real) + "\n  model   " + describe(reference));
      }
    } else if (op < 47) {
      std::vector<Drawn> drawn;
      for (std::size_t i = 0, n = 1 + below(4); i < n; ++i) drawn.push_back(draw_request());
      std::vector<Request> requests;
      step_text = "allow_many";
      for (const Drawn& d : drawn) {
        requests.push_back(d.request());
        step_text += " [" + d.user + "/" + d.model + " cost " + std::to_string(d.cost) + " id '" + d.id + "' plan '" + d.plan + "']";
      }
      std::vector<Decision> real, reference;
      difference = both([&] { real = limiter.allow_many(requests); },
                        [&] { reference = model.allow_many(requests, now()); }, step);
      for (const Decision& d : reference) coverage.count(d);
      for (std::size_t i = 0; !difference && i < real.size(); ++i) {
        if (!same(real[i], reference[i])) {
          difference = differ(step, "decision " + std::to_string(i) + " differs\n  limiter " + describe(real[i]) +
                                        "\n  model   " + describe(reference[i]));
        }
      }
    } else if (op < 57) {
      const std::string user = pick(users), m = pick(models), id = pick(ids);
      const std::uint64_t cost = chance(20) ? 0 : draw_cost();
      step_text = "settle " + user + "/" + m + " '" + id + "' to " + std::to_string(cost);
      bool real = false, reference = false;
      difference = both([&] { real = limiter.settle(user, m, id, cost); },
                        [&] { reference = model.settle(user, m, id, cost, now()); }, step);
      coverage.settled += reference;
      if (!difference && real != reference) difference = differ(step, "settle answered " + std::to_string(real));
    } else if (op < 61) {
      const std::string user = pick(users), m = pick(models), id = pick(ids);
      step_text = "refund " + user + "/" + m + " '" + id + "'";
      const bool real = limiter.refund(user, m, id), reference = model.refund(user, m, id, now());
      coverage.refunded += reference;
      if (real != reference) difference = differ(step, "refund answered " + std::to_string(real));
    } else if (op < 71) {
      const std::size_t tier = below(tiers.size());
      const std::string user = pick(users), m = pick(models);
      step_text = "usage " + tiers[tier].name + " " + user + "/" + m;
      const std::uint64_t real = limiter.usage(tiers[tier].name, user, m), reference = model.usage(tier, user, m, now());
      if (real != reference) {
        difference = differ(step, "usage " + std::to_string(real) + " vs model " + std::to_string(reference));
      }
    } else if (op < 88) {
      const std::vector<Tier>& in_force = model.tiers();
      const milliseconds window = in_force[below(in_force.size())].quota.window;
      const auto us = [](auto d) { return duration_cast<microseconds>(d); };
      microseconds by{0};
      switch (below(6)) {
        case 0: by = 0us; break;
        case 1: by = microseconds{1 + static_cast<std::int64_t>(below(50))}; break;
        case 2: by = us(window); ++coverage.boundary_steps; break;  // entries of exactly one window ago stop
        case 3: by = us(window) - 1us; break;           // one microsecond before it
        case 4: by = microseconds{static_cast<std::int64_t>(below(static_cast<std::uint64_t>(us(window).count())) + 1)}; break;
        default: by = us(hours{1 + below(3)}); break;
      }
      step_text = "advance " + std::to_string(by.count()) + " us";
      clock.advance(by);
    } else if (op < 90) {
      const std::string user = pick(users);
      if (chance(50)) {
        step_text = "reset " + user;
        limiter.reset(user);
        model.reset(user);
      } else {
        const std::string m = pick(models);
        step_text = "reset " + user + "/" + m;
        limiter.reset(user, m);
        model.reset(user, m);
      }
    } else if (op < 93) {
      const std::size_t tier = below(tiers.size());
      std::vector<milliseconds> shorter;
      for (milliseconds w : windows) {
        if (w <= model.tiers()[tier].quota.window) shorter.push_back(w);
      }
      const Quota quota{draw_limit(), pick(shorter)};
      step_text = "set_quota " + tiers[tier].name + " " + std::to_string(quota.limit) + "/" +
                  std::to_string(quota.window.count()) + "ms";
      limiter.set_quota(tiers[tier].name, quota);
      model.set_quota(tier, quota);
    } else if (op < 95) {
      const std::string plan = pick(plans);
      std::vector<PlanLimit> plan_limits;
      for (const Tier& tier : tiers) {
        const bool per_user = tier.scope == Scope::user || tier.scope == Scope::user_model;
        if (per_user && chance(60)) plan_limits.push_back(PlanLimit{tier.name, draw_limit()});
      }
      step_text = "set_plan " + plan;
      limiter.set_plan(plan, plan_limits);
      model.set_plan(plan, plan_limits);
    } else if (op < 96) {
      const std::string plan = pick(plans);
      step_text = "remove_plan " + plan;
      if (limiter.remove_plan(plan) != model.remove_plan(plan)) difference = differ(step, "remove_plan answered");
    } else {
      const Tier& tier = tiers[below(tiers.size())];
      LimitTarget target{tier.name};
      switch (tier.scope) {
        case Scope::user: target.user = pick(users); break;
        case Scope::model: target.model = pick(models); break;
        case Scope::user_model:
          if (chance(67)) target.user = pick(users);
          if (target.user.empty() || chance(50)) target.model = pick(models);
          break;
        case Scope::global: continue;  // one bucket: set_quota changes its limit
      }
      if (chance(70)) {
        const std::uint64_t limit = draw_limit();
        step_text = "set_override " + target.tier + " '" + target.user + "'/'" + target.model + "' " + std::to_string(limit);
        limiter.set_override(target, limit);
        model.set_override(target, limit);
      } else {
        step_text = "clear_override " + target.tier + " '" + target.user + "'/'" + target.model + "'";
        if (limiter.clear_override(target) != model.clear_override(target)) difference = differ(step, "clear_override answered");
      }
    }
    // AIRL_DIFFERENTIAL_TRACE=1 (for reproducing one seed): every bucket's usage is compared after every step,
    // so a report names the first step where the two diverged, not where it first showed.
    static const bool trace = std::getenv("AIRL_DIFFERENTIAL_TRACE") != nullptr;
    for (std::size_t tier = 0; trace && !difference && tier < tiers.size(); ++tier) {
      for (const std::string& user : users) {
        for (const std::string& m : models) {
          const std::uint64_t real = limiter.usage(tiers[tier].name, user, m), reference = model.usage(tier, user, m, now());
          if (real != reference && !difference) {
            difference = differ(step, "after it, usage of " + tiers[tier].name + " " + user + "/" + m + ": " +
                                          std::to_string(real) + " vs model " + std::to_string(reference));
          }
        }
      }
    }
    if (difference) return difference;
    trail.push_back(std::to_string(step) + ": " + step_text);
  }
  return std::nullopt;
}

// The seeds of one test run: AIRL_DIFFERENTIAL_SEED alone when set (to reproduce one), else `count` seeds from
// a random base, so every run explores new sequences. AIRL_DIFFERENTIAL_SEQUENCES overrides `count`.
inline std::vector<std::uint64_t> differential_seeds(std::size_t count) {
  if (const char* one = std::getenv("AIRL_DIFFERENTIAL_SEED")) return {std::stoull(one)};
  if (const char* n = std::getenv("AIRL_DIFFERENTIAL_SEQUENCES")) count = std::stoull(n);
  const std::uint64_t base = std::random_device{}() * std::uint64_t{1'000'003};
  std::vector<std::uint64_t> seeds;
  for (std::size_t i = 0; i < count; ++i) seeds.push_back(base + i);
  return seeds;
}

}  // namespace airl::test
