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
#include <memory>
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

namespace airl {

namespace detail {
// The rate storage's own state: what makes its generated members unique across processes.
struct RateMembers {
  std::uint64_t seed = random_bits();
  std::atomic<std::uint64_t> counter{0};
};
}  // namespace detail

class RedisStorage : public detail::RedisBackend<InMemoryStorage<SteadyClock>, detail::RateMembers> {
 public:
  // Connects lazily: does not fail when Redis is down. Throws std::invalid_argument on bad options
  // (empty key_prefix or one with '{' '}', pool_size 0, bad port, timeouts <= 0, negative database).
  explicit RedisStorage(RedisOptions options = {})
      : RedisBackend(std::move(options), detail::sliding_window_script, "the airl script", "airl::RedisStorage") {}

  // Decides the charges all-or-nothing in one script call. Thread safety: safe from any thread.
  // Never throws for backend faults: applies on_failure and sets AcquireResult::degraded.
  // Throws std::invalid_argument for no charges, a window outside (0, max_window], cost 0, a limit or cost
  // above 2^53 (Lua numbers are doubles), an unknown scope, a part longer than 65535 bytes, or a repeated bucket.
  AcquireResult acquire(std::span<const Charge> charges, std::string_view request_id) {
    validate(charges);
    detail::ScriptCall& call = thread_call();
    build_acquire_call(charges, request_id, call);
    try {
      const detail::Reply reply = core().client.eval(call.words);
      return parse_acquire_reply(*reply, charges);
    } catch (const BackendError&) {
      return degrade(charges, request_id);
    }
  }

  // Decides a batch: one script call per request, pipelined on one connection (one round trip), each call
  // atomic and all-or-nothing on its own, in order. Thread safety: safe. Never throws for backend faults:
  // the whole batch then gets the failure policy's decisions. Throws std::invalid_argument like acquire(),
  // before sending anything.
  std::vector<AcquireResult> acquire_many(std::span<const AcquireCall> calls) {
    for (const AcquireCall& call : calls) validate(call.charges);
    std::vector<AcquireResult> results;
    if (calls.empty()) return results;
    thread_local std::vector<detail::ScriptCall> batch;  // keeps its buffers' capacity for the next batches
    if (batch.size() < calls.size()) batch.resize(calls.size());  // sized before building: words point into it
    std::vector<detail::ScriptWords> words(calls.size());
    for (std::size_t i = 0; i < calls.size(); ++i) {
      build_acquire_call(calls[i].charges, calls[i].request_id, batch[i]);
      words[i] = batch[i].words;
    }
    results.reserve(calls.size());
    try {
      const std::vector<detail::Reply> replies = core().client.eval_many(words);
      for (std::size_t i = 0; i < calls.size(); ++i) {
        core().client.check(*replies[i]);
        results.push_back(parse_acquire_reply(*replies[i], calls[i].charges));
      }
    } catch (const BackendError&) {
      results.clear();
      for (const AcquireCall& call : calls) results.push_back(degrade(call.charges, call.request_id));
    }
    return results;
  }

  // Replaces, in every charge's bucket that still logs `request_id`, that entry's cost by the charge's cost
  // (see SettlingStoragePolicy), in one atomic script call. Returns how many buckets logged it. With
  // FailurePolicy::local the local fallback store is settled too (it may hold requests admitted during an
  // outage), and the answer counts both. Thread safety: safe. Throws BackendError when Redis fails, except
  // under FailurePolicy::local (then the local store's answer is returned): the reservation then stands and
  // expires with its window. Throws std::invalid_argument on a bad window, a cost above 2^53, an unknown
  // scope, a part longer than 65535 bytes or a repeated bucket (before sending anything).
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
    detail::validate_quota(quota, bucket.name);
    detail::validate_bucket(bucket, "airl::RedisStorage::usage");
    detail::ScriptCall& call = thread_call();
    const Charge charge{bucket, quota, 1};
    add_keys({&charge, 1}, call, "usage");
    call.numbers.assign(1, std::to_string(micros(quota.window)));
    call.finish("usage", {});
    const detail::Reply reply = core().client.eval(call.words);
    if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0) throw ReplyError("airl: unexpected usage reply");
    return static_cast<std::uint64_t>(reply->integer);
  }

  // Deletes the buckets. Thread safety: safe. Throws BackendError when Redis fails; std::invalid_argument on
  // an unknown scope or a part longer than 65535 bytes (before deleting any).
  void erase(std::span<const BucketRef> buckets) {
    Core& core = this->core();
    for (const BucketRef& bucket : buckets) detail::validate_bucket(bucket, "airl::RedisStorage::erase");
    if (buckets.empty()) return;
    std::vector<std::string> keys(buckets.size() * 2);
    std::vector<std::string_view> words = {"UNLINK"};
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      detail::redis_bucket_key(keys[2 * i], core.options.key_prefix, buckets[i]);
      detail::redis_costs_key(keys[2 * i + 1], keys[2 * i]);
    }
    words.insert(words.end(), keys.begin(), keys.end());
    core.client.command(words, "UNLINK");
  }

  // Deletes every key of `user` (user and user_model buckets), found with SCAN (never KEYS, which would
  // block Redis). Thread safety: safe. Throws BackendError when Redis fails.
  void erase_user(std::string_view user) {
    Core& core = this->core();
    const std::string pattern = detail::redis_user_pattern(core.options.key_prefix, user);
    std::string cursor = "0";
    do {
      const std::string_view scan[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
      const detail::Reply reply = core.client.command(scan, "SCAN");
      if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) throw ReplyError("airl: unexpected SCAN reply");
      cursor.assign(detail::reply_text(*reply->element[0]));
      const redisReply& found = *reply->element[1];
      if (found.elements == 0) continue;
      std::vector<std::string_view> unlink = {"UNLINK"};
      for (std::size_t i = 0; i < found.elements; ++i) unlink.push_back(detail::reply_text(*found.element[i]));
      core.client.command(unlink, "UNLINK");
    } while (cursor != "0");
  }

 private:
  // A thread's buffers for one call (they keep their capacity).
  static detail::ScriptCall& thread_call() {
    thread_local detail::ScriptCall call;
    return call;
  }

  // The storage's own checks on what it is handed, before anything is sent.
  void validate(std::span<const Charge> charges) const {
    detail::validate_charges(charges, "airl::RedisStorage");
    core();  // not moved from
    for (const Charge& charge : charges) {
      if (charge.quota.limit > max_exact_count || charge.cost > max_exact_count) {
        throw std::invalid_argument("airl::RedisStorage: limits and costs must be at most 2^53");
      }
    }
  }

  // The log and costs keys of every charge (call.keys), refusing a repeated bucket.
  void add_keys(std::span<const Charge> charges, detail::ScriptCall& call, std::string_view op) const {
    call.keys.resize(2 * charges.size());
    for (std::size_t i = 0; i < charges.size(); ++i) {
      detail::redis_bucket_key(call.keys[2 * i], core().options.key_prefix, charges[i].bucket);
      detail::redis_costs_key(call.keys[2 * i + 1], call.keys[2 * i]);
      for (std::size_t j = 0; j < i; ++j) {
        if (call.keys[2 * j] == call.keys[2 * i]) {
          throw std::invalid_argument("airl::RedisStorage::" + std::string(op) + ": two charges name the same bucket");
        }
      }
    }
  }

  // `op`: "settle" or "refund" (the script's operations of that name).
  std::size_t change_costs(std::span<const Charge> charges, std::string_view request_id, const char* op) {
    Core& core = this->core();
    detail::validate_settle_charges(charges, "airl::RedisStorage");
    for (const Charge& charge : charges) {
      if (charge.cost > max_exact_count) throw std::invalid_argument("airl::RedisStorage: costs must be at most 2^53");
    }
    if (charges.empty() || request_id.empty()) return 0;
    const std::size_t n = charges.size();
    detail::ScriptCall& call = thread_call();
    add_keys(charges, call, op);
    call.numbers.resize(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
      call.numbers[2 * i] = std::to_string(micros(charges[i].quota.window));
      call.numbers[2 * i + 1] = std::to_string(charges[i].cost);
    }
    request_member(call.member, request_id);
    call.finish(op, {call.member});
    InMemoryStorage<SteadyClock>* const local = core.fallback.local();
    const std::size_t settled_locally = local == nullptr ? 0
                                          : op == std::string_view("refund") ? local->refund(charges, request_id)
                                                                               : local->settle(charges, request_id);
    try {
      const detail::Reply reply = core.client.eval(call.words);
      if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0 || static_cast<std::size_t>(reply->integer) > n) {
        throw ReplyError(std::string("airl: unexpected ") + op + " reply");
      }
      return settled_locally + static_cast<std::size_t>(reply->integer);
    } catch (const BackendError&) {
      if (local != nullptr) return settled_locally;
      throw;
    }
  }

  // <2n> log1 costs1 ... 'acquire' member is_request_id (limit window_us cost)*n
  void build_acquire_call(std::span<const Charge> charges, std::string_view request_id,
                          detail::ScriptCall& call) const {
    const std::size_t n = charges.size();
    add_keys(charges, call, "acquire");
    call.numbers.resize(3 * n);
    for (std::size_t i = 0; i < n; ++i) {
      call.numbers[3 * i] = std::to_string(charges[i].quota.limit);
      call.numbers[3 * i + 1] = std::to_string(micros(charges[i].quota.window));
      call.numbers[3 * i + 2] = std::to_string(charges[i].cost);
    }
    // Members: "i" + the caller's (user, model, id) for request ids, "g" + seed + counter otherwise; the two
    // never collide, and a counter of 1..8 bytes after a fixed 8-byte seed never repeats a member.
    if (!request_id.empty()) {
      request_member(call.member, request_id);
    } else {
      // Raw bytes, not decimal text: members are most of a bucket's memory in Redis. 8 random bytes per
      // storage instance, then the counter's significant bytes (little-endian): unique across processes.
      std::uint64_t count = core().counter.fetch_add(1, std::memory_order_relaxed);
      call.member.assign(1, 'g');
      for (int byte = 0; byte < 8; ++byte) call.member.push_back(static_cast<char>((core().seed >> (8 * byte)) & 0xffu));
      do {
        call.member.push_back(static_cast<char>(count & 0xffu));
        count >>= 8;
      } while (count != 0);
    }
    call.finish("acquire", {call.member, request_id.empty() ? "0" : "1"});
  }

  // The member that logs a caller's request id.
  static void request_member(std::string& out, std::string_view request_id) {
    out.assign(1, 'i');
    out.append(request_id);
  }

  static AcquireResult parse_acquire_reply(const redisReply& reply, std::span<const Charge> charges) {
    const std::size_t n = charges.size();
    if (reply.type != REDIS_REPLY_ARRAY || reply.elements != 1 + 4 * n) {
      throw ReplyError("airl: unexpected reply from the airl script");
    }
    auto integer = [&](std::size_t i) {
      const redisReply& element = *reply.element[i];
      if (element.type != REDIS_REPLY_INTEGER) throw ReplyError("airl: unexpected reply from the airl script");
      return element.integer;
    };
    detail::PartArray<detail::WindowVerdict> verdicts(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t at = 1 + 4 * i;
      const long long retry_us = integer(at + 2);
      verdicts.set(i, {.fits = integer(at) == 1,
                       .remaining = static_cast<std::uint64_t>(integer(at + 1)),
                       .retry_after = retry_us < 0 ? detail::never_ticks : retry_us * 1000,
                       .reset_after = integer(at + 3) * 1000});
    }
    AcquireResult result = detail::combine_verdicts(verdicts.span(), integer(0) == 2);
    detail::note_other_group(result, verdicts.span(), charges);
    return result;
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
