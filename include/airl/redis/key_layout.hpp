// SPDX-License-Identifier: MIT
#pragma once
// Redis key names for buckets (docs/REDIS.md, "Key layout").
//
//   <prefix>:{u=<user>}:um:<tier>:<model>   Scope::user_model    <prefix>:{m=<model>}:m:<tier>   Scope::model
//   <prefix>:{u=<user>}:u:<tier>            Scope::user          <prefix>:{g}:g:<tier>           Scope::global
//
// Each bucket is two keys: the log (the name above) and its costs (the name + ":c"). Ids are percent-encoded:
// everything but [A-Za-z0-9._~@+=-] becomes %XX, so no id contains ':', '{', '}' or a glob character. The
// encoding is injective and the number of ':'-separated parts is fixed per kind, so no id can forge another's
// key. Every key has exactly one hash tag: the user's for user and user_model buckets (all of a user's keys
// share one Redis Cluster slot), the model's for model buckets, and {g} for global ones; a bucket's two keys
// always share their slot. The "u=" / "m=" markers keep a user's tag (and reset(user)'s SCAN pattern) from
// ever matching a model's keys.

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "../storage_policy.hpp"
#include "options.hpp"

namespace airl::detail {

inline void append_percent_encoded(std::string& out, std::string_view id) {
  static constexpr char hex[] = "0123456789ABCDEF";
  for (const char c : id) {
    const auto byte = static_cast<unsigned char>(c);
    const bool plain = (byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z') || (byte >= '0' && byte <= '9') ||
                       byte == '.' || byte == '_' || byte == '~' || byte == '@' || byte == '+' || byte == '=' ||
                       byte == '-';
    if (plain) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(hex[byte >> 4]);
      out.push_back(hex[byte & 0xF]);
    }
  }
}

// The key of `bucket` with `kind` ("" for rate-limit buckets, "cc:" for concurrency scopes) before the scope
// marker, written into `out` (cleared first): <prefix>:{u=<user>}:<kind>um:<tier>:<model> and so on.
inline void redis_scoped_key(std::string& out, std::string_view prefix, const BucketRef& bucket, std::string_view kind) {
  out.assign(prefix);
  switch (bucket.scope) {
    case Scope::user_model:
    case Scope::user:
      out.append(":{u=");
      append_percent_encoded(out, bucket.user);
      out.append("}:");
      out.append(kind);
      out.append(bucket.scope == Scope::user ? "u:" : "um:");
      append_percent_encoded(out, bucket.name);
      if (bucket.scope == Scope::user_model) {
        out.push_back(':');
        append_percent_encoded(out, bucket.model);
      }
      break;
    case Scope::model:
      out.append(":{m=");
      append_percent_encoded(out, bucket.model);
      out.append("}:");
      out.append(kind);
      out.append("m:");
      append_percent_encoded(out, bucket.name);
      break;
    case Scope::global:
      out.append(":{g}:");
      out.append(kind);
      out.append("g:");
      append_percent_encoded(out, bucket.name);
      break;
  }
}

// The log key of `bucket`, written into `out` (cleared first).
inline void redis_bucket_key(std::string& out, std::string_view prefix, const BucketRef& bucket) {
  redis_scoped_key(out, prefix, bucket, {});
}

// The costs key that goes with a log key.
inline void redis_costs_key(std::string& out, std::string_view log_key) {
  out.assign(log_key);
  out.append(":c");
}

// A SCAN MATCH pattern for every key of `user`'s user and user_model buckets: "}:u" then anything (":u:" and
// ":um:" keys), so other keys under the user's hash tag (the concurrency caps' ":cc:" keys) never match.
inline std::string redis_user_pattern(std::string_view prefix, std::string_view user) {
  std::string pattern;
  for (const char c : prefix) {  // the prefix is the caller's text: escape glob characters
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\' || c == '^') pattern.push_back('\\');
    pattern.push_back(c);
  }
  pattern.append(":{u=");
  append_percent_encoded(pattern, user);  // percent-encoded ids hold no glob character
  pattern.append("}:u*");
  return pattern;
}

// The member that logs a request with a caller's id in a rate bucket's log: "i" + the id, written into `out`.
inline void redis_request_member(std::string& out, std::string_view request_id) {
  out.assign(1, 'i');
  out.append(request_id);
}

// The member of a request without an id: "g", a storage's 8 random `seed` bytes, then the significant bytes of
// its counter's `count` (little-endian, at least one), written into `out`. Raw bytes, not decimal text: members
// are most of a bucket's memory in Redis. Never equal to another count's (or seed's) member, nor to a request
// id's (which starts with "i").
inline void redis_generated_member(std::string& out, std::uint64_t seed, std::uint64_t count) {
  out.assign(1, 'g');
  for (int byte = 0; byte < 8; ++byte) out.push_back(static_cast<char>((seed >> (8 * byte)) & 0xffu));
  do {
    out.push_back(static_cast<char>(count & 0xffu));
    count >>= 8;
  } while (count != 0);
}

}  // namespace airl::detail
