// SPDX-License-Identifier: MIT
#pragma once
// How a Redis storage followed its servers: redirects and retries in a Redis Cluster, slot map reads,
// Sentinel rediscoveries, replica acknowledgements that came short. docs/REDIS.md, "Topologies".

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace airl {

struct RedisTopologyMetrics {
  std::uint64_t moved_redirects = 0;         // MOVED answers followed (a slot lives on another master now)
  std::uint64_t ask_redirects = 0;           // ASK answers followed (a slot being migrated)
  std::uint64_t tryagain_retries = 0;        // TRYAGAIN / CLUSTERDOWN answers retried after a short backoff
  std::uint64_t topology_refreshes = 0;      // slot maps read (CLUSTER SLOTS)
  std::uint64_t sentinel_rediscoveries = 0;  // masters asked of the Sentinels after the first
  std::uint64_t replica_ack_shortfalls = 0;  // writes fewer replicas acknowledged than wait_for_replicas asked
  std::size_t nodes = 0;                     // masters known: the slot map's (cluster), else 1 once known

  // Adds another storage's counts (two storages on the same servers: nodes is the larger).
  RedisTopologyMetrics& operator+=(const RedisTopologyMetrics& other) noexcept {
    moved_redirects += other.moved_redirects;
    ask_redirects += other.ask_redirects;
    tryagain_retries += other.tryagain_retries;
    topology_refreshes += other.topology_refreshes;
    sentinel_rediscoveries += other.sentinel_rediscoveries;
    replica_ack_shortfalls += other.replica_ack_shortfalls;
    nodes = nodes > other.nodes ? nodes : other.nodes;
    return *this;
  }
};

namespace prometheus {

// The metrics in Prometheus text format (counters *_total, the node count a gauge), names starting with
// `prefix`. Thread safety: pure. Throws std::bad_alloc only.
inline std::string text(const RedisTopologyMetrics& metrics, std::string_view prefix = "airl_redis") {
  std::string out;
  const auto sample = [&](std::string_view name, std::string_view type, std::string_view help, std::uint64_t value) {
    const std::string full = std::string(prefix) + "_" + std::string(name);
    out += "# HELP " + full + " " + std::string(help) + "\n# TYPE " + full + " " + std::string(type) + "\n" + full +
           " " + std::to_string(value) + "\n";
  };
  sample("moved_redirects_total", "counter", "MOVED redirects followed.", metrics.moved_redirects);
  sample("ask_redirects_total", "counter", "ASK redirects followed.", metrics.ask_redirects);
  sample("tryagain_retries_total", "counter", "TRYAGAIN and CLUSTERDOWN answers retried.", metrics.tryagain_retries);
  sample("topology_refreshes_total", "counter", "Cluster slot maps read.", metrics.topology_refreshes);
  sample("sentinel_rediscoveries_total", "counter", "New masters the Sentinels named (failovers followed).", metrics.sentinel_rediscoveries);
  sample("replica_ack_shortfalls_total", "counter", "Writes fewer replicas acknowledged than asked.",
         metrics.replica_ack_shortfalls);
  sample("nodes", "gauge", "Redis masters known.", metrics.nodes);
  return out;
}

}  // namespace prometheus
}  // namespace airl
