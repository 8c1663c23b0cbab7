// SPDX-License-Identifier: MIT
// Caller mistakes: each throws std::invalid_argument whose message names the offending argument, before
// anything is read or written. Request-time refusals are templated over the test backends (in-memory, and
// Redis when it is built) and check that nothing was recorded; construction-time refusals need no storage
// traffic and use the in-memory store.

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "caps_support.hpp"
#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using airl::Scope;
using airl::Tier;
using airl::test::ManualStorage;

// Matches a std::invalid_argument whose message contains `word`.
class Mentions : public Catch::MatcherBase<std::invalid_argument> {
 public:
  explicit Mentions(std::string word) : word_(std::move(word)) {}
  bool match(const std::invalid_argument& error) const override {
    return std::string_view(error.what()).find(word_) != std::string_view::npos;
  }
  std::string describe() const override { return "mentions \"" + word_ + "\""; }

 private:
  std::string word_;
};

#define REQUIRE_REFUSED(expression, word) REQUIRE_THROWS_MATCHES(expression, std::invalid_argument, Mentions(word))

template <class Backend>
airl::SlidingWindowLimiter<typename Backend::Storage> make_limiter(Backend& backend, airl::Quota quota) {
  return airl::SlidingWindowLimiter<typename Backend::Storage>(quota, backend.make_storage());
}

// What a refused call must leave untouched.
struct Snapshot {
  std::uint64_t usage, allowed, denied;
  bool operator==(const Snapshot&) const = default;
};

template <class Limiter>
Snapshot snapshot(Limiter& limiter, std::string_view user, std::string_view model) {
  const airl::Metrics metrics = limiter.metrics();
  return {limiter.usage(user, model), metrics.allowed, metrics.denied};
}

// A string of exactly `size` bytes starting with `prefix` (names stay unique per case).
std::string sized(const std::string& prefix, std::size_t size) {
  std::string text = prefix;
  text.resize(size, 'x');
  return text;
}

}  // namespace

namespace Catch {
template <>
struct StringMaker<Snapshot> {
  static std::string convert(const Snapshot& s) {
    return "{usage " + std::to_string(s.usage) + ", allowed " + std::to_string(s.allowed) + ", denied " +
           std::to_string(s.denied) + "}";
  }
};
}  // namespace Catch

// ---------------------------------------------------------------------------------------------------------------
// Request arguments.

TEMPLATE_LIST_TEST_CASE("an empty user or model is refused and nothing is recorded",
                        "[validation]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {5, 1000ms});
  const std::string user = "val-empty-user";
  const std::string model = "val-empty-model";
  REQUIRE(limiter.allow(user, model).allowed);
  const Snapshot before = snapshot(limiter, user, model);

  REQUIRE_REFUSED(limiter.allow("", model), "user");
  REQUIRE_REFUSED(limiter.allow(user, ""), "model");
  REQUIRE_REFUSED(limiter.allow(airl::Request{"", model, 1, "val-empty-id"}), "user");
  REQUIRE_REFUSED(limiter.allow(airl::Request{user, "", 3}), "model");
  REQUIRE_REFUSED(limiter.usage("", model), "user");
  REQUIRE_REFUSED(limiter.usage(user, ""), "model");
  REQUIRE_REFUSED(limiter.reset(""), "user");
  REQUIRE_REFUSED(limiter.reset("", model), "user");
  REQUIRE_REFUSED(limiter.reset(user, ""), "model");

  CHECK(snapshot(limiter, user, model) == before);  // the resets above did not clear anything either
}

TEMPLATE_LIST_TEST_CASE("a cost of 0 is refused and nothing is recorded", "[validation]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {5, 1000ms});
  const std::string user = "val-cost-user";
  const std::string model = "val-cost-model";
  REQUIRE(limiter.allow(user, model).allowed);
  const Snapshot before = snapshot(limiter, user, model);

  REQUIRE_REFUSED(limiter.allow(airl::Request{user, model, 0}), "cost");
  REQUIRE_REFUSED(limiter.allow(airl::Request{user, model, 0, "val-cost-id"}), "cost");

  CHECK(snapshot(limiter, user, model) == before);
  // The refused id was not remembered either: it is charged as new.
  const airl::Decision with_id = limiter.allow(airl::Request{user, model, 1, "val-cost-id"});
  CHECK(with_id.allowed);
  CHECK_FALSE(with_id.replayed);
}

TEMPLATE_LIST_TEST_CASE("ids of 1 KiB and of max_id_length work, longer ones and 1 MiB are refused",
                        "[validation]", airl::test::Backends) {
  TestType backend;
  auto limiter = make_limiter(backend, {10, 1000ms});

  const std::string kib_user = sized("val-len-kib-user-", 1024);
  const std::string kib_model = sized("val-len-kib-model-", 1024);
  const std::string kib_id = sized("val-len-kib-id-", 1024);
  CHECK(limiter.allow(airl::Request{kib_user, kib_model, 1, kib_id}).allowed);
  CHECK(limiter.allow(airl::Request{kib_user, kib_model, 1, kib_id}).replayed);
  CHECK(limiter.usage(kib_user, kib_model) == 1);

  const std::string max_user = sized("val-len-max-user-", airl::max_id_length);
  const std::string max_model = sized("val-len-max-model-", airl::max_id_length);
  const std::string max_id = sized("val-len-max-id-", airl::max_id_length);
  CHECK(limiter.allow(airl::Request{max_user, max_model, 1, max_id}).allowed);
  CHECK(limiter.usage(max_user, max_model) == 1);
  limiter.reset(max_user, max_model);
  CHECK(limiter.usage(max_user, max_model) == 0);

  const Snapshot before = snapshot(limiter, kib_user, kib_model);
  for (const std::size_t size : {airl::max_id_length + 1, std::size_t{1} << 20}) {
    INFO("id size " << size);
    const std::string long_user = sized("val-len-long-user-", size);
    const std::string long_model = sized("val-len-long-model-", size);
    const std::string long_id = sized("val-len-long-id-", size);
    REQUIRE_REFUSED(limiter.allow(long_user, kib_model), "user");
    REQUIRE_REFUSED(limiter.allow(kib_user, long_model), "model");
    REQUIRE_REFUSED(limiter.allow(airl::Request{kib_user, kib_model, 1, long_id}), "request_id");
    REQUIRE_REFUSED(limiter.usage(long_user, kib_model), "user");
    REQUIRE_REFUSED(limiter.reset(long_user), "user");
    REQUIRE_REFUSED(limiter.reset(kib_user, long_model), "model");
  }
  CHECK(snapshot(limiter, kib_user, kib_model) == before);
}

// ---------------------------------------------------------------------------------------------------------------
// Quotas and tiers: refused at construction.

TEST_CASE("a window <= 0 or above max_window is refused, max_window itself works", "[validation]") {
  airl::ManualClock clock;
  const auto storage = [&] { return ManualStorage({}, clock); };
  using Limiter = airl::SlidingWindowLimiter<ManualStorage>;
  using MultiLimiter = airl::MultiTierLimiter<ManualStorage>;

  REQUIRE_REFUSED(Limiter({5, 0ms}, storage()), "window");
  REQUIRE_REFUSED(Limiter({5, -1ms}, storage()), "window");
  REQUIRE_REFUSED(Limiter({5, std::chrono::milliseconds::min()}, storage()), "window");
  REQUIRE_REFUSED(Limiter({5, airl::max_window + 1ms}, storage()), "window");
  REQUIRE_REFUSED(Limiter({5, std::chrono::milliseconds::max()}, storage()), "window");

  // In a tier list the message names the tier too.
  REQUIRE_REFUSED(MultiLimiter({Tier{"val-ok", Scope::user, {5, 1000ms}}, Tier{"val-bad", Scope::model, {5, 0ms}}},
                               storage()),
                  "val-bad");
  REQUIRE_REFUSED(MultiLimiter({Tier{"val-huge", Scope::global, {5, airl::max_window + 1ms}}}, storage()), "window");

  // The extremes that are allowed do work: max_window keeps an entry for the whole window.
  Limiter longest({1, airl::max_window}, storage());
  REQUIRE(longest.allow("val-window-user", "val-window-model").allowed);
  clock.advance(airl::max_window - 1ms);
  const airl::Decision denied = longest.allow("val-window-user", "val-window-model");
  CHECK_FALSE(denied.allowed);
  CHECK(denied.retry_after == 1ms);
  clock.advance(1ms);
  CHECK(longest.allow("val-window-user", "val-window-model").allowed);

  Limiter shortest({1, 1ms}, storage());
  CHECK(shortest.allow("val-window-user", "val-window-model").allowed);
}

TEST_CASE("a tier list must be non-empty with unique, valid, unreserved names", "[validation]") {
  airl::ManualClock clock;
  using MultiLimiter = airl::MultiTierLimiter<ManualStorage>;
  const auto make = [&](std::vector<Tier> tiers) { return MultiLimiter(std::move(tiers), ManualStorage({}, clock)); };
  const airl::Quota quota{5, 1000ms};

  SECTION("empty list") { REQUIRE_REFUSED(make({}), "tier"); }
  SECTION("empty name") { REQUIRE_REFUSED(make({Tier{"", Scope::user, quota}}), "tier name"); }
  SECTION("over-long name") {
    REQUIRE_REFUSED(make({Tier{sized("val-tier-", airl::max_id_length + 1), Scope::user, quota}}), "tier name");
  }
  SECTION("duplicate name, even on another scope") {
    REQUIRE_REFUSED(make({Tier{"val-dup", Scope::user, quota}, Tier{"val-other", Scope::model, quota},
                          Tier{"val-dup", Scope::global, quota}}),
                    "val-dup");
    REQUIRE_REFUSED(make({Tier{"val-dup", Scope::user, quota}, Tier{"val-dup", Scope::user, quota}}), "duplicate");
  }
  SECTION("the reserved name key_capacity") {
    REQUIRE_REFUSED(make({Tier{std::string(airl::key_capacity_reason), Scope::user, quota}}), "key_capacity");
    REQUIRE_REFUSED(make({Tier{"val-fine", Scope::user, quota}, Tier{"key_capacity", Scope::global, quota}}),
                    "reserved");
  }
  SECTION("an unknown scope") {
    REQUIRE_REFUSED(make({Tier{"val-scope", static_cast<Scope>(42), quota}}), "scope");
  }
  SECTION("names that are only similar are fine") {
    auto limiter = make({Tier{"val-sim", Scope::user, quota}, Tier{"val-sim ", Scope::user, quota},
                         Tier{"key_capacity2", Scope::user, quota}, Tier{sized("val-sim-long-", airl::max_id_length),
                                                                         Scope::user, quota}});
    CHECK(limiter.allow("val-sim-user", "val-sim-model").allowed);
    CHECK(limiter.tiers().size() == 4);
  }
}

TEMPLATE_LIST_TEST_CASE("usage() of an unknown tier is refused and nothing is recorded",
                        "[validation]", airl::test::Backends) {
  TestType backend;
  airl::MultiTierLimiter<typename TestType::Storage> limiter(
      {Tier{"val-usage-rpm", Scope::user, {5, 1000ms}}, Tier{"val-usage-tpm", Scope::user_model, {5, 1000ms}}},
      backend.make_storage());
  REQUIRE(limiter.allow("val-usage-user", "val-usage-model").allowed);

  REQUIRE_REFUSED(limiter.usage("val-usage-nope", "val-usage-user", "val-usage-model"), "val-usage-nope");
  REQUIRE_REFUSED(limiter.usage("default", "val-usage-user", "val-usage-model"), "default");  // not a tier here
  REQUIRE_REFUSED(limiter.usage("", "val-usage-user", "val-usage-model"), "tier");
  REQUIRE_REFUSED(limiter.usage("val-usage-rpm", "", "val-usage-model"), "user");

  CHECK(limiter.usage("val-usage-rpm", "val-usage-user", "val-usage-model") == 1);
  CHECK(limiter.usage("val-usage-tpm", "val-usage-user", "val-usage-model") == 1);
  CHECK(limiter.metrics().total() == 1);
}

// InMemoryOptions belong to the in-memory store.
TEST_CASE("InMemoryOptions::shards must be a power of two", "[validation][in_memory]") {
  for (const std::size_t shards : {std::size_t{0}, std::size_t{3}, std::size_t{6}, std::size_t{100}}) {
    INFO("shards " << shards);
    REQUIRE_REFUSED(ManualStorage(airl::InMemoryOptions{.shards = shards}), "shards");
  }
  for (const std::size_t shards : {std::size_t{1}, std::size_t{2}, std::size_t{64}, std::size_t{1024}}) {
    INFO("shards " << shards);
    airl::SlidingWindowLimiter<ManualStorage> limiter({2, 1000ms},
                                                      ManualStorage(airl::InMemoryOptions{.shards = shards}));
    CHECK(limiter.allow("val-shards-user", "val-shards-model").allowed);
    CHECK(limiter.usage("val-shards-user", "val-shards-model") == 1);
  }
}

// One rule on every backend for counts no storage decides exactly (docs/DESIGN.md, "Counts above 2^53"): a
// limit above 2^53 is refused when the limiter is built, as set_quota refuses it; a cost above 2^53 exceeds
// every limit, so it is a 'never' denial, as any cost above its limit. Before, the Redis limiter accepted the
// limit and then threw on every allow(), and it threw std::invalid_argument for such a cost where the
// in-memory limiter denied it.
TEMPLATE_LIST_TEST_CASE("a limit above 2^53 is refused at construction, a cost above 2^53 is denied for good",
                        "[validation]", airl::test::Backends) {
  constexpr std::uint64_t two_to_53 = std::uint64_t{1} << 53;
  using Storage = typename TestType::Storage;
  TestType backend;
  for (const std::uint64_t too_big : {two_to_53 + 1, std::numeric_limits<std::uint64_t>::max()}) {
    REQUIRE_REFUSED(airl::SlidingWindowLimiter<Storage>(airl::Quota{too_big, 10s}, backend.make_storage()), "2^53");
    REQUIRE_REFUSED(airl::MultiTierLimiter<Storage>({{"ok", Scope::user, {10, 10s}}, {"huge", Scope::global, {too_big, 10s}}},
                                                    backend.make_storage()),
                    "huge");
    // A storage driven directly refuses it too, before storing anything.
    Storage storage = backend.make_storage();
    const airl::Charge charge{airl::BucketRef{Scope::user, "t", "val-53-user", {}}, airl::Quota{too_big, 10s}, 1};
    REQUIRE_REFUSED(storage.acquire(std::span(&charge, 1), {}), "2^53");
  }

  airl::MultiTierLimiter<Storage> limiter({{"tpm", Scope::user, {two_to_53, 10s}},
                                           {"rpm", Scope::user, {10, 10s}, airl::Unit::requests}},
                                          backend.make_storage());
  for (const std::uint64_t cost : {two_to_53 + 1, std::numeric_limits<std::uint64_t>::max()}) {
    for (const std::string request_id : {"", "val-53-id"}) {
      const airl::Decision decision = limiter.allow(airl::Request{"val-53-user", "m", cost, request_id});
      CHECK_FALSE(decision.allowed);
      CHECK_FALSE(decision.degraded);
      CHECK(decision.reason == "tpm");
      CHECK(decision.retry_after == airl::Decision::never);
      CHECK(decision.remaining == two_to_53);
    }
  }
  CHECK(limiter.usage("rpm", "val-53-user", "m") == 0);  // nothing recorded, in the requests tier either
  const airl::Decision top = limiter.allow(airl::Request{"val-53-user", "m", two_to_53});  // 2^53 itself fits
  CHECK(top.allowed);
  CHECK(top.remaining == 0);
  CHECK(limiter.usage("tpm", "val-53-user", "m") == two_to_53);
  CHECK(limiter.metrics().backend_errors == 0);
}

// A storage driven directly (without a limiter) checks the scope and the length of each part itself, since
// an unknown scope could not be decoded again when the bucket is purged or erased.
TEST_CASE("a storage refuses an unknown scope and over-long parts before storing anything", "[validation][in_memory]") {
  airl::ManualClock clock;
  ManualStorage storage(airl::InMemoryOptions{}, clock);
  const airl::Quota quota{5, 1000ms};
  const auto bogus = static_cast<airl::Scope>(7);
  const airl::Charge unknown{airl::BucketRef{bogus, "rpm", "alice", "m"}, quota, 1};
  REQUIRE_REFUSED(storage.acquire(std::span(&unknown, 1), {}), "scope");
  REQUIRE_REFUSED(storage.usage(unknown.bucket, quota), "scope");
  REQUIRE_REFUSED(storage.erase(std::span(&unknown.bucket, 1)), "scope");
  const std::string huge(70'000, 'u');
  const airl::Charge too_long{airl::BucketRef{airl::Scope::user, "rpm", huge, {}}, quota, 1};
  REQUIRE_REFUSED(storage.acquire(std::span(&too_long, 1), {}), "65535");
  CHECK(storage.active_keys() == 0);
  // The store still works, and purging (which decodes every stored key) finds nothing malformed.
  const airl::Charge fine{airl::BucketRef{airl::Scope::user, "rpm", "alice", {}}, quota, 1};
  CHECK(storage.acquire(std::span(&fine, 1), {}).status == airl::AcquireStatus::allowed);
  clock.advance(1000ms);
  CHECK(storage.purge_expired() == 1);
  CHECK(storage.active_keys() == 0);
}

TEST_CASE("storage-level usage() refuses a bad window, and the Redis storage refuses unknown scopes before any I/O",
          "[validation]") {
  airl::ManualClock clock;
  ManualStorage storage(airl::InMemoryOptions{}, clock);
  const airl::BucketRef bucket{airl::Scope::user, "rpm", "alice", {}};
  REQUIRE_REFUSED(storage.usage(bucket, airl::Quota{5, 0ms}), "window");
  REQUIRE_REFUSED(storage.usage(bucket, airl::Quota{5, airl::max_window + 1ms}), "window");

#if AIRL_TEST_WITH_REDIS  // the Redis storage's refusals, where it is built
  // Port 1 on loopback has no server: a refusal here can only come from validation, never from Redis.
  airl::RedisOptions options;
  options.host = "127.0.0.1";
  options.port = 1;
  airl::RedisStorage redis(options);
  const airl::BucketRef unknown{static_cast<airl::Scope>(7), "rpm", "alice", "m"};
  const airl::Charge charge{unknown, airl::Quota{5, 1000ms}, 1};
  REQUIRE_REFUSED(redis.acquire(std::span(&charge, 1), {}), "scope");
  REQUIRE_REFUSED(redis.usage(unknown, airl::Quota{5, 1000ms}), "scope");
  REQUIRE_REFUSED(redis.erase(std::span(&unknown, 1)), "scope");
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// Messages that repeat a caller's value repeat at most its first 64 bytes, escaped (detail/echo.hpp).

namespace {

// A caller's value of `size` bytes that opens with a terminal escape sequence, which no message may carry raw.
std::string hostile(std::size_t size) { return sized("\x1b[2J", size); }

// `call` must throw std::invalid_argument with a short message without raw control bytes; when the message
// repeats `value` (echoed), it shows its first 64 bytes escaped and then its size.
template <class Call>
void require_bounded_refusal(const char* what, Call&& call, const std::string& value, bool echoed) {
  INFO(what);
  std::string message = "(no exception)";
  try {
    call();
  } catch (const std::invalid_argument& error) {
    message = error.what();
  }
  CHECK(message != "(no exception)");
  CHECK(message.size() <= 200);
  CHECK(message.find('\x1b') == std::string::npos);
  if (echoed) {
    CHECK_THAT(message, Catch::Contains("\\x1b[2J" + std::string(60, 'x') + "...(" + std::to_string(value.size()) +
                                        " bytes)"));
  }
}

}  // namespace

TEST_CASE("refusals repeat at most 64 bytes of a caller's value, escaped, and say how long it was",
          "[validation]") {
  const std::string mib = hostile(std::size_t{1} << 20);
  const std::string longest = hostile(airl::max_id_length);  // the longest name a limiter accepts
  airl::MultiTierLimiter<ManualStorage> limiter({{"t", Scope::user_model, {5, 1s}}}, ManualStorage());
  require_bounded_refusal("unknown plan, no rule set", [&] { (void)limiter.allow({.user = "u", .model = "m", .plan = mib}); },
                          mib, true);
  require_bounded_refusal("user", [&] { (void)limiter.allow(mib, "m"); }, mib, false);
  require_bounded_refusal("model", [&] { (void)limiter.allow("u", mib); }, mib, false);
  require_bounded_refusal("request id", [&] { (void)limiter.allow({.user = "u", .model = "m", .request_id = mib}); }, mib,
                          false);
  require_bounded_refusal("usage of an unknown tier", [&] { (void)limiter.usage(mib, "u", "m"); }, mib, true);
  require_bounded_refusal("set_quota of an unknown tier", [&] { limiter.set_quota(mib, {1, 1s}); }, mib, true);
  require_bounded_refusal("plan naming an unknown tier", [&] { limiter.set_plan("p", {{mib, 1}}); }, mib, true);
  require_bounded_refusal("override of an unknown tier", [&] { limiter.set_override({mib, "u"}, 1); }, mib, true);
  limiter.set_plan("known", {{"t", 1}});  // rules exist now: the plan is looked up in the rule book
  require_bounded_refusal("unknown plan, rules set", [&] { (void)limiter.allow({.user = "u", .model = "m", .plan = mib}); },
                          mib, true);
  require_bounded_refusal("duplicate tier name",
                          [&] {
                            airl::MultiTierLimiter<ManualStorage>({{longest, Scope::user, {1, 1s}}, {longest, Scope::model, {1, 1s}}},
                                                                  ManualStorage());
                          },
                          longest, true);

  airl::ConcurrencyLimiter<airl::test::ManualConcurrencyStorage> caps({{"c", Scope::user, 1, 60s}},
                                                                      airl::test::ManualConcurrencyStorage());
  require_bounded_refusal("in_flight of an unknown cap", [&] { (void)caps.in_flight(mib, "u", "m"); }, mib, true);
  require_bounded_refusal("duplicate cap name",
                          [&] {
                            airl::ConcurrencyLimiter<airl::test::ManualConcurrencyStorage>(
                                {{longest, Scope::user, 1, 60s}, {longest, Scope::model, 1, 60s}},
                                airl::test::ManualConcurrencyStorage());
                          },
                          longest, true);

#if AIRL_TEST_WITH_REDIS  // the Redis backend's refusals, before any I/O
  require_bounded_refusal("Redis address", [&] { (void)airl::redis_options_from_address(mib + ":x"); }, mib + ":x", true);
  airl::RedisOptions cluster;
  cluster.cluster_nodes = {mib};
  require_bounded_refusal("cluster node", [&] { airl::RedisStorage storage(cluster); }, mib, true);
  require_bounded_refusal("Redis cap above 2^53",
                          [&] {
                            airl::ConcurrencyLimiter<airl::RedisConcurrencyStorage>(
                                {{longest, Scope::user, (std::uint64_t{1} << 53) + 1, 60s}}, airl::RedisConcurrencyStorage());
                          },
                          longest, true);
#endif
}
