// SPDX-License-Identifier: MIT
#pragma once
// The demo's report: tables per user, per tier, per GPU worker and per limiter (its metrics()), and the
// latency percentiles. Printing only: every number comes from the stats the run collected.

#include <airl/airl.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gpu_workers.hpp"
#include "plans.hpp"
#include "traffic.hpp"

namespace demo {

using ull = unsigned long long;  // printf's type for the 64-bit counters

// The `fraction` percentile (nearest rank) of samples in nanoseconds, in microseconds; 0 when there are none.
inline double percentile_us(std::vector<std::int64_t> samples_ns, double fraction) {
  if (samples_ns.empty()) return 0.0;
  const auto rank = static_cast<std::size_t>(fraction * static_cast<double>(samples_ns.size() - 1) + 0.5);
  std::nth_element(samples_ns.begin(), samples_ns.begin() + static_cast<std::ptrdiff_t>(rank), samples_ns.end());
  return static_cast<double>(samples_ns[rank]) / 1000.0;
}

inline std::string top_denial(const ClientStats& stats) {
  const auto top = std::max_element(stats.denials_by_tier.begin(), stats.denials_by_tier.end(),
                                    [](const auto& a, const auto& b) { return a.second < b.second; });
  if (top == stats.denials_by_tier.end()) return "-";
  return top->first + " (" + std::to_string(top->second) + ")";
}

inline void print_user_row(const std::string& user, const std::string& plan, const ClientStats& s) {
  const ull avg_retry_ms = s.finite_retry_afters == 0 ? 0 : ull(s.retry_after_sum.count()) / s.finite_retry_afters;
  std::printf("%-6s %-10s %5llu %5llu %7llu %6llu %7llu  %-22s %6llu ms %7.2f %7.2f\n", user.c_str(), plan.c_str(),
              ull(s.requests), ull(s.sent), ull(s.allowed), ull(s.denied), ull(s.gave_up), top_denial(s).c_str(),
              avg_retry_ms, percentile_us(s.decision_ns, 0.50), percentile_us(s.decision_ns, 0.99));
}

template <class Storage>
void print_users(const std::vector<UserProfile>& users, const std::vector<Plan<Storage>>& plans,
                 const std::vector<ClientStats>& clients) {
  std::puts(
      "\nPer user (reqs = distinct requests; sent = allow() calls, retries included; latency = one allow() on a\n"
      "client thread that mostly sleeps, so with cold caches)");
  std::printf("%-6s %-10s %5s %5s %7s %6s %7s  %-22s %9s %7s %7s\n", "user", "plan", "reqs", "sent", "allowed",
              "denied", "gave up", "top denial reason", "avg retry", "p50 us", "p99 us");
  for (std::size_t i = 0; i < users.size(); ++i) print_user_row(users[i].name, plans[users[i].plan].name, clients[i]);
  print_user_row("all", "", sum_of(users, clients));
}

template <class Storage>
void print_tiers(const std::vector<Plan<Storage>>& plans, const std::vector<UserProfile>& users,
                 const std::vector<ClientStats>& clients) {
  std::puts(
      "\nPer tier (one limiter per plan, all tiers decided together; 1 s sliding windows;\n"
      "denials = 429s whose reason is the tier: the first tier, in this order, that refused)");
  std::printf("%-10s %-15s %-11s %-9s %11s %8s\n", "plan", "tier", "scope", "unit", "limit / 1 s", "denials");
  for (std::size_t p = 0; p < plans.size(); ++p) {
    ClientStats sum = sum_of(users, clients, p);
    for (const airl::Tier& t : plans[p].limiter.tiers()) {
      const bool requests = t.unit == airl::Unit::requests;
      std::printf("%-10s %-15s %-11s %-9s %6llu %-4s %8llu\n", plans[p].name.c_str(), t.name.c_str(),
                  std::string(airl::to_string(t.scope)).c_str(), requests ? "requests" : "cost", ull(t.quota.limit),
                  requests ? "req" : "tok", ull(sum.denials_by_tier[t.name]));
    }
  }
}

inline void print_workers(const GpuWorkers& gpus, Clock::duration run_time) {
  const BoundedQueue& queue = gpus.queue();
  std::printf("\nGPU workers (%zu, %lld us per token; queue capacity %zu, max depth %zu, pushes that waited %zu)\n",
              gpus.stats().size(), static_cast<long long>(gpus.options().time_per_token.count()), queue.capacity(),
              queue.max_depth(), queue.waited_pushes());
  std::printf("%-6s %6s %9s %9s %6s\n", "worker", "jobs", "tokens", "busy ms", "busy%");
  for (std::size_t w = 0; w < gpus.stats().size(); ++w) {
    const WorkerStats& s = gpus.stats()[w];
    std::printf("%-6zu %6llu %9llu %9lld %5.1f%%\n", w, ull(s.jobs), ull(s.tokens),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(s.busy).count()),
                100.0 * std::chrono::duration<double>(s.busy) / std::chrono::duration<double>(run_time));
  }
}

template <class Storage>
void print_metrics(const std::vector<Plan<Storage>>& plans) {
  std::puts("\nLimiter metrics() (one limiter per plan; active_keys = buckets held in this process: 0 on Redis)");
  std::printf("%-10s %8s %8s %7s %11s %14s\n", "plan", "allowed", "denied", "deny%", "active_keys", "backend_errors");
  for (const Plan<Storage>& plan : plans) {
    const airl::Metrics m = plan.limiter.metrics();
    std::printf("%-10s %8llu %8llu %6.1f%% %11zu %14llu\n", plan.name.c_str(), ull(m.allowed), ull(m.denied),
                m.deny_rate_percent(), m.active_keys, ull(m.backend_errors));
  }
}

}  // namespace demo
