// SPDX-License-Identifier: MIT
#pragma once
// Options of the Redis storage, and what it does when Redis cannot be reached.

#include <charconv>
#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

namespace airl {

// What a decision (allow(), try_acquire()) does when Redis fails (down, hung, refusing), the same for rate
// limits and concurrency caps. Every such decision is degraded (Decision::degraded, Permit::degraded()) and
// counts as a degraded decision and a backend error in the limiter's metrics. docs/REDIS.md, "Failure
// policies", gives the whole table (settle, renew and release too).
enum class FailurePolicy {
  fail_open,    // admit: availability first (a Redis outage never becomes an outage of the service)
  fail_closed,  // refuse with Status::backend_unavailable (HTTP 503), never throw: protect the GPUs first
  local,        // decide with an in-process store of the same quotas and caps until Redis is back
};

struct RedisOptions {
  std::string host = "127.0.0.1";  // TCP host (a numeric address or a name)
  int port = 6379;                 // TCP port
  std::string unix_socket;         // path of a unix socket; wins over host/port when set
  std::string username;            // ACL user (Redis 6+); empty = the default user
  std::string password;            // AUTH password; empty = no AUTH
  int database = 0;                // SELECTed on every connect
  std::chrono::milliseconds connect_timeout{200};  // TCP connect plus the AUTH/SELECT/SCRIPT LOAD handshake
  std::chrono::milliseconds command_timeout{100};  // one command's round trip
  std::size_t pool_size = 8;                       // connections shared by all threads
  std::string key_prefix = "airl";                 // every key written starts with it; no '{' or '}'
  FailurePolicy on_failure = FailurePolicy::fail_open;
};

// `base` with host and port taken from "host:port", "host" or ":port" (a missing part keeps base's), as
// given on a command line (--redis 127.0.0.1:6379). Throws std::invalid_argument on a port that is not a
// number in 1..65535. Thread safety: pure.
inline RedisOptions redis_options_from_address(std::string_view address, RedisOptions base = {}) {
  const std::size_t colon = address.rfind(':');
  if (colon != std::string_view::npos) {
    const std::string_view port = address.substr(colon + 1);
    int parsed = 0;
    const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), parsed);
    if (error != std::errc{} || end != port.data() + port.size() || parsed < 1 || parsed > 65535) {
      throw std::invalid_argument("airl: Redis address '" + std::string(address) + "' needs a port in 1..65535");
    }
    base.port = parsed;
    address = address.substr(0, colon);
  }
  if (!address.empty()) base.host = std::string(address);
  return base;
}

namespace detail {

// Throws std::invalid_argument unless `prefix` is usable: not empty, no '{' or '}' (they would move the hash tag).
inline void validate_key_prefix(std::string_view prefix) {
  if (prefix.empty()) throw std::invalid_argument("airl::RedisOptions: key_prefix must not be empty");
  if (prefix.find_first_of("{}") != std::string_view::npos) {
    throw std::invalid_argument("airl::RedisOptions: key_prefix must not contain '{' or '}'");
  }
}

// Throws std::invalid_argument unless the options are usable (both Redis storages check them alike).
inline void validate_redis_options(const RedisOptions& options) {
  const auto refuse = [](const char* what) { throw std::invalid_argument(std::string("airl::RedisOptions: ") + what); };
  validate_key_prefix(options.key_prefix);
  if (options.pool_size == 0) refuse("pool_size must be at least 1");
  if (options.unix_socket.empty() && (options.port <= 0 || options.port > 65535)) refuse("port must be in 1..65535");
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0) refuse("timeouts must be > 0");
  if (options.database < 0) refuse("database must be >= 0");
  if (options.on_failure != FailurePolicy::fail_open && options.on_failure != FailurePolicy::fail_closed &&
      options.on_failure != FailurePolicy::local) {
    refuse("unknown on_failure policy");
  }
}

}  // namespace detail

}  // namespace airl
