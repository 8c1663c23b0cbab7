// SPDX-License-Identifier: MIT
// The gateway as a client sees it: a real airl_gateway process on 127.0.0.1, in memory, over HTTP. Hostile
// clients are in gateway_hostile_test.cpp, the official OpenAI SDK in gateway_sdk_test.cpp.

#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gateway_support.hpp"

using namespace std::chrono_literals;
using airl_test::chat_body;
using airl_test::GatewayProcess;
using airl_test::header_number;
using airl_test::metric_value;
using airl_test::TempDir;

namespace {

const std::string base_config = "plan pro user_model_rpm=100\nkey sk-alice alice\nkey sk-bob bob pro\n";

}  // namespace

TEST_CASE("admitted, then 429 with Retry-After and RateLimit headers, then admitted after Retry-After", "[gateway]") {
  TempDir dir;
  GatewayProcess gateway(dir, base_config + "window_ms 2000\nlimit user_model_rpm 3\n");
  for (std::uint64_t expected_remaining = 2;; --expected_remaining) {
    auto res = gateway.chat("sk-alice", chat_body("llama", 10));
    REQUIRE(res);
    REQUIRE(res->status == 200);
    CHECK(header_number(res, "x-ratelimit-limit-requests") == 3);
    CHECK(header_number(res, "x-ratelimit-remaining-requests") == expected_remaining);
    CHECK(res->get_header_value("RateLimit").find("\"user_model_rpm\";r=" + std::to_string(expected_remaining) + ";t=") == 0);
    if (expected_remaining == 0) break;
  }
  auto denied = gateway.chat("sk-alice", chat_body("llama", 10));
  REQUIRE(denied);
  REQUIRE(denied->status == 429);
  // OpenAI's error shape, which its SDKs read; problem+json for a client that asks for it.
  CHECK(denied->get_header_value("Content-Type") == "application/json");
  CHECK(denied->body.find(R"("code":"rate_limit_exceeded")") != std::string::npos);
  CHECK(denied->body.find(R"("type":"requests")") != std::string::npos);
  CHECK(denied->body.find("Rate limit reached on user_model_rpm (requests per 2s): Limit 3, Used 3, Requested 1.") !=
        std::string::npos);
  CHECK(denied->get_header_value("RateLimit").find("\"user_model_rpm\";r=0;t=") == 0);
  CHECK(denied->get_header_value("RateLimit-Policy").find("\"user_model_rpm\";q=3;w=2;qu=\"requests\"") == 0);
  CHECK(denied->get_header_value("RateLimit-Policy").find("\"user_model_tpm\";q=40000;w=2;qu=\"airl-tokens\"") !=
        std::string::npos);
  const std::uint64_t retry_after = header_number(denied, "Retry-After");
  CHECK(retry_after >= 1);
  CHECK(retry_after <= 2);  // the window is 2 s: the first entry expires within it
  const std::uint64_t retry_after_ms = header_number(denied, "retry-after-ms");
  CHECK(retry_after_ms <= 2000);
  CHECK((retry_after_ms + 999) / 1000 == retry_after);
  auto as_problem = gateway.chat("sk-alice", chat_body("llama", 10), {{"Accept", "application/problem+json"}});
  REQUIRE(as_problem);
  CHECK(as_problem->status == 429);
  CHECK(as_problem->get_header_value("Content-Type") == "application/problem+json");
  CHECK(as_problem->body.find("\"violated-policies\":[\"user_model_rpm\"]") != std::string::npos);

  // bob's plan raises his limit: the same model, another user, still admitted.
  CHECK(gateway.chat("sk-bob", chat_body("llama", 10))->status == 200);

  // The client waits Retry-After seconds, as a client should, and is admitted.
  std::this_thread::sleep_for(std::chrono::seconds(retry_after));
  auto again = gateway.chat("sk-alice", chat_body("llama", 10));
  REQUIRE(again);
  CHECK(again->status == 200);
}

TEST_CASE("the settle after a reply refunds the reserved tokens it did not use", "[gateway]") {
  TempDir dir;
  // Replies have 5 tokens; a request reserves its prompt plus max_tokens.
  GatewayProcess gateway(dir, base_config + "limit user_model_tpm 1000\n", {"--reply-tokens", "5"});
  const std::uint64_t prompt = airl_test::prompt_tokens_of("hello");
  auto first = gateway.chat("sk-alice", chat_body("llama", 200));
  REQUIRE(first);
  REQUIRE(first->status == 200);
  CHECK(header_number(first, "x-ratelimit-remaining-tokens") == 1000 - (prompt + 200));  // the reservation
  CHECK(first->body.find("\"usage\":{\"completion_tokens\":5,\"prompt_tokens\":" + std::to_string(prompt)) != std::string::npos);
  CHECK(first->body.find("\"finish_reason\":\"stop\"") != std::string::npos);  // 5 of 200: the model ended it

  auto second = gateway.chat("sk-alice", chat_body("llama", 1));
  REQUIRE(second);
  REQUIRE(second->status == 200);
  // The first request was settled at prompt + 5: 195 tokens came back before the second was decided.
  CHECK(header_number(second, "x-ratelimit-remaining-tokens") == 1000 - (prompt + 5) - (prompt + 1));
  CHECK(second->body.find("\"finish_reason\":\"length\"") != std::string::npos);  // cut at max_tokens 1

  // Streamed: a chunk with the role, 5 chunks of one token, one with the finish reason, one with the usage
  // (stream_options.include_usage), [DONE]; settled the same way.
  auto streamed = gateway.chat("sk-alice", chat_body("llama", 50, /*stream=*/true));
  REQUIRE(streamed);
  REQUIRE(streamed->status == 200);
  CHECK(streamed->get_header_value("Content-Type") == "text/event-stream");
  const auto count = [&](const std::string& text) {
    std::size_t found = 0;
    for (std::size_t at = 0; (at = streamed->body.find(text, at)) != std::string::npos; ++at) ++found;
    return found;
  };
  CHECK(count("\"delta\":{\"content\":") == 6);
  CHECK(count("\"delta\":{\"content\":\"\",\"role\":\"assistant\"}") == 1);
  CHECK(count("\"created\":") == 8);
  CHECK(count("\"finish_reason\":\"stop\"") == 1);  // 5 tokens of the 50 allowed: the model stopped
  CHECK(count("\"choices\":[],") == 1);
  CHECK(streamed->body.find("\"completion_tokens\":5") != std::string::npos);
  CHECK(streamed->body.ends_with("data: [DONE]\n\n"));
  auto after = gateway.chat("sk-alice", chat_body("llama", 1));
  CHECK(header_number(after, "x-ratelimit-remaining-tokens") == 1000 - (prompt + 5) - (prompt + 1) * 2 - (prompt + 5));
}

TEST_CASE("bad keys get 401, bad bodies 400, unknown models 404, in OpenAI's shape, and nothing is charged", "[gateway]") {
  TempDir dir;
  GatewayProcess gateway(dir, base_config + "limit user_model_rpm 5\n", {"--max-body-bytes", "4096"});
  auto no_key = gateway.chat("", chat_body("llama", 10));
  REQUIRE(no_key);
  CHECK(no_key->status == 401);
  CHECK(no_key->get_header_value("WWW-Authenticate") == "Bearer");
  CHECK(no_key->body.find(R"("code":"invalid_api_key")") != std::string::npos);
  CHECK(gateway.chat("sk-nobody", chat_body("llama", 10))->status == 401);
  httplib::Headers basic = {{"Authorization", "Basic c2stYWxpY2U6"}};
  CHECK(gateway.client().Post("/v1/chat/completions", basic, chat_body("llama", 10), "application/json")->status == 401);

  const std::string bad_bodies[] = {
      "", "not json", "[1,2]", R"({"model":3,"messages":[{"role":"user","content":"x"}]})",
      R"({"messages":[{"role":"user","content":"x"}]})", R"({"model":"llama"})", R"({"model":"llama","messages":[]})",
      R"({"model":"llama","messages":[{"role":"user","content":7}]})", R"({"model":"llama","messages":["x"]})",
      R"({"model":"llama","messages":[{"content":"no role"}]})",
      R"({"model":"llama","messages":[{"role":"user","content":null}]})",  // null only for an assistant
      R"({"model":"llama","messages":[{"role":"user","content":[{"text":"no type"}]}]})",
      R"({"model":"llama","messages":[{"role":"user","content":[{"type":"text","text":5}]}]})",
      R"({"model":"","messages":[{"role":"user","content":"x"}]})", chat_body(std::string(300, 'm'), 10),
      R"({"model":"llama","messages":[{"role":"user","content":"x"}],"max_tokens":0})",
      R"({"model":"llama","messages":[{"role":"user","content":"x"}],"max_tokens":-5})",
      R"({"model":"llama","messages":[{"role":"user","content":"x"}],"max_tokens":100000000})",
      R"({"model":"llama","messages":[{"role":"user","content":"x"}],"max_completion_tokens":8193})",
      R"({"model":"llama","messages":[{"role":"user","content":"x"}],"max_tokens":"9"})",
      R"({"model":"llama","messages":[{"role":"user","content":"x"}],"stream":"yes"})",
      R"({"model":"llama","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":1}})",
      "{\"model\":\"llama\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}",
      std::string(1500, '[') + std::string(1500, ']'),  // deeper than 32 levels
  };
  for (const std::string& body : bad_bodies) {
    INFO(body.substr(0, 80));
    auto res = gateway.chat("sk-alice", body);
    REQUIRE(res);
    CHECK(res->status == 400);
    CHECK(res->get_header_value("Content-Type") == "application/json");
    CHECK(res->body.find(R"("type":"invalid_request_error")") != std::string::npos);
  }
  auto as_problem = gateway.chat("sk-alice", "not json", {{"Accept", "application/problem+json"}});
  REQUIRE(as_problem);
  CHECK(as_problem->get_header_value("Content-Type") == "application/problem+json");
  CHECK(as_problem->body.find("\"status\":400") != std::string::npos);
  auto too_large = gateway.chat("sk-alice", chat_body("llama", 10, false, std::string(5000, 'a')));  // above 4096
  REQUIRE(too_large);
  CHECK(too_large->status == 413);
  CHECK(too_large->body.find(R"("code":"request_too_large")") != std::string::npos);
  httplib::Headers bad_id = {{"X-Request-Id", std::string(200, 'x')}};
  CHECK(gateway.chat("sk-alice", chat_body("llama", 10), bad_id)->status == 400);
  CHECK(gateway.get("/no/such/route")->status == 404);

  // A model the gateway does not serve: 404 model_not_found, as OpenAI answers, and no bucket made for it.
  for (int i = 0; i < 5; ++i) {
    auto made_up = gateway.chat("sk-alice", chat_body("llama-3-8b-" + std::to_string(i), 10));
    REQUIRE(made_up);
    CHECK(made_up->status == 404);
    CHECK(made_up->body.find(R"("code":"model_not_found")") != std::string::npos);
  }

  // None of that was charged: the first good request still sees 4 of 5 left.
  auto good = gateway.chat("sk-alice", chat_body("llama", 10));
  REQUIRE(good);
  CHECK(good->status == 200);
  CHECK(header_number(good, "x-ratelimit-remaining-requests") == 4);
  const std::string metrics = gateway.metrics();
  CHECK(metric_value(metrics, "airl_gateway_responses_total{code=\"400\"}") == Approx(std::size(bad_bodies) + 2));
  CHECK(metric_value(metrics, "airl_gateway_responses_total{code=\"401\"}") == Approx(3));
  CHECK(metric_value(metrics, "airl_gateway_responses_total{code=\"404\"}") == Approx(6));
  CHECK(metric_value(metrics, "airl_gateway_responses_total{code=\"413\"}") == Approx(1));
  CHECK(metric_value(metrics, "airl_gateway_responses_total{code=\"other\"}") == Approx(0));
  CHECK(metric_value(metrics, "airl_gateway_refusals_total{reason=\"unauthenticated\"}") == Approx(3));
  CHECK(metric_value(metrics, "airl_gateway_refusals_total{reason=\"invalid_request\"}") == Approx(std::size(bad_bodies) + 2));
  CHECK(metric_value(metrics, "airl_gateway_refusals_total{reason=\"model_not_found\"}") == Approx(5));
  CHECK(metric_value(metrics, "airl_gateway_refusals_total{reason=\"body_too_large\"}") == Approx(1));
  CHECK(metric_value(metrics, "airl_gateway_refusals_total{reason=\"not_found\"}") == Approx(1));
  CHECK(metric_value(metrics, "airl_decisions_total{result=\"allowed\"}") == Approx(1));
  CHECK(metric_value(metrics, "airl_active_keys") == Approx(6));  // one request's buckets: no made-up model's
}

TEST_CASE("OpenAI's request forms (content parts, tool calls, max_completion_tokens) and GET /v1/models", "[gateway]") {
  TempDir dir;
  GatewayProcess gateway(dir, base_config + "max_tokens 64\ndefault_max_tokens 20\n", {"--reply-tokens", "40"});
  const std::string body = R"({"model":"llama","max_completion_tokens":7,"messages":[)"
                           R"({"role":"system","content":"be brief"},)"
                           R"({"role":"user","content":[{"type":"text","text":"what is this?"},)"
                           R"({"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},)"
                           R"({"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",)"
                           R"("function":{"name":"look","arguments":"{}"}}]},)"
                           R"({"role":"tool","tool_call_id":"c1","content":"a cat"}]})";
  auto res = gateway.chat("sk-alice", body);
  REQUIRE(res);
  INFO(res->body);
  CHECK(res->status == 200);
  CHECK(res->body.find(R"("completion_tokens":7)") != std::string::npos);  // max_completion_tokens counted
  CHECK(res->body.find(R"("finish_reason":"length")") != std::string::npos);
  // The prompt estimate counts the text: "be brief" 3, "what is this?" 4, "look" 2 + "{}" 1, "a cat" 2,
  // and 3 per message of framing.
  CHECK(res->body.find(R"("prompt_tokens":24)") != std::string::npos);
  // No max tokens named: the configured default is reserved and produced at most.
  auto defaulted = gateway.chat("sk-alice", R"({"model":"llama","messages":[{"role":"user","content":"hi"}]})");
  REQUIRE(defaulted);
  CHECK(defaulted->body.find(R"("completion_tokens":20)") != std::string::npos);
  // The configured largest max_tokens: 64 passes, 65 is refused.
  CHECK(gateway.chat("sk-alice", chat_body("llama", 64))->status == 200);
  CHECK(gateway.chat("sk-alice", chat_body("llama", 65))->status == 400);

  auto models = gateway.client().Get("/v1/models", {{"Authorization", "Bearer sk-alice"}});
  REQUIRE(models);
  CHECK(models->status == 200);
  CHECK(models->body == R"({"data":[{"created":0,"id":"llama","object":"model","owned_by":"airl-gateway"},)"
                        R"({"created":0,"id":"mistral","object":"model","owned_by":"airl-gateway"}],"object":"list"})");
  CHECK(gateway.client().Get("/v1/models")->status == 401);
  CHECK(gateway.client().Get("/v1/models/mistral", {{"Authorization", "Bearer sk-alice"}})->status == 200);
  CHECK(gateway.client().Get("/v1/models/gpt-9", {{"Authorization", "Bearer sk-alice"}})->status == 404);
}

TEST_CASE("the per-user tier counts across models: naming another model does not escape it", "[gateway]") {
  TempDir dir;
  GatewayProcess gateway(dir, base_config + "limit user_model_rpm 5\nlimit user_rpm 6\n");
  for (int i = 0; i < 6; ++i) {
    CHECK(gateway.chat("sk-alice", chat_body(i % 2 == 0 ? "llama" : "mistral", 1))->status == 200);
  }
  auto denied = gateway.chat("sk-alice", chat_body("mistral", 1));
  REQUIRE(denied);
  CHECK(denied->status == 429);
  CHECK(denied->body.find("user_rpm") != std::string::npos);
  CHECK(gateway.chat("sk-bob", chat_body("mistral", 1))->status == 200);  // another user
}

TEST_CASE("a reused X-Request-Id is refused with 409, not served again for free", "[gateway]") {
  TempDir dir;
  GatewayProcess gateway(dir, base_config + "limit user_model_rpm 5\nin_flight user 1\n");
  httplib::Headers id = {{"X-Request-Id", "client-retry-1"}};
  auto first = gateway.chat("sk-alice", chat_body("llama", 10), id);
  REQUIRE(first);
  CHECK(first->status == 200);
  CHECK(first->get_header_value("X-Request-Id") == "client-retry-1");
  CHECK(header_number(first, "x-ratelimit-remaining-requests") == 4);
  for (int i = 0; i < 8; ++i) {  // more reuses than the limit: none is served
    auto reused = gateway.chat("sk-alice", chat_body("llama", 10), id);
    REQUIRE(reused);
    CHECK(reused->status == 409);
    CHECK(reused->get_header_value("x-should-retry") == "false");  // OpenAI's SDKs would retry a 409 otherwise
    CHECK(reused->body.find(R"("code":"request_id_reused")") != std::string::npos);
  }
  // Nothing was charged by the reuses, and their slot came back: a new id is admitted with 3 left.
  auto next = gateway.chat("sk-alice", chat_body("llama", 10));
  REQUIRE(next);
  CHECK(next->status == 200);
  CHECK(header_number(next, "x-ratelimit-remaining-requests") == 3);
  const std::string metrics = gateway.metrics();
  CHECK(metric_value(metrics, "airl_gateway_tokens_total{kind=\"completion\"}") == Approx(20));  // 2 replies of max_tokens 10
  CHECK(metric_value(metrics, "airl_gateway_responses_total{code=\"409\"}") == Approx(8));
  CHECK(metric_value(metrics, "airl_gateway_refusals_total{reason=\"request_id_reused\"}") == Approx(8));
}

TEST_CASE("a full concurrency cap refuses with 429 and charges no rate tier", "[gateway]") {
  TempDir dir;
  // One request in flight per user; each reply takes 10 tokens x 100 ms.
  GatewayProcess gateway(dir, base_config + "limit user_model_rpm 5\nin_flight user 1\n",
                         {"--us-per-token", "100000", "--reply-tokens", "10"});
  auto slow = std::async(std::launch::async, [&] { return gateway.chat("sk-alice", chat_body("llama", 10)); });
  // Wait (bounded) until the first request holds its slot.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (metric_value(gateway.metrics(), "airl_concurrency_acquisitions_total{result=\"acquired\"}").value_or(0) < 1) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(10ms);
  }
  auto refused = gateway.chat("sk-alice", chat_body("llama", 10));
  REQUIRE(refused);
  CHECK(refused->status == 429);
  CHECK(refused->body.find("Too many requests in flight: user_in_flight is full") != std::string::npos);
  // A slot frees when a request ends: a short hint (the default 1 s), not the 600 s lease.
  CHECK(header_number(refused, "Retry-After") == 1);
  CHECK(header_number(refused, "retry-after-ms") == 1000);
  CHECK(gateway.chat("sk-bob", chat_body("llama", 1))->status == 200);  // another user's slot is free

  REQUIRE(slow.wait_for(30s) == std::future_status::ready);
  auto first = slow.get();
  REQUIRE(first);
  CHECK(first->status == 200);
  auto next = gateway.chat("sk-alice", chat_body("llama", 1));
  REQUIRE(next);
  CHECK(next->status == 200);
  CHECK(header_number(next, "x-ratelimit-remaining-requests") == 3);  // 5 - the slow one - this one
  // The cap's refusal counts under its reason with airl's other refusals.
  CHECK(metric_value(gateway.metrics(), "airl_denials_total{reason=\"user_in_flight\"}") == Approx(1));
}

TEST_CASE("a full GPU queue answers 503 and refunds all the request was charged, and --queue 0 means no queue",
          "[gateway]") {
  TempDir dir;
  // One simulated GPU and no waiting room: a second completion while the first runs finds no worker.
  GatewayProcess gateway(dir, base_config + "limit user_model_rpm 5\nlimit user_model_tpm 1000\n",
                         {"--gpu-workers", "1", "--queue", "0", "--us-per-token", "100000", "--reply-tokens", "10"});
  CHECK(gateway.chat("sk-alice", chat_body("llama", 1))->status == 200);  // an idle worker takes it: no queue needed
  auto busy = std::async(std::launch::async, [&] { return gateway.chat("sk-bob", chat_body("llama", 10)); });
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (metric_value(gateway.metrics(), "airl_decisions_total{result=\"allowed\"}").value_or(0) < 2) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(100ms);  // admitted, then handed to the worker at once: it runs for 1 s
  httplib::Headers id = {{"X-Request-Id", "queue-full-1"}};
  for (int i = 0; i < 3; ++i) {  // the same id each time: a refunded request is a new one when retried
    auto res = gateway.chat("sk-alice", chat_body("llama", 300), id);
    REQUIRE(res);
    CHECK(res->status == 503);
    CHECK(res->get_header_value("Retry-After") == "1");
    CHECK(res->get_header_value("retry-after-ms") == "1000");
    CHECK(res->body.find(R"("type":"server_error")") != std::string::npos);
  }
  // The sidecar decision (cost 1) shows what stayed charged: only the first, finished request.
  httplib::Headers check = {{"Authorization", "Bearer sk-alice"}, {"X-Airl-Model", "llama"}};
  auto decided = gateway.client().Get("/v1/ratelimit/check", check);
  REQUIRE(decided);
  CHECK(decided->status == 204);
  const std::uint64_t first = airl_test::prompt_tokens_of("hello") + 1;
  CHECK(header_number(decided, "x-ratelimit-remaining-requests") == 5 - 1 - 1);
  CHECK(header_number(decided, "x-ratelimit-remaining-tokens") == 1000 - first - 1);
  CHECK(metric_value(gateway.metrics(), "airl_gateway_refusals_total{reason=\"queue_full\"}") == Approx(3));
  REQUIRE(busy.wait_for(30s) == std::future_status::ready);
  CHECK(busy.get()->status == 200);
  // The worker is free again: the same id is admitted and served.
  CHECK(gateway.chat("sk-alice", chat_body("llama", 1), id)->status == 200);
}

TEST_CASE("the sidecar check decides without a body: 204, then 403 with the status in X-Airl-Status", "[gateway]") {
  TempDir dir;
  GatewayProcess gateway(dir, base_config + "limit user_model_tpm 100\n");
  httplib::Headers headers = {{"Authorization", "Bearer sk-alice"}, {"X-Airl-Model", "llama"}, {"X-Airl-Cost", "60"}};
  auto admitted = gateway.client().Post("/v1/ratelimit/check", headers, "", "text/plain");
  REQUIRE(admitted);
  CHECK(admitted->status == 204);
  CHECK(header_number(admitted, "x-ratelimit-remaining-tokens") == 40);
  auto refused = gateway.client().Get("/v1/ratelimit/check", headers);
  REQUIRE(refused);
  CHECK(refused->status == 403);
  CHECK(refused->get_header_value("X-Airl-Status") == "429");
  CHECK(refused->get_header_value("X-Airl-Problem").find(R"("type":"tokens")") != std::string::npos);
  CHECK(refused->get_header_value("X-Airl-Problem") == refused->body);
  CHECK(header_number(refused, "Retry-After") == 60);
  CHECK(header_number(refused, "retry-after-ms") > 59'000);
  const auto refused_with = [&](const httplib::Headers& sent) {
    auto res = gateway.client().Get("/v1/ratelimit/check", sent);
    return res && res->status == 403 ? res->get_header_value("X-Airl-Status") : std::string("not refused");
  };
  headers.erase("X-Airl-Cost");
  headers.emplace("X-Airl-Cost", "0");
  CHECK(refused_with(headers) == "400");
  CHECK(refused_with({{"Authorization", "Bearer sk-alice"}}) == "400");  // no model
  CHECK(refused_with({{"Authorization", "Bearer sk-alice"}, {"X-Airl-Model", "gpt-made-up"}}) == "404");
  CHECK(gateway.client().Get("/v1/ratelimit/check", {{"X-Airl-Model", "llama"}})->status == 401);

  httplib::Headers with_id = {{"Authorization", "Bearer sk-bob"}, {"X-Airl-Model", "llama"}, {"X-Request-Id", "r-1"}};
  CHECK(gateway.client().Get("/v1/ratelimit/check", with_id)->status == 204);
  auto reused = gateway.client().Get("/v1/ratelimit/check", with_id);
  REQUIRE(reused);
  CHECK(reused->status == 403);
  CHECK(reused->get_header_value("X-Airl-Status") == "409");
  CHECK(reused->get_header_value("x-should-retry") == "false");
  with_id.erase("X-Request-Id");
  with_id.emplace("X-Request-Id", "bad id");
  CHECK(refused_with(with_id) == "400");
}

TEST_CASE("/metrics passes promtool and /healthz reports the in-memory backend", "[gateway]") {
  TempDir dir;
  GatewayProcess gateway(dir, base_config + "in_flight user 2\n");
  REQUIRE(gateway.chat("sk-alice", chat_body("llama", 3))->status == 200);
  CHECK(gateway.get("/healthz")->status == 404);  // the admin endpoints are on the admin port only
  CHECK(gateway.get("/metrics")->status == 404);
  auto health = gateway.admin_get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(health->body == "{\"backend\":\"memory\",\"status\":\"ok\"}\n");
  const std::string metrics = gateway.metrics();
  for (const char* name : {"airl_decisions_total{result=\"allowed\"}", "airl_concurrency_acquisitions_total{result=\"acquired\"}",
                           "airl_gateway_responses_total{code=\"200\"}", "airl_gateway_request_seconds_count",
                           "airl_gateway_limiter_seconds_count", "airl_gateway_tokens_total{kind=\"completion\"}"}) {
    INFO(name);
    CHECK(metric_value(metrics, name).value_or(0) >= 1);
  }
  const std::string promtool = airl_test::find_program("promtool");
  const std::string path = dir.write("metrics.txt", metrics);
  const int status = std::system((promtool + " check metrics < " + path + " > " + dir.file("promtool.log") + " 2>&1").c_str());
  INFO(airl_test::read_file(dir.file("promtool.log")));
  CHECK(status == 0);
}

TEST_CASE("SIGTERM drains: in-flight replies and streams finish, new ones get 503, then the gateway exits 0",
          "[gateway]") {
  TempDir dir;
  GatewayProcess gateway(dir, base_config, {"--us-per-token", "100000", "--reply-tokens", "10"});
  auto in_flight = std::async(std::launch::async, [&] { return gateway.chat("sk-alice", chat_body("llama", 10)); });
  auto stream = std::async(std::launch::async, [&] { return gateway.chat("sk-bob", chat_body("llama", 10, true)); });
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (metric_value(gateway.metrics(), "airl_decisions_total{result=\"allowed\"}").value_or(0) < 2) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(10ms);
  }
  gateway.process().signal(SIGTERM);
  // While draining, it still answers: not ready, and no new completions.
  for (auto health = gateway.admin_get("/healthz"); !health || health->status != 503; health = gateway.admin_get("/healthz")) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(10ms);
  }
  CHECK(gateway.admin_get("/healthz")->body.find("\"status\":\"draining\"") != std::string::npos);
  auto late = gateway.chat("sk-alice", chat_body("llama", 10));
  REQUIRE(late);
  CHECK(late->status == 503);
  REQUIRE(in_flight.wait_for(30s) == std::future_status::ready);
  REQUIRE(stream.wait_for(30s) == std::future_status::ready);
  auto reply = in_flight.get();
  REQUIRE(reply);
  CHECK(reply->status == 200);
  CHECK(reply->body.find("\"completion_tokens\":10") != std::string::npos);  // all of it, not cut off
  auto streamed = stream.get();
  REQUIRE(streamed);
  CHECK(streamed->body.find("\"completion_tokens\":10") != std::string::npos);
  CHECK(streamed->body.ends_with("data: [DONE]\n\n"));
  CHECK(gateway.process().wait_exit(15s) == 0);
  CHECK(gateway.process().log().find("stopped cleanly") != std::string::npos);
  CHECK_FALSE(gateway.admin_get("/livez"));  // no longer listening
  CHECK_FALSE(gateway.get("/v1/models"));
}

TEST_CASE("SIGTERM with a reply longer than the grace period exits 3 when the grace runs out", "[gateway]") {
  TempDir dir;
  GatewayProcess gateway(dir, base_config, {"--us-per-token", "1000000", "--reply-tokens", "20", "--shutdown-grace-ms", "300"});
  auto in_flight = std::async(std::launch::async, [&] { return gateway.chat("sk-alice", chat_body("llama", 20)); });
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (metric_value(gateway.metrics(), "airl_decisions_total{result=\"allowed\"}").value_or(0) < 1) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::sleep_for(10ms);
  }
  const auto signalled = std::chrono::steady_clock::now();
  gateway.process().signal(SIGTERM);
  CHECK(gateway.process().wait_exit(10s) == 3);
  CHECK(std::chrono::steady_clock::now() - signalled < 5s);  // bounded by the grace, not the 20 s reply
  REQUIRE(in_flight.wait_for(30s) == std::future_status::ready);
}

TEST_CASE("bad flags, a bad config and a taken port exit 2 with a message", "[gateway]") {
  TempDir dir;
  const auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), AIRL_GATEWAY_BINARY);
    static int runs = 0;
    airl_test::ChildProcess process(args, dir.file("run-" + std::to_string(++runs) + ".log"));
    const std::optional<int> code = process.wait_exit(20s);
    return std::make_pair(code, process.log());
  };
  const std::string good = dir.write("good.conf", airl_test::with_models(base_config));
  auto [unknown_code, unknown_log] = run({"--config", good, "--bogus", "1"});
  CHECK(unknown_code == 2);
  CHECK(unknown_log.find("unknown flag --bogus") != std::string::npos);
  CHECK(run({"--config", good, "--failure-policy", "maybe"}).first == 2);
  CHECK(run({"--config", good, "--port", "0"}).first == 2);
  CHECK(run({"--port", "8080"}).first == 2);
  CHECK(run({"--config", good, "--port", "9000", "--admin-port", "9000"}).first == 2);
  // The Redis topologies: one at a time, node lists of host:port, a Sentinel set with its master's name.
  auto [both_code, both_log] = run({"--config", good, "--redis", "127.0.0.1:1", "--redis-cluster", "127.0.0.1:2"});
  CHECK(both_code == 2);
  CHECK(both_log.find("exclusive") != std::string::npos);
  CHECK(run({"--config", good, "--redis-cluster", "127.0.0.1:2,nohost"}).first == 2);
  CHECK(run({"--config", good, "--redis-cluster", ""}).first == 2);
  auto [unnamed_code, unnamed_log] = run({"--config", good, "--redis-sentinel", "127.0.0.1:3"});
  CHECK(unnamed_code == 2);
  CHECK(unnamed_log.find("--sentinel-master") != std::string::npos);
  CHECK(run({"--config", good, "--sentinel-master", "m"}).first == 2);
  auto [no_models_code, no_models_log] = run({"--config", dir.write("no-models.conf", base_config)});
  CHECK(no_models_code == 2);
  CHECK(no_models_log.find("no 'model' lines") != std::string::npos);
  CHECK(run({"--config", dir.write("twice.conf", "model a\nmodel a\n" + base_config)}).first == 2);
  CHECK(run({"--config", dir.write("cap.conf", "model a\nmax_tokens 10\ndefault_max_tokens 20\n" + base_config)}).first == 2);
  const std::string bad = dir.write("bad.conf", "key k alice\nlimit user_model_rpm lots\n");
  auto [bad_code, bad_log] = run({"--config", bad});
  CHECK(bad_code == 2);
  CHECK(bad_log.find("bad.conf:2:") != std::string::npos);
  CHECK(run({"--config", dir.write("plan.conf", "key k alice gold\n")}).first == 2);  // unknown plan
  CHECK(run({"--config", dir.write("empty.conf", "window_ms 1000\n")}).first == 2);   // no keys
  CHECK(run({"--config", dir.file("missing.conf")}).first == 2);

  GatewayProcess holder(dir, base_config);
  auto [taken_code, taken_log] = run({"--config", good, "--port", std::to_string(holder.port()), "--admin-port", "9001"});
  CHECK(taken_code == 2);
  CHECK(taken_log.find("cannot listen") != std::string::npos);
}

TEST_CASE("a config the limiters or a reply would refuse later is refused at its line (fuzz findings)", "[gateway]") {
  // tests/fuzz/corpus/gateway/regress-config-*: each of these parsed, then the gateway failed at start with no
  // file and line (a lease or window of 0), or GET /v1/models threw on the model's bytes; the rest would have
  // been refused request by request (over 2^53 on Redis, an over-long user) or at start (a cap or plan tier twice).
  TempDir dir;
  const std::string valid = "model a\n" + base_config;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"window_ms 0", "window_ms must be 1 to"},
      {"lease_ms 0", "lease_ms must be 1 to"},
      {"window_ms 31622400001", "window_ms must be 1 to"},
      {"in_flight user 1\nin_flight user 2", "in_flight user is set twice"},
      {"model \xff", "valid UTF-8"},
      {"limit user_rpm 9007199254740993", "at most 2^53"},
      {"in_flight model 9007199254740993", "at most 2^53"},
      {"plan gold user_rpm=1 user_rpm=2", "sets 'user_rpm' twice"},
      {"max_tokens 4503599627370497", "max_tokens must be 1 to 2^52"},
      {"key k2 " + std::string(4097, 'u'), "user names are at most 4096 bytes"},
  };
  int file = 0;
  for (const auto& [line, message] : cases) {
    INFO(line.substr(0, 60));
    const std::string path = dir.write("bad-" + std::to_string(++file) + ".conf", valid + line + "\n");
    airl_test::ChildProcess process({AIRL_GATEWAY_BINARY, "--config", path}, dir.file("bad-" + std::to_string(file) + ".log"));
    CHECK(process.wait_exit(20s) == 2);
    const std::string log = process.log();
    CHECK(log.find("bad-" + std::to_string(file) + ".conf:") != std::string::npos);  // names the file and line
    CHECK(log.find(message) != std::string::npos);
  }
}
