// SPDX-License-Identifier: MIT
// Reserve, then settle: a request admitted with an estimate and a request id is settled with its real cost.
// Refunds, overcharges beyond the limit, unknown and expired ids, repeated and concurrent settles, and retry
// times computed from the settled costs. Behavioural cases run on every test backend; the Redis-only cases
// (costs above 2^53 on Redis, a server that is down, FailurePolicy::local) are in
// tests/redis/redis_settle_test.cpp.
#include <catch2/catch.hpp>

#include "support.hpp"

#include <atomic>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>
#include <vector>

using namespace airl::test;

namespace {

// 60 requests and 10,000 tokens per user+model, and 50,000 tokens per model across users.
std::vector<airl::Tier> rpm_tpm_and_model_tpm(std::chrono::milliseconds window = 60s) {
  return {{"rpm", airl::Scope::user_model, {60, window}, airl::Unit::requests},
          {"tpm", airl::Scope::user_model, {10'000, window}},
          {"model-tpm", airl::Scope::model, {50'000, window}}};
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("settling refunds the unused part of a reservation in every cost tier",
                        "[settle]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_tpm_and_model_tpm(), backend.make_storage());
  REQUIRE(limiter.allow(reserve("alice", "m", 8'000, "req-1")));
  CHECK(limiter.usage("tpm", "alice", "m") == 8'000);
  CHECK_FALSE(limiter.allow(reserve("alice", "m", 3'000, "req-2")));  // the estimate holds the room

  CHECK(limiter.settle("alice", "m", "req-1", 1'200));
  CHECK(limiter.usage("tpm", "alice", "m") == 1'200);
  CHECK(limiter.usage("model-tpm", "alice", "m") == 1'200);
  CHECK(limiter.usage("rpm", "alice", "m") == 1);  // a requests tier still counts the one request
  const airl::Decision next = limiter.allow(reserve("alice", "m", 3'000, "req-2"));
  CHECK(next);
  CHECK(limiter.usage("tpm", "alice", "m") == 1'200 + 3'000);
}

TEMPLATE_LIST_TEST_CASE("settling above the estimate charges the extra even beyond the limit",
                        "[settle]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_tpm_and_model_tpm(), backend.make_storage());
  REQUIRE(limiter.allow(reserve("bob", "m", 6'000, "long-answer")));
  CHECK(limiter.settle("bob", "m", "long-answer", 14'000));
  CHECK(limiter.usage("tpm", "bob", "m") == 14'000);
  const airl::Decision denied = limiter.allow(reserve("bob", "m", 1, "tiny"));
  CHECK_FALSE(denied);
  CHECK(denied.reason == "tpm");
  CHECK(denied.remaining == 0);
  // Only the settled entry's expiry frees room: 4,001 units must go, and it is the only entry.
  CHECK_THAT(denied.retry_after, within_slack<TestType>(60s));
}

TEMPLATE_LIST_TEST_CASE("retry_after is computed from the settled costs", "[settle]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter({{"tpm", airl::Scope::user, {100, 60s}}},
                                                             backend.make_storage());
  REQUIRE(limiter.allow(reserve("carol", "m", 30, "a")));  // t = 0
  backend.advance(100ms);
  REQUIRE(limiter.allow(reserve("carol", "m", 30, "b")));  // t = 100 ms
  backend.advance(100ms);
  REQUIRE(limiter.allow(reserve("carol", "m", 40, "c")));  // t = 200 ms: full
  // A cost of 40 needs 40 freed: "a" frees 30, "a" and "b" 60, so it waits for "b" (admitted at 100 ms).
  CHECK_THAT(limiter.allow(costing("carol", "m", 40)).retry_after, within_slack<TestType>(60s - 100ms));
  // "b" really cost 10: 80 used, 20 must be freed, and "a" alone frees 30.
  REQUIRE(limiter.settle("carol", "m", "b", 10));
  CHECK_THAT(limiter.allow(costing("carol", "m", 40)).retry_after, within_slack<TestType>(60s - 200ms));
  // "a" really cost 5 (and "b" 10): 55 used, so 40 fits now.
  REQUIRE(limiter.settle("carol", "m", "a", 5));
  CHECK(limiter.allow(costing("carol", "m", 40)));
}

TEMPLATE_LIST_TEST_CASE("settle returns false for ids it does not hold, and changes nothing",
                        "[settle]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_tpm_and_model_tpm(), backend.make_storage());
  REQUIRE(limiter.allow(reserve("dave", "m", 500, "known")));
  CHECK_FALSE(limiter.settle("dave", "m", "never-sent", 1));
  CHECK_FALSE(limiter.settle("dave", "other-model", "known", 1));  // an id is bound to its user and model
  CHECK_FALSE(limiter.settle("erin", "m", "known", 1));
  REQUIRE_FALSE(limiter.allow(reserve("dave", "m", 20'000, "too-big")));  // denied: never recorded
  CHECK_FALSE(limiter.settle("dave", "m", "too-big", 1));
  CHECK(limiter.usage("tpm", "dave", "m") == 500);
  CHECK(limiter.usage("model-tpm", "dave", "m") == 500);
}

TEMPLATE_LIST_TEST_CASE("an expired reservation cannot be settled, and an unsettled one expires by itself",
                        "[settle]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_tpm_and_model_tpm(300ms), backend.make_storage());
  REQUIRE(limiter.allow(reserve("frank", "m", 9'000, "crashed-worker")));
  backend.advance(300ms + boundary_margin<TestType>());
  CHECK_FALSE(limiter.settle("frank", "m", "crashed-worker", 100));
  CHECK(limiter.usage("tpm", "frank", "m") == 0);
  CHECK(limiter.allow(reserve("frank", "m", 10'000, "next")));
}

TEMPLATE_LIST_TEST_CASE("settling twice with the same cost is harmless and a later settle replaces an earlier one",
                        "[settle]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_tpm_and_model_tpm(), backend.make_storage());
  REQUIRE(limiter.allow(reserve("gina", "m", 4'000, "r")));
  REQUIRE(limiter.allow(reserve("gina", "m", 100, "other")));
  CHECK(limiter.settle("gina", "m", "r", 700));
  CHECK(limiter.settle("gina", "m", "r", 700));
  CHECK(limiter.usage("tpm", "gina", "m") == 800);
  CHECK(limiter.settle("gina", "m", "r", 2'500));
  CHECK(limiter.usage("tpm", "gina", "m") == 2'600);
  CHECK(limiter.settle("gina", "m", "r", 0));  // nothing was generated: a full refund
  CHECK(limiter.usage("tpm", "gina", "m") == 100);
  // The settled entry still holds its id: a retry of the request is a replay, not a second charge.
  const airl::Decision replay = limiter.allow(reserve("gina", "m", 4'000, "r"));
  CHECK(replay.replayed);
  CHECK(limiter.usage("tpm", "gina", "m") == 100);
}

TEMPLATE_LIST_TEST_CASE("settle on a limiter counting only requests finds the request and changes nothing",
                        "[settle]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {{"rpm", airl::Scope::user, {5, 60s}, airl::Unit::requests}}, backend.make_storage());
  REQUIRE(limiter.allow(reserve("hank", "m", 300, "q")));
  CHECK(limiter.settle("hank", "m", "q", 10'000));
  CHECK_FALSE(limiter.settle("hank", "m", "missing", 1));
  CHECK(limiter.usage("rpm", "hank", "m") == 1);
}

TEMPLATE_LIST_TEST_CASE("concurrent settles and decisions keep exact totals",
                        "[settle][concurrency]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {{"tpm", airl::Scope::model, {1'000'000'000, 60s}}, {"rpm", airl::Scope::user_model, {100'000, 60s}, airl::Unit::requests}},
      backend.make_storage());
  constexpr int threads = 8;
  const int per_thread = TestType::slack.count() == 0 ? 400 : 60;
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const std::string user = "user-" + std::to_string(t);
      for (int i = 0; i < per_thread; ++i) {
        const std::string request = id("r", i);
        if (!limiter.allow(reserve(user, "shared", 1'000, request))) failures.fetch_add(1);
        // Every request is settled twice, racing the others' admissions and settles on the shared bucket.
        if (!limiter.settle(user, "shared", request, 7)) failures.fetch_add(1);
        if (!limiter.settle(user, "shared", request, static_cast<std::uint64_t>(i % 10))) failures.fetch_add(1);
        // Everyone settles one request of the first user's, with the same value: the race must not matter.
        limiter.settle("user-0", "shared", "r-0", 3);
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  CHECK(failures.load() == 0);
  // Each request ends at its own last settle (i % 10), except user-0's r-0, which every thread also settles to 3:
  // it ends at 0 or 3 depending on which settle came last.
  std::uint64_t expected = 0;
  for (int i = 0; i < per_thread; ++i) expected += static_cast<std::uint64_t>(i % 10);
  expected *= threads;
  const std::uint64_t used = limiter.usage("tpm", "anyone", "shared");
  CHECK((used == expected || used == expected + 3));
  CHECK(limiter.usage("rpm", "user-3", "shared") == static_cast<std::uint64_t>(per_thread));
}

TEMPLATE_LIST_TEST_CASE("settle applies to the one admitted entry of a replayed request",
                        "[settle]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_tpm_and_model_tpm(), backend.make_storage());
  REQUIRE(limiter.allow(reserve("ivy", "m", 2'000, "dup")));
  REQUIRE(limiter.allow(reserve("ivy", "m", 2'000, "dup")).replayed);
  CHECK(limiter.settle("ivy", "m", "dup", 50));
  CHECK(limiter.usage("tpm", "ivy", "m") == 50);
  CHECK(limiter.usage("rpm", "ivy", "m") == 1);
}

TEMPLATE_LIST_TEST_CASE("a shadow-denied request was not recorded, so it cannot be settled",
                        "[settle][shadow]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter({{"tpm", airl::Scope::user, {100, 60s}}},
                                                             backend.make_storage(), {.shadow = true});
  const airl::Decision over = limiter.allow(reserve("jon", "m", 500, "over"));
  REQUIRE(over.shadow_denied);
  CHECK_FALSE(limiter.settle("jon", "m", "over", 10));
  REQUIRE(limiter.allow(reserve("jon", "m", 50, "within")));
  CHECK(limiter.settle("jon", "m", "within", 10));
  CHECK(limiter.usage("tpm", "jon", "m") == 10);
}

TEMPLATE_LIST_TEST_CASE("settle refuses bad arguments before changing anything",
                        "[settle][validation]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_tpm_and_model_tpm(), backend.make_storage());
  REQUIRE(limiter.allow(reserve("kim", "m", 100, "r")));
  CHECK_THROWS_AS(limiter.settle("kim", "m", "", 1), std::invalid_argument);
  CHECK_THROWS_AS(limiter.settle("", "m", "r", 1), std::invalid_argument);
  CHECK_THROWS_AS(limiter.settle("kim", "", "r", 1), std::invalid_argument);
  CHECK_THROWS_AS(limiter.settle("kim", "m", std::string(airl::max_id_length + 1, 'x'), 1), std::invalid_argument);
  CHECK(limiter.usage("tpm", "kim", "m") == 100);
}

TEST_CASE("settle works through SlidingWindowLimiter in memory", "[settle]") {
  InMemoryBackend backend;
  airl::SlidingWindowLimiter<ManualStorage> limiter({1'000, 60s}, backend.make_storage());
  REQUIRE(limiter.allow(reserve("lee", "m", 300, "r")));
  CHECK(limiter.settle("lee", "m", "r", 2'000));
  CHECK_FALSE(limiter.allow(reserve("lee", "m", 1, "s")));
}

TEST_CASE("InMemoryStorage::settle refuses a repeated bucket and bad windows", "[settle][validation]") {
  ManualStorage storage;
  const airl::BucketRef bucket{airl::Scope::user, "t", "u", "m"};
  const airl::Charge twice[] = {{bucket, {10, 1s}, 1}, {bucket, {10, 1s}, 1}};
  CHECK_THROWS_AS(storage.settle(twice, "id"), std::invalid_argument);
  const airl::Charge no_window[] = {{bucket, {10, 0ms}, 1}};
  CHECK_THROWS_AS(storage.settle(no_window, "id"), std::invalid_argument);
  const airl::Charge fine[] = {{bucket, {10, 1s}, 1}};
  CHECK(storage.settle(fine, "id") == 0);
  CHECK(storage.settle({}, "id") == 0);
}

TEMPLATE_LIST_TEST_CASE("settle answers for the cost tiers: false once they no longer hold the request",
                        "[settle]", airl::test::Backends) {
  TestType backend;
  // The requests tier remembers the request for an hour, the tokens tier for 300 ms.
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {{"rph", airl::Scope::user, {100, 1h}, airl::Unit::requests}, {"tps", airl::Scope::user, {1'000, 300ms}}},
      backend.make_storage());
  REQUIRE(limiter.allow(reserve("mia", "m", 900, "r")));
  backend.advance(300ms + boundary_margin<TestType>());
  CHECK_FALSE(limiter.settle("mia", "m", "r", 10));  // the tokens are gone already: nothing was settled
  CHECK(limiter.usage("rph", "mia", "m") == 1);
}

TEST_CASE("settle refuses an actual cost above 2^53 on every backend", "[settle][validation]") {
  InMemoryBackend backend;
  airl::MultiTierLimiter<ManualStorage> limiter({{"tpm", airl::Scope::user, {100, 60s}}}, backend.make_storage());
  REQUIRE(limiter.allow(reserve("ned", "m", 10, "a")));
  REQUIRE(limiter.allow(reserve("ned", "m", 10, "b")));
  // A "cost unknown" sentinel such as uint64 max must not wrap the totals and open the limit.
  CHECK_THROWS_AS(limiter.settle("ned", "m", "a", std::numeric_limits<std::uint64_t>::max()), std::invalid_argument);
  CHECK_THROWS_AS(limiter.settle("ned", "m", "a", (std::uint64_t{1} << 53) + 1), std::invalid_argument);
  CHECK(limiter.usage("tpm", "ned", "m") == 20);
  CHECK(limiter.settle("ned", "m", "b", 0));
  CHECK(limiter.settle("ned", "m", "a", std::uint64_t{1} << 53));  // 2^53 itself is accepted, as a total too
  CHECK_FALSE(limiter.allow(costing("ned", "m", 1)));
}

TEMPLATE_LIST_TEST_CASE("settled costs never bring a total above 2^53: that settle is refused and changes nothing",
                        "[settle][validation]", airl::test::Backends) {
  constexpr std::uint64_t two_to_53 = std::uint64_t{1} << 53;
  TestType backend;
  SECTION("the issue's case: 2048 reservations of 1 under a limit of 2048, each settled to 2^53") {
    // Before: in memory the total wrapped to 0 after the 2048th settle and allow(2048) was admitted; on Redis
    // settle 1024 onward failed with an HINCRBY overflow after writing the entry's new cost.
    airl::MultiTierLimiter<typename TestType::Storage> limiter({{"tpm", airl::Scope::user, {2048, 60s}}},
                                                             backend.make_storage());
    std::vector<airl::Request> batch;
    std::vector<std::string> ids;
    for (int i = 0; i < 2048; ++i) ids.push_back(id("r", i));
    for (const std::string& request_id : ids) batch.push_back(reserve("ivy", "m", 1, request_id));
    for (const airl::Decision& decision : limiter.allow_many(batch)) REQUIRE(decision.allowed);
    int refused = 0;
    for (const std::string& request_id : ids) {
      try {
        limiter.settle("ivy", "m", request_id, two_to_53);
      } catch (const std::invalid_argument&) {
        ++refused;
      }
    }
    CHECK(refused == 2048);  // each would make the total 2^53 + 2047
    CHECK(limiter.usage("tpm", "ivy", "m") == 2048);
    CHECK_FALSE(limiter.allow(costing("ivy", "m", 2048)));
    CHECK(limiter.metrics().backend_errors == 0);
  }
  SECTION("up to 2^53 exactly, all-or-nothing across the tiers") {
    // (ivy, m1) and (ivy, m2) share the user tier; each pair tier holds one entry.
    airl::MultiTierLimiter<typename TestType::Storage> limiter(
        {{"user", airl::Scope::user, {4, 60s}}, {"pair", airl::Scope::user_model, {4, 60s}}}, backend.make_storage());
    REQUIRE(limiter.allow(reserve("ivy", "m1", 1, "a")));
    REQUIRE(limiter.allow(reserve("ivy", "m2", 1, "b")));
    // 2^53 in a's pair bucket alone, but 2^53 + 1 in the user bucket: refused in both.
    CHECK_THROWS_AS(limiter.settle("ivy", "m1", "a", two_to_53), std::invalid_argument);
    CHECK(limiter.usage("pair", "ivy", "m1") == 1);
    CHECK(limiter.usage("user", "ivy", "m1") == 2);
    CHECK(limiter.settle("ivy", "m1", "a", two_to_53 - 1));  // the user total is 2^53 exactly
    CHECK(limiter.usage("user", "ivy", "m1") == two_to_53);
    CHECK(limiter.usage("pair", "ivy", "m1") == two_to_53 - 1);
    CHECK_THROWS_AS(limiter.settle("ivy", "m2", "b", 2), std::invalid_argument);
    CHECK(limiter.settle("ivy", "m2", "b", 1));  // the same cost: nothing to change
    CHECK(limiter.refund("ivy", "m2", "b"));     // lowering is always fine
    CHECK(limiter.settle("ivy", "m1", "a", two_to_53));
    CHECK(limiter.usage("user", "ivy", "m1") == two_to_53);
    const airl::Decision denied = limiter.allow(costing("ivy", "m3", 1));
    CHECK_FALSE(denied.allowed);
    CHECK(denied.reason == "user");
    CHECK(denied.retry_after != airl::Decision::never);  // a's expiry frees it
    CHECK(limiter.metrics().backend_errors == 0);
  }
}

// --- refund: a request that never ran ---

TEMPLATE_LIST_TEST_CASE("a refund gives back every tier's charge, requests tiers too, and frees the id",
                        "[settle][refund]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_tpm_and_model_tpm(), backend.make_storage());
  REQUIRE(limiter.allow(reserve("ola", "m", 300, "kept")));
  REQUIRE(limiter.allow(reserve("ola", "m", 8'000, "queued")));
  CHECK(limiter.usage("rpm", "ola", "m") == 2);

  CHECK(limiter.refund("ola", "m", "queued"));
  CHECK(limiter.usage("rpm", "ola", "m") == 1);  // the request never ran: it does not count as one
  CHECK(limiter.usage("tpm", "ola", "m") == 300);
  CHECK(limiter.usage("model-tpm", "ola", "m") == 300);
  CHECK_FALSE(limiter.refund("ola", "m", "queued"));  // already refunded: the id is not held any more
  CHECK_FALSE(limiter.refund("ola", "m", "never-seen"));

  // The client retries with the same id: a new request, charged again, not a replay of the refunded one.
  const airl::Decision retry = limiter.allow(reserve("ola", "m", 8'000, "queued"));
  CHECK(retry);
  CHECK_FALSE(retry.replayed);
  CHECK(limiter.usage("tpm", "ola", "m") == 8'300);
  CHECK(limiter.usage("rpm", "ola", "m") == 2);
  // From then on that id replays as usual, and settles the new entry.
  CHECK(limiter.allow(reserve("ola", "m", 8'000, "queued")).replayed);
  CHECK(limiter.settle("ola", "m", "queued", 100));
  CHECK(limiter.usage("tpm", "ola", "m") == 400);
  // The other request was never touched.
  CHECK(limiter.allow(reserve("ola", "m", 300, "kept")).replayed);
}

TEMPLATE_LIST_TEST_CASE("a refunded entry keeps its time, and the id admitted again outlives it",
                        "[settle][refund]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {{"rps", airl::Scope::user, {2, 1s}, airl::Unit::requests}}, backend.make_storage());
  REQUIRE(limiter.allow(reserve("pia", "m", 1, "x")));
  REQUIRE(limiter.refund("pia", "m", "x"));
  backend.advance(400ms);
  REQUIRE(limiter.allow(reserve("pia", "m", 1, "x")));  // the same id, admitted anew at 400 ms
  // The refunded entry (at 0 ms) leaves the window before the new one: the new id must still be known after.
  backend.advance(600ms + boundary_margin<TestType>());
  CHECK(limiter.usage("rps", "pia", "m") == 1);
  CHECK(limiter.allow(reserve("pia", "m", 1, "x")).replayed);
  CHECK(limiter.refund("pia", "m", "x"));
  CHECK(limiter.usage("rps", "pia", "m") == 0);
}

TEMPLATE_LIST_TEST_CASE("refund refuses bad arguments before changing anything", "[settle][refund][validation]",
                        airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(rpm_tpm_and_model_tpm(), backend.make_storage());
  REQUIRE(limiter.allow(reserve("quinn", "m", 100, "r")));
  CHECK_THROWS_AS(limiter.refund("quinn", "m", ""), std::invalid_argument);
  CHECK_THROWS_AS(limiter.refund("", "m", "r"), std::invalid_argument);
  CHECK_THROWS_AS(limiter.refund("quinn", "", "r"), std::invalid_argument);
  CHECK_THROWS_AS(limiter.refund("quinn", "m", std::string(airl::max_id_length + 1, 'x')), std::invalid_argument);
  CHECK(limiter.usage("tpm", "quinn", "m") == 100);
  CHECK(limiter.usage("rpm", "quinn", "m") == 1);
}

TEST_CASE("refund works through SlidingWindowLimiter in memory", "[settle][refund]") {
  InMemoryBackend backend;
  airl::SlidingWindowLimiter<ManualStorage> limiter({1, 60s}, backend.make_storage());
  REQUIRE(limiter.allow(reserve("ray", "m", 1, "r")));
  CHECK_FALSE(limiter.allow(reserve("ray", "m", 1, "s")));
  CHECK(limiter.refund("ray", "m", "r"));
  CHECK(limiter.allow(reserve("ray", "m", 1, "s")));
}
