// SPDX-License-Identifier: MIT
// Counting (and, on request, failing) replacements of the global operator new and delete (see
// allocation_counter.hpp). The whole
// family of plain and nothrow forms is replaced, so every pointer is freed by the function that matches its
// allocation (sanitizers check the pairing); the aligned forms stay the runtime's, pairing among themselves.
#include "allocation_counter.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {

std::atomic<std::size_t> allocations{0};
thread_local long allocations_until_failure = -1;  // -1: no failure armed on this thread

void* counted_allocation(std::size_t size) noexcept {
  if (allocations_until_failure == 0) {
    allocations_until_failure = -1;  // one failure per arming
    return nullptr;
  }
  if (allocations_until_failure > 0) --allocations_until_failure;
  allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}

}  // namespace

std::size_t airl::test::heap_allocations() noexcept { return allocations.load(std::memory_order_relaxed); }
void airl::test::fail_allocation_after(long count) noexcept { allocations_until_failure = count; }
bool airl::test::allocation_failure_armed() noexcept { return allocations_until_failure != -1; }

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // malloc/free on both sides: matched by design
#endif
void* operator new(std::size_t size) {
  if (void* memory = counted_allocation(size)) return memory;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  if (void* memory = counted_allocation(size)) return memory;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_allocation(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_allocation(size); }
void operator delete(void* memory) noexcept { std::free(memory); }
void operator delete[](void* memory) noexcept { std::free(memory); }
void operator delete(void* memory, std::size_t) noexcept { std::free(memory); }
void operator delete[](void* memory, std::size_t) noexcept { std::free(memory); }
void operator delete(void* memory, const std::nothrow_t&) noexcept { std::free(memory); }
void operator delete[](void* memory, const std::nothrow_t&) noexcept { std::free(memory); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
