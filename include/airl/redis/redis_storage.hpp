// SPDX-License-Identifier: MIT
#pragma once
// RedisStorage: the storage policy that shares quotas between replicas through Redis. Each bucket is a
// sorted set plus a small hash (docs/REDIS.md); one Lua script decides all of a request's buckets atomically
// on Redis's clock. When Redis fails, acquire() applies RedisOptions::on_failure instead of throwing.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../clock.hpp"
#include "../detail/combine_verdicts.hpp"
#include "../detail/validate.hpp"
#include "../in_memory_storage.hpp"
#include "../storage_policy.hpp"
#include "connection_pool.hpp"
#include "errors.hpp"
#include "key_layout.hpp"
#include "options.hpp"
#include "script.hpp"

namespace airl {

namespace detail {

// Largest limit or cost the Redis script handles exactly (Lua numbers are doubles).
inline constexpr std::uint64_t redis_max_exact = std::uint64_t{1} << 53;

inline void validate_redis_options(const RedisOptions& options) {
  validate_key_prefix(options.key_prefix);
  if (options.pool_size == 0) throw std::invalid_argument("airl::RedisOptions: pool_size must be at least 1");
  if (options.unix_socket.empty() && (options.port <= 0 || options.port > 65535)) {
    throw std::invalid_argument("airl::RedisOptions: port must be in 1..65535");
  }
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0) {
    throw std::invalid_argument("airl::RedisOptions: timeouts must be > 0");
  }
  if (options.database < 0) throw std::invalid_argument("airl::RedisOptions: database must be >= 0");
  if (options.on_failure != FailurePolicy::fail_open && options.on_failure != FailurePolicy::fail_closed &&
      options.on_failure != FailurePolicy::local) {
    throw std::invalid_argument("airl::RedisOptions: unknown on_failure policy");
  }
}

// Per-thread buffers for building a script call.
struct RedisScratch {
  std::vector<std::string> keys;
  std::vector<std::string> numbers;
  std::vector<std::string_view> args;
  std::string member;

  static RedisScratch& for_this_thread() {
    thread_local RedisScratch scratch;
    return scratch;
  }
  // One per call of a batch, reused by the thread's next batches (their strings keep their capacity).
  static std::vector<RedisScratch>& batch_for_this_thread() {
    thread_local std::vector<RedisScratch> batch;
    return batch;
  }
};

}  // namespace detail

class RedisStorage {
 public:
  // Connects lazily: does not fail when Redis is down. Throws std::invalid_argument on bad options
  // (empty key_prefix or one with '{' '}', pool_size 0, bad port, timeouts <= 0, negative database).
  explicit RedisStorage(RedisOptions options = {}) {
    detail::validate_redis_options(options);
    state_ = std::make_unique<State>(std::move(options));
  }

  RedisStorage(RedisStorage&&) noexcept = default;
  RedisStorage& operator=(RedisStorage&&) noexcept = default;

  // Decides the charges all-or-nothing in one script call. Thread safety: safe from any thread.
  // Never throws for backend faults: applies on_failure and sets AcquireResult::degraded.
  // Throws std::invalid_argument for no charges, a window outside (0, max_window], cost 0, a limit or cost
  // above 2^53 (Lua numbers are doubles), an unknown scope, a part longer than 65535 bytes, or a repeated bucket.
  AcquireResult acquire(std::span<const Charge> charges, std::string_view request_id) {
    validate(charges);
    auto& scratch = detail::RedisScratch::for_this_thread();
    build_acquire_call(charges, request_id, scratch);
    try {
      detail::Reply reply = state_->pool.run([&](detail::RedisConnection& connection) {
        return evalsha(connection, scratch.args);
      });
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
    std::vector<detail::RedisScratch>& batch = detail::RedisScratch::batch_for_this_thread();
    if (batch.size() < calls.size()) batch.resize(calls.size());  // sized before building: args point into it
    const std::span<detail::RedisScratch> built(batch.data(), calls.size());
    for (std::size_t i = 0; i < calls.size(); ++i) build_acquire_call(calls[i].charges, calls[i].request_id, built[i]);
    results.reserve(calls.size());
    try {
      const std::vector<detail::Reply> replies = state_->pool.run([&](detail::RedisConnection& connection) {
        return evalsha_many(connection, built);
      });
      for (std::size_t i = 0; i < calls.size(); ++i) {
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
    require_usable();
    detail::validate_settle_charges(charges, "airl::RedisStorage");
    for (const Charge& charge : charges) {
      if (charge.cost > detail::redis_max_exact) throw std::invalid_argument("airl::RedisStorage: costs must be at most 2^53");
    }
    if (charges.empty() || request_id.empty()) return 0;
    const std::size_t n = charges.size();
    auto& scratch = detail::RedisScratch::for_this_thread();
    scratch.keys.resize(2 * n);
    scratch.numbers.resize(1 + 2 * n);
    for (std::size_t i = 0; i < n; ++i) {
      detail::redis_bucket_key(scratch.keys[2 * i], state_->options.key_prefix, charges[i].bucket);
      detail::redis_costs_key(scratch.keys[2 * i + 1], scratch.keys[2 * i]);
      for (std::size_t j = 0; j < i; ++j) {
        if (scratch.keys[2 * j] == scratch.keys[2 * i]) {
          throw std::invalid_argument("airl::RedisStorage::settle: two charges name the same bucket");
        }
      }
      scratch.numbers[1 + 2 * i] = std::to_string(window_us(charges[i].quota));
      scratch.numbers[2 + 2 * i] = std::to_string(charges[i].cost);
    }
    request_member(scratch.member, request_id);
    scratch.numbers[0] = std::to_string(2 * n);
    scratch.args.assign({"EVALSHA", "", scratch.numbers[0]});
    scratch.args.insert(scratch.args.end(), scratch.keys.begin(), scratch.keys.end());
    scratch.args.insert(scratch.args.end(), {"settle", scratch.member});
    scratch.args.insert(scratch.args.end(), scratch.numbers.begin() + 1, scratch.numbers.end());
    const std::size_t local = state_->local ? state_->local->settle(charges, request_id) : 0;
    try {
      detail::Reply reply = state_->pool.run([&](detail::RedisConnection& connection) {
        return evalsha(connection, scratch.args);
      });
      if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0 || static_cast<std::size_t>(reply->integer) > n) {
        throw ReplyError("airl: unexpected settle reply");
      }
      return local + static_cast<std::size_t>(reply->integer);
    } catch (const BackendError&) {
      if (state_->local) return local;
      throw;
    }
  }

  // Cost units counting in `bucket` now. Thread safety: safe. Throws BackendError when Redis fails;
  // std::invalid_argument on a bad window, an unknown scope or a part longer than 65535 bytes.
  std::uint64_t usage(const BucketRef& bucket, Quota quota) {
    detail::validate_quota(quota, bucket.tier);
    detail::validate_bucket(bucket, "airl::RedisStorage::usage");
    require_usable();
    auto& scratch = detail::RedisScratch::for_this_thread();
    scratch.keys.resize(2);
    detail::redis_bucket_key(scratch.keys[0], state_->options.key_prefix, bucket);
    detail::redis_costs_key(scratch.keys[1], scratch.keys[0]);
    const std::string window = std::to_string(window_us(quota));
    std::string_view args[] = {"EVALSHA", "", "2", scratch.keys[0], scratch.keys[1], "usage", window};
    detail::Reply reply = state_->pool.run([&](detail::RedisConnection& connection) { return evalsha(connection, args); });
    if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0) throw ReplyError("airl: unexpected usage reply");
    return static_cast<std::uint64_t>(reply->integer);
  }

  // Deletes the buckets. Thread safety: safe. Throws BackendError when Redis fails; std::invalid_argument on
  // an unknown scope or a part longer than 65535 bytes (before deleting any).
  void erase(std::span<const BucketRef> buckets) {
    require_usable();
    for (const BucketRef& bucket : buckets) detail::validate_bucket(bucket, "airl::RedisStorage::erase");
    if (buckets.empty()) return;
    std::vector<std::string> keys(buckets.size() * 2);
    std::vector<std::string_view> args = {"UNLINK"};
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      detail::redis_bucket_key(keys[2 * i], state_->options.key_prefix, buckets[i]);
      detail::redis_costs_key(keys[2 * i + 1], keys[2 * i]);
    }
    args.insert(args.end(), keys.begin(), keys.end());
    run_checked(args, "UNLINK");
  }

  // Deletes every key of `user` (user and user_model buckets), found with SCAN (never KEYS, which would
  // block Redis). Thread safety: safe. Throws BackendError when Redis fails.
  void erase_user(std::string_view user) {
    require_usable();
    const std::string pattern = detail::redis_user_pattern(state_->options.key_prefix, user);
    std::string cursor = "0";
    do {
      const std::string_view scan[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
      detail::Reply reply = run_checked(scan, "SCAN");
      if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) throw ReplyError("airl: unexpected SCAN reply");
      cursor.assign(detail::reply_text(*reply->element[0]));
      const redisReply& found = *reply->element[1];
      if (found.elements == 0) continue;
      std::vector<std::string_view> unlink = {"UNLINK"};
      for (std::size_t i = 0; i < found.elements; ++i) unlink.push_back(detail::reply_text(*found.element[i]));
      run_checked(unlink, "UNLINK");
    } while (cursor != "0");
  }

  // Redis drops idle buckets itself (every key carries a TTL of its window), so there is nothing to purge
  // here; returns the buckets purged from the local fallback. Thread safety: safe.
  std::size_t purge_expired() {
    require_usable();
    return state_->local ? state_->local->purge_expired() : 0;
  }

  // Buckets held in process: the local fallback's (Redis's own keys are counted by Redis: INFO keyspace).
  std::size_t active_keys() const noexcept { return state_ && state_->local ? state_->local->active_keys() : 0; }

  // Whether the last round trip to Redis succeeded. Thread safety: safe. Throws nothing.
  bool healthy() const noexcept { return state_ && state_->pool.healthy(); }

  const RedisOptions& options() const noexcept { return state_->options; }

 private:
  struct State {
    explicit State(RedisOptions opts)
        : options(std::move(opts)), pool(options, detail::sliding_window_script), member_seed(random_seed()) {
      if (options.on_failure == FailurePolicy::local) local = std::make_unique<InMemoryStorage<SteadyClock>>();
    }
    static std::uint64_t random_seed() {
      std::random_device device;
      return (std::uint64_t{device()} << 32) ^ device();
    }

    RedisOptions options;
    detail::RedisConnectionPool pool;
    std::unique_ptr<InMemoryStorage<SteadyClock>> local;  // only with FailurePolicy::local
    std::uint64_t member_seed;                           // makes generated members unique across processes
    std::atomic<std::uint64_t> member_counter{0};
  };

  // The storage's own checks on what it is handed, before anything is sent.
  void validate(std::span<const Charge> charges) const {
    detail::validate_charges(charges, "airl::RedisStorage");
    require_usable();
    for (const Charge& charge : charges) {
      if (charge.quota.limit > detail::redis_max_exact || charge.cost > detail::redis_max_exact) {
        throw std::invalid_argument("airl::RedisStorage: limits and costs must be at most 2^53");
      }
    }
  }

  // The pipelined form of evalsha(): every call in one round trip; calls answered NOSCRIPT are sent again
  // as EVAL in a second round trip. Writes the connection's SHA into each call's args. Error replies become
  // typed exceptions.
  static std::vector<detail::Reply> evalsha_many(detail::RedisConnection& connection,
                                                 std::span<detail::RedisScratch> built) {
    std::vector<std::span<const std::string_view>> commands;
    commands.reserve(built.size());
    for (detail::RedisScratch& call : built) {
      call.args[1] = connection.script_sha();
      commands.emplace_back(call.args);
    }
    std::vector<detail::Reply> replies = connection.pipeline(commands);
    std::vector<std::size_t> reload;
    for (std::size_t i = 0; i < replies.size(); ++i) {
      if (replies[i]->type == REDIS_REPLY_ERROR && detail::reply_text(*replies[i]).starts_with("NOSCRIPT")) {
        reload.push_back(i);
      }
    }
    if (!reload.empty()) {
      std::vector<std::vector<std::string_view>> again;
      for (const std::size_t i : reload) {
        again.emplace_back(commands[i].begin(), commands[i].end());
        again.back()[0] = "EVAL";
        again.back()[1] = detail::sliding_window_script;
      }
      std::vector<detail::Reply> reloaded = connection.pipeline(again);
      for (std::size_t j = 0; j < reload.size(); ++j) replies[reload[j]] = std::move(reloaded[j]);
    }
    for (const detail::Reply& reply : replies) detail::RedisConnection::check_reply(*reply, "the airl script");
    return replies;
  }

  // A moved-from storage has no state: using it is a caller mistake, reported instead of crashing.
  void require_usable() const {
    if (!state_) throw std::logic_error("airl::RedisStorage: used after being moved from");
  }

  static std::int64_t window_us(const Quota& quota) {
    return std::chrono::duration_cast<std::chrono::microseconds>(quota.window).count();
  }

  // EVALSHA with the connection's script. After a NOSCRIPT (restart, SCRIPT FLUSH, failover) the same call
  // is sent as EVAL with the script's text, which loads it and runs it in one atomic step (so no flush can
  // slip in between), and leaves it cached for the next EVALSHA. Error replies become typed exceptions.
  // Writes the command name and SHA into `call` (the caller's buffer: no copy per call).
  static detail::Reply evalsha(detail::RedisConnection& connection, std::span<std::string_view> call) {
    call[0] = "EVALSHA";
    call[1] = connection.script_sha();
    detail::Reply reply = connection.command(call);
    if (reply->type == REDIS_REPLY_ERROR && detail::reply_text(*reply).starts_with("NOSCRIPT")) {
      call[0] = "EVAL";
      call[1] = detail::sliding_window_script;
      reply = connection.command(call);
    }
    detail::RedisConnection::check_reply(*reply, "the airl script");
    return reply;
  }

  detail::Reply run_checked(std::span<const std::string_view> args, std::string_view what) {
    return state_->pool.run([&](detail::RedisConnection& connection) {
      detail::Reply reply = connection.command(args);
      detail::RedisConnection::check_reply(*reply, what);
      return reply;
    });
  }

  // EVALSHA <sha> <2n> log1 costs1 ... 'acquire' member is_request_id (limit window_us cost)*n
  void build_acquire_call(std::span<const Charge> charges, std::string_view request_id,
                          detail::RedisScratch& scratch) const {
    const std::size_t n = charges.size();
    scratch.keys.resize(2 * n);
    scratch.numbers.resize(1 + 3 * n);
    for (std::size_t i = 0; i < n; ++i) {
      detail::redis_bucket_key(scratch.keys[2 * i], state_->options.key_prefix, charges[i].bucket);
      detail::redis_costs_key(scratch.keys[2 * i + 1], scratch.keys[2 * i]);
      for (std::size_t j = 0; j < i; ++j) {
        if (scratch.keys[2 * j] == scratch.keys[2 * i]) {
          throw std::invalid_argument("airl::RedisStorage::acquire: two charges name the same bucket");
        }
      }
      scratch.numbers[1 + 3 * i] = std::to_string(charges[i].quota.limit);
      scratch.numbers[2 + 3 * i] = std::to_string(window_us(charges[i].quota));
      scratch.numbers[3 + 3 * i] = std::to_string(charges[i].cost);
    }
    // Members: "i" + the caller's (user, model, id) for request ids, "g" + seed + counter otherwise; the two
    // never collide, and a counter of 1..8 bytes after a fixed 8-byte seed never repeats a member.
    scratch.member.clear();
    if (!request_id.empty()) {
      request_member(scratch.member, request_id);
    } else {
      // Raw bytes, not decimal text: members are most of a bucket's memory in Redis. 8 random bytes per
      // storage instance, then the counter's significant bytes (little-endian): unique across processes.
      std::uint64_t count = state_->member_counter.fetch_add(1, std::memory_order_relaxed);
      scratch.member.push_back('g');
      for (int byte = 0; byte < 8; ++byte) {
        scratch.member.push_back(static_cast<char>((state_->member_seed >> (8 * byte)) & 0xffu));
      }
      do {
        scratch.member.push_back(static_cast<char>(count & 0xffu));
        count >>= 8;
      } while (count != 0);
    }
    scratch.numbers[0] = std::to_string(2 * n);
    scratch.args.assign({"EVALSHA", "", scratch.numbers[0]});
    scratch.args.insert(scratch.args.end(), scratch.keys.begin(), scratch.keys.end());
    scratch.args.insert(scratch.args.end(), {"acquire", scratch.member, request_id.empty() ? "0" : "1"});
    scratch.args.insert(scratch.args.end(), scratch.numbers.begin() + 1, scratch.numbers.end());
  }

  // The member that logs a caller's request id.
  static void request_member(std::string& out, std::string_view request_id) {
    out.assign(1, 'i');
    out.append(request_id);
  }

  static constexpr std::size_t inline_verdicts = 8;

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
    std::array<detail::WindowVerdict, inline_verdicts> inline_room;  // up to 8 tiers without an allocation
    std::vector<detail::WindowVerdict> heap_room(n > inline_verdicts ? n : 0);
    const std::span<detail::WindowVerdict> verdicts =
        n > inline_verdicts ? std::span(heap_room) : std::span(inline_room).first(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t at = 1 + 4 * i;
      verdicts[i].fits = integer(at) == 1;
      verdicts[i].remaining = static_cast<std::uint64_t>(integer(at + 1));
      const long long retry_us = integer(at + 2);
      verdicts[i].retry_after = retry_us < 0 ? detail::never_ticks : retry_us * 1000;
      verdicts[i].reset_after = integer(at + 3) * 1000;
    }
    AcquireResult result = detail::combine_verdicts(verdicts);
    detail::note_other_group(result, verdicts, charges);
    const long long status = integer(0);
    if (status == 2) result.status = AcquireStatus::replayed;
    return result;
  }

  // The decision when Redis failed, per on_failure. Always degraded.
  AcquireResult degrade(std::span<const Charge> charges, std::string_view request_id) {
    AcquireResult result;
    switch (state_->options.on_failure) {
      case FailurePolicy::local:
        result = state_->local->acquire(charges, request_id);
        break;
      case FailurePolicy::fail_closed:
        result.status = AcquireStatus::backend_unavailable;
        result.retry_after = std::max(state_->pool.retry_hint(), std::chrono::milliseconds{1});
        break;
      case FailurePolicy::fail_open:
        result.status = AcquireStatus::allowed;  // nothing is known about usage: report the quota as if empty
        result.remaining = charges[0].quota.limit - std::min(charges[0].cost, charges[0].quota.limit);
        result.reset_after = charges[0].quota.window;
        for (std::size_t i = 1; i < charges.size(); ++i) {  // and the other group's first charge likewise
          if (charges[i].group == charges[0].group) continue;
          result.other_group = GroupBinding{true, i, charges[i].quota.limit - std::min(charges[i].cost, charges[i].quota.limit),
                                            charges[i].quota.window};
          break;
        }
        break;
    }
    result.degraded = true;
    return result;
  }

  std::unique_ptr<State> state_;
};

static_assert(StoragePolicy<RedisStorage> && SettlingStoragePolicy<RedisStorage>);

}  // namespace airl
