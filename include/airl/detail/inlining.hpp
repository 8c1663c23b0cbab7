// SPDX-License-Identifier: MIT
#pragma once
// Inlining hints for the decision path, where a call costs more than the work it does.
//   AIRL_DETAIL_HOT_INLINE   always inline (a small helper on every decision)
//   AIRL_DETAIL_LAMBDA_INLINE  the same for a lambda, after its parameter list (GCC only)
//   AIRL_DETAIL_NOINLINE     never inline (a path kept out of the one-tier caller's frame; not "cold": it is
//                            the main path of multi-tier limiters)
//   AIRL_DETAIL_COLD         rarely run (a full store, a sweep that found something): never inlined, compiled
//                            for size, so every file that decides compiles it quickly

#if defined(__GNUC__) || defined(__clang__)
#define AIRL_DETAIL_HOT_INLINE [[gnu::always_inline]] inline
#define AIRL_DETAIL_NOINLINE [[gnu::noinline]]
#define AIRL_DETAIL_COLD [[gnu::cold, gnu::noinline]]
#else
#define AIRL_DETAIL_HOT_INLINE inline
#define AIRL_DETAIL_NOINLINE
#define AIRL_DETAIL_COLD
#endif

#if defined(__GNUC__) && !defined(__clang__)
#define AIRL_DETAIL_LAMBDA_INLINE __attribute__((always_inline))
#else
#define AIRL_DETAIL_LAMBDA_INLINE
#endif
