// SPDX-License-Identifier: MIT
#pragma once
// The one Lua script behind the Redis storage: the rules of docs/DESIGN.md, run atomically inside Redis
// on Redis's own clock. docs/REDIS.md walks through it line by line.

#include <string_view>

namespace airl::detail {

inline constexpr std::string_view sliding_window_script = R"lua(
-- airl sliding window log. Bucket i is KEYS[2i-1], its log (sorted set: member -> admission time in
-- microseconds), and KEYS[2i], its costs (hash: member -> cost when it is not 1; field "" -> running sum;
-- absent while every entry costs 1).
-- ARGV[1] = 'acquire': ARGV[2] member, ARGV[3] '1' if the member is a caller's request id, then for each
--           bucket: limit, window (us), cost. Returns {status, then per bucket: fits, remaining, retry_us,
--           reset_us}; status 0 denied, 1 admitted, 2 replayed; retry_us -1 = never.
-- ARGV[1] = 'usage': ARGV[2] window (us), one bucket. Returns the cost counting now.
-- ARGV[1] = 'settle': ARGV[2] member, then for each bucket: window (us), cost. Replaces the member's cost in
--           every bucket that still logs it (its time stays). Returns how many buckets logged it.
-- ARGV[1] = 'refund': as 'settle', then the entry moves to member 'r' .. member .. '@' .. its time, so the
--           member (a request id) is free to be admitted again; the renamed entry keeps its time and cost.
-- ARGV[1] = 'undo':   ARGV[2] member, then for each bucket: limit, window (us). Removes the member's entry
--           (a request admitted here and denied in another cluster slot). Returns per bucket: room, reset_us.
local max_exact = 9007199254740992  -- 2^53: above it a Lua number loses integers

-- Every argument is checked before the first write: Redis does not roll a script back.
local function whole(text, what, least)
  local n = tonumber(text)
  if n == nil or n ~= math.floor(n) or n < least or n > max_exact then
    error('airl: ' .. what .. ' must be a whole number in [' .. least .. ', 2^53], got ' .. tostring(text))
  end
  return n
end

-- Integers as exact decimal text: tostring() would round to 14 significant digits.
local function int(n) return string.format('%d', n) end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- Admission time of the newest entry, or nil.
local function newest(log)
  local last = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  return last[2] and tonumber(last[2]) or nil
end

-- The running sum of a log's costs, and whether the bucket is weighted. A bucket that has only ever held
-- cost-1 entries has no costs hash at all (its sum is ZCARD: memory matters per bucket); the first entry
-- with another cost creates the hash, starting the sum from the entries already logged. A sum whose log is
-- gone (evicted, or expired a moment before it) counts nothing.
local function running_sum(log, costs)
  local sum = redis.call('HGET', costs, '')
  if sum then
    sum = tonumber(sum)
    if redis.call('EXISTS', log) == 0 then  -- a sum of 0 (settled to nothing) is checked too
      redis.call('DEL', costs)
      return 0, false
    end
    return sum, true
  end
  return redis.call('ZCARD', log), false
end

-- Drops the entries admitted at or before now - window; returns the cost still counting and whether the
-- bucket is weighted.
local function expire(log, costs, window)
  local cutoff = int(now - window)
  local sum, weighted = running_sum(log, costs)
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  if #gone == 0 then return sum, weighted end
  local freed = #gone
  if weighted then
    freed = 0
    for first = 1, #gone, 1000 do  -- unpack() has a stack limit: work in chunks
      local chunk = {unpack(gone, first, math.min(first + 999, #gone))}
      local each = redis.call('HMGET', costs, unpack(chunk))
      for i = 1, #chunk do freed = freed + (tonumber(each[i]) or 1) end
      redis.call('HDEL', costs, unpack(chunk))
    end
  end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
  if redis.call('ZCARD', log) == 0 then
    redis.call('DEL', log, costs)
    return 0, false
  end
  if freed > sum then freed = sum end  -- never below zero, whatever happened to the keys
  if not weighted then return sum - freed, false end
  return redis.call('HINCRBY', costs, '', int(-freed)), true
end

-- Admission time of the oldest entry whose expiry frees at least `need` units (walks oldest first).
local function time_freeing(log, costs, weighted, need)
  if not weighted then  -- every entry costs 1: the need-th oldest
    local entry = redis.call('ZRANGE', log, need - 1, need - 1, 'WITHSCORES')
    return entry[2] and tonumber(entry[2]) or now
  end
  local freed, start = 0, 0
  while true do
    local page = redis.call('ZRANGE', log, start, start + 99, 'WITHSCORES')
    if #page == 0 then return now end
    local members = {}
    for i = 1, #page, 2 do members[#members + 1] = page[i] end
    local each = redis.call('HMGET', costs, unpack(members))
    for i = 1, #members do
      freed = freed + (tonumber(each[i]) or 1)
      if freed >= need then return tonumber(page[2 * i]) end
    end
    start = start + 100
  end
end

local op = ARGV[1]
if op == 'usage' then
  if #KEYS ~= 2 or #ARGV ~= 2 then error('airl: usage takes one bucket and a window') end
  return (expire(KEYS[1], KEYS[2], whole(ARGV[2], 'window', 1)))
end
if op == 'settle' or op == 'refund' then
  local n = #KEYS / 2
  if n < 1 or n ~= math.floor(n) or #ARGV ~= 2 + 2 * n then error('airl: wrong number of keys or arguments') end
  local member = ARGV[2]
  if member == nil or member == '' then error('airl: empty member') end
  local window, cost = {}, {}
  for i = 1, n do
    window[i] = whole(ARGV[2 * i + 1], 'window', 1)
    cost[i] = whole(ARGV[2 * i + 2], 'cost', 0)
  end
  local settled = 0
  for i = 1, n do
    local log, costs = KEYS[2 * i - 1], KEYS[2 * i]
    local usage, weighted = expire(log, costs, window[i])
    if redis.call('ZSCORE', log, member) then
      settled = settled + 1
      local old = weighted and (tonumber(redis.call('HGET', costs, member)) or 1) or 1
      if cost[i] ~= old then
        if not weighted then redis.call('HSET', costs, '', int(usage)) end  -- the cost-1 entries so far
        if cost[i] == 1 then redis.call('HDEL', costs, member) else redis.call('HSET', costs, member, int(cost[i])) end
        redis.call('HINCRBY', costs, '', int(cost[i] - old))
        local ttl = redis.call('PTTL', log)  -- the costs live exactly as long as their log
        if ttl > 0 then redis.call('PEXPIRE', costs, ttl) end
      end
      if op == 'refund' then
        local at = redis.call('ZSCORE', log, member)
        local renamed = 'r' .. member .. '@' .. at  -- unique: two entries alike in both are indistinguishable
        redis.call('ZREM', log, member)
        redis.call('ZADD', log, at, renamed)
        local moved = redis.call('HGET', costs, member)
        if moved then
          redis.call('HDEL', costs, member)
          redis.call('HSET', costs, renamed, moved)
        end
      end
    end
  end
  return settled
end
if op == 'undo' then
  local n = #KEYS / 2
  if n < 1 or n ~= math.floor(n) or #ARGV ~= 2 + 2 * n then error('airl: wrong number of keys or arguments') end
  local member = ARGV[2]
  if member == nil or member == '' then error('airl: empty member') end
  local limit, window = {}, {}
  for i = 1, n do
    limit[i] = whole(ARGV[2 * i + 1], 'limit', 0)
    window[i] = whole(ARGV[2 * i + 2], 'window', 1)
  end
  local reply = {}
  for i = 1, n do
    local log, costs = KEYS[2 * i - 1], KEYS[2 * i]
    local usage, weighted = expire(log, costs, window[i])
    if redis.call('ZSCORE', log, member) then
      local cost = weighted and (tonumber(redis.call('HGET', costs, member)) or 1) or 1
      redis.call('ZREM', log, member)
      if weighted then
        redis.call('HDEL', costs, member)
        usage = redis.call('HINCRBY', costs, '', int(-cost))
      else
        usage = usage - 1
      end
      if redis.call('ZCARD', log) == 0 then
        redis.call('DEL', log, costs)
        usage = 0
      end
    end
    local last = newest(log)
    reply[#reply + 1] = limit[i] > usage and limit[i] - usage or 0
    reply[#reply + 1] = last and (last + window[i] - now) or 0
  end
  return reply
end
if op ~= 'acquire' then error('airl: unknown operation ' .. tostring(op)) end

local n = #KEYS / 2
if n < 1 or n ~= math.floor(n) or #ARGV ~= 3 + 3 * n then error('airl: wrong number of keys or arguments') end
local member, is_request_id = ARGV[2], ARGV[3] == '1'
if member == nil or member == '' then error('airl: empty member') end
local limit, window, cost = {}, {}, {}
for i = 1, n do
  limit[i] = whole(ARGV[3 * i + 1], 'limit', 0)
  window[i] = whole(ARGV[3 * i + 2], 'window', 1)
  cost[i] = whole(ARGV[3 * i + 3], 'cost', 1)
end

local usage, weighted, replayed = {}, {}, false
for i = 1, n do
  usage[i], weighted[i] = expire(KEYS[2 * i - 1], KEYS[2 * i], window[i])
  if is_request_id and redis.call('ZSCORE', KEYS[2 * i - 1], member) then replayed = true end
end

local reply, all_fit, rooms = {0}, true, {}
for i = 1, n do
  local log, costs = KEYS[2 * i - 1], KEYS[2 * i]
  local room = limit[i] > usage[i] and limit[i] - usage[i] or 0
  rooms[i] = room
  local charge = replayed and 0 or cost[i]
  local fits, remaining, retry, reset = 1, room - charge, 0, window[i]
  if charge > room then
    all_fit, fits, remaining = false, 0, room
    if charge > limit[i] then
      retry = -1
    else
      retry = time_freeing(log, costs, weighted[i], usage[i] + charge - limit[i]) + window[i] - now
    end
  end
  if charge > room or replayed then
    local last = newest(log)
    reset = last and (last + window[i] - now) or 0
  end
  reply[#reply + 1] = fits
  reply[#reply + 1] = remaining
  reply[#reply + 1] = retry
  reply[#reply + 1] = reset
end

if not all_fit and not replayed then
  -- Nothing is charged: the buckets that had room report it as it is (their room, when they empty).
  for i = 1, n do
    local at = 2 + 4 * (i - 1)
    if reply[at] == 1 then
      local last = newest(KEYS[2 * i - 1])
      reply[at + 1] = rooms[i]
      reply[at + 3] = last and (last + window[i] - now) or 0
    end
  end
end

if replayed then
  reply[1] = 2
elseif all_fit then
  reply[1] = 1
  for i = 1, n do
    local log, costs = KEYS[2 * i - 1], KEYS[2 * i]
    local last = newest(log)
    local at = (last and last > now) and last or now  -- never log back in time, even if the clock steps back
    local ttl = int(math.ceil(window[i] / 1000))
    redis.call('ZADD', log, int(at), member)
    redis.call('PEXPIRE', log, ttl)
    if weighted[i] or cost[i] ~= 1 then
      if not weighted[i] then redis.call('HSET', costs, '', int(usage[i])) end  -- the cost-1 entries so far
      if cost[i] ~= 1 then redis.call('HSET', costs, member, int(cost[i])) end
      redis.call('HINCRBY', costs, '', int(cost[i]))
      redis.call('PEXPIRE', costs, ttl)
    end
  end
end
return reply
)lua";

}  // namespace airl::detail
