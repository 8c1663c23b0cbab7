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
//   - MOVED / ASK / TRYAGAIN / CLUSTERDOWN / READONLY are followed here, within the same deadline;
//   - a pooled connection found dead before it answered (a restart of Redis) is replaced once, within it too;
//   - the last fault met is kept for the storages' last_backend_error().
// Which server a command goes to is decided in one place, topology.hpp (standalone, Sentinel, Cluster).

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iterator>
#include <optional>
#include <thread>
#include <utility>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../../detail/lock.hpp"
#include "../../detail/mutex.hpp"
#include "../../detail/thread_annotations.hpp"
#include "../errors.hpp"
#include "../options.hpp"
#include "connection.hpp"
#include "connection_pool.hpp"
#include "topology.hpp"

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

// A request split by Redis Cluster slot, as both storages split theirs: one part per slot its keys fall in,
// in order of first appearance (one part off a cluster, where every key has slot 0).
template <class Part>
class SlotParts {
 public:
  // The part of `slot`, made if new (references stay valid until the next new part).
  Part& of(std::uint16_t slot) {
    const auto found = std::find(slots_.begin(), slots_.end(), slot);
    if (found != slots_.end()) return parts_[static_cast<std::size_t>(found - slots_.begin())];
    slots_.push_back(slot);
    return parts_.emplace_back();
  }
  std::vector<Part> take() && { return std::move(parts_); }

 private:
  std::vector<Part> parts_;
  std::vector<std::uint16_t> slots_;
};

// One command of a batch: a script call (the words after EVALSHA <sha>) or a plain command (all its words).
// `key` routes it: in a cluster, to the master of its slot.
struct Command {
  std::span<const std::string_view> words;
  std::string_view key;
  bool script = true;
};

// What became of one command: its reply (error replies included: the caller checks them), or the fault that
// kept it from one. `sent`: it was written to a server, so it may have run there.
struct Outcome {
  Reply reply;
  std::exception_ptr error;
  bool sent = false;

  // The reply, or the fault thrown. Throws what `error` holds.
  Reply take() {
    if (error) std::rethrow_exception(error);
    return std::move(reply);
  }
};

// The last backend fault a client met, for a caller to read (a degraded decision says no more than
// "degraded"). Recorded only on a fault, so the healthy path never takes its lock. Thread safety: safe.
class FaultLog {
 public:
  // Keeps `error` as the last fault, now. Throws nothing (a fault that cannot be copied is not kept).
  void record(const BackendError& error) noexcept {
    try {
      BackendFault fault{std::string(backend_error_type(error)), error.what(), std::chrono::system_clock::now()};
      Lock lock(mutex_);
      last_ = std::move(fault);
    } catch (...) {  // std::bad_alloc
    }
  }
  std::optional<BackendFault> last() const {
    Lock lock(mutex_);
    return last_;
  }

 private:
  mutable Mutex mutex_;
  std::optional<BackendFault> last_ AIRL_GUARDED_BY(mutex_);
};

class ScriptClient {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr int max_redirects = 5;  // per command: MOVED, ASK, READONLY followed

  // Connects lazily (the service may start before Redis). `script` must outlive the client.
  ScriptClient(const RedisOptions& options, std::string_view script, std::string_view script_name)
      : options_(options), script_(script), name_(script_name), topology_(options, script) {}

  // The slot deciding where `key` goes (0 unless in a cluster). Thread safety: pure.
  std::uint16_t slot_of(std::string_view key) const noexcept { return topology_.slot_of(key); }

  // Runs the script once and returns its reply (never an error reply: those are thrown). `sent` (if given)
  // is set once the call is about to be written to a connection: a failure before that left nothing in Redis.
  // Thread safety: safe. Throws airl::BackendError subclasses.
  Reply eval(ScriptWords call, bool* sent = nullptr) {
    const Command command{call, first_key(call)};
    std::vector<Outcome> outcomes = run({&command, 1});
    if (sent != nullptr) *sent = outcomes[0].sent;
    Reply reply = outcomes[0].take();
    check(*reply);
    return reply;
  }

  // Runs the commands, each at most once on its server: grouped by server, each group pipelined on one
  // connection, the groups' round trips overlapping (written to every server, then read from each). One
  // command's fault or error reply never fails another's. Thread safety: safe. Throws std::bad_alloc only.
  std::vector<Outcome> run(std::span<const Command> commands) { return run(commands, deadline()); }

  // The deadline of a call starting now: connect_timeout + command_timeout from now. Throws nothing.
  Clock::time_point deadline() const noexcept { return Clock::now() + options_.connect_timeout + options_.command_timeout; }

  // run(), within the deadline of a call already under way (a second run of the same call: undoing what the
  // first left). Thread safety: safe. Throws std::bad_alloc only.
  std::vector<Outcome> run(std::span<const Command> commands, Clock::time_point deadline) {
    std::vector<Outcome> outcomes(commands.size());
    std::vector<Attempt> pending(commands.size());
    for (std::size_t i = 0; i < commands.size(); ++i) pending[i].index = i;
    std::chrono::milliseconds backoff{1};
    while (!pending.empty()) {
      std::vector<Group> groups = group(commands, pending, outcomes);
      pending.clear();
      bool again_later = false;
      for (Group& group : groups) send(group, commands, outcomes, deadline, pending);
      for (Group& group : groups) receive(group, commands, outcomes, deadline, pending, again_later);
      groups.clear();  // the connections go back before any backoff
      if (again_later && !pending.empty()) {  // TRYAGAIN / CLUSTERDOWN: a short backoff, within the deadline
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
        if (left <= backoff) {
          for (const Attempt& attempt : pending) {
            if (attempt.busy.empty()) continue;
            outcomes[attempt.index].error = std::make_exception_ptr(TimeoutError(
                "airl: Redis kept answering " + attempt.busy + " until the command timeout"));
          }
          std::erase_if(pending, [](const Attempt& attempt) { return !attempt.busy.empty(); });
        } else {
          std::this_thread::sleep_for(backoff);
          backoff = std::min(backoff * 2, std::chrono::milliseconds{50});
        }
      }
    }
    for (const Outcome& outcome : outcomes) {
      if (outcome.error) note(outcome.error);
    }
    return outcomes;
  }

  // Runs one plain command (UNLINK, SCAN, ...) on the server of `key`'s slot and returns its reply; an error
  // reply is thrown. Thread safety: safe. Throws airl::BackendError subclasses.
  Reply command(std::span<const std::string_view> words, std::string_view key, std::string_view what) {
    const Command command{words, key, /*script=*/false};
    std::vector<Outcome> outcomes = run({&command, 1});
    Reply reply = outcomes[0].take();
    try {
      RedisConnection::check_reply(*reply, what);
    } catch (const BackendError& error) {
      faults_.record(error);
      throw;
    }
    return reply;
  }

  // Throws the typed error of an error reply of this client's script (recorded as the last fault); returns
  // otherwise.
  void check(const redisReply& reply) {
    try {
      RedisConnection::check_reply(reply, name_);
    } catch (const BackendError& error) {
      faults_.record(error);
      throw;
    }
  }

  // Records a fault the storage found in a reply (one it cannot read) as the last fault. Throws nothing.
  void record(const BackendError& error) noexcept { faults_.record(error); }
  // The last fault met: a connection fault, a timeout, an error reply or a reply that could not be read.
  // Thread safety: safe.
  std::optional<BackendFault> last_fault() const { return faults_.last(); }

  // The first key of a script call (what routes it): <numkeys> <key1> ...
  static std::string_view first_key(ScriptWords call) noexcept { return call.size() > 1 ? call[1] : std::string_view{}; }

  // Whether the last round trip to every server succeeded. Thread safety: safe. Throws nothing.
  bool healthy() const noexcept {
    try {
      for (const auto& pool : topology_.pools()) {
        if (pool && !pool->healthy()) return false;
      }
      return true;
    } catch (...) {
      return false;
    }
  }
  // How long until the next connect attempt (0 when not backing off). Thread safety: safe.
  std::chrono::milliseconds retry_hint() const {
    std::chrono::milliseconds longest{0};
    for (const auto& pool : topology_.pools()) {
      if (pool) longest = std::max(longest, pool->retry_hint());
    }
    return longest;
  }

  RedisTopologyMetrics topology_metrics() const { return topology_.metrics(); }

 private:
  using PoolPtr = Topology::PoolPtr;

  // One command on its way: where it goes next and what happened so far.
  struct Attempt {
    std::size_t index = 0;
    bool as_text = false;  // NOSCRIPT came back: send EVAL with the script's text
    int redirects = 0;
    PoolPtr ask;           // ASK: this node, once, after ASKING
    std::string busy;      // the TRYAGAIN / CLUSTERDOWN text, while retrying
    bool fresh = false;    // going again on a new connection: a pooled one was dead (at most once)
  };
  struct Group {
    PoolPtr pool;
    std::vector<Attempt> attempts;
    std::optional<RedisConnectionPool::Lease> lease;  // held from send() to the end of the round
    bool waits = false;                               // a WAIT follows the commands
  };

  // The pending commands grouped by the server each goes to, in a fixed order (connections are leased in
  // that order: two threads never wait for each other's). A command with no server known fails here.
  std::vector<Group> group(std::span<const Command> commands, std::vector<Attempt>& pending,
                           std::vector<Outcome>& outcomes) {
    std::vector<Group> groups;
    for (Attempt& attempt : pending) {
      PoolPtr pool;
      try {
        pool = attempt.ask ? attempt.ask : topology_.pool_for(topology_.slot_of(commands[attempt.index].key));
      } catch (const BackendError&) {
        outcomes[attempt.index].error = std::current_exception();
        continue;
      }
      auto found = std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return g.pool == pool; });
      if (found == groups.end()) {
        groups.emplace_back();
        groups.back().pool = std::move(pool);
        found = std::prev(groups.end());
      }
      found->attempts.push_back(std::move(attempt));
    }
    std::sort(groups.begin(), groups.end(), [](const Group& a, const Group& b) { return a.pool.get() < b.pool.get(); });
    return groups;
  }

  // Leases a connection of the group's server, queues its commands (and WAIT, if asked) and writes them,
  // without waiting for replies: every group is sent before any is read, so the servers work in parallel.
  void send(Group& group, std::span<const Command> commands, std::vector<Outcome>& outcomes,
            Clock::time_point deadline, std::vector<Attempt>& pending) {
    const bool fresh = std::any_of(group.attempts.begin(), group.attempts.end(), [](const Attempt& a) { return a.fresh; });
    try {
      group.lease.emplace(group.pool->lease(deadline, fresh));
    } catch (const BackendError&) {
      // Nothing was sent: after a fault the route may change (a new master), then the command goes again.
      const bool moved = topology_.fault();
      for (Attempt& attempt : group.attempts) {
        if (moved && attempt.redirects < max_redirects && !attempt.ask && Clock::now() < deadline) {
          ++attempt.redirects;
          pending.push_back(std::move(attempt));
        } else {
          outcomes[attempt.index].error = std::current_exception();
        }
      }
      group.attempts.clear();
      return;
    }
    RedisConnection& connection = group.lease->connection();
    const std::string_view sha_head[] = {"EVALSHA", connection.script_sha()};
    const std::string_view text_head[] = {"EVAL", script_};
    const std::string_view asking[] = {"ASKING"};
    group.waits = options_.wait_for_replicas > 0 &&
                  std::any_of(group.attempts.begin(), group.attempts.end(),
                              [&](const Attempt& a) { return commands[a.index].script; });
    try {
      for (const Attempt& attempt : group.attempts) {
        const Command& command = commands[attempt.index];
        if (attempt.ask) connection.queue(asking);
        if (command.script) connection.queue(attempt.as_text ? text_head : sha_head, command.words);
        else connection.queue(command.words);
        outcomes[attempt.index].sent = true;
      }
      if (group.waits) {
        const std::string count = std::to_string(options_.wait_for_replicas);
        const std::string ms = std::to_string(options_.replica_ack_timeout.count());
        const std::string_view wait[] = {"WAIT", count, ms};
        connection.queue(wait);
      }
      connection.flush();
    } catch (const BackendError& error) {
      fail(group, 0, error, outcomes, deadline, pending);
    }
  }

  // Reads a sent group's replies, sorting each into done (outcomes) or to go again (pending: a redirect,
  // NOSCRIPT, TRYAGAIN, a new master).
  void receive(Group& group, std::span<const Command> commands, std::vector<Outcome>& outcomes,
               Clock::time_point deadline, std::vector<Attempt>& pending, bool& again_later) {
    if (!group.lease || group.attempts.empty()) return;
    RedisConnection& connection = group.lease->connection();
    std::size_t read = 0;
    try {
      for (; read < group.attempts.size(); ++read) {
        Attempt& attempt = group.attempts[read];
        if (attempt.ask) (void)connection.next_reply();  // ASKING's OK
        sort_reply(attempt, connection.next_reply(), commands, outcomes, pending, again_later, connection.endpoint());
      }
      if (group.waits) {
        const Reply acknowledged = connection.next_reply();
        if (acknowledged->type != REDIS_REPLY_INTEGER || acknowledged->integer < options_.wait_for_replicas) {
          topology_.counters().ack_shortfalls.fetch_add(1, std::memory_order_relaxed);
        }
      }
      group.lease->succeeded();
    } catch (const BackendError& error) {
      fail(group, read, error, outcomes, deadline, pending);
    }
  }

  // The connection of `group` failed: the commands from `first` on get the fault (they may have run), and
  // the topology is asked again (a lost master). Except once: a connection kept in the pool whose server end
  // was gone before a byte of a reply came back (Redis restarted since it was last used; its neighbours in
  // the pool are likely stale too) sends the group again on a newly opened connection, within the same
  // deadline. Sending again is safe: after a restart the old process never ran the commands; a request id
  // makes a replay idempotent (the script recognises its member); without one a command that did run is
  // counted twice, which errs toward denying, never toward admitting too much. A fault after a reply had
  // begun, a timeout, an error reply, or a connection opened for this call is never sent again.
  void fail(Group& group, std::size_t first, const BackendError& error, std::vector<Outcome>& outcomes,
            Clock::time_point deadline, std::vector<Attempt>& pending) {
    const std::exception_ptr fault = std::current_exception();
    group.lease->failed(error);
    const bool again = first == 0 && group.lease->reused() && group.lease->connection().closed_by_peer() &&
                       Clock::now() < deadline &&
                       std::none_of(group.attempts.begin(), group.attempts.end(), [](const Attempt& a) { return a.fresh; });
    for (std::size_t i = first; i < group.attempts.size(); ++i) {
      if (again) {
        group.attempts[i].fresh = true;
        pending.push_back(std::move(group.attempts[i]));  // `sent` stays set: it may have run after all
      } else {
        outcomes[group.attempts[i].index].error = fault;
      }
    }
    group.attempts.clear();
    topology_.fault();
  }

  void note(const std::exception_ptr& error) noexcept {
    try {
      std::rethrow_exception(error);
    } catch (const BackendError& fault) {
      faults_.record(fault);
    } catch (...) {
    }
  }

  // One reply: a result (done), or an answer that says to go again.
  void sort_reply(Attempt& attempt, Reply reply, std::span<const Command> commands, std::vector<Outcome>& outcomes,
                  std::vector<Attempt>& pending, bool& again_later, const Endpoint& answered_by) {
    const std::string_view text = reply->type == REDIS_REPLY_ERROR ? reply_text(*reply) : std::string_view{};
    const auto again = [&] {
      outcomes[attempt.index].sent = false;  // whatever it was, it did not run there
      pending.push_back(std::move(attempt));
    };
    attempt.busy.clear();
    if (text.starts_with("NOSCRIPT") && commands[attempt.index].script && !attempt.as_text) {
      attempt.as_text = true;  // to the same node (an ASK target stays one)
      return again();
    }
    attempt.ask.reset();
    const bool moved = text.starts_with("MOVED "), asked = text.starts_with("ASK ");
    const bool busy = text.starts_with("TRYAGAIN") || text.starts_with("CLUSTERDOWN");
    const bool readonly = text.starts_with("READONLY") || text.starts_with("MASTERDOWN");
    if (readonly && topology_.follows_failovers()) {  // a demoted master: ask again, retry within the deadline
      topology_.fault();
      attempt.busy.assign(text);
      again_later = true;
      return again();
    }
    if ((moved || asked) && attempt.redirects < max_redirects) {
      ++attempt.redirects;
      // "MOVED <slot> <host>:<port>" / "ASK <slot> <host>:<port>"
      const std::string_view rest = text.substr(text.find(' ') + 1);
      const std::size_t space = rest.find(' ');
      int slot = -1;
      std::from_chars(rest.data(), rest.data() + (space == std::string_view::npos ? 0 : space), slot);
      try {
        const Endpoint target = Topology::parse_endpoint(rest.substr(space + 1), answered_by.host);
        if (moved) {
          if (slot >= 0 && slot < static_cast<int>(cluster_slots)) topology_.moved(static_cast<std::uint16_t>(slot), target);
        } else {
          topology_.counters().ask.fetch_add(1, std::memory_order_relaxed);
          attempt.ask = topology_.pool_at(target);
        }
      } catch (const BackendError&) {
        outcomes[attempt.index].error = std::current_exception();
        return;
      }
      return again();
    }
    if (busy) {
      topology_.counters().tryagain.fetch_add(1, std::memory_order_relaxed);
      attempt.busy.assign(text);
      again_later = true;
      return again();
    }
    outcomes[attempt.index].reply = std::move(reply);
  }

  RedisOptions options_;
  std::string_view script_;
  std::string name_;  // "the airl script", for messages
  Topology topology_;
  FaultLog faults_;
};

}  // namespace airl::detail
