// SPDX-License-Identifier: MIT
#pragma once
// The hash that places a bucket in the in-memory store: one pass over the bucket's parts (scope, tier, and the
// user and/or model its scope uses), with each part's length mixed in so the parts cannot trade bytes.
//
// Written here rather than std::hash because it is inline (libstdc++'s string hash is an out-of-line call),
// hashes the parts directly (no encoded key is built per decision) and takes a seed: each store draws its own,
// so keys crafted to collide in one process do not collide in another. It is fast, not cryptographic.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "../storage_policy.hpp"

// Hot helpers that must be inlined into the decision (a call per id part costs more than the work).
#if defined(__GNUC__) || defined(__clang__)
#define AIRL_DETAIL_HOT_INLINE [[gnu::always_inline]] inline
#else
#define AIRL_DETAIL_HOT_INLINE inline
#endif

namespace airl::detail {

constexpr bool scope_has_user(Scope scope) noexcept { return scope == Scope::user || scope == Scope::user_model; }
constexpr bool scope_has_model(Scope scope) noexcept { return scope == Scope::model || scope == Scope::user_model; }

inline constexpr std::uint64_t hash_multiplier = 0x9E3779B97F4A7C15ull;

// The final avalanche (splitmix64's), so low bits (table slot) and high bits (shard) both depend on every input bit.
constexpr std::uint64_t finish_hash(std::uint64_t h) noexcept {
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

constexpr std::uint64_t mix_word(std::uint64_t h, std::uint64_t word) noexcept {
  h = (h ^ word) * hash_multiplier;
  return h ^ (h >> 29);
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

// The digest of one part, started from `lane` (the seed, varied per part) and its length, then its bytes.
// Reads are whole words, never a byte-sized copy into a word (that stalls store forwarding): a tail is read
// as the last 8 bytes, overlapping the previous word, and short parts as two overlapping 4-byte words or
// three single bytes, as wyhash does. Given the length, each reading covers every byte, so distinct parts of
// one length give distinct words. The parts of a bucket are digested independently, so the CPU works on
// them in parallel; only their combination is a serial chain.
AIRL_DETAIL_HOT_INLINE std::uint64_t hash_part(std::uint64_t lane, std::string_view part) noexcept {
  const char* bytes = part.data();
  const std::size_t size = part.size();
  std::uint64_t h = lane ^ (size * hash_multiplier);
  if (size >= 8) {
    std::size_t at = 0;
    for (; at + 8 <= size; at += 8) h = mix_word(h, load_u64(bytes + at));
    if (at != size) h = mix_word(h, load_u64(bytes + size - 8));
  } else if (size >= 4) {
    h = mix_word(h, (load_u32(bytes) << 32) | load_u32(bytes + size - 4));
  } else if (size != 0) {
    const auto byte = [bytes](std::size_t i) { return std::uint64_t{static_cast<unsigned char>(bytes[i])}; };
    h = mix_word(h, (byte(0) << 16) | (byte(size / 2) << 8) | byte(size - 1));
  } else {
    h = mix_word(h, 0);
  }
  return h;
}

// Whether a and b hold the same n bytes, with whole-word reads and no library call (ids are short).
AIRL_DETAIL_HOT_INLINE bool same_bytes(const char* a, const char* b, std::size_t n) noexcept {
  if (n >= 8) {
    for (std::size_t at = 0; at + 8 <= n; at += 8) {
      if (load_u64(a + at) != load_u64(b + at)) return false;
    }
    return load_u64(a + n - 8) == load_u64(b + n - 8);
  }
  if (n >= 4) return load_u32(a) == load_u32(b) && load_u32(a + n - 4) == load_u32(b + n - 4);
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// The hash of `bucket` under `seed`: equal buckets hash equal; only the parts the scope uses take part.
AIRL_DETAIL_HOT_INLINE std::uint64_t hash_bucket(std::uint64_t seed, const BucketRef& bucket) noexcept {
  const std::uint64_t tier = hash_part(seed ^ 0x243F6A8885A308D3ull, bucket.tier);
  const std::uint64_t user = scope_has_user(bucket.scope) ? hash_part(seed ^ 0x13198A2E03707344ull, bucket.user) : 0;
  const std::uint64_t model = scope_has_model(bucket.scope) ? hash_part(seed ^ 0xA4093822299F31D0ull, bucket.model) : 0;
  std::uint64_t h = mix_word(seed, static_cast<std::uint64_t>(bucket.scope) + 1);
  h = mix_word(h, tier);
  h = mix_word(h, user);
  h = mix_word(h, model);
  return finish_hash(h);
}

// Two references name the same bucket: same scope and tier, and the same ids where the scope uses them.
inline bool same_bucket(const BucketRef& a, const BucketRef& b) noexcept {
  return a.scope == b.scope && a.tier == b.tier && (!scope_has_user(a.scope) || a.user == b.user) &&
         (!scope_has_model(a.scope) || a.model == b.model);
}

}  // namespace airl::detail
