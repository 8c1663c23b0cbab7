// SPDX-License-Identifier: MIT
#pragma once
// Typed Redis faults, all airl::BackendError, so callers catch the base and tests can tell them apart.

#include <string>

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

}  // namespace airl
