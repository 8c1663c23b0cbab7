// SPDX-License-Identifier: MIT
// MultiTierLimiter: several tiers decided all-or-nothing, how a tier's scope picks its bucket, which tier a
// Decision describes, replays across tiers, and reset(). Templated over the test backends (support.hpp): on
// Redis (when built) time is real, so durations are compared with within_slack and boundaries are crossed by waiting what
// the limiter answered. Tier, user and model names are unique per case because model and global buckets are
// shared by everyone.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "support.hpp"

namespace {

using airl::test::advance_until_due;
using airl::test::boundary_margin;
using airl::test::costing;
using airl::test::with_id;
using airl::test::within_slack;

using namespace std::chrono_literals;
using airl::Scope;
using airl::Tier;

template <class Backend>
airl::MultiTierLimiter<typename Backend::Storage> make_limiter(Backend& backend, std::vector<Tier> tiers,
                                                               airl::InMemoryOptions options = {}) {
  return airl::MultiTierLimiter<typename Backend::Storage>(std::move(tiers), backend.make_storage(options));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// All or nothing, and which tier a Decision describes.

TEMPLATE_LIST_TEST_CASE("a request denied by any tier is charged in no tier", "[multi_tier]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {Tier{"mt-aon-user", Scope::user, {2, 1000ms}},
                                        Tier{"mt-aon-model", Scope::model, {100, 1000ms}},
                                        Tier{"mt-aon-global", Scope::global, {3, 1000ms}},
                                        Tier{"mt-aon-pair", Scope::user_model, {100, 1000ms}}});
  const std::string model = "mt-aon-m";
  const auto usage = [&](std::string_view tier, std::string_view user) { return limiter.usage(tier, user, model); };

  REQUIRE(limiter.allow("mt-aon-alice", model).allowed);
  REQUIRE(limiter.allow("mt-aon-alice", model).allowed);

  // Denied by the first tier: the later tiers, which had room, are not charged.
  const airl::Decision by_user = limiter.allow("mt-aon-alice", model);
  CHECK_FALSE(by_user.allowed);
  CHECK(by_user.reason == "mt-aon-user");
  CHECK(usage("mt-aon-user", "mt-aon-alice") == 2);
  CHECK(usage("mt-aon-model", "mt-aon-alice") == 2);
  CHECK(usage("mt-aon-global", "mt-aon-alice") == 2);
  CHECK(usage("mt-aon-pair", "mt-aon-alice") == 2);

  REQUIRE(limiter.allow("mt-aon-bob", model).allowed);  // the global tier is now full

  // Denied by a middle tier: the tiers before and after it, which had room, are not charged.
  const airl::Decision by_global = limiter.allow("mt-aon-carol", model);
  CHECK_FALSE(by_global.allowed);
  CHECK(by_global.reason == "mt-aon-global");
  CHECK(usage("mt-aon-user", "mt-aon-carol") == 0);
  CHECK(usage("mt-aon-model", "mt-aon-carol") == 3);
  CHECK(usage("mt-aon-global", "mt-aon-carol") == 3);
  CHECK(usage("mt-aon-pair", "mt-aon-carol") == 0);

  // A weighted request that fits every other tier is not charged either.
  const airl::Decision heavy = limiter.allow(costing("mt-aon-dave", "mt-aon-other-model", 2));
  CHECK_FALSE(heavy.allowed);
  CHECK(heavy.reason == "mt-aon-global");
  CHECK(limiter.usage("mt-aon-user", "mt-aon-dave", "mt-aon-other-model") == 0);
  CHECK(limiter.usage("mt-aon-model", "mt-aon-dave", "mt-aon-other-model") == 0);

  // One decision is one count, however many tiers it touched.
  CHECK(limiter.metrics().allowed == 3);
  CHECK(limiter.metrics().denied == 3);
}

TEMPLATE_LIST_TEST_CASE("a denial names the first denying tier in declared order and waits for the slowest",
                        "[multi_tier]", airl::test::Backends) {
  TestType backend;
  std::string prefix;
  bool short_first = true;
  SECTION("short window declared first") {
    prefix = "mt-order-a-";
    short_first = true;
  }
  SECTION("long window declared first") {
    prefix = "mt-order-b-";
    short_first = false;
  }
  const Tier short_tier{prefix + "short", Scope::user_model, {3, 500ms}};
  const Tier long_tier{prefix + "long", Scope::user, {4, 1000ms}};
  auto limiter = make_limiter(backend, short_first ? std::vector<Tier>{short_tier, long_tier}
                                                   : std::vector<Tier>{long_tier, short_tier});
  const std::string user = prefix + "alice";
  const std::string model = prefix + "m";

  REQUIRE(limiter.allow(costing(user, model, 3)).allowed);
  backend.advance(100ms);

  // Both tiers deny a cost of 2: short needs its entry gone (in 400 ms), long needs it too (in 900 ms).
  const airl::Decision both = limiter.allow(costing(user, model, 2));
  REQUIRE_FALSE(both.allowed);
  CHECK_THAT(both.retry_after, within_slack<TestType>(900ms));  // the max over the denying tiers, whatever the order
  if (short_first) {
    CHECK(both.reason == short_tier.name);
    CHECK(both.limit == 3);
    CHECK(both.remaining == 0);
    CHECK_THAT(both.reset_after, within_slack<TestType>(400ms));
  } else {
    CHECK(both.reason == long_tier.name);
    CHECK(both.limit == 4);
    CHECK(both.remaining == 1);
    CHECK_THAT(both.reset_after, within_slack<TestType>(900ms));
  }

  advance_until_due(backend, 400ms);  // the short window is empty, the long one still denies
  const airl::Decision one = limiter.allow(costing(user, model, 2));
  REQUIRE_FALSE(one.allowed);
  CHECK(one.reason == long_tier.name);
  CHECK_THAT(one.retry_after, within_slack<TestType>(500ms));
  CHECK(one.limit == 4);

  const auto margin = boundary_margin<TestType>();  // 1 ms on exact time
  backend.advance(500ms - margin);
  const airl::Decision early = limiter.allow(costing(user, model, 2));
  CHECK_FALSE(early.allowed);
  CHECK_THAT(early.retry_after, within_slack<TestType>(margin));
  advance_until_due(backend, early.retry_after);
  CHECK(limiter.allow(costing(user, model, 2)).allowed);
}

TEMPLATE_LIST_TEST_CASE("an admission reports the tier with the least remaining fraction",
                        "[multi_tier]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {Tier{"mt-least-big", Scope::global, {100, 1000ms}},
                                        Tier{"mt-least-small", Scope::user, {5, 2000ms}},
                                        Tier{"mt-least-mid", Scope::model, {10, 1000ms}}});

  const airl::Decision first = limiter.allow("mt-least-alice", "mt-least-m");
  CHECK(first.allowed);
  CHECK(first.limit == 5);
  CHECK(first.remaining == 4);
  CHECK(first.reset_after == 2000ms);

  // Other users fill the shared model tier until it has the least room.
  for (int i = 0; i < 7; ++i) REQUIRE(limiter.allow(airl::test::id("mt-least-other", i), "mt-least-m").allowed);
  const airl::Decision later = limiter.allow("mt-least-alice", "mt-least-m");
  CHECK(later.allowed);
  CHECK(later.limit == 10);
  CHECK(later.remaining == 1);  // model: 9 of 10 used; user: 2 of 5
  CHECK(later.reset_after == 1000ms);
}

TEMPLATE_LIST_TEST_CASE("an admission binds the tier closest to its limit as a fraction, across units",
                        "[multi_tier]", airl::test::Backends) {
  // 60 requests/min and 90,000 tokens/min: a request of 89,900 tokens leaves 59 of 60 requests but 100 of
  // 90,000 tokens. Comparing counts (59 > 100 is false) bound the requests tier; the tokens tier is nearer.
  TestType backend;
  auto limiter = make_limiter(backend, {Tier{"mt-frac-rpm", Scope::user_model, {60, 60'000ms}, airl::Unit::requests},
                                        Tier{"mt-frac-tpm", Scope::user_model, {90'000, 60'000ms}}});
  const airl::Decision big = limiter.allow(costing("mt-frac-alice", "mt-frac-m", 89'900));
  REQUIRE(big.allowed);
  CHECK(big.binding_tier == 1);
  CHECK(big.limit == 90'000);
  CHECK(big.remaining == 100);
  REQUIRE(big.other_unit.has_value());
  CHECK(big.other_unit->tier == 0);
  CHECK(big.other_unit->remaining == 59);

  // Within one unit too: 5 of 10 left (0.5) is further from the limit than 400 of 1,000 (0.4), though 5 < 400.
  auto same_unit = make_limiter(backend, {Tier{"mt-frac-user", Scope::user, {10, 60'000ms}},
                                          Tier{"mt-frac-model", Scope::model, {1'000, 60'000ms}}});
  REQUIRE(same_unit.allow(costing("mt-frac-bob", "mt-frac-m2", 595)).allowed == false);  // above bob's 10
  for (int i = 0; i < 595; i += 5) REQUIRE(same_unit.allow(costing(airl::test::id("mt-frac-o", i), "mt-frac-m2", 5)));
  const airl::Decision fits = same_unit.allow(costing("mt-frac-carol", "mt-frac-m2", 5));
  REQUIRE(fits.allowed);
  CHECK(fits.binding_tier == 1);
  CHECK(fits.limit == 1'000);
  CHECK(fits.remaining == 400);
}

TEMPLATE_LIST_TEST_CASE("an admission with tied remaining fractions reports the first declared tier",
                        "[multi_tier]", airl::test::Backends) {
  TestType backend;
  std::string prefix;
  bool user_first = true;
  SECTION("user tier first") {
    prefix = "mt-tie-a-";
    user_first = true;
  }
  SECTION("model tier first") {
    prefix = "mt-tie-b-";
    user_first = false;
  }
  const Tier user_tier{prefix + "user", Scope::user, {4, 1000ms}};
  const Tier model_tier{prefix + "model", Scope::model, {8, 2000ms}};
  auto limiter = make_limiter(backend, user_first ? std::vector<Tier>{user_tier, model_tier}
                                                  : std::vector<Tier>{model_tier, user_tier});
  const std::string model = prefix + "m";

  REQUIRE(limiter.allow(prefix + "bob", model).allowed);  // model tier: 1 used
  const airl::Decision tied = limiter.allow(prefix + "alice", model);  // user 3 of 4 left, model 6 of 8
  REQUIRE(tied.allowed);
  CHECK(tied.remaining == (user_first ? 3u : 6u));
  CHECK(tied.limit == (user_first ? 4u : 8u));
  CHECK(tied.reset_after == (user_first ? 1000ms : 2000ms));
}

TEMPLATE_LIST_TEST_CASE("more than eight tiers are decided all-or-nothing too", "[multi_tier]", airl::test::Backends) {
  // Up to eight tiers use a stack buffer; more take the heap path, which must follow the same rules.
  TestType backend;
  const Scope scopes[] = {Scope::user_model, Scope::user, Scope::model, Scope::global};
  std::vector<Tier> tiers;
  for (int i = 0; i < 10; ++i) {
    const std::uint64_t limit = i == 9 ? 1 : 100;
    tiers.push_back(Tier{airl::test::id("mt-many", i), scopes[i % 4], {limit, 1000ms}});
  }
  auto limiter = make_limiter(backend, tiers);

  const airl::Decision first = limiter.allow("mt-many-alice", "mt-many-m");
  REQUIRE(first.allowed);
  CHECK(first.limit == 1);  // the last tier has the least remaining
  CHECK(first.remaining == 0);

  const airl::Decision second = limiter.allow("mt-many-alice", "mt-many-m");
  CHECK_FALSE(second.allowed);
  CHECK(second.reason == "mt-many-9");
  for (const Tier& tier : tiers) {
    INFO("tier " << tier.name);
    CHECK(limiter.usage(tier.name, "mt-many-alice", "mt-many-m") == 1);
  }
}

TEMPLATE_LIST_TEST_CASE("a denial's reason is the denying tier's exact name at every length",
                        "[multi_tier]", airl::test::Backends) {
  // Names of up to 15 bytes are copied by a fixed-size path, longer ones by another (detail/reason_text.hpp):
  // both sides of that bound, a NUL byte and UTF-8 must come back byte for byte.
  TestType backend;
  for (const std::size_t size : {1u, 2u, 14u, 15u, 16u, 17u, 40u, 300u}) {
    std::string name(size, 'n');
    name[0] = 'r';
    if (size >= 3) name[size / 2] = '\0';
    if (size >= 17) name.replace(size - 3, 2, "\xC3\xA9");  // 'e' with an acute accent
    INFO("tier name of " << size << " bytes");
    auto limiter = make_limiter(backend, {Tier{name, Scope::user_model, {1, 1000ms}}});
    const std::string user = airl::test::id("mt-reason-alice", static_cast<int>(size));
    REQUIRE(limiter.allow(user, "mt-reason-m").allowed);
    const airl::Decision denied = limiter.allow(user, "mt-reason-m");
    REQUIRE_FALSE(denied.allowed);
    CHECK(denied.reason == name);
    CHECK(denied.reason.size() == size);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Scopes: which requests share a bucket.

TEMPLATE_LIST_TEST_CASE("a tier's scope decides which requests share its bucket",
                        "[multi_tier][scope]", airl::test::Backends) {
  TestType backend;

  SECTION("user_model: one bucket per user per model") {
    auto limiter = make_limiter(backend, {Tier{"mt-scope-pair", Scope::user_model, {2, 1000ms}}});
    REQUIRE(limiter.allow("mt-scope-pair-alice", "mt-scope-pair-m1").allowed);
    REQUIRE(limiter.allow("mt-scope-pair-alice", "mt-scope-pair-m1").allowed);
    CHECK_FALSE(limiter.allow("mt-scope-pair-alice", "mt-scope-pair-m1").allowed);
    CHECK(limiter.allow("mt-scope-pair-alice", "mt-scope-pair-m2").allowed);  // another model
    CHECK(limiter.allow("mt-scope-pair-bob", "mt-scope-pair-m1").allowed);    // another user
    CHECK(limiter.usage("mt-scope-pair", "mt-scope-pair-alice", "mt-scope-pair-m1") == 2);
    CHECK(limiter.usage("mt-scope-pair", "mt-scope-pair-alice", "mt-scope-pair-m2") == 1);
    CHECK(limiter.usage("mt-scope-pair", "mt-scope-pair-bob", "mt-scope-pair-m1") == 1);
  }

  SECTION("user: shared by all models of one user") {
    auto limiter = make_limiter(backend, {Tier{"mt-scope-user", Scope::user, {2, 1000ms}}});
    REQUIRE(limiter.allow("mt-scope-user-alice", "mt-scope-user-m1").allowed);
    REQUIRE(limiter.allow("mt-scope-user-alice", "mt-scope-user-m2").allowed);
    const airl::Decision third_model = limiter.allow("mt-scope-user-alice", "mt-scope-user-m3");
    CHECK_FALSE(third_model.allowed);
    CHECK(third_model.reason == "mt-scope-user");
    CHECK(limiter.allow("mt-scope-user-bob", "mt-scope-user-m1").allowed);  // another user has his own
    // The model plays no part in a user bucket.
    CHECK(limiter.usage("mt-scope-user", "mt-scope-user-alice", "mt-scope-user-any") == 2);
    CHECK(limiter.usage("mt-scope-user", "mt-scope-user-bob", "mt-scope-user-any") == 1);
  }

  SECTION("model: shared by all users of one model") {
    auto limiter = make_limiter(backend, {Tier{"mt-scope-model", Scope::model, {2, 1000ms}}});
    REQUIRE(limiter.allow("mt-scope-model-alice", "mt-scope-model-m1").allowed);
    REQUIRE(limiter.allow("mt-scope-model-bob", "mt-scope-model-m1").allowed);
    const airl::Decision third_user = limiter.allow("mt-scope-model-carol", "mt-scope-model-m1");
    CHECK_FALSE(third_user.allowed);
    CHECK(third_user.reason == "mt-scope-model");
    CHECK(limiter.allow("mt-scope-model-carol", "mt-scope-model-m2").allowed);  // another model has its own
    CHECK(limiter.usage("mt-scope-model", "mt-scope-model-anyone", "mt-scope-model-m1") == 2);
    CHECK(limiter.usage("mt-scope-model", "mt-scope-model-anyone", "mt-scope-model-m2") == 1);
  }

  SECTION("global: shared by everyone") {
    auto limiter = make_limiter(backend, {Tier{"mt-scope-global", Scope::global, {3, 1000ms}}});
    REQUIRE(limiter.allow("mt-scope-global-alice", "mt-scope-global-m1").allowed);
    REQUIRE(limiter.allow("mt-scope-global-bob", "mt-scope-global-m2").allowed);
    REQUIRE(limiter.allow("mt-scope-global-carol", "mt-scope-global-m3").allowed);
    const airl::Decision fourth = limiter.allow("mt-scope-global-dave", "mt-scope-global-m4");
    CHECK_FALSE(fourth.allowed);
    CHECK(fourth.reason == "mt-scope-global");
    CHECK(limiter.usage("mt-scope-global", "mt-scope-global-x", "mt-scope-global-y") == 3);
  }
}

TEMPLATE_LIST_TEST_CASE("two tiers with one scope and different names are independent buckets",
                        "[multi_tier][scope]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {Tier{"mt-indep-burst", Scope::user, {2, 300ms}},
                                        Tier{"mt-indep-minute", Scope::user, {5, 1000ms}}});
  const std::string user = "mt-indep-alice";
  const std::string model = "mt-indep-m";

  REQUIRE(limiter.allow(user, model).allowed);
  REQUIRE(limiter.allow(user, model).allowed);
  const airl::Decision burst = limiter.allow(user, model);
  CHECK_FALSE(burst.allowed);
  CHECK(burst.reason == "mt-indep-burst");
  CHECK_THAT(burst.reset_after, within_slack<TestType>(300ms));

  advance_until_due(backend, burst.reset_after);  // the burst bucket empties, the minute bucket keeps its entries
  CHECK(limiter.usage("mt-indep-burst", user, model) == 0);
  CHECK(limiter.usage("mt-indep-minute", user, model) == 2);
  REQUIRE(limiter.allow(user, model).allowed);
  REQUIRE(limiter.allow(user, model).allowed);
  CHECK(limiter.usage("mt-indep-burst", user, model) == 2);
  CHECK(limiter.usage("mt-indep-minute", user, model) == 4);

  advance_until_due(backend, 300ms);
  REQUIRE(limiter.allow(user, model).allowed);  // minute: 5 of 5
  const airl::Decision minute = limiter.allow(user, model);
  CHECK_FALSE(minute.allowed);
  CHECK(minute.reason == "mt-indep-minute");
  CHECK(limiter.usage("mt-indep-burst", user, model) == 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Request ids across tiers.

TEMPLATE_LIST_TEST_CASE("a replayed request is charged in no tier", "[multi_tier][request_id]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {Tier{"mt-replay-user", Scope::user, {5, 1000ms}},
                                        Tier{"mt-replay-global", Scope::global, {2, 1000ms}}});
  const std::string model = "mt-replay-m";

  REQUIRE(limiter.allow(with_id("mt-replay-alice", model, "r1")).allowed);
  REQUIRE(limiter.allow("mt-replay-bob", model).allowed);  // the global tier is full

  const airl::Decision replay = limiter.allow(with_id("mt-replay-alice", model, "r1"));
  CHECK(replay.allowed);
  CHECK(replay.replayed);
  CHECK(replay.limit == 2);  // global has the least remaining
  CHECK(replay.remaining == 0);
  CHECK(limiter.usage("mt-replay-user", "mt-replay-alice", model) == 1);
  CHECK(limiter.usage("mt-replay-global", "mt-replay-alice", model) == 2);

  const airl::Decision fresh = limiter.allow(with_id("mt-replay-alice", model, "r2"));
  CHECK_FALSE(fresh.allowed);
  CHECK(fresh.reason == "mt-replay-global");
  CHECK(limiter.usage("mt-replay-user", "mt-replay-alice", model) == 1);
}

TEMPLATE_LIST_TEST_CASE("an id still held by a longer tier replays after a shorter tier forgot it",
                        "[multi_tier][request_id]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {Tier{"mt-held-short", Scope::user_model, {5, 300ms}},
                                        Tier{"mt-held-long", Scope::user, {5, 1000ms}}});
  const std::string user = "mt-held-alice";
  const std::string model = "mt-held-m";

  REQUIRE(limiter.allow(with_id(user, model, "r1")).allowed);
  advance_until_due(backend, 300ms);  // gone from the short tier, still in the long one

  const airl::Decision replay = limiter.allow(with_id(user, model, "r1"));
  CHECK(replay.allowed);
  CHECK(replay.replayed);
  CHECK(limiter.usage("mt-held-short", user, model) == 0);  // not charged where it had expired
  CHECK(limiter.usage("mt-held-long", user, model) == 1);

  advance_until_due(backend, 700ms);  // gone everywhere: a new request again
  const airl::Decision fresh = limiter.allow(with_id(user, model, "r1"));
  CHECK(fresh.allowed);
  CHECK_FALSE(fresh.replayed);
  CHECK(limiter.usage("mt-held-short", user, model) == 1);
  CHECK(limiter.usage("mt-held-long", user, model) == 1);
}

// ---------------------------------------------------------------------------------------------------------------
// reset().

namespace {

// Tiers on every scope, and traffic from alice and from users whose ids look like hers.
template <class Limiter>
void fill_reset_fixture(Limiter& limiter, const std::string& prefix) {
  const std::string m1 = prefix + "m1", m2 = prefix + "m2";
  for (const std::string& user : {prefix + "alice", prefix + "al", prefix + "bob", prefix + "alice" + '\0'}) {
    REQUIRE(limiter.allow(user, m1).allowed);
  }
  REQUIRE(limiter.allow(prefix + "alice", m2).allowed);
}

std::vector<Tier> reset_tiers(const std::string& prefix) {
  return {Tier{prefix + "pair", Scope::user_model, {10, 1000ms}}, Tier{prefix + "user", Scope::user, {10, 1000ms}},
          Tier{prefix + "model", Scope::model, {10, 1000ms}}, Tier{prefix + "global", Scope::global, {100, 1000ms}}};
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("reset(user) clears that user's user and user_model buckets and keeps model and global ones",
                        "[multi_tier][reset]", airl::test::Backends) {
  TestType backend;
  const std::string p = "mt-reset-user-";
  auto limiter = make_limiter(backend, reset_tiers(p));
  fill_reset_fixture(limiter, p);
  const airl::Metrics before = limiter.metrics();

  limiter.reset(p + "alice");

  CHECK(limiter.usage(p + "pair", p + "alice", p + "m1") == 0);
  CHECK(limiter.usage(p + "pair", p + "alice", p + "m2") == 0);
  CHECK(limiter.usage(p + "user", p + "alice", p + "m1") == 0);
  CHECK(limiter.usage(p + "model", p + "alice", p + "m1") == 4);  // kept: shared with other users
  CHECK(limiter.usage(p + "model", p + "alice", p + "m2") == 1);
  CHECK(limiter.usage(p + "global", p + "alice", p + "m1") == 5);
  for (const std::string& other : {p + "al", p + "bob", p + "alice" + '\0'}) {
    INFO("other user of size " << other.size());
    CHECK(limiter.usage(p + "pair", other, p + "m1") == 1);
    CHECK(limiter.usage(p + "user", other, p + "m1") == 1);
  }
  CHECK(limiter.metrics().allowed == before.allowed);
  CHECK(limiter.metrics().denied == before.denied);
}

TEMPLATE_LIST_TEST_CASE("reset(user, model) clears only that pair's user_model buckets",
                        "[multi_tier][reset]", airl::test::Backends) {
  TestType backend;
  const std::string p = "mt-reset-pair-";
  auto limiter = make_limiter(backend, reset_tiers(p));
  fill_reset_fixture(limiter, p);

  limiter.reset(p + "alice", p + "m1");

  CHECK(limiter.usage(p + "pair", p + "alice", p + "m1") == 0);
  CHECK(limiter.usage(p + "pair", p + "alice", p + "m2") == 1);
  CHECK(limiter.usage(p + "user", p + "alice", p + "m1") == 2);  // the user tier spans models: kept
  CHECK(limiter.usage(p + "model", p + "alice", p + "m1") == 4);
  CHECK(limiter.usage(p + "global", p + "alice", p + "m1") == 5);
  CHECK(limiter.usage(p + "pair", p + "alice" + '\0', p + "m1") == 1);
  CHECK(limiter.usage(p + "pair", p + "al", p + "m1") == 1);
}

// ---------------------------------------------------------------------------------------------------------------
// Capacity across tiers (InMemoryOptions::max_keys is the in-memory store's own).

TEST_CASE("key_capacity across tiers: never when one request needs more keys than max_keys, else finite",
          "[multi_tier][in_memory][max_keys]") {
  airl::test::InMemoryBackend backend;
  const std::vector<Tier> tiers = {Tier{"mt-cap-user", Scope::user, {5, 1000ms}},
                                   Tier{"mt-cap-model", Scope::model, {5, 1000ms}},
                                   Tier{"mt-cap-pair", Scope::user_model, {5, 1000ms}}};

  SECTION("three new buckets never fit in two") {
    auto limiter = make_limiter(backend, tiers, airl::InMemoryOptions{.shards = 4, .max_keys = 2});
    const airl::Decision denied = limiter.allow("mt-cap-alice", "mt-cap-m");
    CHECK_FALSE(denied.allowed);
    CHECK(denied.reason == "key_capacity");
    CHECK(denied.retry_after == airl::Decision::never);
    CHECK(limiter.metrics().active_keys == 0);  // nothing half-created
  }

  SECTION("a full store denies a new user until the old buckets expire") {
    auto limiter = make_limiter(backend, tiers, airl::InMemoryOptions{.shards = 4, .max_keys = 3});
    REQUIRE(limiter.allow("mt-cap-alice", "mt-cap-m").allowed);
    REQUIRE(limiter.metrics().active_keys == 3);
    backend.advance(200ms);

    const airl::Decision bob = limiter.allow("mt-cap-bob", "mt-cap-m");  // needs a user and a pair bucket
    CHECK_FALSE(bob.allowed);
    CHECK(bob.reason == "key_capacity");
    CHECK(bob.retry_after == 800ms);
    CHECK(limiter.usage("mt-cap-model", "mt-cap-bob", "mt-cap-m") == 1);  // nothing charged
    CHECK(limiter.allow("mt-cap-alice", "mt-cap-m").allowed);            // existing keys keep working

    backend.advance(1000ms);  // everything expired
    CHECK(limiter.allow("mt-cap-bob", "mt-cap-m").allowed);
    CHECK(limiter.metrics().active_keys == 3);
  }
}

TEST_CASE("key_capacity waits until enough buckets expire for every new bucket the request needs",
          "[multi_tier][in_memory][max_keys]") {
  airl::test::InMemoryBackend backend;
  auto limiter = make_limiter(backend,
                              {Tier{"mt-need-user", Scope::user, {10, 1000ms}},
                               Tier{"mt-need-pair", Scope::user_model, {10, 1000ms}}},
                              airl::InMemoryOptions{.shards = 4, .max_keys = 3});
  REQUIRE(limiter.allow("mt-need-alice", "m1"));  // user bucket + pair m1, both expire at 1000 ms
  backend.advance(100ms);
  REQUIRE(limiter.allow("mt-need-alice", "m2"));  // pair m2; the user bucket now expires at 1100 ms
  backend.advance(100ms);

  // Bob needs two new buckets: the first frees at 1000 ms, the second only at 1100 ms.
  const airl::Decision bob = limiter.allow("mt-need-bob", "m1");
  REQUIRE_FALSE(bob);
  CHECK(bob.reason == "key_capacity");
  CHECK(bob.retry_after == 900ms);

  backend.advance(899ms);
  const airl::Decision early = limiter.allow("mt-need-bob", "m1");
  CHECK_FALSE(early);
  CHECK(early.retry_after == 1ms);
  backend.advance(1ms);
  CHECK(limiter.allow("mt-need-bob", "m1"));
}

TEMPLATE_LIST_TEST_CASE("a request id replays only for the user and model it was admitted with",
                        "[multi_tier][request_id]", airl::test::Backends) {
  TestType backend;
  // With shared model and global buckets, an id held there must not let another user or model ride on it.
  auto limiter = make_limiter(backend, {Tier{"mt-ride-user", Scope::user, {1, 1000ms}},
                                        Tier{"mt-ride-model", Scope::model, {100, 1000ms}},
                                        Tier{"mt-ride-global", Scope::global, {100, 1000ms}}});
  REQUIRE(limiter.allow(with_id("mt-ride-alice", "mt-ride-m", "X")));

  const airl::Decision bob = limiter.allow(with_id("mt-ride-bob", "mt-ride-m", "X"));
  CHECK(bob.allowed);
  CHECK_FALSE(bob.replayed);  // charged as his own request
  CHECK(limiter.usage("mt-ride-user", "mt-ride-bob", "mt-ride-m") == 1);
  CHECK(limiter.usage("mt-ride-global", "mt-ride-bob", "mt-ride-m") == 2);
  const airl::Decision bob_again = limiter.allow(with_id("mt-ride-bob", "mt-ride-m", "Y"));
  CHECK_FALSE(bob_again);
  CHECK(bob_again.reason == "mt-ride-user");

  const airl::Decision other_model = limiter.allow(with_id("mt-ride-alice", "mt-ride-m2", "X"));
  CHECK_FALSE(other_model.replayed);
  CHECK_FALSE(other_model);  // a new request for alice: her user tier is full

  const airl::Decision retry = limiter.allow(with_id("mt-ride-alice", "mt-ride-m", "X"));
  CHECK(retry.allowed);
  CHECK(retry.replayed);
  CHECK(limiter.usage("mt-ride-global", "mt-ride-alice", "mt-ride-m") == 2);
}
