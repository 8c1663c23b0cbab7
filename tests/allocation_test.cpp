// SPDX-License-Identifier: MIT
// The decision path does not touch the heap for existing keys, even with ids longer than the small-string
// buffer (a 36-character UUID user, a 20-character model): this binary replaces the global operator new and
// counts every allocation made while a test's loop runs.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <string>

#include "support.hpp"

namespace {

std::atomic<bool> counting{false};
std::atomic<std::size_t> allocations{0};

// Runs `body` and returns how many heap allocations it made.
template <class Body>
std::size_t allocations_during(Body&& body) {
  allocations.store(0);
  counting.store(true);
  body();
  counting.store(false);
  return allocations.load();
}

const std::string uuid_user = "5b0c2f0e-8d4a-4c6e-9a1f-3e7d2b6c9f10";  // 36 characters
const std::string long_model = "llama-3.1-70b-instru";                 // 20 characters

}  // namespace

// The whole family of plain and nothrow forms is replaced, so every new is paired with a matching delete
// (sanitizers check the pairing). The aligned forms stay the runtime's, pairing among themselves.
namespace {
void* counted_allocation(std::size_t size) noexcept {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}
}  // namespace

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // malloc/free on both sides: matched by design
#endif
void* operator new(std::size_t size) {
  if (void* memory = counted_allocation(size)) return memory;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  if (void* memory = counted_allocation(size)) return memory;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_allocation(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_allocation(size); }
void operator delete(void* memory) noexcept { std::free(memory); }
void operator delete[](void* memory) noexcept { std::free(memory); }
void operator delete(void* memory, std::size_t) noexcept { std::free(memory); }
void operator delete[](void* memory, std::size_t) noexcept { std::free(memory); }
void operator delete(void* memory, const std::nothrow_t&) noexcept { std::free(memory); }
void operator delete[](void* memory, const std::nothrow_t&) noexcept { std::free(memory); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

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

TEST_CASE("the allocation counter sees allocations (so zero above means zero)", "[allocation]") {
  const std::size_t count = allocations_during([] {
    auto* text = new std::string(std::string(100, 'x'));
    delete text;
  });
  CHECK(count >= 1);
}
