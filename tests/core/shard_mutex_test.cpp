// SPDX-License-Identifier: MIT
// airl::detail::ShardMutex, the adaptive spin-then-futex lock of a shard: mutual exclusion under 8 threads
// (a plain counter guarded by it ends exactly right; ThreadSanitizer checks the happens-before), try_lock
// semantics, and lost wake-ups: threads put to sleep in the futex path must all get the lock. Every threaded
// case runs behind a future with a deadline, so a lost wake-up fails the test instead of hanging it.
#include <catch2/catch.hpp>

#include <airl/detail/shard_mutex.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

// These cases take and release the raw lock on purpose (a held lock tried again, a lock handed between
// threads), which clang's thread-safety analysis rightly cannot follow: it checks the library, not this file.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wthread-safety-analysis"
#endif

using namespace std::chrono_literals;

namespace {

using airl::detail::ShardMutex;

// Generous: these cases take well under a second, even under a sanitizer on two shared cores.
constexpr auto deadline = 60s;

// Runs `body` on its own thread and fails the test if it does not finish by the deadline. A thread stuck on a
// lost wake-up cannot be joined, so on a timeout the process exits at once (the failure is reported first).
template <class Body>
void finishes_in_time(const char* what, Body body) {
  auto done = std::async(std::launch::async, std::move(body));
  if (done.wait_for(deadline) != std::future_status::ready) {
    std::fprintf(stderr, "ShardMutex: '%s' did not finish within %lld s: a waiter was never woken\n", what,
                 static_cast<long long>(deadline.count()));
    std::fflush(stderr);
    std::_Exit(EXIT_FAILURE);
  }
  done.get();  // rethrows what the body threw
}

}  // namespace

TEST_CASE("try_lock takes a free lock and refuses a held one", "[shard_mutex]") {
  ShardMutex mutex;
  REQUIRE(mutex.try_lock());
  CHECK_FALSE(mutex.try_lock());  // not recursive: the holder itself is refused
  bool other_thread_took_it = true;
  std::thread([&] { other_thread_took_it = mutex.try_lock(); }).join();
  CHECK_FALSE(other_thread_took_it);
  mutex.unlock();
  bool taken_after_unlock = false;
  std::thread([&] {
    taken_after_unlock = mutex.try_lock();
    if (taken_after_unlock) mutex.unlock();
  }).join();
  CHECK(taken_after_unlock);
  REQUIRE(mutex.try_lock());
  mutex.unlock();
  // lock() after try_lock()/unlock() cycles, and std::lock_guard / std::unique_lock work with it.
  { std::lock_guard guard(mutex); CHECK_FALSE(mutex.try_lock()); }
  {
    std::unique_lock lock(mutex, std::try_to_lock);
    CHECK(lock.owns_lock());
  }
  CHECK(mutex.try_lock());
  mutex.unlock();
}

TEST_CASE("try_lock fails while another thread holds the lock and succeeds once it lets go", "[shard_mutex]") {
  ShardMutex mutex;
  std::atomic<int> phase{0};
  finishes_in_time("try_lock handover", [&] {
    std::thread holder([&] {
      mutex.lock();
      phase.store(1);
      while (phase.load() != 2) std::this_thread::yield();
      mutex.unlock();
      phase.store(3);
    });
    while (phase.load() != 1) std::this_thread::yield();
    for (int i = 0; i < 1000; ++i) REQUIRE_FALSE(mutex.try_lock());
    phase.store(2);
    while (phase.load() != 3) std::this_thread::yield();
    holder.join();
    REQUIRE(mutex.try_lock());
    mutex.unlock();
  });
}

TEST_CASE("8 threads incrementing a plain counter under the lock reach exactly the total", "[shard_mutex]") {
  constexpr int threads = 8;
  // Short critical sections (the spin path) and, every 64th, a long one (waiters give up spinning and sleep).
  constexpr int iterations = 20'000;
  ShardMutex mutex;
  long long counter = 0;  // deliberately not atomic: only the lock protects it
  int inside = 0;         // threads inside the critical section at once: must stay 1
  std::atomic<bool> overlapped{false};
  finishes_in_time("counter", [&] {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (int i = 0; i < iterations; ++i) {
          const bool use_try = (i + t) % 7 == 0;
          if (!(use_try && mutex.try_lock())) mutex.lock();
          if (++inside != 1) overlapped.store(true);
          const long long seen = counter;
          if (i % 64 == 0) std::this_thread::yield();  // widen the window a broken lock would let others into
          counter = seen + 1;
          --inside;
          mutex.unlock();
        }
      });
    }
    for (std::thread& thread : pool) thread.join();
  });
  CHECK_FALSE(overlapped.load());
  CHECK(counter == static_cast<long long>(threads) * iterations);
  REQUIRE(mutex.try_lock());  // left free
  mutex.unlock();
}

TEST_CASE("waiters asleep in the futex path are all woken: no lost wake-up", "[shard_mutex]") {
  // Each round: the main thread holds the lock long enough for every waiter to exhaust its spins and sleep,
  // then lets go. Each unlock wakes one sleeper, which must wake the next when it unlocks, and so on.
  constexpr int waiters = 7;
  constexpr int rounds = 40;
  ShardMutex mutex;
  int acquisitions = 0;  // guarded by mutex
  finishes_in_time("sleepers", [&] {
    for (int round = 0; round < rounds; ++round) {
      mutex.lock();
      std::atomic<int> started{0};
      std::vector<std::thread> pool;
      for (int w = 0; w < waiters; ++w) {
        pool.emplace_back([&] {
          started.fetch_add(1);
          for (int k = 0; k < 3; ++k) {
            mutex.lock();
            ++acquisitions;
            mutex.unlock();
          }
        });
      }
      while (started.load() != waiters) std::this_thread::yield();
      std::this_thread::sleep_for(round % 4 == 0 ? 20ms : 2ms);  // long past 64 spins: they sleep
      mutex.unlock();
      for (std::thread& thread : pool) thread.join();
    }
  });
  CHECK(acquisitions == rounds * waiters * 3);
  REQUIRE(mutex.try_lock());
  mutex.unlock();
}

TEST_CASE("a lock handed over between sleeping and spinning threads never strands a sleeper", "[shard_mutex]") {
  // Mixed traffic: holders that sleep inside the lock (push the others into the futex) and holders that
  // release at once (take the lock from under a woken sleeper, which must go back to sleep and be woken again).
  constexpr int threads = 8;
  constexpr int iterations = 300;
  ShardMutex mutex;
  long long counter = 0;
  finishes_in_time("mixed", [&] {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (int i = 0; i < iterations; ++i) {
          mutex.lock();
          ++counter;
          if ((i + t) % 16 == 0) std::this_thread::sleep_for(200us);
          mutex.unlock();
          if (t % 2 == 0 && i % 8 == 0) std::this_thread::sleep_for(50us);
        }
      });
    }
    for (std::thread& thread : pool) thread.join();
  });
  CHECK(counter == static_cast<long long>(threads) * iterations);
}
