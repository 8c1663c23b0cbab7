// SPDX-License-Identifier: MIT
#pragma once
// The entries of one window log, oldest first, laid out for memory (a store holds millions of these). It
// knows times and costs, not the rules: window_log.hpp decides with it.
//   - a ring buffer that grows by about 1.5x (4, 7, 11, 17, ...) and shrinks to twice its live entries when a
//     quarter full, so memory follows live entries;
//   - the oldest and newest times sit beside the ring, so the common checks (does anything expire? when does a
//     full bucket free its next unit? when does it empty?) do not read the ring at all;
//   - stored times are offsets from an origin at or before the oldest entry, packed in the fewest bytes the
//     live span needs when the ring is (re)built (packed_offsets.hpp: 4 bytes up to 2^32 units, 4.29 s in
//     nanoseconds; 5 bytes 18 minutes; up to 8); the origin moves up to the oldest entry when the newest
//     would not fit, and the width grows only when that is not enough;
//   - until a cost above 1 arrives, costs are not stored at all: usage is the entry count and the k-th oldest
//     entry is the one that frees k units; a ring that empties starts so again;
//   - the first cost above 1 adds running totals (cost up to and including each entry) in the same allocation
//     as the times, so usage stays one subtraction and the time that frees a given cost a binary search;
//   - a weighted ring also keeps its usage and its oldest entry's cost beside it (one word, when they fit in
//     40 and 23 bits), so a denial on a full weighted bucket reads no ring memory at all.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <utility>

#include "../inlining.hpp"
#include "../prefetch.hpp"
#include "packed_offsets.hpp"

namespace airl::detail {

class PackedRing {
 public:
  // The most entries one ring holds.
  static constexpr std::uint32_t max_entries = (std::uint32_t{1} << 28) - 1;

  PackedRing() = default;
  PackedRing(PackedRing&& other) noexcept { take(other); }
  PackedRing& operator=(PackedRing&& other) noexcept {
    if (this != &other) {
      delete[] block_;
      take(other);
    }
    return *this;
  }
  PackedRing(const PackedRing&) = delete;
  PackedRing& operator=(const PackedRing&) = delete;
  ~PackedRing() { delete[] block_; }

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::size_t capacity() const noexcept { return cap(); }
  unsigned time_width() const noexcept { return width(); }
  bool weighted() const noexcept { return (shape_ & weighted_bit) != 0; }
  // Times of the oldest and newest entry; require !empty().
  std::int64_t oldest_time() const noexcept { return oldest_; }
  std::int64_t newest_time() const noexcept { return newest_; }
  std::int64_t time_at(std::size_t i) const noexcept { return origin_time() + offset_at(i); }

  // The sum of the entries' costs. Throws nothing.
  AIRL_DETAIL_HOT_INLINE std::uint64_t usage() const noexcept {
    if (!weighted()) return size_;
    if ((side_ & cache_valid) != 0) return side_ & cached_usage_mask;
    return size_ == 0 ? 0 : newest_total() - base();
  }
  // The cost of the i-th oldest entry. Throws nothing.
  std::uint64_t cost_at(std::size_t i) const noexcept {
    if (!weighted()) return 1;
    return total_at(i) - (i == 0 ? base() : total_at(i - 1));
  }

  // Time of the oldest entry whose expiry frees at least `need` units (1 <= need <= usage()). Throws nothing.
  AIRL_DETAIL_HOT_INLINE std::int64_t first_time_freeing(std::uint64_t need) const noexcept {
    if (!weighted()) return need == 1 ? oldest_ : time_at(static_cast<std::size_t>(need - 1));  // the need-th oldest
    // A flood of denials usually waits for the oldest entry: decided from the packed cache, no ring read.
    if ((side_ & cache_valid) != 0 && ((side_ >> 40) & cached_cost_mask) >= need) return oldest_;
    const std::uint64_t from = base();
    if (oldest_total() - from >= need) return oldest_;
    std::size_t lo = 1, hi = size_ - 1;
    while (lo < hi) {
      const std::size_t mid = lo + (hi - lo) / 2;
      if (total_at(mid) - from >= need) hi = mid; else lo = mid + 1;
    }
    return time_at(lo);
  }

  // Starts loading the oldest and newest entries (what a decision reads and an admission writes) together, so
  // their cache misses overlap. The newest entry's lines are asked for with write intent. Throws nothing.
  void prefetch() const noexcept {
    if (size_ == 0) return;
    const std::size_t oldest = head_, newest = wrap(std::size_t{head_} + size_ - 1);
    detail::prefetch(times() + oldest * width());
    detail::prefetch_for_write(times() + newest * width());
    if (weighted()) detail::prefetch_for_write(block_ + total_offset(newest));
  }

  // Drops the entries with time <= cutoff; returns how many. Throws nothing.
  std::size_t drop_through(std::int64_t cutoff) noexcept {
    const std::int64_t origin = origin_time();
    std::size_t dropped = 0;
    while (size_ != 0 && offset_at(0) + origin <= cutoff) {
      if (weighted()) store_word(block_, total_in_slot(head_));  // the new base
      head_ = static_cast<std::uint32_t>(wrap(std::size_t{head_} + 1));
      --size_;
      ++dropped;
    }
    if (size_ != 0) {
      oldest_ = origin + offset_at(0);
      if (weighted()) store_word(block_ + oldest_total_offset, total_in_slot(head_));
    } else {
      shape_ = make_shape(cap(), width(), false);  // an empty ring counts unit costs again
      head_ = 0;
    }
    note_head_offset();
    refresh_cache();
    maybe_shrink();
    return dropped;
  }

  // Appends an entry at `time` (not earlier than the newest entry's) costing `cost`. Everything that can throw
  // happens first, including before_commit() (the caller's own preparations, such as indexing a request id):
  // strong guarantee, throws std::bad_alloc, std::length_error past max_entries, or what before_commit
  // throws, and changes nothing then.
  template <class BeforeCommit>
  void push(std::int64_t time, std::uint64_t cost, BeforeCommit&& before_commit) {
    const bool weighted_next = weighted() || cost != 1;
    std::int64_t origin = size_ == 0 ? time : origin_time();
    const auto from_oldest = static_cast<std::uint64_t>(size_ == 0 ? 0 : time - oldest_);
    const bool past_origin = static_cast<std::uint64_t>(time - origin) > packed_mask(width());
    const bool widen = past_origin && from_oldest > packed_mask(width());
    const bool grow = size_ == cap();
    Block block;
    if (grow || widen || weighted_next != weighted()) [[unlikely]] {
      block = allocate(grow ? next_capacity(cap()) : cap(), packed_width_for(from_oldest), weighted_next);
    }
    before_commit();

    // From here on nothing throws.
    if (block.bytes) [[unlikely]] {
      origin = adopt(std::move(block));
    } else if (past_origin) [[unlikely]] {
      origin = move_origin_to_oldest(origin);
    }
    if (size_ == 0) {
      origin = time;
      oldest_ = time;
      head_offset_ = 0;
    }
    const std::size_t slot = wrap(std::size_t{head_} + size_);
    store_packed(times(), width(), slot, static_cast<std::uint64_t>(time - origin));
    newest_ = time;
    if (!weighted()) {
      ++size_;
      return;
    }
    // The new running total comes from the newest entry's slot, usually on the cache line being written anyway
    // (7 slots in 8); the ring's header is written only for the first entry.
    const std::uint64_t total = (size_ == 0 ? base() : newest_total()) + cost;
    store_total(slot, total);
    if (size_ == 0) store_word(block_ + oldest_total_offset, total);
    const bool cached = size_ != 0 && (side_ & cache_valid) != 0;
    ++size_;
    if (cached && cost <= cached_usage_mask - (side_ & cached_usage_mask)) {
      side_ += cost;  // usage grows by the cost; the oldest entry, and so its cost, stays
    } else {
      refresh_cache();
    }
  }

  // Takes back the newest entry. Requires !empty(). Throws nothing.
  void pop_newest() noexcept {
    if (size_ > 1) newest_ = origin_time() + offset_at(size_ - 2);
    --size_;
    refresh_cache();
  }

  // Makes costs storable (running totals, entry i costing 1 so far). Strong guarantee: throws std::bad_alloc.
  void make_weighted() {
    if (weighted()) return;
    const auto span = static_cast<std::uint64_t>(size_ == 0 ? 0 : newest_ - oldest_);
    adopt(allocate(cap(), packed_width_for(span), true));
  }

  // Replaces the cost of the i-th oldest entry; the costs after it shift by the difference: O(newer entries).
  // Requires weighted(). Throws nothing.
  void set_cost(std::size_t i, std::uint64_t cost) noexcept {
    const std::uint64_t delta = cost - cost_at(i);  // modular, like the totals themselves
    for (std::size_t k = i; k < size_; ++k) store_total(wrap(head_ + k), total_at(k) + delta);
    if (i == 0) store_word(block_ + oldest_total_offset, total_at(0));
    refresh_cache();
  }

 private:
  // A new allocation for the ring, made before anything changes (push and make_weighted keep the strong
  // guarantee).
  struct Block {
    std::unique_ptr<unsigned char[]> bytes;
    std::uint32_t capacity = 0;
    unsigned width = 4;
    bool weighted = false;
  };

  // One allocation holds the ring. Weighted: [base][oldest total][running totals: cap x 8 bytes][times]; else
  // [times]. Times are cap offsets of `width` bytes (plus packed_padding when wider than 4). A running total
  // is the sum of costs up to and including its entry (it wraps harmlessly); base is the total before the
  // oldest. The oldest total is a copy kept next to the base, so the oldest entry's cost reads one cache line.
  // The newest total is not copied there: an admission reads it from the slot beside the one it writes.
  static constexpr std::size_t oldest_total_offset = 8, totals_header = 16;

  // shape_ packs the capacity (bits 0-27), the offsets' width - 4 (bits 28-30) and `weighted` (bit 31).
  static constexpr std::uint32_t weighted_bit = std::uint32_t{1} << 31;
  static constexpr std::uint32_t make_shape(std::uint32_t capacity, unsigned width, bool weighted) noexcept {
    return capacity | (std::uint32_t{width - 4} << 28) | (weighted ? weighted_bit : 0);
  }
  std::uint32_t cap() const noexcept { return shape_ & max_entries; }
  unsigned width() const noexcept { return ((shape_ >> 28) & 7u) + 4; }

  // side_ of a weighted ring: usage in bits 0-39, the oldest entry's cost in bits 40-62, bit 63 set when both
  // fit (else the ring is read instead). Unused (0) for a unit-cost ring.
  static constexpr std::uint64_t cache_valid = std::uint64_t{1} << 63;
  static constexpr std::uint64_t cached_usage_mask = (std::uint64_t{1} << 40) - 1;
  static constexpr std::uint64_t cached_cost_mask = (std::uint64_t{1} << 23) - 1;

  void refresh_cache() noexcept {
    if (!weighted()) {
      side_ = 0;
      return;
    }
    const std::uint64_t used = size_ == 0 ? 0 : newest_total() - base();
    const std::uint64_t oldest_cost = size_ == 0 ? 0 : oldest_total() - base();
    side_ = used <= cached_usage_mask && oldest_cost <= cached_cost_mask ? cache_valid | used | (oldest_cost << 40) : 0;
  }
  static constexpr std::size_t totals_bytes(std::uint32_t capacity, bool weighted) noexcept {
    return weighted ? totals_header + std::size_t{capacity} * 8 : 0;
  }
  static constexpr std::size_t total_offset(std::size_t slot) noexcept { return totals_header + slot * 8; }
  unsigned char* times() const noexcept { return block_ + totals_bytes(cap(), weighted()); }
  std::uint64_t base() const noexcept { return load_word(block_); }
  std::uint64_t newest_total() const noexcept { return total_at(size_ - 1); }  // requires !empty()
  std::uint64_t oldest_total() const noexcept { return load_word(block_ + oldest_total_offset); }
  std::uint64_t total_in_slot(std::size_t slot) const noexcept { return load_word(block_ + total_offset(slot)); }
  std::uint64_t total_at(std::size_t i) const noexcept { return total_in_slot(wrap(head_ + i)); }
  void store_total(std::size_t slot, std::uint64_t total) noexcept { store_word(block_ + total_offset(slot), total); }
  static std::uint64_t load_word(const unsigned char* at) noexcept {
    std::uint64_t word;
    std::memcpy(&word, at, 8);
    return word;
  }
  static void store_word(unsigned char* at, std::uint64_t word) noexcept { std::memcpy(at, &word, 8); }

  // Ring slot of the i-th oldest entry (index < 2 * capacity).
  std::size_t wrap(std::size_t index) const noexcept { return index >= cap() ? index - cap() : index; }
  // The stored offset of the i-th oldest entry; its time is origin_time() + offset.
  std::int64_t offset_at(std::size_t i) const noexcept {
    return static_cast<std::int64_t>(load_packed(times(), width(), wrap(head_ + i)));
  }
  // The time offsets count from: the oldest entry's time less its offset (kept beside the ring for 4-byte
  // offsets, so an admission need not read the oldest entry). Requires !empty().
  std::int64_t origin_time() const noexcept { return oldest_ - (width() == 4 ? std::int64_t{head_offset_} : offset_at(0)); }
  void note_head_offset() noexcept { head_offset_ = width() == 4 && size_ != 0 ? static_cast<std::uint32_t>(offset_at(0)) : 0; }

  static std::uint32_t next_capacity(std::uint32_t capacity) {
    if (capacity >= max_entries) throw std::length_error("airl: a bucket holds 2^28 - 1 live entries");
    if (capacity < 4) return 4;  // a first ring of 4 saves a regrowth for the many keys with a few entries
    return capacity > max_entries / 3 * 2 ? max_entries : capacity + capacity / 2 + 1;
  }

  static Block allocate(std::uint32_t capacity, unsigned width, bool weighted) {
    Block block;
    block.capacity = capacity;
    block.width = width;
    block.weighted = weighted;
    // 4-byte offsets are read as 4-byte words; wider ones as 8-byte words that may run past the last.
    const std::size_t times = std::size_t{capacity} * width + (width == 4 ? 0 : packed_padding);
    block.bytes = std::make_unique_for_overwrite<unsigned char[]>(totals_bytes(capacity, weighted) + times);
    return block;
  }

  // Moves the live entries into `block` (oldest at slot 0, offsets counted from it), which must be wide
  // enough; totals are copied, or synthesised (entry i: i + 1) for a ring that held unit costs. Returns the
  // new origin (the oldest time).
  AIRL_DETAIL_COLD std::int64_t adopt(Block block) noexcept {
    const std::int64_t origin = size_ == 0 ? 0 : origin_time();
    const std::int64_t first = size_ == 0 ? 0 : offset_at(0);
    unsigned char* times = block.bytes.get() + totals_bytes(block.capacity, block.weighted);
    for (std::size_t i = 0; i < size_; ++i) {
      store_packed(times, block.width, i, static_cast<std::uint64_t>(offset_at(i) - first));
    }
    if (block.weighted) {
      store_word(block.bytes.get(), weighted() ? base() : 0);
      for (std::size_t i = 0; i < size_; ++i) {
        store_word(block.bytes.get() + total_offset(i), weighted() ? total_at(i) : i + 1);
      }
      const std::uint64_t oldest = size_ == 0 ? 0 : (weighted() ? oldest_total() : 1);
      store_word(block.bytes.get() + oldest_total_offset, oldest);
    }
    delete[] block_;
    block_ = block.bytes.release();
    shape_ = make_shape(block.capacity, block.width, block.weighted);
    head_ = 0;
    head_offset_ = 0;
    refresh_cache();
    return origin + first;
  }

  // Re-expresses the offsets from the oldest entry, so a newer time fits the width again. Returns the new origin.
  AIRL_DETAIL_COLD std::int64_t move_origin_to_oldest(std::int64_t origin) noexcept {
    const std::int64_t first = offset_at(0);
    for (std::size_t i = 0; i < size_; ++i) {
      store_packed(times(), width(), wrap(head_ + i), static_cast<std::uint64_t>(offset_at(i) - first));
    }
    head_offset_ = 0;
    return origin + first;
  }

  // Shrinks the ring to twice its live entries once it is at most a quarter full. Best effort.
  void maybe_shrink() noexcept {
    if (cap() <= 8 || size_ > cap() / 4) return;
    try {
      const auto span = static_cast<std::uint64_t>(size_ == 0 ? 0 : newest_ - oldest_);
      adopt(allocate(std::max<std::uint32_t>(size_ * 2, 4), packed_width_for(span), weighted()));
    } catch (const std::bad_alloc&) {
    }
  }

  void take(PackedRing& other) noexcept {
    block_ = std::exchange(other.block_, nullptr);
    side_ = std::exchange(other.side_, 0);
    oldest_ = std::exchange(other.oldest_, 0);
    newest_ = std::exchange(other.newest_, 0);
    head_ = std::exchange(other.head_, 0);
    size_ = std::exchange(other.size_, 0);
    shape_ = std::exchange(other.shape_, make_shape(0, 4, false));
    head_offset_ = std::exchange(other.head_offset_, 0);
  }

  unsigned char* block_ = nullptr;  // the ring (see above)
  std::uint64_t side_ = 0;          // a weighted ring's packed usage and oldest cost
  std::int64_t oldest_ = 0;         // time of the oldest entry, when any
  std::int64_t newest_ = 0;         // time of the newest entry, when any
  std::uint32_t head_ = 0;
  std::uint32_t size_ = 0;
  std::uint32_t shape_ = make_shape(0, 4, false);
  std::uint32_t head_offset_ = 0;   // the oldest entry's stored offset, while offsets are 4 bytes
};

}  // namespace airl::detail
