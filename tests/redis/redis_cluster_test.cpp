// SPDX-License-Identifier: MIT
// The Redis storages on a real Redis Cluster (3 masters + 3 replicas, redis_topology.hpp): slots as Redis
// computes them, tiers spread over three slots decided exactly and all-or-nothing, replays and settle across
// slots, batches over every master, reset(user) on one node, and what resharding, failover, SCRIPT FLUSH and
// dead seeds do. The shared cluster serves the cases that change nothing in it; the others make their own.
#include <catch2/catch.hpp>

#include "redis_test_support.hpp"
#include "redis_topology.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using namespace airl;
using namespace airl::test;

namespace {

RedisOptions cluster_options(std::vector<std::string> seeds, FailurePolicy policy = FailurePolicy::fail_closed) {
  RedisOptions options;
  options.cluster_nodes = std::move(seeds);
  options.key_prefix = unique_key_prefix();
  options.on_failure = policy;
  options.connect_timeout = 200ms;
  options.command_timeout = 500ms;
  return options;
}

// Three tiers in three slots: the user's, the model's and the global one.
std::vector<Tier> three_slot_tiers(std::uint64_t per_user, std::uint64_t per_model, std::uint64_t global,
                                   std::chrono::milliseconds window = 60s) {
  return {{"user", Scope::user, {per_user, window}},
          {"model", Scope::model, {per_model, window}},
          {"global", Scope::global, {global, window}}};
}

std::uint64_t commandstat(RedisServer& server, const std::string& command) {
  const RawReply info = must(server, {"INFO", "commandstats"});
  const std::string text = text_of(*info);
  const std::string marker = "cmdstat_" + command + ":calls=";
  const std::size_t at = text.find(marker);
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + marker.size()));
}

int slot_of_key(const std::string& key) { return detail::cluster_slot(key); }

// The port of the master serving `slot`, from CLUSTER SLOTS of the first seed that answers.
int master_port_of(const std::vector<std::string>& seeds, int slot) {
  for (const std::string& seed : seeds) {
    const timeval timeout{1, 0};
    std::unique_ptr<redisContext, void (*)(redisContext*)> context(
        redisConnectWithTimeout("127.0.0.1", std::stoi(seed.substr(seed.rfind(':') + 1)), timeout), redisFree);
    if (!context || context->err != 0) continue;
    RawReply slots(static_cast<redisReply*>(redisCommand(context.get(), "CLUSTER SLOTS")));
    if (!slots || slots->type != REDIS_REPLY_ARRAY) continue;
    for (std::size_t i = 0; i < slots->elements; ++i) {
      const redisReply& range = *slots->element[i];
      if (range.element[0]->integer <= slot && slot <= range.element[1]->integer) {
        return static_cast<int>(range.element[2]->element[1]->integer);
      }
    }
  }
  throw std::runtime_error("no seed named the master of slot " + std::to_string(slot));
}

std::string user_key(const std::string& prefix, const std::string& user) {
  return redis_key_of(prefix, BucketRef{Scope::user, "user", user, ""});
}

}  // namespace

TEST_CASE("slots: airl computes the slot CLUSTER KEYSLOT answers, for every kind of key, binary ones too", "[cluster]") {
  RedisServer& node = [&]() -> RedisServer& {
    static RedisServer server({"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"});
    return server;
  }();
  std::mt19937_64 random(7);
  std::vector<std::string> keys = {"", "{", "}", "{}", "{}x", "a{}b", "{a}{b}", "x{a", "x}a{b}", "foo{bar}{zap}",
                                   "{user1000}.following", "123456789", std::string("\0{\0}", 4), "\xff{\xfe}"};
  for (int i = 0; i < 400; ++i) {
    std::string key(random() % 40, '\0');
    for (char& c : key) c = random() % 8 == 0 ? "{}"[random() % 2] : static_cast<char>(random() % 256);
    keys.push_back(key);
  }
  for (const char* user : {"alice", "bob", "a:b", "u=x", "\x01\x02"}) {
    keys.push_back(redis_key_of("airl", BucketRef{Scope::user, "t", user, ""}));
    keys.push_back(redis_key_of("airl", BucketRef{Scope::model, "t", "", user}));
  }
  for (const std::string& key : keys) {
    const RawReply slot = must(node, {"CLUSTER", "KEYSLOT", key});
    INFO("key of " << key.size() << " bytes");
    CHECK(detail::cluster_slot(key) == slot->integer);
  }
  // A user's user and user_model buckets share its slot; its model's bucket may not.
  const std::string prefix = "p";
  CHECK(slot_of_key(redis_key_of(prefix, BucketRef{Scope::user, "a", "alice", ""})) ==
        slot_of_key(redis_key_of(prefix, BucketRef{Scope::user_model, "b", "alice", "m"})));
}

TEST_CASE("cluster: 8 threads over many users, tiers in three slots on three masters: every bucket admits exactly its limit", "[cluster]") {
  const SharedTopology& shared = shared_topology();
  // 12 users x 5 = 60 = the model's and the global limit: once every user is full, so is every bucket, and
  // any over-admission or lost compensation shows in one of them. "model-b", {g} and the users' tags fall in
  // the three masters' slot ranges (checked below against CLUSTER SLOTS).
  constexpr int users = 12, per_user = 5, per_model = 60, global = 60;
  RedisMultiTierRateLimiter limiter(three_slot_tiers(per_user, per_model, global), RedisStorage(cluster_options(shared.cluster_seeds)));
  std::vector<std::atomic<int>> admitted(users);
  std::atomic<int> total{0}, degraded{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 45; ++i) {  // 360 tries, 30 per user
        const int u = (t * 45 + i) % users;
        const Decision decision = limiter.allow("user-" + std::to_string(u), "model-b");
        if (decision.degraded) ++degraded;
        if (decision.allowed) {
          ++admitted[static_cast<std::size_t>(u)];
          ++total;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(degraded == 0);
  // Under contention a request may be denied while another's reservation, about to be undone, fills the
  // model or global bucket for a moment (docs/REDIS.md, "Across slots"). One at a time now, each user tries
  // until its own tier denies it: if any reservation had been left behind, the model or global tier would
  // deny first, short of the users' sum.
  for (int u = 0; u < users; ++u) {
    for (int attempt = 0; attempt <= per_user; ++attempt) {
      const Decision decision = limiter.allow("user-" + std::to_string(u), "model-b");
      if (!decision.allowed) {
        CHECK(decision.reason == "user");
        break;
      }
      ++admitted[static_cast<std::size_t>(u)];
      ++total;
    }
  }
  for (int u = 0; u < users; ++u) {
    INFO("user-" << u);
    CHECK(admitted[static_cast<std::size_t>(u)] == per_user);
    CHECK(limiter.usage("user", "user-" + std::to_string(u), "model-b") == per_user);
  }
  CHECK(total == per_model);
  CHECK(limiter.usage("model", "anyone", "model-b") == per_model);
  CHECK(limiter.usage("global", "anyone", "model-b") == global);
  // The tiers' slots are served by three different masters.
  const std::string prefix = limiter.storage().options().key_prefix;
  std::set<int> masters;
  std::set<int> user_masters;
  for (int u = 0; u < users; ++u) {
    user_masters.insert(master_port_of(shared.cluster_seeds, slot_of_key(user_key(prefix, "user-" + std::to_string(u)))));
  }
  masters.insert(master_port_of(shared.cluster_seeds, slot_of_key(redis_key_of(prefix, BucketRef{Scope::model, "model", "", "model-b"}))));
  masters.insert(master_port_of(shared.cluster_seeds, slot_of_key(redis_key_of(prefix, BucketRef{Scope::global, "global", "", ""}))));
  CHECK(masters.size() == 2);
  CHECK(user_masters.size() == 3);
  masters.insert(user_masters.begin(), user_masters.end());
  CHECK(masters.size() == 3);
}

TEST_CASE("cluster: a request denied by the global tier leaves the user's tiers as they were, and the Decision is one server's", "[cluster]") {
  const SharedTopology& shared = shared_topology();
  const std::vector<Tier> tiers = three_slot_tiers(10, 10, 3);
  RedisMultiTierRateLimiter cluster(tiers, RedisStorage(cluster_options(shared.cluster_seeds)));
  RedisOptions one = options_for(shared_redis());
  one.command_timeout = 500ms;
  one.connect_timeout = 200ms;
  RedisMultiTierRateLimiter standalone(tiers, RedisStorage(one));
  for (int i = 0; i < 3; ++i) {
    const std::string user = "u" + std::to_string(i);
    REQUIRE(cluster.allow(user, "m").allowed);
    REQUIRE(standalone.allow(user, "m").allowed);
  }
  const Decision on_cluster = cluster.allow("late", "m");
  const Decision on_one = standalone.allow("late", "m");
  CHECK_FALSE(on_cluster.allowed);
  CHECK(on_cluster.reason == "global");
  CHECK(on_cluster.reason == on_one.reason);
  CHECK(on_cluster.remaining == on_one.remaining);
  CHECK(on_cluster.limit == on_one.limit);
  CHECK(on_cluster.binding_tier == on_one.binding_tier);
  CHECK(on_cluster.retry_after <= on_one.retry_after + 100ms);
  CHECK(on_cluster.retry_after >= on_one.retry_after - 100ms);
  CHECK(on_cluster.retry_after > 59s);
  // Nothing of the denied request stays in the user's or the model's bucket.
  CHECK(cluster.usage("user", "late", "m") == 0);
  CHECK(cluster.usage("model", "late", "m") == 3);
  // A denial by the user's own tier with room elsewhere: the same Decision as one server, nothing kept.
  RedisMultiTierRateLimiter tight({{"user", Scope::user, {1, 60s}}, {"global", Scope::global, {100, 60s}}},
                                  RedisStorage(cluster_options(shared.cluster_seeds)));
  REQUIRE(tight.allow("solo", "m").allowed);
  const Decision denied = tight.allow("solo", "m");
  CHECK(denied.reason == "user");
  CHECK(tight.usage("global", "solo", "m") == 1);
  REQUIRE(denied.other_unit == std::nullopt);
}

TEST_CASE("cluster: under 8 threads with denials in every tier, each bucket holds exactly its admitted requests' costs", "[cluster]") {
  const SharedTopology& shared = shared_topology();
  RedisMultiTierRateLimiter limiter(three_slot_tiers(30, 45, 60), RedisStorage(cluster_options(shared.cluster_seeds)));
  constexpr int users = 4;
  std::vector<std::atomic<std::uint64_t>> cost_by_user(users);
  std::map<std::string, std::atomic<std::uint64_t>> cost_by_model;
  cost_by_model["m0"];
  cost_by_model["m1"];
  std::atomic<std::uint64_t> cost_total{0};
  std::atomic<int> degraded{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 random(static_cast<unsigned>(t));
      for (int i = 0; i < 25; ++i) {
        const int u = static_cast<int>(random() % users);
        const std::string model = random() % 2 == 0 ? "m0" : "m1";
        const std::uint64_t cost = 1 + random() % 4;
        const Decision decision = limiter.allow(Request{"u" + std::to_string(u), model, cost});
        if (decision.degraded) ++degraded;  // checked after the join: Catch2's assertions are not thread-safe
        if (!decision.allowed) continue;
        cost_by_user[static_cast<std::size_t>(u)] += cost;
        cost_by_model[model] += cost;
        cost_total += cost;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(degraded == 0);
  for (int u = 0; u < users; ++u) {
    CHECK(limiter.usage("user", "u" + std::to_string(u), "m0") == cost_by_user[static_cast<std::size_t>(u)]);
    CHECK(cost_by_user[static_cast<std::size_t>(u)] <= 30);
  }
  for (auto& [model, cost] : cost_by_model) {
    CHECK(limiter.usage("model", "x", model) == cost);
    CHECK(cost <= 45);
  }
  CHECK(limiter.usage("global", "x", "m0") == cost_total);
  CHECK(cost_total <= 60);
}

TEST_CASE("cluster: a retried request id is a replay across slots, charges nothing new, and settle adjusts every slot", "[cluster]") {
  const SharedTopology& shared = shared_topology();
  RedisMultiTierRateLimiter limiter(three_slot_tiers(1000, 1000, 1000), RedisStorage(cluster_options(shared.cluster_seeds)));
  const Decision first = limiter.allow(Request{"alice", "m", 100, "req-1"});
  REQUIRE(first.allowed);
  const Decision again = limiter.allow(Request{"alice", "m", 100, "req-1"});
  CHECK(again.allowed);
  CHECK(again.replayed);
  for (const char* tier : {"user", "model", "global"}) CHECK(limiter.usage(tier, "alice", "m") == 100);
  CHECK(limiter.settle("alice", "m", "req-1", 30));
  for (const char* tier : {"user", "model", "global"}) CHECK(limiter.usage(tier, "alice", "m") == 30);
  CHECK(limiter.refund("alice", "m", "req-1"));
  for (const char* tier : {"user", "model", "global"}) CHECK(limiter.usage(tier, "alice", "m") == 0);
  // After the refund the id is decided afresh, in every slot.
  const Decision fresh = limiter.allow(Request{"alice", "m", 10, "req-1"});
  CHECK(fresh.allowed);
  CHECK_FALSE(fresh.replayed);
  for (const char* tier : {"user", "model", "global"}) CHECK(limiter.usage(tier, "alice", "m") == 10);
}

TEST_CASE("cluster: allow_many groups its requests by master, pipelines each, and decides each as allow() would", "[cluster]") {
  const SharedTopology& shared = shared_topology();
  RedisMultiTierRateLimiter limiter({{"user", Scope::user, {2, 60s}}}, RedisStorage(cluster_options(shared.cluster_seeds)));
  std::vector<std::string> users;
  for (int i = 0; i < 30; ++i) users.push_back("batch-" + std::to_string(i));
  std::vector<Request> requests;
  for (int round = 0; round < 3; ++round) {
    for (const std::string& user : users) requests.push_back(Request{user, "m"});
  }
  const std::vector<Decision> decisions = limiter.allow_many(requests);
  REQUIRE(decisions.size() == requests.size());
  for (std::size_t i = 0; i < decisions.size(); ++i) {
    CHECK_FALSE(decisions[i].degraded);
    CHECK(decisions[i].allowed == (i < 2 * users.size()));  // in order: the third of each user is denied
  }
  // The users span many slots (so every master, with 30 users).
  const std::string prefix = limiter.storage().options().key_prefix;
  std::set<int> slots;
  for (const std::string& user : users) slots.insert(slot_of_key(user_key(prefix, user)));
  CHECK(slots.size() > 3);
}

TEST_CASE("cluster: in allow_many, a split request denied in one slot takes no room from the requests after it",
          "[cluster]") {
  // Found by the differential test: the batch used to send every request's parts at once and undo the
  // partial admissions afterwards, so a later request saw a global entry about to be undone, and was denied
  // where allow() in turn admits it.
  const SharedTopology& shared = shared_topology();
  RedisMultiTierRateLimiter limiter({{"all", Scope::global, {2, 60s}}, {"user", Scope::user, {1, 60s}}},
                                    RedisStorage(cluster_options(shared.cluster_seeds)));
  const std::string prefix = limiter.storage().options().key_prefix;
  REQUIRE(slot_of_key(user_key(prefix, "split-a")) != slot_of_key(redis_key_of(prefix, BucketRef{Scope::global, "all", "", ""})));
  REQUIRE(limiter.allow("split-a", "m").allowed);  // all: 1 of 2; a: 1 of 1
  const std::vector<Decision> batch = limiter.allow_many(std::vector<Request>{{"split-a", "m"}, {"split-b", "m"}});
  REQUIRE(batch.size() == 2);
  CHECK_FALSE(batch[0].allowed);  // a's own tier is full: its global part is undone
  CHECK(batch[0].reason == "user");
  CHECK(batch[1].allowed);  // the global tier had 1 left, as allow() in turn would see
  CHECK(batch[1].remaining == 0);
  CHECK(limiter.usage("all", "split-a", "m") == 2);
}

TEST_CASE("cluster: reset(user) scans only the master of the user's slot", "[cluster]") {
  RedisCluster cluster;
  RedisMultiTierRateLimiter limiter({{"user", Scope::user, {5, 60s}}, {"pair", Scope::user_model, {5, 60s}}},
                                    RedisStorage(cluster_options(cluster.seeds())));
  REQUIRE(limiter.allow("alice", "m").allowed);
  REQUIRE(limiter.allow("bob", "m").allowed);
  const std::string prefix = limiter.storage().options().key_prefix;
  RedisServer& home = cluster.master_of(slot_of_key(user_key(prefix, "alice")));
  std::map<int, std::uint64_t> scans_before;
  for (std::size_t i = 0; i < cluster.size(); ++i) scans_before[cluster.node(i).port()] = commandstat(cluster.node(i), "scan");
  limiter.reset("alice");
  for (std::size_t i = 0; i < cluster.size(); ++i) {
    RedisServer& node = cluster.node(i);
    const std::uint64_t scans = commandstat(node, "scan") - scans_before[node.port()];
    INFO("node " << node.port() << (node.port() == home.port() ? " (alice's master)" : ""));
    if (node.port() == home.port()) CHECK(scans >= 1);
    else CHECK(scans == 0);
  }
  CHECK(limiter.usage("user", "alice", "m") == 0);
  CHECK(limiter.usage("user", "bob", "m") == 1);
}

TEST_CASE("cluster: live resharding of a busy user's slot under 4 threads: no over-admission, nothing lost, redirects followed", "[cluster][slow]") {
  RedisCluster cluster;
  RedisOptions options = cluster_options(cluster.seeds());
  constexpr std::uint64_t limit = 400;
  RedisMultiTierRateLimiter limiter({{"user", Scope::user, {limit, 60s}}}, RedisStorage(options));
  const std::string key = user_key(options.key_prefix, "busy");
  const int slot = slot_of_key(key);
  REQUIRE(limiter.allow("busy", "m").allowed);
  std::atomic<std::uint64_t> admitted{1};
  std::atomic<int> degraded{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000 && !stop; ++i) {
        const Decision decision = limiter.allow("busy", "m");
        if (decision.degraded) ++degraded;
        else if (decision.allowed) ++admitted;
        std::this_thread::sleep_for(1ms);
      }
    });
  }
  // Move the slot: IMPORTING on the target, MIGRATING on the source, MIGRATE its keys, then NODE on all.
  RedisServer& source = cluster.master_of(slot);
  RedisServer* target = nullptr;
  for (std::size_t i = 0; i < cluster.size() && target == nullptr; ++i) {
    RedisServer& node = cluster.node(i);
    const RawReply role = must(node, {"ROLE"});
    if (node.port() != source.port() && text_of(*role->element[0]) == "master") target = &node;
  }
  REQUIRE(target != nullptr);
  const std::string source_id = text_of(*must(source, {"CLUSTER", "MYID"}));
  const std::string target_id = text_of(*must(*target, {"CLUSTER", "MYID"}));
  std::this_thread::sleep_for(100ms);
  must(*target, {"CLUSTER", "SETSLOT", std::to_string(slot), "IMPORTING", source_id});
  must(source, {"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", target_id});
  std::this_thread::sleep_for(50ms);  // traffic meets the MIGRATING state (ASK / TRYAGAIN)
  while (true) {
    const RawReply keys = must(source, {"CLUSTER", "GETKEYSINSLOT", std::to_string(slot), "100"});
    if (keys->elements == 0) break;
    std::vector<std::string> migrate = {"MIGRATE", "127.0.0.1", std::to_string(target->port()), "", "0", "5000", "KEYS"};
    for (std::size_t i = 0; i < keys->elements; ++i) migrate.push_back(text_of(*keys->element[i]));
    must(source, migrate);
  }
  for (std::size_t i = 0; i < cluster.size(); ++i) {
    RedisServer& node = cluster.node(i);
    const RawReply role = must(node, {"ROLE"});
    if (text_of(*role->element[0]) == "master") must(node, {"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", target_id});
  }
  std::this_thread::sleep_for(300ms);
  stop = true;
  for (std::thread& thread : threads) thread.join();
  const RedisTopologyMetrics metrics = limiter.storage().topology_metrics();
  std::printf("[resharding] admitted %llu, degraded %d, moved %llu, ask %llu, tryagain %llu, refreshes %llu\n",
              static_cast<unsigned long long>(admitted.load()), degraded.load(),
              static_cast<unsigned long long>(metrics.moved_redirects), static_cast<unsigned long long>(metrics.ask_redirects),
              static_cast<unsigned long long>(metrics.tryagain_retries), static_cast<unsigned long long>(metrics.topology_refreshes));
  CHECK(degraded == 0);
  CHECK(admitted <= limit);
  CHECK(limiter.usage("user", "busy", "m") == admitted);  // nothing lost in the move
  CHECK(metrics.moved_redirects + metrics.ask_redirects > 0);
  CHECK(cluster.master_of(slot).port() == target->port());
}

TEST_CASE("cluster: a graceful CLUSTER FAILOVER under traffic costs no degraded decision", "[cluster][slow]") {
  RedisCluster cluster;
  RedisOptions options = cluster_options(cluster.seeds());
  RedisMultiTierRateLimiter limiter({{"user", Scope::user, {100000, 60s}}}, RedisStorage(options));
  const int slot = slot_of_key(user_key(options.key_prefix, "alice"));
  RedisServer& master = cluster.master_of(slot);
  RedisServer& replica = cluster.replica_of(master);
  std::atomic<int> degraded{0}, admitted{0};
  std::atomic<bool> stop{false};
  std::thread traffic([&] {
    while (!stop) {
      const Decision decision = limiter.allow("alice", "m");
      if (decision.degraded) ++degraded;
      if (decision.allowed) ++admitted;
      std::this_thread::sleep_for(1ms);
    }
  });
  std::this_thread::sleep_for(100ms);
  CHECK(cluster.fail_over(replica, slot));
  std::this_thread::sleep_for(300ms);
  stop = true;
  traffic.join();
  CHECK(degraded == 0);
  CHECK(admitted > 0);
  CHECK(limiter.usage("user", "alice", "m") == static_cast<std::uint64_t>(admitted));  // the replica had it all
  const RedisTopologyMetrics metrics = limiter.storage().topology_metrics();
  CHECK(metrics.moved_redirects + metrics.topology_refreshes > 1);
}

TEST_CASE("cluster: a master killed with SIGKILL: degraded decisions, each bounded, until its replica is promoted, then none", "[cluster][slow]") {
  RedisCluster cluster;
  RedisOptions options = cluster_options(cluster.seeds(), FailurePolicy::fail_open);
  options.connect_timeout = 100ms;
  options.command_timeout = 100ms;
  RedisMultiTierRateLimiter limiter({{"user", Scope::user, {100000, 60s}}}, RedisStorage(options));
  const int slot = slot_of_key(user_key(options.key_prefix, "alice"));
  RedisServer& master = cluster.master_of(slot);
  RedisServer& replica = cluster.replica_of(master);
  REQUIRE(limiter.allow("alice", "m").allowed);
  master.kill();
  LatencyProbe latency;
  int degraded = 0;
  bool recovered = false;
  const auto killed = std::chrono::steady_clock::now();
  const std::uint64_t refreshes_before = limiter.storage().topology_metrics().topology_refreshes;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  std::chrono::steady_clock::time_point first_healthy{};
  while (std::chrono::steady_clock::now() < deadline) {
    const Decision decision = latency([&] { return limiter.allow("alice", "m"); });
    if (decision.degraded) {
      ++degraded;
      REQUIRE_FALSE(recovered);  // once healthy, never degraded again
    } else if (!recovered) {
      recovered = true;
      first_healthy = std::chrono::steady_clock::now();
    }
    if (recovered && std::chrono::steady_clock::now() - first_healthy > 500ms) break;
    std::this_thread::sleep_for(5ms);
  }
  std::printf("[failover] %d degraded decisions, slowest call %.1f ms\n", degraded, latency.max_ms());
  CHECK(recovered);
  CHECK(degraded > 0);
  CHECK(cluster.master_of(slot).port() == replica.port());
  // Hundreds of failed calls, yet the slot map was read at most once per 100 ms: never a refresh storm.
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed);
  const std::uint64_t refreshes = limiter.storage().topology_metrics().topology_refreshes - refreshes_before;
  std::printf("[failover] %llu slot map reads in %lld ms\n", static_cast<unsigned long long>(refreshes),
              static_cast<long long>(elapsed.count()));
  CHECK(refreshes >= 1);
  CHECK(refreshes <= static_cast<std::uint64_t>(elapsed.count() / 100 + 5));
  // Each call: a connect and a command to the dead node, a slot map read (one connect timeout), the retry.
  CHECK(latency.max() < 3 * (options.connect_timeout + options.command_timeout) + 300ms);
}

TEST_CASE("cluster: SCRIPT FLUSH on one master, one dead seed, all seeds dead, a wrong password", "[cluster]") {
  RedisCluster cluster;
  RedisOptions options = cluster_options(cluster.seeds());
  RedisMultiTierRateLimiter limiter(three_slot_tiers(100, 100, 100), RedisStorage(options));
  REQUIRE(limiter.allow("alice", "m").allowed);
  SECTION("SCRIPT FLUSH on every master: the next call loads the script again and decides") {
    for (std::size_t i = 0; i < cluster.size(); ++i) must(cluster.node(i), {"SCRIPT", "FLUSH"});
    const Decision decision = limiter.allow("alice", "m");
    CHECK(decision.allowed);
    CHECK_FALSE(decision.degraded);
    CHECK(limiter.usage("global", "alice", "m") == 2);
  }
  SECTION("a dead seed first in the list: the others give the slot map") {
    RedisOptions dead_first = cluster_options({loopback(free_loopback_port())});
    for (const std::string& seed : cluster.seeds()) dead_first.cluster_nodes.push_back(seed);
    RedisMultiTierRateLimiter other(three_slot_tiers(100, 100, 100), RedisStorage(dead_first));
    const Decision decision = other.allow("alice", "m");
    CHECK(decision.allowed);
    CHECK_FALSE(decision.degraded);
  }
  SECTION("every seed dead: each failure policy, within the timeouts") {
    for (const FailurePolicy policy : {FailurePolicy::fail_open, FailurePolicy::fail_closed, FailurePolicy::local}) {
      RedisOptions dead = cluster_options({loopback(free_loopback_port()), loopback(free_loopback_port())}, policy);
      dead.connect_timeout = 50ms;
      dead.command_timeout = 50ms;
      RedisMultiTierRateLimiter nowhere({{"user", Scope::user, {1, 60s}}}, RedisStorage(dead));
      LatencyProbe latency;
      const Decision first = latency([&] { return nowhere.allow("alice", "m"); });
      const Decision second = latency([&] { return nowhere.allow("alice", "m"); });
      CHECK(first.degraded);
      CHECK(second.degraded);
      CHECK(latency.max() < 400ms);
      if (policy == FailurePolicy::fail_open) CHECK((first.allowed && second.allowed));
      if (policy == FailurePolicy::fail_closed) CHECK((first.status == Status::backend_unavailable && !second.allowed));
      if (policy == FailurePolicy::local) CHECK((first.allowed && !second.allowed));  // the local limit of 1
      CHECK_THROWS_AS(nowhere.usage("user", "alice", "m"), BackendError);
    }
  }
  SECTION("a wrong password: AuthError from the store, the failure policy on decisions") {
    for (std::size_t i = 0; i < cluster.size(); ++i) must(cluster.node(i), {"CONFIG", "SET", "requirepass", "right"});
    RedisOptions wrong = cluster_options(cluster.seeds());
    wrong.password = "wrong";
    RedisMultiTierRateLimiter refused({{"user", Scope::user, {1, 60s}}}, RedisStorage(wrong));
    const Decision decision = refused.allow("alice", "m");
    CHECK(decision.degraded);
    CHECK(decision.status == Status::backend_unavailable);
    CHECK_THROWS_AS(refused.usage("user", "alice", "m"), BackendError);
    RedisOptions right = cluster_options(cluster.seeds());
    right.password = "right";
    RedisMultiTierRateLimiter admitted({{"user", Scope::user, {1, 60s}}}, RedisStorage(right));
    CHECK(admitted.allow("alice", "m").allowed);
  }
}

TEST_CASE("cluster: topology counters reach Prometheus text", "[cluster]") {
  const SharedTopology& shared = shared_topology();
  RedisRateLimiter limiter(Quota{10, 60s}, RedisStorage(cluster_options(shared.cluster_seeds)));
  REQUIRE(limiter.allow("alice", "m").allowed);
  const RedisTopologyMetrics metrics = limiter.storage().topology_metrics();
  CHECK(metrics.nodes == 3);
  CHECK(metrics.topology_refreshes >= 1);
  const std::string text = prometheus::text(metrics);
  CHECK(text.find("airl_redis_nodes 3\n") != std::string::npos);
  CHECK(text.find("# TYPE airl_redis_moved_redirects_total counter") != std::string::npos);
  CHECK(text.find("airl_redis_topology_refreshes_total " + std::to_string(metrics.topology_refreshes)) != std::string::npos);
}

TEST_CASE("cluster: one master down under a cross-slot request: a healthy slot's denial stands, else the failure policy decides", "[cluster][slow]") {
  RedisCluster cluster;
  for (const FailurePolicy policy : {FailurePolicy::fail_open, FailurePolicy::fail_closed, FailurePolicy::local}) {
    INFO("policy " << static_cast<int>(policy));
    RedisOptions options = cluster_options(cluster.seeds(), policy);
    options.connect_timeout = 100ms;
    options.command_timeout = 100ms;
    // The user's tier lives on user-0's master, the global one on {g}'s: another master.
    RedisMultiTierRateLimiter limiter({{"user", Scope::user, {1, 60s}}, {"global", Scope::global, {100, 60s}}},
                                      RedisStorage(options));
    const std::string prefix = options.key_prefix;
    REQUIRE(cluster.master_of(slot_of_key(user_key(prefix, "user-0"))).port() !=
            cluster.master_of(slot_of_key(redis_key_of(prefix, BucketRef{Scope::global, "global", "", ""}))).port());
    REQUIRE(limiter.allow("user-0", "m").allowed);  // user-0 is now at its limit
    RedisServer& global_master = cluster.master_of(slot_of_key(redis_key_of(prefix, BucketRef{Scope::global, "global", "", ""})));
    global_master.pause();  // the global tier's master stops answering
    const Decision full = limiter.allow("user-0", "m");
    CHECK_FALSE(full.allowed);  // user-0's own master denies: that answer stands, whatever the policy
    CHECK(full.reason == "user");
    CHECK_FALSE(full.degraded);
    const Decision fresh = limiter.allow("user-2", "m");  // room in its own tier; the global one unknown
    CHECK(fresh.degraded);
    if (policy == FailurePolicy::fail_open) CHECK(fresh.allowed);
    if (policy == FailurePolicy::fail_closed) CHECK(fresh.status == Status::backend_unavailable);
    if (policy == FailurePolicy::local) CHECK(fresh.allowed);
    global_master.resume();
    // Once it answers again: fail_closed left nothing of user-2's refused request in its own tier.
    if (policy == FailurePolicy::fail_closed) {
      CHECK(wait_until([&] { return limiter.storage().healthy() || limiter.allow("probe", "m").allowed; }, 5s));
      CHECK(limiter.usage("user", "user-2", "m") == 0);
    }
  }
}
