// SPDX-License-Identifier: MIT
// The floor of bench/compile_time.py: a translation unit that includes <airl/airl.hpp> and uses nothing.
#include <airl/airl.hpp>
