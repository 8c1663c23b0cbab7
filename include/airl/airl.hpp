// SPDX-License-Identifier: MIT
#pragma once
// Umbrella header: everything in airl that needs no third-party library, and the names of the common cases
// (a limiter on the in-memory storage). <airl/redis.hpp> adds the Redis backend.

#include "clock.hpp"
#include "concurrency_limiter.hpp"
#include "concurrency_storage_policy.hpp"
#include "decision.hpp"
#include "errors.hpp"
#include "in_memory_concurrency_storage.hpp"
#include "in_memory_storage.hpp"
#include "limiter_options.hpp"
#include "metrics.hpp"
#include "multi_tier_limiter.hpp"
#include "permit.hpp"
#include "plans.hpp"
#include "quota.hpp"
#include "request.hpp"
#include "sliding_window_limiter.hpp"
#include "storage_policy.hpp"
#include "tier.hpp"
#include "version.hpp"

namespace airl {

// One quota per (user, model), in this process.
using RateLimiter = SlidingWindowLimiter<InMemoryStorage<>>;
// Several tiers, all-or-nothing, in this process.
using MultiTierRateLimiter = MultiTierLimiter<InMemoryStorage<>>;
// Caps on requests in flight, in this process (ConcurrencyLimiter<> names the same type).
using InMemoryConcurrencyLimiter = ConcurrencyLimiter<InMemoryConcurrencyStorage<>>;

}  // namespace airl
