// SPDX-License-Identifier: MIT
#pragma once
// One bucket of the in-memory store in one allocation: its window log, its place on its shard's expiry list,
// and its key bytes right after the header fields (so a lookup compares keys without another pointer to follow).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string_view>
#include <type_traits>

#include "bucket_key.hpp"
#include "inlining.hpp"
#include "window_log.hpp"

namespace airl::detail {

struct Bucket {
  static constexpr std::uint16_t unlisted = 0xFFFF;

  Bucket* newer = nullptr;  // neighbours on the expiry list of its window (ordered by last admission)
  Bucket* older = nullptr;
  WindowLog log;
  std::uint32_t key_size = 0;
  std::uint16_t list = unlisted;  // index of that list in the shard; `unlisted` until the first admission
  char key_start[2];              // the key's first bytes: it continues past the end of the struct

  bool listed() const noexcept { return list != unlisted; }
  std::string_view key() const noexcept { return {key_data(), key_size}; }
  BucketRef ref() const noexcept { return *decode_bucket_key(key()); }
  AIRL_DETAIL_HOT_INLINE bool names(const BucketRef& bucket) const noexcept { return key_matches(key(), bucket); }

  struct Deleter {
    void operator()(Bucket* bucket) const noexcept {
      bucket->~Bucket();
      ::operator delete(static_cast<void*>(bucket));
    }
  };
  using Owner = std::unique_ptr<Bucket, Deleter>;

  // A new, empty bucket named `name`, header and key in one allocation. Throws std::bad_alloc.
  static Owner make(const BucketRef& name) {
    const std::size_t size = detail::key_size(name);
    void* memory = ::operator new(std::max(sizeof(Bucket), key_offset() + std::max(size, min_key_bytes)));
    Owner bucket(new (memory) Bucket{});
    bucket->key_size = static_cast<std::uint32_t>(size);
    write_key(static_cast<char*>(memory) + key_offset(), name);
    return bucket;
  }

 private:
  // The key starts at key_start (using the struct's tail padding) and runs on into the rest of the allocation,
  // so it is addressed through the allocation's bytes rather than through the 2-byte member array.
  static constexpr std::size_t key_offset() noexcept { return offsetof(Bucket, key_start); }
  const char* key_data() const noexcept { return reinterpret_cast<const char*>(this) + key_offset(); }
};

static_assert(std::is_standard_layout_v<Bucket>, "airl: Bucket addresses its key with offsetof");

}  // namespace airl::detail

