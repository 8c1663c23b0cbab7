// SPDX-License-Identifier: MIT
// Built against the installed airl::redis target: links hiredis through the installed package config.
// Nothing listens on the port, so fail_closed must deny with reason "backend_unavailable".
#include <airl/redis.hpp>

#include <chrono>
#include <cstdio>

int main() {
  airl::RedisOptions options;
  options.port = 1;  // privileged and unused: connecting is refused at once
  options.on_failure = airl::FailurePolicy::fail_closed;
  airl::RedisRateLimiter limiter({5, std::chrono::seconds(1)}, airl::RedisStorage(options));
  const airl::Decision decision = limiter.allow("alice", "gpt");
  std::printf("airl redis consumer: allowed=%d degraded=%d reason=%s\n", decision.allowed, decision.degraded,
              decision.reason.c_str());
  return !decision.allowed && decision.degraded && decision.status == airl::Status::backend_unavailable &&
                 decision.reason == "backend_unavailable"
             ? 0
             : 1;
}
