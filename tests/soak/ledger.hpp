// SPDX-License-Identifier: MIT
#pragma once
// The soak's record of admissions, kept by the clients, and the check that no bucket admitted more than its
// limit in any window.
//
// A request's decision happens at some instant between the moment the client sent it and the moment the
// answer's head arrived: [sent, answered], both on the system clock (CLOCK_REALTIME, the clock Redis's TIME
// reads; the local fallback store reads the steady clock, which runs at the same rate). A bucket of limit L
// over a window W admits a request only if fewer than L admissions logged after now - W still count. So
// L + 1 admissions whose intervals all fit in a span shorter than W are impossible: the last of them would
// have seen the other L. The check flags exactly that, so it never fires on a correct gateway however
// late answers arrive (the spans only widen), and it fires on any extra admission that lands within
// W - (a request's latency) of the ones before it.
//
// Which admissions count: a 200 without X-Airl-Degraded was decided by Redis (whose log, with appendfsync
// always, survives every restart: see soak_main.cpp); a 200 with it was decided by the gateway's local
// fallback store (--failure-policy local), which has its own log. Each set is checked on its own against
// the limit; together they may reach 2 L in a window that spans an outage, as `local` allows by design.
// A request whose answer never arrived is in neither set: leaving out admissions only widens spans.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace airl_soak {

using SystemClock = std::chrono::system_clock;

// Microseconds on the system clock.
inline std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(SystemClock::now().time_since_epoch()).count();
}

struct Span {
  std::int64_t sent_us = 0;
  std::int64_t answered_us = 0;
};

// L + 1 admissions of one bucket, decided within [first_sent_us, last_answered_us]: impossible when that is
// shorter than the window.
struct Violation {
  std::size_t admissions = 0;  // L + 1
  std::int64_t first_sent_us = 0;
  std::int64_t last_answered_us = 0;
  std::int64_t span_us() const { return last_answered_us - first_sent_us; }
};

// The tightest set of limit + 1 admissions in `spans`: for each admission i (by sent time), the
// (limit + 1)-th earliest answer among the admissions sent in [sent_i, sent_i + 2 W); those limit + 1 were all
// decided in [sent_i, that answer]. nullopt when no such set fits in 2 W (a set the bound leaves out spans
// more than 2 W). An over-admission when its span is shorter than `window_us`. Pure.
inline std::optional<Violation> tightest_set(std::vector<Span> spans, std::size_t limit, std::int64_t window_us) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.sent_us < b.sent_us; });
  std::optional<Violation> tightest;
  std::vector<std::int64_t> answers;
  for (std::size_t i = 0; i < spans.size(); ++i) {
    answers.clear();
    for (std::size_t j = i; j < spans.size() && spans[j].sent_us - spans[i].sent_us < 2 * window_us; ++j) {
      answers.push_back(spans[j].answered_us);
    }
    if (answers.size() <= limit) continue;
    std::nth_element(answers.begin(), answers.begin() + static_cast<std::ptrdiff_t>(limit), answers.end());
    const Violation set{limit + 1, spans[i].sent_us, answers[limit]};
    if (set.span_us() < 2 * window_us && (!tightest || set.span_us() < tightest->span_us())) tightest = set;
  }
  return tightest;
}

inline std::optional<Violation> over_admission(std::vector<Span> spans, std::size_t limit, std::int64_t window_us) {
  std::optional<Violation> tightest = tightest_set(std::move(spans), limit, window_us);
  if (tightest && tightest->span_us() < window_us) return tightest;
  return std::nullopt;
}

// The check must be able to fail: a planted extra admission is caught, a full bucket refilled only as its
// entries expire is not. Returns whether both hold (soak_main.cpp refuses to run otherwise).
inline bool over_admission_self_check() {
  constexpr std::int64_t window = 10'000'000;
  std::vector<Span> fair;
  for (std::int64_t k = 0; k < 60; ++k) {  // 3 admissions per window, each 2 ms to answer, refilled on expiry
    const std::int64_t at = (k / 3) * (window + 1'000) + (k % 3) * 5'000;
    fair.push_back({at, at + 2'000});
  }
  std::vector<Span> planted = fair;
  planted.push_back({fair[30].sent_us + 1'000, fair[30].sent_us + 3'000});  // a fourth within one window
  return !over_admission(fair, 3, window) && over_admission(planted, 3, window).has_value();
}

// Admissions by bucket, from every client thread. Thread-safe.
class Ledger {
 public:
  // One admitted request of `user` on `model`; `degraded`: decided by the local fallback store.
  void admitted(const std::string& user, const std::string& model, bool degraded, Span span) {
    std::lock_guard lock(mutex_);
    (degraded ? local_ : redis_)[{user, model}].push_back(span);
  }

  struct Finding {
    std::string bucket;  // e.g. "redis user_model_rpm hot-1/llama"
    Violation set;
  };
  struct Result {
    std::size_t buckets_checked = 0;
    std::size_t admissions_checked = 0;
    std::vector<Finding> findings;  // over-admissions
    std::optional<Finding> closest;  // the tightest set of limit + 1 anywhere: how near the check came
  };

  // Checks every user_model bucket against `user_model_limit(user)` and every user bucket (the user's
  // admissions on all models) against `user_limit(user)`, in both sets. Call after the clients stopped.
  template <class UserModelLimit, class UserLimit>
  Result check(std::int64_t window_us, UserModelLimit&& user_model_limit, UserLimit&& user_limit) const {
    std::lock_guard lock(mutex_);
    Result result;
    const auto judge = [&](const std::string& bucket, const std::vector<Span>& spans, std::size_t limit) {
      ++result.buckets_checked;
      const std::optional<Violation> set = tightest_set(spans, limit, window_us);
      if (!set) return;
      if (set->span_us() < window_us) result.findings.push_back({bucket, *set});
      if (!result.closest || set->span_us() < result.closest->set.span_us()) result.closest = Finding{bucket, *set};
    };
    for (const auto& [store, buckets] : {std::pair{"redis", &redis_}, std::pair{"local", &local_}}) {
      std::map<std::string, std::vector<Span>> by_user;
      for (const auto& [key, spans] : *buckets) {
        const auto& [user, model] = key;
        result.admissions_checked += spans.size();
        judge(std::string(store) + " user_model_rpm " + user + "/" + model, spans, user_model_limit(user));
        std::vector<Span>& all = by_user[user];
        all.insert(all.end(), spans.begin(), spans.end());
      }
      for (const auto& [user, spans] : by_user) {
        judge(std::string(store) + " user_rpm " + user, spans, user_limit(user));
      }
    }
    return result;
  }

  // The admissions the local store decided (answered with X-Airl-Degraded).
  std::vector<Span> local_admissions() const {
    std::lock_guard lock(mutex_);
    std::vector<Span> all;
    for (const auto& [key, spans] : local_) all.insert(all.end(), spans.begin(), spans.end());
    return all;
  }

 private:
  using Bucket = std::pair<std::string, std::string>;  // user, model
  mutable std::mutex mutex_;
  std::map<Bucket, std::vector<Span>> redis_;
  std::map<Bucket, std::vector<Span>> local_;
};

}  // namespace airl_soak
