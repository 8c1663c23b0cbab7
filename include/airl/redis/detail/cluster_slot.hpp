// SPDX-License-Identifier: MIT
#pragma once
// The Redis Cluster slot of a key, as Redis computes it (cluster spec, "Keys distribution model"): CRC16
// (XMODEM: polynomial 0x1021, initial value 0, no reflection) of the key's hash tag, modulo 16384. The hash
// tag is what lies between the first '{' and the next '}' when that is not empty; otherwise the whole key.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace airl::detail {

inline constexpr std::size_t cluster_slots = 16384;

inline constexpr std::array<std::uint16_t, 256> crc16_table = [] {
  std::array<std::uint16_t, 256> table{};
  for (std::size_t byte = 0; byte < 256; ++byte) {
    auto crc = static_cast<std::uint16_t>(byte << 8);
    for (int bit = 0; bit < 8; ++bit) crc = static_cast<std::uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    table[byte] = crc;
  }
  return table;
}();

constexpr std::uint16_t crc16(std::string_view bytes) noexcept {
  std::uint16_t crc = 0;
  for (const char c : bytes) {
    crc = static_cast<std::uint16_t>((crc << 8) ^ crc16_table[((crc >> 8) ^ static_cast<unsigned char>(c)) & 0xFF]);
  }
  return crc;
}

// The part of `key` that decides its slot.
constexpr std::string_view hash_tag(std::string_view key) noexcept {
  const std::size_t open = key.find('{');
  if (open == std::string_view::npos) return key;
  const std::size_t close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

constexpr std::uint16_t cluster_slot(std::string_view key) noexcept {
  return static_cast<std::uint16_t>(crc16(hash_tag(key)) % cluster_slots);
}

static_assert(crc16("123456789") == 0x31C3);  // the cluster spec's check value

}  // namespace airl::detail
