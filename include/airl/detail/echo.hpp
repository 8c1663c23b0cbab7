// SPDX-License-Identifier: MIT
#pragma once
// How an error message repeats a caller's value (a plan, user, model, tier or cap name, an address): at most
// its first max_echo bytes, every byte that is not printable ASCII written as \xNN (and '\' as \\), then
// "...(N bytes)" when it was cut. A value can be megabytes long or hold control bytes and terminal escapes,
// and messages end up in logs and terminals. Every message that repeats a caller's value goes through here.

#include <cstddef>
#include <string>
#include <string_view>

namespace airl::detail {

// Longest part of a caller's value a message repeats, in bytes of the value.
inline constexpr std::size_t max_echo = 64;

// Appends `value` to `out` as described above (at most 4 * max_echo + 30 bytes). Throws std::bad_alloc.
inline void append_echo(std::string& out, std::string_view value) {
  constexpr char hex[] = "0123456789abcdef";
  for (const char c : value.substr(0, max_echo)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte == '\\') {
      out += "\\\\";
    } else if (byte >= 0x20 && byte < 0x7f) {
      out += c;
    } else {
      out += "\\x";
      out += hex[byte >> 4];
      out += hex[byte & 0xfu];
    }
  }
  if (value.size() > max_echo) {
    out += "...(";
    out += std::to_string(value.size());
    out += " bytes)";
  }
}

// `value` as append_echo() writes it. Throws std::bad_alloc.
inline std::string echo(std::string_view value) {
  std::string out;
  append_echo(out, value);
  return out;
}

}  // namespace airl::detail
