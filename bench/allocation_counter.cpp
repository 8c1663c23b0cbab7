// SPDX-License-Identifier: MIT
// Counting replacements of the global operator new and delete (see allocation_counter.hpp). Each block
// carries a header in front of the caller's pointer holding the requested size, so delete knows what to
// subtract even when it is not given the size.

#include "allocation_counter.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace {

std::atomic<std::int64_t> g_live_bytes{0};
std::atomic<std::int64_t> g_allocations{0};

constexpr std::size_t header_for(std::size_t alignment) noexcept {
  return std::max<std::size_t>(alignment, alignof(std::max_align_t));
}

void* counted_new(std::size_t size, std::size_t alignment) noexcept {
  const std::size_t header = header_for(alignment);
  const std::size_t total = (header + size + alignment - 1) / alignment * alignment;
  void* base = alignment <= alignof(std::max_align_t) ? std::malloc(total) : std::aligned_alloc(alignment, total);
  if (base == nullptr) return nullptr;
  auto* user = static_cast<unsigned char*>(base) + header;
  *reinterpret_cast<std::size_t*>(user - sizeof(std::size_t)) = size;
  g_live_bytes.fetch_add(static_cast<std::int64_t>(size), std::memory_order_relaxed);
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return user;
}

void counted_delete(void* pointer, std::size_t alignment) noexcept {
  if (pointer == nullptr) return;
  auto* user = static_cast<unsigned char*>(pointer);
  const std::size_t size = *reinterpret_cast<std::size_t*>(user - sizeof(std::size_t));
  g_live_bytes.fetch_sub(static_cast<std::int64_t>(size), std::memory_order_relaxed);
  std::free(user - header_for(alignment));
}

void* counted_new_or_throw(std::size_t size, std::size_t alignment) {
  if (void* pointer = counted_new(size, alignment)) return pointer;
  throw std::bad_alloc();
}

constexpr std::size_t plain = alignof(std::max_align_t);

}  // namespace

namespace airl_bench {
std::int64_t live_bytes() noexcept { return g_live_bytes.load(std::memory_order_relaxed); }
std::int64_t allocation_count() noexcept { return g_allocations.load(std::memory_order_relaxed); }
}  // namespace airl_bench

void* operator new(std::size_t size) { return counted_new_or_throw(size, plain); }
void* operator new[](std::size_t size) { return counted_new_or_throw(size, plain); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_new(size, plain); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_new(size, plain); }
void* operator new(std::size_t size, std::align_val_t al) {
  return counted_new_or_throw(size, static_cast<std::size_t>(al));
}
void* operator new[](std::size_t size, std::align_val_t al) {
  return counted_new_or_throw(size, static_cast<std::size_t>(al));
}
void* operator new(std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counted_new(size, static_cast<std::size_t>(al));
}
void* operator new[](std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counted_new(size, static_cast<std::size_t>(al));
}

void operator delete(void* p) noexcept { counted_delete(p, plain); }
void operator delete[](void* p) noexcept { counted_delete(p, plain); }
void operator delete(void* p, std::size_t) noexcept { counted_delete(p, plain); }
void operator delete[](void* p, std::size_t) noexcept { counted_delete(p, plain); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_delete(p, plain); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_delete(p, plain); }
void operator delete(void* p, std::align_val_t al) noexcept { counted_delete(p, static_cast<std::size_t>(al)); }
void operator delete[](void* p, std::align_val_t al) noexcept { counted_delete(p, static_cast<std::size_t>(al)); }
void operator delete(void* p, std::size_t, std::align_val_t al) noexcept {
  counted_delete(p, static_cast<std::size_t>(al));
}
void operator delete[](void* p, std::size_t, std::align_val_t al) noexcept {
  counted_delete(p, static_cast<std::size_t>(al));
}
void operator delete(void* p, std::align_val_t al, const std::nothrow_t&) noexcept {
  counted_delete(p, static_cast<std::size_t>(al));
}
void operator delete[](void* p, std::align_val_t al, const std::nothrow_t&) noexcept {
  counted_delete(p, static_cast<std::size_t>(al));
}
