// SPDX-License-Identifier: MIT
// The Redis backend against its floors, measured in one run so the ratios survive a noisy machine (a plain
// program: no Google Benchmark). The baseline is plain hiredis sending the very script call airl sends
// (redis_raw.hpp), so each ratio is airl's client side (pool, key building, SIGPIPE guard, reply parsing):
//
//   sequential  PING (network floor), raw EVALSHA (client floor) and RedisRateLimiter::allow(), one call at a
//               time, interleaved in rounds; p50/p99 per call.            target: allow() / EVALSHA p50 <= 1.15
//   batch       allow_many() of 64 requests (pipelined on one connection) and 64 raw EVALSHA pipelined on one
//               hiredis context (64 redisAppendCommandArgv + 64 redisGetReply), interleaved; p50/p99 per batch.
//                                                                   target: allow_many / pipelined p50 <= 1.15
//   threads     decisions/s of allow() with 1 and 4 threads (each thread its own users, one shared limiter,
//               so its connection pool is shared) and of raw EVALSHA with 1 and 4 threads (one connection
//               each); fixed call counts with a time bound, in rounds; medians.
//
//   server time Redis's own time per decision (INFO commandstats, EVALSHA usec / calls after CONFIG RESETSTAT)
//               for airl's allow() against a minimal sliding-log script on the same number of keys: 1 tier
//               admitted, weighted, 3 tiers in one slot, a denial, a replayed id (redis_server_time.hpp).
//
//   topologies  on a Redis Cluster of 3 masters + 3 replicas started for it (tests/support/redis_topology.hpp):
//               allow() with one tier for one user (one slot) on the cluster against the same on the
//               standalone server (target p50 <= 1.1x), with raw EVALSHA on both (and on a standalone server
//               with a replica) to show the servers' share; three tiers in three slots on three masters against three tiers in one slot
//               (target p50 <= 1.3x); allow_many(64) over the 3 masters against raw pipelined EVALSHA to the
//               same masters (each master's share pipelined, the masters written before any is read);
//               decisions/s with 4 threads on 1 master (the standalone server) and on 3; what
//               wait_for_replicas = 1 (WAIT after each call) costs.
//
// With --memory it also measures Redis memory per bucket and per entry (redis_memory.hpp). At the end, a
// summary table: | what | measured | target | status |.
//
// Usage: airl_redis_latency [--redis host:port] [--calls N] [--repetitions R] [--memory] [--server-time]
// --server-time runs only the server-time cases (R repetitions, default 5, of N calls per kind).
// Without --redis it starts its own redis-server (tests/support/redis_server.hpp: found on PATH, a free 127.0.0.1
// port, a temporary directory, stopped by its PID). --memory needs that private server (it runs FLUSHALL).
// --calls (default 10000) scales every count: N sequential calls of each kind, N/10 batches of each kind,
// N/4 calls per thread phase (21 rounds of 4 phases), N timed calls per kind and repetition of the server-time
// cases.

#include "../tests/support/redis_server.hpp"
#include "../tests/support/redis_topology.hpp"
#include "redis_memory.hpp"
#include "redis_raw.hpp"
#include "redis_server_time.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <latch>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <unistd.h>

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using airl::bench::Pairs;
using airl::bench::RawRedis;
using airl::bench::RawScriptCall;
using airl::bench::Reply;

constexpr airl::Quota bench_quota{1'000'000, std::chrono::minutes(1)};  // high: every call is admitted
constexpr std::size_t batch_size = 64;
constexpr std::size_t max_threads = 4;
constexpr double target_ratio = 1.15;

// ---- statistics ---------------------------------------------------------------------------------------

// CPU time this thread or this process has used (the client's side only: Redis is another process).
std::int64_t cpu_ns(clockid_t which) {
  timespec now{};
  ::clock_gettime(which, &now);
  return std::int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// Wall time of each call, and the calling thread's CPU time over all of them.
struct Samples {
  std::vector<std::int64_t> ns;
  std::int64_t cpu_ns = 0;
};

struct Summary {
  double mean_us, p50_us, p99_us, max_us;
  double cpu_us;  // the client's CPU time per call
};

Summary summarize(const Samples& samples) {
  std::vector<std::int64_t> ns = samples.ns;
  std::sort(ns.begin(), ns.end());
  const auto at = [&](double q) {
    return static_cast<double>(ns[static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1) + 0.5)]) / 1e3;
  };
  const double sum = static_cast<double>(std::accumulate(ns.begin(), ns.end(), std::int64_t{0}));
  const double count = static_cast<double>(ns.size());
  return {sum / count / 1e3, at(0.50), at(0.99), static_cast<double>(ns.back()) / 1e3,
          static_cast<double>(samples.cpu_ns) / count / 1e3};
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

template <class Call>
void time_calls(Samples& samples, std::size_t count, Call&& call) {
  const std::int64_t cpu_started = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
  for (std::size_t i = 0; i < count; ++i) {
    const Clock::time_point started = Clock::now();
    call();
    samples.ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count());
  }
  samples.cpu_ns += cpu_ns(CLOCK_THREAD_CPUTIME_ID) - cpu_started;
}

void print_header(const char* unit) {
  const auto head = [&](const char* what) { return std::string(what) + " " + unit; };
  std::printf("%-50s %9s %9s %9s %9s %11s\n", "", head("mean").c_str(), head("p50").c_str(), head("p99").c_str(),
              head("max").c_str(), head("client CPU").c_str());
}

void print_row(const char* what, const Summary& s) {
  std::printf("%-50s %9.1f %9.1f %9.1f %9.1f %11.1f\n", what, s.mean_us, s.p50_us, s.p99_us, s.max_us, s.cpu_us);
}

// ---- what every measurement shares --------------------------------------------------------------------

// The server, the script's SHA and the key prefixes; counts calls Redis did not admit (which void the run).
struct Bench {
  airl::RedisOptions options;  // the server, with the limiter's key prefix
  std::string raw_prefix;      // the raw baseline's keys: same layout, another prefix
  std::string sha;
  std::size_t calls;
  std::atomic<std::size_t> not_admitted{0};
  std::vector<std::string> users_to_reset;  // the limiter's users, cleared at the end

  // A generated-member seed for raw calls, distinct per (phase, round, thread) so members never repeat.
  static std::uint64_t seed(std::uint64_t phase, std::uint64_t round, std::uint64_t thread) {
    return 0x9E3779B97F4A7C15ull * (1 + (phase << 16) + (round << 8) + thread);
  }
  airl::RedisRateLimiter make_limiter() const { return airl::RedisRateLimiter(bench_quota, airl::RedisStorage(options)); }
  void remember(const Pairs& pairs) { users_to_reset.insert(users_to_reset.end(), pairs.users.begin(), pairs.users.end()); }
  void check(const airl::Decision& decision) {
    if (!decision || decision.degraded) not_admitted.fetch_add(1, std::memory_order_relaxed);
  }
  void check(const redisReply& reply) {
    if (!RawScriptCall::admitted(reply)) not_admitted.fetch_add(1, std::memory_order_relaxed);
  }
};

// ---- 1. sequential ------------------------------------------------------------------------------------

struct SequentialResult {
  Summary ping, evalsha, allow;
};

SequentialResult measure_sequential(Bench& bench, RawRedis& raw) {
  const Pairs pairs("seq");
  bench.remember(pairs);
  airl::RedisRateLimiter limiter = bench.make_limiter();
  RawScriptCall script(bench.sha, bench.raw_prefix, pairs, bench_quota, Bench::seed(1, 0, 0));
  std::array<const char*, RawScriptCall::argc> argv{};
  std::array<std::size_t, RawScriptCall::argc> lengths{};
  std::string member;
  std::size_t raw_index = 0, allow_index = 0;

  const auto ping = [&] { raw.command({"PING"}); };
  const auto evalsha = [&] {
    script.fill(raw_index++, member, argv.data(), lengths.data());
    raw.append(RawScriptCall::argc, argv.data(), lengths.data());
    bench.check(*raw.get_reply());
  };
  const auto allow = [&] {
    const std::size_t i = allow_index++;
    bench.check(limiter.allow(pairs.user(i), pairs.model(i)));
  };

  Samples ping_ns, evalsha_ns, allow_ns, ignored;
  time_calls(ignored, 500, ping);  // warm up: connections made, script loaded, caches and branch predictors warm
  time_calls(ignored, 500, evalsha);
  time_calls(ignored, 500, allow);
  constexpr std::size_t rounds = 50;
  for (std::size_t round = 0; round < rounds; ++round) {
    const std::size_t count = bench.calls / rounds + (round < bench.calls % rounds ? 1 : 0);
    time_calls(ping_ns, count, ping);
    time_calls(evalsha_ns, count, evalsha);
    time_calls(allow_ns, count, allow);
  }
  script.unlink(raw);

  const SequentialResult result{summarize(ping_ns), summarize(evalsha_ns), summarize(allow_ns)};
  std::printf("\n1. Sequential: %zu calls of each kind on one connection each, interleaved in %zu rounds\n",
              bench.calls, rounds);
  print_header("us");
  print_row("PING, raw hiredis (network floor)", result.ping);
  print_row("EVALSHA airl script, raw hiredis (client floor)", result.evalsha);
  print_row("RedisRateLimiter::allow()", result.allow);
  return result;
}

// ---- 2. batch -----------------------------------------------------------------------------------------

struct BatchResult {
  Summary raw, airl;
  std::size_t batches;
};

BatchResult measure_batch(Bench& bench, RawRedis& raw) {
  const Pairs pairs("batch");
  bench.remember(pairs);
  airl::RedisRateLimiter limiter = bench.make_limiter();
  RawScriptCall script(bench.sha, bench.raw_prefix, pairs, bench_quota, Bench::seed(2, 0, 0));
  std::array<std::array<const char*, RawScriptCall::argc>, batch_size> argv{};
  std::array<std::array<std::size_t, RawScriptCall::argc>, batch_size> lengths{};
  std::array<std::string, batch_size> members;
  std::vector<airl::Request> requests(batch_size);
  for (std::size_t i = 0; i < batch_size; ++i) requests[i] = {.user = pairs.user(i), .model = pairs.model(i)};

  const auto pipelined = [&] {
    for (std::size_t i = 0; i < batch_size; ++i) {
      script.fill(i, members[i], argv[i].data(), lengths[i].data());
      raw.append(RawScriptCall::argc, argv[i].data(), lengths[i].data());
    }
    for (std::size_t i = 0; i < batch_size; ++i) bench.check(*raw.get_reply());
  };
  const auto allow_many = [&] {
    for (const airl::Decision& decision : limiter.allow_many(requests)) bench.check(decision);
  };

  const std::size_t batches = std::max<std::size_t>(bench.calls / 10, 20);
  Samples raw_ns, airl_ns, ignored;
  time_calls(ignored, 20, pipelined);
  time_calls(ignored, 20, allow_many);
  constexpr std::size_t rounds = 50;
  for (std::size_t round = 0; round < rounds; ++round) {
    const std::size_t count = batches / rounds + (round < batches % rounds ? 1 : 0);
    time_calls(raw_ns, count, pipelined);
    time_calls(airl_ns, count, allow_many);
  }
  script.unlink(raw);

  const BatchResult result{summarize(raw_ns), summarize(airl_ns), batches};
  std::printf("\n2. Batch: %zu batches of %zu requests of each kind, pipelined on one connection, interleaved in "
              "%zu rounds\n",
              batches, batch_size, rounds);
  print_header("us");
  print_row("64 x EVALSHA pipelined, raw hiredis (per batch)", result.raw);
  print_row("RedisRateLimiter::allow_many(64) (per batch)", result.airl);
  return result;
}

// ---- 3. threads ---------------------------------------------------------------------------------------

struct Throughput {
  double per_second;
  double cpu_us;  // the client process's CPU time per decision, all threads together
  bool bounded;   // the time bound stopped it before all its calls were made
};

// Runs `threads` threads, each calling the callable `make(t)` made (before the clock starts) up to
// `calls_per_thread` times or until `bound` has passed; returns the aggregate decisions per second.
template <class MakeWorker>
Throughput run_threads(std::size_t threads, std::size_t calls_per_thread, Clock::duration bound, MakeWorker&& make) {
  std::latch ready(static_cast<std::ptrdiff_t>(threads));
  std::latch go(1);
  std::vector<std::size_t> done(threads, 0);
  std::atomic<Clock::rep> deadline{0};
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      auto worker = make(t);
      ready.count_down();
      go.wait();
      const Clock::time_point stop{Clock::duration(deadline.load())};
      std::size_t i = 0;
      for (; i < calls_per_thread; ++i) {
        if (i % 32 == 0 && Clock::now() > stop) break;
        worker();
      }
      done[t] = i;
    });
  }
  ready.wait();  // every thread has its connection and waits
  const std::int64_t cpu_started = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
  const Clock::time_point started = Clock::now();
  deadline.store((started + bound).time_since_epoch().count());  // read by the threads once they pass `go`
  go.count_down();
  for (std::thread& thread : pool) thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  const double cpu_us = static_cast<double>(cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu_started) / 1e3;
  const std::size_t total = std::accumulate(done.begin(), done.end(), std::size_t{0});
  return {static_cast<double>(total) / seconds, cpu_us / static_cast<double>(total), total < threads * calls_per_thread};
}

// Medians over the rounds.
struct ThreadsKind {
  double one, four;              // decisions/s with 1 and with 4 threads
  double cpu_one_us, cpu_four_us;  // client CPU per decision
};

ThreadsKind medians(const std::vector<Throughput>& one, const std::vector<Throughput>& four) {
  const auto of = [](const std::vector<Throughput>& runs, double Throughput::*field) {
    std::vector<double> values;
    for (const Throughput& run : runs) values.push_back(run.*field);
    return median(values);
  };
  return {of(one, &Throughput::per_second), of(four, &Throughput::per_second), of(one, &Throughput::cpu_us),
          of(four, &Throughput::cpu_us)};
}

struct ThreadsResult {
  ThreadsKind raw, airl;
  double airl_over_raw1, airl_over_raw4;  // medians over the rounds of airl / raw with 1 and 4 threads
};

ThreadsResult measure_threads(Bench& bench) {
  std::array<Pairs, max_threads> pairs1{Pairs("t1-0"), Pairs("t1-1"), Pairs("t1-2"), Pairs("t1-3")};
  std::array<Pairs, max_threads> pairs4{Pairs("t4-0"), Pairs("t4-1"), Pairs("t4-2"), Pairs("t4-3")};
  for (const auto* set : {&pairs1, &pairs4}) {
    for (const Pairs& p : *set) bench.remember(p);
  }
  airl::RedisRateLimiter limiter = bench.make_limiter();  // one limiter, its pool shared by the threads
  // Short phases and many rounds: a shared machine's noise comes and goes over seconds, so the four kinds
  // are interleaved finely and the medians taken.
  const std::size_t calls_per_phase = std::max<std::size_t>(bench.calls / 4, 400);
  constexpr auto bound = 2s;
  constexpr std::size_t rounds = 21;

  // A phase: `threads` threads over the pair sets, `calls` calls in all.
  const auto raw_phase = [&](std::size_t threads, const std::array<Pairs, max_threads>& sets, std::size_t round,
                             std::size_t calls) {
    std::vector<std::unique_ptr<RawScriptCall>> scripts;
    for (std::size_t t = 0; t < threads; ++t) {
      scripts.push_back(std::make_unique<RawScriptCall>(bench.sha, bench.raw_prefix, sets[t], bench_quota,
                                                        Bench::seed(3 + threads, round, t)));
    }
    return run_threads(threads, calls / threads, bound, [&](std::size_t t) {
      // Its own connection, made before the clock starts.
      return [&, script = scripts[t].get(), raw = std::make_unique<RawRedis>(bench.options.host, bench.options.port),
              argv = std::array<const char*, RawScriptCall::argc>{},
              lengths = std::array<std::size_t, RawScriptCall::argc>{}, member = std::string(),
              i = std::size_t{0}]() mutable {
        script->fill(i++, member, argv.data(), lengths.data());
        raw->append(RawScriptCall::argc, argv.data(), lengths.data());
        bench.check(*raw->get_reply());
      };
    });
  };
  const auto airl_phase = [&](std::size_t threads, const std::array<Pairs, max_threads>& sets, std::size_t calls) {
    return run_threads(threads, calls / threads, bound, [&](std::size_t t) {
      return [&, pairs = &sets[t], i = std::size_t{0}]() mutable {
        bench.check(limiter.allow(pairs->user(i), pairs->model(i)));
        ++i;
      };
    });
  };

  // Warm up: the limiter's pool gets its 4 connections, the server its keys.
  raw_phase(max_threads, pairs4, rounds, 800);
  airl_phase(max_threads, pairs4, 800);

  std::vector<Throughput> raw1, raw4, airl1, airl4;
  std::vector<double> ratio1, ratio4;
  for (std::size_t round = 0; round < rounds; ++round) {
    raw1.push_back(raw_phase(1, pairs1, round, calls_per_phase));
    airl1.push_back(airl_phase(1, pairs1, calls_per_phase));
    raw4.push_back(raw_phase(max_threads, pairs4, round, calls_per_phase));
    airl4.push_back(airl_phase(max_threads, pairs4, calls_per_phase));
    ratio1.push_back(airl1.back().per_second / raw1.back().per_second);
    ratio4.push_back(airl4.back().per_second / raw4.back().per_second);
  }
  bool bounded = false;
  for (const auto* runs : {&raw1, &raw4, &airl1, &airl4}) {
    for (const Throughput& run : *runs) bounded = bounded || run.bounded;
  }
  RawRedis cleanup(bench.options.host, bench.options.port);
  for (const auto* set : {&pairs1, &pairs4}) {
    for (const Pairs& p : *set) RawScriptCall(bench.sha, bench.raw_prefix, p, bench_quota, 0).unlink(cleanup);
  }

  const ThreadsResult result{medians(raw1, raw4), medians(airl1, airl4), median(ratio1), median(ratio4)};
  std::printf("\n3. Threads: %zu calls per phase (split between the threads, each its own users), at most %lld s "
              "each;\n   %zu rounds of raw 1, airl 1, raw 4, airl 4 threads; medians%s\n",
              calls_per_phase, static_cast<long long>(std::chrono::seconds(bound).count()), rounds,
              bounded ? " (the time bound cut some phases short)" : "");
  std::printf("%-50s %12s %12s %9s %15s\n", "", "1 thread/s", "4 threads/s", "scaling", "client CPU us");
  const auto row = [](const char* what, const ThreadsKind& kind) {
    std::printf("%-50s %12.0f %12.0f %8.2fx %7.1f / %5.1f\n", what, kind.one, kind.four, kind.four / kind.one,
                kind.cpu_one_us, kind.cpu_four_us);
  };
  row("EVALSHA, raw hiredis, one connection per thread", result.raw);
  row("RedisRateLimiter::allow(), one shared limiter", result.airl);
  return result;
}

// ---- 4. topologies ------------------------------------------------------------------------------------

struct TopologyResult {
  Summary standalone, cluster;         // allow(), one tier, one call at a time
  Summary raw_cluster, cluster_again;  // raw EVALSHA to the slot's master, and allow() interleaved with it
  Summary raw_standalone, raw_replicated;  // raw EVALSHA: the standalone server; one with a replica
  Summary one_slot, cross_slot;        // three tiers on the cluster: in one slot, in three slots
  Summary waiting;                     // allow(), one tier, cluster, wait_for_replicas = 1
  Summary raw_batch, airl_batch;       // 64 requests over the 3 masters, per batch
  double one_master = 0, three_masters = 0;  // decisions/s with 4 threads
};

TopologyResult measure_topologies(Bench& bench, const std::vector<std::string>& seeds) {
  TopologyResult result;
  airl::RedisOptions cluster = bench.options;
  cluster.host = "127.0.0.1";
  cluster.cluster_nodes = seeds;
  cluster.key_prefix = bench.options.key_prefix + "-cluster";
  const airl::Tier user{"user", airl::Scope::user_model, bench_quota};
  airl::RedisMultiTierRateLimiter on_one({user}, airl::RedisStorage(bench.options));
  airl::RedisMultiTierRateLimiter on_cluster({user}, airl::RedisStorage(cluster));
  airl::RedisOptions waiting = cluster;
  waiting.wait_for_replicas = 1;
  waiting.replica_ack_timeout = std::chrono::milliseconds(100);
  airl::RedisMultiTierRateLimiter on_cluster_waiting({user}, airl::RedisStorage(waiting));
  airl::RedisMultiTierRateLimiter one_slot({{"a", airl::Scope::user, bench_quota}, user, {"b", airl::Scope::user, bench_quota}},
                                           airl::RedisStorage(cluster));
  airl::RedisMultiTierRateLimiter cross_slot({{"a", airl::Scope::user, bench_quota}, {"m", airl::Scope::model, bench_quota},
                                              {"g", airl::Scope::global, bench_quota}},
                                             airl::RedisStorage(cluster));
  std::vector<Pairs> sets;
  for (int t = 0; t < 8; ++t) sets.emplace_back("topo" + std::to_string(t));
  for (const Pairs& set : sets) bench.remember(set);
  const auto pair_of = [&](std::size_t i) { return airl::Request{sets[i % 8].user(i / 8), sets[i % 8].model(i / 8)}; };

  // 1. one call at a time, interleaved
  std::size_t i1 = 0, i2 = 0, i3 = 0, i4 = 0, i5 = 0;
  // One call at a time for one user (its two models): one slot, so one master of the cluster serves the
  // user's buckets (the three-slot limiter adds the model's and the global slot).
  const auto call = [&](airl::RedisMultiTierRateLimiter& limiter, std::size_t& i) {
    return [&] { bench.check(limiter.allow(pair_of(32 * i++))); };
  };
  auto standalone_call = call(on_one, i1);
  auto cluster_call = call(on_cluster, i2);
  auto one_slot_call = call(one_slot, i3);
  auto cross_slot_call = call(cross_slot, i4);
  auto waiting_call = call(on_cluster_waiting, i5);
  Samples standalone_ns, cluster_ns, one_slot_ns, cross_slot_ns, waiting_ns, ignored;
  for (auto* warm : {&standalone_call, &cluster_call, &one_slot_call, &cross_slot_call, &waiting_call}) {
    time_calls(ignored, 300, *warm);
  }
  constexpr std::size_t rounds = 50;
  const std::size_t calls = std::max<std::size_t>(bench.calls / 2, 500);
  for (std::size_t round = 0; round < rounds; ++round) {
    const std::size_t count = calls / rounds;
    time_calls(standalone_ns, count, standalone_call);
    time_calls(cluster_ns, count, cluster_call);
    time_calls(one_slot_ns, count, one_slot_call);
    time_calls(cross_slot_ns, count, cross_slot_call);
    time_calls(waiting_ns, count, waiting_call);
  }
  result.waiting = summarize(waiting_ns);
  result.standalone = summarize(standalone_ns);
  result.cluster = summarize(cluster_ns);
  result.one_slot = summarize(one_slot_ns);
  result.cross_slot = summarize(cross_slot_ns);

  // 2. batches over the three masters: raw EVALSHA per master, pipelined, all masters written first
  RawRedis seed_connection("127.0.0.1", std::stoi(seeds.front().substr(seeds.front().rfind(':') + 1)));
  const Reply slots = seed_connection.command({"CLUSTER", "SLOTS"});
  std::map<int, std::unique_ptr<RawRedis>> masters;  // by port
  std::vector<int> master_of_slot(airl::detail::cluster_slots, 0);
  for (std::size_t r = 0; r < slots->elements; ++r) {
    const redisReply& range = *slots->element[r];
    const int port = static_cast<int>(range.element[2]->element[1]->integer);
    if (!masters.count(port)) {
      masters[port] = std::make_unique<RawRedis>("127.0.0.1", port);
      masters[port]->command({"SCRIPT", "LOAD", airl::detail::sliding_window_script});
    }
    for (long long slot = range.element[0]->integer; slot <= range.element[1]->integer; ++slot) {
      master_of_slot[static_cast<std::size_t>(slot)] = port;
    }
  }
  std::vector<std::unique_ptr<RawScriptCall>> scripts;
  for (std::size_t t = 0; t < 8; ++t) {
    scripts.push_back(std::make_unique<RawScriptCall>(bench.sha, cluster.key_prefix + "-raw", sets[t], bench_quota, Bench::seed(9, 0, t)));
  }
  std::array<std::array<const char*, RawScriptCall::argc>, batch_size> argv{};
  std::array<std::array<std::size_t, RawScriptCall::argc>, batch_size> lengths{};
  std::array<std::string, batch_size> members;
  std::vector<airl::Request> requests;
  for (std::size_t i = 0; i < batch_size; ++i) requests.push_back(pair_of(i));
  std::size_t raw_calls = 0;
  const auto raw_batch = [&] {
    std::map<int, std::size_t> sent;
    for (std::size_t i = 0; i < batch_size; ++i) {
      scripts[i % 8]->fill(raw_calls / 8 + i / 8, members[i], argv[i].data(), lengths[i].data());
      const int port = master_of_slot[airl::detail::cluster_slot(std::string_view(argv[i][3], lengths[i][3]))];
      masters[port]->append(RawScriptCall::argc, argv[i].data(), lengths[i].data());
      ++sent[port];
    }
    raw_calls += batch_size;
    for (auto& [port, count] : sent) masters[port]->flush();
    for (auto& [port, count] : sent) {
      for (std::size_t k = 0; k < count; ++k) bench.check(*masters[port]->get_reply());
    }
  };
  const auto airl_batch = [&] {
    for (const airl::Decision& decision : on_cluster.allow_many(requests)) bench.check(decision);
  };
  std::set<int> spanned;
  for (std::size_t i = 0; i < batch_size; ++i) {
    std::string key;
    airl::detail::redis_bucket_key(key, cluster.key_prefix, {airl::Scope::user_model, "user", requests[i].user, requests[i].model});
    spanned.insert(master_of_slot[airl::detail::cluster_slot(key)]);
  }
  // The server floor of one call on the cluster: raw EVALSHA to the slot's master, interleaved with allow().
  std::size_t raw_single = 0, cluster_again = 0;
  const auto raw_one = [&] {
    scripts[0]->fill(4 * raw_single, members[0], argv[0].data(), lengths[0].data());  // one user, as allow() above
    ++raw_single;
    RawRedis& master = *masters[master_of_slot[airl::detail::cluster_slot(std::string_view(argv[0][3], lengths[0][3]))]];
    master.append(RawScriptCall::argc, argv[0].data(), lengths[0].data());
    bench.check(*master.get_reply());
  };
  auto cluster_again_call = call(on_cluster, cluster_again);
  // Where the server time goes: raw EVALSHA on the standalone server, and on a standalone server with one
  // replica (every write also goes down a replication link, and the replica wakes to apply it).
  airl::test::RedisServer replicated;
  airl::test::RedisServer replica({"--replicaof", "127.0.0.1", std::to_string(replicated.port())});
  RawRedis replicated_raw("127.0.0.1", replicated.port());
  replicated_raw.command({"SCRIPT", "LOAD", airl::detail::sliding_window_script});
  RawRedis standalone_raw(bench.options.host, bench.options.port);
  std::size_t raw_standalone_calls = 0, raw_replicated_calls = 0;
  const auto raw_on = [&](RawRedis& server, std::size_t& count) {
    return [&] {
      scripts[0]->fill(4 * count, members[1], argv[1].data(), lengths[1].data());
      ++count;
      server.append(RawScriptCall::argc, argv[1].data(), lengths[1].data());
      bench.check(*server.get_reply());
    };
  };
  auto raw_standalone = raw_on(standalone_raw, raw_standalone_calls);
  auto raw_replicated = raw_on(replicated_raw, raw_replicated_calls);
  Samples raw_one_ns, cluster_again_ns, raw_standalone_ns, raw_replicated_ns;
  time_calls(ignored, 300, raw_one);
  time_calls(ignored, 300, raw_standalone);
  time_calls(ignored, 300, raw_replicated);
  for (std::size_t round = 0; round < rounds; ++round) {
    time_calls(raw_one_ns, calls / rounds, raw_one);
    time_calls(cluster_again_ns, calls / rounds, cluster_again_call);
    time_calls(raw_standalone_ns, calls / rounds, raw_standalone);
    time_calls(raw_replicated_ns, calls / rounds, raw_replicated);
  }
  result.raw_cluster = summarize(raw_one_ns);
  result.cluster_again = summarize(cluster_again_ns);
  result.raw_standalone = summarize(raw_standalone_ns);
  result.raw_replicated = summarize(raw_replicated_ns);

  Samples raw_ns, airl_ns;
  time_calls(ignored, 20, raw_batch);
  time_calls(ignored, 20, airl_batch);
  const std::size_t batches = std::max<std::size_t>(bench.calls / 20, 50);
  for (std::size_t round = 0; round < rounds; ++round) {
    time_calls(raw_ns, batches / rounds, raw_batch);
    time_calls(airl_ns, batches / rounds, airl_batch);
  }
  result.raw_batch = summarize(raw_ns);
  result.airl_batch = summarize(airl_ns);

  // 3. 4 threads, each its own users: one master (the standalone server) against three
  std::vector<double> one, three;
  const std::size_t per_phase = std::max<std::size_t>(bench.calls / 4, 400);
  for (std::size_t round = 0; round < 11; ++round) {
    for (auto* limiter : {&on_one, &on_cluster}) {
      const Throughput run = run_threads(max_threads, per_phase / max_threads, 2s, [&](std::size_t t) {
        return [&, limiter, t, i = std::size_t{0}]() mutable {
          bench.check(limiter->allow(pair_of(t + max_threads * i++)));
        };
      });
      (limiter == &on_one ? one : three).push_back(run.per_second);
    }
  }
  result.one_master = median(one);
  result.three_masters = median(three);

  for (const std::string& name : bench.users_to_reset) {
    on_cluster.reset(name);
    cross_slot.reset(name);
  }
  std::printf("\n5. Topologies: a Redis Cluster of %zu masters + replicas started for this run; %zu calls of each "
              "kind, interleaved in %zu rounds; batches of %zu requests spanning %zu masters\n",
              masters.size(), calls, rounds, batch_size, spanned.size());
  print_header("us");
  print_row("allow(), 1 tier, standalone server", result.standalone);
  print_row("allow(), 1 tier, cluster", result.cluster);
  print_row("allow(), 1 tier, cluster, wait_for_replicas 1", result.waiting);
  print_row("EVALSHA, raw hiredis, standalone server", result.raw_standalone);
  print_row("EVALSHA, raw hiredis, standalone server + 1 replica", result.raw_replicated);
  print_row("EVALSHA to the slot's master, raw hiredis (cluster)", result.raw_cluster);
  print_row("allow(), 1 tier, cluster (interleaved with raw)", result.cluster_again);
  print_row("allow(), 3 tiers in one slot, cluster", result.one_slot);
  print_row("allow(), 3 tiers in 3 slots on 3 masters, cluster", result.cross_slot);
  print_row("64 x EVALSHA pipelined per master, raw (per batch)", result.raw_batch);
  print_row("allow_many(64) over the masters (per batch)", result.airl_batch);
  std::printf("%-50s %12.0f decisions/s\n", "4 threads, 1 master (standalone)", result.one_master);
  std::printf("%-50s %12.0f decisions/s\n", "4 threads, 3 masters (cluster)", result.three_masters);
  return result;
}

// ---- summary ------------------------------------------------------------------------------------------

void print_summary_header() {
  std::printf("\nSummary (ratios of figures measured in this run)\n");
  std::printf("| %-68s | %9s | %-8s | %-7s |\n", "what", "measured", "target", "status");
  std::printf("|%s|%s|%s|%s|\n", std::string(70, '-').c_str(), std::string(11, '-').c_str(),
              std::string(10, '-').c_str(), std::string(9, '-').c_str());
}

// One row of the summary; `status` overrides the met / not met / info column when given.
void summary_row(const char* what, double measured, const char* unit, const char* target, std::optional<bool> met,
                 const char* status = nullptr) {
  char value[32];
  std::snprintf(value, sizeof(value), "%.2f%s", measured, unit);
  std::printf("| %-68s | %9s | %-8s | %-7s |\n", what, value, target,
              status ? status : !met ? "info" : *met ? "MET" : "NOT MET");
}

// The server-time rows: airl / minimal with both absolute times in the label. Returns whether all are valid.
bool print_server_time_rows(const std::vector<airl::bench::ServerTimeRow>& rows) {
  bool valid = true;
  for (const airl::bench::ServerTimeRow& r : rows) {
    char what[128];
    std::snprintf(what, sizeof(what), "server us airl/min: %s (%.1f/%.1f)", r.name.c_str(), r.airl_us, r.minimal_us);
    summary_row(what, r.ratio, "x", r.target_text, r.ratio <= r.target, r.void_reason.empty() ? nullptr : "VOID");
    valid = valid && r.void_reason.empty();
  }
  return valid;
}

void print_summary(const SequentialResult& seq, const BatchResult& batch, const ThreadsResult& threads,
                   const std::optional<TopologyResult>& topologies, std::optional<double> memory) {
  print_summary_header();
  const auto row = [](const char* what, double measured, const char* unit, const char* target,
                      std::optional<bool> met) { summary_row(what, measured, unit, target, met); };
  const double sequential = seq.allow.p50_us / seq.evalsha.p50_us;
  const double batched = batch.airl.p50_us / batch.raw.p50_us;
  row("allow() / raw EVALSHA, p50 per call", sequential, "x", "<= 1.15", sequential <= target_ratio);
  row("allow_many(64) / raw pipelined 64 x EVALSHA, p50", batched, "x", "<= 1.15", batched <= target_ratio);
  row("allow() / raw EVALSHA, p99 per call", seq.allow.p99_us / seq.evalsha.p99_us, "x", "-", std::nullopt);
  row("allow_many(64) / raw pipelined, p99 per batch", batch.airl.p99_us / batch.raw.p99_us, "x", "-", std::nullopt);
  row("allow() p50 / PING p50", seq.allow.p50_us / seq.ping.p50_us, "x", "-", std::nullopt);
  row("allow_many(64) per request / allow() p50", batch.airl.p50_us / batch_size / seq.allow.p50_us, "x", "-",
      std::nullopt);
  row("allow() / raw EVALSHA, 1 thread, decisions/s", threads.airl_over_raw1, "x", "-", std::nullopt);
  row("allow() / raw EVALSHA, 4 threads, decisions/s", threads.airl_over_raw4, "x", "-", std::nullopt);
  row("allow() scaling, 4 threads / 1 thread", threads.airl.four / threads.airl.one, "x", "-", std::nullopt);
  row("raw EVALSHA scaling, 4 threads / 1 thread", threads.raw.four / threads.raw.one, "x", "-", std::nullopt);
  if (topologies) {
    const TopologyResult& t = *topologies;
    const double cluster = t.cluster.p50_us / t.standalone.p50_us;
    const double cross = t.cross_slot.p50_us / t.one_slot.p50_us;
    row("cluster allow() / standalone allow(), 1 tier, p50", cluster, "x", "<= 1.1", cluster <= 1.1);
    row("cluster allow() / raw EVALSHA to the slot's master, p50", t.cluster_again.p50_us / t.raw_cluster.p50_us, "x",
        "-", std::nullopt);
    row("raw EVALSHA: cluster master / standalone server, p50", t.raw_cluster.p50_us / t.raw_standalone.p50_us, "x",
        "-", std::nullopt);
    row("raw EVALSHA: standalone + replica / standalone, p50", t.raw_replicated.p50_us / t.raw_standalone.p50_us, "x",
        "-", std::nullopt);
    row("3 tiers in 3 slots / 3 tiers in 1 slot, cluster, p50", cross, "x", "<= 1.3", cross <= 1.3);
    row("wait_for_replicas 1 / none, cluster allow(), p50", t.waiting.p50_us / t.cluster.p50_us, "x", "-", std::nullopt);
    row("cluster allow_many(64) / raw per-master pipelines, p50", t.airl_batch.p50_us / t.raw_batch.p50_us, "x", "-",
        std::nullopt);
    row("4 threads: 3 masters / 1 master, decisions/s", t.three_masters / t.one_master, "x", "-", std::nullopt);
  }
  if (memory) row("Redis bytes per bucket of 10 unit-cost entries", *memory, " B", "<= 600", *memory <= 600);
}

// ---- main ---------------------------------------------------------------------------------------------

struct Args {
  std::optional<airl::RedisOptions> redis;
  std::size_t calls = 10'000;
  std::size_t repetitions = 5;  // of the server-time cases
  bool memory = false;
  bool server_time_only = false;
};

std::optional<Args> parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--memory" || arg == "--server-time") {
      (arg == "--memory" ? args.memory : args.server_time_only) = true;
      continue;
    }
    if (i + 1 == argc) return std::nullopt;
    const std::string_view value = argv[++i];
    if (arg == "--calls") {
      const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), args.calls);
      if (error != std::errc{} || end != value.data() + value.size() || args.calls < 100) return std::nullopt;
    } else if (arg == "--repetitions") {
      const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), args.repetitions);
      if (error != std::errc{} || end != value.data() + value.size() || args.repetitions < 1) return std::nullopt;
    } else if (arg == "--redis") {
      if (value.find(':') == std::string_view::npos) return std::nullopt;
      try {
        args.redis = airl::redis_options_from_address(value);
      } catch (const std::invalid_argument&) {
        return std::nullopt;
      }
    } else {
      return std::nullopt;
    }
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Args> args = parse_args(argc, argv);
  if (!args || (args->memory && args->redis) || (args->memory && args->server_time_only)) {
    std::fprintf(stderr,
                 "usage: %s [--redis host:port] [--calls N] [--repetitions R] [--memory] [--server-time]\n"
                 "  without --redis: starts its own redis-server on a free 127.0.0.1 port\n"
                 "  --calls N (>= 100, default 10000): N sequential calls, N/10 batches, N/4 calls per thread phase,\n"
                 "    N calls per kind and repetition of the server-time cases\n"
                 "  --repetitions R (>= 1, default 5): repetitions of the server-time cases (medians)\n"
                 "  --memory: also measures memory per bucket and entry (own server only: it runs FLUSHALL)\n"
                 "  --server-time: only Redis server time per decision against the minimal script (runs CONFIG\n"
                 "    RESETSTAT)\n",
                 argv[0]);
    return 2;
  }
  try {
    std::unique_ptr<airl::test::RedisServer> own;
    Bench bench;
    if (args->redis) {
      bench.options = *args->redis;
    } else {
      own = std::make_unique<airl::test::RedisServer>();
      bench.options.port = own->port();
    }
    bench.calls = args->calls;
    bench.options.key_prefix = "airl-bench-" + std::to_string(::getpid());
    bench.raw_prefix = bench.options.key_prefix + "-raw";
    RawRedis raw(bench.options.host, bench.options.port);
    const Reply sha = raw.command({"SCRIPT", "LOAD", airl::detail::sliding_window_script});
    bench.sha.assign(sha->str, sha->len);
    std::printf("airl %s, Redis %s at %s:%d (%s), hiredis %d.%d.%d, %u hardware threads\n", AIRL_VERSION_STRING,
                raw.info("server", "redis_version").c_str(), bench.options.host.c_str(), bench.options.port,
                own ? "started by this benchmark" : "given with --redis", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH,
                std::thread::hardware_concurrency());
    if (args->server_time_only) {
      const auto rows = airl::bench::measure_server_time(bench.options, bench.calls, args->repetitions);
      print_summary_header();
      if (print_server_time_rows(rows)) return 0;
      std::fprintf(stderr, "error: a server-time case did not do what it says: its row is void\n");
      return 1;
    }
    std::printf("One tier (user_model), quota %llu per minute: every call is admitted. Keys of 8 (user, model) "
                "pairs per thread.\n",
                static_cast<unsigned long long>(bench_quota.limit));

    const SequentialResult sequential = measure_sequential(bench, raw);
    const BatchResult batch = measure_batch(bench, raw);
    const ThreadsResult threads = measure_threads(bench);
    const auto server_time = airl::bench::measure_server_time(bench.options, bench.calls, args->repetitions);
    std::optional<TopologyResult> topologies;
    std::unique_ptr<airl::test::RedisCluster> cluster;
    if (!args->redis) {
      cluster = std::make_unique<airl::test::RedisCluster>();
      topologies = measure_topologies(bench, cluster->seeds());
    }
    {
      airl::RedisRateLimiter limiter = bench.make_limiter();
      for (const std::string& user : bench.users_to_reset) limiter.reset(user);
    }
    if (bench.not_admitted != 0) {
      std::fprintf(stderr, "error: %zu calls were not admitted by Redis (or were degraded): the numbers are void\n",
                   bench.not_admitted.load());
      return 1;
    }
    std::optional<double> memory;
    if (args->memory) memory = airl::bench::measure_memory(raw, bench.options.port);
    print_summary(sequential, batch, threads, topologies, memory);
    if (print_server_time_rows(server_time)) return 0;
    std::fprintf(stderr, "error: a server-time case did not do what it says: its row is void\n");
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
}
