// SPDX-License-Identifier: MIT
#pragma once
// The faults the soak injects into redis-server at seeded random moments, and their record.
//
//   restart  SIGTERM (a clean shutdown) or SIGKILL (a crash), down for 0-1.5 s, started again on the same
//            port with the same data directory: its append-only file (appendfsync always) brings back every
//            write Redis acknowledged, so a restart forgets nothing the gateway was told had happened.
//   stop     SIGSTOP for 0.2-3 s, then SIGCONT: connections stay open and nothing answers, so the gateway's
//            calls time out (command_timeout 100 ms) and its failure policy decides; queued commands run
//            late, when Redis resumes.
// The first restart comes 2-4 s in and a stop 2-3 s after it, inside the warm-up, so the warm-up's resource
// peaks include an outage; then one fault every 5-15 s. A fault is recorded from its first signal until
// Redis answers PING again.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ledger.hpp"
#include "redis_server.hpp"

namespace airl_soak {

struct Fault {
  std::string kind;  // "restart (SIGTERM)", "restart (SIGKILL)", "stop"
  std::int64_t start_us = 0;
  std::int64_t end_us = 0;
  double at_s = 0;        // seconds into the run
  double duration_s = 0;  // until Redis answered again
};

class FaultInjector {
 public:
  FaultInjector(airl::test::RedisServer& redis, std::uint64_t seed) : redis_(redis), random_(seed) {}

  // Injects faults until `until` (none starts in its last 3 s); returns with Redis running. Call on one thread.
  void run(std::chrono::steady_clock::time_point started, std::chrono::steady_clock::time_point until) {
    const auto seconds = [](double s) { return std::chrono::duration<double>(s); };
    auto next = started + std::chrono::duration_cast<std::chrono::steady_clock::duration>(seconds(uniform(2, 4)));
    for (int n = 0;; ++n) {
      if (next + std::chrono::seconds(3) > until) break;
      std::this_thread::sleep_until(next);
      const bool restart = n == 0 || (n > 1 && uniform(0, 1) < 0.5);
      Fault fault;
      fault.at_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      fault.start_us = now_us();
      if (restart) {
        const bool crash = uniform(0, 1) < 0.5;
        fault.kind = crash ? "restart (SIGKILL)" : "restart (SIGTERM)";
        crash ? redis_.kill() : redis_.stop();
        std::this_thread::sleep_for(seconds(uniform(0, 1.5)));
        start_redis();
      } else {
        fault.kind = "stop";
        redis_.pause();
        std::this_thread::sleep_for(seconds(uniform(0.2, 3)));
        redis_.resume();
        wait_for_ping();
      }
      fault.end_us = now_us();
      fault.duration_s = static_cast<double>(fault.end_us - fault.start_us) / 1e6;
      {
        std::lock_guard lock(mutex_);
        faults_.push_back(fault);
      }
      const double gap = n == 0 ? uniform(2, 3) : uniform(5, 15);
      next = std::chrono::steady_clock::now() +
             std::chrono::duration_cast<std::chrono::steady_clock::duration>(seconds(gap));
    }
  }

  std::vector<Fault> faults() const {
    std::lock_guard lock(mutex_);
    return faults_;
  }

  // Prints every fault and their totals. Call after run().
  void print_summary(std::uint64_t seed) const {
    std::lock_guard lock(mutex_);
    int restarts = 0, crashes = 0, stops = 0;
    double down_s = 0;
    std::printf("\n== faults (seed %llu)\n", static_cast<unsigned long long>(seed));
    for (const Fault& fault : faults_) {
      ++(fault.kind == "stop" ? stops : restarts);
      if (fault.kind == "restart (SIGKILL)") ++crashes;
      down_s += fault.duration_s;
      std::printf("  %7.1f s  %-18s %5.2f s\n", fault.at_s, fault.kind.c_str(), fault.duration_s);
    }
    std::printf("  %d restarts (%d by SIGKILL), %d stops, %.1f s without Redis in all\n", restarts, crashes, stops,
                down_s);
  }

  // Whether [from_us, to_us] comes within `margin_us` after a fault (or during one).
  bool near_fault(std::int64_t from_us, std::int64_t to_us, std::int64_t margin_us) const {
    std::lock_guard lock(mutex_);
    return std::any_of(faults_.begin(), faults_.end(), [&](const Fault& fault) {
      return from_us <= fault.end_us + margin_us && to_us >= fault.start_us;
    });
  }

 private:
  double uniform(double low, double high) { return std::uniform_real_distribution<double>(low, high)(random_); }

  // start() waits up to 5 s for PING and throws past it (the server still loading a large append-only file
  // keeps running: then PING is waited for here), or when the server exited at once (then it is tried again).
  void start_redis() {
    for (int attempt = 0; attempt < 3 && !redis_.running(); ++attempt) {
      try {
        redis_.start();
      } catch (const std::exception&) {
      }
    }
    wait_for_ping();
  }

  void wait_for_ping() const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      const airl::test::RawReply reply = redis_.command({"PING"});
      if (reply && reply->type == REDIS_REPLY_STATUS) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  airl::test::RedisServer& redis_;
  std::mt19937_64 random_;
  mutable std::mutex mutex_;
  std::vector<Fault> faults_;
};

}  // namespace airl_soak
