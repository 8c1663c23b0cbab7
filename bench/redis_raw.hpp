// SPDX-License-Identifier: MIT
#pragma once
// The Redis benchmark's baseline client: plain hiredis, no pool, no guards, no parsing beyond what the
// benchmark checks. RawRedis is one connection; RawScriptCall builds the very EVALSHA that
// RedisStorage::acquire() sends for a one-tier limiter (same script, key layout, member shape and
// arguments), so the difference between the two is airl's client side and nothing else.

#include <airl/redis.hpp>
#include <airl/redis/key_layout.hpp>
#include <airl/redis/sliding_window_script.hpp>

#include <hiredis/hiredis.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace airl::bench {

using Reply = airl::detail::Reply;  // a redisReply owned by freeReplyObject, as in the library

// One hiredis connection with a 1 s timeout. Not thread-safe: one per thread.
class RawRedis {
 public:
  RawRedis(const std::string& host, int port) {
    const timeval timeout{1, 0};
    context_.reset(redisConnectWithTimeout(host.c_str(), port, timeout));
    if (!context_ || context_->err != 0) {
      throw std::runtime_error("cannot connect to Redis at " + host + ":" + std::to_string(port) +
                               (context_ ? std::string(": ") + context_->errstr : std::string()));
    }
    redisSetTimeout(context_.get(), timeout);
  }

  // Runs one command; throws on a connection fault or an error reply.
  Reply command(const std::vector<std::string_view>& args) {
    argv_.clear();
    lengths_.clear();
    for (const std::string_view arg : args) {
      argv_.push_back(arg.data());
      lengths_.push_back(arg.size());
    }
    return checked(redisCommandArgv(context_.get(), static_cast<int>(argv_.size()), argv_.data(), lengths_.data()));
  }

  // Queues a command without sending it (redisAppendCommandArgv); get_reply() sends the queue and reads
  // the replies one by one, in order. Throws on a connection fault.
  void append(std::size_t argc, const char** argv, const std::size_t* lengths) {
    if (redisAppendCommandArgv(context_.get(), static_cast<int>(argc), argv, lengths) != REDIS_OK) {
      throw std::runtime_error(std::string("Redis append failed: ") + context_->errstr);
    }
  }
  // Writes what append() queued without waiting for replies (so several connections' round trips overlap).
  void flush() {
    for (int done = 0; done == 0;) {
      if (redisBufferWrite(context_.get(), &done) != REDIS_OK) throw std::runtime_error(std::string("Redis write failed: ") + context_->errstr);
    }
  }
  // The next reply of a pipeline; throws on a connection fault or an error reply.
  Reply get_reply() {
    void* reply = nullptr;
    if (redisGetReply(context_.get(), &reply) != REDIS_OK) reply = nullptr;
    return checked(reply);
  }

  // A field of INFO <section>, e.g. info("memory", "used_memory").
  std::string info(std::string_view section, std::string_view field) {
    const Reply reply = command({"INFO", section});
    const std::string text = "\n" + std::string(reply->str, reply->len);
    const std::string needle = "\n" + std::string(field) + ":";
    const std::size_t at = text.find(needle);
    if (at == std::string::npos) throw std::runtime_error("INFO has no field " + std::string(field));
    const std::size_t start = at + needle.size();
    return text.substr(start, text.find_first_of("\r\n", start) - start);
  }

 private:
  Reply checked(void* raw) {
    Reply reply(static_cast<redisReply*>(raw));
    if (!reply) throw std::runtime_error(std::string("Redis connection failed: ") + context_->errstr);
    if (reply->type == REDIS_REPLY_ERROR) throw std::runtime_error("Redis error: " + std::string(reply->str, reply->len));
    return reply;
  }

  struct ContextDeleter {
    void operator()(redisContext* context) const noexcept { redisFree(context); }
  };
  std::unique_ptr<redisContext, ContextDeleter> context_;
  std::vector<const char*> argv_;
  std::vector<std::size_t> lengths_;
};

// The (user, model) pairs one benchmark thread decides for: a handful of users and models, as one gateway
// sees them in a short interval. `tag` makes them the thread's (and the phase's) own, so keys are distinct.
struct Pairs {
  static constexpr std::array<std::string_view, 4> user_names = {"alice", "bob", "carol", "dave"};
  static constexpr std::array<std::string_view, 2> models = {"llama-3-70b", "mistral-7b"};
  static constexpr std::size_t count = user_names.size() * models.size();

  explicit Pairs(std::string_view tag) {
    for (std::size_t u = 0; u < users.size(); ++u) users[u] = std::string(tag) + "-" + std::string(user_names[u]);
  }
  std::string_view user(std::size_t i) const { return users[i % users.size()]; }
  std::string_view model(std::size_t i) const { return models[(i / users.size()) % models.size()]; }

  std::array<std::string, user_names.size()> users;
};

// The arguments of one acquire() for a one-tier limiter with quota `quota`, exactly as
// RedisStorage::build_acquire_call() lays them out:
//   EVALSHA <sha> 2 <log key> <costs key> acquire <member> 0 <limit> <window us> <cost>
// with generated members of the storage's shape ('r' instead of 'g', an 8-byte seed, the counter's
// significant bytes). One per thread.
class RawScriptCall {
 public:
  static constexpr std::size_t argc = 11;

  RawScriptCall(std::string sha, const std::string& prefix, const Pairs& pairs, airl::Quota quota, std::uint64_t seed)
      : sha_(std::move(sha)),
        limit_(std::to_string(quota.limit)),
        window_us_(std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(quota.window).count())),
        seed_(seed) {
    for (std::size_t p = 0; p < Pairs::count; ++p) {
      airl::detail::redis_bucket_key(keys_[p][0], prefix, {airl::Scope::user_model, "default", pairs.user(p), pairs.model(p)});
      airl::detail::redis_costs_key(keys_[p][1], keys_[p][0]);
    }
  }

  // Fills argv/lengths (argc entries each) for call number `i` (pair i % Pairs::count). The member is
  // written into `member`, which must outlive the use of argv.
  void fill(std::size_t i, std::string& member, const char** argv, std::size_t* lengths) {
    std::uint64_t count = counter_++;
    member.assign(1, 'r');
    for (int byte = 0; byte < 8; ++byte) member.push_back(static_cast<char>((seed_ >> (8 * byte)) & 0xffu));
    do {
      member.push_back(static_cast<char>(count & 0xffu));
      count >>= 8;
    } while (count != 0);
    const auto& keys = keys_[i % Pairs::count];
    const std::array<std::string_view, argc> args = {"EVALSHA", sha_, "2",        keys[0],    keys[1], "acquire",
                                                     member,    "0",  limit_,     window_us_, "1"};
    for (std::size_t a = 0; a < argc; ++a) {
      argv[a] = args[a].data();
      lengths[a] = args[a].size();
    }
  }

  // Whether a reply is an admission (status 1): every benchmark call must be admitted.
  static bool admitted(const redisReply& reply) {
    return reply.type == REDIS_REPLY_ARRAY && reply.elements == 5 && reply.element[0]->integer == 1;
  }

  // Deletes the keys this call writes.
  void unlink(RawRedis& raw) const {
    for (const auto& keys : keys_) raw.command({"UNLINK", keys[0], keys[1]});
  }

 private:
  std::string sha_;
  std::array<std::array<std::string, 2>, Pairs::count> keys_;
  std::string limit_;
  std::string window_us_;
  std::uint64_t seed_;
  std::uint64_t counter_ = 0;
};

}  // namespace airl::bench
