// SPDX-License-Identifier: MIT
#pragma once
// Locks a set of shards in ascending index order (so two multi-shard acquisitions can never deadlock)
// and unlocks them when it goes out of scope.

#include <cstddef>
#include <span>

#include "bucket_shard.hpp"

namespace airl::detail {

class ShardLocks {
 public:
  // `indices` must be sorted and unique, and outlive this object.
  ShardLocks(BucketShard* shards, std::span<const std::size_t> indices) : shards_(shards), indices_(indices) {
    try {
      for (; locked_ < indices_.size(); ++locked_) shards_[indices_[locked_]].mutex.lock();
    } catch (...) {
      unlock_all();
      throw;
    }
  }
  ~ShardLocks() { unlock_all(); }
  ShardLocks(const ShardLocks&) = delete;
  ShardLocks& operator=(const ShardLocks&) = delete;

 private:
  void unlock_all() noexcept {
    while (locked_ > 0) shards_[indices_[--locked_]].mutex.unlock();
  }

  BucketShard* shards_;
  std::span<const std::size_t> indices_;
  std::size_t locked_ = 0;
};

}  // namespace airl::detail
