// SPDX-License-Identifier: MIT
// Built against the installed airl package by the install_and_consume test.
#include <airl/airl.hpp>

#include <chrono>
#include <cstdio>

int main() {
  airl::RateLimiter limiter({2, std::chrono::minutes(1)});
  const bool first = limiter.allow("alice", "gpt").allowed;
  const bool second = limiter.allow("alice", "gpt").allowed;
  const airl::Decision third = limiter.allow("alice", "gpt");
  std::printf("airl %s consumer: %d %d %d (%s)\n", AIRL_VERSION_STRING, first, second, third.allowed,
              third.reason.c_str());
  return first && second && !third.allowed && third.reason == "default" ? 0 : 1;
}
