// SPDX-License-Identifier: MIT
#pragma once
// Which server a command goes to (docs/REDIS.md, "Topologies"), for the one command path (script_client.hpp):
//   - standalone: the options' host and port, one pool;
//   - Sentinel: the master a Sentinel names (SENTINEL GET-MASTER-ADDR-BY-NAME, first one that answers), one
//     pool that checks ROLE on every connect; asked again after a fault (a lost connection, READONLY, a
//     replica), at most once per min_refresh_interval;
//   - Cluster: the master of the key's slot, from a slot map read with CLUSTER SLOTS of any known node or
//     seed; one pool per master, made lazily; a MOVED answer moves one slot at once and reads the whole map
//     again, at most once per min_refresh_interval (never a refresh storm).

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../../detail/echo.hpp"
#include "../../detail/lock.hpp"
#include "../../detail/mutex.hpp"
#include "../../detail/thread_annotations.hpp"
#include "../errors.hpp"
#include "../options.hpp"
#include "../topology_metrics.hpp"
#include "cluster_slot.hpp"
#include "connection.hpp"
#include "connection_pool.hpp"

namespace airl::detail {

struct ReplyDecoderAccess;  // tests/fuzz/redis_reply_fuzz.cpp reads replies through the storages' private decoders

class Topology {
 public:
  using PoolPtr = std::shared_ptr<RedisConnectionPool>;
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds min_refresh_interval{100};
  static constexpr std::chrono::milliseconds sentinel_check_interval{500};

  Topology(const RedisOptions& options, std::string_view script)
      : options_(options), script_(script), clustered_(!options.cluster_nodes.empty()) {
    if (clustered_) {
      for (const std::string& node : options.cluster_nodes) seeds_.push_back(endpoint_of_node(node));
      slots_.resize(cluster_slots);
    } else if (!options.sentinel_nodes.empty()) {
      for (const std::string& node : options.sentinel_nodes) seeds_.push_back(endpoint_of_node(node));
      main_ = std::make_shared<RedisConnectionPool>(options_, Endpoint{}, script_, /*must_be_master=*/true);
    } else {
      main_ = std::make_shared<RedisConnectionPool>(options_, endpoint_of(options_), script_);
      nodes_ = 1;
    }
  }

  bool clustered() const noexcept { return clustered_; }
  // Whether the server of a key can change (Cluster, Sentinel): then READONLY means "ask again".
  bool follows_failovers() const noexcept { return !seeds_.empty(); }

  // The slot that decides where `key` goes (0 unless clustered: then every key goes to one server).
  std::uint16_t slot_of(std::string_view key) const noexcept { return clustered() ? cluster_slot(key) : 0; }

  // The pool of the server that serves `slot` now. Reads the slot map (cluster) or asks the Sentinels
  // (sentinel) first when nothing is known yet. Thread safety: safe. Throws ConnectionError when no server
  // is known for it (no seed or Sentinel answered), TimeoutError / AuthError like a connect.
  PoolPtr pool_for(std::uint16_t slot) {
    if (!clustered()) {
      if (!seeds_.empty()) {
        if (!master_known_.load(std::memory_order_acquire)) discover(/*forced=*/true);
        else if (check_due()) fault();  // one thread asks again; the others go on meanwhile
      }
      return main_;
    }
    if (PoolPtr pool = mapped(slot)) return pool;
    refresh(/*forced=*/true);
    if (PoolPtr pool = mapped(slot)) return pool;
    throw ConnectionError("airl: no Redis Cluster node is known for slot " + std::to_string(slot) + " (" +
                          last_refresh_error() + ")");
  }

  // The pool of a node named in a redirect, made if new. Thread safety: safe.
  PoolPtr pool_at(const Endpoint& endpoint) {
    Lock lock(mutex_);
    return pool_locked(endpoint);
  }

  // A MOVED answer: `slot` lives on `endpoint` now; the rest of the map is read again (rate-limited).
  void moved(std::uint16_t slot, const Endpoint& endpoint) {
    counters_.moved.fetch_add(1, std::memory_order_relaxed);
    {
      Lock lock(mutex_);
      if (slot < slots_.size()) slots_[slot] = pool_locked(endpoint);
    }
    refresh(/*forced=*/false);
  }

  // After a fault talking to a server (a lost connection, READONLY, a replica where a master was expected):
  // reads the slot map again or asks the Sentinels again, at most once per min_refresh_interval. Returns
  // whether it did (a retry may then go elsewhere). Thread safety: safe. Throws nothing.
  bool fault() noexcept {
    try {
      if (clustered()) return refresh(/*forced=*/false);
      if (!seeds_.empty()) return discover(/*forced=*/false);
    } catch (const std::exception&) {  // nothing answered: the next call tries again
    }
    return false;
  }

  // Every pool made so far (health, backoff hints). Thread safety: safe.
  std::vector<PoolPtr> pools() const {
    if (!clustered()) return {main_};
    Lock lock(mutex_);
    std::vector<PoolPtr> all;
    for (const auto& [name, pool] : pools_) all.push_back(pool);
    return all;
  }

  struct Counters {
    std::atomic<std::uint64_t> moved{0}, ask{0}, tryagain{0}, refreshes{0}, rediscoveries{0}, ack_shortfalls{0};
  };
  Counters& counters() noexcept { return counters_; }

  RedisTopologyMetrics metrics() const {
    RedisTopologyMetrics metrics;
    metrics.moved_redirects = counters_.moved.load(std::memory_order_relaxed);
    metrics.ask_redirects = counters_.ask.load(std::memory_order_relaxed);
    metrics.tryagain_retries = counters_.tryagain.load(std::memory_order_relaxed);
    metrics.topology_refreshes = counters_.refreshes.load(std::memory_order_relaxed);
    metrics.sentinel_rediscoveries = counters_.rediscoveries.load(std::memory_order_relaxed);
    metrics.replica_ack_shortfalls = counters_.ack_shortfalls.load(std::memory_order_relaxed);
    metrics.nodes = nodes_.load(std::memory_order_relaxed);
    return metrics;
  }

  // "host:port" of a redirect or a Sentinel's answer; `fallback_host` when the host part is empty (Redis
  // may leave it out when it does not know the name clients use). Throws ReplyError on anything else.
  static Endpoint parse_endpoint(std::string_view text, std::string_view fallback_host) {
    const std::size_t colon = text.rfind(':');
    const int port = colon == std::string_view::npos ? 0 : parse_port(text.substr(colon + 1));
    if (port == 0) throw ReplyError("airl: Redis named no usable address: '" + std::string(text) + "'");
    std::string host(colon == 0 ? fallback_host : text.substr(0, colon));
    return Endpoint{std::move(host), port, {}};
  }

 private:
  friend struct ReplyDecoderAccess;  // parse_slots

  static Endpoint endpoint_of_node(std::string_view node) {
    NodeAddress address = parse_node(node, "node");
    return Endpoint{std::move(address.host), address.port, {}};
  }

  PoolPtr mapped(std::uint16_t slot) const {
    Lock lock(mutex_);
    return slots_[slot];
  }

  PoolPtr pool_locked(const Endpoint& endpoint) AIRL_REQUIRES(mutex_) {
    PoolPtr& pool = pools_[endpoint.text()];
    if (!pool) pool = std::make_shared<RedisConnectionPool>(options_, endpoint, script_);
    return pool;
  }

  std::string last_refresh_error() const {
    Lock lock(mutex_);
    return last_error_.empty() ? "no node answered" : last_error_;
  }

  // Sentinel: whether this thread should ask the Sentinels again now, which one thread per
  // sentinel_check_interval does. A graceful failover leaves the old master taking writes until the Sentinels
  // turn it into a replica (seconds later): asking again bounds how long admissions go there and get lost.
  bool check_due() noexcept {
    const auto now = Clock::now().time_since_epoch().count();
    auto next = next_check_.load(std::memory_order_relaxed);
    if (now < next) return false;
    const auto then = now + std::chrono::duration_cast<Clock::duration>(sentinel_check_interval).count();
    return next_check_.compare_exchange_strong(next, then, std::memory_order_relaxed);
  }

  // One slot map read or Sentinel question at a time. Forced (nothing known yet): waits for the one under way
  // and skips its own if that one finished meanwhile. Otherwise: none if one is under way, or if the last
  // ended less than min_refresh_interval ago, so a burst of faults makes one refresh, never a storm.
  // `look(deadline)` does it and returns whether it learnt anything.
  template <class Look>
  bool refresh_with(bool forced, Look&& look) {
    const std::uint64_t seen = generation_.load(std::memory_order_acquire);
    std::unique_lock<std::mutex> one(refresh_mutex_, std::defer_lock);
    if (forced) one.lock();
    else if (!one.try_lock()) return false;
    const auto since = Clock::now() - Clock::time_point(Clock::duration(last_refresh_.load(std::memory_order_relaxed)));
    if (generation_.load(std::memory_order_acquire) != seen) return false;  // another thread just did it
    if (!forced && since < min_refresh_interval) return false;
    if (forced && since < min_refresh_interval / 10) return false;  // nothing answered a moment ago
    const bool learnt = look(Clock::now() + options_.connect_timeout);
    last_refresh_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    return learnt;
  }

  // Runs `words` on the candidates in order, each with its share of the time left before `deadline` (at
  // least a quarter of connect_timeout, so one silent node cannot take it all), until `take(reply, node)`
  // accepts an answer. Returns whether one did; `error` says what failed last.
  template <class Take>
  bool ask_first(const RedisOptions& options, const std::vector<Endpoint>& candidates,
                 std::span<const std::string_view> words, Clock::time_point deadline, Take&& take, std::string& error) {
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      const auto left = deadline - Clock::now();
      if (left <= Clock::duration::zero()) break;
      const auto share = std::max<Clock::duration>(left / static_cast<long>(candidates.size() - i), options.connect_timeout / 4);
      try {
        RedisConnection connection(options, candidates[i]);
        const auto budget = std::max(std::chrono::ceil<std::chrono::milliseconds>(std::min(share, left)), std::chrono::milliseconds{1});
        connection.connect({}, budget);
        connection.limit_timeout(budget);
        const Reply reply = connection.command(words);
        RedisConnection::check_reply(*reply, words[0]);
        if (take(*reply, candidates[i], error)) return true;
      } catch (const BackendError& failure) {
        error = failure.what();
      }
    }
    return false;
  }

  // Reads the slot map from the first node that answers: masters that answered last first, then the seeds,
  // then masters that failed. Drops the pools of nodes the new map does not name. Returns whether it read one.
  bool refresh(bool forced) {
    return refresh_with(forced, [&](Clock::time_point deadline) {
      std::vector<Endpoint> candidates, failing;
      {
        Lock lock(mutex_);
        for (const auto& [name, pool] : pools_) (pool->healthy() ? candidates : failing).push_back(pool->endpoint());
      }
      for (const Endpoint& node : seeds_) {
        if (std::find(candidates.begin(), candidates.end(), node) == candidates.end() &&
            std::find(failing.begin(), failing.end(), node) == failing.end()) {
          candidates.push_back(node);
        }
      }
      candidates.insert(candidates.end(), failing.begin(), failing.end());
      const std::string_view words[] = {"CLUSTER", "SLOTS"};
      std::string error;
      const bool read = ask_first(options_, candidates, words, deadline, [&](const redisReply& reply, const Endpoint& node, std::string&) {
        const auto ranges = parse_slots(reply, node.host);
        if (ranges.empty()) throw ReplyError("airl: CLUSTER SLOTS from " + node.text() + " named no slot");
        Lock lock(mutex_);
        std::map<std::string, PoolPtr> kept;
        std::fill(slots_.begin(), slots_.end(), nullptr);
        for (const auto& [range, endpoint] : ranges) {
          PoolPtr& pool = kept[endpoint.text()];
          if (!pool) pool = pool_locked(endpoint);
          for (long long slot = range[0]; slot <= range[1]; ++slot) slots_[static_cast<std::size_t>(slot)] = pool;
        }
        pools_ = std::move(kept);  // a node the map no longer names (a dead master) keeps no pool
        nodes_.store(pools_.size(), std::memory_order_relaxed);
        counters_.refreshes.fetch_add(1, std::memory_order_relaxed);
        return true;
      }, error);
      Lock lock(mutex_);
      last_error_ = read ? std::string() : error;
      return read;
    });
  }

  // CLUSTER SLOTS: [[start, end, [host, port, id, ...], replicas...], ...] -> (range, master).
  static std::vector<std::pair<std::array<long long, 2>, Endpoint>> parse_slots(const redisReply& reply,
                                                                               std::string_view asked_host) {
    const auto bad = [] { return ReplyError("airl: unexpected CLUSTER SLOTS reply"); };
    if (reply.type != REDIS_REPLY_ARRAY) throw bad();
    std::vector<std::pair<std::array<long long, 2>, Endpoint>> ranges;
    for (std::size_t i = 0; i < reply.elements; ++i) {
      const redisReply& range = *reply.element[i];
      if (range.type != REDIS_REPLY_ARRAY || range.elements < 3) throw bad();
      const redisReply& first = *range.element[0];
      const redisReply& last = *range.element[1];
      const redisReply& master = *range.element[2];
      if (first.type != REDIS_REPLY_INTEGER || last.type != REDIS_REPLY_INTEGER || first.integer < 0 ||
          last.integer < first.integer || last.integer >= static_cast<long long>(cluster_slots) ||
          master.type != REDIS_REPLY_ARRAY || master.elements < 2 || master.element[0]->type != REDIS_REPLY_STRING ||
          master.element[1]->type != REDIS_REPLY_INTEGER || master.element[1]->integer < 1 ||
          master.element[1]->integer > 65535) {
        throw bad();
      }
      std::string host(reply_text(*master.element[0]));
      if (host.empty() || host == "?") host = std::string(asked_host);
      ranges.push_back({{first.integer, last.integer}, Endpoint{std::move(host), static_cast<int>(master.element[1]->integer), {}}});
    }
    return ranges;
  }

  // Asks the Sentinels for the master's address (the first that answers) and points the pool there.
  // Returns whether it learnt one. Throws ConnectionError when none named a master and none is known.
  bool discover(bool forced) {
    if (forced && master_known_.load(std::memory_order_acquire)) return false;
    const bool found = refresh_with(forced, [&](Clock::time_point deadline) {
      RedisOptions sentinel = options_;
      sentinel.username = options_.sentinel_username;
      sentinel.password = options_.sentinel_password;
      sentinel.database = 0;
      const std::string_view words[] = {"SENTINEL", "GET-MASTER-ADDR-BY-NAME", options_.sentinel_master};
      std::string error = "no Sentinel answered";
      const bool named = ask_first(sentinel, seeds_, words, deadline, [&](const redisReply& reply, const Endpoint& node, std::string& why) {
        if (reply.type != REDIS_REPLY_ARRAY || reply.elements != 2) {
          why = "Sentinel " + node.text() + " knows no master named '" + options_.sentinel_master + "'";
          return false;
        }
        const Endpoint master = parse_endpoint(
            std::string(reply_text(*reply.element[0])) + ":" + std::string(reply_text(*reply.element[1])), node.host);
        const bool moved = main_->endpoint() != master;
        main_->retarget(master);
        if (master_known_.exchange(true, std::memory_order_acq_rel) && moved) {
          counters_.rediscoveries.fetch_add(1, std::memory_order_relaxed);
        }
        nodes_.store(1, std::memory_order_relaxed);
        return true;
      }, error);
      Lock lock(mutex_);
      last_error_ = named ? std::string() : error;
      return named;
    });
    if (forced && !master_known_.load(std::memory_order_acquire)) {
      throw ConnectionError("airl: no master for '" + echo(options_.sentinel_master) + "' (" + last_refresh_error() + ")");
    }
    return found;
  }

  RedisOptions options_;
  std::string script_;
  bool clustered_;
  std::vector<Endpoint> seeds_;  // cluster seeds or Sentinels
  PoolPtr main_;                 // standalone and Sentinel: the one pool
  std::atomic<bool> master_known_{false};
  std::atomic<Clock::rep> next_check_{0};  // Sentinel: when to ask again (Clock ticks)
  std::atomic<std::size_t> nodes_{0};
  Counters counters_;

  std::mutex refresh_mutex_;  // one slot map read or Sentinel question at a time (guards no data)
  std::atomic<Clock::rep> last_refresh_{0};       // when the last one ended (Clock ticks)
  std::atomic<std::uint64_t> generation_{0};      // refreshes ended so far

  mutable Mutex mutex_;
  std::vector<PoolPtr> slots_ AIRL_GUARDED_BY(mutex_);  // cluster: slot -> its master's pool
  std::map<std::string, PoolPtr> pools_ AIRL_GUARDED_BY(mutex_);
  std::string last_error_ AIRL_GUARDED_BY(mutex_);
};

}  // namespace airl::detail
