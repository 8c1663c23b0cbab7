// SPDX-License-Identifier: MIT
#pragma once
// The gateway's own metrics, beside the limiters': responses by status, the refusals the gateway makes itself
// by reason (airl's own refusals are in airl_denials_total), the time requests take and the share of it spent
// in the limiters, the GPU queue. Relaxed atomics: each counter is read on its own.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace gateway {

// Why the gateway refused a request or a connection itself, before or after airl decided it.
inline constexpr std::array<std::string_view, 12> refusal_reasons = {
    "unauthenticated",   "invalid_request",      "model_not_found",  "body_too_large",
    "request_timeout",   "headers_too_large",    "request_id_reused", "too_many_connections",
    "too_many_connections_from_address",         "queue_full",       "draining", "not_found"};

class GatewayMetrics {
 public:
  static constexpr std::array<int, 12> codes = {200, 204, 400, 401, 403, 404, 408, 409, 413, 429, 431, 503};

  // `status` as a handler leaves it: -1 means httplib will send 200.
  void count_response(int status) {
    if (status == -1) status = 200;
    for (std::size_t i = 0; i < codes.size(); ++i) {
      if (codes[i] == status) {
        responses_[i].fetch_add(1, std::memory_order_relaxed);
        return;
      }
    }
    other_responses_.fetch_add(1, std::memory_order_relaxed);
  }
  void add_request_time(std::chrono::nanoseconds elapsed) {
    request_ns_.fetch_add(static_cast<std::uint64_t>(elapsed.count()), std::memory_order_relaxed);
    requests_.fetch_add(1, std::memory_order_relaxed);
  }
  void add_limiter_time(std::chrono::nanoseconds elapsed) {
    limiter_ns_.fetch_add(static_cast<std::uint64_t>(elapsed.count()), std::memory_order_relaxed);
    limiter_calls_.fetch_add(1, std::memory_order_relaxed);
  }
  // A refusal the gateway made itself; `reason` is one of refusal_reasons (others are not counted: a bug).
  void count_refusal(std::string_view reason) {
    for (std::size_t i = 0; i < refusal_reasons.size(); ++i) {
      if (refusal_reasons[i] == reason) {
        refusals_[i].fetch_add(1, std::memory_order_relaxed);
        return;
      }
    }
  }
  void count_tokens(std::uint64_t prompt, std::uint64_t completion) {
    prompt_tokens_.fetch_add(prompt, std::memory_order_relaxed);
    completion_tokens_.fetch_add(completion, std::memory_order_relaxed);
  }

  // Prometheus text exposition (format 0.0.4), `queued` being the GPU queue's depth now.
  std::string text(std::size_t queued) const {
    std::string out;
    const auto family = [&](const char* name, const char* type, const char* help) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    };
    const auto sample = [&](const std::string& name, std::uint64_t value) {
      out += name + " " + std::to_string(value) + "\n";
    };
    const auto seconds = [&](const std::string& name, const std::atomic<std::uint64_t>& ns) {
      const std::uint64_t value = ns.load(std::memory_order_relaxed);
      out += name + " " + std::to_string(value / 1'000'000'000) + "." + pad9(value % 1'000'000'000) + "\n";
    };
    family("airl_gateway_responses_total", "counter", "Responses sent, by HTTP status.");
    for (std::size_t i = 0; i < codes.size(); ++i) {
      sample("airl_gateway_responses_total{code=\"" + std::to_string(codes[i]) + "\"}", load(responses_[i]));
    }
    sample("airl_gateway_responses_total{code=\"other\"}", load(other_responses_));
    family("airl_gateway_refusals_total", "counter",
           "Requests and connections the gateway refused itself, by reason (airl's refusals: airl_denials_total).");
    for (std::size_t i = 0; i < refusal_reasons.size(); ++i) {
      sample("airl_gateway_refusals_total{reason=\"" + std::string(refusal_reasons[i]) + "\"}", load(refusals_[i]));
    }
    family("airl_gateway_request_seconds", "summary",
           "Time from a completion request's arrival to its reply (streams: to the last chunk).");
    seconds("airl_gateway_request_seconds_sum", request_ns_);
    sample("airl_gateway_request_seconds_count", load(requests_));
    family("airl_gateway_limiter_seconds", "summary", "Time spent in the limiters: admissions and settles.");
    seconds("airl_gateway_limiter_seconds_sum", limiter_ns_);
    sample("airl_gateway_limiter_seconds_count", load(limiter_calls_));
    family("airl_gateway_queue_depth", "gauge", "Completions waiting for a simulated GPU worker.");
    sample("airl_gateway_queue_depth", queued);
    family("airl_gateway_tokens_total", "counter", "Tokens served (prompt as estimated, completion as produced).");
    sample("airl_gateway_tokens_total{kind=\"prompt\"}", load(prompt_tokens_));
    sample("airl_gateway_tokens_total{kind=\"completion\"}", load(completion_tokens_));
    return out;
  }

 private:
  static std::uint64_t load(const std::atomic<std::uint64_t>& value) { return value.load(std::memory_order_relaxed); }
  static std::string pad9(std::uint64_t fraction) {
    std::string digits = std::to_string(fraction);
    return std::string(9 - digits.size(), '0') + digits;
  }

  std::array<std::atomic<std::uint64_t>, codes.size()> responses_{};
  std::atomic<std::uint64_t> other_responses_{0};
  std::atomic<std::uint64_t> request_ns_{0}, requests_{0};
  std::atomic<std::uint64_t> limiter_ns_{0}, limiter_calls_{0};
  std::array<std::atomic<std::uint64_t>, refusal_reasons.size()> refusals_{};
  std::atomic<std::uint64_t> prompt_tokens_{0}, completion_tokens_{0};
};

}  // namespace gateway
