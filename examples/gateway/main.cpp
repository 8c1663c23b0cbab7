// SPDX-License-Identifier: MIT
// airl_gateway: an OpenAI-style inference gateway in front of simulated GPU workers, limited by airl.
// docs/DEPLOYMENT.md shows it embedded, as a sidecar behind nginx, and in Kubernetes.
//
//   airl_gateway --config examples/gateway/gateway.conf [--redis 127.0.0.1:6379] [--failure-policy local]
//
// SIGTERM or SIGINT: stop accepting, let in-flight requests finish (at most --shutdown-grace-ms), exit 0.
// Exit codes: 0 stopped cleanly, 2 bad flags or config or the port is taken, 3 the grace period ran out.

#include <httplib.h>

#include <airl/airl.hpp>
#include <airl/redis.hpp>

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "flags.hpp"
#include "gateway_config.hpp"
#include "gateway_limits.hpp"
#include "gateway_metrics.hpp"
#include "gateway_server.hpp"
#include "gpu_pool.hpp"

namespace {

std::unique_ptr<gateway::Limits> make_limits(const gateway::Flags& flags, const gateway::Config& config) {
  if (flags.unlimited) return nullptr;
  if (!flags.redis) {
    using Memory = gateway::BackendLimits<airl::InMemoryStorage<>, airl::InMemoryConcurrencyStorage<>>;
    return std::make_unique<Memory>(config, airl::InMemoryStorage<>{}, airl::InMemoryConcurrencyStorage<>{}, "memory");
  }
  airl::RedisOptions options = airl::redis_options_from_address(*flags.redis);
  options.key_prefix = flags.redis_prefix;
  options.on_failure = flags.failure_policy;
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
  gateway::GatewayServer gateway_server(config, limits.get(), pool, metrics, options);

  httplib::Server server;
  const std::size_t threads = flags.http_threads;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_keep_alive_timeout(2);  // an idle keep-alive connection delays shutdown by at most this
  server.set_keep_alive_max_count(100000);  // load balancers and load generators keep connections open
  server.set_tcp_nodelay(true);  // small replies: without it, Nagle + delayed ACKs add 40 ms to each
  server.set_read_timeout(10, 0);
  server.set_write_timeout(10, 0);
  gateway_server.install(server);
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a second gateway start on a
  // port already taken and silently share its traffic.
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  if (!server.bind_to_port(flags.listen, flags.port)) {
    std::fprintf(stderr, "airl_gateway: cannot listen on %s:%d\n", flags.listen.c_str(), flags.port);
    return 2;
  }

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
    // A signal right after start may come before listen_after_bind runs, when stop() would do nothing.
    while (!server.is_running() && std::chrono::steady_clock::now() < grace_ends) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    server.stop();
    std::unique_lock lock(mutex);
    if (!finished_changed.wait_until(lock, grace_ends, [&] { return finished; })) {
      std::fprintf(stderr, "airl_gateway: in-flight requests outlived the grace period; exiting\n");
      std::_Exit(3);
    }
  });

  std::printf("airl_gateway listening on http://%s:%d (limits: %s%s%s)\n", flags.listen.c_str(), flags.port,
              flags.unlimited ? "none" : flags.redis ? "redis " : "in memory",
              flags.redis ? flags.redis->c_str() : "", flags.redis ? (std::string(", ") + policy_name(flags.failure_policy)).c_str() : "");
  std::fflush(stdout);
  server.listen_after_bind();  // returns after stop(), once every connection's handler has returned
  pool.stop();
  {
    std::lock_guard lock(mutex);
    finished = true;
  }
  finished_changed.notify_all();
  // listen_after_bind also returns on an accept failure, with the waiter still in sigwait: wake it (after a
  // signal it is waiting on `finished` instead, and the SIGUSR2 stays pending, blocked, harmless).
  pthread_kill(signal_waiter.native_handle(), SIGUSR2);
  signal_waiter.join();
  std::fprintf(stderr, "airl_gateway: stopped cleanly\n");
  return 0;
}
