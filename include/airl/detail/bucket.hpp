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

#include "bucket_key.hpp"
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
  bool names(const BucketRef& bucket) const noexcept { return key_matches(key(), bucket); }

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
    // key_start is the last member, so the key fits in sizeof(Bucket) - sizeof(key_start) + size bytes.
    void* memory = ::operator new(std::max(sizeof(Bucket), sizeof(Bucket) - sizeof(key_start) + size));
    Owner bucket(new (memory) Bucket{});
    bucket->key_size = static_cast<std::uint32_t>(size);
    write_key(bucket->key_start, name);
    return bucket;
  }

 private:
  const char* key_data() const noexcept { return key_start; }
};

}  // namespace airl::detail

