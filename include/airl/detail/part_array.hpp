// SPDX-License-Identifier: MIT
#pragma once
// Per-call working memory for the parts of one call (a request's tiers, an acquisition's caps): on the stack
// for the common sizes, on the heap beyond, never in thread-local buffers (a permit may be released at exit).

#include <cstddef>
#include <memory>
#include <new>
#include <span>
#include <type_traits>

namespace airl::detail {

// Most parts of one call kept on the stack, by limiters and storages alike; more go to the heap.
inline constexpr std::size_t inline_parts = 8;

// The number of parts of a call: Extent when it is known at compile time (1: a one-tier limiter, where every
// loop over the parts then disappears), else the call's own count.
template <std::size_t Extent>
class PartCount {
 public:
  explicit PartCount(std::size_t) noexcept {}
  static constexpr std::size_t size() noexcept { return Extent; }
};
template <>
class PartCount<std::dynamic_extent> {
 public:
  explicit PartCount(std::size_t n) noexcept : size_(n) {}
  std::size_t size() const noexcept { return size_; }

 private:
  std::size_t size_;
};

// Per-call room for n values: on the stack up to inline_parts (or exactly Extent), on the heap beyond (never
// thread-local). The stack room starts uninitialised (zeroing it would cost more than a one-tier decision's own
// work): write each element with set() before reading it.
template <class T, std::size_t Extent = std::dynamic_extent>
class PartArray : PartCount<Extent> {
  static_assert(std::is_trivially_destructible_v<T>, "airl: PartArray holds trivially destructible values");
  static constexpr std::size_t room = Extent == std::dynamic_extent ? inline_parts : Extent;

 public:
  explicit PartArray(std::size_t n) : PartCount<Extent>(n) {
    if constexpr (Extent == std::dynamic_extent) {
      if (n > inline_parts) [[unlikely]] heap_ = std::make_unique<T[]>(n);
    }
  }
  PartArray(const PartArray&) = delete;
  PartArray& operator=(const PartArray&) = delete;

  using PartCount<Extent>::size;
  T& set(std::size_t i, const T& value) noexcept { return *std::construct_at(data() + i, value); }
  // Writes element i as make() returns it, built in place (no copy).
  template <class Make>
  T& make(std::size_t i, Make&& make) {
    return *::new (static_cast<void*>(data() + i)) T(make());
  }
  T& operator[](std::size_t i) noexcept { return data()[i]; }
  std::span<T, Extent> span() noexcept { return std::span<T, Extent>(data(), size()); }

 private:
  union Room {
    Room() noexcept {}
    T items[room];
  };
  struct NoHeap {};

  T* data() noexcept {
    if constexpr (Extent == std::dynamic_extent) {
      if (heap_) [[unlikely]] return heap_.get();
    }
    return room_.items;
  }

  Room room_;
  [[no_unique_address]] std::conditional_t<Extent == std::dynamic_extent, std::unique_ptr<T[]>, NoHeap> heap_;
};

}  // namespace airl::detail
