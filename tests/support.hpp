// SPDX-License-Identifier: MIT
#pragma once
// Shared test helpers. Behavioural tests are TEMPLATE_TEST_CASEs over "backends": a backend makes a storage
// and moves its time. The in-memory backend uses a ManualClock, so time moves only when a test says so;
// the Redis backend (later) will run the same cases against a real redis-server.

#include <airl/airl.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

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

// A request of `cost` units, without an id.
inline Request costing(std::string_view user, std::string_view model, std::uint64_t cost) {
  return Request{user, model, cost};
}

// A request of cost 1 carrying `request_id`.
inline Request with_id(std::string_view user, std::string_view model, std::string_view request_id) {
  return Request{user, model, 1, request_id};
}

// A unique, readable id for test case `n` (keeps tests independent when they share a backend).
inline std::string id(const std::string& base, int n) { return base + "-" + std::to_string(n); }

}  // namespace airl::test
