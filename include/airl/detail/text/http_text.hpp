// SPDX-License-Identifier: MIT
#pragma once
// The text forms <airl/http.hpp> writes: Structured Field strings and integers (RFC 9651), JSON strings
// (RFC 8259), whole seconds rounded up, and durations written the way OpenAI's x-ratelimit-reset-* headers
// write them ("1s", "6m0s", "20ms"). No allocation beyond the output string.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace airl::detail {

inline void append_hex_byte(std::string& out, unsigned char byte) {
  constexpr char digits[] = "0123456789abcdef";
  out += digits[byte >> 4];
  out += digits[byte & 0xFu];
}

// A tier name as the headers advertise it: an sf-string holds only printable ASCII, so any other byte (and
// '%' itself, so the mapping stays one-to-one) is written as %xx; a tier named "café" is "caf%c3%a9". The
// problem+json body names policies the same way, so a client can match them.
inline std::string policy_identifier(std::string_view name) {
  std::string out;
  for (const char c : name) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte > 0x7E || byte == '%') {
      out += '%';
      append_hex_byte(out, byte);
    } else {
      out += c;
    }
  }
  return out;
}

// A Structured Field String of a tier name: its policy_identifier(), quoted, with '"' and '\\' escaped.
inline void append_sf_string(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : policy_identifier(text)) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

// An sf-integer holds at most 15 digits; larger counts are written as the largest one (999999999999999).
inline void append_sf_integer(std::string& out, std::uint64_t value) {
  constexpr std::uint64_t largest = 999'999'999'999'999;
  out += std::to_string(value > largest ? largest : value);
}

// Whole seconds, rounded up (a client that waits this long is never early).
inline std::uint64_t ceil_seconds(std::chrono::milliseconds duration) noexcept {
  if (duration.count() <= 0) return 0;
  return (static_cast<std::uint64_t>(duration.count()) + 999) / 1000;
}

// A duration as Go's time.Duration prints it, to the millisecond: "0s", "250ms", "1s", "1.5s", "6m0s",
// "1h2m3.04s". OpenAI's x-ratelimit-reset-requests and -tokens headers use this form.
inline std::string duration_text(std::chrono::milliseconds duration) {
  const std::uint64_t ms = duration.count() <= 0 ? 0 : static_cast<std::uint64_t>(duration.count());
  if (ms == 0) return "0s";
  if (ms < 1000) return std::to_string(ms) + "ms";
  std::string out;
  const std::uint64_t hours = ms / 3'600'000, minutes = ms / 60'000 % 60, seconds = ms / 1000 % 60;
  if (hours != 0) out += std::to_string(hours) + "h";
  if (hours != 0 || minutes != 0) out += std::to_string(minutes) + "m";
  out += std::to_string(seconds);
  if (std::uint64_t fraction = ms % 1000; fraction != 0) {  // ".5", ".25", ".125": no trailing zeros
    std::string digits = std::to_string(1000 + fraction).substr(1);
    while (digits.back() == '0') digits.pop_back();
    out += "." + digits;
  }
  out += "s";
  return out;
}

// Length of the valid UTF-8 sequence starting at text[at], or 0 when the bytes there are not one
// (overlong forms, surrogates and code points above U+10FFFF included).
inline std::size_t utf8_sequence_length(std::string_view text, std::size_t at) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[at + i]); };
  const auto continuation = [&](std::size_t i) { return at + i < text.size() && (byte(i) & 0xC0u) == 0x80u; };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return continuation(1) ? 2 : 0;
  if (lead >= 0xE0 && lead <= 0xEF) {
    if (!continuation(1) || !continuation(2)) return 0;
    if ((lead == 0xE0 && byte(1) < 0xA0) || (lead == 0xED && byte(1) > 0x9F)) return 0;  // overlong; surrogate
    return 3;
  }
  if (lead >= 0xF0 && lead <= 0xF4) {
    if (!continuation(1) || !continuation(2) || !continuation(3)) return 0;
    if ((lead == 0xF0 && byte(1) < 0x90) || (lead == 0xF4 && byte(1) > 0x8F)) return 0;  // overlong; > U+10FFFF
    return 4;
  }
  return 0;
}

// A JSON string: quoted, with '"', '\' and control characters escaped. Valid UTF-8 passes through; a byte
// that is not part of valid UTF-8 becomes U+FFFD, so the output is always valid JSON text.
inline void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (std::size_t at = 0; at < text.size();) {
    const auto byte = static_cast<unsigned char>(text[at]);
    if (byte == '"' || byte == '\\') {
      out += '\\';
      out += text[at++];
    } else if (byte < 0x20) {
      out += "\\u00";
      append_hex_byte(out, byte);
      ++at;
    } else if (const std::size_t length = utf8_sequence_length(text, at); length != 0) {
      out.append(text, at, length);
      at += length;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      ++at;
    }
  }
  out += '"';
}

// An OpenAI-style error body, {"error":{"message":...,"type":...,"param":null,"code":...}}: the shape OpenAI's
// SDKs read into their error objects. An empty `code` is written as null.
inline std::string openai_error_body(std::string_view message, std::string_view type, std::string_view code) {
  std::string body = "{\"error\":{\"message\":";
  append_json_string(body, message);
  body += ",\"type\":";
  append_json_string(body, type);
  body += ",\"param\":null,\"code\":";
  if (code.empty()) {
    body += "null";
  } else {
    append_json_string(body, code);
  }
  body += "}}";
  return body;
}

}  // namespace airl::detail
