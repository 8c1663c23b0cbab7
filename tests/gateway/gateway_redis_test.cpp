// SPDX-License-Identifier: MIT
// Gateways sharing a real redis-server (started on a free 127.0.0.1 port by the test): one quota between
// two processes, and what each failure policy does while Redis is down and after it comes back. Then the
// same quota shared through a Redis Cluster (--redis-cluster) and through Sentinel (--redis-sentinel).

#include <catch2/catch.hpp>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "gateway_support.hpp"
#include "redis_topology.hpp"

using namespace std::chrono_literals;
using airl_test::chat_body;
using airl_test::GatewayProcess;
using airl_test::metric_value;
using airl_test::TempDir;

namespace {

std::vector<std::string> redis_flags(const airl_test::RedisServer& redis, const std::string& policy) {
  return {"--redis", "127.0.0.1:" + std::to_string(redis.port()), "--failure-policy", policy, "--redis-prefix",
          "gw-test"};
}

// Polls GET /healthz until its body says `status` (bounded); returns the last reply's HTTP status.
int wait_for_health(const GatewayProcess& gateway, const std::string& status) {
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  for (;;) {
    auto res = gateway.admin_get("/healthz");
    if (res && res->body.find("\"status\":\"" + status + "\"") != std::string::npos) return res->status;
    if (std::chrono::steady_clock::now() >= deadline) FAIL("/healthz never said " << status);
    std::this_thread::sleep_for(50ms);
  }
}

}  // namespace

TEST_CASE("two gateway processes sharing one redis-server admit the limit between them", "[gateway][redis]") {
  airl_test::RedisServer redis;
  TempDir dir;
  const std::string config = "key sk-alice alice\nlimit user_model_rpm 25\nin_flight user 8\n";
  GatewayProcess a(dir, config, redis_flags(redis, "fail_closed"));
  GatewayProcess b(dir, config, redis_flags(redis, "fail_closed"));
  // Four clients, two per gateway, 20 requests each: 80 asked, 25 allowed.
  std::vector<std::thread> clients;
  std::atomic<int> admitted{0}, refused{0}, other{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      const GatewayProcess& gateway = c % 2 == 0 ? a : b;
      for (int i = 0; i < 20; ++i) {
        auto res = gateway.chat("sk-alice", chat_body("llama", 5));
        (res && res->status == 200 ? admitted : res && res->status == 429 ? refused : other)++;
      }
    });
  }
  for (std::thread& client : clients) client.join();
  CHECK(admitted == 25);
  CHECK(refused == 55);
  CHECK(other == 0);
  // Both gateways took part, and their own counts add up to the same 25.
  const double from_a = metric_value(a.metrics(), "airl_decisions_total{result=\"allowed\"}").value_or(-1);
  const double from_b = metric_value(b.metrics(), "airl_decisions_total{result=\"allowed\"}").value_or(-1);
  CHECK(from_a + from_b == Approx(25));
  CHECK(from_a > 0);
  CHECK(from_b > 0);
}

TEST_CASE("Redis killed: fail_open keeps admitting, degraded, and Redis restarted: recovered without a restart",
          "[gateway][redis]") {
  airl_test::RedisServer redis;
  TempDir dir;
  GatewayProcess gateway(dir, "key sk-alice alice\nlimit user_model_rpm 100\nin_flight user 4\n",
                         redis_flags(redis, "fail_open"));
  CHECK(wait_for_health(gateway, "ok") == 200);
  auto before = gateway.chat("sk-alice", chat_body("llama", 5));
  REQUIRE(before);
  CHECK(before->status == 200);
  CHECK_FALSE(before->has_header("X-Airl-Degraded"));

  redis.kill();
  for (int i = 0; i < 5; ++i) {
    auto during = gateway.chat("sk-alice", chat_body("llama", 5));
    REQUIRE(during);  // it answers
    CHECK(during->status == 200);
    CHECK(during->get_header_value("X-Airl-Degraded") == "1");
  }
  CHECK(wait_for_health(gateway, "degraded") == 200);  // still serving: stays in rotation
  CHECK(metric_value(gateway.metrics(), "airl_backend_errors_total").value_or(0) >= 1);

  redis.start();  // same port
  CHECK(wait_for_health(gateway, "ok") == 200);
  auto after = gateway.chat("sk-alice", chat_body("llama", 5));
  REQUIRE(after);
  CHECK(after->status == 200);
  CHECK_FALSE(after->has_header("X-Airl-Degraded"));
  // The restarted Redis is empty (no persistence): this is its first charge.
  CHECK(airl_test::header_number(after, "x-ratelimit-remaining-requests") == 99);
}

TEST_CASE("Redis killed: fail_closed answers 503 and reports not ready, then recovers", "[gateway][redis]") {
  airl_test::RedisServer redis;
  TempDir dir;
  GatewayProcess gateway(dir, "key sk-alice alice\nlimit user_model_rpm 100\nin_flight user 4\n",
                         redis_flags(redis, "fail_closed"));
  CHECK(gateway.chat("sk-alice", chat_body("llama", 5))->status == 200);
  redis.kill();
  auto during = gateway.chat("sk-alice", chat_body("llama", 5));
  REQUIRE(during);
  // The concurrency cap is checked first: under fail_closed it refuses (Status::backend_unavailable, no
  // exception), and the library's answer for a refused permit is a 503 with a short Retry-After that says
  // the store is unavailable, not where it is.
  CHECK(during->status == 503);
  CHECK(during->get_header_value("Content-Type") == "application/json");
  CHECK(during->get_header_value("Retry-After") == "1");
  CHECK(during->get_header_value("retry-after-ms") == "1000");
  CHECK(during->get_header_value("X-Airl-Degraded") == "1");
  CHECK(during->body.find("rate limit store unavailable") != std::string::npos);
  CHECK(during->body.find("127.0.0.1") == std::string::npos);
  CHECK(during->body.find(std::to_string(redis.port())) == std::string::npos);
  // The sidecar check has no caps: the rate tiers refuse, 503 the same way.
  auto checked = gateway.client().Get("/v1/ratelimit/check", {{"Authorization", "Bearer sk-alice"}, {"X-Airl-Model", "llama"}});
  REQUIRE(checked);
  CHECK(checked->get_header_value("X-Airl-Status") == "503");
  CHECK(checked->get_header_value("Retry-After") != "");
  CHECK(checked->body.find("rate limit store unavailable") != std::string::npos);
  // Every refusal counts under backend_unavailable in airl_denials_total (the alert DEPLOYMENT.md gives),
  // the cap's as well as the tiers'.
  const std::string metrics = gateway.metrics();
  CHECK(metric_value(metrics, "airl_denials_total{reason=\"backend_unavailable\"}") == 2);
  CHECK(metric_value(metrics, "airl_concurrency_denials_total{reason=\"backend_unavailable\"}") == 1);
  CHECK(wait_for_health(gateway, "degraded") == 503);
  redis.start();
  CHECK(wait_for_health(gateway, "ok") == 200);
  CHECK(gateway.chat("sk-alice", chat_body("llama", 5))->status == 200);
}

TEST_CASE("Redis killed: local limits in process while Redis is down", "[gateway][redis]") {
  airl_test::RedisServer redis;
  TempDir dir;
  GatewayProcess gateway(dir, "key sk-alice alice\nlimit user_model_rpm 3\n", redis_flags(redis, "local"));
  redis.kill();
  int admitted = 0, refused = 0;
  for (int i = 0; i < 6; ++i) {
    auto res = gateway.chat("sk-alice", chat_body("llama", 5));
    REQUIRE(res);
    if (res->status == 200) {
      ++admitted;
      CHECK(res->get_header_value("X-Airl-Degraded") == "1");
    } else {
      ++refused;
      CHECK(res->status == 429);
    }
  }
  CHECK(admitted == 3);  // the same limit, counted by this process alone
  CHECK(refused == 3);
  CHECK(wait_for_health(gateway, "degraded") == 200);
  redis.start();
  CHECK(wait_for_health(gateway, "ok") == 200);
}

TEST_CASE("two gateway processes sharing a Redis Cluster admit the limit between them, and one through Sentinel decides too",
          "[gateway][redis]") {
  airl::test::RedisCluster cluster;
  std::string seeds;
  for (const std::string& seed : cluster.seeds()) seeds += (seeds.empty() ? "" : ",") + seed;
  TempDir dir;
  // Tiers in three slots (the user's, the model's, the global one) and a cap: all shared across the cluster.
  const std::string config =
      "key sk-alice alice\nkey sk-bob bob\nlimit user_model_rpm 10\nlimit model_rpm 15\nin_flight user 8\n";
  const std::vector<std::string> flags = {"--redis-cluster", seeds, "--failure-policy", "fail_closed", "--redis-prefix", "gw-cluster"};
  GatewayProcess a(dir, config, flags);
  GatewayProcess b(dir, config, flags);
  std::vector<std::thread> clients;
  std::atomic<int> admitted{0}, refused{0}, other{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      const GatewayProcess& gateway = c % 2 == 0 ? a : b;
      const std::string key = c < 2 ? "sk-alice" : "sk-bob";
      for (int i = 0; i < 10; ++i) {
        auto res = gateway.chat(key, chat_body("llama", 5));
        (res && res->status == 200 ? admitted : res && res->status == 429 ? refused : other)++;
      }
    });
  }
  for (std::thread& client : clients) client.join();
  CHECK(other == 0);
  CHECK(admitted <= 15);  // the model's 15 bind (alice and bob could take 10 each): never more
  // A request may be refused while another's reservation, about to be undone, fills the model's bucket for a
  // moment (docs/REDIS.md, "Across slots"). One at a time now, each user tries until refused: the model's
  // bucket then holds exactly its 15, none of them a reservation left behind.
  for (const char* key : {"sk-alice", "sk-bob"}) {
    for (int i = 0; i < 10; ++i) {
      auto res = b.chat(key, chat_body("llama", 5));
      REQUIRE(res);
      if (res->status != 200) {
        CHECK(res->status == 429);
        break;
      }
      ++admitted;
    }
  }
  CHECK(admitted == 15);
  const std::string metrics = a.metrics();
  CHECK(metric_value(metrics, "airl_redis_nodes").value_or(-1) == Approx(3));
  CHECK(metric_value(metrics, "airl_redis_topology_refreshes_total").value_or(0) >= 1);

  airl::test::RedisSentinelSet sentinels;
  std::string sentinel_list;
  for (const std::string& node : sentinels.sentinels()) sentinel_list += (sentinel_list.empty() ? "" : ",") + node;
  GatewayProcess watched(dir, config,
                         {"--redis-sentinel", sentinel_list, "--sentinel-master", airl::test::RedisSentinelSet::master_name,
                          "--failure-policy", "fail_closed"});
  int sentinel_admitted = 0;
  for (int i = 0; i < 12; ++i) {
    auto res = watched.chat("sk-alice", chat_body("llama", 5));
    REQUIRE(res);
    if (res->status == 200) ++sentinel_admitted;
    else CHECK(res->status == 429);
  }
  CHECK(sentinel_admitted == 10);
}
