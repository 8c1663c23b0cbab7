// SPDX-License-Identifier: MIT
#pragma once
// The lock of one shard: a small adaptive mutex. Critical sections here are tens of nanoseconds, so a waiter
// first spins briefly (a lock handed over between cores costs a cache-line transfer, not a system call), then
// sleeps in the kernel (C++20 atomic wait: a futex on Linux) so a preempted holder is not spun on for long.
// States: 0 free, 1 held, 2 held and someone may be asleep (unlock then wakes one).
// Satisfies Lockable (lock, try_lock, unlock); annotated as a capability, so clang checks who holds it.

#include <atomic>
#include <cassert>
#include <cstdint>

#include "thread_annotations.hpp"

namespace airl::detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

class AIRL_CAPABILITY("mutex") ShardMutex {
 public:
  // Thread safety: safe. Throws nothing.
  void lock() noexcept AIRL_ACQUIRE() {
    std::uint32_t expected = 0;
    if (state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed)) return;
    lock_contended();
  }

  // Takes the lock if it is free right now. Thread safety: safe. Throws nothing.
  bool try_lock() noexcept AIRL_TRY_ACQUIRE(true) {
    std::uint32_t expected = 0;
    return state_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed);
  }

  // Thread safety: only the holder may call it. Throws nothing.
  void unlock() noexcept AIRL_RELEASE() {
    if (state_.exchange(0, std::memory_order_release) == 2) state_.notify_one();
  }

  // Tells the analysis that the caller holds this lock (taken through a dynamic set, StoreCall's locks), and
  // checks in debug builds that somebody does. Throws nothing.
  void assert_held() const noexcept AIRL_ASSERT_CAPABILITY(this) {
    assert(state_.load(std::memory_order_relaxed) != 0);
  }

 private:
  static constexpr int spins = 64;

  void lock_contended() noexcept {
    for (int spin = 0; spin < spins; ++spin) {
      cpu_relax();
      std::uint32_t expected = 0;
      if (state_.load(std::memory_order_relaxed) == 0 &&
          state_.compare_exchange_weak(expected, 1, std::memory_order_acquire, std::memory_order_relaxed)) {
        return;
      }
    }
    // Mark the lock contended before sleeping, so the holder's unlock wakes us.
    while (state_.exchange(2, std::memory_order_acquire) != 0) state_.wait(2, std::memory_order_relaxed);
  }

  std::atomic<std::uint32_t> state_{0};
};

}  // namespace airl::detail
