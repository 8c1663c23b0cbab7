// SPDX-License-Identifier: MIT
// A bounded load run: wrk (the Debian package) for a few seconds against a real gateway, far above the
// limits. No errors but 429s, no crash, and the 2xx count is what the limits allow.
//
// Why the tolerance: the window (60 s) outlasts the run, so the gateway admits exactly users x limit, which
// its own counters must show with no tolerance at all. wrk counts a reply only once it has read it, and
// stops with up to one request per connection still in flight: so wrk's 2xx may fall short of the
// gateway's by at most the number of connections.

#include <catch2/catch.hpp>

#include <cstdio>
#include <regex>
#include <string>

#include "gateway_support.hpp"

using airl_test::GatewayProcess;
using airl_test::metric_value;
using airl_test::TempDir;

namespace {

constexpr int users = 4;
constexpr int limit_per_user = 250;
constexpr int connections = 8;

// Each request goes out with the next of the users' keys, in turn.
const char* wrk_script = R"(
local keys = {"sk-load-0", "sk-load-1", "sk-load-2", "sk-load-3"}
local n = 0
wrk.method = "POST"
wrk.body = '{"model":"llama","messages":[{"role":"user","content":"hi"}],"max_tokens":8}'
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  wrk.headers["Authorization"] = "Bearer " .. keys[(n % #keys) + 1]
  return wrk.format()
end
)";

double number_after(const std::string& text, const std::string& label) {
  std::smatch match;
  if (!std::regex_search(text, match, std::regex(label + R"(\s+([0-9.]+))"))) return -1;
  return std::stod(match[1].str());
}

}  // namespace

TEST_CASE("wrk for 3 s far above the limits: only 2xx and 429, and the 2xx are what the limits allow",
          "[gateway][load]") {
  TempDir dir;
  std::string config = "window_ms 60000\nlimit user_model_rpm " + std::to_string(limit_per_user) +
                       "\nlimit user_model_tpm 100000000\nlimit user_rpm 100000000\nlimit user_tpm 100000000\n"
                       "limit model_rpm 100000000\nlimit model_tpm 100000000\n"
                       "in_flight user 64\n";
  for (int u = 0; u < users; ++u) config += "key sk-load-" + std::to_string(u) + " load-user-" + std::to_string(u) + "\n";
  GatewayProcess gateway(dir, config, {"--us-per-token", "0", "--reply-tokens", "8", "--gpu-workers", "4"});

  const std::string script = dir.write("rotate_keys.lua", wrk_script);
  const std::string command = airl_test::find_program("wrk") + " -t2 -c" + std::to_string(connections) +
                              " -d3s --timeout 5s -s " + script + " http://127.0.0.1:" + std::to_string(gateway.port()) +
                              "/v1/chat/completions > " + dir.file("wrk.txt") + " 2>&1";
  REQUIRE(std::system(command.c_str()) == 0);
  const std::string report = airl_test::read_file(dir.file("wrk.txt"));
  INFO(report);

  std::smatch requests_line;
  REQUIRE(std::regex_search(report, requests_line, std::regex(R"(([0-9]+) requests in)")));
  const double total = std::stod(requests_line[1].str());
  const double non_2xx = report.find("Non-2xx or 3xx responses:") == std::string::npos
                             ? 0 : number_after(report, "Non-2xx or 3xx responses:");
  CHECK(report.find("Socket errors") == std::string::npos);  // no connect, read, write or timeout errors
  REQUIRE(total > 0);

  const std::string metrics = gateway.metrics();
  const double allowed = metric_value(metrics, "airl_gateway_responses_total{code=\"200\"}").value_or(-1);
  const double limited = metric_value(metrics, "airl_gateway_responses_total{code=\"429\"}").value_or(-1);
  const double admitted = users * limit_per_user;
  CHECK(allowed == Approx(admitted));                              // exact: the window outlasts the run
  CHECK(metric_value(metrics, "airl_decisions_total{result=\"allowed\"}") == Approx(admitted));
  REQUIRE(limited > 0);                                            // the load was above the limits
  for (const char* code : {"204", "400", "401", "403", "404", "503", "other"}) {
    INFO(code);
    CHECK(metric_value(metrics, std::string("airl_gateway_responses_total{code=\"") + code + "\"}") == Approx(0));
  }
  const double wrk_2xx = total - non_2xx;
  CHECK(wrk_2xx <= admitted);
  CHECK(wrk_2xx >= admitted - connections);
  CHECK(total <= allowed + limited);
  CHECK(total >= allowed + limited - connections);

  const double request_seconds = metric_value(metrics, "airl_gateway_request_seconds_sum").value_or(0);
  const double limiter_seconds = metric_value(metrics, "airl_gateway_limiter_seconds_sum").value_or(0);
  const double limiter_calls = metric_value(metrics, "airl_gateway_limiter_seconds_count").value_or(0);
  std::printf("wrk: %.0f requests in 3 s (%.0f/s, mean latency %s), %.0f admitted, %.0f refused with 429; "
              "limiter: %.1f us per call, %.1f%% of the gateway's handler time\n",
              total, number_after(report, "Requests/sec:"),
              std::regex_replace(report, std::regex(R"([\s\S]*Latency\s+(\S+)[\s\S]*)"), "$1").c_str(), allowed, limited,
              limiter_calls > 0 ? 1e6 * limiter_seconds / limiter_calls : 0.0,
              request_seconds > 0 ? 100.0 * limiter_seconds / request_seconds : 0.0);
}
