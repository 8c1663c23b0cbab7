// SPDX-License-Identifier: MIT
#pragma once
// The one Lua script behind the Redis storage: the rules of docs/DESIGN.md, run atomically inside Redis
// on Redis's own clock. docs/REDIS.md walks through it line by line.

#include <string_view>

#include "detail/script_text.hpp"

namespace airl::detail {

// The script's text in parts: the shared prelude (detail/script_text.hpp), the header, the clock, and the
// body. Production joins server_clock; tests that drive time join client_clock (testing_clock.hpp): the same
// body on a caller's clock.
inline constexpr std::string_view sliding_window_head = R"lua(
-- airl sliding window log. Bucket i is KEYS[2i-1], its log (sorted set: member -> admission time in
-- microseconds), and KEYS[2i], its costs (hash: member -> cost when it is not 1; field "" -> running sum;
-- absent while every entry costs 1).
-- ARGV[1] = 'acquire': ARGV[2] member, ARGV[3] '1' if the member is a caller's request id, then for each
--           bucket: limit, window (us), cost. Returns {status, then per bucket: fits, remaining, retry_us,
--           reset_us}; status 0 denied, 1 admitted, 2 replayed; retry_us -1 = never. A cost above 2^53
--           (above every limit) is a 'never' denial, as any cost above its limit.
-- ARGV[1] = 'usage': ARGV[2] window (us), one bucket. Returns the cost counting now.
-- ARGV[1] = 'settle': ARGV[2] member, then for each bucket: window (us), cost. Replaces the member's cost in
--           every bucket that still logs it (its time stays). Returns how many buckets logged it, or -1
--           (nothing written) when a bucket's total would pass 2^53.
-- ARGV[1] = 'refund': as 'settle', then the entry moves to member 'r' .. member .. '@' .. its time, so the
--           member (a request id) is free to be admitted again; the renamed entry keeps its time and cost.
-- ARGV[1] = 'undo':   ARGV[2] member, then for each bucket: limit, window (us). Removes the member's entry
--           (a request admitted here and denied in another cluster slot). Returns per bucket: room, reset_us.
-- Every call reads and decides first and queues its writes; commit() runs them (see the prelude).
)lua";

// Redis's own clock: the production text has no path that reads a caller's time.
inline constexpr std::string_view sliding_window_server_clock = R"lua(
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local ttl_margin = 0
)lua";

// Tests only (testing_clock.hpp): the caller's time in microseconds as the last argument, taken off ARGV so
// the rest reads the arguments as production does. Test time may stand still while real time passes, so
// every TTL gets an hour more: Redis must never expire a key (by real time) before test time would.
inline constexpr std::string_view sliding_window_client_clock = R"lua(
local now = whole(table.remove(ARGV), 'now', 0, max_exact)
local ttl_margin = 3600000
)lua";

inline constexpr std::string_view sliding_window_body = R"lua(
-- A bucket as it stands now: reads what it holds, queues dropping the entries admitted at or before
-- now - window (they stay in the keys until commit(), as the `skip` oldest), and returns
-- {log, costs, cutoff, usage = cost counting now, weighted, size = entries counting, skip}.
-- A bucket that has only ever held cost-1 entries has no costs hash (its usage is its entry count: memory
-- matters per bucket); the first entry with another cost creates the hash, starting the sum from the entries
-- already logged. A sum whose log is gone (evicted, or expired a moment before it) counts nothing.
-- (The table is built whole, in one constructor: Lua work, not the commands, is most of a call's Redis time.)
local function look(log, costs, window)
  local sum = redis.call('HGET', costs, '')  -- false when missing
  local size = redis.call('ZCARD', log)
  local b = {log = log, costs = costs, cutoff = now - window, skip = 0, weighted = false, usage = size,
             size = size}
  if sum then
    if size == 0 then write('DEL', costs) else b.weighted, b.usage = true, tonumber(sum) end
  end
  if size == 0 then return b end
  local gone = redis.call('ZRANGEBYSCORE', log, '-inf', int(b.cutoff))
  if #gone == 0 then return b end
  local freed = #gone
  if b.weighted then
    freed = 0
    for first = 1, #gone, 1000 do  -- unpack() has a stack limit: work in chunks
      local chunk = {unpack(gone, first, math.min(first + 999, #gone))}
      local each = redis.call('HMGET', costs, unpack(chunk))
      for i = 1, #chunk do freed = freed + (tonumber(each[i]) or 1) end
      write('HDEL', costs, unpack(chunk))
    end
  end
  write('ZREMRANGEBYSCORE', log, '-inf', int(b.cutoff))
  b.skip, b.size = #gone, size - #gone
  if b.size == 0 then  -- an idle bucket leaves nothing behind
    write('DEL', log, costs)
    b.usage, b.weighted = 0, false
    return b
  end
  if freed > b.usage then freed = b.usage end  -- never below zero, whatever happened to the keys
  b.usage = b.usage - freed
  if b.weighted then write('HINCRBY', costs, '', int(-freed)) end
  return b
end

-- Admission time of the newest entry counting, or nil.
local function newest(b)
  if b.size == 0 then return nil end
  local last = redis.call('ZRANGE', b.log, -1, -1, 'WITHSCORES')
  return last[2] and tonumber(last[2]) or nil
end

-- Admission time of `member`'s entry if it still counts, else nil.
local function admitted_at(b, member)
  local at = redis.call('ZSCORE', b.log, member)
  if at and tonumber(at) > b.cutoff then return at end
  return nil
end

-- What the member's entry costs (it counts).
local function cost_of(b, member)
  return b.weighted and (tonumber(redis.call('HGET', b.costs, member)) or 1) or 1
end

-- Admission time of the oldest counting entry whose expiry frees at least `need` units (oldest first).
local function time_freeing(b, need)
  if not b.weighted then  -- every entry costs 1: the need-th oldest
    local entry = redis.call('ZRANGE', b.log, b.skip + need - 1, b.skip + need - 1, 'WITHSCORES')
    return entry[2] and tonumber(entry[2]) or now
  end
  local freed, start = 0, b.skip
  while true do
    local page = redis.call('ZRANGE', b.log, start, start + 99, 'WITHSCORES')
    if #page == 0 then return now end
    local members = {}
    for i = 1, #page, 2 do members[#members + 1] = page[i] end
    local each = redis.call('HMGET', b.costs, unpack(members))
    for i = 1, #members do
      freed = freed + (tonumber(each[i]) or 1)
      if freed >= need then return tonumber(page[2 * i]) end
    end
    start = start + 100
  end
end

-- The number of buckets, checked against the number of arguments: `fixed` before them, `per` for each.
local function buckets(fixed, per)
  local n = #KEYS / 2
  if n < 1 or #KEYS % 2 ~= 0 or #ARGV ~= fixed + per * n then error('airl: wrong number of keys or arguments') end
  return n
end

local function member_arg()
  local member = ARGV[2]
  if member == nil or member == '' then error('airl: empty member') end
  return member
end

local op = ARGV[1]
if op == 'usage' then
  if #KEYS ~= 2 or #ARGV ~= 2 then error('airl: usage takes one bucket and a window') end
  local b = look(KEYS[1], KEYS[2], whole(ARGV[2], 'window', 1, max_exact))
  commit()
  return b.usage
end

if op == 'settle' or op == 'refund' then
  local n = buckets(2, 2)
  local member = member_arg()
  local window, cost = {}, {}
  for i = 1, n do
    window[i] = whole(ARGV[2 * i + 1], 'window', 1, max_exact)
    cost[i] = whole(ARGV[2 * i + 2], 'cost', 0, max_exact)
  end
  local settled = 0
  for i = 1, n do
    local b = look(KEYS[2 * i - 1], KEYS[2 * i], window[i])
    local at = admitted_at(b, member)
    if at then
      settled = settled + 1
      local old, log, costs = cost_of(b, member), b.log, b.costs
      -- The totals hold at most 2^53: refuse, unwritten. (Both sides exact: usage - old + cost could round.)
      if cost[i] - old > max_exact - b.usage then return -1 end
      if cost[i] ~= old then
        if not b.weighted then write('HSET', costs, '', int(b.usage)) end  -- the cost-1 entries so far
        if cost[i] == 1 then write('HDEL', costs, member) else write('HSET', costs, member, int(cost[i])) end
        write('HINCRBY', costs, '', int(cost[i] - old))
        local ttl = redis.call('PTTL', log)  -- the costs live exactly as long as their log
        if ttl > 0 then write('PEXPIRE', costs, ttl) end
      end
      if op == 'refund' then
        local renamed = 'r' .. member .. '@' .. at  -- unique: two entries alike in both are indistinguishable
        write('ZADD', log, at, renamed)  -- first: a log emptied by the ZREM would come back without its TTL
        write('ZREM', log, member)
        if cost[i] ~= 1 then  -- its costs field (it has one unless it costs 1) moves likewise
          write('HDEL', costs, member)
          write('HSET', costs, renamed, int(cost[i]))
        end
      end
    end
  end
  commit()
  return settled
end

if op == 'undo' then
  local n = buckets(2, 2)
  local member = member_arg()
  local limit, window = {}, {}
  for i = 1, n do
    limit[i] = whole(ARGV[2 * i + 1], 'limit', 0, max_exact)
    window[i] = whole(ARGV[2 * i + 2], 'window', 1, max_exact)
  end
  local reply = {}
  for i = 1, n do
    local b = look(KEYS[2 * i - 1], KEYS[2 * i], window[i])
    local usage, last = b.usage, newest(b)
    if admitted_at(b, member) then
      local cost = cost_of(b, member)
      write('ZREM', b.log, member)
      if b.weighted then
        write('HDEL', b.costs, member)
        write('HINCRBY', b.costs, '', int(-cost))
      end
      usage = usage - cost
      if b.size == 1 then
        write('DEL', b.log, b.costs)
        usage, last = 0, nil
      else  -- the newest entry once the member's is gone
        local two = redis.call('ZRANGE', b.log, -2, -1, 'WITHSCORES')
        if two[3] == member then last = tonumber(two[2]) end
      end
    end
    reply[#reply + 1] = limit[i] > usage and limit[i] - usage or 0
    reply[#reply + 1] = last and (last + window[i] - now) or 0
  end
  commit()
  return reply
end

if op ~= 'acquire' then error('airl: unknown operation ' .. tostring(op)) end

local n = buckets(3, 3)
local member, is_request_id = member_arg(), ARGV[3] == '1'
local limit, window, cost = {}, {}, {}
for i = 1, n do
  limit[i] = whole(ARGV[3 * i + 1], 'limit', 0, max_exact)
  window[i] = whole(ARGV[3 * i + 2], 'window', 1, max_exact)
  local c = ARGV[3 * i + 3]
  cost[i] = c == '1' and 1 or whole(c, 'cost', 1, math.huge)  -- above 2^53 it exceeds every limit: never written
end

local bucket, replayed = {}, false
for i = 1, n do
  bucket[i] = look(KEYS[2 * i - 1], KEYS[2 * i], window[i])
  if is_request_id and admitted_at(bucket[i], member) then replayed = true end
end

local reply, all_fit = {0}, true
for i = 1, n do
  local b = bucket[i]
  local room = limit[i] > b.usage and limit[i] - b.usage or 0
  local charge = replayed and 0 or cost[i]
  local fits, remaining, retry, reset = 1, room - charge, 0, window[i]
  if charge > room then
    all_fit, fits, remaining = false, 0, room
    if charge > limit[i] then
      retry = -1
    else
      retry = time_freeing(b, b.usage + charge - limit[i]) + window[i] - now
    end
  end
  if charge > room or replayed then
    local last = newest(b)
    reset = last and (last + window[i] - now) or 0
  end
  reply[4 * i - 2], reply[4 * i - 1], reply[4 * i], reply[4 * i + 1] = fits, remaining, retry, reset
end

if not all_fit and not replayed then
  -- Nothing is charged: the buckets that had room report it as it is (their room, when they empty).
  for i = 1, n do
    if reply[4 * i - 2] == 1 then
      local last = newest(bucket[i])
      reply[4 * i - 1] = reply[4 * i - 1] + cost[i]
      reply[4 * i + 1] = last and (last + window[i] - now) or 0
    end
  end
end

if replayed then
  reply[1] = 2
elseif all_fit then
  reply[1] = 1
  for i = 1, n do
    local b = bucket[i]
    local last = newest(b)
    local at = (last and last > now) and last or now  -- never log back in time, even if the clock steps back
    local ttl = int(math.ceil(window[i] / 1000) + ttl_margin)
    write('ZADD', b.log, int(at), member)
    write('PEXPIRE', b.log, ttl)
    if b.weighted or cost[i] ~= 1 then
      if not b.weighted then write('HSET', b.costs, '', int(b.usage)) end  -- the cost-1 entries so far
      if cost[i] ~= 1 then write('HSET', b.costs, member, int(cost[i])) end
      write('HINCRBY', b.costs, '', int(cost[i]))
      write('PEXPIRE', b.costs, ttl)
    end
  end
end
commit()
return reply
)lua";

// The script production runs: Redis's clock.
inline constexpr std::string_view sliding_window_script =
    joined_view<script_prelude, sliding_window_head, sliding_window_server_clock, sliding_window_body>;

// The same script on the caller's clock. Reachable only through airl::testing::RedisTestClock.
inline constexpr std::string_view sliding_window_script_client_clock =
    joined_view<script_prelude, sliding_window_head, sliding_window_client_clock, sliding_window_body>;

}  // namespace airl::detail
