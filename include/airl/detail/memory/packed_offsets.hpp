// SPDX-License-Identifier: MIT
#pragma once
// Unsigned offsets packed at a fixed width of 4 to 8 bytes, for the window log's timestamps: a log stores
// each entry's time as an offset from its origin in the fewest bytes its live span needs (4 bytes reach
// 4.29 s in nanoseconds, 5 bytes 18 minutes, 6 bytes 78 hours), so memory follows what the window holds.
// 4-byte offsets are read and written as 4-byte words; wider arrays are allocated with `packed_padding` extra
// bytes, so each of their reads and writes is one 8-byte access.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace airl::detail {

inline constexpr std::size_t packed_padding = 7;

constexpr std::uint64_t packed_mask(unsigned width) noexcept {
  return width >= 8 ? ~std::uint64_t{0} : (std::uint64_t{1} << (8 * width)) - 1;
}

// The smallest width (4..8 bytes) that holds `value`.
constexpr unsigned packed_width_for(std::uint64_t value) noexcept {
  unsigned width = 4;
  while (width < 8 && value > packed_mask(width)) ++width;
  return width;
}

// The offset at index `i` of an array of `width`-byte offsets.
inline std::uint64_t load_packed(const unsigned char* data, unsigned width, std::size_t i) noexcept {
  const unsigned char* at = data + i * width;
  std::uint64_t value = 0;
  if (width == 4) {
    std::uint32_t word;
    std::memcpy(&word, at, 4);
    return word;
  }
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&value, at, 8);
    return value & packed_mask(width);
  } else {
    for (unsigned b = 0; b < width; ++b) value |= std::uint64_t{at[b]} << (8 * b);
    return value;
  }
}

// Writes `value` (which fits `width` bytes) at index `i`, leaving the neighbouring offsets as they were.
inline void store_packed(unsigned char* data, unsigned width, std::size_t i, std::uint64_t value) noexcept {
  unsigned char* at = data + i * width;
  if (width == 4) {
    const auto word = static_cast<std::uint32_t>(value);
    std::memcpy(at, &word, 4);
    return;
  }
  if constexpr (std::endian::native == std::endian::little) {
    std::uint64_t word;
    std::memcpy(&word, at, 8);
    word = (word & ~packed_mask(width)) | value;
    std::memcpy(at, &word, 8);
  } else {
    for (unsigned b = 0; b < width; ++b) at[b] = static_cast<unsigned char>(value >> (8 * b));
  }
}

}  // namespace airl::detail
