// SPDX-License-Identifier: MIT
#pragma once
// MinimalExact: the least an exact sliding-window-log limiter does beyond the floor, built to show how much of
// airl's time over the floor any exact limiter pays. It does the floor's work (clock, the floor's hash of the
// pair, one of 64 mutexes) plus what exactness cannot skip: find the pair's log (open addressing, the full
// key compared), drop the entries that expired, compare the count with the limit, append. Nothing else: no
// seeded hash, no tiers, no Decision (a bool), no metrics, no validation, no request ids, no expiry of idle
// keys, unit costs (a cost of c appends c entries), a ring of `limit` slots per key. Thread safety: safe.

#include <airl/quota.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "baselines.hpp"

namespace airl_bench {

class MinimalExact {
 public:
  explicit MinimalExact(airl::Quota quota)
      : limit_(quota.limit), window_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(quota.window).count()) {}

  bool allow(std::string_view user, std::string_view model, std::uint64_t cost) {
    const std::int64_t now = steady_now_ns();
    const std::size_t hash = hash_pair(user, model);
    Shard& shard = shards_[hash % shards_.size()];  // as the floor picks its mutex
    std::lock_guard lock(shard.mutex);
    Log& log = shard.find_or_add(hash, user, model, limit_);
    // A thread that read the clock before another took the lock decides at that one's (later) time, so the
    // ring stays in time order (airl keeps each shard's time monotonic the same way).
    const std::int64_t at = std::max(now, log.newest);
    while (log.size != 0 && log.times[log.head] + window_ns_ <= at) {  // an entry counts while at < t + window
      log.head = log.head + 1 == log.times.size() ? 0 : log.head + 1;
      --log.size;
    }
    if (log.size + cost > limit_) return false;
    for (std::uint64_t unit = 0; unit < cost; ++unit) {
      std::size_t slot = log.head + log.size;
      if (slot >= log.times.size()) slot -= log.times.size();
      log.times[slot] = at;
      ++log.size;
    }
    log.newest = at;
    return true;
  }

 private:
  struct Log {
    std::vector<std::int64_t> times;  // a ring of `limit` slots
    std::size_t head = 0, size = 0;
    std::int64_t newest = 0;  // time of the newest entry
  };
  struct Slot {
    std::size_t hash = 0;
    std::unique_ptr<Log> log;  // nullptr: empty slot
    std::string user, model;
  };
  struct alignas(64) Shard {
    std::mutex mutex;
    std::vector<Slot> slots = std::vector<Slot>(16);
    std::size_t used = 0;

    Log& find_or_add(std::size_t hash, std::string_view user, std::string_view model, std::uint64_t limit) {
      const std::size_t mask = slots.size() - 1;
      for (std::size_t i = start(hash) & mask;; i = (i + 1) & mask) {
        Slot& slot = slots[i];
        if (!slot.log) break;
        if (slot.hash == hash && slot.user == user && slot.model == model) return *slot.log;
      }
      if (2 * (used + 1) > slots.size()) grow();
      Slot& slot = free_slot(hash);
      slot = Slot{hash, std::make_unique<Log>(), std::string(user), std::string(model)};
      slot.log->times.resize(limit);
      ++used;
      return *slot.log;
    }

    // The low bits chose the shard, so probing starts from the bits above them.
    static std::size_t start(std::size_t hash) noexcept { return hash >> 6; }

    Slot& free_slot(std::size_t hash) {
      const std::size_t mask = slots.size() - 1;
      std::size_t i = start(hash) & mask;
      while (slots[i].log) i = (i + 1) & mask;
      return slots[i];
    }

    void grow() {
      std::vector<Slot> old(slots.size() * 2);
      old.swap(slots);
      for (Slot& slot : old) {
        if (slot.log) free_slot(slot.hash) = std::move(slot);
      }
    }
  };

  std::uint64_t limit_;
  std::int64_t window_ns_;
  std::array<Shard, 64> shards_;
};

}  // namespace airl_bench
