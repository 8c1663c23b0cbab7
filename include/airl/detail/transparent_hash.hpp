// SPDX-License-Identifier: MIT
#pragma once
// A string hash usable for heterogeneous lookup, so a std::string_view finds a std::string key
// in an unordered container without building a temporary string.

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace airl::detail {

struct TransparentHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  std::size_t operator()(const std::string& text) const noexcept { return (*this)(std::string_view(text)); }
};

}  // namespace airl::detail
