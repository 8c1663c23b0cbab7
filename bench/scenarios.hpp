// SPDX-License-Identifier: MIT
#pragma once
// Key sets and scenarios. A key set is N users sharing one model, with short ids ("u42" / "llama", inside the
// small-string buffer) or long ones (a 36-character UUID user, a 20-character model name). Key sets are built
// once per process, on first use, and kept (so the 1M-key sets are not rebuilt per benchmark).

#include <airl/quota.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace airl_bench {

enum class IdStyle { short_ids, uuid_ids };

constexpr std::string_view to_string(IdStyle style) noexcept {
  return style == IdStyle::short_ids ? "short" : "uuid";
}

struct KeySet {
  std::vector<std::string> users;
  std::string model;
  std::size_t size() const noexcept { return users.size(); }
};

// A UUID-shaped, 36-character user id derived from i (distinct for distinct i).
inline std::string uuid_user(std::uint64_t i) {
  const std::uint64_t mixed = i * 0x9e3779b97f4a7c15ull;
  std::array<char, 40> text{};
  std::snprintf(text.data(), text.size(), "%08llx-%04llx-4%03llx-a%03llx-%012llx",
                static_cast<unsigned long long>(mixed >> 32), static_cast<unsigned long long>((mixed >> 16) & 0xffff),
                static_cast<unsigned long long>(mixed & 0xfff), static_cast<unsigned long long>((i >> 48) & 0xfff),
                static_cast<unsigned long long>(i & 0xffffffffffffull));
  return std::string(text.data(), 36);
}

inline KeySet make_key_set(std::size_t count, IdStyle style) {
  KeySet keys;
  keys.model = style == IdStyle::short_ids ? "llama" : "meta-llama-3-70b-ins";  // 5 / 20 characters
  keys.users.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    // append() rather than "u" + std::to_string(i): g++ 12 warns falsely (-Wrestrict) on the latter.
    keys.users.push_back(style == IdStyle::short_ids ? std::string("u").append(std::to_string(i)) : uuid_user(i));
  }
  return keys;
}

// The process-wide key set of this size and style. Thread safety: safe.
inline const KeySet& key_set(std::size_t count, IdStyle style) {
  static std::mutex mutex;
  static std::map<std::pair<std::size_t, IdStyle>, KeySet> sets;
  std::lock_guard lock(mutex);
  auto found = sets.find({count, style});
  if (found == sets.end()) found = sets.emplace(std::pair{count, style}, make_key_set(count, style)).first;
  return found->second;
}

// How the threads of a benchmark walk the key set.
enum class Walk {
  round_robin,  // every thread cycles over all keys
  per_thread,   // thread t uses key t only (distinct hot keys)
};

struct Scenario {
  std::string name;
  std::size_t keys = 1;
  IdStyle ids = IdStyle::short_ids;
  airl::Quota quota{100, std::chrono::seconds(1)};
  std::uint64_t cost = 1;  // 0: a fixed pseudo-random sequence of costs in 1..4000
  Walk walk = Walk::round_robin;
  bool prefill = false;    // one pass over every key before timing, so the timed loop finds existing keys
};

// The cost sequence for Scenario::cost == 0: 4096 costs spread over 1..4000.
inline const std::vector<std::uint64_t>& mixed_costs() {
  static const std::vector<std::uint64_t> costs = [] {
    std::vector<std::uint64_t> out(4096);
    std::uint64_t state = 0x2545f4914f6cdd1dull;
    for (auto& cost : out) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      cost = 1 + state % 4000;
    }
    return out;
  }();
  return costs;
}

}  // namespace airl_bench
