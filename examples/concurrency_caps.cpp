// SPDX-License-Identifier: MIT
// Concurrency caps in front of GPU workers: at most 2 completions in flight per user and 3 in all. Each
// completion holds an RAII permit while it "streams" and renews its lease between chunks; the permit is given
// back when the completion ends, however it ends. In memory, on a ManualClock, so the run is deterministic.
// Exits 0 only when the numbers are what this file says (it runs as a CTest test).

#include <airl/airl.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {

using Storage = airl::InMemoryConcurrencyStorage<airl::ManualClock>;

// A streaming completion: 4 chunks of 20 s each (80 s in all, longer than the 60 s lease), renewing the
// lease after every chunk so it never runs out while the stream is alive.
bool stream_completion(airl::Permit& permit, airl::ManualClock& clock) {
  for (int chunk = 0; chunk < 4; ++chunk) {
    clock.advance(20s);  // the GPU produces a chunk
    if (!permit.renew()) return false;  // lease lost: the slot may be someone else's now; stop
  }
  return true;
}

}  // namespace

int main() {
  airl::ManualClock clock;
  airl::ConcurrencyLimiter<Storage> limiter({{"user_in_flight", airl::Scope::user, 2, 60s},
                                             {"gpu_in_flight", airl::Scope::global, 3, 60s}},
                                            Storage({}, clock));

  // Three requests from alice arrive together: the third finds her two slots taken.
  std::vector<airl::Permit> running;
  for (int i = 0; i < 3; ++i) {
    airl::Permit permit = limiter.try_acquire("alice", "llama-3-70b");
    if (!permit) {
      std::printf("alice #%d: 429, %s full, retry within %lld s\n", i + 1, permit.reason().c_str(),
                  static_cast<long long>(std::chrono::ceil<std::chrono::seconds>(permit.retry_after()).count()));
      continue;
    }
    running.push_back(std::move(permit));
  }
  // bob takes the last GPU slot; carol finds the GPUs full.
  running.push_back(limiter.try_acquire("bob", "llama-3-70b"));
  const airl::Permit carol = limiter.try_acquire("carol", "llama-3-70b");
  std::printf("bob: %s; carol: %s\n", running.back() ? "admitted" : "429", carol ? "admitted" : carol.reason().c_str());
  const std::uint64_t busy = limiter.in_flight("gpu_in_flight", "anyone", "any");

  // alice's second completion is short: its permit goes out of scope and the slot is free at once.
  clock.advance(5s);
  { const airl::Permit finished = std::move(running[1]); }
  airl::Permit carol_again = limiter.try_acquire("carol", "llama-3-70b");
  std::printf("alice's short completion ended: carol %s\n", carol_again ? "admitted" : "still waiting");

  // alice's first completion streams for 80 s, past its 60 s lease, renewing between chunks.
  const bool streamed = stream_completion(running[0], clock);
  // bob and carol never renewed: their leases have run out, as a crashed holder's would.
  const std::uint64_t left = limiter.in_flight("gpu_in_flight", "anyone", "any");
  std::printf("alice streamed %s; in flight now: %llu (bob's and carol's leases lapsed)\n",
              streamed ? "80 s" : "until she lost her lease", static_cast<unsigned long long>(left));
  running.clear();  // alice's stream ends: released

  const airl::ConcurrencyMetrics metrics = limiter.metrics();
  std::printf("acquired %llu, denied %llu, renewed %llu, in flight %llu\n",
              static_cast<unsigned long long>(metrics.acquired), static_cast<unsigned long long>(metrics.denied),
              static_cast<unsigned long long>(metrics.renewed),
              static_cast<unsigned long long>(limiter.in_flight("gpu_in_flight", "anyone", "any")));

  const bool as_documented = busy == 3 && !carol && carol.reason() == "gpu_in_flight" && carol_again && streamed &&
                             left == 1 && metrics.acquired == 4 && metrics.denied == 2 && metrics.renewed == 4 &&
                             limiter.in_flight("gpu_in_flight", "anyone", "any") == 0;
  return as_documented ? 0 : 1;
}
