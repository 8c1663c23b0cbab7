// SPDX-License-Identifier: MIT
#pragma once
// Counts every heap allocation of the test binary it is linked into (allocation_counter.cpp replaces the
// global operator new and delete), so "does not allocate" is measured, not guessed; and fails one on request,
// so exception safety is tested, not assumed.

#include <cstddef>

namespace airl::test {

// Calls of operator new (any unaligned form) so far, from any thread. Thread safety: safe.
std::size_t heap_allocations() noexcept;

// Fault injection: this thread's allocation number `count` from now (0 = the next one) fails (std::bad_alloc,
// or nullptr from the nothrow forms); -1 disarms. One failure per call. Thread safety: per thread.
void fail_allocation_after(long count) noexcept;
// Whether a failure armed on this thread has not happened yet.
bool allocation_failure_armed() noexcept;

// How many heap allocations `body` made (run it on one thread, with no other thread allocating).
template <class Body>
std::size_t allocations_during(Body&& body) {
  const std::size_t before = heap_allocations();
  body();
  return heap_allocations() - before;
}

}  // namespace airl::test
