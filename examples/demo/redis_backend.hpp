// SPDX-License-Identifier: MIT
#pragma once
// The demo on Redis (demo --redis host:port): the same plans and traffic, with every limiter on an
// airl::RedisStorage. Built only when CMake found hiredis (AIRL_DEMO_WITH_REDIS). Each run writes under a key
// prefix of its own, so runs never meet each other's requests; the keys expire by themselves (1 s windows).

#include <airl/redis.hpp>

#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <unistd.h>

#include "plans.hpp"

namespace demo {

// "host:port", "host" or ":port" (default 127.0.0.1:6379); nullopt when the port is not in 1..65535.
inline std::optional<airl::RedisOptions> parse_redis_address(std::string_view address) {
  try {
    return airl::redis_options_from_address(address);
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
}

// A key prefix no other run uses: process id and start time.
inline std::string run_key_prefix() {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return "airl-demo-" + std::to_string(::getpid()) + "-" + std::to_string(ms.count());
}

// The plans on Redis: plan p writes under <run prefix>:<p>.
inline std::vector<Plan<airl::RedisStorage>> make_redis_plans(const airl::RedisOptions& server,
                                                               const std::string& run_prefix) {
  return make_plans([&](std::string_view plan) {
    airl::RedisOptions options = server;
    options.key_prefix = run_prefix + ":" + std::string(plan);
    return airl::RedisStorage(std::move(options));
  });
}

// True when Redis answers; otherwise prints how to start a local server and returns false.
inline bool redis_reachable(std::vector<Plan<airl::RedisStorage>>& plans, const airl::RedisOptions& server) {
  try {
    (void)plans.front().limiter.usage(plans.front().limiter.tiers().front().name, "probe", "probe");
    return true;
  } catch (const airl::BackendError& error) {
    std::fprintf(stderr,
                 "Redis is not reachable at %s:%d (%s).\n"
                 "Start a throwaway local server first:\n"
                 "  redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no\n",
                 server.host.c_str(), server.port, error.what(), server.port);
    return false;
  }
}

}  // namespace demo
