// SPDX-License-Identifier: MIT
#pragma once
// Typed Redis faults, all airl::BackendError, so callers catch the base and tests can tell them apart; and
// BackendFault, the last one a Redis storage met (last_backend_error()), for a caller to read.

#include <chrono>
#include <string>
#include <string_view>

#include "../errors.hpp"

namespace airl {

// The connection could not be made or was lost (refused, reset, closed, DNS, backing off after a failure).
struct ConnectionError : BackendError {
  using BackendError::BackendError;
};
// The server did not answer within connect_timeout / command_timeout (hung, overloaded, SIGSTOPped).
struct TimeoutError : BackendError {
  using BackendError::BackendError;
};
// AUTH failed (wrong password or user) or was required and not given.
struct AuthError : BackendError {
  using BackendError::BackendError;
};
// The ACL user lacks a permission (a command or a key outside its patterns).
struct PermissionError : BackendError {
  using BackendError::BackendError;
};
// Redis answered with an error, or with a reply airl did not expect.
struct ReplyError : BackendError {
  using BackendError::BackendError;
};
// The server reached as the master is a replica (a failover happened; the Sentinel is asked again).
struct NotMasterError : ConnectionError {
  using ConnectionError::ConnectionError;
};

// The name of `error`'s type among those above ("NotMasterError", "ConnectionError", "TimeoutError",
// "AuthError", "PermissionError", "ReplyError"), else "BackendError". Throws nothing.
inline std::string_view backend_error_type(const BackendError& error) noexcept {
  if (dynamic_cast<const NotMasterError*>(&error) != nullptr) return "NotMasterError";
  if (dynamic_cast<const ConnectionError*>(&error) != nullptr) return "ConnectionError";
  if (dynamic_cast<const TimeoutError*>(&error) != nullptr) return "TimeoutError";
  if (dynamic_cast<const AuthError*>(&error) != nullptr) return "AuthError";
  if (dynamic_cast<const PermissionError*>(&error) != nullptr) return "PermissionError";
  if (dynamic_cast<const ReplyError*>(&error) != nullptr) return "ReplyError";
  return "BackendError";
}

// A backend fault as a storage kept it: what a degraded decision was degraded by (RedisStorage and
// RedisConcurrencyStorage::last_backend_error()).
struct BackendFault {
  std::string type;                          // backend_error_type() of the error
  std::string message;                       // its what(): the server, and what failed there
  std::chrono::system_clock::time_point at;  // when it was met
};

}  // namespace airl
