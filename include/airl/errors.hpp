// SPDX-License-Identifier: MIT
#pragma once
// Exceptions. Caller mistakes throw std::invalid_argument; faults of a storage backend (a lost Redis
// connection, a timeout, an unexpected reply) throw airl::BackendError or a subclass of it.

#include <stdexcept>

namespace airl {

// A storage backend failed; nothing was recorded for the call that threw.
struct BackendError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace airl
