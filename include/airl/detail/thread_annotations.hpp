// SPDX-License-Identifier: MIT
#pragma once
// Clang's thread-safety annotations, so the locking rules are stated once, next to the data, and checked by
// the compiler (clang++ -Wthread-safety; CI builds with it and -Werror). On other compilers they expand to
// nothing. Vocabulary as in abseil's thread_annotations.h:
//   AIRL_CAPABILITY(name)     a type that is a lock          AIRL_SCOPED_CAPABILITY   an RAII holder of locks
//   AIRL_GUARDED_BY(lock)     data read or written only with `lock` held
//   AIRL_REQUIRES(lock)       a function called only with `lock` held
//   AIRL_ACQUIRE / AIRL_RELEASE / AIRL_TRY_ACQUIRE   functions that take or give back a lock
//   AIRL_ASSERT_CAPABILITY(lock)   a function that checks, and tells the analysis, that `lock` is held
//   AIRL_EXCLUDES(lock)       a function called only without `lock` held (it takes it itself)

#if defined(__clang__)
#define AIRL_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define AIRL_THREAD_ANNOTATION(x)
#endif

#define AIRL_CAPABILITY(name) AIRL_THREAD_ANNOTATION(capability(name))
#define AIRL_SCOPED_CAPABILITY AIRL_THREAD_ANNOTATION(scoped_lockable)
#define AIRL_GUARDED_BY(x) AIRL_THREAD_ANNOTATION(guarded_by(x))
#define AIRL_PT_GUARDED_BY(x) AIRL_THREAD_ANNOTATION(pt_guarded_by(x))
#define AIRL_REQUIRES(...) AIRL_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define AIRL_ACQUIRE(...) AIRL_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define AIRL_RELEASE(...) AIRL_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define AIRL_TRY_ACQUIRE(...) AIRL_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define AIRL_ASSERT_CAPABILITY(x) AIRL_THREAD_ANNOTATION(assert_capability(x))
#define AIRL_EXCLUDES(...) AIRL_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define AIRL_RETURN_CAPABILITY(x) AIRL_THREAD_ANNOTATION(lock_returned(x))
#define AIRL_NO_THREAD_SAFETY_ANALYSIS AIRL_THREAD_ANNOTATION(no_thread_safety_analysis)
