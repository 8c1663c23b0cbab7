// SPDX-License-Identifier: MIT
// Redis quick start: two gateway replicas share one quota through Redis.
//
// Each replica is a limiter object with its own airl::RedisStorage (its own connection pool), as two
// processes on two machines would be. They use the same server and the same key_prefix, so they count in the
// same buckets: together they admit exactly the limit. Then the 429 path, usage(), an idempotent retry that
// lands on the other replica, and what each FailurePolicy does when Redis cannot be reached.
//
// Usage: redis_quickstart [host[:port]]        (default 127.0.0.1:6379)
// Start a throwaway server first:  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no
// Exit code: 0 as documented, 1 the limiter misbehaved, 2 bad arguments or Redis unreachable.

#include <airl/http.hpp>
#include <airl/redis.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

using namespace std::chrono_literals;

namespace {

using ull = unsigned long long;

// The Retry-After header value: whole seconds, rounded up; -1 when waiting never helps.
long long retry_after_seconds(const airl::Decision& decision) {
  if (decision.retry_after == airl::Decision::never) return -1;
  return std::chrono::ceil<std::chrono::seconds>(decision.retry_after).count();
}

// The status is http::status_code's: 200, 429 for a quota, 503 when the store was unavailable (fail_closed).
void print_response(const char* replica, const airl::Decision& decision) {
  if (decision) {
    std::printf("  %s: HTTP %d  remaining=%llu limit=%llu%s%s\n", replica, airl::http::status_code(decision),
                ull(decision.remaining), ull(decision.limit), decision.replayed ? "  (replayed: not charged again)" : "",
                decision.degraded ? "  (degraded)" : "");
  } else {
    std::printf("  %s: HTTP %d  Retry-After: %llds (%lld ms)  remaining=%llu limit=%llu reason=%s%s\n", replica,
                airl::http::status_code(decision), retry_after_seconds(decision),
                static_cast<long long>(decision.retry_after.count()),
                ull(decision.remaining), ull(decision.limit), decision.reason.c_str(),
                decision.degraded ? "  (degraded)" : "");
  }
}

class Checks {
 public:
  void expect(bool ok, const char* what) {
    if (ok) return;
    std::printf("UNEXPECTED: %s\n", what);
    passed_ = false;
  }
  bool passed() const noexcept { return passed_; }

 private:
  bool passed_ = true;
};

// Two replicas, one quota: 5 requests per 10 s per (user, model), shared through Redis.
void shared_quota(const airl::RedisOptions& options, Checks& checks) {
  const airl::Quota quota{5, 10s};
  airl::RedisRateLimiter replica_a(quota, airl::RedisStorage(options));
  airl::RedisRateLimiter replica_b(quota, airl::RedisStorage(options));

  std::puts("alice sends 8 requests to llama-3-70b; a load balancer alternates between the replicas:");
  int admitted = 0;
  airl::Decision first_denial;
  for (int i = 0; i < 8; ++i) {
    const bool on_a = i % 2 == 0;
    const airl::Decision decision = (on_a ? replica_a : replica_b).allow("alice", "llama-3-70b");
    print_response(on_a ? "replica A" : "replica B", decision);
    if (decision) ++admitted;
    if (!decision && first_denial.reason.empty()) first_denial = decision;
  }
  std::printf("admitted together: %d (the limit is 5; two in-memory limiters would have admitted 8)\n", admitted);
  checks.expect(admitted == 5, "the replicas together should admit exactly the limit");
  checks.expect(first_denial.reason == "default" && first_denial.remaining == 0, "the 6th request should be a 429");
  checks.expect(first_denial.retry_after > 0ms && first_denial.retry_after <= 10s,
                "Retry-After should be when the oldest request leaves the 10 s window");
  checks.expect(!first_denial.degraded, "Redis answered: no decision should be degraded");

  const std::uint64_t usage_a = replica_a.usage("alice", "llama-3-70b");
  const std::uint64_t usage_b = replica_b.usage("alice", "llama-3-70b");
  std::printf("usage(alice, llama-3-70b): replica A sees %llu, replica B sees %llu (of 5)\n", ull(usage_a),
              ull(usage_b));
  checks.expect(usage_a == 5 && usage_b == 5, "both replicas should see the same usage");

  // A gateway retries a request after a worker failure, and the retry lands on the other replica.
  std::puts("bob's request req-7 is admitted by replica A; its retry lands on replica B:");
  const airl::Request request{.user = "bob", .model = "llama-3-70b", .request_id = "req-7"};
  const airl::Decision original = replica_a.allow(request);
  print_response("replica A", original);
  const airl::Decision retry = replica_b.allow(request);
  print_response("replica B", retry);
  checks.expect(original && !original.replayed && retry && retry.replayed, "the retry should be replayed");
  checks.expect(replica_b.usage("bob", "llama-3-70b") == 1, "a replayed retry should not be charged twice");

  replica_a.reset("alice");  // the keys would expire by themselves after 10 s; tidy up anyway
  replica_a.reset("bob");
  checks.expect(replica_b.usage("alice", "llama-3-70b") == 0, "reset on one replica should clear the shared quota");
}

// Redis is down: allow() never throws; RedisOptions::on_failure decides, and the decision says degraded.
void failure_policies(Checks& checks) {
  std::puts("\nRedis unreachable (a socket path where no server listens), 7 requests with a limit of 5:");
  airl::RedisOptions down;
  down.unix_socket = "/nonexistent/airl-redis-quickstart.sock";
  const struct {
    airl::FailurePolicy policy;
    const char* name;
    int expected_admitted;
  } policies[] = {{airl::FailurePolicy::fail_open, "fail_open  ", 7},
                  {airl::FailurePolicy::fail_closed, "fail_closed", 0},
                  {airl::FailurePolicy::local, "local      ", 5}};
  for (const auto& row : policies) {
    down.on_failure = row.policy;
    airl::RedisRateLimiter limiter({5, 10s}, airl::RedisStorage(down));
    int admitted = 0;
    bool all_degraded = true;
    airl::Decision last;
    for (int i = 0; i < 7; ++i) {
      last = limiter.allow("alice", "llama-3-70b");
      admitted += last ? 1 : 0;
      all_degraded = all_degraded && last.degraded;
    }
    std::printf("  %s admitted %d of 7; last: HTTP %d reason=%s, backend_errors=%llu\n", row.name, admitted,
                airl::http::status_code(last), last.reason.empty() ? "-" : last.reason.c_str(),
                ull(limiter.metrics().backend_errors));
    checks.expect(admitted == row.expected_admitted, "a failure policy admitted an unexpected number of requests");
    checks.expect(all_degraded && limiter.metrics().backend_errors == 7, "every decision should be degraded");
    if (row.policy == airl::FailurePolicy::fail_closed) {
      checks.expect(last.reason == airl::backend_unavailable_reason, "fail_closed should say backend_unavailable");
      checks.expect(airl::http::status_code(last) == 503, "a backend_unavailable denial is an HTTP 503, not a 429");
    }
  }
  // Administrative calls have no policy to fall back on: they throw.
  try {
    airl::RedisRateLimiter limiter({5, 10s}, airl::RedisStorage(down));
    (void)limiter.usage("alice", "llama-3-70b");
    checks.expect(false, "usage() should throw when Redis is unreachable");
  } catch (const airl::BackendError& error) {
    std::printf("  usage() throws airl::BackendError: %s\n", error.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  airl::RedisOptions options;
  try {
    if (argc > 2) throw std::invalid_argument("too many arguments");
    options = airl::redis_options_from_address(argc > 1 ? argv[1] : "");
  } catch (const std::invalid_argument& error) {
    std::fprintf(stderr, "%s\nusage: %s [host[:port]]   (default 127.0.0.1:6379)\n", error.what(), argv[0]);
    return 2;
  }
  // Every key this run writes starts with its own prefix, so runs never see each other's requests.
  options.key_prefix = "airl-quickstart-" + std::to_string(::getpid());

  try {
    airl::RedisRateLimiter probe({1, 1s}, airl::RedisStorage(options));
    (void)probe.usage("probe", "probe");  // unlike allow(), usage() throws when Redis fails
  } catch (const airl::BackendError& error) {
    std::fprintf(stderr,
                 "Redis is not reachable at %s:%d (%s).\n"
                 "Start a throwaway local server in another terminal:\n"
                 "  redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no\n"
                 "(Debian/Ubuntu: sudo apt-get install redis-server), then run this again.\n",
                 options.host.c_str(), options.port, error.what(), options.port);
    return 2;
  }
  std::printf("Redis at %s:%d, key prefix %s\n\n", options.host.c_str(), options.port, options.key_prefix.c_str());

  Checks checks;
  shared_quota(options, checks);
  failure_policies(checks);
  std::puts(checks.passed() ? "\nOK: the replicas shared one quota as documented" : "\nFAILED");
  return checks.passed() ? 0 : 1;
}
