// SPDX-License-Identifier: MIT
// <airl/http.hpp>: the exact header and body strings a serving binary sends. The text forms are checked
// directly (Structured Field strings, JSON strings, durations); the headers of real decisions are checked
// exactly on the in-memory backend (time moves only when told), and on every test backend for which tier a
// decision binds (the Redis script reports it too). A degraded decision carries no counters (checked on
// hand-made decisions here, and on one degraded by an unreachable Redis in tests/redis/redis_http_test.cpp).

#include <catch2/catch.hpp>

#include <airl/concurrency_limiter.hpp>
#include <airl/http.hpp>
#include <airl/in_memory_concurrency_storage.hpp>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "http_support.hpp"
#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using airl::Scope;
using airl::Tier;
using airl::Unit;
using airl::http::Header;
using airl::test::header;
using airl::test::rpm_and_tpm;

std::string sf_string(std::string_view text) {
  std::string out;
  airl::detail::append_sf_string(out, text);
  return out;
}

std::string json_string(std::string_view text) {
  std::string out;
  airl::detail::append_json_string(out, text);
  return out;
}

constexpr std::string_view both_policies = R"("rpm";q=3;w=60;qu="requests", "tpm";q=1000;w=90;qu="airl-tokens")";

std::string repeated(std::string_view text, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += text;
  return out;
}

// The exact 429 body for a quota denial (written out in full once, here).
std::string quota_exceeded_body(int retry_after, const std::string& policy) {
  return R"({"type":"https://iana.org/assignments/http-problem-types#quota-exceeded",)"
         R"("title":"Request cannot be satisfied as assigned quota has been exceeded","status":429,)"
         R"("retry-after":)" + std::to_string(retry_after) + R"(,"violated-policies":[")" + policy + R"("]})";
}

}  // namespace

TEST_CASE("durations are written as OpenAI's reset headers write them", "[http]") {
  using airl::detail::duration_text;
  CHECK(duration_text(0ms) == "0s");
  CHECK(duration_text(-5ms) == "0s");
  CHECK(duration_text(1ms) == "1ms");
  CHECK(duration_text(999ms) == "999ms");
  CHECK(duration_text(1000ms) == "1s");
  CHECK(duration_text(1001ms) == "1.001s");
  CHECK(duration_text(1250ms) == "1.25s");
  CHECK(duration_text(1500ms) == "1.5s");
  CHECK(duration_text(59'999ms) == "59.999s");
  CHECK(duration_text(60'000ms) == "1m0s");
  CHECK(duration_text(360'000ms) == "6m0s");
  CHECK(duration_text(3'600'000ms) == "1h0m0s");
  CHECK(duration_text(3'723'040ms) == "1h2m3.04s");
  CHECK(duration_text(std::chrono::hours(24 * 366)) == "8784h0m0s");
}

TEST_CASE("seconds are rounded up, so a client that waits them is never early", "[http]") {
  using airl::detail::ceil_seconds;
  CHECK(ceil_seconds(0ms) == 0);
  CHECK(ceil_seconds(-1ms) == 0);
  CHECK(ceil_seconds(1ms) == 1);
  CHECK(ceil_seconds(1000ms) == 1);
  CHECK(ceil_seconds(1001ms) == 2);
  CHECK(ceil_seconds(60'000ms) == 60);
}

TEST_CASE("Structured Field strings escape quotes and backslashes and %-encode what sf-string cannot hold",
          "[http]") {
  CHECK(sf_string("tpm") == R"("tpm")");
  CHECK(sf_string("") == R"("")");
  CHECK(sf_string(R"(a"b)") == R"("a\"b")");
  CHECK(sf_string(R"(a\b)") == R"("a\\b")");
  CHECK(sf_string("100%") == R"("100%25")");  // '%' itself is encoded, so "%25" cannot be confused with '%'
  CHECK(sf_string("caf\xC3\xA9") == R"("caf%c3%a9")");
  CHECK(sf_string(std::string_view("a\nb\0c\x7F", 6)) == R"("a%0ab%00c%7f")");
  CHECK(sf_string(" ~") == R"(" ~")");  // the printable ASCII bounds pass through
  std::string integer;
  airl::detail::append_sf_integer(integer, 1'000'000'000'000'000'000ull);
  CHECK(integer == "999999999999999");  // sf-integer holds at most 15 digits
}

TEST_CASE("JSON strings escape what JSON requires and keep the output valid UTF-8", "[http]") {
  CHECK(json_string("rpm") == R"("rpm")");
  CHECK(json_string(R"(a"b\c)") == R"("a\"b\\c")");
  CHECK(json_string(std::string_view("a\nb\0\x1F", 5)) == R"("a\u000ab\u0000\u001f")");
  CHECK(json_string("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80") == "\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\"");
  const auto replaced = [](int bytes) { return "\"" + repeated("\xEF\xBF\xBD", bytes) + "\""; };  // U+FFFD each
  CHECK(json_string("\xFF") == replaced(1));              // never valid
  CHECK(json_string("\x80") == replaced(1));              // a lone continuation byte
  CHECK(json_string("\xC0\xAF") == replaced(2));          // overlong '/'
  CHECK(json_string("\xED\xA0\x80") == replaced(3));      // a surrogate
  CHECK(json_string("\xE2\x82") == replaced(2));          // cut short
  CHECK(json_string("\xF4\x90\x80\x80") == replaced(4));  // above U+10FFFF
  CHECK(json_string("a\xFF" "b") == "\"a\xEF\xBF\xBD" "b\"");  // the bytes around a bad one are kept
}

TEST_CASE("an admission gets RateLimit-Policy for every tier and the counters of both units", "[http]") {
  airl::test::InMemoryBackend backend;
  airl::MultiTierLimiter<airl::test::ManualStorage> limiter(rpm_and_tpm(), backend.make_storage());
  const airl::Decision first = limiter.allow({.user = "u", .model = "m", .cost = 300});
  REQUIRE(first.allowed);
  CHECK(airl::http::status_code(first) == 200);
  const std::vector<Header> expected = {
      {"RateLimit-Policy", std::string(both_policies)},
      {"RateLimit", R"("rpm";r=2;t=60, "tpm";r=700;t=90)"},
      {"x-ratelimit-limit-requests", "3"},
      {"x-ratelimit-remaining-requests", "2"},
      {"x-ratelimit-reset-requests", "1m0s"},
      {"x-ratelimit-limit-tokens", "1000"},
      {"x-ratelimit-remaining-tokens", "700"},
      {"x-ratelimit-reset-tokens", "1m30s"},
  };
  CHECK(airl::http::response_headers(first, limiter.tiers()) == expected);
  CHECK_THROWS_AS(airl::http::problem_json(first), std::invalid_argument);

  // 20.5 s later a request of 700 tokens: tpm binds, with the least remaining (0 tokens; rpm has 1 left).
  backend.advance(20'500ms);
  const airl::Decision second = limiter.allow({.user = "u", .model = "m", .cost = 700});
  REQUIRE(second.allowed);
  const auto headers = airl::http::response_headers(second, limiter.tiers());
  CHECK(header(headers, "RateLimit") == R"("tpm";r=0;t=90, "rpm";r=1;t=60)");
  CHECK(header(headers, "x-ratelimit-limit-tokens") == "1000");
  CHECK(header(headers, "x-ratelimit-remaining-tokens") == "0");
  CHECK(header(headers, "x-ratelimit-reset-tokens") == "1m30s");
  CHECK(header(headers, "x-ratelimit-limit-requests") == "3");  // the other unit's binding tier, too
  CHECK(header(headers, "x-ratelimit-remaining-requests") == "1");
  CHECK(header(headers, "x-ratelimit-reset-requests") == "1m0s");
  CHECK(header(headers, "Retry-After") == "(absent)");
}

TEST_CASE("a denial gets Retry-After rounded up, the denying tier's counters and a problem+json body",
          "[http]") {
  airl::test::InMemoryBackend backend;
  airl::MultiTierLimiter<airl::test::ManualStorage> limiter(rpm_and_tpm(), backend.make_storage());
  REQUIRE(limiter.allow({.user = "u", .model = "m", .cost = 900}));
  backend.advance(30'000ms + 250ms);
  const airl::Decision denied = limiter.allow({.user = "u", .model = "m", .cost = 200});  // tpm: 100 left
  REQUIRE_FALSE(denied.allowed);
  REQUIRE(denied.reason == "tpm");
  CHECK(airl::http::status_code(denied) == 429);
  const std::vector<Header> expected = {
      {"Retry-After", "60"},  // the 900 expire in 59.75 s
      {"retry-after-ms", "59750"},
      {"RateLimit-Policy", std::string(both_policies)},
      // Nothing more is usable before Retry-After: every item's t says that moment (rpm's window would empty
      // in 30 s, but a client pacing by it would only be refused again).
      {"RateLimit", R"("tpm";r=100;t=60, "rpm";r=2;t=60)"},
      {"x-ratelimit-limit-tokens", "1000"},
      {"x-ratelimit-remaining-tokens", "100"},
      {"x-ratelimit-reset-tokens", "59.75s"},
      // The request was not charged: rpm reports its one request, which leaves the window in 29.75 s.
      {"x-ratelimit-limit-requests", "3"},
      {"x-ratelimit-remaining-requests", "2"},
      {"x-ratelimit-reset-requests", "29.75s"},
  };
  CHECK(airl::http::response_headers(denied, limiter.tiers()) == expected);
  CHECK(airl::http::problem_json(denied) == quota_exceeded_body(60, "tpm"));
  CHECK(airl::http::openai_error_json(denied, limiter.tiers()) ==
        R"({"error":{"message":"Rate limit reached on tpm (tokens per 1m30s): Limit 1000, Used 900, Requested 200.)"
        R"( Please try again in 59.75s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}})");
}

TEST_CASE("a requests tier's denial is typed requests in OpenAI's shape", "[http]") {
  airl::test::InMemoryBackend backend;
  airl::MultiTierLimiter<airl::test::ManualStorage> limiter(rpm_and_tpm(), backend.make_storage());
  for (int i = 0; i < 3; ++i) REQUIRE(limiter.allow("u", "m"));
  backend.advance(1500ms);
  const airl::Decision denied = limiter.allow("u", "m");
  REQUIRE(denied.reason == "rpm");
  CHECK(denied.requested == 1);
  CHECK(airl::http::openai_error_json(denied, limiter.tiers()) ==
        R"({"error":{"message":"Rate limit reached on rpm (requests per 1m0s): Limit 3, Used 3, Requested 1.)"
        R"( Please try again in 58.5s.","type":"requests","param":null,"code":"rate_limit_exceeded"}})");
  CHECK_THROWS_AS(airl::http::openai_error_json(limiter.allow("v", "m"), limiter.tiers()), std::invalid_argument);
}

TEST_CASE("tier names that need escaping come out escaped in every header and in the body", "[http]") {
  airl::test::InMemoryBackend backend;
  const std::string name = "tok\"ens\\ caf\xC3\xA9 100%";
  airl::MultiTierLimiter<airl::test::ManualStorage> limiter({{name, Scope::user, {1, 500ms}}}, backend.make_storage());
  REQUIRE(limiter.allow("u", "m"));
  const airl::Decision denied = limiter.allow("u", "m");
  REQUIRE_FALSE(denied.allowed);
  const auto headers = airl::http::response_headers(denied, limiter.tiers());
  // A 500 ms window is advertised as w=1: whole seconds, never shorter than the real window.
  CHECK(header(headers, "RateLimit-Policy") == R"("tok\"ens\\ caf%c3%a9 100%25";q=1;w=1;qu="airl-tokens")");
  CHECK(header(headers, "RateLimit") == R"("tok\"ens\\ caf%c3%a9 100%25";r=0;t=1)");
  CHECK(header(headers, "Retry-After") == "1");  // 500 ms, rounded up
  CHECK(header(headers, "x-ratelimit-reset-tokens") == "500ms");
  // The body names the policy as the headers advertise it, so a client can match the two.
  CHECK(airl::http::problem_json(denied).find(R"("violated-policies":["tok\"ens\\ caf%c3%a9 100%25"])") !=
        std::string::npos);
  CHECK(airl::http::openai_error_json(denied, limiter.tiers()).find(R"(on tok\"ens\\ caf%c3%a9 100%25 (tokens)") !=
        std::string::npos);
}

TEST_CASE("on a denial every RateLimit t is the Retry-After time, neither earlier nor later", "[http]") {
  // Entries spread over the window: the oldest frees a request long before the window empties, and t must
  // say so; the other tier's own reset (its window empties later) must not point past Retry-After either.
  airl::test::InMemoryBackend backend;
  airl::MultiTierLimiter<airl::test::ManualStorage> limiter(rpm_and_tpm(), backend.make_storage());
  REQUIRE(limiter.allow("u", "m"));
  backend.advance(30s);
  REQUIRE(limiter.allow("u", "m"));
  backend.advance(1s);
  REQUIRE(limiter.allow("u", "m"));
  backend.advance(1s);
  const airl::Decision denied = limiter.allow("u", "m");  // at 32 s: the entry of 0 s frees one at 60 s
  REQUIRE_FALSE(denied.allowed);
  const auto headers = airl::http::response_headers(denied, limiter.tiers());
  CHECK(header(headers, "Retry-After") == "28");
  CHECK(header(headers, "retry-after-ms") == "28000");
  CHECK(header(headers, "RateLimit") == R"("rpm";r=0;t=28, "tpm";r=997;t=28)");
  CHECK(header(headers, "x-ratelimit-reset-requests") == "59s");  // the window empties at 91 s (OpenAI's reset)
  CHECK(header(headers, "x-ratelimit-reset-tokens") == "1m29s");
}

TEST_CASE("a request no wait can admit gets no Retry-After", "[http]") {
  airl::test::InMemoryBackend backend;
  airl::MultiTierLimiter<airl::test::ManualStorage> limiter(rpm_and_tpm(), backend.make_storage());
  const airl::Decision too_big = limiter.allow({.user = "u", .model = "m", .cost = 1001});
  REQUIRE_FALSE(too_big.allowed);
  REQUIRE(too_big.retry_after == airl::Decision::never);
  const auto headers = airl::http::response_headers(too_big, limiter.tiers());
  CHECK(header(headers, "Retry-After") == "(absent)");
  CHECK(header(headers, "retry-after-ms") == "(absent)");
  CHECK(header(headers, "x-should-retry") == "false");  // OpenAI's SDKs stop retrying on it
  CHECK(header(headers, "RateLimit") == R"("tpm";r=1000;t=0, "rpm";r=3;t=0)");
  CHECK(airl::http::problem_json(too_big).find("retry-after") == std::string::npos);
  CHECK(too_big.requested == 1001);
  CHECK(airl::http::openai_error_json(too_big, limiter.tiers()) ==
        R"({"error":{"message":"Request too large for tpm (tokens per 1m30s): Limit 1000, Requested 1001.)"
        R"( The request must be made smaller: it cannot fit however long it waits.","type":"tokens","param":null,)"
        R"("code":"rate_limit_exceeded"}})");
}

TEST_CASE("a key_capacity denial carries Retry-After and the policies but no tier's counters", "[http]") {
  airl::test::InMemoryBackend backend;
  airl::MultiTierLimiter<airl::test::ManualStorage> limiter(rpm_and_tpm(), backend.make_storage({.max_keys = 2}));
  REQUIRE(limiter.allow("alice", "m"));  // two buckets: the store is full
  const airl::Decision full = limiter.allow("bob", "m");
  REQUIRE(full.reason == airl::key_capacity_reason);
  CHECK(airl::http::status_code(full) == 429);
  const std::vector<Header> expected = {
      {"Retry-After", "90"},  // bob needs both of alice's buckets gone: the tpm one empties in 90 s
      {"retry-after-ms", "90000"},
      {"RateLimit-Policy", std::string(both_policies)},
  };
  CHECK(airl::http::response_headers(full, limiter.tiers()) == expected);
  CHECK(airl::http::problem_json(full) == quota_exceeded_body(90, "key_capacity"));
  CHECK(airl::http::openai_error_json(full, limiter.tiers()) ==
        R"({"error":{"message":"The rate limiter tracks too many keys to admit a new one. Please try again in 1m30s.",)"
        R"("type":"requests","param":null,"code":"rate_limit_exceeded"}})");
}

TEST_CASE("a backend_unavailable denial is a 503 that says the store is unavailable, and where it is not", "[http]") {
  airl::Decision unavailable;  // as a Redis storage under fail_closed reports one: the status decides
  unavailable.status = airl::Status::backend_unavailable;
  unavailable.reason = std::string(airl::backend_unavailable_reason);
  unavailable.retry_after = 1500ms;
  unavailable.degraded = true;
  CHECK(airl::http::status_code(unavailable) == 503);
  const std::vector<Tier> tiers = rpm_and_tpm();
  const std::vector<Header> expected = {
      {"Retry-After", "2"},
      {"retry-after-ms", "1500"},
      {"RateLimit-Policy", std::string(both_policies)},
  };
  CHECK(airl::http::response_headers(unavailable, tiers) == expected);
  CHECK(airl::http::problem_json(unavailable) == R"({"type":"about:blank","title":"Service Unavailable","status":503,)"
                                                 R"("detail":"rate limit store unavailable","retry-after":2})");
  CHECK(airl::http::openai_error_json(unavailable, tiers) ==
        R"({"error":{"message":"rate limit store unavailable","type":"server_error","param":null,)"
        R"("code":"rate_limit_store_unavailable"}})");
}

TEST_CASE("a degraded decision gets no counters: the policy, and a refusal's wait, but no RateLimit or x-ratelimit-*",
          "[http]") {
  // As a Redis storage's failure policy decides while Redis is unreachable: fail_open admits as if the buckets
  // were empty (made-up counters), local decides with one replica's in-process store (not the shared quota).
  airl::test::InMemoryBackend backend;
  airl::MultiTierLimiter<airl::test::ManualStorage> limiter(rpm_and_tpm(), backend.make_storage());
  airl::Decision admitted = limiter.allow({.user = "u", .model = "m", .cost = 300});
  REQUIRE(admitted.allowed);
  REQUIRE(airl::http::response_headers(admitted, limiter.tiers()).size() == 8);  // counted: every counter
  admitted.degraded = true;
  CHECK(airl::http::status_code(admitted) == 200);
  CHECK(airl::http::response_headers(admitted, limiter.tiers()) ==
        std::vector<Header>{{"RateLimit-Policy", std::string(both_policies)}});

  REQUIRE(limiter.allow({.user = "u", .model = "m", .cost = 300}).allowed);
  airl::Decision refused = limiter.allow({.user = "u", .model = "m", .cost = 500});  // tpm: 400 left
  REQUIRE_FALSE(refused.allowed);
  REQUIRE(header(airl::http::response_headers(refused, limiter.tiers()), "RateLimit") != "(absent)");
  refused.degraded = true;
  const std::vector<Header> expected = {
      {"Retry-After", "90"},
      {"retry-after-ms", "90000"},
      {"RateLimit-Policy", std::string(both_policies)},
  };
  CHECK(airl::http::response_headers(refused, limiter.tiers()) == expected);
  CHECK(airl::http::status_code(refused) == 429);
}

TEST_CASE("headers refuse tiers that cannot have made the decision", "[http][validation]") {
  airl::Decision decision;
  decision.allowed = true;
  decision.binding_tier = 2;
  const std::vector<Tier> two = rpm_and_tpm();
  CHECK_THROWS_AS(airl::http::response_headers(decision, two), std::invalid_argument);
  CHECK_THROWS_AS(airl::http::response_headers(decision, std::vector<Tier>{}), std::invalid_argument);
  CHECK_THROWS_AS(airl::http::policy_header_value(std::vector<Tier>{}), std::invalid_argument);
}

TEMPLATE_LIST_TEST_CASE("the decision names its binding tier on both backends, so the headers describe it",
                        "[http]", airl::test::Backends) {
  TestType backend;
  const std::string prefix = std::string("http-") + TestType::name + "-";
  const std::vector<Tier> tiers = {{prefix + "rpm", Scope::user_model, {5, 60s}, Unit::requests},
                                   {prefix + "tpm", Scope::user_model, {1000, 90s}, Unit::cost}};
  airl::MultiTierLimiter<typename TestType::Storage> limiter(tiers, backend.make_storage());
  const std::string user = prefix + "alice";

  const airl::Decision first = limiter.allow({.user = user, .model = "m", .cost = 10});
  REQUIRE(first.allowed);
  CHECK(first.binding_tier == 0);  // rpm has 4 left, tpm 990
  CHECK(header(airl::http::response_headers(first, limiter.tiers()), "x-ratelimit-remaining-requests") == "4");

  const airl::Decision second = limiter.allow({.user = user, .model = "m", .cost = 988});
  REQUIRE(second.allowed);
  CHECK(second.binding_tier == 1);  // rpm has 3 left, tpm 2
  const auto headers = airl::http::response_headers(second, limiter.tiers());
  CHECK(header(headers, "x-ratelimit-remaining-tokens") == "2");
  CHECK(header(headers, "RateLimit").rfind("\"" + prefix + "tpm\";r=2;t=", 0) == 0);

  const airl::Decision denied = limiter.allow({.user = user, .model = "m", .cost = 3});
  REQUIRE_FALSE(denied.allowed);
  CHECK(denied.binding_tier == 1);  // the denying tier
  CHECK(denied.reason == prefix + "tpm");
  const auto denied_headers = airl::http::response_headers(denied, limiter.tiers());
  CHECK(header(denied_headers, "x-ratelimit-remaining-tokens") == "2");
  // The other unit on both backends: rpm holds 2 requests of 5, and the denied one was not charged.
  REQUIRE(denied.other_unit.has_value());
  CHECK(denied.other_unit->tier == 0);
  CHECK(denied.other_unit->limit == 5);
  CHECK(denied.other_unit->remaining == 3);
  CHECK_THAT(denied.other_unit->reset_after, airl::test::within_slack<TestType>(60s));
  CHECK(header(denied_headers, "x-ratelimit-remaining-requests") == "3");
  CHECK(second.other_unit.has_value());
  CHECK(second.other_unit->remaining == 3);
  CHECK(second.other_unit->tier == 0);
}

TEMPLATE_LIST_TEST_CASE("replayed and batched decisions carry the other unit too", "[http]", airl::test::Backends) {
  TestType backend;
  const std::vector<Tier> tiers = {{"rpm", Scope::user_model, {5, 60s}, Unit::requests},
                                   {"tpm", Scope::user_model, {1000, 60s}, Unit::cost}};
  airl::MultiTierLimiter<typename TestType::Storage> limiter(tiers, backend.make_storage());
  REQUIRE(limiter.allow({.user = "rita", .model = "m", .cost = 100, .request_id = "r"}));
  const airl::Decision replay = limiter.allow({.user = "rita", .model = "m", .cost = 100, .request_id = "r"});
  REQUIRE(replay.replayed);
  REQUIRE(replay.other_unit.has_value());
  CHECK(replay.binding_tier == 0);  // rpm: 4 left; tpm: 900
  CHECK(replay.other_unit->tier == 1);
  CHECK(replay.other_unit->remaining == 900);
  const std::vector<airl::Request> batch = {{.user = "sam", .model = "m", .cost = 999}, {.user = "sam", .model = "m", .cost = 5}};
  const std::vector<airl::Decision> decisions = limiter.allow_many(batch);
  REQUIRE(decisions.size() == 2);
  REQUIRE(decisions[0].other_unit.has_value());
  CHECK(decisions[0].binding_tier == 1);  // tpm: 1 left
  CHECK(decisions[0].other_unit->remaining == 4);
  CHECK_FALSE(decisions[1]);
  REQUIRE(decisions[1].other_unit.has_value());
  CHECK(decisions[1].other_unit->remaining == 4);  // denied: rpm reports its room, uncharged
}

TEMPLATE_LIST_TEST_CASE("a RateLimiter built with Unit::requests counts requests, and its headers say requests",
                        "[http][tier_unit]", airl::test::Backends) {
  using Limiter = airl::SlidingWindowLimiter<typename TestType::Storage>;
  TestType backend;
  const std::string user = std::string("one-tier-") + TestType::name;
  Limiter limiter({60, 1min}, Unit::requests, backend.make_storage());  // README: 60 requests per minute
  const airl::Decision first = limiter.allow({.user = user, .model = "m", .cost = 1'200});
  REQUIRE(first.allowed);
  CHECK(first.remaining == 59);
  CHECK(limiter.usage(user, "m") == 1);
  CHECK(limiter.tiers().front().unit == Unit::requests);
  const auto headers = airl::http::response_headers(first, limiter.tiers());
  CHECK(header(headers, "x-ratelimit-limit-requests") == "60");
  CHECK(header(headers, "x-ratelimit-remaining-requests") == "59");
  CHECK(header(headers, "x-ratelimit-limit-tokens") == "(absent)");
  CHECK(header(headers, "RateLimit-Policy") == R"("default";q=60;w=60;qu="requests")");

  // Built without a unit it counts cost, as before: tokens in the headers.
  Limiter tokens({60, 1min}, backend.make_storage());
  const airl::Decision charged = tokens.allow({.user = user + "-tokens", .model = "m", .cost = 12});
  REQUIRE(charged.allowed);
  CHECK(charged.remaining == 48);
  const auto token_headers = airl::http::response_headers(charged, tokens.tiers());
  CHECK(header(token_headers, "x-ratelimit-limit-tokens") == "60");
  CHECK(header(token_headers, "x-ratelimit-limit-requests") == "(absent)");
  CHECK(header(token_headers, "RateLimit-Policy") == R"("default";q=60;w=60;qu="airl-tokens")");
}

TEST_CASE("a refused permit is answered with a short hint in ms and seconds, in OpenAI's shape or as a problem",
          "[http]") {
  using Caps = airl::ConcurrencyLimiter<airl::InMemoryConcurrencyStorage<>>;
  Caps caps({{"user_in_flight", Scope::user, 1, 600s}});
  airl::Permit held = caps.try_acquire("u", "open");
  REQUIRE(held.acquired());
  CHECK(airl::http::status_code(held) == 200);
  CHECK(airl::http::response_headers(held).empty());
  CHECK_THROWS_AS(airl::http::openai_error_json(held), std::invalid_argument);
  CHECK_THROWS_AS(airl::http::problem_json(held), std::invalid_argument);

  const airl::Permit refused = caps.try_acquire("u", "open");
  REQUIRE_FALSE(refused.acquired());
  CHECK(airl::http::status_code(refused) == 429);
  // The lease (600 s) is not the hint: a slot frees when a request ends.
  CHECK(airl::http::response_headers(refused, 250ms) ==
        std::vector<Header>{{"Retry-After", "1"}, {"retry-after-ms", "250"}});
  CHECK(airl::http::response_headers(refused) ==
        std::vector<Header>{{"Retry-After", "1"}, {"retry-after-ms", "1000"}});
  CHECK(airl::http::openai_error_json(refused, 2500ms) ==
        R"({"error":{"message":"Too many requests in flight: user_in_flight is full. Please try again in 2.5s.",)"
        R"("type":"requests","param":null,"code":"rate_limit_exceeded"}})");
  CHECK(airl::http::problem_json(refused, 2500ms) ==
        R"({"type":"about:blank","title":"Too Many Requests","status":429,)"
        R"("detail":"too many requests in flight: user_in_flight is full","retry-after":3})");

  // A cap of 0 admits nothing, ever: no wait helps, and the SDK is told not to retry.
  Caps closed({{"closed", Scope::model, 0, 600s}});
  const airl::Permit never = closed.try_acquire("v", "m");
  REQUIRE_FALSE(never.acquired());
  CHECK(airl::http::response_headers(never) == std::vector<Header>{{"x-should-retry", "false"}});
  CHECK(airl::http::openai_error_json(never).find("closed is full: no request can run.") != std::string::npos);
  CHECK(airl::http::problem_json(never).find("retry-after") == std::string::npos);
}
