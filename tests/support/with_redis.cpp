// SPDX-License-Identifier: MIT
// with_redis COMMAND [ARGS...]: starts a private redis-server on a free 127.0.0.1 port (redis_server.hpp, beside
// this file), runs COMMAND with every "{redis}" argument replaced by 127.0.0.1:<port>, stops the server by its
// PID and exits with COMMAND's exit code. Lets CTest run the Redis examples against a real server they do not
// manage.
#include <cstdio>
#include <string>
#include <vector>

#include <spawn.h>
#include <sys/wait.h>

#include "redis_server.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: with_redis COMMAND [ARGS...]   ({redis} becomes 127.0.0.1:<port>)\n");
    return 2;
  }
  airl::test::RedisServer server;
  const std::string address = "127.0.0.1:" + std::to_string(server.port());
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::string& arg : args) {
    if (arg == "{redis}") arg = address;
  }
  std::vector<char*> child_argv;
  for (std::string& arg : args) child_argv.push_back(arg.data());
  child_argv.push_back(nullptr);
  pid_t child = 0;
  if (::posix_spawn(&child, child_argv[0], nullptr, nullptr, child_argv.data(), environ) != 0) {
    std::fprintf(stderr, "with_redis: cannot run %s\n", child_argv[0]);
    return 2;
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}
