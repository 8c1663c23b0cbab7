// SPDX-License-Identifier: MIT
// Fuzz target: the Redis key layout (airl/redis/key_layout.hpp, and the caps' keys of
// redis_concurrency_storage.hpp), on PAIRS: the input gives two (prefix, scope, tier, user, model) tuples, two
// request ids, two generated-member (seed, counter) pairs and two permit ids. Checked:
//   - two keys are equal exactly when they name one thing: the same kind (rate log, rate costs, cap), prefix,
//     scope and tier, and the same user and model where the scope has them (a user tier ignores the model);
//   - every key is <prefix>:{<tag>}:..., with one '{' and one '}', the tag "u=<user>", "m=<model>" or "g"
//     (percent-encoded ids, which decode back), and a bucket's two keys in one Cluster slot;
//   - reset(user)'s SCAN pattern of one tuple matches the other's key exactly when that is a rate key of the
//     same prefix and user (user and user_model scopes);
//   - rate members: two request ids give one member only when equal, two (seed, counter) pairs likewise, and
//     a request id's member never equals a generated one; permit ids (the caps' members) likewise.

#include <airl/redis/detail/cluster_slot.hpp>
#include <airl/redis/key_layout.hpp>
#include <airl/redis/redis_concurrency_storage.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"

namespace {

using airl::Scope;
using airl::fuzz::check;

struct Tuple {
  std::string prefix, name, user, model;
  Scope scope = Scope::global;
};

enum class Kind { log, costs, cap };

struct Key {
  Kind kind;
  const Tuple* tuple;
  std::string text;
};

Tuple read_tuple(airl::fuzz::Bytes& in) {
  Tuple tuple;
  tuple.prefix = in.text(12);
  std::erase_if(tuple.prefix, [](char c) { return c == '{' || c == '}'; });  // refused by validate_key_prefix
  if (tuple.prefix.empty()) tuple.prefix = "airl";
  tuple.scope = static_cast<Scope>(in.byte() % 4);
  tuple.name = in.text(24);
  tuple.user = in.text(24);
  tuple.model = in.text(24);
  return tuple;
}

// The parts of a tuple its keys depend on: the user and model only where its scope has them.
bool same_bucket(const Tuple& a, const Tuple& b) {
  if (a.prefix != b.prefix || a.scope != b.scope || a.name != b.name) return false;
  if (airl::scope_has_user(a.scope) && a.user != b.user) return false;
  if (airl::scope_has_model(a.scope) && a.model != b.model) return false;
  return true;
}

std::vector<Key> keys_of(const Tuple& tuple) {
  const airl::BucketRef bucket{tuple.scope, tuple.name, tuple.user, tuple.model};
  std::vector<Key> keys(3);
  keys[0] = {Kind::log, &tuple, {}};
  airl::detail::redis_bucket_key(keys[0].text, tuple.prefix, bucket);
  keys[1] = {Kind::costs, &tuple, {}};
  airl::detail::redis_costs_key(keys[1].text, keys[0].text);
  keys[2] = {Kind::cap, &tuple, {}};
  airl::detail::redis_concurrency_key(keys[2].text, tuple.prefix, bucket);
  return keys;
}

std::string percent_decoded(std::string_view text) {
  std::string out;
  const auto hex = [](char c) { return c <= '9' ? c - '0' : c - 'A' + 10; };
  for (std::size_t at = 0; at < text.size(); ++at) {
    const char c = text[at];
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       std::string_view("._~@+=-").find(c) != std::string_view::npos;
    if (plain) {
      out += c;
      continue;
    }
    check(c == '%', "an encoded id holds only plain bytes and %XX");
    check(at + 2 < text.size(), "a %XX escape is complete");
    const char high = text[at + 1], low = text[at + 2];
    check(((high >= '0' && high <= '9') || (high >= 'A' && high <= 'F')) && ((low >= '0' && low <= '9') || (low >= 'A' && low <= 'F')),
          "%XX is two uppercase hex digits");
    out += static_cast<char>(hex(high) * 16 + hex(low));
    at += 2;
  }
  return out;
}

// Checks one key's shape: <prefix>:{<tag>}:[cc:]<u|um|m|g>:<tier>[:<model>][:c], the ids decoding back.
void check_shape(const Key& key) {
  const Tuple& tuple = *key.tuple;
  const std::string_view text = key.text;
  check(text.starts_with(tuple.prefix + ":{"), "a key starts with <prefix>:{");
  check(std::count(text.begin(), text.end(), '{') == 1 && std::count(text.begin(), text.end(), '}') == 1,
        "one '{' and one '}': one hash tag");
  const std::size_t open = tuple.prefix.size() + 2, close = text.find('}');
  const std::string_view tag = text.substr(open, close - open);
  switch (tuple.scope) {
    case Scope::user:
    case Scope::user_model:
      check(tag.starts_with("u=") && percent_decoded(tag.substr(2)) == tuple.user, "a user bucket's tag is u=<user>");
      break;
    case Scope::model:
      check(tag.starts_with("m=") && percent_decoded(tag.substr(2)) == tuple.model, "a model bucket's tag is m=<model>");
      break;
    case Scope::global:
      check(tag == "g", "a global bucket's tag is g");
      break;
  }
  check(airl::detail::hash_tag(text) == tag, "Redis Cluster hashes the tag");
  // The ':'-separated parts after the tag: [cc] scope tier [model] [c].
  std::vector<std::string_view> parts;
  for (std::size_t at = close + 2; at <= text.size();) {
    const std::size_t colon = std::min(text.find(':', at), text.size());
    parts.push_back(text.substr(at, colon - at));
    at = colon + 1;
  }
  check(text[close + 1] == ':', "':' after the tag");
  std::size_t at = 0;
  if (key.kind == Kind::cap) check(parts[at++] == "cc", "a cap's key has the cc part");
  static constexpr std::array<std::string_view, 4> marker = {"u", "m", "um", "g"};
  check(at < parts.size() && parts[at++] == marker[static_cast<std::size_t>(tuple.scope)], "the scope's marker");
  check(at < parts.size() && percent_decoded(parts[at++]) == tuple.name, "the tier name decodes back");
  if (tuple.scope == Scope::user_model) {
    check(at < parts.size() && percent_decoded(parts[at++]) == tuple.model, "the model decodes back");
  }
  if (key.kind == Kind::costs) check(at < parts.size() && parts[at++] == "c", "a costs key ends in :c");
  check(at == parts.size(), "no other part");
}

// Redis's glob matching for the patterns reset(user) sends: '\' escapes, '*', '?' (stringmatchlen's rules).
bool glob_match(std::string_view pattern, std::string_view text) {
  while (!pattern.empty()) {
    const char p = pattern.front();
    if (p == '*') {
      for (std::size_t skip = 0; skip <= text.size(); ++skip) {
        if (glob_match(pattern.substr(1), text.substr(skip))) return true;
      }
      return false;
    }
    if (text.empty()) return false;
    if (p == '?') {
      pattern.remove_prefix(1);
    } else if (p == '\\' && pattern.size() >= 2) {
      if (text.front() != pattern[1]) return false;
      pattern.remove_prefix(2);
    } else {
      check(p != '[', "the pattern holds no unescaped '['");
      if (text.front() != p) return false;
      pattern.remove_prefix(1);
    }
    text.remove_prefix(1);
  }
  return text.empty();
}

void check_members(airl::fuzz::Bytes& in) {
  const std::string id_a = in.text(16), id_b = in.text(16);
  const std::uint64_t seed_a = in.number(), seed_b = in.flag() ? seed_a : in.number();
  const std::uint64_t count_a = in.number(in.byte() % 9), count_b = in.number(in.byte() % 9);
  std::string request_a, request_b, generated_a, generated_b;
  airl::detail::redis_request_member(request_a, id_a);
  airl::detail::redis_request_member(request_b, id_b);
  airl::detail::redis_generated_member(generated_a, seed_a, count_a);
  airl::detail::redis_generated_member(generated_b, seed_b, count_b);
  check((request_a == request_b) == (id_a == id_b), "two request ids share a member only when equal");
  check((generated_a == generated_b) == (seed_a == seed_b && count_a == count_b),
        "two generated members are equal only for one seed and counter");
  check(request_a != generated_b && request_b != generated_a, "a request id's member is never a generated one");

  const airl::PermitId permit_a{in.number(), in.number()};
  const airl::PermitId permit_b = in.flag() ? airl::PermitId{permit_a.high, in.number()} : airl::PermitId{in.number(), permit_a.low};
  check((permit_a.hex() == permit_b.hex()) == (permit_a == permit_b), "two permit ids share a member only when equal");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  airl::fuzz::Bytes in(data, size);
  const Tuple a = read_tuple(in);
  // The second tuple: its own, or the first with one part changed (near misses are where forgeries hide).
  Tuple b = a;
  switch (in.byte() % 6) {
    case 0: b = read_tuple(in); break;
    case 1: b.user = in.text(24); break;
    case 2: b.model = in.text(24); break;
    case 3: b.name = in.text(24); break;
    case 4: b.scope = static_cast<Scope>(in.byte() % 4); break;
    default: std::swap(b.user, b.model); break;
  }

  const std::vector<Key> keys_a = keys_of(a), keys_b = keys_of(b);
  for (const Key& key : keys_a) check_shape(key);
  for (const Key& key : keys_b) check_shape(key);
  check(airl::detail::cluster_slot(keys_a[0].text) == airl::detail::cluster_slot(keys_a[1].text),
        "a bucket's log and costs share a slot");
  for (const Key& x : keys_a) {
    for (const Key& y : keys_b) {
      const bool same = x.kind == y.kind && same_bucket(a, b);
      check((x.text == y.text) == same, "two keys are equal exactly when they name one bucket of one kind");
    }
    for (const Key& y : keys_a) check((x.text == y.text) == (x.kind == y.kind), "a bucket's keys differ by kind");
  }

  const std::string pattern = airl::detail::redis_user_pattern(a.prefix, a.user);
  for (const Key& key : keys_b) {
    const bool owned = key.kind != Kind::cap && airl::scope_has_user(b.scope) && b.prefix == a.prefix && b.user == a.user;
    check(glob_match(pattern, key.text) == owned, "reset(user)'s pattern matches that user's rate keys only");
  }
  check_members(in);
  return 0;
}
