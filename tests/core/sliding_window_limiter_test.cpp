// SPDX-License-Identifier: MIT
// SlidingWindowLimiter: the one-bucket rules of docs/DESIGN.md, seen through the public API.
// Behavioural cases are templated over the test backends (support.hpp): the in-memory store on a ManualClock,
// where every duration and boundary is exact, and (when built) RedisStorage on a real redis-server, where time is real:
// durations are compared with within_slack, boundaries are approached from boundary_margin and crossed by
// waiting what the limiter answered. Windows stay <= 1 s so the Redis runs stay short; names are unique per
// case. Cases that need nanosecond time or in-memory internals (max_keys, purging, active_keys) use the
// in-memory backend directly and say so.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "support.hpp"

namespace {

using airl::test::advance_until_due;
using airl::test::boundary_margin;
using airl::test::costing;
using airl::test::with_id;
using airl::test::within_slack;

using namespace std::chrono_literals;
using namespace std::string_view_literals;
using airl::test::InMemoryBackend;

template <class Backend>
airl::SlidingWindowLimiter<typename Backend::Storage> make_limiter(Backend& backend, airl::Quota quota,
                                                                   airl::InMemoryOptions options = {}) {
  return airl::SlidingWindowLimiter<typename Backend::Storage>(quota, backend.make_storage(options));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Rule 1: the boundary.

TEMPLATE_LIST_TEST_CASE("an admitted entry counts until exactly one window after its admission",
                        "[sliding_window]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {1, 1000ms});
  const std::string user = "swl-boundary-user";
  const std::string model = "swl-boundary-model";

  const auto margin = boundary_margin<TestType>();  // 1 ms on exact time

  backend.advance(5ms);  // admit away from the clock's epoch
  REQUIRE(limiter.allow(user, model).allowed);

  backend.advance(1000ms - margin);  // t + window - margin: still counts
  const airl::Decision before = limiter.allow(user, model);
  CHECK_FALSE(before.allowed);
  CHECK_THAT(before.retry_after, within_slack<TestType>(margin));
  CHECK(limiter.usage(user, model) == 1);

  advance_until_due(backend, before.retry_after);  // t + window (on exact time): no longer counts
  CHECK(limiter.usage(user, model) == 0);
  const airl::Decision at = limiter.allow(user, model);
  CHECK(at.allowed);
  CHECK(at.remaining == 0);
}

// Nanosecond time exists only on the ManualClock: in-memory only.
TEST_CASE("nanosecond time is honoured exactly on a ManualClock", "[sliding_window][precision]") {
  InMemoryBackend backend;

  SECTION("the boundary is exact to the nanosecond") {
    auto limiter = make_limiter(backend, {1, 100ms});
    backend.advance(250us + 7ns);
    REQUIRE(limiter.allow("swl-ns-user", "swl-ns-model").allowed);

    backend.advance(100ms - 1ns);  // 1 ns before t + window
    const airl::Decision before = limiter.allow("swl-ns-user", "swl-ns-model");
    CHECK_FALSE(before.allowed);
    CHECK(before.retry_after == 1ms);  // 1 ns, rounded up to a whole millisecond
    CHECK(before.reset_after == 1ms);
    CHECK(limiter.usage("swl-ns-user", "swl-ns-model") == 1);

    backend.advance(1ns);
    CHECK(limiter.usage("swl-ns-user", "swl-ns-model") == 0);
    CHECK(limiter.allow("swl-ns-user", "swl-ns-model").allowed);
  }

  SECTION("a sub-millisecond retry_after is rounded up, the exact wait is honoured") {
    auto limiter = make_limiter(backend, {1, 100ms});
    backend.advance(250us);
    REQUIRE(limiter.allow("swl-round-user", "swl-round-model").allowed);
    backend.advance(50ms - 250us);  // now = 50 ms, the entry expires at 100.25 ms

    // 50.25 ms is reported as 51 ms, the smallest whole-ms wait that is enough.
    const airl::Decision denied = limiter.allow("swl-round-user", "swl-round-model");
    REQUIRE_FALSE(denied.allowed);
    CHECK(denied.retry_after == 51ms);
    CHECK(denied.reset_after == 51ms);

    backend.advance(50ms + 250us - 1ns);  // 1 ns short of the exact expiry
    CHECK_FALSE(limiter.allow("swl-round-user", "swl-round-model").allowed);
    backend.advance(1ns);
    CHECK(limiter.allow("swl-round-user", "swl-round-model").allowed);
  }

  SECTION("entries admitted nanoseconds apart stop counting nanoseconds apart") {
    auto limiter = make_limiter(backend, {3, 100ms});
    const auto usage = [&] { return limiter.usage("swl-spacing-user", "swl-spacing-model"); };
    for (int i = 0; i < 3; ++i) {
      REQUIRE(limiter.allow("swl-spacing-user", "swl-spacing-model").allowed);
      backend.advance(1ns);
    }
    // Admitted at 0, 1 and 2 ns; now is 3 ns.
    REQUIRE(usage() == 3);
    backend.advance(100ms - 3ns);  // now == first + window
    CHECK(usage() == 2);
    backend.advance(1ns);
    CHECK(usage() == 1);
    backend.advance(1ns);
    CHECK(usage() == 0);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Denials.

TEMPLATE_LIST_TEST_CASE("denied requests are not recorded and a flood of them does not push retry_after later",
                        "[sliding_window]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {3, 1000ms});
  const std::string user = "swl-flood-user";
  const std::string model = "swl-flood-model";

  // Admissions spread out, so recording a denial would move the entry that must expire to a later one.
  for (int i = 0; i < 3; ++i) {
    backend.advance(10ms);
    REQUIRE(limiter.allow(user, model).allowed);
  }
  backend.advance(70ms);  // now = first admission + 90 ms

  // A recorded denial would make the second entry (expiring in 920 ms) the one to wait for.
  const airl::Decision first = limiter.allow(user, model);
  REQUIRE_FALSE(first.allowed);
  REQUIRE_THAT(first.retry_after, within_slack<TestType>(910ms));

  std::chrono::milliseconds previous = first.retry_after;
  for (int i = 0; i < 50; ++i) {
    const airl::Decision again = limiter.allow(user, model);
    REQUIRE_FALSE(again.allowed);
    REQUIRE_THAT(again.retry_after, within_slack<TestType>(910ms));
    REQUIRE(again.retry_after <= previous);  // time only brings it closer (on exact time: equal)
    previous = again.retry_after;
  }
  CHECK(limiter.usage(user, model) == 3);
  CHECK(limiter.metrics().allowed == 3);
  CHECK(limiter.metrics().denied == 51);

  advance_until_due(backend, previous);  // the first entry expires: the same request passes
  CHECK(limiter.allow(user, model).allowed);
}

TEMPLATE_LIST_TEST_CASE("a cost above the limit, or a limit of 0, is denied with retry_after never",
                        "[sliding_window]", airl::test::Backends) {
  TestType backend;

  SECTION("limit 0 denies everything, forever") {
    auto limiter = make_limiter(backend, {0, 300ms});
    const airl::Decision denied = limiter.allow("swl-never-zero-user", "swl-never-zero-model");
    CHECK_FALSE(denied.allowed);
    CHECK(denied.retry_after == airl::Decision::never);
    CHECK(denied.reason == "default");
    CHECK(denied.limit == 0);
    CHECK(denied.remaining == 0);
    CHECK(denied.reset_after == 0ms);  // nothing in the window

    backend.advance(300ms);  // waiting does not help
    CHECK(limiter.allow("swl-never-zero-user", "swl-never-zero-model").retry_after == airl::Decision::never);
    CHECK(limiter.usage("swl-never-zero-user", "swl-never-zero-model") == 0);
  }

  SECTION("cost > limit is never admissible, cost == limit is") {
    auto limiter = make_limiter(backend, {5, 1000ms});
    const airl::Decision too_big = limiter.allow(costing("swl-never-cost-user", "swl-never-cost-model", 6));
    CHECK_FALSE(too_big.allowed);
    CHECK(too_big.retry_after == airl::Decision::never);
    CHECK(too_big.remaining == 5);
    CHECK(limiter.usage("swl-never-cost-user", "swl-never-cost-model") == 0);

    const airl::Decision exact = limiter.allow(costing("swl-never-cost-user", "swl-never-cost-model", 5));
    CHECK(exact.allowed);
    CHECK(exact.remaining == 0);

    // With a full window, an over-limit cost is still "never", not "wait for the window".
    CHECK(limiter.allow(costing("swl-never-cost-user", "swl-never-cost-model", 6)).retry_after ==
          airl::Decision::never);
    CHECK_THAT(limiter.allow(costing("swl-never-cost-user", "swl-never-cost-model", 1)).retry_after,
               within_slack<TestType>(1000ms));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Weighted costs.

TEMPLATE_LIST_TEST_CASE("usage is the sum of costs and a cost is admitted iff usage + cost <= limit",
                        "[sliding_window]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {10, 1000ms});
  const std::string user = "swl-weighted-user";
  const std::string model = "swl-weighted-model";

  const airl::Decision first = limiter.allow(costing(user, model, 4));
  CHECK(first.allowed);
  CHECK(first.remaining == 6);
  const airl::Decision second = limiter.allow(costing(user, model, 4));
  CHECK(second.allowed);
  CHECK(second.remaining == 2);
  CHECK(limiter.usage(user, model) == 8);

  const airl::Decision over = limiter.allow(costing(user, model, 3));  // 8 + 3 > 10
  CHECK_FALSE(over.allowed);
  CHECK(over.remaining == 2);
  CHECK(limiter.usage(user, model) == 8);

  const airl::Decision fits = limiter.allow(costing(user, model, 2));  // 8 + 2 == 10
  CHECK(fits.allowed);
  CHECK(fits.remaining == 0);
  CHECK(limiter.usage(user, model) == 10);
  CHECK_FALSE(limiter.allow(user, model).allowed);
}

TEMPLATE_LIST_TEST_CASE("a cost of 100000 is decided exactly like a cost of 1",
                        "[sliding_window]", airl::test::Backends) {
  // The same timeline at two scales: every answer must scale with it, nothing else may change. Entries are
  // 100 ms apart, more than Redis's slack, so a retry_after one entry off fails on both backends.
  const std::uint64_t scale = GENERATE(as<std::uint64_t>{}, 1, 100'000);
  TestType backend;
  auto limiter = make_limiter(backend, {5 * scale, 1000ms});
  const std::string user = airl::test::id("swl-scale-user", static_cast<int>(scale % 1000));
  const std::string model = "swl-scale-model";

  for (std::uint64_t i = 1; i <= 5; ++i) {
    backend.advance(100ms);
    const airl::Decision admitted = limiter.allow(costing(user, model, scale));
    REQUIRE(admitted.allowed);
    REQUIRE(admitted.remaining == (5 - i) * scale);
    REQUIRE(admitted.limit == 5 * scale);
  }
  REQUIRE(limiter.usage(user, model) == 5 * scale);

  const airl::Decision denied = limiter.allow(costing(user, model, scale));
  CHECK_FALSE(denied.allowed);
  CHECK_THAT(denied.retry_after, within_slack<TestType>(600ms));  // first entry (100 ms) + window - now (500 ms)

  const airl::Decision big = limiter.allow(costing(user, model, 3 * scale));
  CHECK_THAT(big.retry_after, within_slack<TestType>(800ms));  // the three oldest must go

  advance_until_due(backend, denied.retry_after);
  CHECK(limiter.allow(costing(user, model, scale)).allowed);
  CHECK(limiter.usage(user, model) == 5 * scale);
}

// ---------------------------------------------------------------------------------------------------------------
// Rule 5 to 7: retry_after, remaining, reset_after.

TEMPLATE_LIST_TEST_CASE("retry_after is the exact moment enough of the oldest entries expire",
                        "[sliding_window]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {10, 1000ms});
  const std::string user = "swl-retry-user";
  const std::string model = "swl-retry-model";

  // Entries: cost 3 at t, cost 4 at t+100, cost 2 at t+200 (usage 9). Now is t+300.
  REQUIRE(limiter.allow(costing(user, model, 3)).allowed);
  backend.advance(100ms);
  REQUIRE(limiter.allow(costing(user, model, 4)).allowed);
  backend.advance(100ms);
  REQUIRE(limiter.allow(costing(user, model, 2)).allowed);
  backend.advance(100ms);

  // Denials are not recorded, so each question sees the same log.
  const auto retry_after = [&](std::uint64_t cost) { return limiter.allow(costing(user, model, cost)).retry_after; };
  CHECK_THAT(retry_after(2), within_slack<TestType>(700ms));   // needs 1 unit: the cost-3 entry
  CHECK_THAT(retry_after(5), within_slack<TestType>(800ms));   // needs 4: up to the cost-4 entry
  CHECK_THAT(retry_after(10), within_slack<TestType>(900ms));  // needs 9: all three
  CHECK(retry_after(11) == airl::Decision::never);
  REQUIRE(limiter.usage(user, model) == 9);

  const auto margin = boundary_margin<TestType>();
  backend.advance(800ms - margin);  // 1 ms early on exact time
  const airl::Decision early = limiter.allow(costing(user, model, 5));
  CHECK_FALSE(early.allowed);
  CHECK_THAT(early.retry_after, within_slack<TestType>(margin));

  advance_until_due(backend, early.retry_after);  // exactly retry_after after the first denial
  const airl::Decision on_time = limiter.allow(costing(user, model, 5));
  CHECK(on_time.allowed);
  CHECK(on_time.remaining == 3);  // the cost-2 entry and this one count
  CHECK(limiter.usage(user, model) == 7);
}

TEMPLATE_LIST_TEST_CASE("a decision reports limit, remaining, reset_after, reason and converts to bool",
                        "[sliding_window]", airl::test::Backends) {
  static_assert(!std::is_convertible_v<airl::Decision, bool>, "the bool conversion must be explicit");
  TestType backend;
  auto limiter = make_limiter(backend, {3, 1000ms});
  const std::string user = "swl-fields-user";
  const std::string model = "swl-fields-model";

  const airl::Decision first = limiter.allow(user, model);
  CHECK(first.allowed);
  CHECK(static_cast<bool>(first));
  CHECK(first.limit == 3);
  CHECK(first.remaining == 2);  // limit - usage after
  CHECK(first.retry_after == 0ms);
  CHECK(first.reset_after == 1000ms);  // the new entry is the newest
  CHECK(first.reason.empty());
  CHECK_FALSE(first.replayed);
  CHECK_FALSE(first.degraded);

  backend.advance(200ms);
  const airl::Decision second = limiter.allow(user, model);
  CHECK(second.remaining == 1);
  CHECK(second.reset_after == 1000ms);

  backend.advance(300ms);
  CHECK(limiter.allow(user, model).remaining == 0);

  backend.advance(100ms);  // entries at 0, 200, 500 ms; now 600 ms
  const airl::Decision denied = limiter.allow(user, model);
  CHECK_FALSE(denied.allowed);
  CHECK_FALSE(static_cast<bool>(denied));
  CHECK(denied.limit == 3);
  CHECK(denied.remaining == 0);
  CHECK_THAT(denied.retry_after, within_slack<TestType>(400ms));  // the oldest expires at 1000 ms
  CHECK_THAT(denied.reset_after, within_slack<TestType>(900ms));  // the newest expires at 1500 ms
  CHECK(denied.reason == "default");
  CHECK(denied.reason == airl::SlidingWindowLimiter<typename TestType::Storage>::tier_name);
  CHECK_FALSE(denied.replayed);
}

// ---------------------------------------------------------------------------------------------------------------
// Rule 8: request ids.

TEMPLATE_LIST_TEST_CASE("a request_id admitted in the window is replayed without charge even when the window is full",
                        "[sliding_window][request_id]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {2, 1000ms});
  const std::string user = "swl-replay-user";
  const std::string model = "swl-replay-model";

  const airl::Decision first = limiter.allow(with_id(user, model, "req-1"));
  REQUIRE(first.allowed);
  CHECK_FALSE(first.replayed);
  REQUIRE(limiter.allow(with_id(user, model, "req-2")).allowed);
  REQUIRE(limiter.usage(user, model) == 2);

  backend.advance(500ms);
  const airl::Decision replay = limiter.allow(with_id(user, model, "req-1"));
  CHECK(replay.allowed);
  CHECK(replay.replayed);
  CHECK(replay.limit == 2);
  CHECK(replay.remaining == 0);
  CHECK(replay.retry_after == 0ms);
  CHECK(replay.reason.empty());
  CHECK(limiter.usage(user, model) == 2);

  CHECK_FALSE(limiter.allow(user, model).allowed);                          // the window really is full
  CHECK_FALSE(limiter.allow(with_id(user, model, "req-3")).allowed);       // a new id is charged
  CHECK(limiter.allow(with_id(user, model, "req-2")).replayed);            // and the other one replays too
  CHECK(limiter.usage(user, model) == 2);
  CHECK(limiter.metrics().allowed == 4);  // replays count as allowed decisions
  CHECK(limiter.metrics().denied == 2);
}

TEMPLATE_LIST_TEST_CASE("the request_id of a denied request is not remembered",
                        "[sliding_window][request_id]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {1, 1000ms});
  const std::string user = "swl-denied-id-user";
  const std::string model = "swl-denied-id-model";

  REQUIRE(limiter.allow(user, model).allowed);
  backend.advance(100ms);
  const airl::Decision denied = limiter.allow(with_id(user, model, "retry-x"));
  REQUIRE_FALSE(denied.allowed);
  CHECK_THAT(denied.retry_after, within_slack<TestType>(900ms));
  const airl::Decision again = limiter.allow(with_id(user, model, "retry-x"));
  CHECK_FALSE(again.allowed);  // not a replay: it was never admitted
  CHECK_FALSE(again.replayed);

  advance_until_due(backend, denied.retry_after);  // room again
  const airl::Decision admitted = limiter.allow(with_id(user, model, "retry-x"));
  CHECK(admitted.allowed);
  CHECK_FALSE(admitted.replayed);
  CHECK(limiter.usage(user, model) == 1);  // charged

  const airl::Decision replay = limiter.allow(with_id(user, model, "retry-x"));
  CHECK(replay.replayed);
  CHECK(limiter.usage(user, model) == 1);
}

TEMPLATE_LIST_TEST_CASE("a request_id is charged again once its entry expired",
                        "[sliding_window][request_id]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {5, 1000ms});
  const std::string user = "swl-id-expiry-user";
  const std::string model = "swl-id-expiry-model";

  const auto margin = boundary_margin<TestType>();
  REQUIRE(limiter.allow(with_id(user, model, "id-a")).allowed);
  backend.advance(1000ms - margin);
  const airl::Decision replay = limiter.allow(with_id(user, model, "id-a"));
  CHECK(replay.replayed);  // still in the window
  CHECK_THAT(replay.reset_after, within_slack<TestType>(margin));  // until its entry, the only one, expires

  advance_until_due(backend, replay.reset_after);  // its entry stopped counting
  const airl::Decision fresh = limiter.allow(with_id(user, model, "id-a"));
  CHECK(fresh.allowed);
  CHECK_FALSE(fresh.replayed);
  CHECK(fresh.remaining == 4);
  CHECK(limiter.usage(user, model) == 1);
  CHECK(limiter.allow(with_id(user, model, "id-a")).replayed);
}

TEMPLATE_LIST_TEST_CASE("different request_ids, and one id in different buckets, are charged separately",
                        "[sliding_window][request_id]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {3, 1000ms});

  CHECK_FALSE(limiter.allow(with_id("swl-ids-alice", "swl-ids-m1", "a")).replayed);
  CHECK_FALSE(limiter.allow(with_id("swl-ids-alice", "swl-ids-m1", "b")).replayed);
  CHECK(limiter.usage("swl-ids-alice", "swl-ids-m1") == 2);

  // An id is remembered per bucket: the same id on another model or user is a new request.
  const airl::Decision other_model = limiter.allow(with_id("swl-ids-alice", "swl-ids-m2", "a"));
  CHECK(other_model.allowed);
  CHECK_FALSE(other_model.replayed);
  const airl::Decision other_user = limiter.allow(with_id("swl-ids-bob", "swl-ids-m1", "a"));
  CHECK(other_user.allowed);
  CHECK_FALSE(other_user.replayed);
  CHECK(limiter.usage("swl-ids-alice", "swl-ids-m2") == 1);
  CHECK(limiter.usage("swl-ids-bob", "swl-ids-m1") == 1);
  CHECK(limiter.usage("swl-ids-alice", "swl-ids-m1") == 2);

  // Ids are binary data too: a prefix or an embedded NUL is a different id.
  CHECK_FALSE(limiter.allow(with_id("swl-ids-carol", "swl-ids-m1", "x\0y"sv)).replayed);
  CHECK_FALSE(limiter.allow(with_id("swl-ids-carol", "swl-ids-m1", "x"sv)).replayed);
  CHECK(limiter.allow(with_id("swl-ids-carol", "swl-ids-m1", "x\0y"sv)).replayed);
  CHECK(limiter.usage("swl-ids-carol", "swl-ids-m1") == 2);
}

// ---------------------------------------------------------------------------------------------------------------
// reset() and metrics.

TEMPLATE_LIST_TEST_CASE("reset(user) clears every model of that user and nothing of any other user",
                        "[sliding_window][reset]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {5, 1000ms});
  const std::string alice = "swl-reset-alice";
  // Users an encoding by prefix or separator would confuse with alice.
  const std::vector<std::string> others = {"swl-reset-al", "swl-reset-alicex", "swl-reset-alice:",
                                           std::string("swl-reset-alice\0x", 17), "swl-reset-alice:m1"};

  REQUIRE(limiter.allow(alice, "m1").allowed);
  REQUIRE(limiter.allow(alice, "m1").allowed);
  REQUIRE(limiter.allow(alice, "m2").allowed);
  for (const auto& other : others) {
    REQUIRE(limiter.allow(other, "m1").allowed);
    REQUIRE(limiter.allow(other, "m1").allowed);
  }
  const airl::Metrics before = limiter.metrics();

  limiter.reset(alice);

  CHECK(limiter.usage(alice, "m1") == 0);
  CHECK(limiter.usage(alice, "m2") == 0);
  for (const auto& other : others) {
    INFO("other user: " << other);
    CHECK(limiter.usage(other, "m1") == 2);
  }
  const airl::Metrics after = limiter.metrics();
  CHECK(after.allowed == before.allowed);  // counters are history, not state
  CHECK(after.denied == before.denied);

  // alice has her whole quota back.
  const airl::Decision fresh = limiter.allow(alice, "m1");
  CHECK(fresh.allowed);
  CHECK(fresh.remaining == 4);
}

TEMPLATE_LIST_TEST_CASE("reset(user, model) clears only that pair", "[sliding_window][reset]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {5, 1000ms});

  REQUIRE(limiter.allow("swl-pair-alice", "swl-pair-m1").allowed);
  REQUIRE(limiter.allow("swl-pair-alice", "swl-pair-m2").allowed);
  REQUIRE(limiter.allow("swl-pair-bob", "swl-pair-m1").allowed);

  limiter.reset("swl-pair-alice", "swl-pair-m1");

  CHECK(limiter.usage("swl-pair-alice", "swl-pair-m1") == 0);
  CHECK(limiter.usage("swl-pair-alice", "swl-pair-m2") == 1);
  CHECK(limiter.usage("swl-pair-bob", "swl-pair-m1") == 1);
  CHECK(limiter.metrics().allowed == 3);
}

TEMPLATE_LIST_TEST_CASE("metrics count every decision and deny_rate_percent is 0 without decisions",
                        "[sliding_window][metrics]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {3, 1000ms});

  const airl::Metrics empty = limiter.metrics();
  CHECK(empty.allowed == 0);
  CHECK(empty.denied == 0);
  CHECK(empty.total() == 0);
  CHECK(empty.deny_rate_percent() == 0.0);

  for (int i = 0; i < 3; ++i) REQUIRE(limiter.allow("swl-metrics-user", "swl-metrics-model").allowed);
  REQUIRE_FALSE(limiter.allow("swl-metrics-user", "swl-metrics-model").allowed);

  const airl::Metrics counted = limiter.metrics();
  CHECK(counted.allowed == 3);
  CHECK(counted.denied == 1);
  CHECK(counted.backend_errors == 0);
  CHECK(counted.total() == 4);
  CHECK(counted.deny_rate_percent() == Approx(25.0));

  limiter.reset("swl-metrics-user");
  CHECK(limiter.metrics().total() == 4);
}

// ---------------------------------------------------------------------------------------------------------------
// Ids are binary-safe.

TEMPLATE_LIST_TEST_CASE("user and model ids are binary-safe and never collide",
                        "[sliding_window][ids]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {1, 1000ms});

  struct Pair {
    std::string user, model;
  };
  // Every pair is its own bucket: each is admitted once, then denied.
  const std::vector<Pair> pairs = {
      {"swl-bin-a:b", "c"},
      {"swl-bin-a", "b:c"},
      {"swl-bin-{tag}", "m"},
      {"swl-bin-{tag", "}m"},
      {std::string("swl-bin-x\0y", 11), "m"},
      {"swl-bin-x", std::string("\0y:m", 4)},
      {"swl-bin-x", "m"},
      {"swl-bin-\xc3\xa9l\xc3\xa8ve", "mod\xc3\xa8le-\xe6\xa8\xa1\xe5\x9e\x8b"},  // UTF-8
      {"swl-bin-\xc3\xa9l\xc3\xa8ve", "mod\xc3\xa8le"},
  };
  for (const Pair& pair : pairs) {
    INFO("user size " << pair.user.size() << ", model size " << pair.model.size());
    CHECK(limiter.allow(pair.user, pair.model).allowed);
  }
  for (const Pair& pair : pairs) {
    INFO("user size " << pair.user.size() << ", model size " << pair.model.size());
    CHECK(limiter.usage(pair.user, pair.model) == 1);
    CHECK_FALSE(limiter.allow(pair.user, pair.model).allowed);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// In-memory capacity and memory: InMemoryOptions and active_keys are the in-memory store's own.

TEST_CASE("max_keys: a new key is denied with key_capacity while existing keys keep working",
          "[sliding_window][in_memory][max_keys]") {
  // One shard sweeps only itself; several make the capacity path sweep the other shards too.
  const std::size_t shards = GENERATE(as<std::size_t>{}, 1, 4, 64);
  INFO("shards " << shards);
  InMemoryBackend backend;
  auto limiter = make_limiter(backend, {5, 1000ms}, airl::InMemoryOptions{.shards = shards, .max_keys = 2});

  REQUIRE(limiter.allow("swl-cap-k1", "m").allowed);  // expires at 1000 ms
  backend.advance(100ms);
  REQUIRE(limiter.allow("swl-cap-k2", "m").allowed);  // expires at 1100 ms
  backend.advance(100ms);

  const airl::Decision full = limiter.allow("swl-cap-k3", "m");
  CHECK_FALSE(full.allowed);
  CHECK(full.reason == "key_capacity");
  CHECK(full.reason == airl::key_capacity_reason);
  CHECK(full.retry_after == 800ms);  // until k1, the earliest bucket, expires
  CHECK(limiter.usage("swl-cap-k3", "m") == 0);
  CHECK(limiter.metrics().active_keys == 2);
  CHECK(limiter.metrics().denied == 1);

  // Existing keys keep working (and k2 moves its expiry to 1200 ms; k1 stays the earliest).
  CHECK(limiter.allow("swl-cap-k2", "m").allowed);
  CHECK(limiter.usage("swl-cap-k1", "m") == 1);

  backend.advance(799ms);
  const airl::Decision early = limiter.allow("swl-cap-k3", "m");
  CHECK(early.reason == "key_capacity");
  CHECK(early.retry_after == 1ms);

  backend.advance(1ms);  // k1 expired: its slot is reclaimed for k3
  const airl::Decision admitted = limiter.allow("swl-cap-k3", "m");
  CHECK(admitted.allowed);
  CHECK(limiter.metrics().active_keys == 2);
  CHECK(limiter.usage("swl-cap-k2", "m") == 2);

  // Full again (k2, k3 live): the next new key waits for k2 (expires at 1200 ms, now 1000 ms).
  const airl::Decision next = limiter.allow("swl-cap-k4", "m");
  CHECK(next.reason == "key_capacity");
  CHECK(next.retry_after == 200ms);
}

TEST_CASE("a request that is denied anyway creates no bucket", "[sliding_window][in_memory][max_keys]") {
  InMemoryBackend backend;
  auto limiter = make_limiter(backend, {5, 1000ms}, airl::InMemoryOptions{.shards = 8, .max_keys = 1});

  const airl::Decision too_big = limiter.allow(costing("swl-nobucket-a", "m", 6));
  CHECK(too_big.retry_after == airl::Decision::never);
  CHECK(too_big.reason == "default");
  CHECK(limiter.metrics().active_keys == 0);

  REQUIRE(limiter.allow("swl-nobucket-b", "m").allowed);
  // The store is full, but this request would not fit its quota anyway: the quota is the reason.
  const airl::Decision still_too_big = limiter.allow(costing("swl-nobucket-c", "m", 6));
  CHECK(still_too_big.reason == "default");
  CHECK(still_too_big.retry_after == airl::Decision::never);
  CHECK(limiter.metrics().active_keys == 1);
}

TEST_CASE("purge_expired drops every expired bucket and returns how many", "[sliding_window][in_memory][memory]") {
  InMemoryBackend backend;
  auto limiter = make_limiter(backend, {5, 100ms});

  for (int i = 0; i < 10; ++i) REQUIRE(limiter.allow(airl::test::id("swl-purge-early", i), "m").allowed);
  backend.advance(50ms);
  for (int i = 0; i < 5; ++i) REQUIRE(limiter.allow(airl::test::id("swl-purge-late", i), "m").allowed);
  REQUIRE(limiter.metrics().active_keys == 15);

  backend.advance(49ms);  // nothing expired yet
  CHECK(limiter.purge_expired() == 0);
  CHECK(limiter.metrics().active_keys == 15);

  backend.advance(1ms);  // the early ten expire
  CHECK(limiter.purge_expired() == 10);
  CHECK(limiter.metrics().active_keys == 5);
  CHECK(limiter.usage(airl::test::id("swl-purge-late", 0), "m") == 1);

  backend.advance(50ms);
  CHECK(limiter.purge_expired() == 5);
  CHECK(limiter.metrics().active_keys == 0);
  CHECK(limiter.purge_expired() == 0);
}

TEST_CASE("normal traffic sweeps expired buckets without purge_expired", "[sliding_window][in_memory][memory]") {
  InMemoryBackend backend;
  // One shard, so every request visits the shard that holds the expired buckets.
  auto limiter = make_limiter(backend, {1000, 100ms}, airl::InMemoryOptions{.shards = 1});

  for (int i = 0; i < 10; ++i) REQUIRE(limiter.allow(airl::test::id("swl-sweep-old", i), "m").allowed);
  backend.advance(100ms);
  REQUIRE(limiter.metrics().active_keys == 10);

  std::size_t keys = limiter.metrics().active_keys + 1;  // the live key about to be created
  int calls = 0;
  while (keys > 1 && calls < 20) {  // bounded: each call must sweep at least one expired bucket
    REQUIRE(limiter.allow("swl-sweep-live", "m").allowed);
    ++calls;
    const std::size_t now_held = limiter.metrics().active_keys;
    REQUIRE(now_held < keys);
    keys = now_held;
  }
  CHECK(keys == 1);  // only the live key is left
  CHECK(calls <= 10);
  CHECK(limiter.purge_expired() == 0);
}

TEMPLATE_LIST_TEST_CASE("cost-1 entries followed by weighted ones are counted and expire exactly",
                        "[sliding_window][weighted]", airl::test::Backends) {
  // On Redis a bucket of cost-1 entries keeps no costs hash; the first weighted entry starts one from the
  // entries already logged. Both backends must agree on every number.
  TestType backend;
  auto limiter = make_limiter(backend, {10, 1000ms});
  // The three cost-1 entries in one batch (one pipelined round trip on Redis), so they share one instant on
  // real time too and the wait computed for the second frees the third as well.
  const std::vector<airl::Request> three(3, airl::Request{"swl-mix-user", "m"});
  for (const airl::Decision& decision : limiter.allow_many(three)) REQUIRE(decision);
  backend.advance(300ms);
  REQUIRE(limiter.allow(costing("swl-mix-user", "m", 5)));
  CHECK(limiter.usage("swl-mix-user", "m") == 8);
  // A cost-4 request needs 2 units: the three cost-1 entries (admitted at 0 ms) free them at 1000 ms.
  const airl::Decision early = limiter.allow(costing("swl-mix-user", "m", 4));
  CHECK_FALSE(early);
  CHECK_THAT(early.retry_after, airl::test::within_slack<TestType>(700ms));
  airl::test::advance_until_due(backend, early.retry_after);
  CHECK(limiter.usage("swl-mix-user", "m") == 5);
  REQUIRE(limiter.allow(costing("swl-mix-user", "m", 4)));
  CHECK(limiter.usage("swl-mix-user", "m") == 9);
  // Now a cost-6 request must wait for the cost-5 entry (admitted at 300 ms, on Redis a little later: the
  // wait may be long as well as short by the slack, and is far from the cost-4 entry's ~1000 ms either way).
  const airl::Decision later = limiter.allow(costing("swl-mix-user", "m", 6));
  CHECK_FALSE(later);
  CHECK_THAT(later.retry_after, airl::test::within_slack_either_way<TestType>(300ms));
}
