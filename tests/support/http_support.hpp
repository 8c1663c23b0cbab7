// SPDX-License-Identifier: MIT
#pragma once
// Helpers of the <airl/http.hpp> tests (tests/ai_serving/http_test.cpp, tests/redis/redis_http_test.cpp): the
// usual pair of tiers and a lookup of one header by name.

#include <airl/airl.hpp>
#include <airl/http.hpp>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace airl::test {

// The value of header `name`, or "(absent)".
inline std::string header(const std::vector<http::Header>& headers, std::string_view name) {
  for (const http::Header& h : headers) {
    if (h.name == name) return h.value;
  }
  return "(absent)";
}

// 3 requests per 60 s and 1000 tokens per 90 s per user and model.
inline std::vector<Tier> rpm_and_tpm(const std::string& prefix = "") {
  using namespace std::chrono_literals;
  return {{prefix + "rpm", Scope::user_model, {3, 60s}, Unit::requests},
          {prefix + "tpm", Scope::user_model, {1000, 90s}, Unit::cost}};
}

}  // namespace airl::test
