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
//     live span needs (4 bytes up to 2^32 units: 4.29 s in nanoseconds; 5 bytes 18 minutes; up to 8); the origin
//     moves up to the oldest entry when the newest would not fit, and the width grows only when that is not enough;
//   - while every cost is 1 (requests per window), costs are not stored at all: usage is the entry count and
//     the k-th oldest entry is the one that frees k units;
//   - the first cost above 1 adds a parallel ring of running totals (cost up to and including each entry), so
//     usage stays one subtraction and the exact retry time a binary search, independent of the cost;
//   - request ids live in a side index allocated only for logs that see ids.
// An entry admitted at t counts while now < t + window.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "packed_offsets.hpp"
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
  std::size_t expire(std::int64_t now, std::int64_t window) noexcept {
    if (size_ == 0 || oldest_ > now - window) return 0;  // the common case, decided without reading the ring
    const std::int64_t origin = origin_time();
    std::size_t dropped = 0;
    while (size_ != 0 && offset_at(0) + origin <= now - window) {
      if (has_totals()) extras_->base = extras_->totals[head_];
      head_ = static_cast<std::uint32_t>(wrap(std::size_t{head_} + 1));
      --size_;
      ++dropped;
    }
    if (size_ != 0) oldest_ = origin + offset_at(0);
    if (extras_) {
      extras_->first_seq += dropped;
      forget_ids_before(extras_->first_seq);
      if (size_ == 0 && !extras_->ids) extras_.reset();  // an empty log counts unit costs again
    }
    maybe_shrink();
    return dropped;
  }

  // Cost units counting now (call expire() first). Throws nothing.
  std::uint64_t usage() const noexcept {
    if (!has_totals()) return size_;
    return size_ == 0 ? 0 : total_at(size_ - 1) - extras_->base;
  }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  // Admission time of the oldest and of the newest entry; require !empty(). Kept beside the ring, so a
  // denial or an expiry check does not have to read it.
  std::int64_t oldest_time() const noexcept { return oldest_; }
  std::int64_t newest_time() const noexcept { return newest_; }
  // Entries the ring holds before it grows.
  std::size_t capacity() const noexcept { return capacity_of(shape_); }
  // Bytes per stored time (4..8): what the span of the live entries needs.
  unsigned time_width() const noexcept { return width_of(shape_); }
  // Whether costs are stored (some live entry cost more than 1).
  bool weighted() const noexcept { return has_totals(); }

  // Starts loading the oldest and newest entries (what an admission reads and writes) together, so their
  // cache misses overlap instead of following each other. Throws nothing.
  void prefetch() const noexcept {
    if (size_ == 0) return;
    const std::size_t oldest = head_, newest = wrap(std::size_t{head_} + size_ - 1);
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(times_ + oldest * width());
    __builtin_prefetch(times_ + newest * width());
    if (has_totals()) {
      __builtin_prefetch(&extras_->totals[oldest]);
      __builtin_prefetch(&extras_->totals[newest]);
    }
#endif
  }

  // Whether `id` was admitted and still counts (call expire() first).
  bool holds_id(std::string_view id) const noexcept {
    if (!extras_ || !extras_->ids || id.empty()) return false;
    const auto found = extras_->ids->seq_by_id.find(id);
    return found != extras_->ids->seq_by_id.end() && found->second >= extras_->first_seq;
  }

  // Would a charge of `cost` fit under `limit` now? Pure; call expire() first.
  WindowVerdict check(std::int64_t now, std::int64_t window, std::uint64_t limit, std::uint64_t cost) const noexcept {
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
    const bool totals = has_totals() || cost != 1;
    const std::int64_t origin = size_ == 0 ? time : origin_time();
    const auto from_oldest = static_cast<std::uint64_t>(size_ == 0 ? 0 : time - oldest_);
    const bool past_origin = static_cast<std::uint64_t>(time - origin) > packed_mask(width());
    const bool widen = past_origin && from_oldest > packed_mask(width());
    const bool grow = size_ == capacity();

    // Everything that can throw happens first, into owners that free it on the way out.
    std::unique_ptr<Extras> new_extras;
    if ((totals || !id.empty()) && !extras_) new_extras = std::make_unique<Extras>();
    Extras* extras = extras_ ? extras_.get() : new_extras.get();  // set when totals or an id need it
    Rings rings;
    if (grow || widen) {
      rings = allocate(grow ? next_capacity(cap()) : cap(), packed_width_for(from_oldest), totals);
    } else if (totals && !has_totals()) {
      rings.totals = std::make_unique<std::uint64_t[]>(capacity());
    }
    if (!id.empty()) remember_id(*extras, id, extras->first_seq + size_);

    // From here on nothing throws.
    if (new_extras) extras_ = std::move(new_extras);
    std::int64_t new_origin = origin;
    if (rings.times) {
      new_origin = adopt(std::move(rings));
    } else {
      if (rings.totals) adopt_totals(std::move(rings.totals));
      if (past_origin) new_origin = move_origin_to_oldest(origin);
    }
    if (size_ == 0) {
      new_origin = time;
      oldest_ = time;
    }
    const std::size_t slot = wrap(std::size_t{head_} + size_);
    store_packed(times_, width(), slot, static_cast<std::uint64_t>(time - new_origin));
    if (has_totals()) extras_->totals[slot] = (size_ == 0 ? extras_->base : total_at(size_ - 1)) + cost;
    newest_ = time;
    ++size_;
  }

  // Takes back the newest record() (used to roll back a multi-bucket admission). Requires !empty().
  void undo_record() noexcept {
    if (extras_ && extras_->ids) {
      IdIndex& ids = *extras_->ids;
      const std::uint64_t seq = extras_->first_seq + size_ - 1;
      if (!ids.order.empty() && ids.order.back().first == seq) {
        const auto found = ids.seq_by_id.find(std::string_view(*ids.order.back().second));
        if (found != ids.seq_by_id.end() && found->second == seq) ids.seq_by_id.erase(found);
        ids.order.pop_back();
      }
    }
    if (size_ > 1) newest_ = origin_time() + offset_at(size_ - 2);
    --size_;
  }

  // The most live entries one log holds.
  static constexpr std::uint32_t max_entries = (std::uint32_t{1} << 28) - 1;

 private:
  struct IdIndex {
    std::unordered_map<std::string, std::uint64_t, TransparentHash, std::equal_to<>> seq_by_id;
    std::deque<std::pair<std::uint64_t, const std::string*>> order;  // ids in admission order
  };
  // What only some logs need: running totals (weighted costs) and request ids.
  struct Extras {
    std::unique_ptr<std::uint64_t[]> totals;  // per ring slot: costs up to and including it (wraps harmlessly)
    std::uint64_t base = 0;                   // the total just before the oldest entry
    std::uint64_t first_seq = 0;              // sequence number of the oldest entry (ids refer to these)
    std::unique_ptr<IdIndex> ids;
  };
  struct Rings {
    std::unique_ptr<unsigned char[]> times;  // capacity offsets of `width` bytes, plus packed_padding
    std::unique_ptr<std::uint64_t[]> totals;
    std::uint32_t capacity = 0;
    unsigned width = 4;
  };

  // shape_ packs the ring's capacity (low 28 bits) and the width of its offsets (high 4 bits).
  static constexpr std::uint32_t capacity_of(std::uint32_t shape) noexcept { return shape & max_entries; }
  static constexpr unsigned width_of(std::uint32_t shape) noexcept { return shape >> 28; }
  static constexpr std::uint32_t make_shape(std::uint32_t capacity, unsigned width) noexcept {
    return capacity | (std::uint32_t{width} << 28);
  }
  std::uint32_t cap() const noexcept { return capacity_of(shape_); }
  unsigned width() const noexcept { return width_of(shape_); }

  bool has_totals() const noexcept { return extras_ && extras_->totals; }

  // Ring slot of the i-th oldest entry (index < 2 * capacity).
  std::size_t wrap(std::size_t index) const noexcept { return index >= cap() ? index - cap() : index; }
  // The stored offset of the i-th oldest entry; its time is origin_time() + offset.
  std::int64_t offset_at(std::size_t i) const noexcept {
    return static_cast<std::int64_t>(load_packed(times_, width(), wrap(head_ + i)));
  }
  // The time offsets count from: the oldest entry's time less its offset. Requires !empty().
  std::int64_t origin_time() const noexcept { return oldest_ - offset_at(0); }
  std::int64_t time_at(std::size_t i) const noexcept { return origin_time() + offset_at(i); }
  std::uint64_t total_at(std::size_t i) const noexcept { return extras_->totals[wrap(head_ + i)]; }

  // Admission time of the oldest entry whose expiry frees at least `need` units (1 <= need <= usage()).
  std::int64_t first_time_freeing(std::uint64_t need) const noexcept {
    if (!has_totals()) return need == 1 ? oldest_ : time_at(static_cast<std::size_t>(need - 1));  // the need-th oldest
    const std::uint64_t base = extras_->base;
    if (total_at(0) - base >= need) return oldest_;  // a flood of denials usually waits for the oldest
    std::size_t lo = 1, hi = size_ - 1;
    while (lo < hi) {
      const std::size_t mid = lo + (hi - lo) / 2;
      if (total_at(mid) - base >= need) hi = mid; else lo = mid + 1;
    }
    return time_at(lo);
  }

  // Growth by about 1.5x (2, 4, 7, 11, 17, ...): memory follows the live entries closely.
  static std::uint32_t next_capacity(std::uint32_t capacity) {
    if (capacity >= max_entries) throw std::length_error("airl: a bucket holds 2^28 - 1 live entries");
    if (capacity < 2) return 2;
    return capacity > max_entries / 3 * 2 ? max_entries : capacity + capacity / 2 + 1;
  }

  static Rings allocate(std::uint32_t capacity, unsigned width, bool totals) {
    Rings rings;
    rings.capacity = capacity;
    rings.width = width;
    // Offsets of 4 bytes are read as 4-byte words; wider ones as 8-byte words that may run past the last.
    rings.times = std::make_unique<unsigned char[]>(std::size_t{capacity} * width + (width == 4 ? 0 : packed_padding));
    if (totals) rings.totals = std::make_unique_for_overwrite<std::uint64_t[]>(capacity);
    return rings;
  }

  // Moves the live entries into `rings` (oldest at slot 0, offsets counted from it), which must be wide
  // enough. Totals are synthesised for unit costs. Returns the new origin (the oldest time).
  std::int64_t adopt(Rings rings) noexcept {
    const std::int64_t origin = size_ == 0 ? 0 : origin_time();
    const std::int64_t first = size_ == 0 ? 0 : offset_at(0);
    for (std::size_t i = 0; i < size_; ++i) {
      store_packed(rings.times.get(), rings.width, i, static_cast<std::uint64_t>(offset_at(i) - first));
    }
    if (rings.totals) {
      for (std::size_t i = 0; i < size_; ++i) rings.totals[i] = has_totals() ? total_at(i) : i + 1;
      if (!has_totals()) extras_->base = 0;
      extras_->totals = std::move(rings.totals);
    }
    delete[] times_;
    times_ = rings.times.release();
    shape_ = make_shape(rings.capacity, rings.width);
    head_ = 0;
    return origin + first;
  }

  // Starts counting costs in a log that held only unit costs: entry i's total is i + 1.
  void adopt_totals(std::unique_ptr<std::uint64_t[]> totals) noexcept {
    for (std::size_t i = 0; i < size_; ++i) totals[wrap(head_ + i)] = i + 1;
    extras_->base = 0;
    extras_->totals = std::move(totals);
  }

  // Re-expresses the offsets from the oldest entry, so a newer time fits the width again. Returns the new origin.
  std::int64_t move_origin_to_oldest(std::int64_t origin) noexcept {
    const std::int64_t first = offset_at(0);
    for (std::size_t i = 0; i < size_; ++i) {
      store_packed(times_, width(), wrap(head_ + i), static_cast<std::uint64_t>(offset_at(i) - first));
    }
    return origin + first;
  }

  // Shrinks the ring to twice its live entries once it is at most a quarter full, so memory follows live
  // entries (and a burst that expires at once is given back at once). Best effort.
  void maybe_shrink() noexcept {
    if (cap() <= 8 || size_ > cap() / 4) return;
    try {
      const auto span = static_cast<std::uint64_t>(size_ == 0 ? 0 : newest_ - oldest_);
      adopt(allocate(std::max<std::uint32_t>(size_ * 2, 4), packed_width_for(span), has_totals()));
    } catch (const std::bad_alloc&) {
    }
  }

  static void remember_id(Extras& extras, std::string_view id, std::uint64_t seq) {
    if (!extras.ids) extras.ids = std::make_unique<IdIndex>();
    IdIndex& ids = *extras.ids;
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
    if (!extras_->ids) return;
    IdIndex& ids = *extras_->ids;
    while (!ids.order.empty() && ids.order.front().first < seq) {
      const auto found = ids.seq_by_id.find(std::string_view(*ids.order.front().second));
      if (found != ids.seq_by_id.end() && found->second == ids.order.front().first) ids.seq_by_id.erase(found);
      ids.order.pop_front();
    }
    if (ids.seq_by_id.empty()) extras_->ids.reset();
  }

  void release() noexcept {
    delete[] times_;
    times_ = nullptr;
    extras_.reset();
  }

  void take(WindowLog& other) noexcept {
    times_ = std::exchange(other.times_, nullptr);
    extras_ = std::move(other.extras_);
    oldest_ = std::exchange(other.oldest_, 0);
    newest_ = std::exchange(other.newest_, 0);
    head_ = std::exchange(other.head_, 0);
    size_ = std::exchange(other.size_, 0);
    shape_ = std::exchange(other.shape_, make_shape(0, 4));
  }

  unsigned char* times_ = nullptr;   // cap() offsets of width() bytes (plus packed_padding when wider than 4)
  std::unique_ptr<Extras> extras_;   // only for weighted logs and logs with request ids
  std::int64_t oldest_ = 0;          // time of the oldest entry, when any
  std::int64_t newest_ = 0;          // time of the newest entry, when any
  std::uint32_t head_ = 0;
  std::uint32_t size_ = 0;
  std::uint32_t shape_ = make_shape(0, 4);
};

}  // namespace airl::detail
