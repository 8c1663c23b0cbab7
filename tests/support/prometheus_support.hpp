// SPDX-License-Identifier: MIT
#pragma once
// Helpers of the <airl/prometheus.hpp> tests (tests/ai_serving/prometheus_test.cpp,
// tests/redis/redis_prometheus_test.cpp): one sample read back from the exposition text.

#include <cstddef>
#include <string>

namespace airl::test {

// The sample line of `name` (with its labels), e.g. "airl_active_keys", or "(absent)".
inline std::string sample(const std::string& text, const std::string& name) {
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t end = text.find('\n', at);
    const std::string line = text.substr(at, end - at);
    if (line.rfind(name + " ", 0) == 0) return line.substr(name.size() + 1);
    at = end == std::string::npos ? text.size() : end + 1;
  }
  return "(absent)";
}

}  // namespace airl::test
