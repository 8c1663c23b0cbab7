// SPDX-License-Identifier: MIT
#pragma once
// Simulated GPU workers: a fixed number of threads take completions from a bounded queue and produce their
// tokens one at a time, `latency_per_token` apart. The handler that submitted a completion reads its tokens
// as they come (streamed) or waits for all of them (plain). A completion waits in the queue only when every
// worker is busy; a full queue refuses at once (queue capacity 0: no waiting at all), and the gateway answers
// 503 instead of letting requests pile up in memory.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace gateway {

// One completion's tokens, written by a worker, read by the handler. Thread-safe.
class Completion {
 public:
  explicit Completion(std::uint64_t tokens) : target_(tokens) {}

  // The next token, waiting up to `timeout`; nullopt when the completion ended (or the wait timed out).
  std::optional<std::string> next(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, timeout, [&] { return !pending_.empty() || finished_; })) return std::nullopt;
    if (pending_.empty()) return std::nullopt;
    std::string token = std::move(pending_.front());
    pending_.pop_front();
    return token;
  }

  // Waits up to `timeout` for the worker to finish; true when it did.
  bool wait_finished(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return finished_; });
  }

  // The client went away: the worker stops producing at its next token.
  void cancel() {
    std::lock_guard lock(mutex_);
    cancelled_ = true;
  }

  // Whether a worker began it: a completion cancelled while queued never ran (its charge is refunded).
  bool started() const {
    std::lock_guard lock(mutex_);
    return started_;
  }

  // Tokens produced so far (all of them once finished): what the request is settled at.
  std::uint64_t produced() const {
    std::lock_guard lock(mutex_);
    return produced_;
  }

  // The whole text produced (for a plain reply, read after wait_finished).
  std::string text() const {
    std::lock_guard lock(mutex_);
    return text_;
  }

 private:
  friend class GpuPool;

  // Called by the worker as it takes the completion: false when it was cancelled while queued.
  bool start() {
    std::lock_guard lock(mutex_);
    started_ = !cancelled_;
    return started_;
  }
  // Called by the worker: false when cancelled.
  bool push(std::string token) {
    std::lock_guard lock(mutex_);
    if (cancelled_) return false;
    ++produced_;
    text_ += token;
    pending_.push_back(std::move(token));
    changed_.notify_all();
    return true;
  }
  void finish() {
    std::lock_guard lock(mutex_);
    finished_ = true;
    changed_.notify_all();
  }

  const std::uint64_t target_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::string> pending_;
  std::string text_;
  std::uint64_t produced_ = 0;
  bool finished_ = false;
  bool cancelled_ = false;
  bool started_ = false;
};

struct GpuPoolOptions {
  std::size_t workers = 4;                               // completions produced at once
  std::size_t queue_capacity = 64;                       // completions waiting for a busy worker; more are refused
  std::chrono::microseconds latency_per_token{2000};     // time to produce one output token
};

class GpuPool {
 public:
  explicit GpuPool(GpuPoolOptions options) : options_(options) {
    for (std::size_t i = 0; i < options_.workers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~GpuPool() { stop(); }
  GpuPool(const GpuPool&) = delete;
  GpuPool& operator=(const GpuPool&) = delete;

  // Queues a completion of `tokens` tokens; nullptr when the queue is full or the pool is stopping.
  std::shared_ptr<Completion> submit(std::uint64_t tokens) {
    auto completion = std::make_shared<Completion>(tokens);
    {
      std::lock_guard lock(mutex_);
      // Queued completions take the idle workers first; only the rest wait, up to the capacity.
      const std::size_t idle = options_.workers - busy_;
      if (stopping_ || queue_.size() >= options_.queue_capacity + idle) return nullptr;
      queue_.push_back(completion);
    }
    wake_.notify_one();
    return completion;
  }

  // Completions waiting for a worker now.
  std::size_t queued() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }

  // Finishes the queued completions, then joins the workers. Idempotent.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

 private:
  void work() {
    for (;;) {
      std::shared_ptr<Completion> completion;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing left to finish
        completion = std::move(queue_.front());
        queue_.pop_front();
        ++busy_;
      }
      produce(*completion);
      std::lock_guard lock(mutex_);
      --busy_;
    }
  }

  void produce(Completion& completion) const {
    static constexpr const char* filler[] = {"the", "model", "says", "hello", "to", "you", "and", "counts"};
    const bool runs = completion.start();
    for (std::uint64_t i = 0; runs && i < completion.target_; ++i) {
      if (options_.latency_per_token.count() > 0) std::this_thread::sleep_for(options_.latency_per_token);
      std::string token = i == 0 ? "echo:" : filler[i % 8];
      token += ' ';
      if (!completion.push(std::move(token))) break;
    }
    completion.finish();
  }

  const GpuPoolOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Completion>> queue_;
  std::size_t busy_ = 0;  // workers producing a completion now
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace gateway
