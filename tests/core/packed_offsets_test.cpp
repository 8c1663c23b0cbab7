// SPDX-License-Identifier: MIT
// airl::detail packed offsets (detail/packed_offsets.hpp): round trips at every width 4..8 including each
// width's largest value, stores that leave the neighbouring offsets (and the padding) byte for byte as they
// were, and the width boundaries of packed_width_for. Buffers are allocated at exactly the size the window
// log allocates (no padding for width 4, packed_padding for 5..8), so AddressSanitizer sees any access past it.
#include <catch2/catch.hpp>

#include <airl/detail/memory/packed_offsets.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <vector>

namespace {

using airl::detail::load_packed;
using airl::detail::packed_mask;
using airl::detail::packed_padding;
using airl::detail::packed_width_for;
using airl::detail::store_packed;

constexpr unsigned char sentinel = 0xA5;

// Bytes the window log allocates for `count` offsets of `width` bytes.
std::size_t buffer_size(std::size_t count, unsigned width) { return count * width + (width == 4 ? 0 : packed_padding); }

// A buffer of exactly that size, every byte `sentinel`.
std::unique_ptr<unsigned char[]> make_buffer(std::size_t count, unsigned width) {
  const std::size_t size = buffer_size(count, width);
  auto buffer = std::make_unique<unsigned char[]>(size);
  for (std::size_t i = 0; i < size; ++i) buffer[i] = sentinel;
  return buffer;
}

// What an untouched offset of `width` bytes reads: every byte `sentinel`.
std::uint64_t sentinel_value(unsigned width) {
  std::uint64_t value = 0;
  for (unsigned b = 0; b < width; ++b) value |= std::uint64_t{sentinel} << (8 * b);
  return value;
}

// The little-endian bytes of `value` at index `i` of `width`-byte offsets.
std::uint64_t bytes_at(const unsigned char* data, unsigned width, std::size_t i) {
  std::uint64_t value = 0;
  for (unsigned b = 0; b < width; ++b) value |= std::uint64_t{data[i * width + b]} << (8 * b);
  return value;
}

}  // namespace

TEST_CASE("packed_mask holds exactly width bytes of ones", "[packed_offsets]") {
  STATIC_REQUIRE(packed_mask(4) == 0xFFFF'FFFFull);
  STATIC_REQUIRE(packed_mask(5) == 0xFF'FFFF'FFFFull);
  STATIC_REQUIRE(packed_mask(6) == 0xFFFF'FFFF'FFFFull);
  STATIC_REQUIRE(packed_mask(7) == 0xFF'FFFF'FFFF'FFFFull);
  STATIC_REQUIRE(packed_mask(8) == std::numeric_limits<std::uint64_t>::max());
}

TEST_CASE("packed_width_for picks the smallest width 4..8 at every boundary", "[packed_offsets]") {
  STATIC_REQUIRE(packed_width_for(0) == 4);
  STATIC_REQUIRE(packed_width_for(1) == 4);
  STATIC_REQUIRE(packed_width_for(std::numeric_limits<std::uint64_t>::max()) == 8);
  for (unsigned width = 4; width < 8; ++width) {
    CAPTURE(width);
    const std::uint64_t largest = (std::uint64_t{1} << (8 * width)) - 1;
    CHECK(packed_width_for(largest) == width);
    CHECK(packed_width_for(largest + 1) == width + 1);
    CHECK(packed_width_for(largest / 2) <= width);
  }
  CHECK(packed_width_for(std::uint64_t{1} << 63) == 8);
  CHECK(packed_width_for((std::uint64_t{1} << 56) - 1) == 7);
  CHECK(packed_width_for(std::uint64_t{1} << 56) == 8);
}

TEST_CASE("every width round-trips 0, 1, its largest value and a byte pattern at every index", "[packed_offsets]") {
  const unsigned width = GENERATE(4u, 5u, 6u, 7u, 8u);
  const std::size_t count = GENERATE(as<std::size_t>{}, 1, 2, 3, 17);
  CAPTURE(width, count);
  const std::uint64_t largest = packed_mask(width);
  const std::uint64_t pattern = 0x0807'0605'0403'0201ull & largest;  // distinct bytes: catches byte order slips
  for (const std::uint64_t value : {std::uint64_t{0}, std::uint64_t{1}, largest, pattern, largest - 1, largest >> 1}) {
    CAPTURE(value);
    for (std::size_t i = 0; i < count; ++i) {
      CAPTURE(i);
      auto buffer = make_buffer(count, width);
      store_packed(buffer.get(), width, i, value);
      REQUIRE(load_packed(buffer.get(), width, i) == value);
      REQUIRE(bytes_at(buffer.get(), width, i) == value);  // little-endian, exactly `width` bytes
      // Nothing else moved: neither the other offsets nor the padding after the last one.
      for (std::size_t b = 0; b < buffer_size(count, width); ++b) {
        if (b / width == i && b < count * width) continue;
        CAPTURE(b);
        REQUIRE(buffer[b] == sentinel);
      }
      for (std::size_t j = 0; j < count; ++j) {
        if (j != i) REQUIRE(load_packed(buffer.get(), width, j) == sentinel_value(width));
      }
    }
  }
}

TEST_CASE("stores leave their neighbours intact: randomized against a plain array", "[packed_offsets]") {
  const unsigned width = GENERATE(4u, 5u, 6u, 7u, 8u);
  CAPTURE(width);
  std::mt19937_64 rng(0x9AC7'0000 + width);
  constexpr std::size_t count = 64;
  auto buffer = make_buffer(count, width);
  std::vector<std::uint64_t> model(count, sentinel_value(width));
  const std::uint64_t largest = packed_mask(width);
  for (int step = 0; step < 20'000; ++step) {
    const std::size_t i = std::uniform_int_distribution<std::size_t>(0, count - 1)(rng);
    std::uint64_t value = rng() & largest;
    switch (rng() % 4) {
      case 0: value = largest; break;  // all ones: a store that spills would clobber the next offset's bytes
      case 1: value = 0; break;        // all zeros: a store that spills would clear them
      default: break;
    }
    store_packed(buffer.get(), width, i, value);
    model[i] = value;
    if (step % 97 == 0 || i == count - 1) {
      for (std::size_t j = 0; j < count; ++j) {
        CAPTURE(step, j);
        REQUIRE(load_packed(buffer.get(), width, j) == model[j]);
      }
      for (std::size_t b = count * width; b < buffer_size(count, width); ++b) REQUIRE(buffer[b] == sentinel);
    }
  }
}

TEST_CASE("the last offset of an exactly sized buffer is read and written in bounds", "[packed_offsets]") {
  // One offset per buffer: the 8-byte access of widths 5..8 must stay inside width + packed_padding bytes.
  for (unsigned width = 4; width <= 8; ++width) {
    CAPTURE(width);
    auto buffer = make_buffer(1, width);
    store_packed(buffer.get(), width, 0, packed_mask(width));
    CHECK(load_packed(buffer.get(), width, 0) == packed_mask(width));
    auto many = make_buffer(1000, width);
    store_packed(many.get(), width, 999, packed_mask(width) - 7);
    CHECK(load_packed(many.get(), width, 999) == packed_mask(width) - 7);
    CHECK(load_packed(many.get(), width, 998) == sentinel_value(width));
  }
}
