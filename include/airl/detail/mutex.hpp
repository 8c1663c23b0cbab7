// SPDX-License-Identifier: MIT
#pragma once
// std::mutex as a capability clang's thread-safety analysis knows (libstdc++'s is not annotated), for the
// locks outside the shards: rule changes, the Redis pool, a permit id draw. Use with detail::Lock.

#include <mutex>

#include "thread_annotations.hpp"

namespace airl::detail {

class AIRL_CAPABILITY("mutex") Mutex {
 public:
  void lock() AIRL_ACQUIRE() { mutex_.lock(); }
  void unlock() AIRL_RELEASE() { mutex_.unlock(); }
  bool try_lock() AIRL_TRY_ACQUIRE(true) { return mutex_.try_lock(); }
  // The plain mutex, for a std::condition_variable wait (the caller holds this lock). Throws nothing.
  std::mutex& native() noexcept { return mutex_; }

 private:
  std::mutex mutex_;
};

}  // namespace airl::detail
