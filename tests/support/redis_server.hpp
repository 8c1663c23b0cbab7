// SPDX-License-Identifier: MIT
#pragma once
// A real redis-server for tests: started on a free 127.0.0.1 port in its own temporary directory, stopped
// by its own PID (never killall). Tests can also kill, restart (same port), pause (SIGSTOP) and resume it,
// and talk to it over a raw hiredis connection. If redis-server is missing the tests fail loudly, unless
// AIRL_SKIP_REDIS=1 is set on purpose: then the test exits with code 77, which CTest reports as skipped.

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace airl::test {

inline constexpr int skip_exit_code = 77;

// Exits with code 77 (CTest: skipped) when AIRL_SKIP_REDIS=1; otherwise returns.
inline void skip_redis_if_requested() {
  const char* skip = std::getenv("AIRL_SKIP_REDIS");
  if (skip != nullptr && std::string_view(skip) == "1") {
    std::fprintf(stderr, "SKIPPED: AIRL_SKIP_REDIS=1 (this Redis test did not run)\n");
    std::exit(skip_exit_code);
  }
}

inline std::string find_redis_server() {
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/bin:/bin";
  std::string all = std::string(dirs) + ":/usr/bin:/usr/sbin:/usr/local/bin";
  std::size_t start = 0;
  while (start <= all.size()) {
    const std::size_t end = std::min(all.find(':', start), all.size());
    const std::filesystem::path candidate = std::filesystem::path(all.substr(start, end - start)) / "redis-server";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    start = end + 1;
  }
  throw std::runtime_error(
      "redis-server not found: the Redis tests need a real server (apt-get install redis-server), "
      "or set AIRL_SKIP_REDIS=1 to skip them on purpose");
}

// A port on 127.0.0.1 that nothing listens on right now.
inline int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t size = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    ::close(fd);
    throw std::runtime_error("could not find a free port");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// True if 127.0.0.1:`port` can be bound now (with SO_REUSEADDR, as redis-server binds).
inline bool loopback_port_free(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  ::close(fd);
  return free;
}

// A port for a cluster node: Redis also listens on port + 10000 (the cluster bus), so it refuses a port above
// 55535, and the kernel's choice (32768-60999 on Linux) is above that about one time in five, often several
// times in a row. Drawn at random from 10000-22767, with its bus port free too: both stay below the
// kernel's range, where outgoing connections could take them between this check and the server's start.
inline int free_cluster_port() {
  static thread_local std::mt19937 random(std::random_device{}());
  std::uniform_int_distribution<int> pick(10000, 22767);
  for (int tries = 0; tries < 1000; ++tries) {
    const int port = pick(random);
    if (loopback_port_free(port) && loopback_port_free(port + 10000)) return port;
  }
  throw std::runtime_error("no free port pair (port, port + 10000) for a cluster node in 10000-32767");
}

struct RedisReplyDeleter {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
using RawReply = std::unique_ptr<redisReply, RedisReplyDeleter>;

class RedisServer {
 public:
  // Starts redis-server with `extra_args` (e.g. {"--requirepass", "secret"}) and waits until it answers.
  // `config` (if not empty) is written to redis.conf in its directory and given first (a Sentinel needs a
  // config file it can rewrite).
  explicit RedisServer(std::vector<std::string> extra_args = {}, std::string config = {})
      : extra_args_(std::move(extra_args)), config_(std::move(config)) {
    skip_redis_if_requested();
    binary_ = find_redis_server();
    char pattern[] = "/tmp/airl-redis-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    directory_ = pattern;
    const bool cluster = std::find(extra_args_.begin(), extra_args_.end(), "--cluster-enabled") != extra_args_.end();
    for (int attempt = 0;; ++attempt) {
      port_ = cluster ? free_cluster_port() : free_loopback_port();
      try {
        start();
        return;
      } catch (const std::exception&) {
        stop();
        if (attempt == 4) throw;
      }
    }
  }

  ~RedisServer() {
    if (detached_) return;
    stop();
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const noexcept { return port_; }
  pid_t pid() const noexcept { return pid_; }
  // Leaves the server running after this object is gone (a CTest fixture stops it later, by PID).
  void detach() noexcept { detached_ = true; }
  const std::string& directory() const noexcept { return directory_; }

  // (Re)starts the server on the same port; waits up to 5 s until it answers PING.
  void start() {
    if (pid_ > 0) return;
    std::vector<std::string> args = {binary_};
    if (!config_.empty()) {
      const std::string path = directory_ + "/redis.conf";
      std::FILE* file = std::fopen(path.c_str(), "w");
      if (file == nullptr) throw std::runtime_error("cannot write " + path);
      std::fputs(config_.c_str(), file);
      std::fclose(file);
      args.push_back(path);
    }
    std::vector<std::string> common = {"--port",       std::to_string(port_), "--bind", "127.0.0.1",
                                     "--save",        "",             "--appendonly",        "no",     "--dir",
                                     directory_,      "--daemonize",  "no",                  "--logfile",
                                     directory_ + "/redis.log"};
    args.insert(args.end(), common.begin(), common.end());
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    // Its output goes to its log file; stdin/stdout/stderr on /dev/null, so a server left running by the
    // CTest fixture holds no pipe of ctest's open (ctest would wait for it to close).
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    for (const int fd : {0, 1, 2}) posix_spawn_file_actions_addopen(&files, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
    const int spawned = ::posix_spawn(&pid, binary_.c_str(), &files, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&files);
    if (spawned != 0) throw std::runtime_error("could not start " + binary_);
    pid_ = pid;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("redis-server exited at start (see " + directory_ + "/redis.log)");
      }
      if (answers_ping()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("redis-server did not answer within 5 s");
  }

  // Stops the server (SIGTERM, then SIGKILL after 5 s) and reaps it.
  void stop() noexcept { end_with(SIGTERM); }
  // Kills the server without letting it clean up, as a crash would.
  void kill() noexcept { end_with(SIGKILL); }
  // Freezes the server (SIGSTOP): connections stay open, nothing answers.
  void pause() noexcept {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void resume() noexcept {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }
  bool running() const noexcept { return pid_ > 0; }

  // Runs one command on a fresh raw connection (1 s timeout); nullptr when the server does not answer.
  RawReply command(const std::vector<std::string>& args) const {
    const timeval timeout{1, 0};
    std::unique_ptr<redisContext, void (*)(redisContext*)> context(
        redisConnectWithTimeout("127.0.0.1", port_, timeout), redisFree);
    if (!context || context->err != 0) return nullptr;
    redisSetTimeout(context.get(), timeout);
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const std::string& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    return RawReply(static_cast<redisReply*>(
        redisCommandArgv(context.get(), static_cast<int>(argv.size()), argv.data(), lengths.data())));
  }

  // Every key whose name starts with `prefix` (SCAN, so it works on any dataset size).
  std::vector<std::string> keys_with_prefix(const std::string& prefix) const {
    std::vector<std::string> keys;
    std::string cursor = "0";
    do {
      const RawReply reply = command({"SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000"});
      if (!reply || reply->type != REDIS_REPLY_ARRAY) throw std::runtime_error("SCAN failed");
      cursor.assign(reply->element[0]->str, reply->element[0]->len);
      for (std::size_t i = 0; i < reply->element[1]->elements; ++i) {
        keys.emplace_back(reply->element[1]->element[i]->str, reply->element[1]->element[i]->len);
      }
    } while (cursor != "0");
    return keys;
  }

 private:
  bool answers_ping() const {
    const RawReply reply = command({"PING"});
    return reply && (reply->type == REDIS_REPLY_STATUS ||
                     (reply->type == REDIS_REPLY_ERROR && std::string_view(reply->str).starts_with("NOAUTH")));
  }

  void end_with(int signal) noexcept {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);  // a paused server cannot act on SIGTERM
    ::kill(pid_, signal);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
  }

  std::vector<std::string> extra_args_;
  std::string config_;
  bool detached_ = false;
  std::string binary_;
  std::string directory_;
  int port_ = 0;
  pid_t pid_ = -1;
};

// One server shared by the behavioural tests of a test binary; each test uses its own key prefix.
inline RedisServer& shared_redis() {
  static RedisServer server;
  return server;
}

}  // namespace airl::test
