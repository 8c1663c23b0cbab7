// SPDX-License-Identifier: MIT
#pragma once
// Bounded waits on a forked child process: reaping it with a deadline (killed past it) and reading what it
// reports through a pipe. Tests that fork never wait unbounded on their child.

#include <chrono>
#include <cstddef>
#include <optional>
#include <thread>

#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace airl::test {

// Reaps `child`, waiting at most `limit` (WNOHANG polls); past it kills the child and returns nothing.
inline std::optional<int> reap_within(pid_t child, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(child, &status, WNOHANG);
    if (done == child) return status;
    if (done < 0) return std::nullopt;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);  // returns at once: the child is dead
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Whether a reaped child exited normally with code 0.
inline bool exited_cleanly(const std::optional<int>& status) {
  return status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

// Reads exactly `size` bytes from `fd`, waiting at most `limit` in all; returns whether it got them.
inline bool read_within(int fd, char* out, std::size_t size,
                        std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  std::size_t got = 0;
  while (got < size) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd readable{fd, POLLIN, 0};
    if (::poll(&readable, 1, static_cast<int>(left.count())) != 1) return false;
    const ssize_t n = ::read(fd, out + got, size - got);
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace airl::test
