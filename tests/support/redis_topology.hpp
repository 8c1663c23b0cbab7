// SPDX-License-Identifier: MIT
#pragma once
// Real Redis topologies for tests, on free 127.0.0.1 ports, stopped by PID:
//   - RedisCluster: 3 masters + 3 replicas, cluster-node-timeout 1000 ms, made with redis-cli --cluster create;
//   - RedisSentinelSet: 1 master, 1 replica, 3 Sentinels (redis-server --sentinel) watching it as "airl-master".
// The shared ones (shared_cluster_seeds(), shared_sentinels()) are started once per `ctest` run by the
// airl_redis_topology fixture (redis_topology_main.cpp), which writes their addresses to the file named by
// AIRL_TEST_TOPOLOGY; a test binary run by hand, without it, starts its own. Tests that kill or fail over
// nodes make private ones.

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include "redis_server.hpp"

namespace airl::test {

inline std::string loopback(int port) { return "127.0.0.1:" + std::to_string(port); }

inline std::string reply_string(const redisReply& reply) {
  return reply.str == nullptr ? std::string() : std::string(reply.str, reply.len);
}

// Runs a program to its end (bounded by its own behaviour: redis-cli with --cluster-yes never asks), its
// output to `log`.
inline int run_program(std::vector<std::string> args, const std::string& log) {
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&files, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&files, 1, 2);
  const int spawned = ::posix_spawnp(&pid, argv[0], &files, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  if (spawned != 0) return -1;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The value of `name` in an INFO-style "name:value" text ("" when absent).
inline std::string info_field(const std::string& text, std::string_view name) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 && line[name.size()] == ':') {
      return line.substr(name.size() + 1);
    }
  }
  return {};
}

template <class Done>
bool wait_until(Done&& done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

class RedisCluster {
 public:
  static constexpr int node_timeout_ms = 1000;

  RedisCluster() {
    for (int i = 0; i < 6; ++i) {
      nodes_.push_back(std::make_unique<RedisServer>(std::vector<std::string>{
          "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout",
          std::to_string(node_timeout_ms), "--cluster-allow-replica-migration", "no", "--repl-diskless-sync-delay", "0"}));
    }
    std::vector<std::string> create = {"redis-cli", "--cluster", "create"};
    for (const auto& node : nodes_) create.push_back(loopback(node->port()));
    create.insert(create.end(), {"--cluster-replicas", "1", "--cluster-yes"});
    std::fflush(stdout);
    const std::string log = nodes_.front()->directory() + "/cluster-create.log";
    if (run_program(create, log) != 0) throw std::runtime_error("redis-cli --cluster create failed (see " + log + ")");
    if (!wait_until([&] { return healthy(); }, std::chrono::seconds(20))) {
      throw std::runtime_error("the test cluster did not become healthy within 20 s");
    }
  }

  // Every node answers, says cluster_state:ok, and all agree every slot is served and on the current epoch;
  // every replica has synced with its master (a replica that never did cannot take over: its data is "too
  // old"). A replica whose epoch lags asks for votes in an epoch the masters already passed, and they refuse.
  bool healthy() const {
    std::string epoch;
    for (const auto& node : nodes_) {
      if (!node->running()) continue;
      const RawReply replication = node->command({"INFO", "replication"});
      if (!replication) return false;
      const std::string text = reply_string(*replication);
      if (text.find("role:slave") != std::string::npos && text.find("master_link_status:up") == std::string::npos) return false;
      const RawReply info = node->command({"CLUSTER", "INFO"});
      if (!info || info->type != REDIS_REPLY_STRING || reply_string(*info).find("cluster_state:ok") == std::string::npos) {
        return false;
      }
      const std::string node_epoch = info_field(reply_string(*info), "cluster_current_epoch");
      if (epoch.empty()) epoch = node_epoch;
      if (node_epoch.empty() || node_epoch != epoch) return false;
      const RawReply slots = node->command({"CLUSTER", "SLOTS"});
      if (!slots || slots->type != REDIS_REPLY_ARRAY) return false;
      long long covered = 0;
      for (std::size_t i = 0; i < slots->elements; ++i) {
        covered += slots->element[i]->element[1]->integer - slots->element[i]->element[0]->integer + 1;
      }
      if (covered != 16384) return false;
    }
    return true;
  }

  std::vector<std::string> seeds() const {
    std::vector<std::string> all;
    for (const auto& node : nodes_) all.push_back(loopback(node->port()));
    return all;
  }

  RedisServer& node(std::size_t i) { return *nodes_.at(i); }
  std::size_t size() const noexcept { return nodes_.size(); }

  // The server that is master of `slot` now (asked of any running node).
  RedisServer& master_of(int slot) {
    for (const auto& asked : nodes_) {
      if (!asked->running()) continue;
      const RawReply slots = asked->command({"CLUSTER", "SLOTS"});
      if (!slots || slots->type != REDIS_REPLY_ARRAY) continue;
      for (std::size_t i = 0; i < slots->elements; ++i) {
        const redisReply& range = *slots->element[i];
        if (range.element[0]->integer <= slot && slot <= range.element[1]->integer) {
          const long long port = range.element[2]->element[1]->integer;
          for (const auto& node : nodes_) {
            if (node->port() == port) return *node;
          }
        }
      }
    }
    throw std::runtime_error("no master known for slot " + std::to_string(slot));
  }

  // The replica of `master` (by CLUSTER NODES of the master).
  RedisServer& replica_of(RedisServer& master) {
    const RawReply id = master.command({"CLUSTER", "MYID"});
    if (!id) throw std::runtime_error("master does not answer");
    for (const auto& node : nodes_) {
      if (!node->running()) continue;
      const RawReply role = node->command({"ROLE"});
      if (!role || role->type != REDIS_REPLY_ARRAY || reply_string(*role->element[0]) != "slave") continue;
      if (role->element[2]->integer == master.port()) return *node;
    }
    throw std::runtime_error("no replica of " + loopback(master.port()));
  }

  // Promotes `replica` with CLUSTER FAILOVER (graceful: the master hands over its writes first) and waits until
  // the nodes say it serves `slot`. Redis aborts a manual failover that has not finished in 5 s (a loaded
  // machine, a lost vote) and never retries it, so each attempt gets 6 s and a new CLUSTER FAILOVER after it.
  bool fail_over(RedisServer& replica, int slot, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (int attempt = 1; std::chrono::steady_clock::now() < deadline; ++attempt) {
      const RawReply started = replica.command({"CLUSTER", "FAILOVER"});
      if (!started || started->type == REDIS_REPLY_ERROR) {  // e.g. its link to the master is being re-made
        std::printf("[fail_over] attempt %d refused: %s\n", attempt, started ? reply_string(*started).c_str() : "no reply");
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        continue;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (wait_until([&] { return master_of(slot).port() == replica.port(); }, std::min(left, std::chrono::milliseconds(6000)))) {
        if (attempt > 1) std::printf("[fail_over] promoted at attempt %d\n", attempt);
        return true;
      }
    }
    return false;
  }

  void detach() {
    for (auto& node : nodes_) node->detach();
  }

 private:
  std::vector<std::unique_ptr<RedisServer>> nodes_;
};

class RedisSentinelSet {
 public:
  static constexpr const char* master_name = "airl-master";

  RedisSentinelSet() {
    master_ = std::make_unique<RedisServer>(std::vector<std::string>{"--repl-diskless-sync-delay", "0"});
    replica_ = std::make_unique<RedisServer>(std::vector<std::string>{
        "--replicaof", "127.0.0.1", std::to_string(master_->port()), "--repl-diskless-sync-delay", "0"});
    for (int i = 0; i < 3; ++i) {
      const std::string config = "sentinel monitor " + std::string(master_name) + " 127.0.0.1 " +
                                 std::to_string(master_->port()) + " 2\n" + "sentinel down-after-milliseconds " +
                                 master_name + " 1000\n" + "sentinel failover-timeout " + master_name + " 5000\n";
      sentinels_.push_back(std::make_unique<RedisServer>(std::vector<std::string>{"--sentinel"}, config));
    }
    if (!wait_until([&] { return replica_linked(); }, std::chrono::seconds(20))) {
      throw std::runtime_error("the test Sentinel set did not settle within 20 s");
    }
  }

  std::vector<std::string> sentinels() const {
    std::vector<std::string> all;
    for (const auto& sentinel : sentinels_) all.push_back(loopback(sentinel->port()));
    return all;
  }

  // The master's port as the first Sentinel that answers names it (0 if none does).
  int master_port() const {
    for (const auto& sentinel : sentinels_) {
      if (!sentinel->running()) continue;
      const RawReply reply = sentinel->command({"SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name});
      if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) return std::stoi(reply_string(*reply->element[1]));
    }
    return 0;
  }

  RedisServer& master() { return *master_; }
  RedisServer& replica() { return *replica_; }
  RedisServer& sentinel(std::size_t i) { return *sentinels_.at(i); }
  // The server whose port the Sentinels name now.
  RedisServer& current_master() { return master_port() == replica_->port() ? *replica_ : *master_; }

  void detach() {
    master_->detach();
    replica_->detach();
    for (auto& sentinel : sentinels_) sentinel->detach();
  }

 private:
  // Replication is up and every Sentinel knows the replica (a failover needs one to promote).
  bool replica_linked() const {
    const RawReply info = replica_->command({"INFO", "replication"});
    if (!info || reply_string(*info).find("master_link_status:up") == std::string::npos) return false;
    for (const auto& sentinel : sentinels_) {
      const RawReply replicas = sentinel->command({"SENTINEL", "REPLICAS", master_name});
      if (!replicas || replicas->type != REDIS_REPLY_ARRAY || replicas->elements == 0) return false;
    }
    return true;
  }

  std::unique_ptr<RedisServer> master_;
  std::unique_ptr<RedisServer> replica_;
  std::vector<std::unique_ptr<RedisServer>> sentinels_;
};

// The shared topologies' addresses: read from AIRL_TEST_TOPOLOGY's file (lines "cluster host:port" and
// "sentinel host:port"), or started by this process when that is not set.
struct SharedTopology {
  std::vector<std::string> cluster_seeds;
  std::vector<std::string> sentinels;
};

inline const SharedTopology& shared_topology() {
  static const SharedTopology topology = [] {
    skip_redis_if_requested();
    SharedTopology shared;
    const char* path = std::getenv("AIRL_TEST_TOPOLOGY");
    if (path != nullptr && *path != '\0') {
      std::ifstream file(path);
      if (!file) throw std::runtime_error(std::string("AIRL_TEST_TOPOLOGY names no readable file: ") + path);
      std::string kind, address;
      while (file >> kind >> address) {
        if (kind == "cluster") shared.cluster_seeds.push_back(address);
        if (kind == "sentinel") shared.sentinels.push_back(address);
      }
      if (shared.cluster_seeds.empty() || shared.sentinels.empty()) {
        throw std::runtime_error(std::string("AIRL_TEST_TOPOLOGY file holds no topology: ") + path);
      }
      return shared;
    }
    static RedisCluster cluster;  // stopped at exit
    static RedisSentinelSet sentinel_set;
    shared.cluster_seeds = cluster.seeds();
    shared.sentinels = sentinel_set.sentinels();
    return shared;
  }();
  return topology;
}

}  // namespace airl::test
