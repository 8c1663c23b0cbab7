// SPDX-License-Identifier: MIT
// Not a test binary: clang compiles it with -Wthread-safety in CTest (tests/core/CMakeLists.txt) to show the
// locking rules are really checked. A shard's timeline is guarded by its mutex; touching it without the lock
// must be refused, and the same code holding the lock (HOLD_THE_LOCK) must compile cleanly.
#include <airl/detail/lock.hpp>
#include <airl/detail/memory/shard.hpp>
#include <airl/detail/memory/window_log.hpp>

#include <cstdint>

std::int64_t decide_at(airl::detail::Shard<airl::detail::WindowLog>& shard, std::int64_t read) {
#ifdef HOLD_THE_LOCK
  const airl::detail::Lock lock(shard.mutex);
#endif
  return shard.advance(read);
}
