// SPDX-License-Identifier: MIT
#pragma once
// An exact allocation counter: allocation_counter.cpp replaces the global operator new and delete of the
// binary it is linked into (airl_bench_memory only, never the timing binary) with versions that count
// calls and requested bytes. Figures are requested bytes: malloc's own per-block overhead is not included.

#include <cstdint>

namespace airl_bench {

// Bytes requested through operator new and not yet deleted. Thread safety: safe.
std::int64_t live_bytes() noexcept;
// Calls of operator new so far. Thread safety: safe.
std::int64_t allocation_count() noexcept;

}  // namespace airl_bench
