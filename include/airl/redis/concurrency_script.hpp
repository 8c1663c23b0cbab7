// SPDX-License-Identifier: MIT
#pragma once
// The one Lua script behind the Redis concurrency storage: leases on in-flight permits, taken, released and
// renewed atomically inside Redis on Redis's own clock (TIME), so replicas with skewed clocks agree on when a
// lease runs out. docs/REDIS.md, section "The concurrency script", explains it.

#include <string_view>

#include "detail/script_text.hpp"

namespace airl::detail {

// After the shared prelude (detail/script_text.hpp: whole, int, the write queue).
inline constexpr std::string_view concurrency_script_body = R"lua(
-- airl concurrency caps. Each KEYS[i] is one scope's leases: a sorted set, member = permit id, score = the
-- lease's deadline in microseconds (Redis TIME). A lease counts while now < deadline.
-- ARGV[1] = 'acquire': ARGV[2] permit id, then per key: max_in_flight, lease (us). All or nothing. Returns
--           {1} when a lease was taken in every key, else {0, i, live, retry_us}: key i (1-based) was the
--           first full one, with `live` leases; retry_us = until its earliest lease runs out, -1 = never.
--           An id already in any key (live or run out) is never overwritten: {-1} comes back and
--           nothing is written.
-- ARGV[1] = 'release': ARGV[2] permit id. Removes it from every key; returns how many held it.
-- ARGV[1] = 'renew':   ARGV[2] permit id, then per key: lease (us). If the id holds a live lease in every
--           key, moves each to now + lease and returns 1; otherwise removes it everywhere and returns 0.
-- ARGV[1] = 'count':   one key. Returns its live leases.
-- Every key must be distinct, and a lease at most 366 days (airl's max_window).
-- Writes go through the write queue (all-or-nothing), except dropping run-out leases: each such drop leaves
-- its key as consistent as before (what it drops counts nothing), so a call failing after it harms nothing.
local max_lease = 31622400000000      -- 366 days in microseconds

local op, n = ARGV[1], #KEYS
if n < 1 then error('airl: no keys') end
for i = 2, n do
  for j = 1, i - 1 do
    if KEYS[i] == KEYS[j] then error('airl: key ' .. KEYS[i] .. ' is passed twice') end
  end
end
local function expect_args(count)
  if #ARGV ~= count then error('airl: ' .. tostring(op) .. ' expects ' .. count .. ' arguments, got ' .. #ARGV) end
end
local function expect_member()
  if ARGV[2] == nil or ARGV[2] == '' then error('airl: empty permit id') end
  return ARGV[2]
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- Drops the leases that have run out (deadline <= now); a key left empty is deleted by Redis itself.
local function expire(key) redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now)) end

-- Queues keeping the key at least until its newest lease runs out (its members never outlive it by much).
-- Reads the TTL before the key's queued writes run: a ZADD does not change it.
local function keep_until(key, lease)
  local ttl = math.ceil(lease / 1000)
  if redis.call('PTTL', key) < ttl then write('PEXPIRE', key, int(ttl)) end
end

if op == 'acquire' then
  expect_args(2 + 2 * n)
  local member = expect_member()
  local max, lease = {}, {}
  for i = 1, n do
    max[i] = whole(ARGV[1 + 2 * i], 'max_in_flight', 0, max_exact)
    lease[i] = whole(ARGV[2 + 2 * i], 'lease', 1, max_lease)
  end
  for i = 1, n do  -- ZADD NX, checked for every key before the first write (expiry included)
    if redis.call('ZSCORE', KEYS[i], member) then return {-1} end
  end
  for i = 1, n do
    expire(KEYS[i])
    local live = redis.call('ZCARD', KEYS[i])
    if live >= max[i] then
      local retry = -1
      if max[i] > 0 then
        local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
        retry = math.max(tonumber(first[2]) - now, 1)
      end
      return {0, i, live, retry}
    end
  end
  for i = 1, n do
    write('ZADD', KEYS[i], 'NX', int(now + lease[i]), member)
    keep_until(KEYS[i], lease[i])
  end
  commit()
  return {1}
elseif op == 'release' then
  expect_args(2)
  local member = expect_member()
  for i = 1, n do write('ZREM', KEYS[i], member) end
  local held = 0
  for _, removed in ipairs(commit(true)) do held = held + removed end
  return held
elseif op == 'renew' then
  expect_args(2 + n)
  local member = expect_member()
  local lease = {}
  for i = 1, n do lease[i] = whole(ARGV[2 + i], 'lease', 1, max_lease) end
  local live, deadline = true, {}
  for i = 1, n do
    expire(KEYS[i])
    local score = redis.call('ZSCORE', KEYS[i], member)
    if score then deadline[i] = math.max(tonumber(score), now + lease[i]) else live = false end
  end
  if not live then
    for i = 1, n do write('ZREM', KEYS[i], member) end
    commit()
    return 0
  end
  for i = 1, n do
    write('ZADD', KEYS[i], 'XX', int(deadline[i]), member)  -- never moves a deadline earlier
    keep_until(KEYS[i], lease[i])
  end
  commit()
  return 1
elseif op == 'count' then
  expect_args(1)
  if n ~= 1 then error('airl: count takes one key') end
  expire(KEYS[1])
  return redis.call('ZCARD', KEYS[1])
end
error('airl: unknown operation ' .. tostring(op))
)lua";

inline constexpr std::string_view concurrency_script = joined_view<script_prelude, concurrency_script_body>;

}  // namespace airl::detail
