// SPDX-License-Identifier: MIT
#pragma once
// Samples the gateway process's resources once a second from /proc/<pid>/: resident memory (status VmRSS),
// open file descriptors (entries of fd/) and threads (status Threads), and judges their growth after the
// warm-up against the bounds soak_main.cpp states and justifies.

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace airl_soak {

struct Sample {
  double at_s = 0;
  std::uint64_t rss_kb = 0;
  std::uint64_t fds = 0;
  std::uint64_t threads = 0;
};

// One sample of `pid`; false when the process is gone.
inline bool sample_process(pid_t pid, Sample& out) {
  const std::string base = "/proc/" + std::to_string(pid);
  std::ifstream status(base + "/status");
  if (!status) return false;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) out.rss_kb = std::stoull(line.substr(6));
    if (line.rfind("Threads:", 0) == 0) out.threads = std::stoull(line.substr(8));
  }
  std::error_code error;
  out.fds = 0;
  for (auto it = std::filesystem::directory_iterator(base + "/fd", error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++out.fds;
  }
  return !error;
}

// The peaks of one resource during and after the warm-up, and the last value.
struct Growth {
  std::uint64_t warmup_max = 0;
  std::uint64_t after_max = 0;
  std::uint64_t last = 0;
  std::uint64_t bound = 0;  // after_max must not exceed it
  bool within() const { return after_max <= bound; }
};

class Sampler {
 public:
  explicit Sampler(pid_t pid) : pid_(pid) {}

  // Samples once a second until `until`, printing a line every `print_every` samples, ending with what
  // `note()` says then (a column of the caller's). Call on one thread.
  void run(std::chrono::steady_clock::time_point started, std::chrono::steady_clock::time_point until,
           const std::string& note_title, const std::function<std::string()>& note, int print_every = 10) {
    std::printf("%8s %10s %6s %8s  %s\n", "t (s)", "RSS (MiB)", "fds", "threads", note_title.c_str());
    for (auto next = started; next <= until; next += std::chrono::seconds(1)) {
      std::this_thread::sleep_until(next);
      Sample sample;
      sample.at_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      if (!sample_process(pid_, sample)) break;
      std::lock_guard lock(mutex_);
      samples_.push_back(sample);
      if (samples_.size() % static_cast<std::size_t>(print_every) == 1) print(sample, note());
    }
  }

  std::vector<Sample> samples() const {
    std::lock_guard lock(mutex_);
    return samples_;
  }

  static void print(const Sample& sample, const std::string& note = {}) {
    std::printf("%8.1f %10.1f %6llu %8llu  %s\n", sample.at_s, static_cast<double>(sample.rss_kb) / 1024.0,
                static_cast<unsigned long long>(sample.fds), static_cast<unsigned long long>(sample.threads),
                note.c_str());
    std::fflush(stdout);
  }

  // The growth of the field `field` of the samples after `warmup_s`, bounded by warm-up max + `allowance`.
  template <class Field>
  Growth growth(double warmup_s, Field field, std::uint64_t allowance) const {
    std::lock_guard lock(mutex_);
    Growth growth;
    for (const Sample& sample : samples_) {
      const std::uint64_t value = field(sample);
      std::uint64_t& peak = sample.at_s < warmup_s ? growth.warmup_max : growth.after_max;
      peak = std::max(peak, value);
      growth.last = value;
    }
    growth.bound = growth.warmup_max + allowance;
    return growth;
  }

 private:
  pid_t pid_;
  mutable std::mutex mutex_;
  std::vector<Sample> samples_;
};

}  // namespace airl_soak
