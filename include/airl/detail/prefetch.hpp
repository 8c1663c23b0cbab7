// SPDX-License-Identifier: MIT
#pragma once
// A cache prefetch hint, so the lookups of one decision can start their cache misses early and overlap them.

namespace airl::detail {

// Asks the CPU to start loading `address` into cache; never faults, whatever the address. Throws nothing.
inline void prefetch(const void* address) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(address);
#else
  (void)address;
#endif
}

// The same for a line about to be written: fetched ready to modify where the target has an instruction for it
// (x86 PREFETCHW, with -mprfchw or -march=broadwell and later), else a plain prefetch. Throws nothing.
inline void prefetch_for_write(const void* address) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(address, 1);
#else
  (void)address;
#endif
}

}  // namespace airl::detail
