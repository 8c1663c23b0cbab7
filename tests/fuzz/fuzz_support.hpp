// SPDX-License-Identifier: MIT
#pragma once
// What every fuzz target shares: reading typed values off the fuzzer's bytes, and a check that stops the run
// (abort: libFuzzer and the replay tests both report it) whatever the build type, unlike assert().

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace airl::fuzz {

// Stops with `what` when `condition` is false. A finding: the input that got here is the reproducer.
inline void check(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "airl fuzz: check failed: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

// Reads values off the input, front to back; past its end every read gives zeros / empty strings, so any
// input is a valid one.
class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  bool empty() const noexcept { return at_ >= size_; }

  std::uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }

  bool flag() { return (byte() & 1u) != 0; }

  // Little-endian, `count` bytes (1..8).
  std::uint64_t number(int count = 8) {
    std::uint64_t value = 0;
    for (int i = 0; i < count; ++i) value |= static_cast<std::uint64_t>(byte()) << (8 * i);
    return value;
  }

  // A string of up to `most` bytes: a length byte (mod most + 1), then that many bytes.
  std::string text(std::size_t most = 64) {
    const std::size_t length = byte() % (most + 1);
    std::string out;
    while (out.size() < length && !empty()) out.push_back(static_cast<char>(byte()));
    return out;
  }

  // Everything not read yet.
  std::string_view rest() {
    const std::string_view out(reinterpret_cast<const char*>(data_) + at_, size_ - at_);
    at_ = size_;
    return out;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

// Whether `text` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF),
// written here by code point rather than by the library's byte tables, so the targets check it independently.
inline bool valid_utf8(std::string_view text) {
  for (std::size_t at = 0; at < text.size();) {
    const auto lead = static_cast<unsigned char>(text[at]);
    std::size_t length = 0;
    std::uint32_t code = 0;
    if (lead < 0x80) {
      length = 1;
      code = lead;
    } else if ((lead & 0xE0u) == 0xC0u) {
      length = 2;
      code = lead & 0x1Fu;
    } else if ((lead & 0xF0u) == 0xE0u) {
      length = 3;
      code = lead & 0x0Fu;
    } else if ((lead & 0xF8u) == 0xF0u) {
      length = 4;
      code = lead & 0x07u;
    } else {
      return false;
    }
    if (at + length > text.size()) return false;
    for (std::size_t i = 1; i < length; ++i) {
      const auto next = static_cast<unsigned char>(text[at + i]);
      if ((next & 0xC0u) != 0x80u) return false;
      code = (code << 6) | (next & 0x3Fu);
    }
    static constexpr std::uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < least[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    at += length;
  }
  return true;
}

// `text` with every byte that does not begin a well-formed UTF-8 sequence replaced by U+FFFD, one for each
// such byte: what the library's JSON and Prometheus writers promise.
inline std::string replace_invalid_utf8(std::string_view text) {
  std::string out;
  for (std::size_t at = 0; at < text.size();) {
    std::size_t taken = 0;
    for (std::size_t length = 1; length <= 4 && at + length <= text.size(); ++length) {
      if (valid_utf8(text.substr(at, length))) {
        taken = length;
        break;
      }
    }
    if (taken == 0) {
      out += "\xEF\xBF\xBD";
      ++at;
    } else {
      out.append(text.substr(at, taken));
      at += taken;
    }
  }
  return out;
}

}  // namespace airl::fuzz
