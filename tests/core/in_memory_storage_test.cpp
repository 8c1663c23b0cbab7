// SPDX-License-Identifier: MIT
// airl::InMemoryStorage driven directly with Charge spans: all-or-nothing acquisition, the multi-tier verdict
// rule, replays, erasing, purging (explicit and incremental) and the max_keys cap. Time is a ManualClock.
#include <catch2/catch.hpp>

#include "support.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

using namespace std::literals;

namespace {

using airl::AcquireResult;
using airl::AcquireStatus;
using airl::BucketRef;
using airl::Charge;
using airl::InMemoryOptions;
using airl::ManualClock;
using airl::Quota;
using airl::Scope;
using Storage = airl::test::ManualStorage;

Storage make_storage(const ManualClock& clock, std::size_t shards = 64, std::size_t max_keys = 0) {
  return Storage(InMemoryOptions{shards, max_keys}, clock);
}

BucketRef user_bucket(std::string_view user, std::string_view tier = "rpm") {
  return BucketRef{Scope::user, tier, user, {}};
}

AcquireResult acquire(Storage& storage, const Charge& charge, std::string_view request_id = {}) {
  return storage.acquire(std::span<const Charge>(&charge, 1), request_id);
}

template <std::size_t N>
AcquireResult acquire(Storage& storage, const std::array<Charge, N>& charges, std::string_view request_id = {}) {
  return storage.acquire(charges, request_id);
}

const Quota roomy{1000, 1s};

}  // namespace

TEST_CASE("the shard count must be a power of two", "[in_memory]") {
  const ManualClock clock;
  SECTION("0, 3, 6 and 100 are refused") {
    const std::size_t refused = GENERATE(as<std::size_t>{}, 0, 3, 6, 100);
    CAPTURE(refused);
    CHECK_THROWS_AS(make_storage(clock, refused), std::invalid_argument);
  }
  SECTION("1 and 64 are accepted and decide") {
    const std::size_t shards = GENERATE(as<std::size_t>{}, 1, 64);
    Storage storage = make_storage(clock, shards);
    CHECK(storage.options().shards == shards);
    for (int i = 0; i < 10; ++i) acquire(storage, Charge{user_bucket(airl::test::id("u", i)), roomy, 2});
    CHECK(storage.active_keys() == 10);
    CHECK(storage.usage(user_bucket("u-3"), roomy) == 2);
  }
}

TEST_CASE("acquire with no charges is a caller mistake", "[in_memory]") {
  Storage storage = make_storage(ManualClock{});
  CHECK_THROWS_AS(storage.acquire({}, {}), std::invalid_argument);
  CHECK(storage.active_keys() == 0);
}

TEST_CASE("acquire is all-or-nothing: a denied charge records and creates nothing", "[in_memory]") {
  const ManualClock clock;
  Storage storage = make_storage(clock);
  const Charge a{user_bucket("a"), Quota{10, 1s}, 3};
  const Charge b{user_bucket("b"), Quota{4, 1s}, 3};
  const Charge fresh{user_bucket("fresh"), Quota{10, 1s}, 3};
  REQUIRE(acquire(storage, a).status == AcquireStatus::allowed);
  REQUIRE(acquire(storage, b).status == AcquireStatus::allowed);  // b: 3 of 4 used

  const AcquireResult result = acquire(storage, std::array{a, b, fresh});
  CHECK(result.status == AcquireStatus::denied);
  CHECK(result.binding == 1);
  CHECK(storage.usage(a.bucket, a.quota) == 3);  // not 6
  CHECK(storage.usage(b.bucket, b.quota) == 3);
  CHECK(storage.usage(fresh.bucket, fresh.quota) == 0);
  CHECK(storage.active_keys() == 2);  // a denial never creates a bucket

  // When all fit, every bucket is charged.
  const Charge small_b{b.bucket, b.quota, 1};
  CHECK(acquire(storage, std::array{a, small_b, fresh}).status == AcquireStatus::allowed);
  CHECK(storage.usage(a.bucket, a.quota) == 6);
  CHECK(storage.usage(b.bucket, b.quota) == 4);
  CHECK(storage.usage(fresh.bucket, fresh.quota) == 3);
  CHECK(storage.active_keys() == 3);

  // A cost above the limit of a new bucket can never fit, and creates no bucket.
  const AcquireResult never = acquire(storage, Charge{user_bucket("new"), Quota{5, 1s}, 6});
  CHECK(never.status == AcquireStatus::denied);
  CHECK(never.retry_after == std::chrono::milliseconds::max());
  CHECK(never.remaining == 5);
  CHECK(storage.active_keys() == 3);
}

TEST_CASE("an admission binds to the charge with the least remaining, first of equals", "[in_memory]") {
  Storage storage = make_storage(ManualClock{});
  const Charge wide{user_bucket("u", "wide"), Quota{10, 1s}, 1};   // 9 left
  const Charge tight{user_bucket("u", "tight"), Quota{5, 2s}, 1};  // 4 left
  const Charge twin{user_bucket("u", "twin"), Quota{5, 3s}, 1};    // 4 left too, but later
  const AcquireResult result = acquire(storage, std::array{wide, tight, twin});
  CHECK(result.status == AcquireStatus::allowed);
  CHECK(result.binding == 1);
  CHECK(result.remaining == 4);
  CHECK(result.retry_after == 0ms);
  CHECK(result.reset_after == 2s);  // the binding charge's window, not the others'
}

TEST_CASE("a denial binds to the first denying charge and waits for the slowest", "[in_memory]") {
  ManualClock clock;
  Storage storage = make_storage(clock);
  const Charge fits{user_bucket("u", "fits"), Quota{10, 1s}, 1};
  const Charge short_full{user_bucket("u", "short"), Quota{1, 1s}, 1};
  const Charge long_full{user_bucket("u", "long"), Quota{1, 5s}, 1};
  acquire(storage, short_full);
  acquire(storage, long_full);
  clock.advance(300ms + 1ns);  // the extra nanosecond checks that waits round up

  const AcquireResult result = acquire(storage, std::array{fits, short_full, long_full});
  CHECK(result.status == AcquireStatus::denied);
  CHECK(result.binding == 1);             // first denying
  CHECK(result.remaining == 0);           // of the binding charge
  CHECK(result.reset_after == 700ms);     // of the binding charge: 699.999999 ms rounded up
  CHECK(result.retry_after == 4700ms);    // max over denying: 4699.999999 ms rounded up
  CHECK(storage.usage(fits.bucket, fits.quota) == 0);

  // The wait is exact: one nanosecond short of it the request is still denied, at it the request passes.
  clock.advance(4700ms - 1ns - 1ns);
  CHECK(acquire(storage, std::array{fits, short_full, long_full}).status == AcquireStatus::denied);
  clock.advance(1ns);
  CHECK(acquire(storage, std::array{fits, short_full, long_full}).status == AcquireStatus::allowed);
}

TEST_CASE("a request id held in any bucket is replayed and charged nowhere", "[in_memory]") {
  ManualClock clock;
  Storage storage = make_storage(clock);
  const Charge full_after_one{user_bucket("u", "one"), Quota{1, 1s}, 1};
  const Charge other{user_bucket("u", "other"), Quota{10, 1s}, 1};
  REQUIRE(acquire(storage, full_after_one, "req-1").status == AcquireStatus::allowed);

  // Held in the second bucket only; the first bucket does not even exist yet.
  const AcquireResult replay = acquire(storage, std::array{other, full_after_one}, "req-1");
  CHECK(replay.status == AcquireStatus::replayed);
  CHECK(replay.binding == 1);    // the least remaining: the full bucket
  CHECK(replay.remaining == 0);
  CHECK(storage.usage(full_after_one.bucket, full_after_one.quota) == 1);
  CHECK(storage.usage(other.bucket, other.quota) == 0);
  CHECK(storage.active_keys() == 1);

  // A new id on the same full bucket is an ordinary denial.
  CHECK(acquire(storage, full_after_one, "req-2").status == AcquireStatus::denied);

  // Once its entry expires, the id is new again and is charged.
  clock.advance(1s);
  CHECK(acquire(storage, full_after_one, "req-1").status == AcquireStatus::allowed);
  CHECK(acquire(storage, full_after_one, "req-1").status == AcquireStatus::replayed);
  CHECK(storage.usage(full_after_one.bucket, full_after_one.quota) == 1);
}

TEST_CASE("erase drops exactly the named buckets", "[in_memory]") {
  Storage storage = make_storage(ManualClock{});
  acquire(storage, Charge{user_bucket("a"), roomy, 1});
  acquire(storage, Charge{user_bucket("b"), roomy, 1});
  const std::array doomed{user_bucket("a"), user_bucket("never-seen")};
  storage.erase(doomed);
  CHECK(storage.active_keys() == 1);
  CHECK(storage.usage(user_bucket("a"), roomy) == 0);
  CHECK(storage.usage(user_bucket("b"), roomy) == 1);
}

TEST_CASE("erase_user drops that user's user and user_model buckets and nothing else", "[in_memory]") {
  Storage storage = make_storage(ManualClock{});
  const std::string alice = "alice";
  const std::vector<BucketRef> doomed = {
      {Scope::user, "rpm", alice, {}},
      {Scope::user_model, "rpm", alice, "m1"},
      {Scope::user_model, "tpm", alice, "m2"},
  };
  const std::string nul_user = "alice\0x"s;
  const std::vector<BucketRef> kept = {
      {Scope::user, "rpm", "al", {}},             // a prefix of alice
      {Scope::user, "rpm", "alicex", {}},         // alice is a prefix of it
      {Scope::user, "rpm", nul_user, {}},         // alice followed by a NUL byte
      {Scope::user_model, "rpm", "bob", alice},   // a model named alice
      {Scope::model, "rpm", alice, "m1"},         // model scope: not alice's, whatever user asked
      {Scope::global, "alice", alice, alice},     // a tier named alice
  };
  for (const BucketRef& bucket : doomed) acquire(storage, Charge{bucket, roomy, 1});
  for (const BucketRef& bucket : kept) acquire(storage, Charge{bucket, roomy, 1});
  REQUIRE(storage.active_keys() == doomed.size() + kept.size());

  storage.erase_user(alice);
  CHECK(storage.active_keys() == kept.size());
  for (const BucketRef& bucket : doomed) CHECK(storage.usage(bucket, roomy) == 0);
  for (const BucketRef& bucket : kept) CHECK(storage.usage(bucket, roomy) == 1);

  storage.erase_user("al");
  CHECK(storage.active_keys() == kept.size() - 1);
  CHECK(storage.usage(kept[1], roomy) == 1);
}

TEST_CASE("purge_expired drops exactly the buckets whose window is empty", "[in_memory]") {
  ManualClock clock;
  const std::size_t shards = GENERATE(as<std::size_t>{}, 1, 64);
  CAPTURE(shards);
  Storage storage = make_storage(clock, shards);
  for (int i = 0; i < 5; ++i) acquire(storage, Charge{user_bucket(airl::test::id("early", i)), roomy, 1});
  clock.advance(500ms);
  for (int i = 0; i < 3; ++i) acquire(storage, Charge{user_bucket(airl::test::id("late", i)), roomy, 1});
  acquire(storage, Charge{user_bucket("early-0"), roomy, 1});  // a second entry keeps early-0 alive
  REQUIRE(storage.active_keys() == 8);

  CHECK(storage.purge_expired() == 0);
  clock.advance(500ms - 1ns);
  CHECK(storage.purge_expired() == 0);  // the first entries still count for one more nanosecond
  clock.advance(1ns);
  CHECK(storage.purge_expired() == 4);
  CHECK(storage.active_keys() == 4);
  CHECK(storage.usage(user_bucket("early-0"), roomy) == 1);
  clock.advance(500ms);
  CHECK(storage.purge_expired() == 4);
  CHECK(storage.active_keys() == 0);
}

TEST_CASE("with one shard each acquire sweeps two expired buckets", "[in_memory]") {
  ManualClock clock;
  Storage storage = make_storage(clock, 1);
  for (int i = 0; i < 100; ++i) acquire(storage, Charge{user_bucket(airl::test::id("idle", i)), roomy, 1});
  REQUIRE(storage.active_keys() == 100);
  clock.advance(1s);

  // The first call creates "busy" (+1) and sweeps two idle buckets (-2); every later call sweeps two more.
  for (std::size_t call = 1; call <= 50; ++call) {
    CAPTURE(call);
    REQUIRE(acquire(storage, Charge{user_bucket("busy"), roomy, 1}).status == AcquireStatus::allowed);
    REQUIRE(storage.active_keys() == 101 - 2 * call);
  }
  CHECK(storage.active_keys() == 1);
  CHECK(storage.purge_expired() == 0);  // the sweep left nothing behind
}

TEST_CASE("traffic on other keys sweeps expired buckets from every shard without purge_expired", "[in_memory]") {
  ManualClock clock;
  Storage storage = make_storage(clock);
  for (int i = 0; i < 200; ++i) acquire(storage, Charge{user_bucket(airl::test::id("idle", i)), roomy, 1});
  clock.advance(1s);

  // Rounds of traffic over 1000 live keys; every round touches (almost surely) every shard. Bounded.
  std::size_t previous = storage.active_keys();
  int rounds = 0;
  for (; rounds < 20 && (rounds == 0 || storage.active_keys() > 1000); ++rounds) {
    for (int i = 0; i < 1000; ++i) acquire(storage, Charge{user_bucket(airl::test::id("busy", i)), roomy, 1});
    if (rounds > 0) CHECK(storage.active_keys() < previous);
    previous = storage.active_keys();
  }
  CHECK(storage.active_keys() == 1000);  // only the live keys remain
  CHECK(storage.purge_expired() == 0);
  CHECK(rounds <= 3);
}

TEST_CASE("a full store refuses new keys until the earliest bucket expires", "[in_memory]") {
  ManualClock clock;
  const std::size_t shards = GENERATE(as<std::size_t>{}, 1, 64);
  CAPTURE(shards);
  Storage storage = make_storage(clock, shards, 3);
  const Charge a{user_bucket("a"), roomy, 1}, b{user_bucket("b"), roomy, 1}, c{user_bucket("c"), roomy, 1};
  const Charge d{user_bucket("d"), roomy, 1};
  acquire(storage, a);
  clock.advance(200ms);
  acquire(storage, b);
  clock.advance(100ms);
  acquire(storage, c);
  clock.advance(150ms + 500us);  // now 450.5 ms

  AcquireResult refused = acquire(storage, d);
  CHECK(refused.status == AcquireStatus::key_capacity);
  CHECK(refused.retry_after == 550ms);  // a expires at 1000 ms: 549.5 ms, rounded up
  CHECK(storage.active_keys() == 3);
  CHECK(storage.usage(d.bucket, d.quota) == 0);

  // Existing keys keep working; touching a moves the earliest expiry to b's (1200 ms).
  CHECK(acquire(storage, a).status == AcquireStatus::allowed);
  refused = acquire(storage, d);
  CHECK(refused.status == AcquireStatus::key_capacity);
  CHECK(refused.retry_after == 750ms);

  // Exactly when b expires the store makes room by itself: no purge_expired() call.
  clock.advance(749ms + 500us - 1ns);
  CHECK(acquire(storage, d).status == AcquireStatus::key_capacity);
  clock.advance(1ns);
  CHECK(acquire(storage, d).status == AcquireStatus::allowed);
  CHECK(storage.active_keys() == 3);
  CHECK(storage.usage(d.bucket, d.quota) == 1);
  CHECK(storage.usage(c.bucket, c.quota) == 1);
}

TEST_CASE("a request needing more new buckets than max_keys can never be admitted", "[in_memory]") {
  Storage storage = make_storage(ManualClock{}, 64, 2);
  acquire(storage, Charge{user_bucket("other"), roomy, 1});  // an expiring key must not suggest a finite wait
  const std::array charges{Charge{user_bucket("u", "t1"), roomy, 1}, Charge{user_bucket("u", "t2"), roomy, 1},
                           Charge{user_bucket("u", "t3"), roomy, 1}};
  const AcquireResult result = acquire(storage, charges);
  CHECK(result.status == AcquireStatus::key_capacity);
  CHECK(result.retry_after == std::chrono::milliseconds::max());
  CHECK(storage.active_keys() == 1);  // nothing half-created
  CHECK(storage.usage(charges[0].bucket, roomy) == 0);
}

TEST_CASE("active_keys never exceeds max_keys under a flood of unique keys", "[in_memory]") {
  ManualClock clock;
  const std::size_t max_keys = 50;
  Storage storage = make_storage(clock, 64, max_keys);
  const Quota short_window{1, 100ms};
  int admitted = 0, refused = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::string user = airl::test::id("flood", i);
    const AcquireResult result = acquire(storage, Charge{user_bucket(user), short_window, 1});
    admitted += result.status == AcquireStatus::allowed ? 1 : 0;
    refused += result.status == AcquireStatus::key_capacity ? 1 : 0;
    REQUIRE(storage.active_keys() <= max_keys);
    clock.advance(1ms);  // one new key per ms against 50 keys per 100 ms
  }
  // Every 100 ms the 50 oldest keys expire and 50 new ones get in: half of the flood is admitted.
  CHECK(admitted == 1000);
  CHECK(refused == 1000);
}

TEST_CASE("concurrent floods of unique keys admit exactly max_keys buckets", "[in_memory]") {
  const ManualClock clock;  // never advanced: nothing expires, so exactly max_keys requests get in
  const std::size_t max_keys = 64;
  Storage storage = make_storage(clock, 8, max_keys);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&storage, &admitted, t] {
      for (int i = 0; i < 500; ++i) {
        const std::string user = airl::test::id("t" + std::to_string(t), i);
        if (acquire(storage, Charge{user_bucket(user), roomy, 1}).status == AcquireStatus::allowed) ++admitted;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  CHECK(admitted.load() == static_cast<int>(max_keys));
  CHECK(storage.active_keys() == max_keys);
}

TEST_CASE("a moved storage keeps its buckets and its clock", "[in_memory]") {
  ManualClock clock;
  Storage original = make_storage(clock, 4, 10);
  acquire(original, Charge{user_bucket("a"), Quota{2, 1s}, 1});

  Storage moved(std::move(original));
  CHECK(moved.active_keys() == 1);
  CHECK(moved.options().max_keys == 10);
  CHECK(acquire(moved, Charge{user_bucket("a"), Quota{2, 1s}, 1}).status == AcquireStatus::allowed);
  CHECK(acquire(moved, Charge{user_bucket("a"), Quota{2, 1s}, 1}).status == AcquireStatus::denied);

  Storage assigned = make_storage(ManualClock{});
  assigned = std::move(moved);
  clock.advance(1s);  // the test's clock still drives the moved-to storage
  CHECK(assigned.usage(user_bucket("a"), Quota{2, 1s}) == 0);
  CHECK(assigned.purge_expired() == 1);
  CHECK(assigned.active_keys() == 0);
}

TEST_CASE("charging one bucket twice in one acquire neither exceeds its limit nor miscounts keys", "[in_memory]") {
  // Two charges naming the same bucket (a caller-built charge list). Whether the storage refuses the list,
  // denies it, or charges the bucket once, the bucket must stay within its limit and active_keys must count
  // the buckets actually held; a drifting count would eat into max_keys forever.
  ManualClock clock;
  Storage storage = make_storage(clock);
  const Charge charge{user_bucket("a"), Quota{1, 1s}, 1};
  try {
    acquire(storage, std::array{charge, charge});
  } catch (const std::invalid_argument&) {
    // refusing the list as a caller mistake is fine too
  }
  const std::uint64_t used = storage.usage(charge.bucket, charge.quota);
  CHECK(used <= charge.quota.limit);
  CHECK(storage.active_keys() == (used > 0 ? 1u : 0u));
  clock.advance(1s);
  storage.purge_expired();
  CHECK(storage.active_keys() == 0);
}

TEST_CASE("a flood of one-off keys is reclaimed by traffic on a few keys, without purge_expired", "[in_memory]") {
  // Two hot keys touch at most two shards; the round-robin sweep must still reach the other 62.
  ManualClock clock;
  Storage storage(InMemoryOptions{.shards = 64}, clock);
  const Quota quota{1'000'000, 1s};
  for (int i = 0; i < 5'000; ++i) {
    const std::string user = "flood-" + std::to_string(i);
    const std::array charges = {Charge{BucketRef{Scope::user, "t", user, ""}, quota, 1}};
    REQUIRE(storage.acquire(charges, {}).status == AcquireStatus::allowed);
  }
  REQUIRE(storage.active_keys() == 5'000);
  clock.advance(2s);
  const std::array hot = {Charge{BucketRef{Scope::user, "t", "alice", ""}, quota, 1},
                          Charge{BucketRef{Scope::user, "t", "bob", ""}, quota, 1}};
  std::size_t calls = 0;
  while (storage.active_keys() > 2 && calls < 20'000) {  // bounded: 2 per call per shard visited
    REQUIRE(storage.acquire(hot, {}).status == AcquireStatus::allowed);
    ++calls;
  }
  CHECK(storage.active_keys() == 2);
  CHECK(calls < 5'000);  // amortised: a few expired buckets per call
}

TEST_CASE("a storage refuses charges with a non-positive or too long window and zero costs", "[in_memory][validation]") {
  Storage storage(InMemoryOptions{.shards = 4}, ManualClock());
  for (const auto window : {0ms, -5ms, airl::max_window + 1ms}) {
    const std::array charges = {Charge{BucketRef{Scope::user, "t", "u", ""}, Quota{5, window}, 1}};
    CHECK_THROWS_AS(storage.acquire(charges, {}), std::invalid_argument);
  }
  const std::array zero_cost = {Charge{BucketRef{Scope::user, "t", "u", ""}, Quota{5, 1s}, 0}};
  CHECK_THROWS_AS(storage.acquire(zero_cost, {}), std::invalid_argument);
  CHECK(storage.active_keys() == 0);
  storage.purge_expired();  // still healthy afterwards
  CHECK(storage.active_keys() == 0);
}

TEST_CASE("a moved-from storage reports misuse instead of crashing", "[in_memory]") {
  Storage storage(InMemoryOptions{.shards = 4}, ManualClock());
  Storage taken(std::move(storage));
  const std::array charges = {Charge{BucketRef{Scope::user, "t", "u", ""}, Quota{5, 1s}, 1}};
  CHECK(taken.acquire(charges, {}).status == AcquireStatus::allowed);
  CHECK_THROWS_AS(storage.acquire(charges, {}), std::logic_error);  // NOLINT(bugprone-use-after-move): on purpose
  CHECK_THROWS_AS(storage.purge_expired(), std::logic_error);
  CHECK_THROWS_AS(storage.active_keys(), std::logic_error);  // not a 0 that looks like an empty store
}

namespace {

// A clock whose next reading, once armed, stops right after it read the time until released: it puts a
// thread between "read the clock" and "take the shard's lock", where another call can overtake it.
class GateClock {
 public:
  struct State {
    std::atomic<std::int64_t> now{0};
    std::atomic<bool> armed{false};
    std::atomic<bool> holding{false};
    std::atomic<bool> released{false};
  };

  std::chrono::nanoseconds now() const {
    const std::int64_t time = state_->now.load();
    bool armed = true;
    if (state_->armed.compare_exchange_strong(armed, false)) {
      state_->holding = true;
      const auto give_up = std::chrono::steady_clock::now() + 10s;  // bounded: a broken test fails, never hangs
      while (!state_->released.load() && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
    }
    return std::chrono::nanoseconds{time};
  }
  State& state() const { return *state_; }

 private:
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace

TEST_CASE("a call that read the clock before another call's later time is decided at that later time",
          "[in_memory][time]") {
  // 1 per second. Admitted at 0 s; thread A reads 0.5 s and stops before locking; another call runs at 1.5 s
  // (purging, or reading usage, which expires the 0 s entry); then A decides. If A were decided at 0.5 s with
  // the 0 s entry already gone, it would be admitted and logged at 0.5 s, and one more request at 1.5 s
  // would make three admissions within 1.5 s.
  const bool via_usage = GENERATE(false, true);
  CAPTURE(via_usage);
  GateClock clock;
  airl::InMemoryStorage<GateClock> storage(InMemoryOptions{1, 0}, clock);
  const Charge charge{user_bucket("gate"), Quota{1, 1s}, 1};
  REQUIRE(storage.acquire(std::span(&charge, 1), {}).status == AcquireStatus::allowed);

  clock.state().now = 500'000'000;
  clock.state().armed = true;
  AcquireResult late{};
  std::thread reader([&] { late = storage.acquire(std::span(&charge, 1), {}); });
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (!clock.state().holding.load() && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
  REQUIRE(clock.state().holding.load());

  clock.state().now = 1'500'000'000;
  if (via_usage) {
    CHECK(storage.usage(charge.bucket, charge.quota) == 0);
  } else {
    CHECK(storage.purge_expired() == 1);
  }
  clock.state().released = true;
  reader.join();
  // A was decided at 1.5 s: admitted (the 0 s entry has expired) and logged at 1.5 s, so a request at 1.5 s
  // is denied and waits the whole second.
  CHECK(late.status == AcquireStatus::allowed);
  const AcquireResult next = storage.acquire(std::span(&charge, 1), {});
  CHECK(next.status == AcquireStatus::denied);
  CHECK(next.retry_after == 1000ms);
}

TEST_CASE("buckets with empty and one-byte parts are found again in every scope", "[in_memory]") {
  // The shortest keys (a few bytes) are compared with one 4-byte read of their header: the bucket must
  // still hold them (AddressSanitizer checks the read) and tell them apart.
  const ManualClock clock;
  Storage storage = make_storage(clock);
  const std::vector<BucketRef> buckets = {
      {Scope::global, "", {}, {}},     {Scope::global, "g", {}, {}},    {Scope::user, "", "", {}},
      {Scope::user, "t", "u", {}},     {Scope::model, "", {}, ""},      {Scope::model, "t", {}, "m"},
      {Scope::user_model, "", "", ""}, {Scope::user_model, "t", "u", "m"}, {Scope::user_model, "t", "", "m"},
      {Scope::user_model, "t", "um", ""},
  };
  for (const BucketRef& bucket : buckets) CHECK(acquire(storage, Charge{bucket, Quota{1, 1s}, 1}).status == AcquireStatus::allowed);
  CHECK(storage.active_keys() == buckets.size());
  for (const BucketRef& bucket : buckets) {
    CHECK(acquire(storage, Charge{bucket, Quota{1, 1s}, 1}).status == AcquireStatus::denied);  // found: it is full
    CHECK(storage.usage(bucket, Quota{1, 1s}) == 1);
  }
  CHECK(storage.active_keys() == buckets.size());
}

TEST_CASE("a clock near the end of 64-bit time with a 366-day window admits exactly the limit", "[in_memory]") {
  // The bucket's expiry (newest entry + window) is past INT64_MAX here: it must saturate, not wrap into the
  // past, where the sweep after an admission would drop the bucket and its log with it.
  const std::chrono::nanoseconds start{std::numeric_limits<std::int64_t>::max() - std::int64_t{1'000'000'000}};
  ManualClock clock(start);
  airl::SlidingWindowLimiter<Storage> limiter({2, airl::max_window}, Storage({}, clock));
  REQUIRE(limiter.allow("u", "m"));
  REQUIRE(limiter.allow("u", "m"));
  const airl::Decision third = limiter.allow("u", "m");
  CHECK_FALSE(third.allowed);
  CHECK(third.retry_after == airl::max_window);  // the first entry, admitted at this very time, frees the room
  CHECK(third.reset_after == airl::max_window);
  clock.advance(500ms);  // half a second before the clock's end: still full
  CHECK_FALSE(limiter.allow("u", "m"));
  CHECK(limiter.usage("u", "m") == 2);
  CHECK(limiter.storage().active_keys() == 1);
  CHECK(limiter.purge_expired() == 0);  // nothing has expired: the window runs past the end of time
  CHECK(limiter.usage("u", "m") == 2);
}
