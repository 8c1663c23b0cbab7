// SPDX-License-Identifier: MIT
#pragma once
// The request ids of one window log: id -> the position of the entry admitted with it. Allocated only for
// logs that see ids. Positions are sequence numbers (the oldest live entry is first_seq), so dropping the
// oldest entries is one addition; ids are forgotten oldest first, in admission order.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "../transparent_hash.hpp"

namespace airl::detail {

class RequestIdIndex {
 public:
  // Position (0 = oldest live entry) of the entry admitted with `id`, if it is among the `live` entries.
  std::optional<std::size_t> find(std::string_view id, std::size_t live) const noexcept {
    const auto found = seq_by_id_.find(id);
    if (found == seq_by_id_.end() || found->second < first_seq_ || found->second - first_seq_ >= live) {
      return std::nullopt;
    }
    return static_cast<std::size_t>(found->second - first_seq_);
  }

  // Indexes `id` for the entry about to be appended at `position`. An id already indexed keeps its first
  // entry. Strong guarantee: throws std::bad_alloc and changes nothing.
  void remember(std::string_view id, std::size_t position) {
    const std::uint64_t seq = first_seq_ + position;
    auto [it, inserted] = seq_by_id_.try_emplace(std::string(id), seq);
    if (!inserted) return;
    try {
      order_.emplace_back(seq, &it->first);
    } catch (...) {
      seq_by_id_.erase(it);
      throw;
    }
  }

  // The `count` oldest entries left the log: their ids are forgotten. Throws nothing.
  void drop_oldest(std::size_t count) noexcept {
    first_seq_ += count;
    while (!order_.empty() && order_.front().first < first_seq_) forget(order_.front());
    if (order_.empty()) first_seq_ = 0;  // nothing refers to positions any more: start over with the log
  }

  // The entry at `position` (the newest) was taken back: its id, if it was indexed there, is forgotten.
  void undo(std::size_t position) noexcept {
    if (!order_.empty() && order_.back().first == first_seq_ + position) forget(order_.back(), /*newest=*/true);
  }

  bool empty() const noexcept { return order_.empty(); }

 private:
  using Seq = std::pair<std::uint64_t, const std::string*>;

  void forget(const Seq& entry, bool newest = false) noexcept {
    const auto found = seq_by_id_.find(std::string_view(*entry.second));
    if (found != seq_by_id_.end() && found->second == entry.first) seq_by_id_.erase(found);
    if (newest) order_.pop_back(); else order_.pop_front();
  }

  std::uint64_t first_seq_ = 0;  // sequence number of the log's oldest live entry
  std::unordered_map<std::string, std::uint64_t, TransparentHash, std::equal_to<>> seq_by_id_;
  std::deque<Seq> order_;  // ids in admission order
};

}  // namespace airl::detail
