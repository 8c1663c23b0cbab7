// SPDX-License-Identifier: MIT
// Quick start: rate-limit (user, model) pairs before dispatching inference requests.
// Exits 0 only when the limiter behaved as documented (it runs as a CTest test).

#include <airl/airl.hpp>

#include <chrono>
#include <cstdio>

using namespace std::chrono_literals;

// The Retry-After header value: whole seconds, rounded up, so a client that waits that long gets through.
long long retry_after_seconds(const airl::Decision& decision) {
  if (decision.retry_after == airl::Decision::never) return -1;  // larger than the quota: waiting never helps
  return std::chrono::ceil<std::chrono::seconds>(decision.retry_after).count();
}

void print_response(const airl::Decision& decision) {
  if (decision) {
    std::printf("  HTTP 200  remaining=%llu limit=%llu\n", static_cast<unsigned long long>(decision.remaining),
                static_cast<unsigned long long>(decision.limit));
  } else {
    std::printf("  HTTP 429  Retry-After: %llds  remaining=%llu limit=%llu reason=%s\n", retry_after_seconds(decision),
                static_cast<unsigned long long>(decision.remaining), static_cast<unsigned long long>(decision.limit),
                decision.reason.c_str());
  }
}

int main() {
  // 5 requests per sliding second for each (user, model) pair, stored in this process.
  airl::RateLimiter limiter(airl::Quota{5, 1s});

  std::puts("alice sends 7 requests to llama-3-70b at once:");
  int admitted = 0;
  for (int i = 0; i < 7; ++i) {
    const airl::Decision decision = limiter.allow("alice", "llama-3-70b");
    print_response(decision);
    if (decision) ++admitted;
  }
  // Each pair has its own window: bob is unaffected by alice's burst.
  const bool bob_admitted = limiter.allow("bob", "llama-3-70b").allowed;
  std::printf("bob: %s\n", bob_admitted ? "HTTP 200" : "HTTP 429");
  const auto alice_usage = limiter.usage("alice", "llama-3-70b");
  std::printf("usage(alice, llama-3-70b) = %llu of 5\n", static_cast<unsigned long long>(alice_usage));

  // Token-weighted: the same limiter type, with the request's token count as its cost.
  airl::RateLimiter tokens_per_minute(airl::Quota{10'000, 1min});
  std::puts("alice asks for 6000 tokens, then 5000 more, with 10000 tokens per minute:");
  const airl::Decision first = tokens_per_minute.allow(airl::Request{"alice", "llama-3-70b", 6'000});
  print_response(first);
  const airl::Decision second = tokens_per_minute.allow(airl::Request{"alice", "llama-3-70b", 5'000});
  print_response(second);

  const airl::Metrics metrics = limiter.metrics();
  std::printf("metrics: allowed=%llu denied=%llu deny_rate=%.1f%% active_keys=%zu\n",
              static_cast<unsigned long long>(metrics.allowed), static_cast<unsigned long long>(metrics.denied),
              metrics.deny_rate_percent(), metrics.active_keys);

  const bool as_expected = admitted == 5 && bob_admitted && alice_usage == 5 && first && !second &&
                           second.remaining == 4'000 && metrics.allowed == 6 && metrics.denied == 2 &&
                           metrics.active_keys == 2;
  if (!as_expected) std::puts("UNEXPECTED: the limiter did not behave as documented");
  return as_expected ? 0 : 1;
}
