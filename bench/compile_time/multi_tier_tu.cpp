// SPDX-License-Identifier: MIT
// What bench/compile_time.py times: one translation unit that includes <airl/airl.hpp> and decides with a
// MultiTierRateLimiter (requests and tokens per user+model, tokens per model), settles and resets.
#include <airl/airl.hpp>

#include <chrono>

int main() {
  using namespace std::chrono_literals;
  airl::MultiTierRateLimiter limiter({{"rpm", airl::Scope::user_model, {60, 1min}, airl::Unit::requests},
                                      {"tpm", airl::Scope::user_model, {100000, 1min}},
                                      {"model_tpm", airl::Scope::model, {1000000, 1min}}});
  const airl::Decision d = limiter.allow({.user = "alice", .model = "llama", .cost = 700, .request_id = "r1"});
  limiter.settle("alice", "llama", "r1", 500);
  limiter.reset("alice");
  return d.allowed ? 0 : 1;
}
