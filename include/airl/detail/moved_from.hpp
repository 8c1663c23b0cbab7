// SPDX-License-Identifier: MIT
#pragma once
// The one check every public member of a limiter or storage makes before it touches its state. Limiters and
// storages are movable; a moved-from one has no state (its pointer to it is null), and using it other than
// destroying it or assigning to it is a caller mistake: reported as std::logic_error naming the class and the
// member, never a crash, a silent zero or a decision without tiers. One predictable branch on the hot path;
// the message is built out of line.

#include <stdexcept>
#include <string>

#include "inlining.hpp"

namespace airl::detail {

// Throws std::logic_error("<owner>::<member>: used after being moved from"). Cold: only a bug gets here.
[[noreturn]] AIRL_DETAIL_COLD inline void refuse_moved_from(const char* owner, const char* member) {
  throw std::logic_error(std::string(owner) + "::" + member + ": used after being moved from");
}

// The check: throws as refuse_moved_from() unless `usable` (the object still has its state).
AIRL_DETAIL_HOT_INLINE void require_not_moved_from(bool usable, const char* owner, const char* member) {
  if (!usable) [[unlikely]] refuse_moved_from(owner, member);
}

// `*state` for an object whose state is behind a pointer (null once moved from); else throws as above.
template <class State>
AIRL_DETAIL_HOT_INLINE State& live_state(State* state, const char* owner, const char* member) {
  require_not_moved_from(state != nullptr, owner, member);
  return *state;
}

}  // namespace airl::detail
