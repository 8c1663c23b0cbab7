// SPDX-License-Identifier: MIT
#pragma once
// Whether a settled request's cost in Redis is what the gateway settled, read straight from Redis.
//
// One dedicated user (the "settler", on a plan no request of it can exceed) sends requests one at a time,
// each with its own X-Request-Id and a max_tokens above --reply-tokens, so the reservation (prompt +
// max_tokens) and the settled cost (prompt + completion tokens: the reply's usage.total_tokens) always
// differ. The gateway settles before the reply's end (a plain reply: before its body; a stream: before its
// last chunk), so right after the answer each of the request's three token buckets (user_model_tpm,
// user_tpm, model_tpm) must hold the request's entry at exactly the settled cost. One Lua call reads,
// atomically, the entry's cost in each bucket (docs/REDIS.md, "Data model": costs hash field "i" +
// the length-prefixed user, model and id) and checks each bucket's running sum (field "") against the sum of
// its logged entries' costs.
//
// Faults make two other outcomes legitimate, and only near a fault (during one or up to 2 s after it):
// a settle that failed leaves the reservation standing; a request admitted by the local store (degraded)
// has no entry unless its timed-out admission ran late in Redis (at the reservation, settled or not).
// So: away from faults, not degraded: every bucket == settled. Near a fault, or degraded: each bucket in
// {settled, reserved} (absent too when degraded). A running sum that disagrees with its entries is wrong
// whenever it is seen.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "faults.hpp"
#include "ledger.hpp"
#include "redis_server.hpp"

namespace airl_soak {

// Reads, for the member ARGV[1], each bucket's (log key KEYS[i]) recorded cost ("" when absent), its
// running sum ("" when it keeps none), the sum of its logged entries' costs (a missing field costs 1, as
// the rate-limit script counts) and its entry count.
inline constexpr const char* read_buckets_lua = R"lua(
local out = {}
for _, log in ipairs(KEYS) do
  local costs = log .. ':c'
  local members = redis.call('ZRANGE', log, 0, -1)
  local total = 0
  for _, m in ipairs(members) do total = total + (tonumber(redis.call('HGET', costs, m)) or 1) end
  out[#out + 1] = redis.call('HGET', costs, ARGV[1]) or ''
  out[#out + 1] = redis.call('HGET', costs, '') or ''
  out[#out + 1] = string.format('%d', total)
  out[#out + 1] = string.format('%d', #members)
end
return out
)lua";

// The member a request id is logged under: "i", then user, model and id, each after its length in 4
// little-endian bytes (written here again, not taken from the library, so the check does not trust it).
inline std::string request_member(const std::string& user, const std::string& model, const std::string& id) {
  std::string member = "i";
  for (const std::string* part : {&user, &model, &id}) {
    const auto size = static_cast<std::uint32_t>(part->size());
    for (int shift = 0; shift < 32; shift += 8) member.push_back(static_cast<char>((size >> shift) & 0xFFu));
    member += *part;
  }
  return member;
}

struct SettleObservation {
  Span span;  // sent .. Redis read
  std::string id;
  bool degraded = false;
  std::uint64_t settled = 0;   // usage.total_tokens
  std::uint64_t reserved = 0;  // usage.prompt_tokens + max_tokens
  bool read = false;           // Redis answered the read
  std::vector<std::optional<std::uint64_t>> recorded;  // per bucket
  std::string sum_error;       // a running sum that disagrees with its entries, described
};

class SettleChecker {
 public:
  SettleChecker(const airl::test::RedisServer& redis, std::string prefix, std::string user)
      : redis_(redis), prefix_(std::move(prefix)), user_(std::move(user)) {}

  // Reads the request's entries after its answer; fills `observation.recorded`, `read` and `sum_error`.
  void read(const std::string& model, SettleObservation& observation) const {
    const std::vector<std::string> logs = {prefix_ + ":{u=" + user_ + "}:um:user_model_tpm:" + model,
                                           prefix_ + ":{u=" + user_ + "}:u:user_tpm",
                                           prefix_ + ":{m=" + model + "}:m:model_tpm"};
    std::vector<std::string> command = {"EVAL", read_buckets_lua, std::to_string(logs.size())};
    command.insert(command.end(), logs.begin(), logs.end());
    command.push_back(request_member(user_, model, observation.id));
    const airl::test::RawReply reply = redis_.command(command);
    observation.span.answered_us = now_us();
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4 * logs.size()) return;
    observation.read = true;
    const auto text = [&](std::size_t i) { return std::string(reply->element[i]->str, reply->element[i]->len); };
    for (std::size_t b = 0; b < logs.size(); ++b) {
      const std::string cost = text(4 * b), sum = text(4 * b + 1), total = text(4 * b + 2), count = text(4 * b + 3);
      observation.recorded.push_back(cost.empty() ? std::nullopt : std::optional<std::uint64_t>(std::stoull(cost)));
      if (!sum.empty() && count != "0" && sum != total) {
        observation.sum_error += logs[b] + ": running sum " + sum + ", its " + count + " entries cost " + total + "; ";
      }
    }
  }

  struct Result {
    std::size_t observed = 0, exact = 0, near_fault = 0, degraded = 0, unread = 0;
    std::vector<std::string> findings;
  };

  // Judges every observation against the faults (see the top of this file).
  static Result judge(const std::vector<SettleObservation>& observations, const FaultInjector& faults,
                      std::int64_t margin_us) {
    Result result;
    for (const SettleObservation& o : observations) {
      ++result.observed;
      if (!o.sum_error.empty()) result.findings.push_back("id " + o.id + ": " + o.sum_error);
      if (!o.read) {
        ++result.unread;
        continue;
      }
      const bool near = faults.near_fault(o.span.sent_us, o.span.answered_us, margin_us);
      std::string wrong;
      for (const std::optional<std::uint64_t>& value : o.recorded) {
        const bool ok = (value && *value == o.settled) ||
                        ((near || o.degraded) && value && *value == o.reserved) || (o.degraded && !value);
        if (!ok) wrong += (value ? std::to_string(*value) : std::string("absent")) + " ";
      }
      if (!wrong.empty()) {
        result.findings.push_back("id " + o.id + (o.degraded ? " (degraded)" : "") + (near ? " (near a fault)" : "") +
                                  ": settled " + std::to_string(o.settled) + ", reserved " +
                                  std::to_string(o.reserved) + ", Redis holds " + wrong);
      }
      if (o.degraded) {
        ++result.degraded;
      } else if (near) {
        ++result.near_fault;
      } else if (wrong.empty()) {
        ++result.exact;
      }
    }
    return result;
  }

 private:
  const airl::test::RedisServer& redis_;
  std::string prefix_;
  std::string user_;
};

}  // namespace airl_soak
