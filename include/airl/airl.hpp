// SPDX-License-Identifier: MIT
#pragma once
// Umbrella header: everything in airl that needs no third-party library.

#include "clock.hpp"
#include "concurrency_limiter.hpp"
#include "decision.hpp"
#include "errors.hpp"
#include "in_memory_storage.hpp"
#include "limiter_options.hpp"
#include "metrics.hpp"
#include "multi_tier_limiter.hpp"
#include "plans.hpp"
#include "quota.hpp"
#include "request.hpp"
#include "tier.hpp"
#include "sliding_window_limiter.hpp"
#include "storage_policy.hpp"
#include "version.hpp"
