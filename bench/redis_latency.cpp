// SPDX-License-Identifier: MIT
// Sequential decision latency of the Redis backend, next to its floor, measured in one run:
//   PING     raw hiredis round trip: the network and the server's event loop, nothing else
//   EVALSHA  raw hiredis call of airl's Lua script with the arguments allow() sends: the floor plus the script
//   allow()  RedisRateLimiter::allow(): the script plus airl's client side (pool, keys, SIGPIPE guard, parsing)
// The three are interleaved in rounds, so a noisy machine moves them together and the ratios hold.
//
// With --memory it also measures Redis memory per bucket and per entry (INFO memory used_memory before and
// after creating buckets through the limiter), for unit costs and weighted costs (docs/REDIS.md).
//
// Usage: airl_redis_latency [--redis host:port] [--calls N] [--memory]
// Without --redis it starts its own redis-server (found on PATH) on a free 127.0.0.1 port in a temporary
// directory, and stops it by its PID at the end. --memory needs that private server (it runs FLUSHALL).

#include <airl/redis.hpp>
#include <airl/redis/key_layout.hpp>
#include <airl/redis/script.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---- a raw hiredis connection -------------------------------------------------------------------------

struct ReplyDeleter {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

class RawRedis {
 public:
  RawRedis(const std::string& host, int port) {
    const timeval timeout{1, 0};
    context_.reset(redisConnectWithTimeout(host.c_str(), port, timeout));
    if (!context_ || context_->err != 0) {
      throw std::runtime_error("cannot connect to Redis at " + host + ":" + std::to_string(port) +
                               (context_ ? std::string(": ") + context_->errstr : std::string()));
    }
    redisSetTimeout(context_.get(), timeout);
  }

  // Runs one command; throws on a connection fault or an error reply.
  Reply command(const std::vector<std::string_view>& args) {
    argv_.clear();
    lengths_.clear();
    for (const std::string_view arg : args) {
      argv_.push_back(arg.data());
      lengths_.push_back(arg.size());
    }
    Reply reply(static_cast<redisReply*>(
        redisCommandArgv(context_.get(), static_cast<int>(argv_.size()), argv_.data(), lengths_.data())));
    if (!reply) throw std::runtime_error(std::string("Redis connection failed: ") + context_->errstr);
    if (reply->type == REDIS_REPLY_ERROR) {
      throw std::runtime_error("Redis error: " + std::string(reply->str, reply->len));
    }
    return reply;
  }

  // A field of INFO <section>, e.g. info("memory", "used_memory").
  std::string info(std::string_view section, std::string_view field) {
    const Reply reply = command({"INFO", section});
    const std::string_view text(reply->str, reply->len);
    const std::string needle = "\n" + std::string(field) + ":";
    const std::size_t at = ("\n" + std::string(text)).find(needle);
    if (at == std::string::npos) throw std::runtime_error("INFO has no field " + std::string(field));
    const std::size_t start = at + needle.size() - 1;
    return std::string(text.substr(start, text.find_first_of("\r\n", start) - start));
  }

 private:
  struct ContextDeleter {
    void operator()(redisContext* context) const noexcept { redisFree(context); }
  };
  std::unique_ptr<redisContext, ContextDeleter> context_;
  std::vector<const char*> argv_;
  std::vector<std::size_t> lengths_;
};

// ---- a private redis-server ---------------------------------------------------------------------------

std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  const std::string dirs = std::string(path != nullptr ? path : "") + ":/usr/bin:/usr/sbin:/usr/local/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::filesystem::path candidate = std::filesystem::path(dirs.substr(start, end - start)) / name;
    if (!candidate.parent_path().empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    start = end + 1;
  }
  throw std::runtime_error(name + " not found on PATH (Debian/Ubuntu: apt-get install redis-server), "
                           "or pass --redis host:port");
}

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0;
  ::close(fd);
  if (!ok) throw std::runtime_error("could not find a free port");
  return ntohs(address.sin_port);
}

// redis-server on a free 127.0.0.1 port in a temporary directory, without persistence; stopped by its PID.
class PrivateRedis {
 public:
  PrivateRedis() {
    const std::string binary = find_on_path("redis-server");
    char pattern[] = "/tmp/airl-bench-redis-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    directory_ = pattern;
    port_ = free_loopback_port();
    std::vector<std::string> args = {binary,     "--port",    std::to_string(port_), "--bind",    "127.0.0.1",
                                     "--save",   "",          "--appendonly",        "no",        "--dir",
                                     directory_, "--logfile", directory_ + "/redis.log"};
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, binary.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
      throw std::runtime_error("could not start " + binary);
    }
    for (const auto deadline = Clock::now() + 5s; Clock::now() < deadline; std::this_thread::sleep_for(10ms)) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("redis-server exited at start (see " + directory_ + "/redis.log)");
      }
      try {
        RawRedis("127.0.0.1", port_).command({"PING"});
        return;
      } catch (const std::runtime_error&) {
      }
    }
    stop();
    throw std::runtime_error("redis-server did not answer within 5 s");
  }
  ~PrivateRedis() {
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  PrivateRedis(const PrivateRedis&) = delete;
  PrivateRedis& operator=(const PrivateRedis&) = delete;

  int port() const noexcept { return port_; }

 private:
  void stop() noexcept {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (const auto deadline = Clock::now() + 5s; ::waitpid(pid_, &status, WNOHANG) == 0;) {
      if (Clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    pid_ = -1;
  }

  std::string directory_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// ---- latency ------------------------------------------------------------------------------------------

struct Summary {
  double mean_us, p50_us, p99_us, max_us;
};

Summary summarize(std::vector<std::int64_t> ns) {
  std::sort(ns.begin(), ns.end());
  const auto at = [&](double q) {
    return static_cast<double>(ns[static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1) + 0.5)]) / 1e3;
  };
  const double sum = static_cast<double>(std::accumulate(ns.begin(), ns.end(), std::int64_t{0}));
  return {sum / static_cast<double>(ns.size()) / 1e3, at(0.50), at(0.99), static_cast<double>(ns.back()) / 1e3};
}

// A handful of users and models, as one gateway sees them in a short interval.
constexpr std::array<std::string_view, 4> users = {"alice", "bob", "carol", "dave"};
constexpr std::array<std::string_view, 2> models = {"llama-3-70b", "mistral-7b"};
constexpr std::size_t pairs = users.size() * models.size();
constexpr airl::Quota bench_quota{1'000'000, std::chrono::minutes(1)};  // high: every call is admitted

template <class Call>
void time_calls(std::vector<std::int64_t>& samples, std::size_t count, Call&& call) {
  for (std::size_t i = 0; i < count; ++i) {
    const Clock::time_point started = Clock::now();
    call(i);
    samples.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count());
  }
}

int measure_latency(const airl::RedisOptions& server, RawRedis& raw, std::size_t calls) {
  const std::string prefix = "airl-bench-" + std::to_string(::getpid());
  airl::RedisOptions options = server;
  options.key_prefix = prefix;
  airl::RedisRateLimiter limiter(bench_quota, airl::RedisStorage(options));

  // The raw EVALSHA path gets the same script, key shapes and arguments as allow(), under its own prefix.
  const std::string sha = [&] {
    const Reply reply = raw.command({"SCRIPT", "LOAD", airl::detail::sliding_window_script});
    return std::string(reply->str, reply->len);
  }();
  std::vector<std::array<std::string, 2>> raw_keys(pairs);
  for (std::size_t p = 0; p < pairs; ++p) {
    const airl::BucketRef bucket{airl::Scope::user_model, "default", users[p % users.size()], models[p / users.size()]};
    airl::detail::redis_bucket_key(raw_keys[p][0], prefix + "-raw", bucket);
    airl::detail::redis_costs_key(raw_keys[p][1], raw_keys[p][0]);
  }
  const std::string limit = std::to_string(bench_quota.limit);
  const std::string window_us = std::to_string(std::chrono::microseconds(bench_quota.window).count());
  std::string member;

  std::size_t not_admitted = 0;
  const auto ping = [&](std::size_t) { raw.command({"PING"}); };
  const auto evalsha = [&](std::size_t i) {
    member.assign(1, 'r').append(std::to_string(i));
    const auto& keys = raw_keys[i % pairs];
    const Reply reply =
        raw.command({"EVALSHA", sha, "2", keys[0], keys[1], "acquire", member, "0", limit, window_us, "1"});
    if (reply->type != REDIS_REPLY_ARRAY || reply->element[0]->integer != 1) ++not_admitted;
  };
  std::size_t call_index = 0;
  const auto allow = [&](std::size_t i) {
    const airl::Decision decision = limiter.allow(users[i % users.size()], models[(i / users.size()) % models.size()]);
    if (!decision || decision.degraded) ++not_admitted;
  };

  std::vector<std::int64_t> ping_ns, evalsha_ns, allow_ns, ignored;
  time_calls(ignored, 500, ping);  // warm up: connections made, script loaded, caches and branch predictors warm
  time_calls(ignored, 500, [&](std::size_t) { evalsha(call_index++); });
  time_calls(ignored, 500, [&](std::size_t) { allow(call_index++); });
  constexpr std::size_t rounds = 10;
  for (std::size_t round = 0; round < rounds; ++round) {
    const std::size_t count = calls / rounds + (round < calls % rounds ? 1 : 0);
    time_calls(ping_ns, count, ping);
    time_calls(evalsha_ns, count, [&](std::size_t) { evalsha(call_index++); });
    time_calls(allow_ns, count, [&](std::size_t) { allow(call_index++); });
  }

  for (const std::string_view user : users) limiter.reset(user);
  for (const auto& keys : raw_keys) raw.command({"UNLINK", keys[0], keys[1]});
  if (not_admitted != 0 || limiter.metrics().backend_errors != 0) {
    std::fprintf(stderr, "error: %zu calls were not admitted by Redis (backend_errors %llu): the numbers are void\n",
                 not_admitted, static_cast<unsigned long long>(limiter.metrics().backend_errors));
    return 1;
  }

  const Summary floor = summarize(ping_ns);
  std::printf("%zu sequential calls each (one connection each), interleaved in %zu rounds; every call admitted\n",
              calls, rounds);
  std::printf("%-44s %9s %9s %9s %9s %11s\n", "", "mean us", "p50 us", "p99 us", "max us", "p50 / PING");
  const auto row = [&](const char* what, const std::vector<std::int64_t>& ns) {
    const Summary s = summarize(ns);
    std::printf("%-44s %9.1f %9.1f %9.1f %9.1f %10.2fx\n", what, s.mean_us, s.p50_us, s.p99_us, s.max_us,
                s.p50_us / floor.p50_us);
  };
  row("PING (raw hiredis round trip)", ping_ns);
  row("EVALSHA airl script, 1 bucket (raw hiredis)", evalsha_ns);
  row("RedisRateLimiter::allow()", allow_ns);
  return 0;
}

// ---- memory -------------------------------------------------------------------------------------------

// Empties the server and waits until its background thread has freed what UNLINK handed it (large values are
// freed lazily), so used_memory does not shrink during a measurement.
void flush_and_settle(RawRedis& raw) {
  raw.command({"FLUSHALL"});  // lazily freed parts are waited for below
  for (const auto deadline = Clock::now() + 10s; Clock::now() < deadline; std::this_thread::sleep_for(10ms)) {
    if (raw.info("memory", "lazyfree_pending_objects") == "0") return;
  }
  throw std::runtime_error("Redis kept freeing objects in the background for 10 s");
}

struct MemoryRow {
  double bytes_per_bucket;
  std::string encodings;  // of the log and the costs key
};

// Creates `buckets` buckets of `entries` entries of cost `cost` each through the limiter, with realistic key
// names (prefix "airl", users "user-000042", model "llama-3-70b"), and measures used_memory's growth.
MemoryRow fill_buckets(RawRedis& raw, int port, std::size_t buckets, std::size_t entries, std::uint64_t cost) {
  flush_and_settle(raw);
  airl::RedisOptions options;
  options.port = port;
  airl::RedisRateLimiter limiter({1'000'000'000, std::chrono::minutes(10)}, airl::RedisStorage(options));
  const long long before = std::stoll(raw.info("memory", "used_memory"));
  char user[32];
  for (std::size_t b = 0; b < buckets; ++b) {
    std::snprintf(user, sizeof(user), "user-%06zu", b);
    for (std::size_t e = 0; e < entries; ++e) {
      const airl::Decision decision = limiter.allow({.user = user, .model = "llama-3-70b", .cost = cost});
      if (!decision || decision.degraded) throw std::runtime_error("a memory-measuring request was not admitted");
    }
  }
  std::this_thread::sleep_for(300ms);  // lets Redis's cron finish rehashing the keyspace tables
  const long long after = std::stoll(raw.info("memory", "used_memory"));
  // Cost-1 buckets keep only their log; weighted ones also a costs hash.
  const long long keys_per_bucket = cost == 1 ? 1 : 2;
  if (raw.command({"DBSIZE"})->integer != keys_per_bucket * static_cast<long long>(buckets)) {
    throw std::runtime_error("unexpected number of keys per bucket");
  }
  std::string log_key, costs_key;
  airl::detail::redis_bucket_key(log_key, "airl", {airl::Scope::user_model, "default", "user-000000", "llama-3-70b"});
  airl::detail::redis_costs_key(costs_key, log_key);
  const Reply log_encoding = raw.command({"OBJECT", "ENCODING", log_key});
  std::string encodings(log_encoding->str, log_encoding->len);
  if (cost == 1) {
    encodings += " (no costs key)";
  } else {
    const Reply costs_encoding = raw.command({"OBJECT", "ENCODING", costs_key});
    encodings += " + " + std::string(costs_encoding->str, costs_encoding->len);
  }
  return {static_cast<double>(after - before) / static_cast<double>(buckets), encodings};
}

void measure_memory(RawRedis& raw, int port) {
  std::printf(
      "\nRedis memory: INFO used_memory growth while allow() creates the buckets (10 min window: nothing expires).\n"
      "Keys: airl:{u=user-000042}:um:default:llama-3-70b, plus its :c costs hash once an entry costs more than 1;\n"
      "B/extra entry = growth over a 1-entry bucket, per added entry.\n");
  std::printf("%-5s %8s %8s %11s %14s   %s\n", "cost", "buckets", "entries", "B/bucket", "B/extra entry",
              "encodings (log + costs)");
  struct Shape {
    std::size_t buckets, entries;
  };
  for (const std::uint64_t cost : {std::uint64_t{1}, std::uint64_t{1200}}) {
    double one_entry = 0;
    for (const Shape shape : {Shape{10'000, 1}, Shape{10'000, 10}, Shape{100, 1'000}}) {
      const MemoryRow row = fill_buckets(raw, port, shape.buckets, shape.entries, cost);
      if (shape.entries == 1) one_entry = row.bytes_per_bucket;
      std::printf("%-5llu %8zu %8zu %11.1f ", static_cast<unsigned long long>(cost), shape.buckets, shape.entries,
                  row.bytes_per_bucket);
      if (shape.entries == 1) {
        std::printf("%14s", "-");
      } else {
        std::printf("%14.1f", (row.bytes_per_bucket - one_entry) / static_cast<double>(shape.entries - 1));
      }
      std::printf("   %s\n", row.encodings.c_str());
    }
  }
  flush_and_settle(raw);
}

// ---- main ---------------------------------------------------------------------------------------------

struct Args {
  std::optional<airl::RedisOptions> redis;
  std::size_t calls = 10'000;
  bool memory = false;
};

std::optional<Args> parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--memory") {
      args.memory = true;
      continue;
    }
    if (i + 1 == argc) return std::nullopt;
    const std::string_view value = argv[++i];
    if (arg == "--calls") {
      const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), args.calls);
      if (error != std::errc{} || end != value.data() + value.size() || args.calls < 100) return std::nullopt;
    } else if (arg == "--redis") {
      if (value.find(':') == std::string_view::npos) return std::nullopt;
      airl::RedisOptions options;
      try {
        options = airl::redis_options_from_address(value);
      } catch (const std::invalid_argument&) {
        return std::nullopt;
      }
      args.redis = options;
    } else {
      return std::nullopt;
    }
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Args> args = parse_args(argc, argv);
  if (!args || (args->memory && args->redis)) {
    std::fprintf(stderr,
                 "usage: %s [--redis host:port] [--calls N] [--memory]\n"
                 "  without --redis: starts its own redis-server on a free 127.0.0.1 port\n"
                 "  --memory: also measures memory per bucket and entry (own server only: it runs FLUSHALL)\n",
                 argv[0]);
    return 2;
  }
  try {
    std::unique_ptr<PrivateRedis> own;
    airl::RedisOptions server;
    if (args->redis) {
      server = *args->redis;
    } else {
      own = std::make_unique<PrivateRedis>();
      server.port = own->port();
    }
    RawRedis raw(server.host, server.port);
    std::printf("airl %s, Redis %s at %s:%d (%s), hiredis %d.%d.%d\n", AIRL_VERSION_STRING,
                raw.info("server", "redis_version").c_str(), server.host.c_str(), server.port,
                own ? "started by this benchmark" : "given with --redis", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    const int status = measure_latency(server, raw, args->calls);
    if (status == 0 && args->memory) measure_memory(raw, server.port);
    return status;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
}
