// SPDX-License-Identifier: MIT
#pragma once
// The Redis backend: the only public header that needs hiredis (CMake target airl::redis). Many serving
// replicas share one quota through one Redis server.

#include "airl.hpp"
#include "redis/errors.hpp"
#include "redis/options.hpp"
#include "redis/redis_concurrency_storage.hpp"
#include "redis/redis_storage.hpp"

namespace airl {

using RedisRateLimiter = SlidingWindowLimiter<RedisStorage>;
using RedisMultiTierRateLimiter = MultiTierLimiter<RedisStorage>;
using RedisConcurrencyLimiter = ConcurrencyLimiter<RedisConcurrencyStorage>;

}  // namespace airl
