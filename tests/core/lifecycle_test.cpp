// SPDX-License-Identifier: MIT
// Object lifecycle: limiters move with their buckets and counters, and a moved-from limiter or storage reports
// misuse (std::logic_error naming the class and the member, from every public member) instead of crashing,
// deciding with no tiers or answering zeros.
#include <catch2/catch.hpp>

#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include "caps_support.hpp"
#include "moved_from.hpp"
#include "support.hpp"

using namespace airl::test;

TEST_CASE("a moved limiter keeps its buckets and counters", "[lifecycle]") {
  airl::ManualClock clock;
  airl::SlidingWindowLimiter<ManualStorage> limiter({2, 1s}, ManualStorage({}, clock));
  REQUIRE(limiter.allow("u", "m"));
  airl::SlidingWindowLimiter<ManualStorage> moved(std::move(limiter));
  CHECK(moved.usage("u", "m") == 1);
  CHECK(moved.metrics().allowed == 1);
  REQUIRE(moved.allow("u", "m"));
  const airl::Decision denied = moved.allow("u", "m");
  CHECK_FALSE(denied.allowed);
  CHECK(denied.reason == "default");  // the tier names moved along with the tiers

  airl::SlidingWindowLimiter<ManualStorage> assigned({1, 1s}, ManualStorage({}, clock));
  assigned = std::move(moved);
  CHECK(assigned.allow("u", "m").reason == "default");
}

TEST_CASE("a moved-from limiter refuses to decide and to report metrics, the moved-to one has them", "[lifecycle]") {
  airl::MultiTierLimiter<ManualStorage> limiter({{"t", airl::Scope::user, {2, 1s}}}, ManualStorage());
  REQUIRE(limiter.allow("u", "m"));
  auto moved = std::move(limiter);
  CHECK_THROWS_AS(limiter.allow("u", "m"), std::logic_error);  // NOLINT(bugprone-use-after-move): on purpose
  CHECK_THROWS_AS(limiter.metrics(), std::logic_error);  // not zeros that look like an idle limiter
  CHECK(moved.metrics().allowed == 1);
}

// ---------------------------------------------------------------------------------------------------------------
// A moved-from limiter or storage: every public member throws std::logic_error naming the class and the
// member (one row per member below), while destroying it and assigning to it still work.

template <class Limiter>
std::vector<MemberCall<Limiter>> rate_limiter_members(const airl::Request& request) {
  return {
      {"allow", [](Limiter& l) { (void)l.allow("u", "m"); }},
      {"allow", [&request](Limiter& l) { (void)l.allow(request); }},
      {"allow_many", [&request](Limiter& l) { (void)l.allow_many(std::span(&request, 1)); }},
      {"settle", [](Limiter& l) { (void)l.settle("u", "m", "id", 1); }},
      {"refund", [](Limiter& l) { (void)l.refund("u", "m", "id"); }},
      {"reset", [](Limiter& l) { l.reset("u"); }},
      {"reset", [](Limiter& l) { l.reset("u", "m"); }},
      {"purge_expired", [](Limiter& l) { (void)l.purge_expired(); }},
      {"metrics", [](Limiter& l) { (void)std::as_const(l).metrics(); }},
      {"tiers", [](Limiter& l) { (void)std::as_const(l).tiers(); }},
      {"options", [](Limiter& l) { (void)std::as_const(l).options(); }},
      {"storage", [](Limiter& l) { (void)l.storage(); }},
      {"storage", [](Limiter& l) { (void)std::as_const(l).storage(); }},
  };
}

TEMPLATE_LIST_TEST_CASE("every member of a moved-from SlidingWindowLimiter throws std::logic_error", "[lifecycle]",
                        Backends) {
  using Limiter = airl::SlidingWindowLimiter<typename TestType::Storage>;
  TestType backend;
  Limiter limiter({2, 1s}, backend.make_storage());
  Limiter taken(std::move(limiter));
  const airl::Request request{"u", "m", 1, "id"};
  std::vector<MemberCall<Limiter>> members = rate_limiter_members<Limiter>(request);
  members.push_back({"usage", [](Limiter& l) { (void)l.usage("u", "m"); }});
  members.push_back({"quota", [](Limiter& l) { (void)std::as_const(l).quota(); }});
  require_refused_when_moved_from(limiter, "airl::SlidingWindowLimiter", members);  // NOLINT(bugprone-use-after-move)

  limiter = std::move(taken);  // assigning a live one makes it usable again
  CHECK(limiter.allow("u", "m"));
  CHECK(limiter.quota().limit == 2);
  taken = Limiter({1, 1s}, backend.make_storage());  // and onto a moved-from one, too
  CHECK(taken.allow("v", "m"));
}

TEMPLATE_LIST_TEST_CASE("every member of a moved-from MultiTierLimiter throws std::logic_error", "[lifecycle]",
                        Backends) {
  using Limiter = airl::MultiTierLimiter<typename TestType::Storage>;
  TestType backend;
  Limiter limiter({{"t", airl::Scope::user_model, {2, 1s}}}, backend.make_storage());
  Limiter taken(std::move(limiter));
  const airl::Request request{"u", "m", 1, "id"};
  const airl::LimitTarget target{"t", "u"};
  std::vector<MemberCall<Limiter>> members = rate_limiter_members<Limiter>(request);
  members.insert(members.end(), {
      {"usage", [](Limiter& l) { (void)l.usage("t", "u", "m"); }},
      {"set_quota", [](Limiter& l) { l.set_quota("t", {1, 1s}); }},
      {"set_plan", [](Limiter& l) { l.set_plan("p", {{"t", 1}}); }},
      {"remove_plan", [](Limiter& l) { (void)l.remove_plan("p"); }},
      {"set_plan_resolver", [](Limiter& l) { l.set_plan_resolver({}); }},
      {"set_override", [&target](Limiter& l) { l.set_override(target, 1); }},
      {"clear_override", [&target](Limiter& l) { (void)l.clear_override(target); }},
      {"tiers_for", [](Limiter& l) { (void)std::as_const(l).tiers_for("u", "m"); }},
  });
  require_refused_when_moved_from(limiter, "airl::MultiTierLimiter", members);  // NOLINT(bugprone-use-after-move)

  limiter = std::move(taken);
  CHECK(limiter.allow("u", "m"));
  taken = Limiter({{"t", airl::Scope::user_model, {1, 1s}}}, backend.make_storage());
  CHECK(taken.allow("v", "m"));
}

TEMPLATE_LIST_TEST_CASE("every member of a moved-from ConcurrencyLimiter throws std::logic_error", "[lifecycle]",
                        CapsBackends) {
  using Limiter = LimiterOn<TestType>;
  TestType backend;
  Limiter limiter({{"c", airl::Scope::user, 1, 60s}}, backend.make_storage());
  Limiter taken(std::move(limiter));
  require_refused_when_moved_from<Limiter>(limiter, "airl::ConcurrencyLimiter",  // NOLINT(bugprone-use-after-move)
                                           {
                                               {"try_acquire", [](Limiter& l) { (void)l.try_acquire("u", "m"); }},
                                               {"in_flight", [](Limiter& l) { (void)l.in_flight("c", "u", "m"); }},
                                               {"purge_expired", [](Limiter& l) { (void)l.purge_expired(); }},
                                               {"metrics", [](Limiter& l) { (void)std::as_const(l).metrics(); }},
                                               {"caps", [](Limiter& l) { (void)std::as_const(l).caps(); }},
                                               {"storage", [](Limiter& l) { (void)l.storage(); }},
                                               {"storage", [](Limiter& l) { (void)std::as_const(l).storage(); }},
                                           });
  limiter = std::move(taken);
  airl::Permit permit = limiter.try_acquire("u", "m");
  CHECK(permit);
  taken = Limiter({{"c", airl::Scope::user, 1, 60s}}, backend.make_storage());
  CHECK(taken.metrics().acquired == 0);
}

TEST_CASE("every member of a moved-from InMemoryStorage throws std::logic_error", "[lifecycle]") {
  using Storage = ManualStorage;
  airl::ManualClock clock;
  Storage storage({}, clock);
  Storage taken(std::move(storage));
  static const airl::Charge charge{airl::BucketRef{airl::Scope::user, "t", "u", ""}, airl::Quota{2, 1s}, 1};
  require_refused_when_moved_from<Storage>(storage, "airl::InMemoryStorage",  // NOLINT(bugprone-use-after-move)
      {
          {"acquire", [](Storage& s) { (void)s.acquire(std::span<const airl::Charge>(&charge, 1), {}); }},
          {"acquire", [](Storage& s) { (void)s.acquire(std::span<const airl::Charge, 1>(&charge, 1), {}); }},
          {"settle", [](Storage& s) { (void)s.settle(std::span(&charge, 1), "id"); }},
          {"refund", [](Storage& s) { (void)s.refund(std::span(&charge, 1), "id"); }},
          {"usage", [](Storage& s) { (void)s.usage(charge.bucket, charge.quota); }},
          {"erase", [](Storage& s) { s.erase(std::span(&charge.bucket, 1)); }},
          {"erase_user", [](Storage& s) { s.erase_user("u"); }},
          {"purge_expired", [](Storage& s) { (void)s.purge_expired(); }},
          {"active_keys", [](Storage& s) { (void)std::as_const(s).active_keys(); }},
          {"options", [](Storage& s) { (void)std::as_const(s).options(); }},
          {"clock", [](Storage& s) { (void)std::as_const(s).clock(); }},
      });
  storage = std::move(taken);
  CHECK(storage.acquire(std::span(&charge, 1), {}).status == airl::Status::allowed);
  taken = Storage({}, clock);
  CHECK(taken.active_keys() == 0);
}

TEST_CASE("every member of a moved-from InMemoryConcurrencyStorage throws std::logic_error", "[lifecycle]") {
  using Storage = ManualConcurrencyStorage;
  airl::ManualClock clock;
  Storage storage({}, clock);
  Storage taken(std::move(storage));
  static const airl::ConcurrencySlot slot{airl::BucketRef{airl::Scope::user, "c", "u", ""}, 1, 60s};
  static const airl::PermitId id{1, 2};
  require_refused_when_moved_from<Storage>(storage, "airl::InMemoryConcurrencyStorage",  // NOLINT(bugprone-use-after-move)
      {
          {"try_acquire", [](Storage& s) { (void)s.try_acquire(std::span(&slot, 1), id); }},
          {"release", [](Storage& s) { s.release(std::span(&slot, 1), id); }},
          {"renew", [](Storage& s) { (void)s.renew(std::span(&slot, 1), id); }},
          {"in_flight", [](Storage& s) { (void)s.in_flight(slot); }},
          {"purge_expired", [](Storage& s) { (void)s.purge_expired(); }},
          {"active_keys", [](Storage& s) { (void)std::as_const(s).active_keys(); }},
      });
  storage = std::move(taken);
  CHECK(storage.try_acquire(std::span(&slot, 1), id).acquired);
  taken = Storage({}, clock);
  CHECK(taken.active_keys() == 0);
}
