# Warnings and sanitizers for airl's own tests, examples and benchmarks: an INTERFACE target they link,
# never global flags, so consumers of the library are untouched.

add_library(airl_dev_options INTERFACE)

option(AIRL_WARNINGS_AS_ERRORS "Treat warnings in airl's own tests, examples and benchmarks as errors" OFF)

if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  # One set for both compilers: each adds its own checks under these names (clang's -Wall holds
  # -Wbitwise-instead-of-logical, which g++ lacks), and make test-clang builds with AIRL_WARNINGS_AS_ERRORS=ON.
  target_compile_options(airl_dev_options INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
    -Wsign-conversion -Wnon-virtual-dtor -Wold-style-cast)
  # Clang checks the locking rules the headers state (detail/thread_annotations.hpp).
  if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    target_compile_options(airl_dev_options INTERFACE -Wthread-safety)
  endif()
  if(AIRL_WARNINGS_AS_ERRORS)
    target_compile_options(airl_dev_options INTERFACE -Werror)
  endif()
elseif(MSVC)
  target_compile_options(airl_dev_options INTERFACE /W4 /permissive-)
endif()

if(AIRL_SANITIZER)
  target_compile_options(airl_dev_options INTERFACE -fsanitize=${AIRL_SANITIZER} -fno-omit-frame-pointer
    -fno-sanitize-recover=all)
  target_link_options(airl_dev_options INTERFACE -fsanitize=${AIRL_SANITIZER})
endif()
