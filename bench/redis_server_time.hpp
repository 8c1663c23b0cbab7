// SPDX-License-Identifier: MIT
#pragma once
// Redis server time per decision (issue 18, target 1): what airl's script costs Redis, against the minimal
// sliding-log script (redis_minimal_script.hpp) on the same number and shape of keys. Redis's own count,
// INFO commandstats' EVALSHA usec / calls after CONFIG RESETSTAT, so the client and the network drop out.
// docs/PERFORMANCE.md, "Redis server time per decision".

#include <airl/redis/options.hpp>

#include <cstddef>
#include <string>
#include <vector>

namespace airl::bench {

// One case: airl's allow() and the minimal script, medians over the repetitions.
struct ServerTimeRow {
  std::string name;          // what airl decides, e.g. "1 tier, unit costs, admitted"
  std::string baseline;      // the minimal script's call it is held against
  const char* target_text = "";  // e.g. "<= 1.5"
  double target = 0;
  double airl_us = 0;        // median server time per airl EVALSHA, microseconds
  double minimal_us = 0;     // median server time per minimal EVALSHA, microseconds
  double ratio = 0;          // median over the repetitions of airl / minimal (same repetition)
  std::string void_reason;   // empty when every call did what the case says; else the row is void
};

// Runs the cases on the server of `options` (its key prefix + "-st-..." for every key, removed at the end),
// `calls` timed calls per kind and repetition over 10,000 users round-robin, `repetitions` interleaved
// repetitions; prints their table. Runs CONFIG RESETSTAT (the server's statistics are reset). Throws
// std::runtime_error on a connection fault or an error reply.
std::vector<ServerTimeRow> measure_server_time(const airl::RedisOptions& options, std::size_t calls,
                                               std::size_t repetitions);

}  // namespace airl::bench
