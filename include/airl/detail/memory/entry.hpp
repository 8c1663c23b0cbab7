// SPDX-License-Identifier: MIT
#pragma once
// One key of the in-memory store in one allocation: its state (a window log, or a lease set), its place on
// its shard's expiry list, and its key bytes right after the header fields, so a lookup compares keys without
// another pointer to follow.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string_view>

#include "../inlining.hpp"
#include "bucket_key.hpp"

namespace airl::detail {

template <class State>
struct Entry {
  static constexpr std::uint16_t unlisted = 0xFFFF;

  Entry* newer = nullptr;  // neighbours on the expiry list of its window (ordered by last admission)
  Entry* older = nullptr;
  State state;
  std::uint32_t key_size = 0;
  std::uint16_t list = unlisted;  // index of that list in the shard; `unlisted` until first touched
  // The key's bytes follow the struct in the same allocation.

  bool listed() const noexcept { return list != unlisted; }
  std::string_view key() const noexcept { return {key_data(), key_size}; }
  BucketRef ref() const noexcept { return *decode_bucket_key(key()); }
  AIRL_DETAIL_HOT_INLINE bool names(const BucketRef& bucket) const noexcept { return key_matches(key(), bucket); }

  struct Deleter {
    void operator()(Entry* entry) const noexcept {
      entry->~Entry();
      ::operator delete(static_cast<void*>(entry));
    }
  };
  using Owner = std::unique_ptr<Entry, Deleter>;

  // A new entry with an empty state named `name`, header and key in one allocation. Throws std::bad_alloc.
  static Owner make(const BucketRef& name) {
    const std::size_t size = detail::key_size(name);
    void* memory = ::operator new(sizeof(Entry) + std::max(size, min_key_bytes));
    Owner entry(new (memory) Entry{});
    entry->key_size = static_cast<std::uint32_t>(size);
    write_key(static_cast<char*>(memory) + sizeof(Entry), name);
    return entry;
  }

 private:
  const char* key_data() const noexcept { return reinterpret_cast<const char*>(this) + sizeof(Entry); }
};

}  // namespace airl::detail
