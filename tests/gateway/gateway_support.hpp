// SPDX-License-Identifier: MIT
#pragma once
// Starts airl_gateway (the binary built from examples/gateway) on free 127.0.0.1 ports (API and admin) with a
// config written for the test, waits until it answers, and talks to it over HTTP. Stopped by its own PID.

#include <httplib.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "redis_server.hpp"
#include "process.hpp"

#ifndef AIRL_GATEWAY_BINARY
#error "AIRL_GATEWAY_BINARY must name the airl_gateway binary (tests/gateway/CMakeLists.txt sets it)"
#endif

namespace airl_test {

using airl::test::free_loopback_port;
using airl::test::RedisServer;

// The model every test config serves (with_models adds it), and a second one.
inline const std::string test_model = "llama";
inline const std::string other_model = "mistral";

// A gateway config: the models line the gateway requires, then `rest`.
inline std::string with_models(const std::string& rest) { return "model " + test_model + "\nmodel " + other_model + "\n" + rest; }

inline std::string chat_body(const std::string& model, std::uint64_t max_tokens, bool stream = false,
                             const std::string& content = "hello") {
  return R"({"model":")" + model + R"(","messages":[{"role":"user","content":")" + content +
         R"("}],"max_tokens":)" + std::to_string(max_tokens) +
         (stream ? R"(,"stream":true,"stream_options":{"include_usage":true}})" : "}");
}

// The estimated prompt tokens of chat_body's single message (chat_request.hpp: bytes / 4 + 1, plus 3).
inline std::uint64_t prompt_tokens_of(const std::string& content) { return content.size() / 4 + 1 + 3; }

class GatewayProcess {
 public:
  // `config` gets the test models first (with_models).
  GatewayProcess(const TempDir& dir, const std::string& config, std::vector<std::string> flags = {}, int port = 0)
      : port_(port != 0 ? port : free_loopback_port()), admin_port_(free_loopback_port()) {
    while (admin_port_ == port_) admin_port_ = free_loopback_port();
    const std::string name = "gateway-" + std::to_string(port_);
    std::vector<std::string> args = {AIRL_GATEWAY_BINARY, "--config", dir.write(name + ".conf", with_models(config)),
                                     "--port", std::to_string(port_), "--admin-port", std::to_string(admin_port_)};
    args.insert(args.end(), flags.begin(), flags.end());
    process_ = std::make_unique<ChildProcess>(args, dir.file(name + ".log"));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);  // sanitizer builds start slowly
    while (std::chrono::steady_clock::now() < deadline) {
      if (!process_->running()) throw std::runtime_error("airl_gateway exited at start:\n" + process_->log());
      // Both ports are bound before either listener runs: the API's connections wait in its backlog.
      httplib::Client probe("127.0.0.1", admin_port_);
      probe.set_connection_timeout(0, 200'000);
      if (auto livez = probe.Get("/livez"); livez && livez->status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("airl_gateway did not answer within 20 s:\n" + process_->log());
  }

  int port() const noexcept { return port_; }
  int admin_port() const noexcept { return admin_port_; }
  ChildProcess& process() { return *process_; }

  httplib::Client client() const {
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(2, 0);
    client.set_read_timeout(20, 0);
    return client;
  }

  // POST /v1/chat/completions with `key` as the bearer key (none when empty).
  httplib::Result chat(const std::string& key, const std::string& body, httplib::Headers headers = {}) const {
    if (!key.empty()) headers.emplace("Authorization", "Bearer " + key);
    return client().Post("/v1/chat/completions", headers, body, "application/json");
  }

  httplib::Result get(const std::string& path) const { return client().Get(path.c_str()); }

  // GET on the admin port (/livez, /healthz, /metrics).
  httplib::Result admin_get(const std::string& path) const {
    httplib::Client client("127.0.0.1", admin_port_);
    client.set_connection_timeout(2, 0);
    client.set_read_timeout(20, 0);
    return client.Get(path.c_str());
  }

  std::string metrics() const {
    auto res = admin_get("/metrics");
    if (!res || res->status != 200) throw std::runtime_error("GET /metrics failed");
    return res->body;
  }

 private:
  int port_;
  int admin_port_;
  std::unique_ptr<ChildProcess> process_;
};

// The value of the sample `name` (with its labels, as written) in Prometheus text; nullopt when absent.
inline std::optional<double> metric_value(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 && line[name.size()] == ' ') {
      return std::stod(line.substr(name.size() + 1));
    }
  }
  return std::nullopt;
}

inline std::uint64_t header_number(const httplib::Result& res, const std::string& name) {
  if (!res || !res->has_header(name)) throw std::runtime_error("no " + name + " header");
  return std::stoull(res->get_header_value(name));
}

}  // namespace airl_test
