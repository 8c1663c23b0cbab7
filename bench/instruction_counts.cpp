// SPDX-License-Identifier: MIT
// Instructions per operation on the paths a change must not slow down, for callgrind (which counts
// instructions, not seconds: the count is the same on a busy machine). Each path runs `n` times after a warm-up
// that fills its windows; bench/instruction_counts.sh runs every path under callgrind with n and 2n operations
// and divides the difference by n, so set-up and warm-up cancel out, and takes the median of several runs
// (each store draws its own hash seed, and the probe lengths of 1000 or 10k keys vary a little with it). All
// paths run on a ManualClock moved 10 us per operation, 1 s windows (100k live entries per window).
//   instruction_counts <path> <n>
// Paths: hot_key (RateLimiter, one user), hot_denied (the same at 100 per s: nearly all denials), keys_10k
// (RateLimiter, 10k users round-robin), rpm_tpm (an RPM + TPM MultiTierRateLimiter with a request id, 1000
// users), settle (settle() after such an allow(), the settle
// alone counted as the difference to rpm_tpm), no_id and with_id (RateLimiter, 1000 users, without and with a
// unique 36-character request id), cap (ConcurrencyLimiter try_acquire + release, one cap).

#include <airl/airl.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace std::chrono_literals;
using Storage = airl::InMemoryStorage<airl::ManualClock>;

std::vector<std::string> names(std::size_t count) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < count; ++i) out.push_back("user-" + std::to_string(i));
  return out;
}

volatile std::uint64_t sink = 0;

void one_tier(std::size_t users, std::uint64_t n, std::uint64_t limit = 1'000'000'000) {
  airl::ManualClock clock;
  airl::SlidingWindowLimiter<Storage> limiter({limit, 1s}, Storage({}, clock));
  const std::vector<std::string> user = names(users);
  const std::uint64_t warm = 100'000;  // a full window of entries before counting
  for (std::uint64_t i = 0; i < warm + n; ++i) {
    sink = sink + limiter.allow(user[i % users], "llama").remaining;
    clock.advance(10us);
  }
}

std::vector<airl::Tier> rpm_and_tpm() {
  return {{"rpm", airl::Scope::user_model, {1'000'000'000, 1s}, airl::Unit::requests},
          {"tpm", airl::Scope::user_model, {1'000'000'000'000, 1s}}};
}

void rpm_tpm(std::uint64_t n, bool settle) {
  airl::ManualClock clock;
  airl::MultiTierLimiter<Storage> limiter(rpm_and_tpm(), Storage({}, clock));
  const std::vector<std::string> user = names(1000);
  std::string id;
  const std::uint64_t warm = 100'000;
  for (std::uint64_t i = 0; i < warm + n; ++i) {
    const std::string& u = user[i % user.size()];
    id = "req-" + std::to_string(i);
    sink = sink + limiter.allow({.user = u, .model = "llama", .cost = 5'000, .request_id = id}).remaining;
    if (settle) sink = sink + limiter.settle(u, "llama", id, 1'234);
    clock.advance(10us);
  }
}

// One tier, 1000 users, with or without a (unique, 36-character) request id per decision: the id's own cost.
void with_ids(std::uint64_t n, bool ids) {
  airl::ManualClock clock;
  airl::SlidingWindowLimiter<Storage> limiter({1'000'000'000, 1s}, Storage({}, clock));
  const std::vector<std::string> user = names(1000);
  std::string id = "00000000-0000-4000-a000-000000000000";
  for (std::uint64_t i = 0; i < 200'000 + n; ++i) {  // two windows first: the ids' buffers have stopped growing
    for (std::size_t at = 0, v = i; at < 8; ++at, v >>= 4) id[at] = "0123456789abcdef"[v & 15];  // both paths
    const std::string_view request_id = ids ? std::string_view(id) : std::string_view();
    sink = sink + limiter.allow({.user = user[i % user.size()], .model = "llama", .request_id = request_id}).remaining;
    clock.advance(10us);
  }
}

void cap(std::uint64_t n) {
  airl::ManualClock clock;
  airl::ConcurrencyLimiter<airl::InMemoryConcurrencyStorage<airl::ManualClock>> limiter(
      {{"per_user", airl::Scope::user, 1'000'000, 60s}}, airl::InMemoryConcurrencyStorage<airl::ManualClock>({}, clock));
  const std::vector<std::string> user = names(1000);
  for (std::uint64_t i = 0; i < 100'000 + n; ++i) {
    airl::Permit permit = limiter.try_acquire(user[i % user.size()], "llama");
    sink = sink + permit.acquired();
    permit.release();
    clock.advance(10us);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: instruction_counts hot_key|hot_denied|keys_10k|no_id|with_id|rpm_tpm|settle|cap <n>\n");
    return 2;
  }
  const std::string_view path = argv[1];
  const std::uint64_t n = std::strtoull(argv[2], nullptr, 10);
  if (path == "hot_key") one_tier(1, n);
  else if (path == "hot_denied") one_tier(1, n, 100);  // 100 per s: 1 in 1000 admitted, as keys/hot in the bench
  else if (path == "no_id") with_ids(n, false);
  else if (path == "with_id") with_ids(n, true);
  else if (path == "keys_10k") one_tier(10'000, n);
  else if (path == "rpm_tpm") rpm_tpm(n, false);
  else if (path == "settle") rpm_tpm(n, true);
  else if (path == "cap") cap(n);
  else {
    std::fprintf(stderr, "unknown path %s\n", argv[1]);
    return 2;
  }
  return 0;
}
