// SPDX-License-Identifier: MIT
// airl_redis_topology start STATE | stop STATE: the CTest fixture of the shared Redis Cluster and Sentinel set
// (redis_topology.hpp). `start` starts them, leaves them running and writes their addresses, PIDs and
// directories to STATE; `stop` stops every PID STATE names (SIGTERM, then SIGKILL) and removes the directories.
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>

#include "redis_topology.hpp"

namespace {

// Whether `pid` still runs (a zombie waiting for init to reap it does not).
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string skip, state;
  return !(stat >> skip >> skip >> state) || state != "Z";
}

void write_server(std::ofstream& out, airl::test::RedisServer& server) {
  out << "pid " << server.pid() << "\n"
      << "dir " << server.directory() << "\n";
}

int start(const std::string& state) {
  if (const char* skip = std::getenv("AIRL_SKIP_REDIS"); skip != nullptr && std::string_view(skip) == "1") {
    std::fprintf(stderr, "SKIPPED: AIRL_SKIP_REDIS=1 (no cluster or Sentinel started)\n");
    return 0;
  }
  airl::test::RedisCluster cluster;
  airl::test::RedisSentinelSet sentinels;
  std::ofstream out(state);
  for (const std::string& seed : cluster.seeds()) out << "cluster " << seed << "\n";
  for (const std::string& sentinel : sentinels.sentinels()) out << "sentinel " << sentinel << "\n";
  for (std::size_t i = 0; i < cluster.size(); ++i) write_server(out, cluster.node(i));
  write_server(out, sentinels.master());
  write_server(out, sentinels.replica());
  for (std::size_t i = 0; i < 3; ++i) write_server(out, sentinels.sentinel(i));
  out.close();
  if (!out) return 1;
  cluster.detach();
  sentinels.detach();
  return 0;
}

int stop(const std::string& state) {
  std::ifstream in(state);
  std::string kind, value;
  while (in >> kind >> value) {
    if (kind == "pid") {
      const pid_t pid = static_cast<pid_t>(std::stol(value));
      if (pid <= 0) continue;
      ::kill(pid, SIGCONT);
      ::kill(pid, SIGTERM);
      for (int i = 0; i < 250 && alive(pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      ::kill(pid, SIGKILL);  // not our child: it is reaped by init
    } else if (kind == "dir" && value.starts_with("/tmp/airl-redis-")) {
      std::error_code ignored;
      std::filesystem::remove_all(value, ignored);
    }
  }
  std::filesystem::remove(state);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || (std::string_view(argv[1]) != "start" && std::string_view(argv[1]) != "stop")) {
    std::fprintf(stderr, "usage: airl_redis_topology start|stop STATE\n");
    return 2;
  }
  try {
    return std::string_view(argv[1]) == "start" ? start(argv[2]) : stop(argv[2]);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "airl_redis_topology: %s\n", error.what());
    return 1;
  }
}
