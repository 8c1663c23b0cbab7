// SPDX-License-Identifier: MIT
// The decision path does not touch the heap for existing keys, even with ids longer than the small-string
// buffer (a 36-character UUID user, a 20-character model), counted by allocation_counter.cpp.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "allocation_counter.hpp"
#include "support.hpp"

namespace {

using airl::test::allocations_during;

const std::string uuid_user = "5b0c2f0e-8d4a-4c6e-9a1f-3e7d2b6c9f10";  // 36 characters
const std::string long_model = "llama-3.1-70b-instru";                 // 20 characters

}  // namespace

using namespace airl::test;

TEST_CASE("deciding for an existing key with long ids allocates nothing, allowed or denied", "[allocation]") {
  REQUIRE(uuid_user.size() == 36);
  REQUIRE(long_model.size() == 20);
  airl::ManualClock clock;
  airl::SlidingWindowLimiter<ManualStorage> limiter({100, 1s}, ManualStorage({}, clock));
  // Warm up: the key exists and its log has reached its steady size (one entry per 10 ms in a 1 s window).
  for (int i = 0; i < 300; ++i) {
    REQUIRE(limiter.allow(uuid_user, long_model));
    clock.advance(10ms);
  }
  const std::size_t admitted = allocations_during([&] {
    for (int i = 0; i < 1'000; ++i) {
      if (!limiter.allow(uuid_user, long_model)) FAIL("expected an admission");
      clock.advance(10ms);
    }
  });
  CHECK(admitted == 0);
  const std::size_t denied = allocations_during([&] {
    for (int i = 0; i < 1'000; ++i) {
      if (limiter.allow(uuid_user, long_model)) {}  // a flood: all but the first are denials
    }
  });
  CHECK(denied == 0);
  CHECK_FALSE(limiter.allow(uuid_user, long_model));
}

TEST_CASE("a three-tier decision for existing keys with long ids and weighted costs allocates nothing", "[allocation]") {
  airl::ManualClock clock;
  airl::MultiTierLimiter<ManualStorage> limiter({{"user_model_tpm", airl::Scope::user_model, {1'000'000, 60s}},
                                                 {"user_rpm", airl::Scope::user, {1'000, 60s}, airl::Unit::requests},
                                                 {"global_tpm", airl::Scope::global, {50'000'000, 60s}}},
                                                ManualStorage({}, clock));
  for (int i = 0; i < 1'000; ++i) {
    REQUIRE(limiter.allow({.user = uuid_user, .model = long_model, .cost = 1 + static_cast<std::uint64_t>(i % 4000)}));
    clock.advance(60ms);
  }
  const std::size_t count = allocations_during([&] {
    for (int i = 0; i < 2'000; ++i) {
      (void)limiter.allow({.user = uuid_user, .model = long_model, .cost = 1 + static_cast<std::uint64_t>(i % 4000)});
      clock.advance(60ms);
    }
  });
  CHECK(count == 0);
}

TEST_CASE("decisions with a new request id each allocate nothing once the logs are steady, and ids still replay",
          "[allocation][request_id]") {
  airl::ManualClock clock;
  airl::SlidingWindowLimiter<ManualStorage> limiter({1'000'000, 1s}, ManualStorage({}, clock));
  const std::string users[] = {uuid_user, "u1", "u2", "u3"};
  std::string id = "00000000-0000-4000-a000-000000000000";  // rewritten in place: the test allocates nothing
  std::uint64_t next = 0;
  const auto decide = [&](std::size_t user) {
    std::uint64_t n = next++;
    for (std::size_t at = 0; at < 8; ++at, n >>= 4) id[at] = "0123456789abcdef"[n & 15];
    const airl::Decision decision = limiter.allow({.user = users[user % 4], .model = long_model, .request_id = id});
    clock.advance(1ms);
    return decision.status;
  };
  // Three windows: each bucket holds 250 entries with their ids, and every buffer has reached its size.
  for (std::size_t i = 0; i < 3'000; ++i) REQUIRE(decide(i) == airl::Status::allowed);
  std::size_t not_allowed = 0;
  const std::size_t count = allocations_during([&] {
    for (std::size_t i = 0; i < 2'000; ++i) not_allowed += std::size_t{decide(i) != airl::Status::allowed};
  });
  CHECK(not_allowed == 0);
  CHECK(count == 0);
  // The newest id, and one admitted almost a window ago, replay; one just past its window is new again.
  const std::string newest = id;
  CHECK(limiter.allow({.user = users[(next - 1) % 4], .model = long_model, .request_id = newest}).replayed);
  next -= 996;  // the id of decision 4003, admitted 997 ms ago (for the same user: 996 is a multiple of 4)
  std::uint64_t n = next - 1;
  for (std::size_t at = 0; at < 8; ++at, n >>= 4) id[at] = "0123456789abcdef"[n & 15];
  CHECK(limiter.allow({.user = users[(next - 1) % 4], .model = long_model, .request_id = id}).replayed);
  n = next - 1 - 8;  // decision 3995, admitted 1005 ms ago: expired, so decided afresh
  for (std::size_t at = 0; at < 8; ++at, n >>= 4) id[at] = "0123456789abcdef"[n & 15];
  const airl::Decision again = limiter.allow({.user = users[(next - 1 - 8) % 4], .model = long_model, .request_id = id});
  CHECK(again.status == airl::Status::allowed);
}

TEST_CASE("the allocation counter sees allocations (so zero above means zero)", "[allocation]") {
  const std::size_t count = allocations_during([] {
    auto* text = new std::string(std::string(100, 'x'));
    delete text;
  });
  CHECK(count >= 1);
}
