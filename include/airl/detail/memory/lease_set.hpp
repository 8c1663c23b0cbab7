// SPDX-License-Identifier: MIT
#pragma once
// The live leases of one concurrency scope: permit id -> lease deadline, as a small unordered array. Pure (no
// locks, no clock, no I/O): the in-memory concurrency storage passes `now` in and holds the shard's lock.
//
// A scope holds at most its cap of live leases (tens, rarely thousands), so a flat array beats a hash map on
// memory and on the common operations: an acquisition appends, a release swaps the last lease into the
// released one's place. The first two leases live inside the set (a scope usually holds one or two: a user's
// requests in flight), so a new scope, made for every first permit, costs no allocation of its own.
// A lease counts while now < deadline. Expired leases (holders that never released) are dropped when the
// scope is next touched: a lower bound of the earliest deadline says when there is anything to drop, so
// touching a scope with nothing expired costs one comparison.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>

#include "../../concurrency_storage_policy.hpp"
#include "../ticks.hpp"

namespace airl::detail {

class LeaseSet {
 public:
  static constexpr std::int64_t no_deadline = std::numeric_limits<std::int64_t>::max();

  // Drops the leases whose deadline is at or before `now`; returns how many stay live. Throws nothing.
  std::size_t live(std::int64_t now) noexcept {
    if (now >= earliest_) drop_expired(now);
    return size_;
  }
  // The store's names for the same (every key's state is expired to now when a call finds it). Throw nothing.
  void expire(std::int64_t now, std::int64_t /*lease*/) noexcept { live(now); }
  void prefetch() const noexcept {}

  bool empty() const noexcept { return size_ == 0; }

  // When the set holds nothing any more: its latest deadline (an upper bound once leases left early). The
  // store's expiry lists sort by it; `lease` (the list's) is not needed, every deadline is stored. Throws nothing.
  std::int64_t expiry(std::int64_t /*lease*/) const noexcept { return size_ == 0 ? expired_ticks : latest_; }
  std::size_t size() const noexcept { return size_; }

  // The earliest deadline of the leases held (no_deadline when none): when the next one runs out.
  // Throws nothing. O(1) unless the earliest lease was released or renewed since it was last computed.
  std::int64_t earliest() noexcept {
    if (!exact_) recompute_earliest();
    return earliest_;
  }

  // Makes room for one more lease, so add() cannot fail. Strong guarantee: throws only std::bad_alloc.
  void reserve_one() {
    if (size_ < capacity_) return;
    const std::size_t capacity = 2 * capacity_;
    auto grown = std::make_unique<Lease[]>(capacity);
    std::copy(data(), data() + size_, grown.get());
    heap_ = std::move(grown);
    capacity_ = capacity;
  }

  // Adds a lease; call reserve_one() first. Throws nothing.
  void add(const PermitId& id, std::int64_t deadline) noexcept {
    data()[size_++] = Lease{id, deadline};  // within the reserved capacity
    earliest_ = std::min(earliest_, deadline);
    latest_ = std::max(latest_, deadline);
  }

  // Drops `id`'s lease; returns whether it was held. Throws nothing.
  bool remove(const PermitId& id) noexcept {
    Lease* const found = find(id);
    if (found == nullptr) return false;
    const std::int64_t deadline = found->deadline;
    *found = data()[--size_];
    forget_deadline(deadline);
    return true;
  }

  // Whether `id` holds a lease that is live at `now`. Throws nothing.
  bool holds(const PermitId& id, std::int64_t now) const noexcept {
    const Lease* const found = find(id);
    return found != nullptr && now < found->deadline;
  }

  // Moves `id`'s lease to `deadline` (never earlier than it was); returns whether it was held. Throws nothing.
  bool extend(const PermitId& id, std::int64_t deadline) noexcept {
    Lease* const found = find(id);
    if (found == nullptr) return false;
    if (deadline <= found->deadline) return true;
    forget_deadline(found->deadline);
    found->deadline = deadline;
    latest_ = std::max(latest_, deadline);
    return true;
  }

 private:
  struct Lease {
    PermitId id;
    std::int64_t deadline = 0;
  };
  static constexpr std::size_t inline_leases = 2;

  Lease* data() noexcept { return heap_ ? heap_.get() : inline_.data(); }
  const Lease* data() const noexcept { return heap_ ? heap_.get() : inline_.data(); }

  Lease* find(const PermitId& id) noexcept {
    Lease* const first = data();
    for (std::size_t i = 0; i < size_; ++i) {
      if (first[i].id == id) return first + i;
    }
    return nullptr;
  }
  const Lease* find(const PermitId& id) const noexcept { return const_cast<LeaseSet*>(this)->find(id); }

  // A lease with `deadline` left the set or moved later: earliest_ stays a lower bound, but may no longer be
  // the exact earliest deadline.
  void forget_deadline(std::int64_t deadline) noexcept {
    if (size_ == 0) {
      earliest_ = no_deadline;
      latest_ = expired_ticks;
      exact_ = true;
    } else if (deadline == earliest_) {
      exact_ = false;
    }
  }

  void drop_expired(std::int64_t now) noexcept {
    Lease* const first = data();
    std::size_t kept = 0;
    for (std::size_t i = 0; i < size_; ++i) {
      if (first[i].deadline > now) first[kept++] = first[i];
    }
    size_ = kept;
    if (size_ == 0) latest_ = expired_ticks;
    recompute_earliest();
  }

  void recompute_earliest() noexcept {
    earliest_ = no_deadline;
    const Lease* const first = data();
    for (std::size_t i = 0; i < size_; ++i) earliest_ = std::min(earliest_, first[i].deadline);
    exact_ = true;
  }

  std::array<Lease, inline_leases> inline_{};  // the leases while they fit here
  std::unique_ptr<Lease[]> heap_;             // the leases once more than fit inline were held
  std::size_t size_ = 0;
  std::size_t capacity_ = inline_leases;
  std::int64_t earliest_ = no_deadline;  // at or before every lease's deadline
  std::int64_t latest_ = expired_ticks;  // at or after every lease's deadline
  bool exact_ = true;                    // earliest_ is the earliest deadline itself
};

}  // namespace airl::detail
