// SPDX-License-Identifier: MIT
#pragma once
// Random bits from the operating system, for ids that must not repeat across processes (permit ids, the Redis
// storage's generated members). getrandom() on Linux: no <random> in every translation unit.

#include <cstddef>
#include <cstdint>
#include <stdexcept>

#if defined(__linux__) && __has_include(<sys/random.h>)
#include <sys/random.h>
#define AIRL_HAS_GETRANDOM 1
#else
#include <random>
#define AIRL_HAS_GETRANDOM 0
#endif

namespace airl::detail {

// 64 bits from the operating system's random source (getrandom on Linux; std::random_device elsewhere).
// Throws std::runtime_error when the source cannot be read.
inline std::uint64_t random_bits() {
  std::uint64_t bits = 0;
#if AIRL_HAS_GETRANDOM
  auto* at = reinterpret_cast<unsigned char*>(&bits);
  std::size_t got = 0;
  while (got < sizeof bits) {
    const ssize_t n = ::getrandom(at + got, sizeof bits - got, 0);
    if (n < 0) throw std::runtime_error("airl: getrandom() failed: no random bits for permit ids");
    got += static_cast<std::size_t>(n);
  }
#else
  std::random_device device;
  bits = (std::uint64_t{device()} << 32) ^ device();
#endif
  return bits;
}

}  // namespace airl::detail
