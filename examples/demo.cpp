// SPDX-License-Identifier: MIT
// demo: a simulated inference server on airl's in-memory backend, or on Redis with --redis host:port.
//
// Client threads (one per user, fixed seeds) send bursts of requests for three models, each asking for a
// random number of tokens. Every request is decided by ONE allow() on its plan's MultiTierLimiter, whose
// tiers count requests (Unit::requests) and tokens (Unit::cost) together, all-or-nothing. Admitted requests
// go through a bounded queue to a pool of GPU worker threads; denied ones are 429s and the client backs off
// for Retry-After. At the end the demo prints tables per user, per tier, per worker and per limiter, and
// checks that every count adds up: it exits 1 on any inconsistency, so it doubles as a smoke test (CTest
// runs `demo --quick`).
//
// The pieces, one file each:
//   demo/plans.hpp          the plans: one limiter each, and its tiers
//   demo/traffic.hpp        the users and their client threads
//   demo/gpu_workers.hpp    the bounded queue and the worker pool
//   demo/report.hpp         the tables and latency percentiles
//   demo/redis_backend.hpp  the same plans on airl::RedisStorage (built only when CMake finds hiredis)
//   demo.cpp (this file)    flags, wiring, and the consistency checks
//
// Usage: demo [--quick] [--seconds N] [--redis host:port]

#include <airl/airl.hpp>

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "demo/gpu_workers.hpp"
#include "demo/plans.hpp"
#include "demo/report.hpp"
#include "demo/traffic.hpp"
#ifdef AIRL_DEMO_WITH_REDIS
#include "demo/redis_backend.hpp"
#endif

namespace {

using demo::Clock;

struct Options {
  std::chrono::milliseconds traffic{6000};  // how long clients send; --quick: 1.5 s; --seconds N: N s
  std::optional<std::string> redis;         // --redis host:port: run on Redis instead of in memory
};

std::optional<Options> parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--quick") {
      options.traffic = std::chrono::milliseconds(1500);
      continue;
    }
    if (i + 1 == argc) return std::nullopt;
    if (arg == "--redis") {
      options.redis = argv[++i];
      continue;
    }
    if (arg != "--seconds") return std::nullopt;
    const std::string_view value = argv[++i];
    int seconds = 0;
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (error != std::errc{} || end != value.data() + value.size() || seconds < 1 || seconds > 60) return std::nullopt;
    options.traffic = std::chrono::seconds(seconds);
  }
  return options;
}

class Checks {
 public:
  void expect(bool ok, const std::string& what) {
    if (!ok) failures_.push_back(what);
  }
  bool passed() const noexcept { return failures_.empty(); }
  void print() const {
    if (passed()) std::puts("\nconsistency: OK (counts agree, every admission served, no window over its limit)");
    for (const std::string& failure : failures_) std::printf("INCONSISTENT: %s\n", failure.c_str());
  }

 private:
  std::vector<std::string> failures_;
};

// Right after the traffic: no bucket of any tier holds more than its limit.
template <class Storage>
void check_windows(std::vector<demo::Plan<Storage>>& plans, const std::vector<demo::UserProfile>& users,
                   Checks& checks) {
  for (const demo::UserProfile& user : users) {
    airl::MultiTierLimiter<Storage>& limiter = plans[user.plan].limiter;
    for (const airl::Tier& tier : limiter.tiers()) {
      for (const std::string_view model : demo::models) {
        const std::uint64_t usage = limiter.usage(tier.name, user.name, model);
        checks.expect(usage <= tier.quota.limit, tier.name + " holds " + std::to_string(usage) + " for " +
                                                     user.name + "/" + std::string(model) + ", over its limit");
      }
    }
  }
}

// After the run: the clients' counts, the limiters' metrics() and the workers' counts all agree.
template <class Storage>
void check_counts(const std::vector<demo::Plan<Storage>>& plans, const std::vector<demo::UserProfile>& users,
                  const std::vector<demo::ClientStats>& clients, const demo::GpuWorkers& gpus, Checks& checks) {
  for (std::size_t i = 0; i < users.size(); ++i) {
    const demo::ClientStats& c = clients[i];
    const std::string& name = users[i].name;
    checks.expect(c.requests > 0, name + " sent nothing");
    checks.expect(c.allowed + c.denied == c.sent, name + ": allowed + denied != sent");
    checks.expect(c.allowed + c.gave_up == c.requests, name + ": a request was neither admitted nor abandoned");
    checks.expect(c.decision_ns.size() == c.sent, name + ": a decision was not timed");
  }
  for (std::size_t p = 0; p < plans.size(); ++p) {
    const demo::ClientStats sum = demo::sum_of(users, clients, p);
    const airl::Metrics metrics = plans[p].limiter.metrics();
    const std::string& plan = plans[p].name;
    checks.expect(metrics.allowed == sum.allowed, plan + ": metrics().allowed != 200s the clients saw");
    checks.expect(metrics.denied == sum.denied, plan + ": metrics().denied != 429s the clients saw");
    checks.expect(metrics.backend_errors == 0,
                  plan + ": " + std::to_string(metrics.backend_errors) + " backend errors (degraded decisions)");
    std::uint64_t by_tier = 0;
    for (const airl::Tier& tier : plans[p].limiter.tiers()) {
      const auto found = sum.denials_by_tier.find(tier.name);
      if (found != sum.denials_by_tier.end()) by_tier += found->second;
    }
    checks.expect(by_tier == sum.denied, plan + ": a denial's reason is not one of the plan's tiers");
  }
  const demo::ClientStats all = demo::sum_of(users, clients);
  std::uint64_t served = 0, generated = 0;
  for (const demo::WorkerStats& w : gpus.stats()) {
    served += w.jobs;
    generated += w.tokens;
  }
  checks.expect(all.queue_timeouts == 0, std::to_string(all.queue_timeouts) + " admitted requests found no queue room");
  checks.expect(served == all.allowed,
                "workers served " + std::to_string(served) + " of " + std::to_string(all.allowed) + " admitted");
  checks.expect(generated == all.admitted_tokens, "workers generated a different number of tokens than admitted");
  checks.expect(all.allowed > 0 && all.denied > 0, "the traffic should see both 200s and 429s");
  checks.expect(all.denials_by_tier.size() >= 3, "the traffic should meet at least three different tiers");
}

// The simulation on `plans`, whatever their storage. Returns the exit code.
template <class Storage>
int run(const Options& options, std::vector<demo::Plan<Storage>> plans, const std::string& backend) {
  const Clock::time_point started = Clock::now();
  const std::vector<demo::UserProfile> users = demo::user_profiles();
  demo::GpuWorkers gpus(demo::GpuOptions{});
  std::printf("airl %s demo on %s: %zu users on %zu plans, %zu models, %zu GPU workers, %lld ms of traffic\n",
              AIRL_VERSION_STRING, backend.c_str(), users.size(), plans.size(), demo::models.size(),
              gpus.options().workers, static_cast<long long>(options.traffic.count()));

  std::vector<demo::ClientStats> client_stats(users.size());
  {
    const Clock::time_point deadline = Clock::now() + options.traffic;
    std::vector<std::jthread> clients;  // joined at the end of this block; no wait of theirs passes the deadline
    for (std::size_t i = 0; i < users.size(); ++i) {
      clients.emplace_back([&, i] {
        demo::Client(users[i], i, plans[users[i].plan].limiter, gpus, client_stats[i]).run(deadline);
      });
    }
  }
  Checks checks;
  check_windows(plans, users, checks);  // before the windows slide empty
  gpus.stop();                          // the workers drain the queue, then stop
  const Clock::duration run_time = Clock::now() - started;

  demo::print_users(users, plans, client_stats);
  demo::print_tiers(plans, users, client_stats);
  demo::print_workers(gpus, run_time);
  demo::print_metrics(plans);
  check_counts(plans, users, client_stats, gpus, checks);
  checks.print();
  std::printf("wall time: %.2f s\n", std::chrono::duration<double>(run_time).count());
  return checks.passed() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Options> options = parse_options(argc, argv);
  if (!options) {
    std::fprintf(stderr, "usage: %s [--quick] [--seconds N] [--redis host:port]   (N in 1..60, default 6)\n", argv[0]);
    return 2;
  }
  if (!options->redis) {
    return run(*options, demo::make_plans([](std::string_view) { return airl::InMemoryStorage<>{}; }),
               "the in-memory backend");
  }
#ifdef AIRL_DEMO_WITH_REDIS
  const std::optional<airl::RedisOptions> server = demo::parse_redis_address(*options->redis);
  if (!server) {
    std::fprintf(stderr, "--redis wants host:port, got '%s'\n", options->redis->c_str());
    return 2;
  }
  const std::string prefix = demo::run_key_prefix();
  std::vector<demo::Plan<airl::RedisStorage>> plans = demo::make_redis_plans(*server, prefix);
  if (!demo::redis_reachable(plans, *server)) return 2;
  try {
    return run(*options, std::move(plans),
               "Redis " + server->host + ":" + std::to_string(server->port) + " (keys " + prefix + ":*)");
  } catch (const airl::BackendError& error) {  // usage() in the checks throws if Redis went away mid-run
    std::fprintf(stderr, "Redis failed during the run: %s\n", error.what());
    return 1;
  }
#else
  std::fprintf(stderr, "this demo was built without the Redis backend: install libhiredis-dev and pkg-config, "
                       "then configure again\n");
  return 2;
#endif
}
