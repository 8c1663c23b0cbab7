// SPDX-License-Identifier: MIT
#pragma once
// airl's string hash: seeded, inline, one multiply per 16 bytes (wyhash's mixing step). The in-memory store
// places keys with it (memory/bucket_key.hpp hashes a bucket's parts directly, no key string built), and the
// limiters' string maps use it (transparent_hash.hpp). Written here rather than std::hash because it is
// inline (libstdc++'s string hash is an out-of-line call) and takes a seed: each store draws its own, so keys
// crafted to collide in one process do not collide in another. It is fast, not cryptographic.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "inlining.hpp"

namespace airl::detail {

inline constexpr std::uint64_t hash_multiplier = 0x9E3779B97F4A7C15ull;

// splitmix64's avalanche: mixes the store's seed.
constexpr std::uint64_t finish_hash(std::uint64_t h) noexcept {
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

inline std::uint64_t load_u64(const char* at) noexcept {
  std::uint64_t word;
  std::memcpy(&word, at, 8);
  return word;
}
inline std::uint64_t load_u32(const char* at) noexcept {
  std::uint32_t word;
  std::memcpy(&word, at, 4);
  return word;
}

// The full 128-bit product of a and b, folded to 64 bits: the mixing step of wyhash. One multiply mixes two
// words, and every input bit reaches both halves of the result.
AIRL_DETAIL_HOT_INLINE std::uint64_t multiply_fold(std::uint64_t a, std::uint64_t b) noexcept {
#if defined(__SIZEOF_INT128__)
  __extension__ using u128 = unsigned __int128;
  const u128 product = static_cast<u128>(a) * b;
  return static_cast<std::uint64_t>(product) ^ static_cast<std::uint64_t>(product >> 64);
#else
  const std::uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32, b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
  const std::uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
  const std::uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFu) + lo_hi;
  const std::uint64_t low = (cross << 32) | (lo_lo & 0xFFFFFFFFu);
  const std::uint64_t high = hi_hi + (hi_lo >> 32) + (cross >> 32);
  return low ^ high;
#endif
}

inline constexpr std::uint64_t hash_secret_a = 0xA0761D6478BD642Full;  // wyhash's constants: odd, balanced bits
inline constexpr std::uint64_t hash_secret_b = 0xE7037ED1A0B428DBull;

// Up to 16 bytes read as two words that cover every byte: two overlapping 8- or 4-byte words, or for 1 to 3
// bytes three single bytes in one word, as wyhash reads them (never a byte-sized copy into a word, which
// stalls store forwarding). Given the length, the words cover every byte. Requires n <= 16.
struct TwoWords {
  std::uint64_t a = 0, b = 0;
};
AIRL_DETAIL_HOT_INLINE TwoWords read_short(const char* bytes, std::size_t n) noexcept {
  if (n >= 8) return {load_u64(bytes), load_u64(bytes + n - 8)};
  if (n >= 4) return {load_u32(bytes), load_u32(bytes + n - 4)};
  if (n == 0) return {};
  const auto byte = [bytes](std::size_t i) { return std::uint64_t{static_cast<unsigned char>(bytes[i])}; };
  return {(byte(0) << 16) | (byte(n / 2) << 8) | byte(n - 1), 0};
}

// The digest of one part under `lane` (the seed, varied per part). Parts of up to 16 bytes, nearly every id,
// take one multiply of their two words (read_short); longer parts fold 16 bytes per multiply first.
AIRL_DETAIL_HOT_INLINE std::uint64_t hash_part(std::uint64_t lane, std::string_view part) noexcept {
  const char* bytes = part.data();
  const std::size_t size = part.size();
  TwoWords words;
  if (size <= 16) [[likely]] {
    words = read_short(bytes, size);
  } else {
    std::size_t at = 0;
    for (; size - at > 16; at += 16) {
      lane = multiply_fold(load_u64(bytes + at) ^ lane ^ hash_secret_a, load_u64(bytes + at + 8) ^ lane);
    }
    words = read_short(bytes + at, size - at);  // the last 1 to 16 bytes
  }
  // The seeded lane enters both operands: with it in one only, a part whose first word equals the public
  // secret would make the product 0 for every seed, and such parts would collide in every process.
  return multiply_fold(words.a ^ lane ^ hash_secret_a, words.b ^ lane ^ hash_secret_b ^ size);
}

// Whether a and b hold the same n bytes, with whole-word reads and no library call (ids are short). It reads
// what read_short() reads, but XORs the words of both sides as it loads them: building the two words first
// and comparing them costs about 10 more instructions per part on every lookup (measured with callgrind).
AIRL_DETAIL_HOT_INLINE bool same_bytes(const char* a, const char* b, std::size_t n) noexcept {
  if (n >= 8) {
    std::size_t at = 0;
    for (; n - at > 16; at += 8) {
      if (load_u64(a + at) != load_u64(b + at)) return false;
    }
    return ((load_u64(a + at) ^ load_u64(b + at)) | (load_u64(a + n - 8) ^ load_u64(b + n - 8))) == 0;
  }
  if (n >= 4) return ((load_u32(a) ^ load_u32(b)) | (load_u32(a + n - 4) ^ load_u32(b + n - 4))) == 0;
  if (n == 0) return true;
  const auto differ = [a, b](std::size_t i) { return static_cast<unsigned char>(a[i] ^ b[i]); };
  return (differ(0) | differ(n / 2) | differ(n - 1)) == 0;
}

}  // namespace airl::detail
