// SPDX-License-Identifier: MIT
#pragma once
// The gateway's command line. Every flag has a default but --config; a wrong flag is an error, not ignored.

#include <airl/redis/options.hpp>

#include <charconv>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace gateway {

inline constexpr const char* usage_text =
    "usage: airl_gateway --config FILE [options]\n"
    "  --listen ADDR            address to bind (default 127.0.0.1)\n"
    "  --port N                 API port (default 8080)\n"
    "  --admin-port N           port of /livez, /healthz and /metrics, on its own threads (default 8081)\n"
    "  --redis HOST:PORT        share the limits through Redis (default: in memory, this process only)\n"
    "  --redis-cluster H:P,...  share them through a Redis Cluster (any of its nodes as seeds)\n"
    "  --redis-sentinel H:P,... share them through the master Redis Sentinels name (with --sentinel-master)\n"
    "  --sentinel-master NAME   the master's name the Sentinels watch\n"
    "  --redis-prefix P         Redis key prefix (default airl-gateway)\n"
    "  --failure-policy P       when Redis fails: fail_open (default), fail_closed or local\n"
    "  --gpu-workers N          simulated GPUs (default 4)\n"
    "  --queue N                completions waiting for a GPU before 503 (default 64)\n"
    "  --us-per-token N         simulated time per output token, microseconds (default 2000)\n"
    "  --reply-tokens N         tokens a reply has, at most max_tokens (default 16)\n"
    "  --max-body-bytes N       larger request bodies get 413, refused while reading (default 65536)\n"
    "  --http-threads N         requests handled at once (default 64)\n"
    "  --max-connections N      open API connections in all; more get 503 (default 4096)\n"
    "  --max-connections-per-address N   from one client address; more get 429 (default 32; behind a\n"
    "                           proxy every connection comes from its address: raise it)\n"
    "  --request-timeout-ms N   a request's first byte to its last, head and body; then 408 (default 10000)\n"
    "  --idle-timeout-ms N      a kept-alive connection with no request closes after this (default 5000)\n"
    "  --slot-retry-after-ms N  the retry hint when an in-flight cap is full (default 1000)\n"
    "  --shutdown-grace-ms N    on SIGTERM, how long in-flight requests may take (default 10000)\n"
    "  --unlimited              no limits: the model server behind a sidecar\n";

struct Flags {
  std::string config_path;
  std::string listen = "127.0.0.1";
  int port = 8080;
  int admin_port = 8081;
  std::optional<airl::RedisOptions> redis;  // where the limits are shared, when they are
  std::string redis_where;                  // the same, for the start-up line
  std::string redis_prefix = "airl-gateway";
  std::string sentinel_master;
  airl::FailurePolicy failure_policy = airl::FailurePolicy::fail_open;
  std::uint64_t gpu_workers = 4;
  std::uint64_t queue = 64;
  std::uint64_t us_per_token = 2000;
  std::uint64_t reply_tokens = 16;
  std::uint64_t max_body_bytes = 65536;
  std::uint64_t http_threads = 64;
  std::uint64_t max_connections = 4096;
  std::uint64_t max_connections_per_address = 32;
  std::uint64_t request_timeout_ms = 10000;
  std::uint64_t idle_timeout_ms = 5000;
  std::uint64_t slot_retry_after_ms = 1000;
  std::uint64_t shutdown_grace_ms = 10000;
  bool unlimited = false;
};

inline airl::FailurePolicy parse_failure_policy(std::string_view text) {
  if (text == "fail_open") return airl::FailurePolicy::fail_open;
  if (text == "fail_closed") return airl::FailurePolicy::fail_closed;
  if (text == "local") return airl::FailurePolicy::local;
  throw std::invalid_argument("--failure-policy must be fail_open, fail_closed or local, not '" + std::string(text) + "'");
}

inline std::uint64_t parse_count(std::string_view flag, std::string_view text, std::uint64_t low, std::uint64_t high) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size() || value < low || value > high) {
    throw std::invalid_argument(std::string(flag) + " needs an integer in " + std::to_string(low) + ".." +
                                std::to_string(high) + ", not '" + std::string(text) + "'");
  }
  return value;
}

// Parses argv. Throws std::invalid_argument on an unknown flag, a missing or bad value, or no --config.
inline Flags parse_flags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--unlimited") {
      flags.unlimited = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument(std::string(flag) + " needs a value (or is unknown)");
    const std::string_view value = argv[++i];
    if (flag == "--config") flags.config_path = value;
    else if (flag == "--listen") flags.listen = value;
    else if (flag == "--port") flags.port = static_cast<int>(parse_count(flag, value, 1, 65535));
    else if (flag == "--admin-port") flags.admin_port = static_cast<int>(parse_count(flag, value, 1, 65535));
    else if (flag == "--redis" || flag == "--redis-cluster" || flag == "--redis-sentinel") {
      if (flags.redis) throw std::invalid_argument("--redis, --redis-cluster and --redis-sentinel are exclusive");
      flags.redis.emplace();
      if (flag == "--redis") flags.redis = airl::redis_options_from_address(value);
      if (flag == "--redis-cluster") flags.redis->cluster_nodes = airl::redis_node_list(value);
      if (flag == "--redis-sentinel") flags.redis->sentinel_nodes = airl::redis_node_list(value);
      flags.redis_where = std::string(flag.substr(2)) + " " + std::string(value);
    }
    else if (flag == "--sentinel-master") flags.sentinel_master = value;
    else if (flag == "--redis-prefix") flags.redis_prefix = value;
    else if (flag == "--failure-policy") flags.failure_policy = parse_failure_policy(value);
    else if (flag == "--gpu-workers") flags.gpu_workers = parse_count(flag, value, 1, 1024);
    else if (flag == "--queue") flags.queue = parse_count(flag, value, 0, 1'000'000);
    else if (flag == "--us-per-token") flags.us_per_token = parse_count(flag, value, 0, 10'000'000);
    else if (flag == "--reply-tokens") flags.reply_tokens = parse_count(flag, value, 1, 1'000'000);
    else if (flag == "--max-body-bytes") flags.max_body_bytes = parse_count(flag, value, 64, 64 << 20);
    else if (flag == "--http-threads") flags.http_threads = parse_count(flag, value, 1, 4096);
    else if (flag == "--max-connections") flags.max_connections = parse_count(flag, value, 1, 1'000'000);
    else if (flag == "--max-connections-per-address") flags.max_connections_per_address = parse_count(flag, value, 1, 1'000'000);
    else if (flag == "--request-timeout-ms") flags.request_timeout_ms = parse_count(flag, value, 100, 3'600'000);
    else if (flag == "--idle-timeout-ms") flags.idle_timeout_ms = parse_count(flag, value, 100, 3'600'000);
    else if (flag == "--slot-retry-after-ms") flags.slot_retry_after_ms = parse_count(flag, value, 1, 3'600'000);
    else if (flag == "--shutdown-grace-ms") flags.shutdown_grace_ms = parse_count(flag, value, 0, 3'600'000);
    else throw std::invalid_argument("unknown flag " + std::string(flag));
  }
  if (flags.config_path.empty()) throw std::invalid_argument("--config FILE is required");
  if (flags.admin_port == flags.port) throw std::invalid_argument("--admin-port must differ from --port");
  const bool sentinel = flags.redis && !flags.redis->sentinel_nodes.empty();
  if (sentinel != !flags.sentinel_master.empty()) {
    throw std::invalid_argument("--redis-sentinel and --sentinel-master go together");
  }
  if (flags.redis) {
    flags.redis->sentinel_master = flags.sentinel_master;
    flags.redis->key_prefix = flags.redis_prefix;
    flags.redis->on_failure = flags.failure_policy;
  }
  return flags;
}

}  // namespace gateway
