// SPDX-License-Identifier: MIT
#pragma once
// Options of the Redis storage, and what it does when Redis cannot be reached.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "../detail/echo.hpp"

namespace airl {

// What a decision (allow(), try_acquire()) does when Redis fails (down, hung, refusing), the same for rate
// limits and concurrency caps. Every such decision is degraded (Decision::degraded, Permit::degraded()) and
// counts as a degraded decision and a backend error in the limiter's metrics. docs/REDIS.md, "Failure
// policies", gives the whole table (settle, renew and release too).
enum class FailurePolicy {
  fail_open,    // admit: availability first (a Redis outage never becomes an outage of the service)
  fail_closed,  // refuse with Status::backend_unavailable (HTTP 503), never throw: protect the GPUs first
  local,        // decide with an in-process store of the same quotas and caps until Redis is back
};

// Which servers hold the quotas: one server (host/port or unix_socket), a master found through Redis
// Sentinel (sentinel_nodes + sentinel_master), or a Redis Cluster (cluster_nodes). docs/REDIS.md, "Topologies".
struct RedisOptions {
  std::string host = "127.0.0.1";  // TCP host (a numeric address or a name)
  int port = 6379;                 // TCP port
  std::string unix_socket;         // path of a unix socket; wins over host/port when set
  std::string username;            // ACL user (Redis 6+); empty = the default user
  std::string password;            // AUTH password; empty = no AUTH
  int database = 0;                // SELECTed on every connect
  std::chrono::milliseconds connect_timeout{200};  // TCP connect plus the AUTH/SELECT/SCRIPT LOAD handshake
  std::chrono::milliseconds command_timeout{100};  // one command's round trip
  std::size_t pool_size = 8;                       // connections shared by all threads
  std::string key_prefix = "airl";                 // every key written starts with it; no '{' or '}'
  FailurePolicy on_failure = FailurePolicy::fail_open;

  std::vector<std::string> cluster_nodes;   // "host:port" seeds of a Redis Cluster; non-empty = cluster mode
  std::vector<std::string> sentinel_nodes;  // "host:port" of Redis Sentinels; non-empty = sentinel mode
  std::string sentinel_master;              // the master name the sentinels watch (required in sentinel mode)
  std::string sentinel_username;            // optional: the sentinels' own ACL user / password
  std::string sentinel_password;

  // After each write, wait until this many replicas acknowledged it (WAIT), at most replica_ack_timeout. 0
  // (default): no waiting. Asynchronous replication can lose the last writes in a failover (an admission
  // forgotten: the new master under-counts for at most one window); waiting narrows that, at a measured cost
  // (docs/REDIS.md, "Failover"). A write that was not acknowledged in time still counts (it is on the master)
  // and is counted in RedisTopologyMetrics::replica_ack_shortfalls.
  int wait_for_replicas = 0;
  std::chrono::milliseconds replica_ack_timeout{50};
};

// Parses "host:port,host:port,..." (as given on a command line: --redis-cluster) into the node list of
// RedisOptions::cluster_nodes or sentinel_nodes; blanks around the entries are dropped. Throws
// std::invalid_argument on an empty list or an entry that is not host:port with a port in 1..65535.
// Thread safety: pure.
inline std::vector<std::string> redis_node_list(std::string_view list);

namespace detail {

// A "host:port" node: its host, and its port when it is a number in 1..65535 (else 0).
struct NodeAddress {
  std::string host;
  int port = 0;
};

inline int parse_port(std::string_view text) noexcept {
  int parsed = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), parsed);
  return error == std::errc{} && end == text.data() + text.size() && parsed >= 1 && parsed <= 65535 ? parsed : 0;
}

// The host of an address without the brackets of "[IPv6]", or "" unless it is a name or address (letters,
// digits, '.', '-', '_', ':'): what every parser of a host here accepts.
inline std::string_view node_host(std::string_view host) noexcept {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);  // [IPv6]
  const bool name_like = std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_' || c == ':';
  });
  return name_like ? host : std::string_view{};
}

// Splits "host:port" (the last ':' separates them, so an IPv6 host may hold colons; "[::1]:7000" gives
// "::1"). Throws std::invalid_argument naming `what` unless the host is a name or address (letters, digits,
// '.', '-', '_', ':') and the port is in 1..65535.
inline NodeAddress parse_node(std::string_view node, std::string_view what) {
  const std::size_t colon = node.rfind(':');
  NodeAddress address;
  if (colon != std::string_view::npos && colon > 0) {
    const std::string_view host = node_host(node.substr(0, colon));
    if (!host.empty()) {
      address.host = std::string(host);
      address.port = parse_port(node.substr(colon + 1));
    }
  }
  if (address.port == 0) {
    throw std::invalid_argument("airl::RedisOptions: " + std::string(what) + " '" + detail::echo(node) +
                                "' is not host:port with a port in 1..65535");
  }
  return address;
}

}  // namespace detail

// `base` with host and port taken from "host:port", "host" or ":port" (a missing part keeps base's), as
// given on a command line (--redis 127.0.0.1:6379). The host is read as a cluster node's is ("[::1]:6379"
// gives "::1"). Throws std::invalid_argument on a port that is not a number in 1..65535 or a host that is not
// a name or address (letters, digits, '.', '-', '_', ':'). Thread safety: pure.
inline RedisOptions redis_options_from_address(std::string_view address, RedisOptions base = {}) {
  const std::size_t colon = address.rfind(':');
  if (colon != std::string_view::npos) {
    const int port = detail::parse_port(address.substr(colon + 1));
    if (port == 0) {
      throw std::invalid_argument("airl: Redis address '" + detail::echo(address) + "' needs a port in 1..65535");
    }
    base.port = port;
    address = address.substr(0, colon);
  }
  if (!address.empty()) {
    const std::string_view host = detail::node_host(address);
    if (host.empty()) {
      throw std::invalid_argument("airl: Redis address '" + detail::echo(address) + "' names no host or address");
    }
    base.host = std::string(host);
  }
  return base;
}

inline std::vector<std::string> redis_node_list(std::string_view list) {
  std::vector<std::string> nodes;
  for (std::size_t start = 0; start <= list.size();) {
    std::size_t end = list.find(',', start);
    if (end == std::string_view::npos) end = list.size();
    std::string_view node = list.substr(start, end - start);
    while (!node.empty() && (node.front() == ' ' || node.front() == '\t')) node.remove_prefix(1);
    while (!node.empty() && (node.back() == ' ' || node.back() == '\t')) node.remove_suffix(1);
    detail::parse_node(node, "node");
    nodes.emplace_back(node);
    start = end + 1;
  }
  return nodes;
}

namespace detail {

// Throws std::invalid_argument unless `prefix` is usable: not empty, no '{' or '}' (they would move the hash tag).
inline void validate_key_prefix(std::string_view prefix) {
  if (prefix.empty()) throw std::invalid_argument("airl::RedisOptions: key_prefix must not be empty");
  if (prefix.find_first_of("{}") != std::string_view::npos) {
    throw std::invalid_argument("airl::RedisOptions: key_prefix must not contain '{' or '}'");
  }
}

// Throws std::invalid_argument unless the options are usable (both Redis storages check them alike).
inline void validate_redis_options(const RedisOptions& options) {
  const auto refuse = [](const char* what) { throw std::invalid_argument(std::string("airl::RedisOptions: ") + what); };
  validate_key_prefix(options.key_prefix);
  if (options.pool_size == 0) refuse("pool_size must be at least 1");
  if (options.unix_socket.empty() && (options.port <= 0 || options.port > 65535)) refuse("port must be in 1..65535");
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0) refuse("timeouts must be > 0");
  if (options.database < 0) refuse("database must be >= 0");
  if (!options.cluster_nodes.empty() && !options.sentinel_nodes.empty()) {
    refuse("cluster_nodes and sentinel_nodes are exclusive: a Redis Cluster or Sentinel, not both");
  }
  for (const std::string& node : options.cluster_nodes) parse_node(node, "cluster node");
  for (const std::string& node : options.sentinel_nodes) parse_node(node, "sentinel node");
  if (!options.cluster_nodes.empty() && options.database != 0) refuse("a Redis Cluster has database 0 only");
  if (!options.cluster_nodes.empty() && !options.unix_socket.empty()) refuse("unix_socket does not go with cluster_nodes");
  if (!options.sentinel_nodes.empty() && options.sentinel_master.empty()) {
    refuse("sentinel_nodes need sentinel_master, the name the sentinels watch");
  }
  if (options.wait_for_replicas < 0) refuse("wait_for_replicas must be >= 0");
  if (options.wait_for_replicas > 0 && options.replica_ack_timeout.count() <= 0) refuse("replica_ack_timeout must be > 0");
  if (options.on_failure != FailurePolicy::fail_open && options.on_failure != FailurePolicy::fail_closed &&
      options.on_failure != FailurePolicy::local) {
    refuse("unknown on_failure policy");
  }
}

}  // namespace detail

}  // namespace airl
