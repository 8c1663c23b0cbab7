// SPDX-License-Identifier: MIT
#pragma once
// The gateway's config file: the tiers' limits, the concurrency caps, the plans and the API keys.
//
// One directive per line, '#' starts a comment:
//   model llama-3-8b                         a model the gateway serves (at least one; others get 404)
//   window_ms 60000                          every rate tier's sliding window
//   limit user_model_rpm 60                  a tier's default limit (tiers: gateway_tier_names)
//   in_flight user 4                         a concurrency cap per user, per model, or per user_model
//   lease_ms 600000                          how long a crashed request may hold its concurrency slot
//   max_tokens 8192                          the largest max_completion_tokens (or max_tokens) a request may ask
//   default_max_tokens 256                   what a request naming none reserves (and may produce)
//   plan pro user_model_rpm=600 user_tpm=400000   a plan's limits for the per-user tiers
//   key sk-alice-123 alice [plan]            an API key, the user it belongs to, and the user's plan
// Errors name the file and line; nothing is half-applied because the file is parsed before anything starts.
// Whatever the limiters or a request would refuse later is refused here, at its line, so a config that parses
// starts (tests/fuzz/gateway_fuzz.cpp checks it): windows and leases of 1 ms to 366 days, limits and caps of
// at most 2^53, each in_flight scope and plan tier once, model names in valid UTF-8, ids of at most 4096 bytes.

#include <airl/airl.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "chat_request.hpp"

namespace gateway {

// The rate tiers the gateway enforces, all-or-nothing: requests and tokens per user+model and per user across
// all models (a plan may raise or lower these), and per model across all users (protects one model's GPUs
// from everyone together).
inline constexpr std::array<std::string_view, 6> gateway_tier_names = {"user_model_rpm", "user_model_tpm", "user_rpm",
                                                                       "user_tpm",       "model_rpm",      "model_tpm"};
inline constexpr std::size_t per_user_tiers = 4;  // the first four: what plans may set

struct ApiKey {
  std::string user;
  std::string plan;  // "" = the tiers' own limits
};

struct Config {
  std::vector<std::string> models;  // served models, in the order listed
  std::chrono::milliseconds window{60'000};
  std::array<std::uint64_t, 6> limits = {60, 40'000, 120, 80'000, 6'000, 4'000'000};  // by gateway_tier_names
  ChatLimits chat;
  std::vector<airl::ConcurrencyCap> in_flight;                           // empty: no concurrency caps
  std::chrono::milliseconds lease{600'000};
  std::unordered_map<std::string, std::vector<airl::PlanLimit>> plans;
  std::unordered_map<std::string, ApiKey> keys;

  // The limiter's tiers: requests and tokens per user+model, per user, then per model.
  std::vector<airl::Tier> tiers() const {
    using airl::Scope;
    using airl::Unit;
    return {{"user_model_rpm", Scope::user_model, {limits[0], window}, Unit::requests},
            {"user_model_tpm", Scope::user_model, {limits[1], window}, Unit::cost},
            {"user_rpm", Scope::user, {limits[2], window}, Unit::requests},
            {"user_tpm", Scope::user, {limits[3], window}, Unit::cost},
            {"model_rpm", Scope::model, {limits[4], window}, Unit::requests},
            {"model_tpm", Scope::model, {limits[5], window}, Unit::cost}};
  }

  bool serves(std::string_view model) const { return std::find(models.begin(), models.end(), model) != models.end(); }
};

namespace detail {

inline std::uint64_t parse_number(std::string_view text, std::string_view what) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) {
    throw std::invalid_argument(std::string(what) + ": '" + std::string(text) + "' is not a non-negative integer");
  }
  return value;
}

// A limit, plan limit or cap: at most 2^53, what every storage decides exactly (Redis refuses more).
inline std::uint64_t parse_limit(std::string_view text, std::string_view what) {
  const std::uint64_t value = parse_number(text, what);
  if (value > airl::max_exact_count) throw std::invalid_argument(std::string(what) + " must be at most 2^53");
  return value;
}

// A window or lease in milliseconds: 1 ms to 366 days, as the limiters take it.
inline std::chrono::milliseconds parse_duration(std::string_view text, std::string_view what) {
  const std::uint64_t ms = parse_number(text, what);
  if (ms == 0 || ms > static_cast<std::uint64_t>(airl::max_window.count())) {
    throw std::invalid_argument(std::string(what) + " must be 1 to " + std::to_string(airl::max_window.count()) +
                                " (366 days)");
  }
  return std::chrono::milliseconds(ms);
}

// The largest max_tokens: a request's charge (its prompt estimate, bounded by the body, plus max_tokens)
// then stays within 2^53.
inline constexpr std::uint64_t max_tokens_limit = airl::max_exact_count / 2;

inline std::size_t tier_index(std::string_view name) {
  for (std::size_t i = 0; i < gateway_tier_names.size(); ++i) {
    if (gateway_tier_names[i] == name) return i;
  }
  std::string known;
  for (const std::string_view tier : gateway_tier_names) known += " " + std::string(tier);
  throw std::invalid_argument("unknown tier '" + std::string(name) + "' (tiers:" + known + ")");
}

// Whether `text` can go into JSON as it is (valid UTF-8): model names are sent back in every reply and in
// GET /v1/models, whose serialisation would throw on anything else.
inline bool json_text(const std::string& text) {
  try {
    (void)nlohmann::json(text).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

inline airl::Scope in_flight_scope(std::string_view name) {
  if (name == "user") return airl::Scope::user;
  if (name == "model") return airl::Scope::model;
  if (name == "user_model") return airl::Scope::user_model;
  throw std::invalid_argument("in_flight scope must be user, model or user_model, not '" + std::string(name) + "'");
}

inline void apply_line(Config& config, const std::vector<std::string>& words) {
  const std::string& directive = words[0];
  const auto need = [&](std::size_t low, std::size_t high) {
    if (words.size() < low || words.size() > high) {
      throw std::invalid_argument("'" + directive + "' takes " + std::to_string(low - 1) +
                                  (low == high ? "" : " to " + std::to_string(high - 1)) + " arguments");
    }
  };
  if (directive == "model") {
    need(2, 2);
    if (words[1].size() > config.chat.max_model_length) throw std::invalid_argument("model names are at most 256 bytes");
    if (!json_text(words[1])) throw std::invalid_argument("model names must be valid UTF-8 (replies name them in JSON)");
    if (config.serves(words[1])) throw std::invalid_argument("model '" + words[1] + "' is listed twice");
    config.models.push_back(words[1]);
  } else if (directive == "max_tokens") {
    need(2, 2);
    config.chat.max_tokens_cap = parse_number(words[1], "max_tokens");
    if (config.chat.max_tokens_cap == 0 || config.chat.max_tokens_cap > max_tokens_limit) {
      throw std::invalid_argument("max_tokens must be 1 to 2^52");
    }
  } else if (directive == "default_max_tokens") {
    need(2, 2);
    config.chat.default_max_tokens = parse_number(words[1], "default_max_tokens");
    if (config.chat.default_max_tokens == 0) throw std::invalid_argument("default_max_tokens must be at least 1");
  } else if (directive == "window_ms") {
    need(2, 2);
    config.window = parse_duration(words[1], "window_ms");
  } else if (directive == "lease_ms") {
    need(2, 2);
    config.lease = parse_duration(words[1], "lease_ms");
  } else if (directive == "limit") {
    need(3, 3);
    config.limits[tier_index(words[1])] = parse_limit(words[2], "limit");
  } else if (directive == "in_flight") {
    need(3, 3);
    const airl::Scope scope = in_flight_scope(words[1]);
    for (const airl::ConcurrencyCap& cap : config.in_flight) {
      if (cap.scope == scope) throw std::invalid_argument("in_flight " + words[1] + " is set twice");
    }
    config.in_flight.push_back({words[1] + "_in_flight", scope, parse_limit(words[2], "in_flight"), config.lease});
  } else if (directive == "plan") {
    need(2, 2 + gateway_tier_names.size());
    if (words[1].size() > airl::max_id_length) throw std::invalid_argument("plan names are at most 4096 bytes");
    std::vector<airl::PlanLimit> limits;
    for (std::size_t i = 2; i < words.size(); ++i) {
      const std::size_t equals = words[i].find('=');
      if (equals == std::string::npos) throw std::invalid_argument("plan limits are tier=limit, not '" + words[i] + "'");
      const std::string tier = words[i].substr(0, equals);
      const std::size_t index = tier_index(tier);
      if (index >= per_user_tiers) {
        throw std::invalid_argument("plans set per-user tiers only, not the shared '" + tier + "'");
      }
      for (const airl::PlanLimit& earlier : limits) {
        if (earlier.tier == tier) throw std::invalid_argument("plan '" + words[1] + "' sets '" + tier + "' twice");
      }
      limits.push_back({tier, parse_limit(std::string_view(words[i]).substr(equals + 1), tier)});
    }
    if (!config.plans.emplace(words[1], std::move(limits)).second) {
      throw std::invalid_argument("plan '" + words[1] + "' is defined twice");
    }
  } else if (directive == "key") {
    need(3, 4);
    ApiKey key{words[2], words.size() == 4 ? words[3] : ""};
    if (key.user.size() > airl::max_id_length) throw std::invalid_argument("user names are at most 4096 bytes");
    if (!key.plan.empty() && !config.plans.contains(key.plan)) {
      throw std::invalid_argument("key for '" + key.user + "' names plan '" + key.plan + "', not defined above");
    }
    if (!config.keys.emplace(words[1], std::move(key)).second) throw std::invalid_argument("a key is listed twice");
  } else {
    throw std::invalid_argument("unknown directive '" + directive + "'");
  }
}

}  // namespace detail

// Parses the config text. Throws std::invalid_argument naming `source` and the line on any mistake.
inline Config parse_config(std::string_view text, std::string_view source = "config") {
  Config config;
  std::istringstream lines{std::string(text)};
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    if (const std::size_t hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    std::istringstream split(line);
    std::vector<std::string> words;
    for (std::string word; split >> word;) words.push_back(word);
    if (words.empty()) continue;
    try {
      detail::apply_line(config, words);
    } catch (const std::invalid_argument& error) {
      throw std::invalid_argument(std::string(source) + ":" + std::to_string(number) + ": " + error.what());
    }
  }
  for (airl::ConcurrencyCap& cap : config.in_flight) cap.lease = config.lease;  // lease_ms may come after
  if (config.keys.empty()) throw std::invalid_argument(std::string(source) + ": no 'key' lines: nobody could call");
  if (config.models.empty()) {
    throw std::invalid_argument(std::string(source) + ": no 'model' lines: the gateway would serve any name made up");
  }
  if (config.chat.default_max_tokens > config.chat.max_tokens_cap) {
    throw std::invalid_argument(std::string(source) + ": default_max_tokens is above max_tokens");
  }
  return config;
}

// Reads and parses a config file. Throws std::invalid_argument when it cannot be read or is wrong.
inline Config load_config(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::invalid_argument("cannot read config file '" + path + "'");
  std::ostringstream text;
  text << file.rdbuf();
  return parse_config(text.str(), path);
}

}  // namespace gateway
