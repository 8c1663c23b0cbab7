// SPDX-License-Identifier: MIT
#pragma once
// Helpers shared by the Redis-only tests (tests/redis: storage, faults, access, caps): options pointing at a
// test server, bounded waits, latency measurement and raw reads of what the storage wrote.

#include <airl/redis.hpp>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "redis_server.hpp"
#include "support.hpp"

#if !AIRL_TEST_WITH_REDIS
#error "redis_test_support.hpp is for the Redis tests: build them with AIRL_TEST_WITH_REDIS=1 (target airl::redis)"
#endif

namespace airl::test {

// Options for a storage on `server` with its own key prefix and short timeouts, so fault tests stay fast.
inline RedisOptions options_for(const RedisServer& server, FailurePolicy policy = FailurePolicy::fail_closed,
                                std::string key_prefix = unique_key_prefix()) {
  RedisOptions options;
  options.port = server.port();
  options.key_prefix = std::move(key_prefix);
  options.on_failure = policy;
  options.connect_timeout = std::chrono::milliseconds(50);
  options.command_timeout = std::chrono::milliseconds(50);
  options.pool_size = 4;
  return options;
}

// Calls `done()` until it returns true or `limit` passes; returns whether it did. Never waits unbounded.
template <class Done>
bool eventually(Done&& done, std::chrono::milliseconds limit, std::chrono::milliseconds step = std::chrono::milliseconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(step);
  }
}

// Runs `call()` and keeps the maximum of its wall times (recorded even when `call()` throws).
class LatencyProbe {
 public:
  template <class Call>
  auto operator()(Call&& call) {
    struct Record {
      LatencyProbe& probe;
      std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
      ~Record() {
        probe.record(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started));
      }
    } timing{*this};
    return call();
  }
  void record(std::chrono::microseconds took) noexcept {
    max_ = std::max(max_, took);
    ++calls_;
  }
  // Folds another probe's calls in (e.g. one per thread).
  void merge(const LatencyProbe& other) noexcept {
    max_ = std::max(max_, other.max_);
    calls_ += other.calls_;
  }
  std::chrono::microseconds max() const noexcept { return max_; }
  int calls() const noexcept { return calls_; }
  double max_ms() const noexcept { return static_cast<double>(max_.count()) / 1000.0; }

 private:
  std::chrono::microseconds max_{0};
  int calls_ = 0;
};

inline std::string text_of(const redisReply& reply) {
  return reply.str == nullptr ? std::string() : std::string(reply.str, reply.len);
}

// Runs a command on `server` that must succeed; returns the reply (never null).
inline RawReply must(const RedisServer& server, const std::vector<std::string>& args) {
  RawReply reply = server.command(args);
  if (!reply) throw std::runtime_error("the test server did not answer " + args.front());
  if (reply->type == REDIS_REPLY_ERROR) throw std::runtime_error(args.front() + " failed: " + text_of(*reply));
  return reply;
}

// The log key the storage uses for `bucket` (what a raw client must find in Redis).
inline std::string redis_key_of(std::string_view prefix, const BucketRef& bucket) {
  std::string key;
  detail::redis_bucket_key(key, prefix, bucket);
  return key;
}

// A key's remaining time to live in ms (PTTL: -2 missing, -1 no TTL).
inline long long pttl(const RedisServer& server, const std::string& key) {
  return must(server, {"PTTL", key})->integer;
}

}  // namespace airl::test
