// SPDX-License-Identifier: MIT
#pragma once
// A scoped lock the thread-safety analysis understands, for any of airl's annotated mutexes.

#include "thread_annotations.hpp"

namespace airl::detail {

// Holds one lock for a scope (std::lock_guard, annotated so the analysis sees the lock taken and given back).
template <class Mutex>
class AIRL_SCOPED_CAPABILITY Lock {
 public:
  explicit Lock(Mutex& mutex) noexcept AIRL_ACQUIRE(mutex) : mutex_(mutex) { mutex_.lock(); }
  ~Lock() AIRL_RELEASE() { mutex_.unlock(); }
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

 private:
  Mutex& mutex_;
};

}  // namespace airl::detail
