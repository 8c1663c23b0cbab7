// SPDX-License-Identifier: MIT
#pragma once
// The sliding window log of one bucket: a pure data structure, no locks, no I/O, no clock. Times are plain
// integers in whatever unit the caller uses (the in-memory store passes the clock's nanoseconds).
//
// Entries are kept oldest first in a ring buffer, one per admitted request whatever its cost. The layout is
// chosen for memory, because a store holds millions of these:
//   - the oldest and newest times sit beside the ring, so the common checks (does anything expire? when does a
//     full bucket free its next unit? when does it empty?) do not read the ring at all;
//   - stored times are offsets from an origin at or before the oldest entry, packed in the fewest bytes the
//     live span needs when the ring is (re)built (4 bytes up to 2^32 units: 4.29 s in nanoseconds; 5 bytes 18 minutes; up to 8); the origin
//     moves up to the oldest entry when the newest would not fit, and the width grows only when that is not enough;
//   - until a cost above 1 arrives (requests per window), costs are not stored at all: usage is the entry
//     count and the k-th oldest entry is the one that frees k units; a log that empties starts so again;
//   - the first cost above 1 adds running totals (cost up to and including each entry) in the same allocation
//     as the times, so usage stays one subtraction and the exact retry time a binary search, independent of
//     the cost, without another pointer to follow;
//   - a weighted log also keeps its usage and its oldest entry's cost in the log itself (packed into one word,
//     when they fit in 40 and 23 bits), so a denial on a full weighted bucket, the common case under a flood of
//     token requests, reads no ring memory at all;
//   - request ids live in a side index allocated only for logs that see ids (its address sits in the log for
//     unit-cost logs and in the ring's header for weighted ones).
// An entry admitted at t counts while now < t + window.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "inlining.hpp"
#include "key_hash.hpp"
#include "packed_offsets.hpp"
#include "prefetch.hpp"
#include "transparent_hash.hpp"

namespace airl::detail {

// A duration that never ends ("never admissible").
inline constexpr std::int64_t never_ticks = std::numeric_limits<std::int64_t>::max();

// What one bucket says about one charge. Durations are in the log's time unit; never_ticks means "never".
struct WindowVerdict {
  bool fits = false;
  std::uint64_t remaining = 0;    // units admissible after this decision (charge included when it fits)
  std::int64_t retry_after = 0;   // 0 when it fits; else the wait until enough old entries expire
  std::int64_t reset_after = 0;   // until the window holds nothing, after this decision
};

class WindowLog {
 public:
  WindowLog() = default;
  // A moved-from log is empty and reusable.
  WindowLog(WindowLog&& other) noexcept { take(other); }
  WindowLog& operator=(WindowLog&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }
  WindowLog(const WindowLog&) = delete;
  WindowLog& operator=(const WindowLog&) = delete;
  ~WindowLog() { release(); }

  // Drops the entries that stopped counting (admitted at t with t + window <= now). Returns how many.
  AIRL_DETAIL_HOT_INLINE std::size_t expire(std::int64_t now, std::int64_t window) noexcept {
    if (size_ == 0 || oldest_ > now - window) return 0;  // the common case, decided without reading the ring
    return drop_expired(now, window);
  }

  // Cost units counting now (call expire() first). Throws nothing.
  std::uint64_t usage() const noexcept {
    if (!weighted()) return size_;
    if ((side_ & cache_valid) != 0) return side_ & cached_usage_mask;
    return size_ == 0 ? 0 : newest_total() - base();
  }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  // Admission time of the oldest and of the newest entry; require !empty(). Kept beside the ring, so a
  // denial or an expiry check does not have to read it.
  std::int64_t oldest_time() const noexcept { return oldest_; }
  std::int64_t newest_time() const noexcept { return newest_; }
  // Entries the ring holds before it grows.
  std::size_t capacity() const noexcept { return cap(); }
  // Bytes per stored time (4..8): what the span of the live entries needs.
  unsigned time_width() const noexcept { return width(); }
  // Whether costs are stored (some entry since the log last emptied cost more than 1).
  bool weighted() const noexcept { return (shape_ & weighted_bit) != 0; }

  // Starts loading the oldest and newest entries (what a decision reads and an admission writes) together, so
  // their cache misses overlap instead of following each other. The newest entry's lines are asked for with
  // write intent (where the target can): an admission writes next to them. Throws nothing.
  void prefetch() const noexcept {
    if (size_ == 0) return;
    const std::size_t oldest = head_, newest = wrap(std::size_t{head_} + size_ - 1);
    detail::prefetch(times() + oldest * width());
    detail::prefetch_for_write(times() + newest * width());
    if (weighted()) detail::prefetch_for_write(block_ + total_offset(newest));  // read and written by an admission
  }

  // Whether `id` was admitted and still counts (call expire() first).
  bool holds_id(std::string_view id) const noexcept {
    const IdIndex* ids = id_index();
    if (ids == nullptr || id.empty()) return false;
    const auto found = ids->seq_by_id.find(id);
    return found != ids->seq_by_id.end() && found->second >= ids->first_seq;
  }

  // Would a charge of `cost` fit under `limit` now? Pure; call expire() first.
  AIRL_DETAIL_HOT_INLINE WindowVerdict check(std::int64_t now, std::int64_t window, std::uint64_t limit,
                                             std::uint64_t cost) const noexcept {
    const std::uint64_t used = usage();
    const std::uint64_t room = used >= limit ? 0 : limit - used;
    WindowVerdict verdict;
    if (cost <= room) {
      verdict.fits = true;
      verdict.remaining = room - cost;
      verdict.reset_after = window;  // the new entry is the newest
      return verdict;
    }
    verdict.remaining = room;
    verdict.reset_after = size_ == 0 ? 0 : newest_ + window - now;
    if (cost > limit) {
      verdict.retry_after = never_ticks;
      return verdict;
    }
    // Units that must expire: used + cost - limit, computed without overflow (cost <= limit here).
    const std::uint64_t need = cost - (limit - std::min(used, limit)) + (used > limit ? used - limit : 0);
    verdict.retry_after = first_time_freeing(need) + window - now;
    return verdict;
  }

  // What the bucket holds now, for a replayed request: nothing charged.
  WindowVerdict peek(std::int64_t now, std::int64_t window, std::uint64_t limit) const noexcept {
    WindowVerdict verdict = check(now, window, limit, 0);
    verdict.reset_after = size_ == 0 ? 0 : newest_ + window - now;
    return verdict;
  }

  // Appends an entry at `now` (never earlier than the newest entry, so the log stays sorted).
  // Strong guarantee: throws std::bad_alloc (or std::length_error past max_entries) and changes nothing.
  void record(std::int64_t now, std::uint64_t cost, std::string_view id) {
    const std::int64_t time = size_ == 0 ? now : std::max(now, newest_);
    const bool weighted_next = weighted() || cost != 1;
    const std::int64_t origin = size_ == 0 ? time : origin_time();
    const auto from_oldest = static_cast<std::uint64_t>(size_ == 0 ? 0 : time - oldest_);
    const bool past_origin = static_cast<std::uint64_t>(time - origin) > packed_mask(width());
    const bool widen = past_origin && from_oldest > packed_mask(width());
    const bool grow = size_ == cap();

    // Everything that can throw happens first, into owners that free it on the way out.
    Block block;
    if (grow || widen || weighted_next != weighted()) {
      block = allocate(grow ? next_capacity(cap()) : cap(), packed_width_for(from_oldest), weighted_next);
    }
    std::unique_ptr<IdIndex> new_ids;
    if (!id.empty()) {
      IdIndex* ids = id_index();
      if (ids == nullptr) new_ids = std::make_unique<IdIndex>();
      remember_id(ids != nullptr ? *ids : *new_ids, id, size_);
    }

    // From here on nothing throws.
    if (new_ids) set_id_index(new_ids.release());
    std::int64_t new_origin = origin;
    if (block.bytes) {
      new_origin = adopt(std::move(block));
    } else if (past_origin) {
      new_origin = move_origin_to_oldest(origin);
    }
    if (size_ == 0) {
      new_origin = time;
      oldest_ = time;
      head_offset_ = 0;
    }
    const std::size_t slot = wrap(std::size_t{head_} + size_);
    store_packed(times(), width(), slot, static_cast<std::uint64_t>(time - new_origin));
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

  // Replaces the cost of the live entry admitted with `id` by `cost` (0 allowed: a full refund), keeping its
  // time; call expire() first. Returns false when no live entry has that id. Costs after it shift by the
  // difference: O(entries newer than it). A unit-cost log becomes weighted when the cost is not 1.
  // Strong guarantee: throws std::bad_alloc and changes nothing.
  bool replace_cost(std::string_view id, std::uint64_t cost) {
    const std::size_t index = index_of(id);
    if (index == no_entry) return false;
    if (!weighted()) {
      if (cost == 1) return true;  // every entry costs 1 already
      const auto span = static_cast<std::uint64_t>(newest_ - oldest_);
      adopt(allocate(cap(), packed_width_for(span), true));  // totals synthesised: entry i costs 1
    }
    const std::uint64_t before = index == 0 ? base() : total_at(index - 1);
    const std::uint64_t delta = cost - (total_at(index) - before);  // modular, like the totals themselves
    for (std::size_t i = index; i < size_; ++i) store_total(wrap(head_ + i), total_at(i) + delta);
    if (index == 0) store_word(block_ + oldest_total_offset, total_at(0));
    refresh_cache();
    return true;
  }

  // The cost of the live entry admitted with `id`, or nothing (call expire() first). Throws nothing.
  std::optional<std::uint64_t> cost_of(std::string_view id) const noexcept {
    const std::size_t index = index_of(id);
    if (index == no_entry) return std::nullopt;
    if (!weighted()) return 1;
    return total_at(index) - (index == 0 ? base() : total_at(index - 1));
  }

  // Takes back the newest record() (used to roll back a multi-bucket admission). Requires !empty().
  void undo_record() noexcept {
    if (IdIndex* ids = id_index()) {
      const std::uint64_t seq = ids->first_seq + size_ - 1;
      if (!ids->order.empty() && ids->order.back().first == seq) {
        const auto found = ids->seq_by_id.find(std::string_view(*ids->order.back().second));
        if (found != ids->seq_by_id.end() && found->second == seq) ids->seq_by_id.erase(found);
        ids->order.pop_back();
      }
    }
    if (size_ > 1) newest_ = origin_time() + offset_at(size_ - 2);
    --size_;
    refresh_cache();
  }

  // The most live entries one log holds.
  static constexpr std::uint32_t max_entries = (std::uint32_t{1} << 28) - 1;

 private:
  // Request ids: only for logs that see them.
  struct IdIndex {
    std::uint64_t first_seq = 0;  // sequence number of the oldest entry (the index refers to these)
    std::unordered_map<std::string, std::uint64_t, TransparentHash, std::equal_to<>> seq_by_id;
    std::deque<std::pair<std::uint64_t, const std::string*>> order;  // ids in admission order
  };
  // One allocation holds the ring. Weighted: [base][oldest total][id index address][running totals: cap x 8
  // bytes][times]; else [times]. Times are cap offsets of `width` bytes (plus packed_padding when wider than 4).
  // A running total is the sum of costs up to and including its entry (wraps harmlessly); base is the total
  // before the oldest. The oldest total is a copy kept next to the base, so the oldest entry's cost reads one
  // cache line. The newest total is not copied there: an admission reads it from the slot beside the one it
  // writes, so it touches no header line (whose write the lock's release would wait for).
  struct Block {
    std::unique_ptr<unsigned char[]> bytes;
    std::uint32_t capacity = 0;
    unsigned width = 4;
    bool weighted = false;
  };

  // shape_ packs the ring's capacity (bits 0-27), the offsets' width - 4 (bits 28-30) and `weighted` (bit 31).
  static constexpr std::uint32_t weighted_bit = std::uint32_t{1} << 31;
  static constexpr std::uint32_t make_shape(std::uint32_t capacity, unsigned width, bool weighted) noexcept {
    return capacity | (std::uint32_t{width - 4} << 28) | (weighted ? weighted_bit : 0);
  }
  std::uint32_t cap() const noexcept { return shape_ & max_entries; }
  unsigned width() const noexcept { return ((shape_ >> 28) & 7u) + 4; }

  static constexpr std::size_t oldest_total_offset = 8, ids_offset = 16, totals_header = 24;

  // side_ of a weighted log: usage in bits 0-39, the oldest entry's cost in bits 40-62, bit 63 set when both fit
  // (else the ring is read instead: the base and oldest total in its header, the newest total in its slot).
  static constexpr std::uint64_t cache_valid = std::uint64_t{1} << 63;
  static constexpr std::uint64_t cached_usage_mask = (std::uint64_t{1} << 40) - 1;
  static constexpr std::uint64_t cached_cost_mask = (std::uint64_t{1} << 23) - 1;

  static constexpr std::size_t no_entry = std::numeric_limits<std::size_t>::max();
  // Position (0 = oldest) of the live entry admitted with `id`, or no_entry.
  std::size_t index_of(std::string_view id) const noexcept {
    const IdIndex* ids = id_index();
    if (ids == nullptr || id.empty()) return no_entry;
    const auto found = ids->seq_by_id.find(id);
    if (found == ids->seq_by_id.end() || found->second < ids->first_seq || found->second - ids->first_seq >= size_) {
      return no_entry;
    }
    return static_cast<std::size_t>(found->second - ids->first_seq);
  }

  // The request-id index, or nullptr: in side_ for unit-cost logs, in the ring's header for weighted ones.
  IdIndex* id_index() const noexcept {
    if (!weighted()) return reinterpret_cast<IdIndex*>(static_cast<std::uintptr_t>(side_));
    IdIndex* ids;
    std::memcpy(&ids, block_ + ids_offset, sizeof ids);
    return ids;
  }
  // Stores the index's address where id_index() reads it; the log owns it.
  void set_id_index(IdIndex* ids) noexcept {
    if (!weighted()) {
      side_ = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(ids));
      return;
    }
    std::memcpy(block_ + ids_offset, &ids, sizeof ids);
  }
  void delete_id_index() noexcept {
    delete id_index();
    set_id_index(nullptr);
  }
  // Recomputes a weighted log's packed usage and oldest cost from the ring (after changes other than an
  // admission that keeps them in range, which updates them in place).
  void refresh_cache() noexcept {
    if (!weighted()) return;
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
  std::int64_t time_at(std::size_t i) const noexcept { return origin_time() + offset_at(i); }
  std::uint64_t total_at(std::size_t i) const noexcept { return total_in_slot(wrap(head_ + i)); }

  // expire()'s slow path: something expires.
  std::size_t drop_expired(std::int64_t now, std::int64_t window) noexcept {
    const std::int64_t origin = origin_time();
    std::size_t dropped = 0;
    while (size_ != 0 && offset_at(0) + origin <= now - window) {
      if (weighted()) store_word(block_, total_in_slot(head_));  // the new base
      head_ = static_cast<std::uint32_t>(wrap(std::size_t{head_} + 1));
      --size_;
      ++dropped;
    }
    if (size_ != 0) {
      oldest_ = origin + offset_at(0);
      if (weighted()) store_word(block_ + oldest_total_offset, total_in_slot(head_));
    }
    note_head_offset();
    if (IdIndex* ids = id_index()) {
      ids->first_seq += dropped;
      forget_ids_before(ids->first_seq);
    }
    if (size_ == 0) {
      // An empty log counts unit costs again; its block, read without totals, still holds cap() times.
      IdIndex* ids = id_index();
      shape_ = make_shape(cap(), width(), false);
      set_id_index(ids);
      head_ = 0;
    }
    refresh_cache();
    maybe_shrink();
    return dropped;
  }

  // Admission time of the oldest entry whose expiry frees at least `need` units (1 <= need <= usage()).
  AIRL_DETAIL_HOT_INLINE std::int64_t first_time_freeing(std::uint64_t need) const noexcept {
    if (!weighted()) return need == 1 ? oldest_ : time_at(static_cast<std::size_t>(need - 1));  // the need-th oldest
    // A flood of denials usually waits for the oldest entry: decided from the packed cache, no ring read.
    if ((side_ & cache_valid) != 0 && ((side_ >> 40) & cached_cost_mask) >= need) return oldest_;
    return first_weighted_time_freeing(need);
  }
  std::int64_t first_weighted_time_freeing(std::uint64_t need) const noexcept {
    const std::uint64_t from = base();
    if (oldest_total() - from >= need) return oldest_;
    std::size_t lo = 1, hi = size_ - 1;
    while (lo < hi) {
      const std::size_t mid = lo + (hi - lo) / 2;
      if (total_at(mid) - from >= need) hi = mid; else lo = mid + 1;
    }
    return time_at(lo);
  }

  // Growth by about 1.5x (4, 7, 11, 17, ...): memory follows the live entries closely.
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
  // enough; totals are copied, or synthesised (entry i: i + 1) for a log that held unit costs. Returns the new
  // origin (the oldest time).
  std::int64_t adopt(Block block) noexcept {
    IdIndex* const ids = id_index();  // moves along: its address may live in the old block's header
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
    set_id_index(ids);
    head_ = 0;
    head_offset_ = 0;
    refresh_cache();
    return origin + first;
  }

  // Re-expresses the offsets from the oldest entry, so a newer time fits the width again. Returns the new origin.
  std::int64_t move_origin_to_oldest(std::int64_t origin) noexcept {
    const std::int64_t first = offset_at(0);
    for (std::size_t i = 0; i < size_; ++i) {
      store_packed(times(), width(), wrap(head_ + i), static_cast<std::uint64_t>(offset_at(i) - first));
    }
    head_offset_ = 0;
    return origin + first;
  }

  // Shrinks the ring to twice its live entries once it is at most a quarter full, so memory follows live
  // entries (and a burst that expires at once is given back at once). Best effort.
  void maybe_shrink() noexcept {
    if (cap() <= 8 || size_ > cap() / 4) return;
    try {
      const auto span = static_cast<std::uint64_t>(size_ == 0 ? 0 : newest_ - oldest_);
      adopt(allocate(std::max<std::uint32_t>(size_ * 2, 4), packed_width_for(span), weighted()));
    } catch (const std::bad_alloc&) {
    }
  }

  // Indexes `id` for the entry about to be appended (the `size`-th live one).
  static void remember_id(IdIndex& ids, std::string_view id, std::size_t size) {
    const std::uint64_t seq = ids.first_seq + size;
    auto [it, inserted] = ids.seq_by_id.try_emplace(std::string(id), seq);
    if (!inserted) return;  // already indexed at its first admission: each id is indexed once
    try {
      ids.order.emplace_back(seq, &it->first);
    } catch (...) {
      ids.seq_by_id.erase(it);
      throw;
    }
  }

  void forget_ids_before(std::uint64_t seq) noexcept {
    IdIndex& ids = *id_index();
    while (!ids.order.empty() && ids.order.front().first < seq) {
      const auto found = ids.seq_by_id.find(std::string_view(*ids.order.front().second));
      if (found != ids.seq_by_id.end() && found->second == ids.order.front().first) ids.seq_by_id.erase(found);
      ids.order.pop_front();
    }
    if (ids.seq_by_id.empty()) delete_id_index();
  }

  void release() noexcept {
    delete id_index();
    delete[] block_;
    block_ = nullptr;
    side_ = 0;
    shape_ = make_shape(0, 4, false);
    size_ = 0;
  }

  void take(WindowLog& other) noexcept {
    block_ = std::exchange(other.block_, nullptr);
    side_ = std::exchange(other.side_, 0);
    oldest_ = std::exchange(other.oldest_, 0);
    newest_ = std::exchange(other.newest_, 0);
    head_ = std::exchange(other.head_, 0);
    size_ = std::exchange(other.size_, 0);
    shape_ = std::exchange(other.shape_, make_shape(0, 4, false));
    head_offset_ = std::exchange(other.head_offset_, 0);
  }

  unsigned char* block_ = nullptr;  // the ring (see Block)
  std::uint64_t side_ = 0;          // unit costs: the IdIndex's address (or 0); weighted: the packed cache
  std::int64_t oldest_ = 0;         // time of the oldest entry, when any
  std::int64_t newest_ = 0;         // time of the newest entry, when any
  std::uint32_t head_ = 0;
  std::uint32_t size_ = 0;
  std::uint32_t shape_ = make_shape(0, 4, false);
  std::uint32_t head_offset_ = 0;   // the oldest entry's stored offset, while offsets are 4 bytes
};

}  // namespace airl::detail
