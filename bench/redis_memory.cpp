// SPDX-License-Identifier: MIT
// Redis memory per bucket and per entry (see redis_memory.hpp). The buckets are filled with allow_many()
// in batches of 64 (one round trip per batch): the script, and so what Redis stores, is the same as for
// allow(), only faster to fill.

#include "redis_memory.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace airl::bench {
namespace {

using namespace std::chrono_literals;

// Empties the server and waits until its background thread has freed what FLUSHALL handed it (large values
// are freed lazily), so used_memory does not shrink during a measurement.
void flush_and_settle(RawRedis& raw) {
  raw.command({"FLUSHALL"});
  for (const auto deadline = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(10ms)) {
    if (raw.info("memory", "lazyfree_pending_objects") == "0") return;
  }
  throw std::runtime_error("Redis kept freeing objects in the background for 10 s");
}

struct MemoryRow {
  double bytes_per_bucket;
  std::string encodings;  // of the log and the costs key
};

// Creates `buckets` buckets of `entries` entries of cost `cost` each through the limiter, with realistic key
// names (prefix "airl", users "user-000042", model "llama-3-70b"), and measures used_memory's growth.
MemoryRow fill_buckets(RawRedis& raw, int port, std::size_t buckets, std::size_t entries, std::uint64_t cost) {
  flush_and_settle(raw);
  airl::RedisOptions options;
  options.port = port;
  airl::RedisRateLimiter limiter({1'000'000'000, std::chrono::minutes(10)}, airl::RedisStorage(options));
  std::vector<std::string> users(buckets);
  char name[32];
  for (std::size_t b = 0; b < buckets; ++b) {
    std::snprintf(name, sizeof(name), "user-%06zu", b);
    users[b] = name;
  }
  const long long before = std::stoll(raw.info("memory", "used_memory"));
  constexpr std::size_t batch_size = 64;
  std::vector<airl::Request> batch;
  batch.reserve(batch_size);
  const std::size_t total = buckets * entries;
  for (std::size_t done = 0; done < total;) {
    batch.clear();
    for (; done < total && batch.size() < batch_size; ++done) {
      batch.push_back({.user = users[done / entries], .model = "llama-3-70b", .cost = cost});
    }
    for (const airl::Decision& decision : limiter.allow_many(batch)) {
      if (!decision || decision.degraded) throw std::runtime_error("a memory-measuring request was not admitted");
    }
  }
  std::this_thread::sleep_for(300ms);  // lets Redis's cron finish rehashing the keyspace tables
  const long long after = std::stoll(raw.info("memory", "used_memory"));
  // Cost-1 buckets keep only their log; weighted ones also a costs hash.
  const long long keys_per_bucket = cost == 1 ? 1 : 2;
  if (raw.command({"DBSIZE"})->integer != keys_per_bucket * static_cast<long long>(buckets)) {
    throw std::runtime_error("unexpected number of keys per bucket");
  }
  std::string log_key, costs_key;
  airl::detail::redis_bucket_key(log_key, "airl", {airl::Scope::user_model, "default", "user-000000", "llama-3-70b"});
  airl::detail::redis_costs_key(costs_key, log_key);
  const Reply log_encoding = raw.command({"OBJECT", "ENCODING", log_key});
  std::string encodings(log_encoding->str, log_encoding->len);
  if (cost == 1) {
    encodings += " (no costs key)";
  } else {
    const Reply costs_encoding = raw.command({"OBJECT", "ENCODING", costs_key});
    encodings += " + " + std::string(costs_encoding->str, costs_encoding->len);
  }
  return {static_cast<double>(after - before) / static_cast<double>(buckets), encodings};
}

}  // namespace

double measure_memory(RawRedis& raw, int port) {
  std::printf(
      "\nRedis memory: INFO used_memory growth while allow_many() creates the buckets (10 min window: nothing\n"
      "expires). Keys: airl:{u=user-000042}:um:default:llama-3-70b, plus its :c costs hash once an entry costs\n"
      "more than 1; B/extra entry = growth over a 1-entry bucket, per added entry.\n");
  std::printf("%-5s %8s %8s %11s %14s   %s\n", "cost", "buckets", "entries", "B/bucket", "B/extra entry",
              "encodings (log + costs)");
  struct Shape {
    std::size_t buckets, entries;
  };
  double ten_unit_entries = 0;
  for (const std::uint64_t cost : {std::uint64_t{1}, std::uint64_t{1200}}) {
    double one_entry = 0;
    for (const Shape shape : {Shape{10'000, 1}, Shape{10'000, 10}, Shape{100, 1'000}}) {
      const MemoryRow row = fill_buckets(raw, port, shape.buckets, shape.entries, cost);
      if (shape.entries == 1) one_entry = row.bytes_per_bucket;
      if (cost == 1 && shape.entries == 10) ten_unit_entries = row.bytes_per_bucket;
      std::printf("%-5llu %8zu %8zu %11.1f ", static_cast<unsigned long long>(cost), shape.buckets, shape.entries,
                  row.bytes_per_bucket);
      if (shape.entries == 1) {
        std::printf("%14s", "-");
      } else {
        std::printf("%14.1f", (row.bytes_per_bucket - one_entry) / static_cast<double>(shape.entries - 1));
      }
      std::printf("   %s\n", row.encodings.c_str());
    }
  }
  flush_and_settle(raw);
  return ten_unit_entries;
}

}  // namespace airl::bench
