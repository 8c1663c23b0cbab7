// SPDX-License-Identifier: MIT
// RedisOptions (no server needed): reading "host:port" and node lists as given on a command line, and the
// refusals of cluster and Sentinel options.
#include <catch2/catch.hpp>

#include <airl/redis.hpp>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

TEST_CASE("a Redis address sets host and port and keeps what it does not name", "[redis_options]") {
  const airl::RedisOptions both = airl::redis_options_from_address("10.0.0.7:6380");
  CHECK(both.host == "10.0.0.7");
  CHECK(both.port == 6380);
  const airl::RedisOptions host_only = airl::redis_options_from_address("cache.internal");
  CHECK(host_only.host == "cache.internal");
  CHECK(host_only.port == 6379);
  airl::RedisOptions base;
  base.host = "redis";
  base.key_prefix = "svc";
  const airl::RedisOptions port_only = airl::redis_options_from_address(":7000", base);
  CHECK(port_only.host == "redis");
  CHECK(port_only.port == 7000);
  CHECK(port_only.key_prefix == "svc");
  CHECK(airl::redis_options_from_address("").port == 6379);
}

TEST_CASE("a Redis address with a bad port is refused", "[redis_options]") {
  for (const char* bad : {"h:", "h:0", "h:65536", "h:-1", "h:63x", "h:99999999999"}) {
    INFO(bad);
    CHECK_THROWS_AS(airl::redis_options_from_address(bad), std::invalid_argument);
  }
}

TEST_CASE("a Redis address's host is read as a node's: [IPv6] unbracketed, other bytes refused (fuzz finding)",
          "[redis_options]") {
  // tests/fuzz/corpus/redis_address/regress-address-*: "[::1]:6379" kept its brackets (no resolver takes
  // them) and any byte passed as a host, NUL included, where parse_node refuses both.
  const airl::RedisOptions ipv6 = airl::redis_options_from_address("[::1]:6380");
  CHECK(ipv6.host == "::1");
  CHECK(ipv6.port == 6380);
  CHECK(airl::redis_options_from_address("[fe80::1]:7000").host == airl::detail::parse_node("[fe80::1]:7000", "n").host);
  CHECK(airl::redis_options_from_address("redis_1.internal").host == "redis_1.internal");
  for (const std::string& bad : {std::string(1, '\0'), std::string("a\0b:1", 5), std::string("my host:6379"),
                                std::string("host,b:1"), std::string("[]:1"), std::string("h/x")}) {
    INFO("'" << bad << "'");
    CHECK_THROWS_AS(airl::redis_options_from_address(bad), std::invalid_argument);
  }
}

TEST_CASE("a node list from a command line: host:port entries, blanks dropped, anything else refused", "[redis_options]") {
  CHECK(airl::redis_node_list("10.0.0.1:7000") == std::vector<std::string>{"10.0.0.1:7000"});
  CHECK(airl::redis_node_list("a:1, b:2 ,c:65535") == std::vector<std::string>{"a:1", "b:2", "c:65535"});
  CHECK(airl::redis_node_list("[::1]:7000,::1:7001") == std::vector<std::string>{"[::1]:7000", "::1:7001"});
  for (const char* bad : {"", ",", "a:1,", ",a:1", "a", "a:", ":1", "a:0", "a:65536", "a:1,b", "a:1;b:2", "a:x"}) {
    INFO("'" << bad << "'");
    CHECK_THROWS_AS(airl::redis_node_list(bad), std::invalid_argument);
  }
}

TEST_CASE("cluster and Sentinel options are checked by the storages' constructors", "[redis_options]") {
  const auto refused = [](const airl::RedisOptions& options) {
    CHECK_THROWS_AS(airl::RedisStorage(options), std::invalid_argument);
    CHECK_THROWS_AS(airl::RedisConcurrencyStorage(options), std::invalid_argument);
  };
  airl::RedisOptions both;
  both.cluster_nodes = {"127.0.0.1:7000"};
  both.sentinel_nodes = {"127.0.0.1:26379"};
  both.sentinel_master = "m";
  refused(both);
  airl::RedisOptions no_master;
  no_master.sentinel_nodes = {"127.0.0.1:26379"};
  refused(no_master);
  for (const char* bad : {"", "host", "host:", ":7000", "host:0", "host:65536", "host:7000x", "host:-1"}) {
    INFO("'" << bad << "'");
    airl::RedisOptions cluster;
    cluster.cluster_nodes = {"127.0.0.1:7000", bad};
    refused(cluster);
    airl::RedisOptions sentinel;
    sentinel.sentinel_nodes = {bad};
    sentinel.sentinel_master = "m";
    refused(sentinel);
  }
  airl::RedisOptions database;
  database.cluster_nodes = {"127.0.0.1:7000"};
  database.database = 1;
  refused(database);
  airl::RedisOptions socket;
  socket.cluster_nodes = {"127.0.0.1:7000"};
  socket.unix_socket = "/tmp/redis.sock";
  refused(socket);
  airl::RedisOptions waits;
  waits.wait_for_replicas = -1;
  refused(waits);
  waits.wait_for_replicas = 1;
  waits.replica_ack_timeout = std::chrono::milliseconds(0);
  refused(waits);
  // What is accepted: nothing connects at construction.
  airl::RedisOptions fine;
  fine.cluster_nodes = {"127.0.0.1:1", "localhost:2"};
  CHECK_NOTHROW(airl::RedisStorage(fine));
  fine.cluster_nodes.clear();
  fine.sentinel_nodes = {"127.0.0.1:1"};
  fine.sentinel_master = "m";
  fine.database = 2;
  CHECK_NOTHROW(airl::RedisConcurrencyStorage(fine));
}
