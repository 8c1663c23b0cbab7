// SPDX-License-Identifier: MIT
#pragma once
// The traffic: one client thread per user, each with its own fixed seed, sending bursts of requests for
// three models. Each request asks for a random number of tokens. The client asks its plan's limiter:
// a 200 goes to the GPU workers, a 429 makes the client wait Retry-After (at most max_backoff) and send the
// request again, up to max_attempts times. Clients never wait past the end of the run.

#include <airl/airl.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "gpu_workers.hpp"

namespace demo {

inline constexpr std::array<std::string_view, 3> models = {"llama-3-70b", "mistral-7b", "gpt-oss-20b"};
inline constexpr std::uint64_t min_tokens = 50, max_tokens = 4'000;  // tokens one request asks for
inline constexpr unsigned traffic_seed = 20240601;                    // client i uses traffic_seed + i
inline constexpr int max_attempts = 3;                                // a request is abandoned after 3 429s
inline constexpr std::chrono::milliseconds max_backoff{1000};         // longest wait before a retry
inline constexpr std::chrono::milliseconds max_queue_wait{1000};      // longest wait for GPU queue room

struct UserProfile {
  std::string name;
  std::size_t plan;                     // index into make_plans()
  std::string_view favourite_model;     // half of the user's requests go there
  int max_burst;                        // requests per burst: 1..max_burst
  std::chrono::milliseconds max_pause;  // pause between bursts: 0..max_pause
};

inline std::vector<UserProfile> user_profiles() {
  using namespace std::chrono_literals;
  // Columns: name, plan, favourite model, max_burst, max_pause.
  return {{"ana",  0,    models[0], 8,         300ms},
          {"ben",  0,    models[1], 12,        250ms},
          {"chen", 0,    models[0], 6,         400ms},
          {"dana", 1,    models[2], 16,        200ms},
          {"eli",  1,    models[0], 24,        250ms},
          {"fay",  2,    models[0], 40,        150ms},
          {"gus",  2,    models[0], 48,        200ms}};
}

struct ClientStats {
  std::uint64_t requests = 0;  // distinct requests
  std::uint64_t sent = 0;      // decisions asked for, retries included
  std::uint64_t allowed = 0;
  std::uint64_t denied = 0;   // 429s
  std::uint64_t gave_up = 0;  // requests abandoned after a 429: max_attempts reached, or the run ended
  std::uint64_t admitted_tokens = 0;
  std::uint64_t queue_timeouts = 0;                      // admitted, but no queue room within max_queue_wait
  std::map<std::string, std::uint64_t> denials_by_tier;  // by Decision::reason
  std::chrono::milliseconds retry_after_sum{0};          // over the 429s with a finite Retry-After
  std::uint64_t finite_retry_afters = 0;
  std::vector<std::int64_t> decision_ns;  // how long each allow() took
};

// The sum of the clients' stats; only the users of `plan` when one is given.
inline ClientStats sum_of(const std::vector<UserProfile>& users, const std::vector<ClientStats>& clients,
                          std::optional<std::size_t> plan = std::nullopt) {
  ClientStats sum;
  for (std::size_t i = 0; i < users.size(); ++i) {
    if (plan && users[i].plan != *plan) continue;
    const ClientStats& c = clients[i];
    sum.requests += c.requests;
    sum.sent += c.sent;
    sum.allowed += c.allowed;
    sum.denied += c.denied;
    sum.gave_up += c.gave_up;
    sum.admitted_tokens += c.admitted_tokens;
    sum.queue_timeouts += c.queue_timeouts;
    for (const auto& [tier, count] : c.denials_by_tier) sum.denials_by_tier[tier] += count;
    sum.retry_after_sum += c.retry_after_sum;
    sum.finite_retry_afters += c.finite_retry_afters;
    sum.decision_ns.insert(sum.decision_ns.end(), c.decision_ns.begin(), c.decision_ns.end());
  }
  return sum;
}

// Sleeps for `wait`, but not past `deadline`. False if the deadline cut the wait short.
inline bool sleep_before_deadline(Clock::duration wait, Clock::time_point deadline) {
  const Clock::time_point wake = Clock::now() + wait;
  std::this_thread::sleep_until(std::min(wake, deadline));
  return wake < deadline;
}

// One user's client. run() is meant for the client's own thread; `stats` belongs to that thread until it ends.
template <class Storage>
class Client {
 public:
  Client(const UserProfile& user, std::size_t index, airl::MultiTierLimiter<Storage>& limiter, GpuWorkers& gpus,
         ClientStats& stats)
      : user_(user), limiter_(limiter), gpus_(gpus), stats_(stats), rng_(traffic_seed + index) {
    stats_.decision_ns.reserve(4096);
  }

  // Sends bursts until `deadline`.
  void run(Clock::time_point deadline) {
    std::uniform_int_distribution<int> burst_size(1, user_.max_burst);
    std::uniform_int_distribution<std::chrono::milliseconds::rep> pause_ms(0, user_.max_pause.count());
    while (Clock::now() < deadline) {
      for (int i = burst_size(rng_); i > 0 && Clock::now() < deadline; --i) send(deadline);
      sleep_before_deadline(std::chrono::milliseconds(pause_ms(rng_)), deadline);
    }
  }

 private:
  std::string_view pick_model() {
    if (std::bernoulli_distribution(0.5)(rng_)) return user_.favourite_model;
    return models[std::uniform_int_distribution<std::size_t>(0, models.size() - 1)(rng_)];
  }

  // One request, sent until it is admitted or abandoned.
  void send(Clock::time_point deadline) {
    const std::uint64_t tokens = std::uniform_int_distribution<std::uint64_t>(min_tokens, max_tokens)(rng_);
    const airl::Request request{user_.name, pick_model(), tokens};
    ++stats_.requests;
    for (int attempt = 1;; ++attempt) {
      const airl::Decision decision = timed_allow(request);
      if (decision) {
        admit(request);
        return;
      }
      record_denial(decision);
      const bool retry = attempt < max_attempts && decision.retry_after != airl::Decision::never &&
                         sleep_before_deadline(std::min(decision.retry_after, max_backoff), deadline);
      if (!retry) {
        ++stats_.gave_up;
        return;
      }
    }
  }

  airl::Decision timed_allow(const airl::Request& request) {
    const Clock::time_point started = Clock::now();
    airl::Decision decision = limiter_.allow(request);
    stats_.decision_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count());
    ++stats_.sent;
    return decision;
  }

  void admit(const airl::Request& request) {
    ++stats_.allowed;
    stats_.admitted_tokens += request.cost;
    if (!gpus_.submit(Job{request.cost}, max_queue_wait)) ++stats_.queue_timeouts;
  }

  void record_denial(const airl::Decision& decision) {
    ++stats_.denied;
    ++stats_.denials_by_tier[decision.reason];
    if (decision.retry_after != airl::Decision::never) {
      stats_.retry_after_sum += decision.retry_after;
      ++stats_.finite_retry_afters;
    }
  }

  const UserProfile& user_;
  airl::MultiTierLimiter<Storage>& limiter_;
  GpuWorkers& gpus_;
  ClientStats& stats_;
  std::mt19937 rng_;
};

}  // namespace demo
