// SPDX-License-Identifier: MIT
// The official OpenAI Node SDK against a real airl_gateway: tests/gateway/sdk/conformance.mjs, with the
// `openai` package pinned in tests/gateway/sdk/package-lock.json (`make test` runs `npm ci` there first).
// The script's checks: plain and streamed completions, parse(), typed errors with type, code and message,
// retries paced by retry-after-ms, none after x-should-retry: false, settle visible in the next response,
// an in-flight cap's short hint. Missing node or the package fails the test; AIRL_SKIP_SDK=1 skips it
// (reported as skipped, never as passed).

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gateway_support.hpp"

using namespace std::chrono_literals;
using airl_test::GatewayProcess;
using airl_test::TempDir;

TEST_CASE("the official OpenAI SDK: completions, streams, parse(), typed errors, retries paced by the gateway",
          "[gateway][sdk]") {
  if (const char* skip = std::getenv("AIRL_SKIP_SDK"); skip != nullptr && std::string(skip) == "1") {
    std::exit(77);  // skipped on purpose: CTest reports it as skipped (SKIP_RETURN_CODE 77)
  }
  const std::string sdk_dir = AIRL_SOURCE_DIR "/tests/gateway/sdk";
  INFO("the openai package is installed by `npm ci --prefix " << sdk_dir << "` (make test does it)");
  REQUIRE(std::filesystem::exists(sdk_dir + "/node_modules/openai/package.json"));
  const std::string node = airl_test::find_program("node");

  TempDir dir;
  // 4 s windows; plans give each scenario its own user: tight (3 requests), small (300 tokens); in_flight 1.
  GatewayProcess gateway(dir,
                         "window_ms 4000\n"
                         "limit user_model_rpm 1000\nlimit user_model_tpm 100000\nlimit user_rpm 1000\nlimit user_tpm 200000\n"
                         "in_flight user 1\n"
                         "plan tight user_model_rpm=3\nplan small user_model_tpm=300\n"
                         "key sk-main main\nkey sk-tight tight-user tight\nkey sk-small small-user small\nkey sk-cap cap-user\n",
                         {"--reply-tokens", "50", "--us-per-token", "10000", "--slot-retry-after-ms", "300"});
  airl_test::ChildProcess script({node, sdk_dir + "/conformance.mjs", "http://127.0.0.1:" + std::to_string(gateway.port()),
                                  "http://127.0.0.1:" + std::to_string(gateway.admin_port())},
                                 dir.file("conformance.log"));
  const std::optional<int> code = script.wait_exit(120s);
  INFO(script.log());
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  CHECK(script.log().find("ok: ") != std::string::npos);
}
