// SPDX-License-Identifier: MIT
// Clock policies: ManualClock moves only when told to and shares its time between copies;
// SteadyClock never goes back; both satisfy airl::ClockPolicy.
#include <catch2/catch.hpp>

#include "support.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

// Types that must not pass as clocks.
struct NoNow {};
struct WrongUnit {
  std::chrono::milliseconds now() const { return std::chrono::milliseconds{0}; }
};
struct NotCopyable {
  NotCopyable() = default;
  NotCopyable(const NotCopyable&) = delete;
  std::chrono::nanoseconds now() const { return std::chrono::nanoseconds{0}; }
};

static_assert(airl::ClockPolicy<airl::ManualClock>);
static_assert(airl::ClockPolicy<airl::SteadyClock>);
static_assert(!airl::ClockPolicy<NoNow>);
static_assert(!airl::ClockPolicy<WrongUnit>);
static_assert(!airl::ClockPolicy<NotCopyable>);

}  // namespace

TEST_CASE("ManualClock starts at zero or its start and advances by exactly the given step", "[clock]") {
  const airl::ManualClock fresh;
  CHECK(fresh.now() == 0ns);

  airl::ManualClock clock(5ns);
  CHECK(clock.now() == 5ns);
  clock.advance(250ns);
  CHECK(clock.now() == 255ns);
  clock.advance(3ms);
  CHECK(clock.now() == 3'000'255ns);
  clock.advance(0ns);  // a zero step is allowed and changes nothing
  CHECK(clock.now() == 3'000'255ns);
}

TEST_CASE("ManualClock copies share one time in both directions", "[clock]") {
  airl::ManualClock original;
  airl::ManualClock copy = original;
  original.advance(7ms);
  CHECK(copy.now() == 7ms);
  copy.advance(1ns);
  CHECK(original.now() == 7'000'001ns);

  airl::ManualClock assigned(99ns);
  assigned = original;  // assignment joins the original's timeline
  original.advance(1ns);
  CHECK(assigned.now() == 7'000'002ns);
}

TEST_CASE("ManualClock::advance refuses a negative step and leaves time unchanged", "[clock]") {
  airl::ManualClock clock(1s);
  const airl::ManualClock observer = clock;
  CHECK_THROWS_AS(clock.advance(-1ns), std::invalid_argument);
  CHECK_THROWS_AS(clock.advance(-1ms), std::invalid_argument);
  CHECK(clock.now() == 1s);
  CHECK(observer.now() == 1s);
}

TEST_CASE("ManualClock advanced from several threads at once sums every step", "[clock]") {
  airl::ManualClock clock;
  constexpr int threads = 4;
  constexpr int steps = 100'000;
  std::atomic<int> ready{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    // Each thread holds its own copy, so the sum also proves copies share one counter.
    workers.emplace_back([copy = clock, t, &ready]() mutable {
      // Start together so the steps really overlap; every thread arrives, so this wait ends.
      ready.fetch_add(1);
      while (ready.load() < threads) std::this_thread::yield();
      for (int i = 0; i < steps; ++i) copy.advance(std::chrono::nanoseconds{t + 1});
    });
  }
  for (auto& worker : workers) worker.join();
  // (1 + 2 + 3 + 4) * steps: a lost update would make this smaller.
  CHECK(clock.now().count() == std::int64_t{10} * steps);
}

TEST_CASE("SteadyClock reads std::chrono::steady_clock's clock", "[clock]") {
  // It reads CLOCK_MONOTONIC itself on Linux; a reading must fall between two of steady_clock's (a different
  // clock, CLOCK_REALTIME or CLOCK_BOOTTIME after a suspend, would not).
  for (int i = 0; i < 1000; ++i) {
    const auto before = std::chrono::steady_clock::now().time_since_epoch();
    const auto reading = airl::SteadyClock{}.now();
    const auto after = std::chrono::steady_clock::now().time_since_epoch();
    REQUIRE(before <= reading);
    REQUIRE(reading <= after);
  }
}

TEST_CASE("SteadyClock never goes back", "[clock]") {
  const airl::SteadyClock clock;
  auto previous = clock.now();
  CHECK(previous.count() > 0);  // steady_clock's epoch is in the past, so a real reading is positive
  for (int i = 0; i < 100'000; ++i) {
    const auto current = clock.now();
    REQUIRE(current >= previous);
    previous = current;
  }
}

TEST_CASE("ManualClock::advance refuses to overflow and leaves time unchanged", "[clock]") {
  const auto near_end = std::chrono::nanoseconds(std::numeric_limits<std::int64_t>::max() - 10);
  airl::ManualClock clock(near_end);
  CHECK_THROWS_AS(clock.advance(11ns), std::overflow_error);
  CHECK(clock.now() == near_end);
  clock.advance(10ns);  // exactly up to the end is fine
  CHECK(clock.now().count() == std::numeric_limits<std::int64_t>::max());
}

TEST_CASE("CoarseSteadyClock never goes back, ticks within its resolution, and drives a limiter", "[clock]") {
  const airl::CoarseSteadyClock clock;
  const auto resolution = airl::CoarseSteadyClock::resolution();
  CHECK(resolution > 0ns);
  CHECK(resolution <= 20ms);
  // Bounded: spin until the coarse clock ticks once (at most a few resolutions), checking monotonicity.
  const auto start = clock.now();
  const auto deadline = std::chrono::steady_clock::now() + 1s;
  auto last = start;
  bool went_back = false;
  while (clock.now() == start && std::chrono::steady_clock::now() < deadline) {
    const auto now = clock.now();
    went_back = went_back || now < last;
    last = now;
  }
  CHECK_FALSE(went_back);
  const auto ticked = clock.now();
  CHECK(ticked > start);
  CHECK(ticked - start <= resolution + 10ms);
  airl::SlidingWindowLimiter<airl::InMemoryStorage<airl::CoarseSteadyClock>> limiter({2, 1min});
  CHECK(limiter.allow("u", "m"));
  CHECK(limiter.allow("u", "m"));
  CHECK_FALSE(limiter.allow("u", "m"));
}
