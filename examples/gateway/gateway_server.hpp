// SPDX-License-Identifier: MIT
#pragma once
// The gateway's HTTP routes, on the API listener:
//   POST /v1/chat/completions   authenticate (before reading the body), read a bounded body, parse, check the
//                               model, admit (caps + RPM/TPM, reserving the estimated tokens), run on a
//                               simulated GPU, reply (plain or streamed), settle the actual tokens
//   GET /v1/models, GET /v1/models/{id}   the configured models, as OpenAI lists them
//   GET|POST /v1/ratelimit/check  the sidecar decision for nginx auth_request: 204 admitted, 403 refused
//                               (X-Airl-Status says 429, 503, 404...), 401 unknown key; it decides, nothing else
// and on the admin listener (its own port and threads, so no API load can starve it):
//   GET /metrics                the limiters' and the gateway's Prometheus text
//   GET /healthz                the backend's health now (readiness); GET /livez the process (liveness)
// Errors are answered in OpenAI's shape (api_error.hpp), or as problem+json when the client's Accept asks.

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <airl/airl.hpp>
#include <airl/http.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include "api_error.hpp"
#include "api_keys.hpp"
#include "chat_request.hpp"
#include "gateway_config.hpp"
#include "gateway_limits.hpp"
#include "gateway_metrics.hpp"
#include "gpu_pool.hpp"
#include "http_listener.hpp"
#include "openai_wire.hpp"

namespace gateway {

struct ServerOptions {
  std::size_t max_body_bytes = 64 * 1024;            // larger request bodies get 413, refused while reading
  std::uint64_t reply_tokens = 16;                   // the simulated model answers min(max_tokens, this) tokens
  bool fail_closed = false;                          // a degraded backend makes /healthz 503
  std::chrono::milliseconds slot_retry_after{1000};  // the hint when an in-flight cap is full
};

class GatewayServer {
  using Clock = std::chrono::steady_clock;

 public:
  // `limits` null: serve completions with no limits at all (the model server behind nginx in the sidecar
  // setup). Keeps references: config, pool and metrics outlive the server.
  GatewayServer(const Config& config, Limits* limits, GpuPool& pool, GatewayMetrics& metrics, ServerOptions options)
      : config_(config), keys_(config.keys), limits_(limits), pool_(pool), metrics_(metrics), options_(options),
        id_prefix_(random_id_prefix()) {}

  // The API routes.
  void install_api(Router& router) {
    router.Post("/v1/chat/completions",
                [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& body) {
                  completions(req, res, body);
                });
    router.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      if (!limits_ || authenticate(req, res)) res.set_content(model_list_json(config_.models).dump(), "application/json");
      metrics_.count_response(res.status);
    });
    router.Get("/v1/models/(.+)", [this](const httplib::Request& req, httplib::Response& res) {
      if (!limits_ || authenticate(req, res)) {
        const std::string model = req.matches[1];
        if (config_.serves(model)) {
          res.set_content(model_json(model).dump(), "application/json");
        } else {
          model_not_found(req, res, model);
        }
      }
      metrics_.count_response(res.status);
    });
    const auto check = [this](const httplib::Request& req, httplib::Response& res) {
      sidecar_check(req, res);
      metrics_.count_response(res.status);
    };
    router.Get("/v1/ratelimit/check", check);
    // POST routes take their body through a content reader, so none is read before the route decides. A body
    // left unread (the check takes none; a refusal comes before reading) closes the connection after the reply.
    router.Post("/v1/ratelimit/check",
                [check](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader&) {
                  check(req, res);
                });
    const auto unknown = [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader&) {
      reply_error(req, res, {404, "invalid_request_error", "unknown_url", "no route " + req.method + " " + req.path});
      metrics_.count_refusal("not_found");
      metrics_.count_response(404);
    };
    router.Post(".*", unknown);
    router.Put(".*", unknown);
    router.Patch(".*", unknown);
    router.Delete(".*", unknown);
    install_error_handler(router);
  }

  // The admin routes: liveness, readiness and metrics.
  void install_admin(Router& router) {
    router.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      std::string text = limits_ ? limits_->metrics_text() : std::string();
      text += metrics_.text(pool_.queued());
      res.set_content(text, "text/plain; version=0.0.4; charset=utf-8");
    });
    router.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) { healthz(res); });
    router.Get("/livez", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
    install_error_handler(router);
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

  // One admitted request in flight: what settling it needs, and its concurrency slot.
  struct Flight {
    std::string user, model, id;
    std::uint64_t prompt_tokens = 0, max_tokens = 0;
    bool include_usage = false;
    Clock::time_point arrived;
    ReplyHeader reply;
    std::shared_ptr<Completion> completion;
    airl::Permit permit;
    bool limited = false;
    bool streaming = false;
    bool finished = false;  // settled (or refunded) and counted
  };

  // Errors cpp-httplib answers itself (a malformed request line, an unknown GET route) get the same shapes.
  void install_error_handler(Router& router) {
    router.set_error_handler(
        httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours, already complete
          const int status = res.status;
          reply_error(req, res, {status, status >= 500 ? "server_error" : "invalid_request_error",
                                 status == 404 ? "unknown_url" : "", std::string(reason_phrase(status))});
          if (status == 404) metrics_.count_refusal("not_found");
          if (status == 400) metrics_.count_refusal("invalid_request");
          metrics_.count_response(status);
          return httplib::Server::HandlerResponse::Handled;
        }));
  }

  void completions(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& body) {
    const Clock::time_point arrived = Clock::now();
    in_flight_.fetch_add(1, std::memory_order_acq_rel);
    bool streaming = false;
    if (draining_.load(std::memory_order_acquire)) {
      res.set_header("Retry-After", "1");
      res.set_header("retry-after-ms", "1000");
      res.set_header("Connection", "close");
      reply_error(req, res, {503, "server_error", "draining", "this gateway is shutting down: retry on another"});
      metrics_.count_refusal("draining");
    } else {
      streaming = chat(req, res, body, arrived);
    }
    if (!streaming) {  // a stream counts, and leaves in_flight_, when it ends
      metrics_.add_request_time(Clock::now() - arrived);
      in_flight_.fetch_sub(1, std::memory_order_acq_rel);
    }
    metrics_.count_response(res.status);
  }

  // The caller behind the bearer key, or nullopt with a 401 written (the body, if any, left unread).
  std::optional<Caller> authenticate(const httplib::Request& req, httplib::Response& res) {
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view scheme = "Bearer ";
    const ApiKey* found = header.starts_with(scheme) ? keys_.find(std::string_view(header).substr(scheme.size())) : nullptr;
    if (found == nullptr) {
      res.set_header("WWW-Authenticate", "Bearer");
      reply_error(req, res, {401, "invalid_request_error", "invalid_api_key",
                             "Incorrect or missing API key: send Authorization: Bearer <a key from the gateway's config>"});
      metrics_.count_refusal("unauthenticated");
      return std::nullopt;
    }
    return Caller{&found->user, &found->plan};
  }

  // Reads the whole body, at most max_body_bytes and within the request's deadline: true with `out` filled,
  // or false with 413 / 408 / 400 written (the listener closes the connection: the body was not all read).
  bool read_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader,
                 std::string& out) {
    const std::size_t most = options_.max_body_bytes;
    bool too_large = false;
    if (const std::string length = req.get_header_value("Content-Length"); !length.empty()) {
      std::uint64_t declared = 0;
      const auto [end, error] = std::from_chars(length.data(), length.data() + length.size(), declared);
      too_large = error != std::errc{} || end != length.data() + length.size() || declared > most;
    }
    const bool read = !too_large && reader([&](const char* data, std::size_t size) {
      if (size > most - out.size()) {
        too_large = true;
        return false;  // stops reading: the rest is never taken in
      }
      out.append(data, size);
      return true;
    });
    if (read) {
      current_exchange().body_read();
      return true;
    }
    if (too_large) {
      reply_error(req, res, {413, "invalid_request_error", "request_too_large",
                             "the request body is larger than " + std::to_string(most) + " bytes"});
      metrics_.count_refusal("body_too_large");
    } else if (current_exchange().timed_out()) {
      reply_error(req, res, {408, "invalid_request_error", "request_timeout", "the request body did not arrive in time"});
      metrics_.count_refusal("request_timeout");
    } else {
      reply_error(req, res, {400, "invalid_request_error", "", "the request body could not be read"});
      metrics_.count_refusal("invalid_request");
    }
    return false;
  }

  // The client's X-Request-Id (so a retry is not charged twice), or a fresh one; nullopt with a 400 written.
  std::optional<std::string> request_id(const httplib::Request& req, httplib::Response& res) {
    std::string id = req.get_header_value("X-Request-Id");
    if (id.empty()) return id_prefix_ + std::to_string(next_id_.fetch_add(1, std::memory_order_relaxed));
    const bool printable = std::all_of(id.begin(), id.end(), [](char c) { return c > ' ' && c < 127; });
    if (id.size() > 128 || !printable) {
      reply_error(req, res, {400, "invalid_request_error", "", "X-Request-Id must be 1 to 128 printable ASCII characters"});
      metrics_.count_refusal("invalid_request");
      return std::nullopt;
    }
    return id;
  }

  void model_not_found(const httplib::Request& req, httplib::Response& res, const std::string& model) {
    reply_error(req, res, {404, "invalid_request_error", "model_not_found",
                           "The model `" + model + "` does not exist or you do not have access to it."});
    metrics_.count_refusal("model_not_found");
  }

  // Returns true when the reply is a stream still to be sent (its time is counted when it ends).
  bool chat(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader,
            Clock::time_point arrived) {
    // With no limits (the model server behind a sidecar) the sidecar has already checked the key.
    static const std::string anonymous = "anonymous", no_plan;
    const std::optional<Caller> caller = limits_ ? authenticate(req, res) : Caller{&anonymous, &no_plan};
    if (!caller) return false;
    std::string body;
    if (!read_body(req, res, reader, body)) return false;
    ChatRequest chat;
    try {
      chat = parse_chat_request(body, config_.chat);
    } catch (const ParseError& error) {
      reply_error(req, res, {400, "invalid_request_error", "", error.what()});
      metrics_.count_refusal("invalid_request");
      return false;
    }
    if (!config_.serves(chat.model)) {
      model_not_found(req, res, chat.model);
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
    flight->max_tokens = chat.max_tokens;
    flight->include_usage = chat.include_usage;
    flight->arrived = arrived;
    flight->reply = {"chatcmpl-" + *id, chat.model};
    if (limits_ && !admit(req, res, *caller, chat, *flight)) return false;

    const std::uint64_t tokens = std::min(chat.max_tokens, options_.reply_tokens);
    flight->completion = pool_.submit(tokens);
    if (!flight->completion) {
      finish(*flight);  // it never ran: everything it was charged is refunded
      res.set_header("Retry-After", "1");
      res.set_header("retry-after-ms", "1000");
      reply_error(req, res, {503, "server_error", "overloaded", "every GPU is busy and the queue is full; retry shortly"});
      metrics_.count_refusal("queue_full");
      return false;
    }
    const auto bound = std::chrono::milliseconds(30'000) + std::chrono::milliseconds(tokens * 1000);
    if (!chat.stream) {
      if (!flight->completion->wait_finished(bound)) flight->completion->cancel();
      const std::uint64_t produced = flight->completion->produced();
      finish(*flight);
      res.set_content(completion_json(flight->reply, flight->completion->text(),
                                      finish_reason(produced, flight->max_tokens), flight->prompt_tokens, produced)
                          .dump(),
                      "application/json");
      return false;
    }
    flight->streaming = true;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, flight, bound, started = false](std::size_t, httplib::DataSink& sink) mutable {
          if (!started) {  // OpenAI's first chunk: the role, no content yet
            started = true;
            const std::string first = sse_event(chunk_json(flight->reply, {{"role", "assistant"}, {"content", ""}}));
            return sink.write(first.data(), first.size());
          }
          if (std::optional<std::string> token = flight->completion->next(bound)) {
            const std::string chunk = sse_event(chunk_json(flight->reply, {{"content", *token}}));
            return sink.write(chunk.data(), chunk.size());
          }
          // Settled before the last chunks go out: a client that sends its next request the moment it reads
          // [DONE] already sees the unused reservation refunded.
          finish(*flight);
          const std::uint64_t produced = flight->completion->produced();
          std::string last = sse_event(chunk_json(flight->reply, nlohmann::json::object(),
                                                  finish_reason(produced, flight->max_tokens)));
          if (flight->include_usage) last += sse_event(usage_chunk_json(flight->reply, flight->prompt_tokens, produced));
          last += "data: [DONE]\n\n";
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

  // Decides the request; on a refusal writes the 429/503/409 and returns false.
  bool admit(const httplib::Request& req, httplib::Response& res, const Caller& caller, const ChatRequest& chat,
             Flight& flight) {
    const airl::Request request{*caller.user, chat.model, chat.prompt_tokens + chat.max_tokens, flight.id, *caller.plan};
    const Clock::time_point start = Clock::now();
    Admission admission;
    try {
      admission = limits_->admit(request, /*hold_slot=*/true);
    } catch (const std::invalid_argument& error) {
      reply_error(req, res, {400, "invalid_request_error", "", error.what()});
      metrics_.count_refusal("invalid_request");
      return false;
    } catch (const airl::BackendError&) {
      // A storage without a failure policy that cannot answer (the shipped ones answer by their policy).
      res.set_header("Retry-After", "1");
      reply_error(req, res, {503, "server_error", "rate_limit_store_unavailable",
                             std::string(airl::http::store_unavailable_message)});
      return false;
    }
    metrics_.add_limiter_time(Clock::now() - start);
    if (admission.cap_refused) {
      slot_refused(req, res, admission.permit);
      return false;
    }
    const std::vector<airl::Tier> tiers = limits_->tiers_for(*caller.user, chat.model, *caller.plan);
    for (const airl::http::Header& header : airl::http::response_headers(admission.decision, tiers)) {
      res.set_header(header.name, header.value);
    }
    if (admission.decision.degraded) res.set_header("X-Airl-Degraded", "1");
    if (admission.decision.replayed) {
      // This id was admitted already within the window. airl does not charge a replay; running the completion
      // again would serve it for free, so a reused id is refused, and retrying it cannot help.
      admission.permit.release();
      res.set_header("x-should-retry", "false");
      reply_error(req, res, {409, "invalid_request_error", "request_id_reused",
                             "X-Request-Id '" + flight.id + "' was already admitted in this window: send a new id"});
      metrics_.count_refusal("request_id_reused");
      return false;
    }
    if (!admission.admitted) {
      res.status = airl::http::status_code(admission.decision);
      if (wants_problem_json(req)) {
        res.set_content(airl::http::problem_json(admission.decision), std::string(airl::http::problem_content_type));
      } else {
        res.set_content(airl::http::openai_error_json(admission.decision, tiers),
                        std::string(airl::http::openai_content_type));
      }
      return false;
    }
    flight.permit = std::move(admission.permit);
    flight.limited = true;
    return true;
  }

  // An in-flight cap (or its store) refused: the library's answer for a refused permit, 429 (or 503 when the
  // store is unavailable under fail_closed) with a short hint: a slot frees when a request ends.
  void slot_refused(const httplib::Request& req, httplib::Response& res, const airl::Permit& permit) {
    for (const airl::http::Header& header : airl::http::response_headers(permit, options_.slot_retry_after)) {
      res.set_header(header.name, header.value);
    }
    if (permit.degraded()) res.set_header("X-Airl-Degraded", "1");
    res.status = airl::http::status_code(permit);
    if (wants_problem_json(req)) {
      res.set_content(airl::http::problem_json(permit, options_.slot_retry_after),
                      std::string(airl::http::problem_content_type));
    } else {
      res.set_content(airl::http::openai_error_json(permit, options_.slot_retry_after),
                      std::string(airl::http::openai_content_type));
    }
  }

  // After the reply: settle the reservation at the tokens actually used (or refund it all when the completion
  // never started), give the slot back, count. Runs once per request (the stream's last chunk and its
  // releaser both call it, on one thread).
  void finish(Flight& flight) {
    if (flight.finished) return;
    flight.finished = true;
    const bool ran = flight.completion && flight.completion->started();
    const std::uint64_t produced = ran ? flight.completion->produced() : 0;
    if (flight.limited) {
      const Clock::time_point start = Clock::now();
      try {
        if (ran) {
          limits_->settle(flight.user, flight.model, flight.id, flight.prompt_tokens + produced);
        } else {
          limits_->refund(flight.user, flight.model, flight.id);
        }
      } catch (const std::exception&) {
        // The reservation stays as charged: an outage costs the caller the estimate, never the gateway a crash.
      }
      metrics_.add_limiter_time(Clock::now() - start);
      flight.permit.release();
    }
    if (ran) metrics_.count_tokens(flight.prompt_tokens, produced);
    if (flight.streaming) metrics_.add_request_time(Clock::now() - flight.arrived);
  }

  // The sidecar's answer: 204 admitted; a refusal is a 403 whose X-Airl-Status and X-Airl-Problem carry the
  // real status and body (auth_request passes only 2xx, 401 and 403 on).
  void sidecar_check(const httplib::Request& req, httplib::Response& res) {
    if (!limits_) {
      reply_error(req, res, {404, "invalid_request_error", "unknown_url", "this gateway runs --unlimited: it decides nothing"});
      return;
    }
    const std::optional<Caller> caller = authenticate(req, res);
    if (!caller) return;
    const auto refuse = [&](const ApiError& error) {
      reply_error(req, res, error);
      res.status = 403;
      res.set_header("X-Airl-Status", std::to_string(error.status));
      res.set_header("X-Airl-Problem", res.body);
    };
    const std::string model = req.get_header_value("X-Airl-Model");
    if (model.empty()) {
      refuse({400, "invalid_request_error", "", "X-Airl-Model must name the model"});
      metrics_.count_refusal("invalid_request");
      return;
    }
    if (!config_.serves(model)) {
      refuse({404, "invalid_request_error", "model_not_found",
              "The model `" + model + "` does not exist or you do not have access to it."});
      metrics_.count_refusal("model_not_found");
      return;
    }
    std::uint64_t cost = 1;
    if (const std::string text = req.get_header_value("X-Airl-Cost"); !text.empty()) {
      const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), cost);
      if (error != std::errc{} || end != text.data() + text.size() || cost == 0) {
        refuse({400, "invalid_request_error", "", "X-Airl-Cost must be a positive integer"});
        metrics_.count_refusal("invalid_request");
        return;
      }
    }
    const std::string id = req.get_header_value("X-Request-Id");
    if (!id.empty() && !request_id(req, res)) {  // the same rules as for completions
      refuse({400, "invalid_request_error", "", "X-Request-Id must be 1 to 128 printable ASCII characters"});
      return;
    }
    const Clock::time_point start = Clock::now();
    Admission admission;
    try {
      admission = limits_->admit({*caller->user, model, cost, id, *caller->plan}, /*hold_slot=*/false);
    } catch (const std::invalid_argument& error) {
      refuse({400, "invalid_request_error", "", error.what()});
      metrics_.count_refusal("invalid_request");
      return;
    } catch (const airl::BackendError&) {
      refuse({503, "server_error", "rate_limit_store_unavailable", std::string(airl::http::store_unavailable_message)});
      return;
    }
    metrics_.add_limiter_time(Clock::now() - start);
    const std::vector<airl::Tier> tiers = limits_->tiers_for(*caller->user, model, *caller->plan);
    for (const airl::http::Header& header : airl::http::response_headers(admission.decision, tiers)) {
      res.set_header(header.name, header.value);
    }
    if (admission.decision.replayed) {  // as for completions: a reused id would pass for free
      res.set_header("x-should-retry", "false");
      refuse({409, "invalid_request_error", "request_id_reused",
              "X-Request-Id '" + id + "' was already admitted in this window: send a new id"});
      metrics_.count_refusal("request_id_reused");
      return;
    }
    if (admission.admitted) {
      res.status = 204;
      return;
    }
    const std::string body = airl::http::openai_error_json(admission.decision, tiers);
    res.status = 403;
    res.set_header("X-Airl-Status", std::to_string(airl::http::status_code(admission.decision)));
    res.set_header("X-Airl-Problem", body);
    res.set_content(body, std::string(airl::http::openai_content_type));
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
    res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n", "application/json");
  }

  // Generated ids carry a random per-process prefix, so two gateway processes never reuse each other's ids.
  static std::string random_id_prefix() {
    std::random_device device;
    char text[32];
    std::snprintf(text, sizeof text, "gw-%08x%08x-", device(), device());
    return text;
  }

  const Config& config_;
  const ApiKeys keys_;  // the bearer keys, compared in constant time
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
