// SPDX-License-Identifier: MIT
#pragma once
// Counts every heap allocation of the test binary it is linked into (allocation_counter.cpp replaces the
// global operator new and delete), so "does not allocate" is measured, not guessed.

#include <cstddef>

namespace airl::test {

// Calls of operator new (any unaligned form) so far, from any thread. Thread safety: safe.
std::size_t heap_allocations() noexcept;

// How many heap allocations `body` made (run it on one thread, with no other thread allocating).
template <class Body>
std::size_t allocations_during(Body&& body) {
  const std::size_t before = heap_allocations();
  body();
  return heap_allocations() - before;
}

}  // namespace airl::test
