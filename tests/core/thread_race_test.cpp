// SPDX-License-Identifier: MIT
// Thread races of the rate limiters: many threads deciding on shared buckets never over-admit, multi-tier
// admissions stay all-or-nothing, replays are charged once, and every call is counted. Time stands still
// during the races (long windows; the in-memory backend's ManualClock does not move unless told), so the
// counts are exact. Catch2 v2 assertions are not thread-safe: threads only record outcomes, the test checks
// them after join. (The in-flight caps, ConcurrencyLimiter, are tested in
// tests/ai_serving/concurrency_limiter_test.cpp.)

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using airl::Scope;
using airl::Tier;

// Runs body(index) on `threads` threads released together by a latch; returns how many bodies threw.
template <class Body>
std::size_t run_together(std::size_t threads, Body body) {
  std::latch start(static_cast<std::ptrdiff_t>(threads));
  std::atomic<std::size_t> failures{0};
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (std::size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&start, &failures, &body, t] {
      start.arrive_and_wait();
      try {
        body(t);
      } catch (...) {
        failures.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : pool) thread.join();
  return failures.load();
}

template <class Backend>
airl::SlidingWindowLimiter<typename Backend::Storage> make_limiter(Backend& backend, airl::Quota quota,
                                                                   airl::InMemoryOptions options = {}) {
  return airl::SlidingWindowLimiter<typename Backend::Storage>(quota, backend.make_storage(options));
}

template <class Backend>
airl::MultiTierLimiter<typename Backend::Storage> make_multi(Backend& backend, std::vector<Tier> tiers) {
  return airl::MultiTierLimiter<typename Backend::Storage>(std::move(tiers), backend.make_storage());
}

}  // namespace

TEMPLATE_TEST_CASE("exactly limit requests are admitted when 128 threads race on one key", "[thread_race]",
                   airl::test::InMemoryBackend) {
  TestType backend;
  auto limiter = make_limiter(backend, {1000, 1h});
  constexpr std::size_t threads = 128;
  constexpr std::size_t attempts = 50;
  std::atomic<std::uint64_t> admitted{0}, denied{0};

  REQUIRE(run_together(threads, [&](std::size_t) {
            for (std::size_t i = 0; i < attempts; ++i) {
              auto& outcome = limiter.allow("cc-race-user", "cc-race-model").allowed ? admitted : denied;
              outcome.fetch_add(1);
            }
          }) == 0);

  CHECK(admitted.load() == 1000);
  CHECK(denied.load() == threads * attempts - 1000);
  CHECK(limiter.usage("cc-race-user", "cc-race-model") == 1000);
  const airl::Metrics metrics = limiter.metrics();
  CHECK(metrics.allowed == 1000);
  CHECK(metrics.denied == threads * attempts - 1000);
  CHECK(metrics.total() == threads * attempts);
}

TEMPLATE_TEST_CASE("exactly limit cost units are admitted when threads race with weighted costs", "[thread_race]",
                   airl::test::InMemoryBackend) {
  TestType backend;

  SECTION("one cost: the admissions are exactly limit / cost") {
    auto limiter = make_limiter(backend, {7000, 1h});
    std::atomic<std::uint64_t> admitted{0};
    REQUIRE(run_together(64, [&](std::size_t) {
              for (int i = 0; i < 30; ++i) {
                if (limiter.allow(airl::Request{"cc-weighted-user", "cc-weighted-model", 7}).allowed) {
                  admitted.fetch_add(1);
                }
              }
            }) == 0);
    CHECK(admitted.load() == 1000);
    CHECK(limiter.usage("cc-weighted-user", "cc-weighted-model") == 7000);
  }

  SECTION("mixed costs: usage is exactly the admitted costs and never above the limit") {
    constexpr std::uint64_t limit = 10'000;
    auto limiter = make_limiter(backend, {limit, 1h});
    std::atomic<std::uint64_t> admitted_cost{0}, calls{0};
    REQUIRE(run_together(64, [&](std::size_t t) {
              const std::uint64_t cost = t % 9 + 1;
              for (int i = 0; i < 40; ++i) {
                calls.fetch_add(1);
                if (limiter.allow(airl::Request{"cc-mixed-user", "cc-mixed-model", cost}).allowed) {
                  admitted_cost.fetch_add(cost);
                }
              }
            }) == 0);
    const std::uint64_t used = limiter.usage("cc-mixed-user", "cc-mixed-model");
    CHECK(used == admitted_cost.load());
    CHECK(used <= limit);
    CHECK(limiter.metrics().total() == calls.load());

    // What is left is exactly limit - usage: unit requests fill it to the last unit (bounded loop).
    std::uint64_t filled = 0;
    while (filled <= limit && limiter.allow(airl::Request{"cc-mixed-user", "cc-mixed-model", 1}).allowed) ++filled;
    CHECK(filled == limit - used);
    CHECK(limiter.usage("cc-mixed-user", "cc-mixed-model") == limit);
  }
}

TEMPLATE_TEST_CASE("a multi-tier limiter under 32 threads never over-admits a tier and stays all-or-nothing",
                   "[thread_race][multi_tier]", airl::test::InMemoryBackend) {
  TestType backend;
  // 4 users x 4 models. Pairs, users and models together could take 640: the global tier (500) must bind,
  // so it fills exactly (a thread is only ever refused by a tier that is full, and time stands still).
  auto limiter = make_multi(backend, {Tier{"cc-mt-pair", Scope::user_model, {40, 1h}},
                                      Tier{"cc-mt-user", Scope::user, {160, 1h}},
                                      Tier{"cc-mt-model", Scope::model, {160, 1h}},
                                      Tier{"cc-mt-global", Scope::global, {500, 1h}}});
  std::vector<std::string> users, models;
  for (int i = 0; i < 4; ++i) {
    users.push_back(airl::test::id("cc-mt-user", i));
    models.push_back(airl::test::id("cc-mt-model", i));
  }
  std::array<std::atomic<std::uint64_t>, 16> admitted_by_pair{};
  std::atomic<std::uint64_t> unknown_reasons{0};

  REQUIRE(run_together(32, [&](std::size_t t) {
            const std::size_t pair = t % 16;  // two threads per pair
            for (int i = 0; i < 60; ++i) {
              const airl::Decision decision = limiter.allow(users[pair / 4], models[pair % 4]);
              if (decision.allowed) {
                admitted_by_pair[pair].fetch_add(1);
              } else if (decision.reason != "cc-mt-pair" && decision.reason != "cc-mt-user" &&
                         decision.reason != "cc-mt-model" && decision.reason != "cc-mt-global") {
                unknown_reasons.fetch_add(1);
              }
            }
          }) == 0);

  CHECK(unknown_reasons.load() == 0);
  std::uint64_t total = 0, user_sum = 0, model_sum = 0;
  for (std::size_t pair = 0; pair < 16; ++pair) {
    INFO("pair " << pair);
    const std::uint64_t admitted = admitted_by_pair[pair].load();
    total += admitted;
    CHECK(admitted <= 40);
    CHECK(limiter.usage("cc-mt-pair", users[pair / 4], models[pair % 4]) == admitted);
  }
  for (std::size_t i = 0; i < 4; ++i) {
    INFO("user/model " << i);
    std::uint64_t by_user = 0, by_model = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      by_user += admitted_by_pair[i * 4 + j].load();
      by_model += admitted_by_pair[j * 4 + i].load();
    }
    // Every admission was charged in the user and model tiers too, and no refusal charged them.
    CHECK(limiter.usage("cc-mt-user", users[i], models[0]) == by_user);
    CHECK(limiter.usage("cc-mt-model", users[0], models[i]) == by_model);
    CHECK(by_user <= 160);
    CHECK(by_model <= 160);
    user_sum += limiter.usage("cc-mt-user", users[i], models[0]);
    model_sum += limiter.usage("cc-mt-model", users[0], models[i]);
  }
  CHECK(total == 500);
  CHECK(limiter.usage("cc-mt-global", users[0], models[0]) == 500);
  CHECK(user_sum == 500);
  CHECK(model_sum == 500);
  CHECK(limiter.metrics().allowed == 500);
  CHECK(limiter.metrics().total() == 32 * 60);
}

TEMPLATE_TEST_CASE("replays of one request_id from 32 threads are charged exactly once", "[thread_race][request_id]",
                   airl::test::InMemoryBackend) {
  TestType backend;
  constexpr std::size_t ids = 20;
  constexpr std::size_t threads = 32;
  // Room for exactly one charge per id: charging an id twice would refuse another id's first request.
  auto limiter = make_multi(backend, {Tier{"cc-replay-pair", Scope::user_model, {ids, 1h}},
                                      Tier{"cc-replay-global", Scope::global, {ids, 1h}}});
  std::vector<std::string> request_ids;
  for (std::size_t i = 0; i < ids; ++i) request_ids.push_back(airl::test::id("cc-replay-id", static_cast<int>(i)));
  std::atomic<std::uint64_t> charged{0}, replayed{0}, denied{0};

  REQUIRE(run_together(threads, [&](std::size_t t) {
            for (std::size_t i = 0; i < ids; ++i) {  // each thread starts at another id
              const std::string& id = request_ids[(t + i) % ids];
              const airl::Decision d = limiter.allow(airl::Request{"cc-replay-user", "cc-replay-model", 1, id});
              auto& outcome = !d.allowed ? denied : d.replayed ? replayed : charged;
              outcome.fetch_add(1);
            }
          }) == 0);

  CHECK(charged.load() == ids);
  CHECK(replayed.load() == threads * ids - ids);
  CHECK(denied.load() == 0);
  CHECK(limiter.usage("cc-replay-pair", "cc-replay-user", "cc-replay-model") == ids);
  CHECK(limiter.usage("cc-replay-global", "cc-replay-user", "cc-replay-model") == ids);
  CHECK(limiter.metrics().allowed == threads * ids);
}

TEMPLATE_TEST_CASE("allow, reset, purge_expired, metrics and usage run together safely", "[thread_race]",
                   airl::test::InMemoryBackend) {
  TestType backend;
  constexpr std::uint64_t limit = 20;
  auto limiter = make_limiter(backend, {limit, 100ms});
  constexpr std::size_t deciders = 8;
  constexpr std::size_t decisions_each = 300;
  constexpr std::size_t rounds = 200;
  std::vector<std::string> users;
  for (std::size_t i = 0; i < deciders; ++i) users.push_back(airl::test::id("cc-mix-user", static_cast<int>(i)));
  const std::array<std::string, 2> models = {"cc-mix-m0", "cc-mix-m1"};
  std::atomic<std::uint64_t> over_limit{0}, metrics_went_back{0}, metrics_too_high{0};

  REQUIRE(run_together(deciders + 6, [&](std::size_t t) {
            if (t < deciders) {  // deciding threads, some requests with ids
              for (std::size_t i = 0; i < decisions_each; ++i) {
                const std::string id = i % 5 == 0 ? airl::test::id("cc-mix-id", static_cast<int>(i % 40)) : "";
                (void)limiter.allow(airl::Request{users[t], models[i % 2], i % 3 + 1, id});
              }
              return;
            }
            std::uint64_t last_total = 0;  // for the metrics thread
            for (std::size_t i = 0; i < rounds; ++i) {
              switch (t - deciders) {
                case 0: limiter.reset(users[i % deciders]); break;
                case 1: limiter.reset(users[(i + 3) % deciders], models[i % 2]); break;
                case 2: (void)limiter.purge_expired(); break;
                case 3: {
                  if (limiter.usage(users[i % deciders], models[i % 2]) > limit) over_limit.fetch_add(1);
                  break;
                }
                case 4: {
                  const std::uint64_t total = limiter.metrics().total();
                  if (total < last_total) metrics_went_back.fetch_add(1);
                  if (total > deciders * decisions_each) metrics_too_high.fetch_add(1);
                  last_total = total;
                  break;
                }
                case 5: backend.advance(1ms); break;
              }
            }
          }) == 0);

  CHECK(over_limit.load() == 0);
  CHECK(metrics_went_back.load() == 0);
  CHECK(metrics_too_high.load() == 0);
  CHECK(limiter.metrics().total() == deciders * decisions_each);  // every call counted once

  backend.advance(100ms);  // everything expires
  (void)limiter.purge_expired();
  for (const std::string& user : users) {
    CHECK(limiter.usage(user, models[0]) == 0);
    CHECK(limiter.usage(user, models[1]) == 0);
  }
}

// max_keys and active_keys belong to the in-memory store.
TEST_CASE("max_keys is never exceeded when threads race to create keys", "[thread_race][in_memory][max_keys]") {
  airl::test::InMemoryBackend backend;
  auto limiter = make_limiter(backend, {1'000'000, 1h}, airl::InMemoryOptions{.shards = 8, .max_keys = 64});
  REQUIRE(limiter.allow("cc-cap-shared", "m").allowed);  // one existing key, hit by every thread
  std::atomic<std::uint64_t> new_admitted{0}, capacity{0}, other{0}, shared_denied{0};

  REQUIRE(run_together(16, [&](std::size_t t) {
            for (int i = 0; i < 20; ++i) {
              const std::string user = "cc-cap-" + std::to_string(t) + "-" + std::to_string(i);
              const airl::Decision d = limiter.allow(user, "m");
              if (d.allowed) {
                new_admitted.fetch_add(1);
              } else if (d.reason == airl::key_capacity_reason && d.retry_after != airl::Decision::never) {
                capacity.fetch_add(1);
              } else {
                other.fetch_add(1);
              }
              if (!limiter.allow("cc-cap-shared", "m").allowed) shared_denied.fetch_add(1);
            }
          }) == 0);

  CHECK(new_admitted.load() == 63);
  CHECK(capacity.load() == 16 * 20 - 63);
  CHECK(other.load() == 0);
  CHECK(shared_denied.load() == 0);  // existing keys keep working at capacity
  CHECK(limiter.metrics().active_keys == 64);
}

TEST_CASE("the key count stays exact while threads create, sweep, purge and reset buckets",
          "[thread_race][in_memory][memory]") {
  airl::test::InMemoryBackend backend;
  auto limiter = make_limiter(backend, {5, 100ms}, airl::InMemoryOptions{.shards = 4});
  constexpr std::size_t creators = 8;

  REQUIRE(run_together(creators + 3, [&](std::size_t t) {
            for (std::size_t i = 0; i < 200; ++i) {
              if (t < creators) {
                (void)limiter.allow("cc-count-" + std::to_string(t) + "-" + std::to_string(i % 50), "m");
              } else if (t == creators) {
                backend.advance(1ms);  // buckets expire while others use them
              } else if (t == creators + 1) {
                (void)limiter.purge_expired();
              } else {
                limiter.reset("cc-count-" + std::to_string(i % creators) + "-" + std::to_string(i % 50));
              }
            }
          }) == 0);

  // A leaked or doubly dropped bucket would leave the count off (or wrapped around) forever.
  CHECK(limiter.metrics().active_keys <= creators * 50);
  backend.advance(100ms);
  (void)limiter.purge_expired();
  CHECK(limiter.metrics().active_keys == 0);
  CHECK(limiter.purge_expired() == 0);
}

TEST_CASE("under a flood of new keys at capacity, no key_capacity denial says never", "[thread_race][in_memory][max_keys]") {
  // Keys being created by other threads are briefly invisible to the expiry scan: that must read as "soon",
  // never as "never" (a client would give up for good on a temporary condition).
  airl::ManualClock clock;
  airl::SlidingWindowLimiter<airl::test::ManualStorage> limiter(
      {10, 1s}, airl::test::ManualStorage(airl::InMemoryOptions{.shards = 8, .max_keys = 4}, clock));
  constexpr int threads = 8;
  std::atomic<int> never{0}, capacity{0}, too_long{0};
  std::latch start(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < 2'000; ++i) {
        const std::string user = "cap-flood-" + std::to_string(t) + "-" + std::to_string(i);
        const airl::Decision decision = limiter.allow(user, "m");
        if (decision.allowed) continue;
        if (decision.reason == "key_capacity") capacity.fetch_add(1);
        if (decision.retry_after == airl::Decision::never) never.fetch_add(1);
        if (decision.retry_after > 1s) too_long.fetch_add(1);
      }
    });
  }
  for (auto& worker : workers) worker.join();
  CHECK(capacity.load() == threads * 2'000 - 4);
  CHECK(never.load() == 0);
  CHECK(too_long.load() == 0);
}
