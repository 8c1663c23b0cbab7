// SPDX-License-Identifier: MIT
#pragma once
// What both Lua scripts share, and how their texts are put together: the opening every script starts with
// (argument checks, exact integers, and the write queue that makes a call's writes all-or-nothing), and a
// compile-time join of text parts into one static string (so a script's variants share one body).

#include <algorithm>
#include <array>
#include <cstddef>
#include <string_view>

namespace airl::detail {

inline constexpr std::string_view script_prelude = R"lua(
local max_exact = 9007199254740992  -- 2^53: above it a Lua number loses integers

-- Every argument is checked before the first write: Redis does not roll a script back.
local function whole(text, what, least, most)
  local n = tonumber(text)
  -- n % 1 (no C call, unlike math.floor) is NaN for NaN and for +-inf: inf passes where `most` is inf, as before.
  if n == nil or (n % 1 ~= 0 and n ~= math.huge) or n < least or n > most then
    error('airl: ' .. what .. ' must be a whole number in [' .. least .. ', ' ..
          (most < math.huge and string.format('%d', most) or 'inf') .. '], got ' .. tostring(text))
  end
  return n
end

-- Integers as exact decimal text: tostring() would round to 14 significant digits. (Numbers passed to
-- redis.call as numbers would be exact too, but Redis formats them with %.17g: slower than this.)
local format = string.format
local function int(n) return format('%d', n) end

-- The write queue. A call reads and decides first, queueing its writes; commit() then runs them. Redis
-- checks a script's ACL one command at a time, as each runs, so a command refused after the first write
-- would leave that write behind (an entry without its TTL, a cost without its sum). commit() asks first
-- (redis.acl_check_cmd, Redis 7+) whether every queued write may run, with its keys, and refuses the call
-- with NOPERM before writing anything if one may not. Past the check no write fails on a caller's value,
-- a total or an ACL.
-- commit(true) returns the writes' replies, in order.
local writes = {}
local function write(...) writes[#writes + 1] = {...} end
local function commit(want_replies)
  if redis.acl_check_cmd then
    for i = 1, #writes do
      if not redis.acl_check_cmd(unpack(writes[i])) then
        error({err = 'NOPERM airl: this ACL user may not run ' .. writes[i][1] .. ' on ' .. writes[i][2] ..
                     ' (checked before the first write: nothing was written)'})
      end
    end
  end
  local replies = want_replies and {} or nil
  for i = 1, #writes do
    local reply = redis.call(unpack(writes[i]))
    if replies then replies[i] = reply end
  end
  writes = {}
  return replies
end
)lua";

// Joins string parts at compile time into one static text.
template <const std::string_view&... Parts>
inline constexpr auto joined_text = [] {
  std::array<char, (Parts.size() + ...)> text{};
  std::size_t at = 0;
  ((std::copy(Parts.begin(), Parts.end(), text.begin() + static_cast<std::ptrdiff_t>(at)), at += Parts.size()), ...);
  return text;
}();

template <const std::string_view&... Parts>
inline constexpr std::string_view joined_view{joined_text<Parts...>.data(), joined_text<Parts...>.size()};

}  // namespace airl::detail
