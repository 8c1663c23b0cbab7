// SPDX-License-Identifier: MIT
#pragma once
// The sliding window log of one bucket: a pure data structure, no locks, no I/O, no clock.
//
// Entries are kept oldest first in a ring buffer, one per admitted request whatever its cost. Each entry holds
// its admission time and the running total of costs up to and including it, so usage is one subtraction and
// the exact retry time is a binary search: both are independent of the cost of a request.
// An entry admitted at t counts while now < t + window. Request ids, when used, live in a side index that is
// only allocated for buckets that see ids.

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "transparent_hash.hpp"

namespace airl::detail {

inline constexpr std::int64_t never_ns = std::numeric_limits<std::int64_t>::max();

// What one bucket says about one charge. Durations are nanoseconds; never_ns means "never".
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
    if (this != &other) take(other);
    return *this;
  }

  // Drops the entries that stopped counting (admitted at t with t + window <= now). Returns how many.
  std::size_t expire(std::int64_t now, std::int64_t window) noexcept {
    std::size_t dropped = 0;
    while (size_ != 0 && at(0).time + window <= now) {
      base_ = at(0).cum;
      head_ = (head_ + 1) & (capacity_ - 1);
      --size_;
      ++first_seq_;
      ++dropped;
    }
    if (dropped != 0) {
      forget_ids_before(first_seq_);
      maybe_shrink();
    }
    return dropped;
  }

  // Cost units counting now (call expire() first). Throws nothing.
  std::uint64_t usage() const noexcept { return size_ == 0 ? 0 : at(size_ - 1).cum - base_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  // Admission time of the newest entry; requires !empty().
  std::int64_t newest_time() const noexcept { return at(size_ - 1).time; }
  // Entries the ring holds before it grows.
  std::size_t capacity() const noexcept { return capacity_; }

  // Whether `id` was admitted and still counts (call expire() first).
  bool holds_id(std::string_view id) const noexcept {
    if (!ids_ || id.empty()) return false;
    const auto found = ids_->seq_by_id.find(id);
    return found != ids_->seq_by_id.end() && found->second >= first_seq_;
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
    verdict.reset_after = size_ == 0 ? 0 : newest_time() + window - now;
    if (cost > limit) {
      verdict.retry_after = never_ns;
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
    verdict.reset_after = size_ == 0 ? 0 : newest_time() + window - now;
    return verdict;
  }

  // Appends an entry at `now` (never earlier than the newest entry, so the log stays sorted).
  // Strong guarantee: throws std::bad_alloc and changes nothing.
  void record(std::int64_t now, std::uint64_t cost, std::string_view id) {
    reserve_one();
    if (!id.empty()) remember_id(id, first_seq_ + size_);
    const std::int64_t time = size_ == 0 ? now : std::max(now, newest_time());
    const std::uint64_t cum = (size_ == 0 ? base_ : at(size_ - 1).cum) + cost;
    ring_[(head_ + size_) & (capacity_ - 1)] = Entry{time, cum};
    ++size_;
  }

  // Takes back the newest record() (used to roll back a multi-bucket admission). Requires !empty().
  void undo_record() noexcept {
    const std::uint64_t seq = first_seq_ + size_ - 1;
    if (ids_ && !ids_->order.empty() && ids_->order.back().first == seq) {
      const auto found = ids_->seq_by_id.find(std::string_view(*ids_->order.back().second));
      if (found != ids_->seq_by_id.end() && found->second == seq) ids_->seq_by_id.erase(found);
      ids_->order.pop_back();
    }
    --size_;
  }

 private:
  struct Entry {
    std::int64_t time;
    std::uint64_t cum;  // running total of costs up to and including this entry (wraps harmlessly)
  };
  struct IdIndex {
    std::unordered_map<std::string, std::uint64_t, TransparentHash, std::equal_to<>> seq_by_id;
    std::deque<std::pair<std::uint64_t, const std::string*>> order;  // ids in admission order
  };

  void take(WindowLog& other) noexcept {
    ring_ = std::move(other.ring_);
    capacity_ = std::exchange(other.capacity_, 0);
    head_ = std::exchange(other.head_, 0);
    size_ = std::exchange(other.size_, 0);
    base_ = std::exchange(other.base_, 0);
    first_seq_ = std::exchange(other.first_seq_, 0);
    ids_ = std::move(other.ids_);
  }

  const Entry& at(std::size_t i) const noexcept { return ring_[(head_ + i) & (capacity_ - 1)]; }

  // Admission time of the oldest entry whose expiry frees at least `need` units (need <= usage()).
  std::int64_t first_time_freeing(std::uint64_t need) const noexcept {
    std::size_t lo = 0, hi = size_ - 1;
    while (lo < hi) {
      const std::size_t mid = lo + (hi - lo) / 2;
      if (at(mid).cum - base_ >= need) hi = mid; else lo = mid + 1;
    }
    return at(lo).time;
  }

  void reserve_one() {
    if (size_ < capacity_) return;
    resize(capacity_ == 0 ? 4 : capacity_ * 2);
  }

  // Shrinks the ring to twice its live entries once it is at most a quarter full, so memory follows live
  // entries (and a burst that expires at once is given back at once). Best effort.
  void maybe_shrink() noexcept {
    if (capacity_ <= 8 || size_ > capacity_ / 4) return;
    try {
      resize(std::bit_ceil(std::max<std::size_t>(size_ * 2, 8)));
    } catch (const std::bad_alloc&) {
    }
  }

  void resize(std::size_t capacity) {
    auto ring = std::make_unique_for_overwrite<Entry[]>(capacity);
    for (std::size_t i = 0; i < size_; ++i) ring[i] = at(i);
    ring_ = std::move(ring);
    capacity_ = capacity;
    head_ = 0;
  }

  void remember_id(std::string_view id, std::uint64_t seq) {
    if (!ids_) ids_ = std::make_unique<IdIndex>();
    auto [it, inserted] = ids_->seq_by_id.try_emplace(std::string(id), seq);
    if (!inserted) return;  // already indexed at its first admission: each id is indexed once
    try {
      ids_->order.emplace_back(seq, &it->first);
    } catch (...) {
      ids_->seq_by_id.erase(it);
      throw;
    }
  }

  void forget_ids_before(std::uint64_t seq) noexcept {
    if (!ids_) return;
    auto& order = ids_->order;
    while (!order.empty() && order.front().first < seq) {
      const auto found = ids_->seq_by_id.find(std::string_view(*order.front().second));
      if (found != ids_->seq_by_id.end() && found->second == order.front().first) ids_->seq_by_id.erase(found);
      order.pop_front();
    }
    if (ids_->seq_by_id.empty()) ids_.reset();
  }

  std::unique_ptr<Entry[]> ring_;
  std::size_t capacity_ = 0;  // a power of two, or 0
  std::size_t head_ = 0;
  std::size_t size_ = 0;
  std::uint64_t base_ = 0;       // running total just before the oldest entry
  std::uint64_t first_seq_ = 0;  // sequence number of the oldest entry
  std::unique_ptr<IdIndex> ids_;
};

}  // namespace airl::detail
