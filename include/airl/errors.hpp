// SPDX-License-Identifier: MIT
#pragma once
// Exceptions. Caller mistakes throw std::invalid_argument; faults of a storage backend (a lost Redis
// connection, a timeout, an unexpected reply) throw airl::BackendError or a subclass of it.

#include <stdexcept>

namespace airl {

// A storage backend failed. Nothing was recorded by the call that threw, with one exception no client can
// rule out: a command that timed out may still run when a hung server resumes (request ids make a retry safe).
struct BackendError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace airl
