// SPDX-License-Identifier: MIT
// airl_gateway: an OpenAI-style inference gateway in front of simulated GPU workers, limited by airl.
// docs/DEPLOYMENT.md shows it embedded, as a sidecar behind nginx, and in Kubernetes.
//
//   airl_gateway --config examples/gateway/gateway.conf [--redis 127.0.0.1:6379] [--failure-policy local]
//
// SIGTERM or SIGINT: stop accepting, let in-flight requests finish (at most --shutdown-grace-ms), exit 0.
// Exit codes: 0 stopped cleanly, 2 bad flags or config or the port is taken, 3 the grace period ran out.

#include <airl/airl.hpp>
#include <airl/redis.hpp>

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>

#include "flags.hpp"
#include "gateway_config.hpp"
#include "gateway_limits.hpp"
#include "gateway_metrics.hpp"
#include "gateway_server.hpp"
#include "gpu_pool.hpp"
#include "http_listener.hpp"

namespace {

std::unique_ptr<gateway::Limits> make_limits(const gateway::Flags& flags, const gateway::Config& config) {
  if (flags.unlimited) return nullptr;
  if (!flags.redis) {
    using Memory = gateway::BackendLimits<airl::InMemoryStorage<>, airl::InMemoryConcurrencyStorage<>>;
    return std::make_unique<Memory>(config, airl::InMemoryStorage<>{}, airl::InMemoryConcurrencyStorage<>{}, "memory");
  }
  const airl::RedisOptions& options = *flags.redis;
  using Redis = gateway::BackendLimits<airl::RedisStorage, airl::RedisConcurrencyStorage>;
  return std::make_unique<Redis>(config, airl::RedisStorage(options), airl::RedisConcurrencyStorage(options), "redis");
}

const char* policy_name(airl::FailurePolicy policy) {
  switch (policy) {
    case airl::FailurePolicy::fail_open: return "fail_open";
    case airl::FailurePolicy::fail_closed: return "fail_closed";
    case airl::FailurePolicy::local: return "local";
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  gateway::Flags flags;
  gateway::Config config;
  std::unique_ptr<gateway::Limits> limits;
  try {
    flags = gateway::parse_flags(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "airl_gateway: %s\n%s", error.what(), gateway::usage_text);
    return 2;
  }
  try {
    config = gateway::load_config(flags.config_path);
    limits = make_limits(flags, config);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "airl_gateway: %s\n", error.what());
    return 2;
  }

  // SIGTERM and SIGINT are taken by one thread with sigwait: blocked here, before any thread starts, so
  // every thread inherits the mask and no handler runs in the middle of a request.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGUSR2);  // main's own wake-up for the waiter when the server ends on its own
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up mid-stream is an error on write, not a dead gateway

  gateway::GpuPool pool({flags.gpu_workers, flags.queue, std::chrono::microseconds(flags.us_per_token)});
  gateway::GatewayMetrics metrics;
  gateway::ServerOptions options;
  options.max_body_bytes = flags.max_body_bytes;
  options.reply_tokens = flags.reply_tokens;
  options.fail_closed = flags.redis && flags.failure_policy == airl::FailurePolicy::fail_closed;
  options.slot_retry_after = std::chrono::milliseconds(flags.slot_retry_after_ms);
  gateway::GatewayServer gateway_server(config, limits.get(), pool, metrics, options);

  gateway::ListenerOptions api_options;
  api_options.threads = flags.http_threads;
  api_options.max_connections = flags.max_connections;
  api_options.max_per_address = flags.max_connections_per_address;
  api_options.request_timeout = std::chrono::milliseconds(flags.request_timeout_ms);
  api_options.idle_timeout = std::chrono::milliseconds(flags.idle_timeout_ms);
  const auto count_refusal = [&metrics](int status, std::string_view reason) {
    metrics.count_refusal(reason);
    metrics.count_response(status);
  };
  gateway::Router api_router;
  gateway_server.install_api(api_router);
  gateway::HttpListener server(api_router, api_options, count_refusal);
  // The admin port: a few threads of its own, so a flood of API connections cannot starve the probes.
  gateway::ListenerOptions admin_options = api_options;
  admin_options.threads = 4;
  admin_options.max_connections = 256;
  gateway::Router admin_router;
  gateway_server.install_admin(admin_router);
  gateway::HttpListener admin(admin_router, admin_options);
  if (!server.bind(flags.listen, flags.port) || !admin.bind(flags.listen, flags.admin_port)) {
    std::fprintf(stderr, "airl_gateway: cannot listen on %s:%d and :%d\n", flags.listen.c_str(), flags.port,
                 flags.admin_port);
    return 2;
  }
  std::thread admin_thread([&admin] { admin.run(); });

  std::mutex mutex;
  std::condition_variable finished_changed;
  bool finished = false;
  std::thread signal_waiter([&] {
    int received = 0;
    sigwait(&stop_signals, &received);
    if (received == SIGUSR2) return;
    std::fprintf(stderr, "airl_gateway: %s: draining, %llu ms grace\n", received == SIGTERM ? "SIGTERM" : "SIGINT",
                 static_cast<unsigned long long>(flags.shutdown_grace_ms));
    // Drain while still serving: /healthz says 503 and new completions are refused, the ones in flight
    // (streams too: httplib would cut them at stop()) run to their end. Then stop, within the same grace.
    const auto grace_ends = std::chrono::steady_clock::now() + std::chrono::milliseconds(flags.shutdown_grace_ms);
    gateway_server.set_draining();
    while (gateway_server.in_flight() > 0 && std::chrono::steady_clock::now() < grace_ends) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    server.stop();
    std::unique_lock lock(mutex);
    if (!finished_changed.wait_until(lock, grace_ends, [&] { return finished; })) {
      std::fprintf(stderr, "airl_gateway: in-flight requests outlived the grace period; exiting\n");
      std::_Exit(3);
    }
  });

  std::printf("airl_gateway listening on http://%s:%d, admin on :%d (limits: %s%s%s)\n", flags.listen.c_str(),
              flags.port, flags.admin_port,
              flags.unlimited ? "none" : flags.redis ? "redis " : "in memory",
              flags.redis_where.c_str(), flags.redis ? (std::string(", ") + policy_name(flags.failure_policy)).c_str() : "");
  std::fflush(stdout);
  server.run();  // returns after stop(), once every connection's handler has returned
  admin.stop();
  admin_thread.join();
  pool.stop();
  {
    std::lock_guard lock(mutex);
    finished = true;
  }
  finished_changed.notify_all();
  // run() also returns on a poll failure, with the waiter still in sigwait: wake it (after a
  // signal it is waiting on `finished` instead, and the SIGUSR2 stays pending, blocked, harmless).
  pthread_kill(signal_waiter.native_handle(), SIGUSR2);
  signal_waiter.join();
  std::fprintf(stderr, "airl_gateway: stopped cleanly\n");
  return 0;
}
