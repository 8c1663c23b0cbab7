// SPDX-License-Identifier: MIT
#pragma once
// Redis memory per bucket and per entry: INFO memory used_memory before and after creating buckets
// through the limiter, for unit and weighted costs (docs/PERFORMANCE.md, "Redis").

#include "redis_raw.hpp"

namespace airl::bench {

// Prints the memory table. Returns the bytes per bucket of 10 unit-cost entries (issue 4's target: 600).
// Runs FLUSHALL: only for a server this benchmark started itself. Throws std::runtime_error on a fault.
double measure_memory(RawRedis& raw, int port);

}  // namespace airl::bench
