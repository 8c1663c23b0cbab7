// SPDX-License-Identifier: MIT
#pragma once
// The gateway's HTTP routes on cpp-httplib:
//   POST /v1/chat/completions   authenticate, parse, admit (caps + RPM/TPM, reserving the estimated tokens),
//                               run on a simulated GPU, reply (plain or streamed), settle the actual tokens
//   GET|POST /v1/ratelimit/check  the sidecar decision for nginx auth_request: 204 admitted, 403 refused
//                               (X-Airl-Status says 429 or 503), 401 unknown key; it decides, nothing else
//   GET /metrics                the limiters' and the gateway's Prometheus text
//   GET /healthz                the backend's health now (readiness); GET /livez the process (liveness)

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <airl/airl.hpp>
#include <airl/http.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "chat_request.hpp"
#include "gateway_config.hpp"
#include "gateway_limits.hpp"
#include "gateway_metrics.hpp"
#include "gpu_pool.hpp"

namespace gateway {

struct ServerOptions {
  ChatLimits chat;                        // max_tokens bounds
  std::size_t max_body_bytes = 64 * 1024;  // larger bodies get 400
  std::uint64_t reply_tokens = 16;        // the simulated model answers min(max_tokens, reply_tokens) tokens
  bool fail_closed = false;               // a degraded backend makes /healthz 503 (fail_closed denies anyway)
};

class GatewayServer {
  using Clock = std::chrono::steady_clock;

 public:
  // `limits` null: serve completions with no limits at all (the model server behind nginx in the sidecar
  // setup). Keeps references: config, pool and metrics outlive the server.
  GatewayServer(const Config& config, Limits* limits, GpuPool& pool, GatewayMetrics& metrics, ServerOptions options)
      : config_(config), limits_(limits), pool_(pool), metrics_(metrics), options_(options),
        id_prefix_(random_id_prefix()) {}

  // Installs the routes and the error handler on `server`.
  void install(httplib::Server& server) {
    server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      const Clock::time_point arrived = Clock::now();
      in_flight_.fetch_add(1, std::memory_order_acq_rel);
      bool streaming = false;
      if (draining_.load(std::memory_order_acquire)) {
        res.set_header("Retry-After", "1");
        res.set_header("Connection", "close");
        set_problem(res, 503, "Service Unavailable", "this gateway is shutting down: retry on another");
      } else {
        streaming = chat(req, res, arrived);
      }
      if (!streaming) {  // a stream counts, and leaves in_flight_, when it ends
        metrics_.add_request_time(Clock::now() - arrived);
        in_flight_.fetch_sub(1, std::memory_order_acq_rel);
      }
      metrics_.count_response(res.status);
    });
    const auto check = [this](const httplib::Request& req, httplib::Response& res) {
      sidecar_check(req, res);
      metrics_.count_response(res.status);
    };
    server.Get("/v1/ratelimit/check", check);
    server.Post("/v1/ratelimit/check", check);
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      std::string text = limits_ ? limits_->metrics_text() : std::string();
      text += metrics_.text(pool_.queued());
      res.set_content(text, "text/plain; version=0.0.4; charset=utf-8");
    });
    server.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) { healthz(res); });
    server.Get("/livez", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
    server.set_payload_max_length(options_.max_body_bytes);
    // Errors httplib produces itself (an oversized body, an unknown route) get a problem+json body too; an
    // oversized body is a caller mistake like any malformed one: 400, with the limit in the detail.
    server.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours, already complete
      if (res.status == 413) {
        res.status = 400;
        set_problem(res, 400, "Bad Request",
                    "body larger than " + std::to_string(options_.max_body_bytes) + " bytes");
      } else {
        set_problem(res, res.status, reason_phrase(res.status), "");
      }
      metrics_.count_response(res.status);
      return httplib::Server::HandlerResponse::Handled;
    }));
  }

  // Set on SIGTERM: /healthz answers 503 so a load balancer stops sending, new completions get 503, and
  // the ones in flight (streams included) finish while the server still runs.
  void set_draining() { draining_.store(true, std::memory_order_release); }

  // Completion requests being handled or streamed now.
  std::uint64_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

 private:
  struct Caller {
    const std::string* user;
    const std::string* plan;
  };

  // The caller behind the bearer key, or nullopt with a 401 written.
  std::optional<Caller> authenticate(const httplib::Request& req, httplib::Response& res) const {
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view scheme = "Bearer ";
    const auto found = header.starts_with(scheme) ? config_.keys.find(header.substr(scheme.size())) : config_.keys.end();
    if (found == config_.keys.end()) {
      res.set_header("WWW-Authenticate", "Bearer");
      set_problem(res, 401, "Unauthorized", "send Authorization: Bearer <an API key from the gateway's config>");
      return std::nullopt;
    }
    return Caller{&found->second.user, &found->second.plan};
  }

  // The client's X-Request-Id (so a retry is not charged twice), or a fresh one; nullopt with a 400 written.
  std::optional<std::string> request_id(const httplib::Request& req, httplib::Response& res) {
    std::string id = req.get_header_value("X-Request-Id");
    if (id.empty()) return id_prefix_ + std::to_string(next_id_.fetch_add(1, std::memory_order_relaxed));
    const bool printable = std::all_of(id.begin(), id.end(), [](char c) { return c > ' ' && c < 127; });
    if (id.size() > 128 || !printable) {
      set_problem(res, 400, "Bad Request", "X-Request-Id must be 1 to 128 printable ASCII characters");
      return std::nullopt;
    }
    return id;
  }

  // Returns true when the reply is a stream still to be sent (its time is counted when it ends).
  bool chat(const httplib::Request& req, httplib::Response& res, Clock::time_point arrived) {
    // With no limits (the model server behind a sidecar) the sidecar has already checked the key.
    static const std::string anonymous = "anonymous", no_plan;
    const std::optional<Caller> caller = limits_ ? authenticate(req, res) : Caller{&anonymous, &no_plan};
    if (!caller) return false;
    ChatRequest chat;
    try {
      chat = parse_chat_request(req.body, options_.chat);
    } catch (const ParseError& error) {
      set_problem(res, 400, "Bad Request", error.what());
      return false;
    }
    const std::optional<std::string> id = request_id(req, res);
    if (!id) return false;
    res.set_header("X-Request-Id", *id);

    auto flight = std::make_shared<Flight>();
    flight->user = *caller->user;
    flight->model = chat.model;
    flight->id = *id;
    flight->prompt_tokens = chat.prompt_tokens;
    flight->arrived = arrived;
    if (limits_ && !admit(req, res, *caller, chat, *flight)) return false;

    const std::uint64_t tokens = std::min(chat.max_tokens, options_.reply_tokens);
    flight->completion = pool_.submit(tokens);
    if (!flight->completion) {
      metrics_.count_queue_full();
      finish(*flight);  // settles at 0 produced: the reserved tokens come back
      res.set_header("Retry-After", "1");
      set_problem(res, 503, "Service Unavailable", "every simulated GPU is busy and the queue is full");
      return false;
    }
    const auto bound = std::chrono::milliseconds(30'000) + std::chrono::milliseconds(tokens * 1000);
    if (!chat.stream) {
      if (!flight->completion->wait_finished(bound)) flight->completion->cancel();
      const std::uint64_t produced = flight->completion->produced();
      res.set_content(completion_json(*flight, produced, tokens).dump(), "application/json");
      finish(*flight);
      return false;
    }
    flight->streaming = true;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, flight, tokens, bound](std::size_t, httplib::DataSink& sink) {
          if (std::optional<std::string> token = flight->completion->next(bound)) {
            const std::string chunk = "data: " + chunk_json(*flight, *token).dump() + "\n\n";
            return sink.write(chunk.data(), chunk.size());
          }
          // Settled before the last chunk goes out: a client that sends its next request the moment it reads
          // [DONE] already sees the unused reservation refunded.
          finish(*flight);
          const std::string last = "data: " + completion_json(*flight, flight->completion->produced(), tokens, true).dump() +
                                   "\n\ndata: [DONE]\n\n";
          sink.write(last.data(), last.size());
          sink.done();
          return true;
        },
        [this, flight](bool) {
          flight->completion->cancel();  // no-op when it finished; stops the worker when the client left
          flight->completion->wait_finished(std::chrono::milliseconds(1000));
          finish(*flight);
          in_flight_.fetch_sub(1, std::memory_order_acq_rel);
        });
    return true;
  }

  // One admitted request in flight: what settling it needs, and its concurrency slot.
  struct Flight {
    std::string user, model, id;
    std::uint64_t prompt_tokens = 0;
    Clock::time_point arrived;
    std::shared_ptr<Completion> completion;
    airl::Permit permit;
    bool limited = false;
    bool streaming = false;
    bool finished = false;  // settled and counted
  };

  // Decides the request; on a refusal writes the 429/503 and returns false.
  bool admit(const httplib::Request&, httplib::Response& res, const Caller& caller, const ChatRequest& chat,
             Flight& flight) {
    const airl::Request request{*caller.user, chat.model, chat.prompt_tokens + chat.max_tokens, flight.id, *caller.plan};
    const Clock::time_point start = Clock::now();
    Admission admission;
    try {
      admission = limits_->admit(request, /*hold_slot=*/true);
    } catch (const std::invalid_argument& error) {
      set_problem(res, 400, "Bad Request", error.what());
      return false;
    } catch (const airl::BackendError& error) {
      // A storage without a failure policy that cannot answer (the shipped ones answer by their policy).
      set_problem(res, 503, "Service Unavailable", error.what());
      return false;
    }
    metrics_.add_limiter_time(Clock::now() - start);
    if (admission.cap_refused) {
      cap_refused(res, admission.permit);
      return false;
    }
    const std::vector<airl::Tier> tiers = limits_->tiers_for(*caller.user, chat.model, *caller.plan);
    for (const airl::http::Header& header : airl::http::response_headers(admission.decision, tiers)) {
      res.set_header(header.name, header.value);
    }
    if (admission.decision.degraded) res.set_header("X-Airl-Degraded", "1");
    if (admission.decision.replayed) {
      // This id was admitted already within the window. airl does not charge a replay; running the completion
      // again would serve it for free, so a reused id is refused (a retry must wait for, or re-send with a new
      // id after, the first reply).
      admission.permit.release();
      set_problem(res, 409, "Conflict", "X-Request-Id '" + flight.id + "' was already admitted in this window");
      return false;
    }
    if (!admission.admitted) {
      const int status = airl::http::status_code(admission.decision);
      res.status = status;
      res.set_content(airl::http::problem_json(admission.decision), std::string(airl::http::problem_content_type));
      return false;
    }
    flight.permit = std::move(admission.permit);
    flight.limited = true;
    return true;
  }

  // A concurrency cap (or its store) refused: the library's answer for a refused permit, 429 (or 503 when the
  // store is unavailable under fail_closed) with a short Retry-After: a slot frees when a request ends.
  void cap_refused(httplib::Response& res, const airl::Permit& permit) {
    for (const airl::http::Header& header : airl::http::response_headers(permit)) res.set_header(header.name, header.value);
    if (permit.degraded()) res.set_header("X-Airl-Degraded", "1");
    res.status = airl::http::status_code(permit);
    res.set_content(airl::http::problem_json(permit), std::string(airl::http::problem_content_type));
  }

  // After the reply: settle the reservation at the tokens actually used, give the slot back, count.
  // Runs once per request (the stream's last chunk and its releaser both call it, on one thread).
  void finish(Flight& flight) {
    if (flight.finished) return;
    flight.finished = true;
    const std::uint64_t produced = flight.completion ? flight.completion->produced() : 0;
    if (flight.limited) {
      const Clock::time_point start = Clock::now();
      try {
        limits_->settle(flight.user, flight.model, flight.id, flight.prompt_tokens + produced);
      } catch (const std::exception&) {
        // The reservation stays as charged: an outage costs the caller the estimate, never the gateway a crash.
      }
      metrics_.add_limiter_time(Clock::now() - start);
      flight.permit.release();
    }
    if (flight.completion) metrics_.count_tokens(flight.prompt_tokens, produced);
    if (flight.streaming) metrics_.add_request_time(Clock::now() - flight.arrived);
  }

  void sidecar_check(const httplib::Request& req, httplib::Response& res) {
    if (!limits_) {
      set_problem(res, 404, "Not Found", "this gateway runs --unlimited: it decides nothing");
      return;
    }
    const std::optional<Caller> caller = authenticate(req, res);
    if (!caller) return;
    const std::string model = req.get_header_value("X-Airl-Model");
    std::uint64_t cost = 1;
    if (const std::string text = req.get_header_value("X-Airl-Cost"); !text.empty()) {
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), cost);
      if (error != std::errc{} || end != text.data() + text.size() || cost == 0) {
        set_problem(res, 400, "Bad Request", "X-Airl-Cost must be a positive integer");
        return;
      }
    }
    std::string id = req.get_header_value("X-Request-Id");
    if (!id.empty() && !request_id(req, res)) return;  // the same rules as for completions
    const Clock::time_point start = Clock::now();
    Admission admission;
    try {
      admission = limits_->admit({*caller->user, model, cost, id, *caller->plan}, /*hold_slot=*/false);
    } catch (const std::invalid_argument& error) {
      set_problem(res, 400, "Bad Request", error.what());  // an empty or over-long model
      return;
    } catch (const airl::BackendError& error) {
      res.status = 403;
      res.set_header("X-Airl-Status", "503");
      set_problem(res, 503, "Service Unavailable", error.what());
      res.status = 403;
      res.set_header("X-Airl-Problem", res.body);
      return;
    }
    metrics_.add_limiter_time(Clock::now() - start);
    const std::vector<airl::Tier> tiers = limits_->tiers_for(*caller->user, model, *caller->plan);
    for (const airl::http::Header& header : airl::http::response_headers(admission.decision, tiers)) {
      res.set_header(header.name, header.value);
    }
    if (admission.decision.replayed) {  // as for completions: a reused id would pass for free
      res.status = 403;
      res.set_header("X-Airl-Status", "409");
      set_problem(res, 409, "Conflict", "X-Request-Id '" + id + "' was already admitted in this window");
      res.status = 403;
      return;
    }
    if (admission.admitted) {
      res.status = 204;
      return;
    }
    // auth_request passes only 2xx, 401 and 403 on: the real status and body travel in headers.
    res.status = 403;
    res.set_header("X-Airl-Status", std::to_string(airl::http::status_code(admission.decision)));
    res.set_header("X-Airl-Problem", airl::http::problem_json(admission.decision));
    res.set_content(airl::http::problem_json(admission.decision), std::string(airl::http::problem_content_type));
  }

  void healthz(httplib::Response& res) {
    Health health = limits_ ? limits_->health() : Health{true, "none", ""};
    const bool draining = draining_.load(std::memory_order_relaxed);
    nlohmann::json body = {{"status", draining ? "draining" : health.healthy ? "ok" : "degraded"},
                           {"backend", health.backend}};
    if (!health.detail.empty()) body["detail"] = health.detail;
    // Degraded still serves under fail_open and local (keep the pod in rotation); under fail_closed it would
    // only refuse, so it reports not ready.
    res.status = draining || (!health.healthy && options_.fail_closed) ? 503 : 200;
    res.set_content(body.dump() + "\n", "application/json");
  }

  nlohmann::json completion_json(const Flight& flight, std::uint64_t produced, std::uint64_t target,
                                 bool as_chunk = false) const {
    nlohmann::json usage = {{"prompt_tokens", flight.prompt_tokens},
                            {"completion_tokens", produced},
                            {"total_tokens", flight.prompt_tokens + produced}};
    const char* finish_reason = produced < target ? "cancelled" : "length";
    nlohmann::json json = {{"id", "chatcmpl-" + flight.id},
                           {"object", as_chunk ? "chat.completion.chunk" : "chat.completion"},
                           {"created", static_cast<std::int64_t>(std::time(nullptr))},
                           {"model", flight.model},
                           {"usage", usage}};
    if (as_chunk) {
      json["choices"] = {{{"index", 0}, {"delta", nlohmann::json::object()}, {"finish_reason", finish_reason}}};
    } else {
      json["choices"] = {{{"index", 0},
                          {"message", {{"role", "assistant"}, {"content", flight.completion->text()}}},
                          {"finish_reason", finish_reason}}};
    }
    return json;
  }

  static nlohmann::json chunk_json(const Flight& flight, const std::string& token) {
    return {{"id", "chatcmpl-" + flight.id},
            {"object", "chat.completion.chunk"},
            {"model", flight.model},
            {"choices", {{{"index", 0}, {"delta", {{"content", token}}}, {"finish_reason", nullptr}}}}};
  }

  static std::string_view reason_phrase(int status) {
    switch (status) {
      case 400: return "Bad Request";
      case 404: return "Not Found";
      case 405: return "Method Not Allowed";
      case 408: return "Request Timeout";
      case 414: return "URI Too Long";
      case 431: return "Request Header Fields Too Large";
      default: return status >= 500 ? "Server Error" : "Client Error";
    }
  }

  static void set_problem(httplib::Response& res, int status, std::string_view title, std::string_view detail) {
    res.status = status;
    nlohmann::json body = {{"type", "about:blank"}, {"title", title}, {"status", status}};
    if (!detail.empty()) body["detail"] = detail;
    // dump with replace: a detail quoting invalid UTF-8 from the request must not make dump() throw
    res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                    std::string(airl::http::problem_content_type));
  }

  // Generated ids carry a random per-process prefix, so two gateway processes never reuse each other's ids.
  static std::string random_id_prefix() {
    std::random_device device;
    char text[32];
    std::snprintf(text, sizeof text, "gw-%08x%08x-", device(), device());
    return text;
  }

  const Config& config_;
  Limits* limits_;
  GpuPool& pool_;
  GatewayMetrics& metrics_;
  const ServerOptions options_;
  const std::string id_prefix_;
  std::atomic<std::uint64_t> next_id_{0};
  std::atomic<bool> draining_{false};
  std::atomic<std::uint64_t> in_flight_{0};
};

}  // namespace gateway
