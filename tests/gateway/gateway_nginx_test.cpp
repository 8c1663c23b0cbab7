// SPDX-License-Identifier: MIT
// nginx (a real one, from the Debian package) in front of an inference server, asking the gateway before
// each request with auth_request: examples/nginx/airl-sidecar.conf, run on free 127.0.0.1 ports.

#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "gateway_support.hpp"

using namespace std::chrono_literals;
using airl_test::chat_body;
using airl_test::GatewayProcess;
using airl_test::TempDir;

namespace {

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size()) text.replace(at, from.size(), to);
  return text;
}

class NginxProcess {
 public:
  NginxProcess(const TempDir& dir, int sidecar_port, int upstream_port) : port_(airl_test::free_loopback_port()) {
    std::string config = airl_test::read_file(AIRL_SOURCE_DIR "/examples/nginx/airl-sidecar.conf");
    REQUIRE(config.find("server 127.0.0.1:8080;") != std::string::npos);  // the ports this test moves
    config = replace_all(config, "server 127.0.0.1:8080;", "server 127.0.0.1:" + std::to_string(sidecar_port) + ";");
    config = replace_all(config, "server 127.0.0.1:8081;", "server 127.0.0.1:" + std::to_string(upstream_port) + ";");
    config = replace_all(config, "listen 127.0.0.1:8000;", "listen 127.0.0.1:" + std::to_string(port_) + ";");
    const std::string prefix = dir.file("nginx");
    std::filesystem::create_directories(prefix + "/tmp");
    std::filesystem::permissions(prefix, std::filesystem::perms(0755));
    std::filesystem::permissions(prefix + "/tmp", std::filesystem::perms(0755));
    const std::string path = dir.write("nginx.conf", config);
    process_ = std::make_unique<airl_test::ChildProcess>(
        std::vector<std::string>{airl_test::find_program("nginx"), "-p", prefix, "-c", path, "-e", "stderr"},
        dir.file("nginx.log"));
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!process_->running()) FAIL("nginx exited at start:\n" << process_->log());
      httplib::Client probe("127.0.0.1", port_);
      probe.set_connection_timeout(0, 200'000);
      if (probe.Get("/")) return;  // any answer: it listens
      std::this_thread::sleep_for(20ms);
    }
    FAIL("nginx did not answer within 10 s:\n" << process_->log());
  }

  httplib::Result chat(const std::string& key, const std::string& model, const std::string& estimate = "") const {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(20, 0);
    httplib::Headers headers = {{"Authorization", "Bearer " + key}, {"X-Model", model}};
    if (!estimate.empty()) headers.emplace("X-Estimated-Tokens", estimate);
    return client.Post("/v1/chat/completions", headers, chat_body(model, 5), "application/json");
  }
  std::string log() const { return process_->log(); }

 private:
  int port_;
  std::unique_ptr<airl_test::ChildProcess> process_;
};

}  // namespace

TEST_CASE("nginx auth_request to the sidecar: admitted requests reach the model server, then 429 with the headers",
          "[gateway][nginx]") {
  TempDir dir;
  GatewayProcess sidecar(dir, "key sk-alice alice\nlimit user_model_rpm 2\nlimit user_model_tpm 1000\n");
  GatewayProcess model_server(dir, "key unused nobody\n", {"--unlimited"});  // behind nginx: no limits
  NginxProcess nginx(dir, sidecar.port(), model_server.port());
  INFO(nginx.log());

  for (int remaining = 1; remaining >= 0; --remaining) {
    auto res = nginx.chat("sk-alice", "llama", "300");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->body.find("\"object\":\"chat.completion\"") != std::string::npos);  // the model server answered
    CHECK(res->get_header_value("x-ratelimit-remaining-requests") == std::to_string(remaining));
    CHECK(res->get_header_value("x-ratelimit-remaining-tokens") == std::to_string(1000 - 300 * (2 - remaining)));
    CHECK(res->get_header_value("RateLimit").find("\"user_model_rpm\";r=" + std::to_string(remaining)) == 0);
  }
  auto refused = nginx.chat("sk-alice", "llama", "300");
  REQUIRE(refused);
  CHECK(refused->status == 429);
  CHECK(refused->get_header_value("Content-Type") == "application/json");
  CHECK(refused->body.find(R"("code":"rate_limit_exceeded")") != std::string::npos);
  CHECK(refused->body.find("Rate limit reached on user_model_rpm") != std::string::npos);
  CHECK(refused->get_header_value("Retry-After") == "60");
  CHECK(std::stoull(refused->get_header_value("retry-after-ms")) > 59'000);
  CHECK(refused->get_header_value("RateLimit").find("\"user_model_rpm\";r=0;t=") == 0);
  CHECK(refused->get_header_value("RateLimit-Policy").find("\"user_model_rpm\";q=2;w=60") == 0);
  CHECK(refused->get_header_value("x-ratelimit-limit-requests") == "2");

  // The model server saw exactly the two admitted requests; an unknown key stops at nginx with 401.
  CHECK(airl_test::metric_value(model_server.metrics(), "airl_gateway_responses_total{code=\"200\"}") == Approx(2));
  auto unknown = nginx.chat("sk-nobody", "llama");
  REQUIRE(unknown);
  CHECK(unknown->status == 401);
  auto made_up = nginx.chat("sk-alice", "llama-made-up");  // a model the sidecar does not serve
  REQUIRE(made_up);
  CHECK(made_up->status == 404);
  CHECK(made_up->body.find(R"("code":"model_not_found")") != std::string::npos);
  CHECK(airl_test::metric_value(model_server.metrics(), "airl_gateway_responses_total{code=\"200\"}") == Approx(2));
}
