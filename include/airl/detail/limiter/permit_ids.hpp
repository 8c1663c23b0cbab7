// SPDX-License-Identifier: MIT
#pragma once
// Permit ids: 128 bits, unique across processes. A base is drawn per limiter (random bits and the process id)
// and a counter is added. A process forked after the base was drawn draws its own before its next id, so
// pre-fork workers never repeat each other's ids (on Redis that would let one worker's lease overwrite, and
// its release free, another's).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "../../concurrency_storage_policy.hpp"
#include "../lock.hpp"
#include "../mutex.hpp"
#include "../random_bits.hpp"
#include "../thread_annotations.hpp"

#ifndef AIRL_HAS_FORK  // POSIX: fork() exists, and permit ids must notice it
#if defined(__unix__) || defined(__APPLE__)
#define AIRL_HAS_FORK 1
#else
#define AIRL_HAS_FORK 0
#endif
#endif
#if AIRL_HAS_FORK
#include <pthread.h>
#include <unistd.h>
#endif

namespace airl::detail {

// How many times fork() has made this process a child (counted by a pthread_atfork handler, installed by
// watch_forks()). A permit id base drawn under an older count was inherited from the parent. Throws nothing.
inline std::atomic<std::uint64_t>& fork_generation() noexcept {
  static std::atomic<std::uint64_t> generation{0};
  return generation;
}

// Installs the fork counter's handler, once per process. Thread safety: safe. Throws nothing.
inline void watch_forks() noexcept {
#if AIRL_HAS_FORK
  static const bool installed = [] {
    return ::pthread_atfork(nullptr, nullptr, [] { fork_generation().fetch_add(1, std::memory_order_relaxed); }) == 0;
  }();
  (void)installed;
#endif
}

// This process's id, mixed into permit ids (two live processes on one host never share a base). Throws nothing.
inline std::uint32_t process_id() noexcept {
#if AIRL_HAS_FORK
  return static_cast<std::uint32_t>(::getpid());
#else
  return 0;
#endif
}

class PermitIds {
 public:
  // Thread safety: construct before sharing. Throws what random_bits() throws.
  PermitIds() {
    watch_forks();
    draw(/*forced=*/true);
  }

  // A fresh id: the base plus a counter, unique in this process and, with overwhelming probability, across
  // processes. The base is drawn again first in a process forked since it was drawn. Thread safety: safe.
  // Throws only what draw() throws.
  PermitId next() {
    if (fork_generation().load(std::memory_order_acquire) != generation_.load(std::memory_order_acquire)) {
      draw(/*forced=*/false);
    }
    return PermitId{high_.load(std::memory_order_relaxed),
                    low_.load(std::memory_order_relaxed) + counter_.fetch_add(1, std::memory_order_relaxed)};
  }

  // Draws the base: the high word's top half and the low word random, the high word's bottom half the process
  // id. Unless `forced`, only when the process forked since the last draw. Thread safety: safe. Throws what
  // random_bits() throws.
  void draw(bool forced) {
    Lock lock(mutex_);
    const std::uint64_t generation = fork_generation().load(std::memory_order_acquire);
    if (!forced && generation == generation_.load(std::memory_order_relaxed)) return;  // another thread did
    high_.store((random_bits() << 32) | process_id(), std::memory_order_relaxed);
    low_.store(random_bits(), std::memory_order_relaxed);
    generation_.store(generation, std::memory_order_release);
  }

 private:
  Mutex mutex_;  // serialises draws of the base
  std::atomic<std::uint64_t> high_{0}, low_{0}, counter_{0};
  std::atomic<std::uint64_t> generation_{0};  // the fork_generation() the base was drawn under
};

}  // namespace airl::detail
