// SPDX-License-Identifier: MIT
#pragma once
// The soak's mixed load: a few client threads, each in one role, every request with its own X-Request-Id
// and a bounded client timeout, each loop ending by itself at the deadline.
//
//   hot       users hot-0..3, three in four on the first model, small plain requests far above their limits:
//             mostly 429, and both the user_model and the user bucket full
//   stream    users stream-0..1, streamed replies read to [DONE] (a stream that ends early is a finding)
//   cancel    users cancel-0..1, streams the client abandons after their second token (it closes the connection)
//   settle    the settler (settle_check.hpp): plain and streamed, each one's cost read back from Redis
//   users     a flood of unique users: the next of many keys each time, so every request makes new buckets
//   ids       a flood of unique request ids on one user whose plan allows hundreds per window

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ledger.hpp"
#include "settle_check.hpp"

namespace airl_soak {

inline const std::vector<std::string> soak_models = {"llama", "mistral"};

// What one request got.
struct Outcome {
  int status = 0;  // 0: no answer head
  bool degraded = false;
  Span span;
  std::string body;
  bool cancelled = false;  // the client abandoned it on purpose
};

// POSTs a completion with `key` and `id`; `cancel_after_events` > 0: abandons the stream once that many SSE
// events arrived. Every wait bounded: 2 s to connect, 10 s per read or write.
inline Outcome post_chat(int port, const std::string& key, const std::string& id, const std::string& body,
                         int cancel_after_events = 0) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(10, 0);
  client.set_write_timeout(10, 0);
  Outcome out;
  httplib::Request request;
  request.method = "POST";
  request.path = "/v1/chat/completions";
  request.headers = {{"Authorization", "Bearer " + key}, {"X-Request-Id", id}, {"Content-Type", "application/json"}};
  request.body = body;
  request.response_handler = [&out](const httplib::Response& response) {
    out.span.answered_us = now_us();
    out.status = response.status;
    out.degraded = response.get_header_value("X-Airl-Degraded") == "1";
    return true;
  };
  int events = 0;
  request.content_receiver = [&](const char* data, std::size_t size, std::uint64_t, std::uint64_t) {
    out.body.append(data, size);
    if (cancel_after_events > 0 && out.status == 200) {
      for (std::size_t at = out.body.size() - size; (at = out.body.find("data: ", at)) != std::string::npos; at += 6) {
        ++events;
      }
      if (events >= cancel_after_events) {
        out.cancelled = true;
        return false;  // httplib closes the connection
      }
    }
    return true;
  };
  out.span.sent_us = now_us();
  client.send(request);
  return out;
}

inline std::string chat_json(const std::string& model, std::uint64_t max_tokens, bool stream,
                             const std::string& content = "hi") {
  return R"({"model":")" + model + R"(","messages":[{"role":"user","content":")" + content +
         R"("}],"max_tokens":)" + std::to_string(max_tokens) +
         (stream ? R"(,"stream":true,"stream_options":{"include_usage":true}})" : "}");
}

// The number after the last `"name":` in a JSON text, or nullopt (none, or the text ends there).
inline std::optional<std::uint64_t> json_number(const std::string& text, const std::string& name) {
  const std::size_t at = text.rfind("\"" + name + "\":");
  if (at == std::string::npos) return std::nullopt;
  try {
    return std::stoull(text.substr(at + name.size() + 3));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// Counts of one role, kept by its thread.
struct RoleStats {
  std::uint64_t sent = 0, admitted = 0, admitted_degraded = 0, denied = 0, overloaded = 0, replayed = 0,
                other_status = 0, no_answer = 0, streams_complete = 0, streams_broken = 0, cancelled = 0;
  std::string first_surprise;  // the first wrong answer, for the report

  RoleStats& operator+=(const RoleStats& o) {
    sent += o.sent, admitted += o.admitted, admitted_degraded += o.admitted_degraded, denied += o.denied;
    overloaded += o.overloaded, replayed += o.replayed, other_status += o.other_status, no_answer += o.no_answer;
    streams_complete += o.streams_complete, streams_broken += o.streams_broken, cancelled += o.cancelled;
    if (first_surprise.empty()) first_surprise = o.first_surprise;
    return *this;
  }
};

struct LoadOptions {
  int port = 0;
  std::string id_prefix;  // every X-Request-Id starts with it (the run's seed)
  int flood_users = 0;    // keys sk-flood-0.. of the config
  std::chrono::steady_clock::time_point until;
};

class Load {
 public:
  Load(LoadOptions options, Ledger& ledger, const SettleChecker& settle, std::uint64_t seed)
      : options_(std::move(options)), ledger_(ledger), settle_(settle), seed_(seed) {}

  // Runs every role on its own thread until the deadline; returns when all have stopped.
  void run() {
    roles_ = {"hot", "hot", "stream", "cancel", "settle", "users", "ids"};
    stats_.assign(roles_.size(), RoleStats{});
    std::vector<std::thread> threads;
    for (std::size_t r = 0; r < roles_.size(); ++r) {
      threads.emplace_back([this, r] { run_role(roles_[r], r, stats_[r]); });
    }
    for (std::thread& thread : threads) thread.join();
  }

  std::vector<SettleObservation> settled() const {
    std::lock_guard lock(mutex_);
    return settled_;
  }

  // Prints the answers by role and in all; returns the totals. Call after run().
  RoleStats print_answers() const {
    const auto row = [](const std::string& name, const RoleStats& s) {
      std::printf("%-7s %7llu %8llu %9llu %7llu %5llu %5llu %6llu %7llu %9llu %7llu %9llu\n", name.c_str(),
                  static_cast<unsigned long long>(s.sent), static_cast<unsigned long long>(s.admitted),
                  static_cast<unsigned long long>(s.admitted_degraded), static_cast<unsigned long long>(s.denied),
                  static_cast<unsigned long long>(s.overloaded), static_cast<unsigned long long>(s.replayed),
                  static_cast<unsigned long long>(s.other_status), static_cast<unsigned long long>(s.no_answer),
                  static_cast<unsigned long long>(s.streams_complete),
                  static_cast<unsigned long long>(s.streams_broken),
                  static_cast<unsigned long long>(s.cancelled));
    };
    std::printf("\n== answers by role\n%-7s %7s %8s %9s %7s %5s %5s %6s %7s %9s %7s %9s\n", "role", "sent", "admitted",
                "degraded", "denied", "503", "409", "other", "no-ans", "streams", "broken", "cancelled");
    RoleStats all;
    for (std::size_t r = 0; r < roles_.size(); ++r) {
      row(roles_[r], stats_[r]);
      all += stats_[r];
    }
    row("all", all);
    return all;
  }

  // How many client connections the load may hold open at once: one per role thread.
  static constexpr std::uint64_t connections = 7;

 private:
  void run_role(const std::string& role, std::size_t index, RoleStats& stats) {
    std::mt19937_64 random(seed_ + index);
    const auto pick = [&](std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(random); };
    std::uint64_t n = 0;
    while (std::chrono::steady_clock::now() < options_.until) {
      const std::string id = options_.id_prefix + "-" + std::to_string(index) + "-" + std::to_string(n++);
      const std::string& model = soak_models[pick(2)];
      auto pause = std::chrono::milliseconds(10);
      if (role == "hot") {  // three in four on the first model: both its user_model bucket and the user's fill
        const std::string user = "hot-" + std::to_string(pick(4));
        const std::string& skewed = soak_models[pick(4) == 0 ? 1 : 0];
        record(stats, user, skewed, post_chat(options_.port, "sk-" + user, id, chat_json(skewed, 2, false)));
      } else if (role == "stream" || role == "cancel") {
        const std::string user = role + "-" + std::to_string(pick(2));
        const bool cancel = role == "cancel";
        // Cancelled at the third event: the role chunk, then two tokens of sixteen.
        const Outcome out = post_chat(options_.port, "sk-" + user, id, chat_json(model, 16, true), cancel ? 3 : 0);
        record(stats, user, model, out);
        pause = std::chrono::milliseconds(20);
      } else if (role == "settle") {
        settle_one(stats, model, id, pick(2) == 0, 17 + pick(48), std::string(1 + pick(200), 'x'));
        pause = std::chrono::milliseconds(5);
      } else if (role == "users") {
        const std::string user = "flood-" + std::to_string(n % static_cast<std::uint64_t>(options_.flood_users));
        record(stats, user, model, post_chat(options_.port, "sk-" + user, id, chat_json(model, 2, false)));
        pause = std::chrono::milliseconds(5);
      } else if (role == "ids") {
        record(stats, "idflood", model, post_chat(options_.port, "sk-idflood", id, chat_json(model, 1, false)));
        pause = std::chrono::milliseconds(2);
      }
      std::this_thread::sleep_for(pause);
    }
  }

  // Counts an answer and logs an admission in the ledger.
  void record(RoleStats& stats, const std::string& user, const std::string& model, const Outcome& out) {
    ++stats.sent;
    const auto surprise = [&](const std::string& what) {
      if (stats.first_surprise.empty()) stats.first_surprise = user + " " + model + ": " + what;
    };
    switch (out.status) {
      case 0:
        ++stats.no_answer;  // within the client's timeouts: reported (a slow machine), not a wrong answer
        return;
      case 200:
        ++stats.admitted;
        if (out.degraded) ++stats.admitted_degraded;
        ledger_.admitted(user, model, out.degraded, out.span);
        break;
      case 429: ++stats.denied; return;
      case 503: ++stats.overloaded; return;  // every GPU busy and the queue full: refunded, not admitted
      case 409:
        ++stats.replayed;
        surprise("409 " + out.body);
        return;
      default:
        ++stats.other_status;
        surprise(std::to_string(out.status) + " " + out.body.substr(0, 200));
        return;
    }
    if (out.cancelled) {
      ++stats.cancelled;
    } else if (out.body.rfind("data: ", 0) == 0) {  // a stream: it must end with the usage and [DONE]
      const bool complete = out.body.ends_with("data: [DONE]\n\n") && out.body.find("\"usage\"") != std::string::npos;
      ++(complete ? stats.streams_complete : stats.streams_broken);
      const std::size_t tail = std::min<std::size_t>(out.body.size(), 120);
      if (!complete) surprise("stream ended early: ..." + out.body.substr(out.body.size() - tail));
    }
  }

  void settle_one(RoleStats& stats, const std::string& model, const std::string& id, bool stream,
                  std::uint64_t max_tokens, const std::string& content) {
    static const std::string user = "settler";
    Outcome out = post_chat(options_.port, "sk-settler", id, chat_json(model, max_tokens, stream, content));
    record(stats, user, model, out);
    if (out.status != 200 || out.cancelled) return;
    const std::optional<std::uint64_t> total = json_number(out.body, "total_tokens");
    const std::optional<std::uint64_t> prompt = json_number(out.body, "prompt_tokens");
    if (!total || !prompt) return;  // a broken stream: already a finding
    SettleObservation observation;
    observation.span.sent_us = out.span.sent_us;
    observation.id = id;
    observation.degraded = out.degraded;
    observation.settled = *total;
    observation.reserved = *prompt + max_tokens;
    settle_.read(model, observation);
    std::lock_guard lock(mutex_);
    settled_.push_back(std::move(observation));
  }

  LoadOptions options_;
  Ledger& ledger_;
  const SettleChecker& settle_;
  std::uint64_t seed_;
  std::vector<std::string> roles_;
  std::vector<RoleStats> stats_;
  mutable std::mutex mutex_;
  std::vector<SettleObservation> settled_;
};

}  // namespace airl_soak
