// SPDX-License-Identifier: MIT
#pragma once
// The Prometheus text exposition format (version 0.0.4) as <airl/prometheus.hpp> writes it: metric name
// prefixes, label values escaped as the format requires ('\\', '"' and newline; bytes that are not valid
// UTF-8 become U+FFFD), exact seconds, and families of samples.

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "../echo.hpp"

#include "http_text.hpp"

namespace airl::prometheus::detail {

// A metric name prefix: [a-zA-Z_:][a-zA-Z0-9_:]*.
inline bool valid_prefix(std::string_view prefix) noexcept {
  if (prefix.empty()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    const char c = prefix[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

inline void append_label_value(std::string& out, std::string_view value) {
  out += '"';
  for (std::size_t at = 0; at < value.size();) {
    const char c = value[at];
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
      ++at;
    } else if (c == '\n') {
      out += "\\n";
      ++at;
    } else if (const std::size_t length = airl::detail::utf8_sequence_length(value, at); length != 0) {
      out.append(value, at, length);
      at += length;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++at;
    }
  }
  out += '"';
}

// Nanoseconds as seconds, exactly (a decimal point and 9 digits, trailing zeros kept: still a valid float).
inline std::string seconds_text(std::uint64_t ns) {
  std::string fraction = std::to_string(1'000'000'000 + ns % 1'000'000'000).substr(1);
  return std::to_string(ns / 1'000'000'000) + "." + fraction;
}

struct Writer {
  std::string& out;
  std::string_view prefix;

  void family(std::string_view name, std::string_view type, std::string_view help) {
    out += "# HELP ";
    out += prefix;
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += prefix;
    out += name;
    out += ' ';
    out += type;
    out += '\n';
  }
  // A family of one unlabelled sample.
  void single(std::string_view name, std::string_view type, std::string_view help, std::uint64_t value) {
    family(name, type, help);
    sample(name, "", "", std::to_string(value));
  }
  // The <prefix>_denials_total family: one sample per tier or cap (`named`: pairs of name and count), then
  // the store-made reasons. Every refusal counts under its reason.
  template <class Named>
  void denials(std::string_view help, const Named& named, std::uint64_t key_capacity, std::uint64_t backend_unavailable) {
    family("denials_total", "counter", help);
    for (const auto& [reason, count] : named) sample("denials_total", "reason", reason, std::to_string(count));
    sample("denials_total", "reason", "key_capacity", std::to_string(key_capacity));
    sample("denials_total", "reason", "backend_unavailable", std::to_string(backend_unavailable));
  }
  void sample(std::string_view name, std::string_view label, std::string_view label_value, std::string_view value) {
    out += prefix;
    out += name;
    if (!label.empty()) {
      out += '{';
      out += label;
      out += '=';
      append_label_value(out, label_value);
      out += '}';
    }
    out += ' ';
    out += value;
    out += '\n';
  }
};

inline void require_prefix(std::string_view prefix) {
  if (!valid_prefix(prefix)) {
    throw std::invalid_argument("airl::prometheus::text: '" + airl::detail::echo(prefix) + "' is not a metric name prefix");
  }
}

}  // namespace airl::prometheus::detail
