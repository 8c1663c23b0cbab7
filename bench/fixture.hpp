// SPDX-License-Identifier: MIT
#pragma once
// The subject of the benchmark now running, built once per benchmark rather than once per run: Google
// Benchmark calls a benchmark function several times (to pick an iteration count, then per repetition and
// per thread), and building a 1M-key limiter each time would dominate the run. One slot: when a different
// benchmark asks, the previous subject is freed first, so at most one large store is alive.

#include <memory>
#include <mutex>

namespace airl_bench {

// The subject for `owner` (any address identifying the benchmark), made with make() on first request.
// Thread safety: safe; every thread of a multi-threaded run gets the same object.
template <class T, class Make>
T& shared_fixture(const void* owner, Make&& make) {
  static std::mutex mutex;
  static const void* current = nullptr;
  static std::shared_ptr<void> object;
  std::lock_guard lock(mutex);
  if (current != owner) {
    object.reset();
    current = nullptr;
    object = std::shared_ptr<T>(make());
    current = owner;
  }
  return *static_cast<T*>(object.get());
}

}  // namespace airl_bench
