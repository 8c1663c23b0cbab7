// SPDX-License-Identifier: MIT
#pragma once
// The GPU side of the simulated server: admitted requests wait in a bounded queue for a pool of worker threads
// that "generate" by sleeping a fixed time per token. The queue's bound is the workers' backpressure: when it is
// full, the request path waits (at most a bounded time) for room.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace demo {

using Clock = std::chrono::steady_clock;

struct GpuOptions {
  std::size_t workers = 4;                      // threads standing in for GPUs
  std::size_t queue_capacity = 32;              // admitted requests waiting for a worker
  std::chrono::microseconds time_per_token{2};  // simulated generation time of one token on one worker
};

struct Job {
  std::uint64_t tokens;
};

// A bounded multi-producer multi-consumer queue. Thread safety: every member is safe from any thread.
class BoundedQueue {
 public:
  explicit BoundedQueue(std::size_t capacity) : capacity_(capacity) {}

  // Enqueues `job`, waiting at most `timeout` for room. False if there was none, or the queue is closed.
  bool push_for(Job job, Clock::duration timeout) {
    std::unique_lock lock(mutex_);
    if (jobs_.size() >= capacity_) ++waited_pushes_;
    if (!not_full_.wait_for(lock, timeout, [&] { return closed_ || jobs_.size() < capacity_; }) || closed_) {
      return false;
    }
    jobs_.push_back(job);
    max_depth_ = std::max(max_depth_, jobs_.size());
    lock.unlock();
    not_empty_.notify_one();
    return true;
  }

  // The next job, waiting for one; nullopt once the queue is closed and drained.
  std::optional<Job> pop() {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return closed_ || !jobs_.empty(); });
    if (jobs_.empty()) return std::nullopt;
    const Job job = jobs_.front();
    jobs_.pop_front();
    lock.unlock();
    not_full_.notify_one();
    return job;
  }

  // Refuses new jobs and wakes every waiter; what is queued is still handed out.
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    not_empty_.notify_all();
    not_full_.notify_all();
  }

  std::size_t capacity() const noexcept { return capacity_; }

  // The most jobs queued at once.
  std::size_t max_depth() const {
    std::lock_guard lock(mutex_);
    return max_depth_;
  }

  // Pushes that found the queue full and had to wait.
  std::size_t waited_pushes() const {
    std::lock_guard lock(mutex_);
    return waited_pushes_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable not_empty_, not_full_;
  std::deque<Job> jobs_;
  const std::size_t capacity_;
  std::size_t max_depth_ = 0;
  std::size_t waited_pushes_ = 0;
  bool closed_ = false;
};

struct WorkerStats {
  std::uint64_t jobs = 0;
  std::uint64_t tokens = 0;
  Clock::duration busy{};
};

// The worker pool. Starts its threads on construction; stop() (or the destructor) lets them drain the queue
// and joins them. Not copyable or movable: the threads hold `this`.
class GpuWorkers {
 public:
  explicit GpuWorkers(GpuOptions options) : options_(options), queue_(options.queue_capacity) {
    stats_.resize(options.workers);
    threads_.reserve(options.workers);
    for (WorkerStats& stats : stats_) threads_.emplace_back([this, &stats] { run(stats); });
  }
  GpuWorkers(const GpuWorkers&) = delete;
  GpuWorkers& operator=(const GpuWorkers&) = delete;
  ~GpuWorkers() { stop(); }

  // Hands an admitted request to the workers, waiting at most `timeout` for queue room. Thread safety: safe.
  bool submit(Job job, Clock::duration timeout) { return queue_.push_for(job, timeout); }

  // Closes the queue, lets the workers finish what is queued, joins them. Call from one thread; idempotent.
  void stop() {
    queue_.close();
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

  const GpuOptions& options() const noexcept { return options_; }
  const BoundedQueue& queue() const noexcept { return queue_; }
  // Per-worker counts. Read them only after stop().
  const std::vector<WorkerStats>& stats() const noexcept { return stats_; }

 private:
  void run(WorkerStats& stats) {
    while (const std::optional<Job> job = queue_.pop()) {
      const Clock::time_point started = Clock::now();
      std::this_thread::sleep_for(options_.time_per_token * static_cast<std::int64_t>(job->tokens));  // "generating"
      stats.busy += Clock::now() - started;
      ++stats.jobs;
      stats.tokens += job->tokens;
    }
  }

  const GpuOptions options_;
  BoundedQueue queue_;
  std::vector<WorkerStats> stats_;
  std::vector<std::thread> threads_;
};

}  // namespace demo
