// SPDX-License-Identifier: MIT
// Headers a client understands: requests per minute and tokens per minute for each user and model, and the
// HTTP response a serving binary builds from each decision with <airl/http.hpp>: status, RateLimit-Policy,
// RateLimit, OpenAI's x-ratelimit-* headers, Retry-After and retry-after-ms, and on 429 the body OpenAI's SDKs
// read ({"error":{...}}; a client asking for application/problem+json would get http::problem_json instead).
// Exits 0 only when the responses are what this file says (it runs as a CTest test).

#include <airl/airl.hpp>
#include <airl/http.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

using namespace std::chrono_literals;

// What a handler would send back; here it is printed.
void respond(const airl::Decision& decision, const std::vector<airl::Tier>& tiers) {
  std::printf("HTTP %d\n", airl::http::status_code(decision));
  for (const airl::http::Header& header : airl::http::response_headers(decision, tiers)) {
    std::printf("%s: %s\n", header.name.c_str(), header.value.c_str());
  }
  if (!decision.allowed) {
    std::printf("Content-Type: %s\n\n%s\n", std::string(airl::http::openai_content_type).c_str(),
                airl::http::openai_error_json(decision, tiers).c_str());
  }
  std::puts("");
}

int main() {
  // 3 requests and 10,000 tokens per minute for each user on each model.
  airl::MultiTierRateLimiter limiter({{"rpm", airl::Scope::user_model, {3, 60s}, airl::Unit::requests},
                                      {"tpm", airl::Scope::user_model, {10'000, 60s}, airl::Unit::cost}});

  // A completion estimated at 6,000 tokens (prompt + max output), then one of 5,000 that no longer fits.
  const airl::Decision first = limiter.allow({.user = "alice", .model = "llama-3-70b", .cost = 6'000});
  respond(first, limiter.tiers());
  const airl::Decision second = limiter.allow({.user = "alice", .model = "llama-3-70b", .cost = 5'000});
  respond(second, limiter.tiers());

  const bool as_documented = first.allowed && !second.allowed && second.reason == "tpm" &&
                             airl::http::status_code(second) == 429 && second.retry_after > 59s &&
                             second.retry_after <= 60s;  // until the 6,000 expire: 60 s less the time since
  return as_documented ? 0 : 1;
}
