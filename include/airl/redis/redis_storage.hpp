// SPDX-License-Identifier: MIT
#pragma once
// RedisStorage: the storage policy that shares quotas between replicas through Redis. Each bucket is a
// sorted set plus a small hash (docs/REDIS.md); one Lua script (sliding_window_script.hpp) decides all of a
// request's buckets atomically on Redis's clock, through the one command path both Redis storages share
// (detail/script_client.hpp). When Redis fails, acquire() applies RedisOptions::on_failure instead of throwing.

#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../clock.hpp"
#include "../detail/part_array.hpp"
#include "../detail/random_bits.hpp"
#include "../detail/validate.hpp"
#include "../detail/verdict.hpp"
#include "../in_memory_storage.hpp"
#include "../storage_policy.hpp"
#include "detail/redis_backend.hpp"
#include "detail/script_client.hpp"
#include "errors.hpp"
#include "key_layout.hpp"
#include "options.hpp"
#include "sliding_window_script.hpp"
#include "topology_metrics.hpp"

namespace airl {

namespace testing {
class RedisTestClock;  // tests only: include/airl/redis/testing_clock.hpp
}  // namespace testing

namespace detail {
// The rate storage's own state: what makes its generated members unique across processes.
struct RateMembers {
  std::uint64_t seed = random_bits();
  std::atomic<std::uint64_t> counter{0};
  std::function<std::int64_t()> test_now_us;  // set only by testing::RedisTestClock: the script's time
};
}  // namespace detail

class RedisStorage : public detail::RedisBackend<InMemoryStorage<SteadyClock>, detail::RateMembers> {
 public:
  // Connects lazily: does not fail when Redis is down. Throws std::invalid_argument on bad options
  // (empty key_prefix or one with '{' '}', pool_size 0, bad port, timeouts <= 0, negative database).
  // Movable: every member of a moved-from storage throws std::logic_error naming it.
  explicit RedisStorage(RedisOptions options = {})
      : RedisBackend(std::move(options), detail::sliding_window_script, "the airl script", "airl::RedisStorage") {}

  // Decides the charges all-or-nothing: in one script call when they share a Redis Cluster slot (always,
  // off a cluster), else one call per slot, in parallel, with the slots that admitted undone when another
  // denied (docs/REDIS.md, "Across slots"). Thread safety: safe from any thread. Never throws for backend
  // faults: applies on_failure and sets AcquireResult::degraded. Throws std::invalid_argument for no
  // charges, a window outside (0, max_window], cost 0, a limit above 2^53 (Lua numbers are doubles), an
  // unknown scope, a part longer than 65535 bytes, or a repeated bucket. A cost above 2^53 exceeds every
  // limit: a 'never' denial, as in memory.
  AcquireResult acquire(std::span<const Charge> charges, std::string_view request_id) {
    core("acquire");
    const AcquireCall call{charges, request_id};
    return std::move(decide({&call, 1}).front());
  }

  // Decides a batch: one script call per request and slot, grouped by server, each server's share pipelined
  // (one round trip), the servers in parallel; each request all-or-nothing on its own (on a cluster a request
  // split across slots ends a round: see decide()). Thread safety: safe.
  // Never throws for backend faults: a request whose server failed gets the failure policy's decision.
  // Throws std::invalid_argument like acquire(), before sending anything.
  std::vector<AcquireResult> acquire_many(std::span<const AcquireCall> calls) {
    core("acquire_many");
    return decide(calls);
  }

  // How the storage followed its servers (redirects, slot map reads, Sentinel rediscoveries). Thread
  // safety: safe. Throws std::logic_error when moved from.
  RedisTopologyMetrics topology_metrics() const { return core("topology_metrics").client.topology_metrics(); }

  // Replaces, in every charge's bucket that still logs `request_id`, that entry's cost by the charge's cost
  // (see SettlingStoragePolicy), in one atomic script call. Returns how many buckets logged it. With
  // FailurePolicy::local the local fallback store is settled too (it may hold requests admitted during an
  // outage), and the answer counts both. Thread safety: safe. Throws BackendError when Redis fails, except
  // under FailurePolicy::local (then the local store's answer is returned): the reservation then stands and
  // expires with its window. Throws std::invalid_argument on a bad window, a cost above 2^53, an unknown
  // scope, a part longer than 65535 bytes or a repeated bucket (before sending anything), or when a bucket's
  // total would pass 2^53 (the script then writes nothing in that slot).
  std::size_t settle(std::span<const Charge> charges, std::string_view request_id) {
    return change_costs(charges, request_id, "settle");
  }

  // settle(), then every bucket that logged `request_id` forgets it (see RefundingStoragePolicy): the entry
  // stays at its time under another member, and the same id is decided afresh. Thread safety and throws: as
  // settle().
  std::size_t refund(std::span<const Charge> charges, std::string_view request_id) {
    return change_costs(charges, request_id, "refund");
  }

  // Cost units counting in `bucket` now. Thread safety: safe. Throws BackendError when Redis fails;
  // std::invalid_argument on a bad window, an unknown scope or a part longer than 65535 bytes.
  std::uint64_t usage(const BucketRef& bucket, Quota quota) {
    core("usage");
    detail::validate_quota(quota, bucket.name);
    detail::validate_bucket(bucket, "airl::RedisStorage::usage");
    const Charge charge{bucket, quota, 1};
    std::vector<Part> parts = split({&charge, 1}, "usage");
    parts[0].call.numbers.assign(1, std::to_string(micros(quota.window)));
    finish_call(parts[0].call, "usage", {});
    const detail::Reply reply = core().client.eval(parts[0].call.words);
    if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0) throw ReplyError("airl: unexpected usage reply");
    return static_cast<std::uint64_t>(reply->integer);
  }

  // Deletes the buckets: one UNLINK per bucket (its two keys share a slot), all in one run. Thread safety:
  // safe. Throws BackendError when Redis fails; std::invalid_argument on an unknown scope or a part longer
  // than 65535 bytes (before deleting any).
  void erase(std::span<const BucketRef> buckets) {
    Core& core = this->core("erase");
    for (const BucketRef& bucket : buckets) detail::validate_bucket(bucket, "airl::RedisStorage::erase");
    std::vector<std::string> keys(buckets.size() * 2);
    std::vector<std::array<std::string_view, 3>> words(buckets.size());
    std::vector<detail::Command> commands;
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      detail::redis_bucket_key(keys[2 * i], core.options.key_prefix, buckets[i]);
      detail::redis_costs_key(keys[2 * i + 1], keys[2 * i]);
      words[i] = {"UNLINK", keys[2 * i], keys[2 * i + 1]};
      commands.push_back(detail::Command{words[i], keys[2 * i], /*script=*/false});
    }
    for (detail::Outcome& outcome : core.client.run(commands)) core.client.check(*outcome.take());
  }

  // Deletes every key of `user` (user and user_model buckets), found with SCAN (never KEYS, which would
  // block Redis) on the one server of the user's slot (the pattern holds the user's hash tag, so it routes
  // there). Thread safety: safe. Throws BackendError when Redis fails.
  void erase_user(std::string_view user) {
    Core& core = this->core("erase_user");
    const std::string pattern = detail::redis_user_pattern(core.options.key_prefix, user);
    std::string cursor = "0";
    do {
      const std::string_view scan[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
      const detail::Reply reply = core.client.command(scan, pattern, "SCAN");
      if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) throw ReplyError("airl: unexpected SCAN reply");
      cursor.assign(detail::reply_text(*reply->element[0]));
      const redisReply& found = *reply->element[1];
      if (found.elements == 0) continue;
      std::vector<std::string_view> unlink = {"UNLINK"};
      for (std::size_t i = 0; i < found.elements; ++i) unlink.push_back(detail::reply_text(*found.element[i]));
      core.client.command(unlink, pattern, "UNLINK");
    } while (cursor != "0");
  }

 private:
  friend class testing::RedisTestClock;
  friend struct detail::ReplyDecoderAccess;  // tests/fuzz/redis_reply_fuzz.cpp: the reply decoders below

  // Tests only (testing_clock.hpp): the script variant that decides at `now_us()` (microseconds), sent as
  // every call's last argument, instead of on Redis's clock. Private: no option of a storage reaches it.
  RedisStorage(RedisOptions options, std::function<std::int64_t()> now_us)
      : RedisBackend(std::move(options), detail::sliding_window_script_client_clock, "the airl script (test clock)",
                     "airl::RedisStorage") {
    core().test_now_us = std::move(now_us);
  }

  // Builds a script call's words; on a test clock its time goes last.
  void finish_call(detail::ScriptCall& call, std::string_view op, std::initializer_list<std::string_view> extra) const {
    if (core().test_now_us) call.numbers.push_back(std::to_string(core().test_now_us()));
    call.finish(op, extra);
  }

  // The storage's own checks on what it is handed, before anything is sent.
  void validate(std::span<const Charge> charges) const {
    detail::validate_charges(charges, "airl::RedisStorage");  // limits of at most 2^53 among them
    core();  // not moved from
  }

  // `op`: "settle" or "refund" (the script's operations of that name): one call per slot, in parallel.
  std::size_t change_costs(std::span<const Charge> charges, std::string_view request_id, const char* op) {
    Core& core = this->core(op);  // the member's name
    detail::validate_settle_charges(charges, "airl::RedisStorage");
    for (const Charge& charge : charges) {
      if (charge.cost > max_exact_count) throw std::invalid_argument("airl::RedisStorage: costs must be at most 2^53");
    }
    if (charges.empty() || request_id.empty()) return 0;
    std::string member;
    request_member(member, request_id);
    std::vector<Part> parts = split(charges, op);
    std::vector<detail::Command> commands;
    for (Part& part : parts) {
      part.call.numbers.clear();
      for (const std::size_t i : part.charges) {
        part.call.numbers.push_back(std::to_string(micros(charges[i].quota.window)));
        part.call.numbers.push_back(std::to_string(charges[i].cost));
      }
      finish_call(part.call, op, {member});
      commands.push_back(command_of(part));
    }
    InMemoryStorage<SteadyClock>* const local = core.fallback.local();
    const std::size_t settled_locally = local == nullptr ? 0
                                          : op == std::string_view("refund") ? local->refund(charges, request_id)
                                                                               : local->settle(charges, request_id);
    std::vector<detail::Outcome> outcomes = core.client.run(commands);
    std::size_t settled = settled_locally;
    for (std::size_t p = 0; p < parts.size(); ++p) {
      try {
        const detail::Reply reply = outcomes[p].take();
        core.client.check(*reply);
        // The script wrote nothing: a settled cost would pass 2^53. A refund (cost 0) never can, so there -1
        // is a malformed reply (ReplyError below), not the caller's mistake (found by tests/fuzz).
        if (reply->type == REDIS_REPLY_INTEGER && reply->integer == -1 && op == std::string_view("settle")) {
          throw std::invalid_argument("airl::RedisStorage::" + std::string(op) +
                                      ": a settled cost would bring a bucket's total above 2^53");
        }
        if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0 ||
            static_cast<std::size_t>(reply->integer) > parts[p].charges.size()) {
          throw ReplyError(std::string("airl: unexpected ") + op + " reply");
        }
        settled += static_cast<std::size_t>(reply->integer);
      } catch (const BackendError& error) {
        core.client.record(error);
        if (local == nullptr) throw;
      }
    }
    return settled;
  }

  // The charges of one request that share a slot (all of them, off a cluster), and their script call.
  struct Part {
    std::vector<std::size_t> charges;  // indices into the request's charges
    detail::ScriptCall call;           // its keys filled in; words built by the caller
  };

  // `charges` split by slot, in order of first appearance, with every part's keys filled in (refusing a
  // repeated bucket).
  std::vector<Part> split(std::span<const Charge> charges, std::string_view op) const {
    detail::SlotParts<Part> parts;
    std::string key;
    for (std::size_t i = 0; i < charges.size(); ++i) {
      detail::redis_bucket_key(key, core().options.key_prefix, charges[i].bucket);
      Part& part = parts.of(core().client.slot_of(key));
      for (std::size_t k = 0; k < part.call.keys.size(); k += 2) {
        if (part.call.keys[k] == key) {
          throw std::invalid_argument("airl::RedisStorage::" + std::string(op) + ": two charges name the same bucket");
        }
      }
      part.charges.push_back(i);
      part.call.keys.push_back(key);
      part.call.keys.emplace_back();
      detail::redis_costs_key(part.call.keys.back(), key);
    }
    return std::move(parts).take();
  }

  static detail::Command command_of(const Part& part) {
    return detail::Command{part.call.words, part.call.keys.front()};
  }

  // One request being decided: its member, its parts, and what each part's call answered.
  struct Pending {
    std::string member;
    std::vector<Part> parts;
    std::vector<int> status;  // per part: 0 denied, 1 admitted, 2 replayed, -1 failed (sent[p]: maybe ran)
    std::vector<bool> sent;
    std::vector<detail::WindowVerdict> verdicts;  // per charge
    std::optional<AcquireResult> degraded;         // the failure policy's decision, when it decides
  };

  // The decisions of a batch (acquire() is a batch of one), in runs: every part of every request of a run
  // sent at once, then one more round trip undoing the parts of requests that were not admitted everywhere.
  // A run ends after a request split across slots (a cluster): a later request of the batch must not see an
  // entry that is about to be undone, so the batch decides as allow() for each in turn would. Off a cluster
  // a request is one part: the whole batch is one run, and the undo never happens.
  std::vector<AcquireResult> decide(std::span<const AcquireCall> calls) {
    for (const AcquireCall& call : calls) validate(call.charges);
    std::vector<Pending> pending(calls.size());
    for (std::size_t c = 0; c < calls.size(); ++c) {
      Pending& request = pending[c];
      make_member(calls[c].request_id, request.member);
      request.parts = split(calls[c].charges, "acquire");
      request.status.assign(request.parts.size(), -1);
      request.sent.assign(request.parts.size(), false);
      request.verdicts.resize(calls[c].charges.size());
      for (Part& part : request.parts) build_acquire_call(calls[c].charges, part, request.member, !calls[c].request_id.empty());
    }
    // One deadline for the whole call, the undo of a partial admission included: a hung server costs a
    // decision connect_timeout + command_timeout, not twice that.
    const auto deadline = core().client.deadline();
    for (std::size_t begin = 0; begin < calls.size();) {
      std::size_t end = begin;
      while (end < calls.size() && pending[end].parts.size() == 1) ++end;
      if (end < calls.size()) ++end;  // the split request closes the run
      decide_run(calls.subspan(begin, end - begin), std::span<Pending>(pending).subspan(begin, end - begin), deadline);
      begin = end;
    }
    std::vector<AcquireResult> results;
    results.reserve(calls.size());
    for (std::size_t c = 0; c < calls.size(); ++c) {
      if (pending[c].degraded) {
        results.push_back(*pending[c].degraded);
        continue;
      }
      const std::vector<int>& status = pending[c].status;
      const bool replayed = std::count(status.begin(), status.end(), 2) > 0;
      AcquireResult result = detail::combine_verdicts(pending[c].verdicts, calls[c].charges, replayed);
      detail::note_other_group(result, pending[c].verdicts, calls[c].charges);
      results.push_back(result);
    }
    return results;
  }

  // One run of decide(): sends every part, reads the answers, applies the failure policy, undoes partials.
  void decide_run(std::span<const AcquireCall> calls, std::span<Pending> pending,
                  detail::ScriptClient::Clock::time_point deadline) {
    std::vector<detail::Command> commands;
    for (const Pending& request : pending) {
      for (const Part& part : request.parts) commands.push_back(command_of(part));
    }
    std::vector<detail::Outcome> outcomes = core().client.run(commands, deadline);
    std::size_t next = 0;
    for (std::size_t c = 0; c < calls.size(); ++c) {
      Pending& request = pending[c];
      for (std::size_t p = 0; p < request.parts.size(); ++p, ++next) {
        request.sent[p] = outcomes[next].sent;
        try {
          const detail::Reply reply = outcomes[next].take();
          core().client.check(*reply);
          request.status[p] = parse_acquire_reply(*reply, request.parts[p], request.verdicts);
        } catch (const BackendError& error) {
          core().client.record(error);  // what last_backend_error() names as the cause of a degraded decision
          request.status[p] = -1;
        }
      }
      // A part that failed decides nothing where another denied or replayed: that answer stands, as one
      // server's would. Only when no part answered so does the failure policy decide the request.
      const auto& status = request.status;
      const bool failed = std::count(status.begin(), status.end(), -1) > 0;
      const bool answered = std::count(status.begin(), status.end(), 0) + std::count(status.begin(), status.end(), 2) > 0;
      if (failed && !answered) request.degraded = degrade(calls[c].charges, calls[c].request_id);
    }
    undo_partial(calls, pending, deadline);
  }

  // The parts of a request that was not admitted everywhere take its entry back (by its member): those that
  // admitted it, and those that failed after it was sent (they may have). Undone parts report their buckets
  // as they are then, and parts that failed report room, so the Decision is one server's (nothing charged).
  // A request the failure policy admitted keeps what its parts recorded. An undo that fails leaves the entry
  // until its window passes: an over-charge, never an over-admission (docs/REDIS.md, "Across slots").
  void undo_partial(std::span<const AcquireCall> calls, std::span<Pending> pending,
                    detail::ScriptClient::Clock::time_point deadline) {
    std::vector<std::pair<std::size_t, std::size_t>> undone;  // (request, part)
    std::vector<detail::Command> commands;
    for (std::size_t c = 0; c < calls.size(); ++c) {
      Pending& request = pending[c];
      const std::vector<int>& status = request.status;
      const bool whole = std::all_of(status.begin(), status.end(), [](int s) { return s == 1; });
      const bool replayed = std::count(status.begin(), status.end(), 2) > 0;
      const bool admitted_anyway = request.degraded && (request.degraded->status == Status::allowed ||
                                                        request.degraded->status == Status::replayed);
      if (whole || admitted_anyway) continue;
      for (std::size_t p = 0; p < status.size(); ++p) {
        Part& part = request.parts[p];
        for (const std::size_t i : part.charges) {
          detail::WindowVerdict& verdict = request.verdicts[i];
          const Charge& charge = calls[c].charges[i];
          if (status[p] == -1) {  // unknown: reported as room, so it never binds a known answer
            verdict = {.fits = true, .remaining = charge.quota.limit - std::min(charge.cost, charge.quota.limit),
                       .reset_after = charge.quota.window.count() * 1'000'000};
          }
          if (replayed && status[p] == 0) {  // a replay charges nothing: what did not fit did not need to
            verdict.fits = true;
            verdict.retry_after = 0;
          }
        }
        if (status[p] != 1 && !(status[p] == -1 && request.sent[p])) continue;
        part.call.numbers.clear();
        for (const std::size_t i : part.charges) {
          part.call.numbers.push_back(std::to_string(calls[c].charges[i].quota.limit));
          part.call.numbers.push_back(std::to_string(micros(calls[c].charges[i].quota.window)));
        }
        finish_call(part.call, "undo", {request.member});
        commands.push_back(command_of(part));
        undone.emplace_back(c, p);
      }
    }
    if (commands.empty()) return;
    std::vector<detail::Outcome> outcomes = core().client.run(commands, deadline);
    for (std::size_t u = 0; u < undone.size(); ++u) {
      const auto [c, p] = undone[u];
      const Part& part = pending[c].parts[p];
      if (pending[c].status[p] != 1) continue;  // a failed part keeps its reported room
      try {
        const detail::Reply reply = outcomes[u].take();
        core().client.check(*reply);
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 * part.charges.size()) {
          throw ReplyError("airl: unexpected undo reply");
        }
        for (std::size_t k = 0; k < part.charges.size(); ++k) {
          const redisReply& room = *reply->element[2 * k];
          const redisReply& reset = *reply->element[2 * k + 1];
          if (!counted(room, 0) || !counted(reset, 0)) throw ReplyError("airl: unexpected undo reply");
          detail::WindowVerdict& verdict = pending[c].verdicts[part.charges[k]];
          verdict.remaining = static_cast<std::uint64_t>(room.integer);
          verdict.reset_after = reset.integer * 1000;
        }
      } catch (const BackendError& error) {  // the entry stays: report the room as if it had gone
        core().client.record(error);
        for (const std::size_t i : part.charges) {
          pending[c].verdicts[i].remaining += std::min(calls[c].charges[i].cost, calls[c].charges[i].quota.limit);
        }
      }
    }
  }

  // The member that logs the request: "i" + the caller's (user, model, id) for request ids, "g" + seed +
  // counter otherwise; the two never collide, and a counter of 1..8 bytes after a fixed 8-byte seed never
  // repeats a member. One member per request, in every slot it spans.
  void make_member(std::string_view request_id, std::string& member) const {
    if (!request_id.empty()) return request_member(member, request_id);
    detail::redis_generated_member(member, core().seed, core().counter.fetch_add(1, std::memory_order_relaxed));
  }

  // <2n> log1 costs1 ... 'acquire' member is_request_id (limit window_us cost)*n, for the part's charges.
  void build_acquire_call(std::span<const Charge> charges, Part& part, std::string_view member, bool is_request_id) const {
    part.call.numbers.clear();
    for (const std::size_t i : part.charges) {
      part.call.numbers.push_back(std::to_string(charges[i].quota.limit));
      part.call.numbers.push_back(std::to_string(micros(charges[i].quota.window)));
      // Above 2^53 a cost exceeds every limit, whatever its value: sent as 2^54, which Lua's doubles hold
      // exactly (2^53 + 1 would round down to 2^53 and fit a limit of 2^53).
      const std::uint64_t cost = charges[i].cost > max_exact_count ? 2 * max_exact_count : charges[i].cost;
      part.call.numbers.push_back(std::to_string(cost));
    }
    finish_call(part.call, "acquire", {member, is_request_id ? "1" : "0"});
  }

  // The member that logs a caller's request id.
  static void request_member(std::string& out, std::string_view request_id) { detail::redis_request_member(out, request_id); }

  // Whether `element` is an integer the script can answer: a count or a time in microseconds, in
  // [lowest, 2^53] (-1 is "never" where a time may be), so none wraps when read or scaled to nanoseconds.
  static bool counted(const redisReply& element, long long lowest) noexcept {
    return element.type == REDIS_REPLY_INTEGER && element.integer >= lowest &&
           element.integer <= static_cast<long long>(max_exact_count);
  }

  // Reads one part's acquire reply into the verdicts of its charges; returns its status (0 denied, 1
  // admitted, 2 replayed). Throws ReplyError on a malformed reply.
  static int parse_acquire_reply(const redisReply& reply, const Part& part, std::vector<detail::WindowVerdict>& verdicts) {
    const std::size_t n = part.charges.size();
    if (reply.type != REDIS_REPLY_ARRAY || reply.elements != 1 + 4 * n) {
      throw ReplyError("airl: unexpected reply from the airl script");
    }
    auto integer = [&](std::size_t i, long long lowest = 0) {
      const redisReply& element = *reply.element[i];
      if (!counted(element, lowest)) throw ReplyError("airl: unexpected reply from the airl script");
      return element.integer;
    };
    const long long status = integer(0);
    if (status < 0 || status > 2) throw ReplyError("airl: unexpected reply from the airl script");
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t at = 1 + 4 * k;
      const long long retry_us = integer(at + 2, -1);
      if (integer(at) > 1) throw ReplyError("airl: unexpected reply from the airl script");
      verdicts[part.charges[k]] = {.fits = integer(at) == 1,
                                   .remaining = static_cast<std::uint64_t>(integer(at + 1)),
                                   .retry_after = retry_us < 0 ? detail::never_ticks : retry_us * 1000,
                                   .reset_after = integer(at + 3) * 1000};
    }
    return static_cast<int>(status);
  }

  // The decision when Redis failed, per on_failure. Always degraded.
  AcquireResult degrade(std::span<const Charge> charges, std::string_view request_id) {
    AcquireResult result = core().fallback.decide(
        [&] {  // nothing is known about usage: report the quota as if empty
          AcquireResult open;
          open.status = Status::allowed;
          open.remaining = charges[0].quota.limit - std::min(charges[0].cost, charges[0].quota.limit);
          open.reset_after = charges[0].quota.window;
          for (std::size_t i = 1; i < charges.size(); ++i) {  // and the other group's first charge likewise
            if (charges[i].group == charges[0].group) continue;
            open.other_group = GroupBinding{true, i, charges[i].quota.limit - std::min(charges[i].cost, charges[i].quota.limit),
                                            charges[i].quota.window};
            break;
          }
          return open;
        },
        [&] {
          AcquireResult closed;
          closed.status = Status::backend_unavailable;
          closed.retry_after = std::max(core().client.retry_hint(), std::chrono::milliseconds{1});
          return closed;
        },
        [&](InMemoryStorage<SteadyClock>& local) { return local.acquire(charges, request_id); });
    result.degraded = true;
    return result;
  }
};

static_assert(StoragePolicy<RedisStorage> && RefundingStoragePolicy<RedisStorage>);

}  // namespace airl
