// SPDX-License-Identifier: MIT
#pragma once
// The yardstick of the Redis server-time rows (redis_server_time.hpp): the least a sliding-log decision in
// Lua does, as issue 18 measured it. Now from TIME, trim the log, count it, and if the request fits log it
// and refresh the TTL. One key per call, no request ids, no retry or reset times, no costs hash.
//
// Weighted costs: the script counts entries (ZCARD), not costs; `count + cost <= limit` only decides, and
// each admission logs one member whatever it costs. So the weighted row compares airl (which keeps a costs
// hash and its running sum) with the same minimal work as the unit row: the yardstick stays "the least a
// sliding log does", and airl's cost tracking is part of what the 2x target allows. A cost-aware minimal
// variant would already be most of airl's design (a sum that entries leaving the window must decrement).

#include <string_view>

namespace airl::bench {

// KEYS[1] = the log (sorted set: member -> admission time in us). ARGV = member, limit, window (us), cost.
// Returns 1 (admitted and logged) or 0 (denied, nothing written).
inline constexpr std::string_view minimal_script = R"lua(
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count + tonumber(ARGV[4]) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return 1
)lua";

}  // namespace airl::bench
