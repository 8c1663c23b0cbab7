// SPDX-License-Identifier: MIT
#pragma once
// Shared test helpers. Behavioural tests are TEMPLATE_TEST_CASEs over "backends": a backend makes a storage
// and moves its time. The in-memory backend uses a ManualClock, so time moves only when a test says so;
// the Redis backend (later) will run the same cases against a real redis-server.

#include <airl/airl.hpp>

#include <chrono>
#include <string>

namespace airl::test {

using namespace std::chrono_literals;

using ManualStorage = InMemoryStorage<ManualClock>;

struct InMemoryBackend {
  using Storage = ManualStorage;
  static constexpr const char* name = "in-memory";

  ManualClock clock;

  Storage make_storage(InMemoryOptions options = {}) const { return Storage(options, clock); }
  void advance(std::chrono::nanoseconds by) { clock.advance(by); }
};

// A unique, readable id for test case `n` (keeps tests independent when they share a backend).
inline std::string id(const std::string& base, int n) { return base + "-" + std::to_string(n); }

}  // namespace airl::test
