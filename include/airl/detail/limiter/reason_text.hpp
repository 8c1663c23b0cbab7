// SPDX-License-Identifier: MIT
#pragma once
// A Decision::reason kept ready to copy. Every denial copies its tier's name into a fresh std::string; for the
// short names tiers have, std::string's own copy calls memcpy with a length known only at run time, which cost
// about 45 instructions of a ~700-instruction decision (callgrind). A name of up to 15 bytes is kept here in 15
// zero-padded bytes instead, so the copy is one fixed-size copy into the string's inline buffer and a cut.

#include <array>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

#include "../inlining.hpp"

namespace airl::detail {

class ReasonText {
 public:
  explicit ReasonText(std::string_view text) : size_(text.size()) {
    if (size_ <= padded_.size()) {
      std::memcpy(padded_.data(), text.data(), size_);
    } else {
      long_ = std::string(text);
    }
  }

  // A copy of the text. Throws std::bad_alloc only for texts longer than std::string's inline buffer.
  AIRL_DETAIL_HOT_INLINE std::string copy() const {
    // One named result on every path, so it is built in the caller's object (no move of it on return).
    const bool padded = size_ <= padded_.size();
    std::string text(padded ? padded_.size() : size_, '\0');  // 15 fits the inline buffer of libstdc++, libc++, MSVC
    if (padded) {
      std::memcpy(text.data(), padded_.data(), padded_.size());
    } else {
      std::memcpy(text.data(), long_.data(), size_);
    }
    text.erase(size_);
    return text;
  }

 private:
  std::array<char, 15> padded_{};  // the text, then zeros
  std::size_t size_;
  std::string long_;  // the text when it is longer than padded_
};

}  // namespace airl::detail
