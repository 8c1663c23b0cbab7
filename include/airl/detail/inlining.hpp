// SPDX-License-Identifier: MIT
#pragma once
// Inlining hints for the decision path, where a call costs more than the work it does.
//   AIRL_DETAIL_HOT_INLINE   always inline (a small helper on every decision)
//   AIRL_DETAIL_COLD         never inline (a rarely taken path, kept out of the hot caller's frame)

#if defined(__GNUC__) || defined(__clang__)
#define AIRL_DETAIL_HOT_INLINE [[gnu::always_inline]] inline
#define AIRL_DETAIL_COLD [[gnu::noinline]]
#else
#define AIRL_DETAIL_HOT_INLINE inline
#define AIRL_DETAIL_COLD
#endif
