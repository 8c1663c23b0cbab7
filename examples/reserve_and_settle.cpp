// SPDX-License-Identifier: MIT
// Reserve, then settle, around a streaming completion: the request is admitted with an estimate (prompt
// tokens + max output tokens) and a request id; when the stream ends, the limiter is told what it really cost,
// and the unused part of the reservation is free again at once. A worker that crashes before settling leaks
// nothing: its reservation expires with the window.
// Exits 0 only when the numbers are what this file says (it runs as a CTest test).

#include <airl/airl.hpp>
#include <airl/http.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

using namespace std::chrono_literals;

namespace {

// Stands in for the model server: streams `tokens` output tokens (here it only counts them).
std::uint64_t stream_completion(std::uint64_t tokens) {
  std::uint64_t streamed = 0;
  for (std::uint64_t i = 0; i < tokens; ++i) ++streamed;  // each token would be written to the client here
  return streamed;
}

std::string header(const std::vector<airl::http::Header>& headers, std::string_view name) {
  for (const airl::http::Header& h : headers) {
    if (h.name == name) return h.value;
  }
  return "(absent)";
}

}  // namespace

int main() {
  airl::MultiTierRateLimiter limiter({
      {"rpm", airl::Scope::user_model, {60, 1min}, airl::Unit::requests},
      {"tpm", airl::Scope::user_model, {10'000, 1min}},
  });
  const std::uint64_t prompt_tokens = 1'200, max_output_tokens = 4'096;

  // 1. Before dispatch: reserve the most the request can cost.
  const airl::Decision admitted = limiter.allow(
      {.user = "alice", .model = "llama-3-70b", .cost = prompt_tokens + max_output_tokens, .request_id = "req-42"});
  if (!admitted) return 1;
  const auto reserved = airl::http::response_headers(admitted, limiter.tiers());
  std::printf("reserved %llu tokens: x-ratelimit-remaining-tokens: %s\n",
              static_cast<unsigned long long>(prompt_tokens + max_output_tokens),
              header(reserved, "x-ratelimit-remaining-tokens").c_str());

  // 2. The completion streams; it stops early, as most do.
  const std::uint64_t output_tokens = stream_completion(310);

  // 3. After the stream: settle with the real count. The unused reservation is refunded at once.
  const bool settled = limiter.settle("alice", "llama-3-70b", "req-42", prompt_tokens + output_tokens);
  const std::uint64_t used = limiter.usage("tpm", "alice", "llama-3-70b");
  std::printf("settled at %llu tokens: %llu of 10000 used\n",
              static_cast<unsigned long long>(prompt_tokens + output_tokens), static_cast<unsigned long long>(used));

  // A second request that would not have fitted beside the reservation fits now.
  const airl::Decision next =
      limiter.allow({.user = "alice", .model = "llama-3-70b", .cost = 6'000, .request_id = "req-43"});
  std::printf("a 6000-token request after settling: %s\n", next ? "admitted" : "denied");

  // Settling an id the limiter does not hold (a typo, or one that expired) says so.
  const bool unknown = limiter.settle("alice", "llama-3-70b", "req-999", 10);
  std::printf("settling an unknown id: %s\n", unknown ? "settled" : "false");

  const bool as_documented = header(reserved, "x-ratelimit-remaining-tokens") == "4704" && settled &&
                             used == 1'510 && next && !unknown;
  return as_documented ? 0 : 1;
}
