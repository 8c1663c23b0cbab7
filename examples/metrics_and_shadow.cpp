// SPDX-License-Identifier: MIT
// Trying new limits on live traffic: a live limiter decides every response, a shadow candidate with tighter
// limits sees the same requests and only says what it would have denied. Then both limiters' metrics are
// printed in the Prometheus text format, each under its own prefix, as a /metrics endpoint would serve them.
// Exits 0 only when the numbers are what this file says (it runs as a CTest test).

#include <airl/airl.hpp>
#include <airl/prometheus.hpp>

#include <chrono>
#include <cstdio>
#include <string>

using namespace std::chrono_literals;

int main() {
  airl::RateLimiter live({10, 60s});
  airl::RateLimiter candidate({6, 60s}, airl::InMemoryStorage<>{}, airl::LimiterOptions{.shadow = true});

  int served = 0, candidate_would_deny = 0;
  for (int i = 0; i < 8; ++i) {
    const airl::Decision enforced = live.allow("alice", "llama-3-70b");
    const airl::Decision trial = candidate.allow("alice", "llama-3-70b");  // never refuses
    if (enforced) ++served;
    if (trial.shadow_denied) ++candidate_would_deny;
  }
  std::printf("served %d of 8; the candidate limits would have denied %d\n\n", served, candidate_would_deny);
  std::fputs(airl::prometheus::text(live.metrics(), "airl_live").c_str(), stdout);
  std::fputs(airl::prometheus::text(candidate.metrics(), "airl_candidate").c_str(), stdout);

  const bool as_documented = served == 8 && candidate_would_deny == 2 && candidate.metrics().denied == 2 &&
                             candidate.usage("alice", "llama-3-70b") == 6;
  return as_documented ? 0 : 1;
}
