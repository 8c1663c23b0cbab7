// SPDX-License-Identifier: MIT
#pragma once
// Shared test helpers. Behavioural tests are TEMPLATE_LIST_TEST_CASEs over `Backends`: a backend makes a storage
// and moves its time. The in-memory backend uses a ManualClock, so time moves only when a test says so and
// every duration is exact; the Redis backend runs the same cases against a real redis-server on Redis's own
// clock, so advance() sleeps and durations are exact only up to `slack` (the time the test itself takes).
// The Redis backend exists only when the build defines AIRL_TEST_WITH_REDIS=1 (the target airl::redis was
// built): without it `Backends` holds the in-memory backend alone, and nothing here needs hiredis.

#include <catch2/catch.hpp>

#include <airl/airl.hpp>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <tuple>

#ifndef AIRL_TEST_WITH_REDIS
#define AIRL_TEST_WITH_REDIS 0
#endif

#if AIRL_TEST_WITH_REDIS
#include <airl/redis.hpp>

#include <atomic>
#include <thread>

#include <unistd.h>

#include "redis_server.hpp"
#include "redis_topology.hpp"
#endif

namespace airl::test {

using namespace std::chrono_literals;

using ManualStorage = InMemoryStorage<ManualClock>;

struct InMemoryBackend {
  using Storage = ManualStorage;
  static constexpr const char* name = "in-memory";
  static constexpr std::chrono::milliseconds slack{0};  // time moves only when told: durations are exact

  ManualClock clock;

  Storage make_storage(InMemoryOptions options = {}) const { return Storage(options, clock); }
  void advance(std::chrono::nanoseconds by) { clock.advance(by); }
};

#if AIRL_TEST_WITH_REDIS
// A fresh key prefix per storage, so tests sharing one redis-server never see each other's keys.
inline std::string unique_key_prefix() {
  static std::atomic<int> next{0};
  static const unsigned long long run = std::random_device{}();  // processes share the cluster: pids repeat
  return "airl-test-" + std::to_string(::getpid()) + "-" + std::to_string(run) + "-" + std::to_string(next.fetch_add(1));
}

// Where a Redis backend's storages go: one server, a Redis Cluster, or a master found through Sentinel.
enum class RedisMode { standalone, cluster, sentinel };

// Options for a storage in `mode` on the shared servers (redis_topology.hpp), with `key_prefix`.
inline RedisOptions shared_options(RedisMode mode, std::string key_prefix) {
  RedisOptions options;
  if (mode == RedisMode::standalone) options.port = shared_redis().port();
  if (mode == RedisMode::cluster) options.cluster_nodes = shared_topology().cluster_seeds;
  if (mode == RedisMode::sentinel) {
    options.sentinel_nodes = shared_topology().sentinels;
    options.sentinel_master = RedisSentinelSet::master_name;
  }
  options.key_prefix = std::move(key_prefix);
  options.on_failure = FailurePolicy::fail_closed;  // a Redis fault must fail the test, never pass silently
  options.command_timeout = std::chrono::milliseconds(1000);
  return options;
}

template <RedisMode Mode>
struct RedisBackendIn {
  using Storage = RedisStorage;
  static constexpr RedisMode mode = Mode;
  static constexpr const char* name = Mode == RedisMode::standalone ? "redis"
                                      : Mode == RedisMode::cluster  ? "redis-cluster"
                                                                    : "redis-sentinel";
  // Real time passes while a test runs: a duration read from Redis may be short by up to this much.
  static constexpr std::chrono::milliseconds slack{60};

  std::string key_prefix = unique_key_prefix();

  // `options` is accepted so the in-memory-only arguments of shared cases compile; Redis ignores them.
  Storage make_storage(InMemoryOptions = {}) const { return Storage(shared_options(Mode, key_prefix)); }
  void advance(std::chrono::nanoseconds by) { std::this_thread::sleep_for(by); }
};
using RedisBackend = RedisBackendIn<RedisMode::standalone>;
using RedisClusterBackend = RedisBackendIn<RedisMode::cluster>;
using RedisSentinelBackend = RedisBackendIn<RedisMode::sentinel>;

// Options for a Redis storage whose server is not there: a loopback port nothing listens on, a key prefix of its
// own and short timeouts, so fault cases fail fast.
inline RedisOptions options_for_closed_port(FailurePolicy policy) {
  RedisOptions options;
  options.port = free_loopback_port();
  options.key_prefix = unique_key_prefix();
  options.on_failure = policy;
  options.connect_timeout = std::chrono::milliseconds(50);
  options.command_timeout = std::chrono::milliseconds(50);
  return options;
}
#endif

// The backends every behavioural case runs on: TEMPLATE_LIST_TEST_CASE(name, tags, airl::test::Backends).
#if AIRL_TEST_WITH_REDIS
using Backends = std::tuple<InMemoryBackend, RedisBackend, RedisClusterBackend, RedisSentinelBackend>;
#else
using Backends = std::tuple<InMemoryBackend>;
#endif

// ---------------------------------------------------------------------------------------------------------------
// Time in shared cases. One timeline serves both backends: on the in-memory backend (slack 0) every duration
// and boundary is checked exactly; on Redis (real time) durations may be short by up to `slack`, and a
// boundary is approached from a margin larger than the slack, then crossed by waiting what Redis answered.

// Matches a duration in [expected - Backend::slack, expected]: exactly `expected` on the in-memory backend;
// on Redis, short by at most the time the test itself took since the timeline's reference point.
template <class Backend>
class WithinSlack : public Catch::MatcherBase<std::chrono::milliseconds> {
 public:
  explicit WithinSlack(std::chrono::milliseconds expected, std::chrono::milliseconds late = {})
      : expected_(expected), late_(late) {}
  bool match(const std::chrono::milliseconds& actual) const override {
    return actual <= expected_ + late_ && actual >= expected_ - Backend::slack;
  }
  std::string describe() const override {
    if (Backend::slack == std::chrono::milliseconds{0}) return "== " + std::to_string(expected_.count()) + " ms";
    return "is in [" + std::to_string((expected_ - Backend::slack).count()) + ", " +
           std::to_string((expected_ + late_).count()) + "] ms";
  }

 private:
  std::chrono::milliseconds expected_;
  std::chrono::milliseconds late_;
};

// CHECK_THAT(decision.retry_after, within_slack<TestType>(910ms));
template <class Backend>
WithinSlack<Backend> within_slack(std::chrono::milliseconds expected) {
  return WithinSlack<Backend>(expected);
}

// Like within_slack, for a duration that runs from an entry the test admitted after the entry the timeline
// measures from: on Redis that later admission happens late by up to the slack too (the test sleeps on its own
// clock), so the duration may also be long by up to the slack. Exact on the in-memory backend.
template <class Backend>
WithinSlack<Backend> within_slack_either_way(std::chrono::milliseconds expected) {
  return WithinSlack<Backend>(expected, Backend::slack);
}

// How far before a boundary a shared case can still see "not yet": 1 ms on exact time; on real time twice
// the slack, so the time the test takes cannot carry it over the boundary.
template <class Backend>
constexpr std::chrono::milliseconds boundary_margin() {
  return Backend::slack == std::chrono::milliseconds{0} ? std::chrono::milliseconds{1} : 2 * Backend::slack;
}

// Moves time to `due` from now, e.g. a retry_after just answered: exactly `due` on exact time; on real time
// a little later, because the test sleeps on its own clock while Redis decides on the server's.
template <class Backend>
void advance_until_due(Backend& backend, std::chrono::milliseconds due) {
  backend.advance(Backend::slack == std::chrono::milliseconds{0} ? due : due + std::chrono::milliseconds{2});
}

// A request of `cost` units, without an id.
inline Request costing(std::string_view user, std::string_view model, std::uint64_t cost) {
  return Request{user, model, cost};
}

// A request of cost 1 carrying `request_id`.
inline Request with_id(std::string_view user, std::string_view model, std::string_view request_id) {
  return Request{user, model, 1, request_id};
}

// A reservation: a request of `estimate` units carrying `request_id`, to be settled with its real cost.
inline Request reserve(std::string_view user, std::string_view model, std::uint64_t estimate,
                       std::string_view request_id) {
  return Request{user, model, estimate, request_id};
}

// A unique, readable id for test case `n` (keeps tests independent when they share a backend).
inline std::string id(const std::string& base, int n) { return base + "-" + std::to_string(n); }

}  // namespace airl::test
