// SPDX-License-Identifier: MIT
#pragma once
// The one Redis command path of both Redis storages. A ScriptClient runs one Lua script (the rate limits' or
// the concurrency caps'), and the few plain commands the storages need, on the right server:
//   - EVALSHA with the SHA the connection's handshake got from SCRIPT LOAD; a NOSCRIPT answer (a restart,
//     SCRIPT FLUSH, a failover to a replica that never loaded it) sends the same call as EVAL, which loads
//     and runs the script in one atomic step, and leaves it cached for the next EVALSHA;
//   - error replies become typed airl::BackendError subclasses with the server's text (one mapping:
//     RedisConnection::check_reply);
//   - batches go out pipelined, one round trip per connection;
//   - every call is bounded by connect_timeout + command_timeout (the pool's deadline).
// Which server a command goes to is decided in one place, route(): the seam where Sentinel discovery and
// Cluster slot routing plug in.

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../errors.hpp"
#include "../options.hpp"
#include "connection.hpp"
#include "connection_pool.hpp"

namespace airl::detail {

// One script call: the words after EVALSHA <sha>, i.e. <numkeys> <keys...> <args...>, viewing the caller's
// buffers.
using ScriptWords = std::span<const std::string_view>;

// A script call being built, in buffers that keep their capacity between calls: keys, then the words
// <numkeys> <keys...> <op> <extra...> <numbers...> viewing them.
struct ScriptCall {
  std::vector<std::string> keys;
  std::vector<std::string> numbers;
  std::string member;  // the member the call names, when it names one
  std::string key_count;
  std::vector<std::string_view> words;

  // Builds `words`. Call last: the words view `keys` and `numbers`, which must not change after.
  void finish(std::string_view op, std::initializer_list<std::string_view> extra) {
    key_count = std::to_string(keys.size());
    words.assign({key_count});
    words.insert(words.end(), keys.begin(), keys.end());
    words.push_back(op);
    words.insert(words.end(), extra.begin(), extra.end());
    words.insert(words.end(), numbers.begin(), numbers.end());
  }
};

class ScriptClient {
 public:
  // Connects lazily (the service may start before Redis). `script` must outlive the client.
  ScriptClient(const RedisOptions& options, std::string_view script, std::string_view script_name)
      : script_(script), name_(script_name), pool_(options, endpoint_of(options), script) {}

  // Runs the script once and returns its reply (never an error reply: those are thrown). `sent` (if given)
  // is set once the call is about to be written to a connection: a failure before that left nothing in Redis.
  // Thread safety: safe. Throws airl::BackendError subclasses.
  Reply eval(ScriptWords call, bool* sent = nullptr) {
    return route(call).run([&](RedisConnection& connection) {
      if (sent != nullptr) *sent = true;
      Reply reply;
      evalsha(connection, {&call, 1}, {&reply, 1});
      RedisConnection::check_reply(*reply, name_);
      return reply;
    });
  }

  // Runs the script once per call, pipelined in one round trip, in order; returns the replies, error replies
  // included (check each with check()): one call's refusal does not fail the others. Thread safety: safe.
  // Throws airl::BackendError subclasses for faults of the connection (then nothing is known of any call).
  std::vector<Reply> eval_many(std::span<const ScriptWords> calls, bool* sent = nullptr) {
    if (calls.empty()) return {};
    return route(calls.front()).run([&](RedisConnection& connection) {
      if (sent != nullptr) *sent = true;
      std::vector<Reply> replies(calls.size());
      evalsha(connection, calls, replies);
      return replies;
    });
  }

  // Runs one plain command (UNLINK, SCAN, ...) and returns its reply; an error reply is thrown. Thread
  // safety: safe. Throws airl::BackendError subclasses.
  Reply command(std::span<const std::string_view> words, std::string_view what) {
    return route({}).run([&](RedisConnection& connection) {
      Reply reply = connection.command(words);
      RedisConnection::check_reply(*reply, what);
      return reply;
    });
  }

  // Throws the typed error of an error reply of this client's script; returns otherwise.
  void check(const redisReply& reply) const { RedisConnection::check_reply(reply, name_); }

  // Whether the last round trip succeeded. Thread safety: safe. Throws nothing.
  bool healthy() const noexcept { return pool_.healthy(); }
  // How long until the next connect attempt (0 when not backing off). Thread safety: safe.
  std::chrono::milliseconds retry_hint() const { return pool_.retry_hint(); }

 private:
  // The connections a call goes to. One server today: the options' host and port.
  RedisConnectionPool& route(ScriptWords /*call*/) noexcept { return pool_; }

  // EVALSHA for each call on one connection, pipelined, into replies[i]; the calls answered NOSCRIPT go again
  // as EVAL with the script's text, pipelined in a second round trip. The only place airl sends EVALSHA or
  // handles NOSCRIPT.
  void evalsha(RedisConnection& connection, std::span<const ScriptWords> calls, std::span<Reply> replies) {
    const std::string_view sha_head[] = {"EVALSHA", connection.script_sha()};
    connection.pipeline(replies, [&](std::size_t i, auto& head, auto& tail) {
      head = sha_head;
      tail = calls[i];
    });
    std::vector<std::size_t> reload;
    for (std::size_t i = 0; i < replies.size(); ++i) {
      if (replies[i]->type == REDIS_REPLY_ERROR && reply_text(*replies[i]).starts_with("NOSCRIPT")) reload.push_back(i);
    }
    if (reload.empty()) return;
    const std::string_view text_head[] = {"EVAL", script_};
    std::vector<Reply> again(reload.size());
    connection.pipeline(again, [&](std::size_t j, auto& head, auto& tail) {
      head = text_head;
      tail = calls[reload[j]];
    });
    for (std::size_t j = 0; j < reload.size(); ++j) replies[reload[j]] = std::move(again[j]);
  }

  std::string_view script_;
  std::string name_;  // "the airl script", for messages
  RedisConnectionPool pool_;
};

}  // namespace airl::detail
