// SPDX-License-Identifier: MIT
// What bench/compile_time.py times: one translation unit that includes <airl/airl.hpp> and decides with a
// RateLimiter, as a file of a serving binary would.
#include <airl/airl.hpp>

#include <chrono>

bool decide_one(airl::RateLimiter& limiter, std::string_view user, std::string_view model) {
  return limiter.allow(user, model).allowed;
}

int main() {
  using namespace std::chrono_literals;
  airl::RateLimiter limiter({60, 1min});
  return decide_one(limiter, "alice", "llama") ? 0 : 1;
}
