// SPDX-License-Identifier: MIT
// Plans, overrides and runtime quota changes: users on plans with different limits, overrides for one user,
// one model or one user+model, and changes while threads are deciding, losing nothing recorded.
// Behavioural cases run on every test backend (support.hpp: in memory, and Redis when it is built).
#include <catch2/catch.hpp>

#include "support.hpp"

#include <atomic>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace airl::test;

namespace {

// 2 requests per minute per user+model and 1000 tokens per minute per user; 5000 tokens per model.
std::vector<airl::Tier> serving_tiers() {
  return {{"rpm", airl::Scope::user_model, {2, 60s}, airl::Unit::requests},
          {"tpm", airl::Scope::user, {1'000, 60s}},
          {"model-tpm", airl::Scope::model, {5'000, 60s}}};
}

// How many requests of `cost` are admitted in a row (stops at the first denial, at most `most`).
template <class Limiter>
int admitted_in_a_row(Limiter& limiter, airl::Request request, int most = 50) {
  for (int i = 0; i < most; ++i) {
    if (!limiter.allow(request)) return i;
  }
  return most;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("users on plans get their plan's limits and other tiers keep theirs",
                        "[plans]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(serving_tiers(), backend.make_storage());
  limiter.set_plan("free", {{"rpm", 1}});
  limiter.set_plan("pro", {{"rpm", 5}, {"tpm", 100'000}});
  CHECK(admitted_in_a_row(limiter, {.user = "f", .model = "m", .plan = "free"}) == 1);
  CHECK(admitted_in_a_row(limiter, {.user = "p", .model = "m", .plan = "pro"}) == 5);
  CHECK(admitted_in_a_row(limiter, {.user = "n", .model = "m"}) == 2);  // no plan: the tier's own limit
  // The pro plan's token limit, and the limit a decision reports.
  const airl::Decision big = limiter.allow({.user = "p", .model = "m2", .cost = 4'000, .plan = "pro"});
  CHECK(big);
  const airl::Decision too_big = limiter.allow({.user = "f", .model = "m2", .cost = 1'001, .plan = "free"});
  CHECK_FALSE(too_big);
  CHECK(too_big.reason == "tpm");
  CHECK(too_big.limit == 1'000);
  const airl::Decision pro_full = limiter.allow({.user = "p", .model = "m", .plan = "pro"});
  CHECK(pro_full.reason == "rpm");
  CHECK(pro_full.limit == 5);
}

TEMPLATE_LIST_TEST_CASE("the longest plan name, tier name and override ids are accepted, and one byte more is refused",
                        "[plans][validation]", airl::test::Backends) {
  TestType backend;
  const std::string longest_tier(airl::max_id_length, 't');
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {airl::Tier{longest_tier, airl::Scope::user_model, {2, 60'000ms}}}, backend.make_storage());
  const std::string plan(airl::max_id_length, 'p'), user(airl::max_id_length, 'u'), model(airl::max_id_length, 'm');
  limiter.set_plan(plan, {{longest_tier, 1}});
  CHECK(limiter.allow({.user = user, .model = model, .plan = plan}).allowed);
  const airl::Decision full = limiter.allow({.user = user, .model = model, .plan = plan});
  CHECK_FALSE(full.allowed);
  CHECK(full.reason == longest_tier);
  limiter.set_override({.tier = longest_tier, .user = user, .model = model}, 3);
  CHECK(limiter.allow({.user = user, .model = model, .plan = plan}).allowed);
  CHECK(limiter.usage(longest_tier, user, model) == 2);

  const std::string longer(airl::max_id_length + 1, 'x');
  CHECK_THROWS_AS(limiter.set_plan(longer, {{longest_tier, 1}}), std::invalid_argument);
  CHECK_THROWS_AS(limiter.allow({.user = user, .model = model, .plan = longer}), std::invalid_argument);
  CHECK_THROWS_AS(limiter.set_override({.tier = longest_tier, .user = longer}, 1), std::invalid_argument);
  CHECK_THROWS_AS(limiter.set_override({.tier = longest_tier, .model = longer}, 1), std::invalid_argument);
  CHECK_THROWS_AS(airl::MultiTierLimiter<typename TestType::Storage>(
                      {airl::Tier{longer, airl::Scope::user, {1, 1000ms}}}, backend.make_storage()),
                  std::invalid_argument);
  CHECK(limiter.usage(longest_tier, user, model) == 2);  // the refusals changed nothing
}

TEMPLATE_LIST_TEST_CASE("a resolver maps users to plans and a plan named in the request wins",
                        "[plans]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(serving_tiers(), backend.make_storage());
  limiter.set_plan("enterprise", {{"rpm", 4}});
  limiter.set_plan("free", {{"rpm", 1}});
  limiter.set_plan_resolver([](std::string_view user) { return user.starts_with("corp-") ? "enterprise" : ""; });
  CHECK(admitted_in_a_row(limiter, {.user = "corp-a", .model = "m"}) == 4);
  CHECK(admitted_in_a_row(limiter, {.user = "solo", .model = "m"}) == 2);
  CHECK(admitted_in_a_row(limiter, {.user = "corp-b", .model = "m", .plan = "free"}) == 1);
  limiter.set_plan_resolver({});  // removed: back to the tiers' limits
  CHECK(admitted_in_a_row(limiter, {.user = "corp-c", .model = "m"}) == 2);
}

TEMPLATE_LIST_TEST_CASE("overrides beat plans: user+model, then user, then model",
                        "[plans][overrides]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(serving_tiers(), backend.make_storage());
  limiter.set_plan("pro", {{"rpm", 5}});
  limiter.set_override({.tier = "rpm", .model = "big-model"}, 3);
  limiter.set_override({.tier = "rpm", .user = "vip"}, 7);
  limiter.set_override({.tier = "rpm", .user = "vip", .model = "big-model"}, 9);
  CHECK(admitted_in_a_row(limiter, {.user = "a", .model = "big-model", .plan = "pro"}) == 3);  // model > plan
  CHECK(admitted_in_a_row(limiter, {.user = "vip", .model = "small", .plan = "pro"}) == 7);     // user > plan
  CHECK(admitted_in_a_row(limiter, {.user = "vip", .model = "big-model"}) == 9);                // user+model
  CHECK(admitted_in_a_row(limiter, {.user = "b", .model = "small", .plan = "pro"}) == 5);       // the plan
  // A model override on a per-model tier, a user override on a per-user tier.
  limiter.set_override({.tier = "model-tpm", .model = "tiny"}, 10);
  limiter.set_override({.tier = "tpm", .user = "whale"}, 50'000);
  CHECK_FALSE(limiter.allow({.user = "c", .model = "tiny", .cost = 11}));
  CHECK(limiter.allow({.user = "whale", .model = "m3", .cost = 4'900}));
  // Clearing an override restores what is below it.
  CHECK(limiter.clear_override({.tier = "rpm", .user = "vip", .model = "big-model"}));
  CHECK_FALSE(limiter.clear_override({.tier = "rpm", .user = "vip", .model = "big-model"}));
  const std::vector<airl::Tier> vip = limiter.tiers_for("vip", "big-model");
  CHECK(vip[0].quota.limit == 7);
  CHECK(vip[1].quota.limit == 1'000);
  CHECK(vip[2].quota.limit == 5'000);
}

TEMPLATE_LIST_TEST_CASE("a smaller limit applies to the next decision and keeps what was recorded",
                        "[plans][runtime]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter({{"rpm", airl::Scope::user_model, {10, 60s}}},
                                                             backend.make_storage());
  CHECK(admitted_in_a_row(limiter, {.user = "u", .model = "m"}, 6) == 6);
  limiter.set_quota("rpm", {4, 60s});
  const airl::Decision denied = limiter.allow({.user = "u", .model = "m"});
  CHECK_FALSE(denied);
  CHECK(denied.limit == 4);
  CHECK(limiter.usage("rpm", "u", "m") == 6);  // nothing recorded was lost
  limiter.set_quota("rpm", {8, 60s});
  CHECK(admitted_in_a_row(limiter, {.user = "u", .model = "m"}) == 2);
  CHECK(limiter.tiers_for("u", "m")[0].quota.limit == 8);
  CHECK(limiter.tiers()[0].quota.limit == 10);  // tiers() stays as constructed
}

TEMPLATE_LIST_TEST_CASE("a shorter window applies to the next decision", "[plans][runtime]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter({{"rpm", airl::Scope::user, {2, 60s}}},
                                                             backend.make_storage());
  REQUIRE(limiter.allow({.user = "w", .model = "m"}));
  REQUIRE(limiter.allow({.user = "w", .model = "m"}));
  REQUIRE_FALSE(limiter.allow({.user = "w", .model = "m"}));
  limiter.set_quota("rpm", {2, 200ms});
  backend.advance(200ms + boundary_margin<TestType>());
  CHECK(limiter.allow({.user = "w", .model = "m"}));
}

TEMPLATE_LIST_TEST_CASE("changing limits while 8 threads decide: exact caps before and after, nothing lost",
                        "[plans][runtime][concurrency]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {{"global", airl::Scope::global, {1'000'000, 60s}}, {"per-user", airl::Scope::user, {1'000, 60s}}},
      backend.make_storage());
  limiter.set_plan("pro", {{"per-user", 2'000}});
  constexpr int threads = 8;
  std::atomic<int> admitted{0};
  std::atomic<bool> changed{false};
  std::atomic<int> admitted_after_change{0}, decided_after_change{0};
  const auto deadline = std::chrono::steady_clock::now() + 20s;  // bounds every loop below
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const std::string user = "user-" + std::to_string(t);
      // Decides until the change is made, then 20 more: those surely start after it.
      int after_count = 0;
      while (after_count < 20 && std::chrono::steady_clock::now() < deadline) {
        const bool after = changed.load();  // read before deciding: this decision starts after the change
        const airl::Decision decision = limiter.allow({.user = user, .model = "m", .plan = t % 2 ? "pro" : ""});
        if (decision) admitted.fetch_add(1);
        if (after) {
          decided_after_change.fetch_add(1);
          if (decision) admitted_after_change.fetch_add(1);
        }
        after_count += after ? 1 : 0;
      }
    });
  }
  // Meanwhile: plans, overrides and quotas change; once 200 are admitted, the global limit drops below that.
  std::thread changer([&] {
    for (int i = 0; i < 50; ++i) {
      limiter.set_plan("pro", {{"per-user", static_cast<std::uint64_t>(1'500 + i)}});
      limiter.set_override({.tier = "per-user", .user = "user-0"}, static_cast<std::uint64_t>(900 + i));
      limiter.clear_override({.tier = "per-user", .user = "user-0"});
      limiter.set_quota("global", {static_cast<std::uint64_t>(1'000'000 - i), 60s});
    }
    while (admitted.load() < 200 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    limiter.set_quota("global", {100, 60s});
    changed.store(true);
  });
  changer.join();
  for (std::thread& worker : workers) worker.join();
  const int total = admitted.load();
  CHECK(total >= 200);
  CHECK(decided_after_change.load() >= threads * 20);
  // Every decision that started after the change saw the limit of 100, already exceeded: none was admitted.
  CHECK(admitted_after_change.load() == 0);
  // Nothing recorded was lost: the global bucket holds every admission, the per-user ones theirs.
  CHECK(limiter.usage("global", "any", "m") == static_cast<std::uint64_t>(total));
  std::uint64_t per_user = 0;
  for (int t = 0; t < threads; ++t) per_user += limiter.usage("per-user", "user-" + std::to_string(t), "m");
  CHECK(per_user == static_cast<std::uint64_t>(total));
}

TEST_CASE("per-user caps hold exactly while a plan changes under 8 threads", "[plans][runtime][concurrency]") {
  InMemoryBackend backend;
  airl::MultiTierLimiter<ManualStorage> limiter({{"per-user", airl::Scope::user, {10, 60s}}}, backend.make_storage());
  limiter.set_plan("p", {{"per-user", 300}});
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;
  std::atomic<int> admitted{0};
  for (int t = 0; t < 8; ++t) {
    workers.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < 200; ++i) {
        if (limiter.allow({.user = "shared-user", .model = "m", .plan = "p"})) admitted.fetch_add(1);
      }
    });
  }
  go.store(true);
  for (int i = 0; i < 20; ++i) limiter.set_plan("p", {{"per-user", static_cast<std::uint64_t>(300 + i * 10)}});
  for (std::thread& worker : workers) worker.join();
  // The limit only grew, from 300 to 490: admissions are at least 300 and never above the last limit.
  CHECK(admitted.load() >= 300);
  CHECK(admitted.load() <= 490);
  CHECK(limiter.usage("per-user", "shared-user", "m") == static_cast<std::uint64_t>(admitted.load()));
}

TEST_CASE("plan and override refusals name the mistake and change nothing", "[plans][validation]") {
  InMemoryBackend backend;
  airl::MultiTierLimiter<ManualStorage> limiter(serving_tiers(), backend.make_storage());
  CHECK_THROWS_AS(limiter.set_plan("", {{"rpm", 1}}), std::invalid_argument);
  CHECK_THROWS_AS(limiter.set_plan(std::string(airl::max_id_length + 1, 'p'), {{"rpm", 1}}), std::invalid_argument);
  CHECK_THROWS_AS(limiter.set_plan("x", {{"no-such-tier", 1}}), std::invalid_argument);
  CHECK_THROWS_AS(limiter.set_plan("x", {{"rpm", 1}, {"rpm", 2}}), std::invalid_argument);
  CHECK_THROWS_WITH(limiter.set_plan("x", {{"model-tpm", 1}}), Catch::Contains("shared between users"));
  CHECK_THROWS_AS(limiter.set_override({.tier = "rpm"}, 1), std::invalid_argument);                 // no ids
  CHECK_THROWS_AS(limiter.set_override({.tier = "tpm", .model = "m"}, 1), std::invalid_argument);   // user tier
  CHECK_THROWS_AS(limiter.set_override({.tier = "model-tpm", .user = "u"}, 1), std::invalid_argument);
  CHECK_THROWS_AS(limiter.set_override({.tier = "nope", .user = "u"}, 1), std::invalid_argument);
  CHECK_THROWS_AS(limiter.set_quota("rpm", {1, 0ms}), std::invalid_argument);
  CHECK_THROWS_AS(limiter.set_quota("nope", {1, 1s}), std::invalid_argument);
  // None of those changed anything, and the limiter never started reading rules.
  CHECK(admitted_in_a_row(limiter, {.user = "u", .model = "m"}) == 2);
  // A request naming an unknown plan is refused and recorded nowhere.
  limiter.set_plan("real", {{"rpm", 5}});
  CHECK_THROWS_WITH(limiter.allow({.user = "u2", .model = "m", .plan = "imaginary"}), Catch::Contains("unknown plan"));
  CHECK(limiter.usage("rpm", "u2", "m") == 0);
  CHECK(limiter.remove_plan("real"));
  CHECK_FALSE(limiter.remove_plan("real"));
  CHECK_THROWS_AS(limiter.allow({.user = "u2", .model = "m", .plan = "real"}), std::invalid_argument);
  // A resolver that throws: the exception passes out of allow() and nothing is recorded.
  limiter.set_plan_resolver([](std::string_view) -> std::string { throw std::runtime_error("plan lookup failed"); });
  CHECK_THROWS_AS(limiter.allow({.user = "u3", .model = "m"}), std::runtime_error);
  CHECK(limiter.usage("tpm", "u3", "m") == 0);
}

TEMPLATE_LIST_TEST_CASE("allow_many and settle follow plans and changed quotas",
                        "[plans][settle]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(serving_tiers(), backend.make_storage());
  limiter.set_plan("pro", {{"rpm", 3}});
  const std::vector<airl::Request> batch(4, airl::Request{.user = "b", .model = "m", .plan = "pro"});
  const std::vector<airl::Decision> decisions = limiter.allow_many(batch);
  REQUIRE(decisions.size() == 4);
  CHECK(decisions[2]);
  CHECK_FALSE(decisions[3]);
  CHECK(decisions[3].limit == 3);
  REQUIRE(limiter.allow({.user = "s", .model = "m", .cost = 900, .request_id = "r", .plan = "pro"}));
  CHECK(limiter.settle("s", "m", "r", 100));
  CHECK(limiter.usage("tpm", "s", "m") == 100);
}

TEMPLATE_LIST_TEST_CASE("limits above 2^53 are refused when set, not on every later decision",
                        "[plans][validation]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(serving_tiers(), backend.make_storage());
  const std::uint64_t too_big = (std::uint64_t{1} << 53) + 1;
  CHECK_THROWS_AS(limiter.set_override({.tier = "tpm", .user = "vip"}, std::numeric_limits<std::uint64_t>::max()),
                  std::invalid_argument);
  CHECK_THROWS_AS(limiter.set_plan("big", {{"tpm", too_big}}), std::invalid_argument);
  CHECK_THROWS_AS(limiter.set_quota("model-tpm", {too_big, 60s}), std::invalid_argument);
  limiter.set_override({.tier = "tpm", .user = "vip"}, std::uint64_t{1} << 53);  // as good as unlimited
  CHECK(limiter.allow({.user = "vip", .model = "m", .cost = 4'000}));
}

TEST_CASE("a request naming a plan is refused even before any rule was set", "[plans][validation]") {
  InMemoryBackend backend;
  airl::MultiTierLimiter<ManualStorage> one({{"rpm", airl::Scope::user, {2, 60s}}}, backend.make_storage());
  airl::MultiTierLimiter<ManualStorage> two(serving_tiers(), backend.make_storage());
  // A typo must fail in staging, not at the first set_plan in production.
  CHECK_THROWS_WITH(one.allow({.user = "u", .model = "m", .plan = "enterprize"}), Catch::Contains("unknown plan"));
  CHECK_THROWS_AS(two.allow({.user = "u", .model = "m", .plan = "enterprize"}), std::invalid_argument);
  CHECK_THROWS_AS(two.tiers_for("u", "m", "enterprize"), std::invalid_argument);
  CHECK(one.usage("rpm", "u", "m") == 0);
}

TEMPLATE_LIST_TEST_CASE("a resolver may itself decide on limiters, this one included",
                        "[plans][resolver]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(serving_tiers(), backend.make_storage());
  airl::MultiTierLimiter<typename TestType::Storage> lookups({{"lookups", airl::Scope::user, {1'000, 60s}}},
                                                             backend.make_storage());
  limiter.set_plan("pro", {{"rpm", 5}});
  // A resolver that rate-limits its own plan lookups, with request ids (long enough to need the heap), and
  // once also asks the limiter it resolves for (a re-entrant call).
  std::atomic<int> calls{0};
  limiter.set_plan_resolver([&](std::string_view user) -> std::string {
    const int n = calls.fetch_add(1);
    const std::string lookup_id = "plan-lookup-with-a-long-request-id-" + std::to_string(n);
    (void)lookups.allow({.user = user, .model = "plans", .request_id = lookup_id});
    if (n == 0) (void)limiter.allow({.user = "someone-else", .model = "x", .request_id = "nested-request-id-long-enough"});
    return "pro";
  });
  const std::string outer_id = "the-outer-request-id-that-must-stay-intact";
  REQUIRE(limiter.allow({.user = "ann", .model = "m", .cost = 300, .request_id = outer_id}));
  // The outer request was recorded under its own id: a replay is recognised and settle finds it.
  CHECK(limiter.allow({.user = "ann", .model = "m", .cost = 300, .request_id = outer_id}).replayed);
  CHECK(limiter.settle("ann", "m", outer_id, 20));
  CHECK(limiter.usage("tpm", "ann", "m") == 20);
  CHECK(admitted_in_a_row(limiter, {.user = "ann", .model = "m"}) == 4);  // the pro plan: 5 per minute
  CHECK(lookups.usage("lookups", "ann", "plans") >= 3);
}

TEST_CASE("a moved-from limiter refuses usage() and the rule setters instead of crashing", "[plans][lifecycle]") {
  InMemoryBackend backend;
  airl::MultiTierLimiter<ManualStorage> limiter(serving_tiers(), backend.make_storage());
  airl::MultiTierLimiter<ManualStorage> moved(std::move(limiter));
  CHECK_THROWS_AS(limiter.usage("rpm", "u", "m"), std::logic_error);  // NOLINT(bugprone-use-after-move)
  CHECK_THROWS_AS(limiter.set_quota("rpm", {1, 1s}), std::logic_error);
  CHECK_THROWS_AS(limiter.tiers_for("u", "m"), std::logic_error);
  CHECK(moved.allow("u", "m"));
}
