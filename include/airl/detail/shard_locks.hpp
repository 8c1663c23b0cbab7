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
  // `indices` must be sorted and unique, and outlive this object. Throws nothing.
  ShardLocks(BucketShard* shards, std::span<const std::size_t> indices) noexcept : shards_(shards), indices_(indices) {
    for (const std::size_t index : indices_) shards_[index].mutex.lock();
  }
  ~ShardLocks() {
    for (std::size_t i = indices_.size(); i > 0; --i) shards_[indices_[i - 1]].mutex.unlock();
  }
  ShardLocks(const ShardLocks&) = delete;
  ShardLocks& operator=(const ShardLocks&) = delete;

 private:
  BucketShard* shards_;
  std::span<const std::size_t> indices_;
};

}  // namespace airl::detail
