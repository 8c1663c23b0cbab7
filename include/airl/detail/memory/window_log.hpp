// SPDX-License-Identifier: MIT
#pragma once
// The sliding window log of one bucket: the rules of docs/DESIGN.md for one bucket, in one place. Pure: no
// locks, no I/O, no clock; times are plain integers in the caller's unit (the in-memory store passes the
// clock's nanoseconds). An entry admitted at t counts while now < t + window. The entries live in a packed
// ring (packed_ring.hpp), the request ids in a side index made only for logs that see ids
// (request_id_index.hpp).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "../../quota.hpp"
#include "../inlining.hpp"
#include "../ticks.hpp"
#include "../verdict.hpp"
#include "packed_ring.hpp"
#include "request_id_index.hpp"

namespace airl::detail {

class WindowLog {
 public:
  static constexpr std::uint32_t max_entries = PackedRing::max_entries;

  // Rule 1: drops the entries that stopped counting (admitted at t with t + window <= now); returns how many.
  AIRL_DETAIL_HOT_INLINE std::size_t expire(std::int64_t now, std::int64_t window) noexcept {
    if (ids_) ids_->prefetch_ends();  // an admission reads one end of the ids' queue and writes the other
    if (ring_.empty() || ring_.oldest_time() > now - window) return 0;  // decided without reading the ring
    const std::size_t dropped = ring_.drop_through(now - window);
    if (ids_) {
      ids_->drop_oldest(dropped);
      if (ids_->empty()) ids_.reset();
    }
    return dropped;
  }

  // Rules 3 to 7: would a charge of `cost` fit under `limit` now? Pure; call expire() first.
  AIRL_DETAIL_HOT_INLINE WindowVerdict check(std::int64_t now, std::int64_t window, std::uint64_t limit,
                                             std::uint64_t cost) const noexcept {
    const std::uint64_t used = usage();
    const std::uint64_t room = used >= limit ? 0 : limit - used;
    if (cost <= room) return {.fits = true, .remaining = room - cost, .retry_after = 0, .reset_after = window};
    WindowVerdict verdict{.fits = false, .remaining = room, .retry_after = never_ticks,
                          .reset_after = empty() ? 0 : newest_time() - now + window};
    if (cost <= limit) {  // rule 5: wait until used + cost - limit units expire (no overflow: cost <= limit)
      const std::uint64_t need = cost - (limit - std::min(used, limit)) + (used > limit ? used - limit : 0);
      verdict.retry_after = ring_.first_time_freeing(need) - now + window;  // in (0, window]: no overflow
    }
    return verdict;
  }

  // Rule 8: what the bucket holds now, for a replayed request (nothing charged).
  WindowVerdict peek(std::int64_t now, std::int64_t window, std::uint64_t limit) const noexcept {
    WindowVerdict verdict = check(now, window, limit, 0);
    verdict.reset_after = empty() ? 0 : newest_time() - now + window;
    return verdict;
  }

  // Logs an admission at `now`, or at the newest entry's time if that is later (the log stays sorted).
  // Strong guarantee: throws std::bad_alloc (or std::length_error past max_entries) and changes nothing.
  void record(std::int64_t now, std::uint64_t cost, std::string_view id) {
    record_with(now, cost, id, [&](RequestIdIndex& ids) { ids.remember(id, size()); });
  }
  // The same, given id_hash(id), for an id holds_id() has just said no to (a decision hashes its id once and
  // looks it up once).
  void record(std::int64_t now, std::uint64_t cost, std::string_view id, std::uint64_t hash) {
    record_with(now, cost, id, [&](RequestIdIndex& ids) { ids.remember_new(id, hash, size()); });
  }

  // Rule 9: the live entry admitted with `id` now costs `cost` (0 allowed), keeping its time; call expire()
  // first. Returns false when no live entry has that id. Strong guarantee: throws std::invalid_argument when
  // the log's total would pass 2^53 (max_exact_count: what every storage counts exactly; admissions keep it
  // at most the limit, only settled costs can pass it), std::bad_alloc.
  bool replace_cost(std::string_view id, std::uint64_t cost) {
    const std::optional<std::size_t> index = position_of(id);
    if (!index) return false;
    const std::uint64_t others = usage() - ring_.cost_at(*index);
    if (cost > max_exact_count || others > max_exact_count - cost) {
      throw std::invalid_argument("airl: a settled cost would bring a bucket's total above 2^53");
    }
    if (!ring_.weighted()) {
      if (cost == 1) return true;  // every entry costs 1 already
      ring_.make_weighted();
    }
    ring_.set_cost(*index, cost);
    return true;
  }

  // The live entry admitted with `id` no longer answers to it (a refund, after replace_cost(id, 0)): the same
  // id is decided afresh from now on. Throws nothing.
  void forget_id(std::string_view id) noexcept {
    if (ids_) ids_->forget(id);
  }

  // Takes back the newest record() (rolls back a multi-bucket admission). Requires !empty(). Throws nothing.
  void undo_record() noexcept {
    if (ids_) {
      ids_->undo(size() - 1);
      if (ids_->empty()) ids_.reset();
    }
    ring_.pop_newest();
  }

  // Whether `id` was admitted and still counts (call expire() first). Throws nothing.
  bool holds_id(std::string_view id) const noexcept { return position_of(id).has_value(); }
  // The same, given id_hash(id).
  bool holds_id(std::string_view id, std::uint64_t hash) const noexcept {
    return ids_ && !id.empty() && ids_->find(id, hash, size()).has_value();
  }
  // The hash holds_id() and record() take for a non-empty id. Throws nothing.
  static std::uint64_t id_hash(std::string_view id) noexcept { return RequestIdIndex::hash_of(id); }
  // The cost of the live entry admitted with `id`, or nothing (call expire() first). Throws nothing.
  std::optional<std::uint64_t> cost_of(std::string_view id) const noexcept {
    const std::optional<std::size_t> index = position_of(id);
    if (!index) return std::nullopt;
    return ring_.cost_at(*index);
  }

  // Rule 2: cost units counting now (call expire() first).
  AIRL_DETAIL_HOT_INLINE std::uint64_t usage() const noexcept { return ring_.usage(); }
  std::size_t size() const noexcept { return ring_.size(); }
  bool empty() const noexcept { return ring_.empty(); }
  std::int64_t oldest_time() const noexcept { return ring_.oldest_time(); }  // require !empty()
  std::int64_t newest_time() const noexcept { return ring_.newest_time(); }
  std::size_t capacity() const noexcept { return ring_.capacity(); }
  unsigned time_width() const noexcept { return ring_.time_width(); }
  bool weighted() const noexcept { return ring_.weighted(); }
  void prefetch() const noexcept { ring_.prefetch(); }

  // When the log holds nothing any more, given its window (the store's expiry lists sort by it).
  // Saturates at never_ticks: a window that runs past the clock's end never expires (a wrapped sum would
  // lie in the past, and the store would drop the bucket at its next sweep).
  std::int64_t expiry(std::int64_t window) const noexcept {
    return empty() ? expired_ticks : saturating_add(newest_time(), window);
  }

 private:
  // record(): `index(ids)` indexes the id, once the ring has made room for the entry (and only if there is one).
  template <class Index>
  void record_with(std::int64_t now, std::uint64_t cost, std::string_view id, Index&& index) {
    const std::int64_t time = empty() ? now : std::max(now, newest_time());
    ring_.push(time, cost, [&] {
      if (id.empty()) return;
      std::unique_ptr<RequestIdIndex> made = ids_ ? nullptr : std::make_unique<RequestIdIndex>();
      index(made ? *made : *ids_);
      if (made) ids_ = std::move(made);
    });
  }

  std::optional<std::size_t> position_of(std::string_view id) const noexcept {
    if (!ids_ || id.empty()) return std::nullopt;
    return ids_->find(id, size());
  }

  PackedRing ring_;
  std::unique_ptr<RequestIdIndex> ids_;  // only for logs that see request ids
};

}  // namespace airl::detail
