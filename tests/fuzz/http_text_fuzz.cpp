// SPDX-License-Identifier: MIT
// Fuzz target: what <airl/http.hpp> writes for a decision or a refused permit, built from the input (tier
// names, limits, windows, units, every decision field and status, permit caps and retry hints):
//   - every header name is a token and every value visible ASCII (nothing a client or proxy could split);
//   - RateLimit-Policy and RateLimit parse as Structured Field Lists (RFC 9651) with the parser below, and
//     give back each tier's name (sf-string, %xx-decoded), limit, window, unit, remaining and reset;
//   - Retry-After, retry-after-ms, x-should-retry and the x-ratelimit-* headers say what the decision says;
//   - every body parses with nlohmann::json and has its shape: OpenAI's {"error":{message,type,param,code}}
//     naming the tier as the headers do, problem+json with its status and violated policy; a permit's body
//     names its cap (invalid UTF-8 replaced);
//   - a tier the decision names that is not among the tiers, or a body for an admission, throws
//     std::invalid_argument; nothing else throws.

#include <airl/concurrency_limiter.hpp>
#include <airl/http.hpp>
#include <airl/in_memory_concurrency_storage.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"

namespace {

using airl::fuzz::check;
using namespace std::chrono_literals;

// --- A Structured Field List parser (RFC 9651, section 4.2): the subset the headers use, strictly ---

struct SfValue {
  enum class Kind { integer, string, token, boolean } kind = Kind::integer;
  std::int64_t integer = 0;
  std::string text;  // string or token
  bool boolean = false;
};

struct SfItem {
  SfValue value;
  std::vector<std::pair<std::string, SfValue>> params;

  const SfValue* param(std::string_view key) const {
    for (const auto& [name, found] : params) {
      if (name == key) return &found;
    }
    return nullptr;
  }
};

class SfParser {
 public:
  explicit SfParser(std::string_view text) : text_(text) {}

  // The whole field as a List; checks fail on anything else.
  std::vector<SfItem> list() {
    std::vector<SfItem> items;
    skip(' ');
    if (at_ == text_.size()) return items;
    for (;;) {
      items.push_back(item());
      skip(' ');
      skip('\t');
      if (at_ == text_.size()) return items;
      check(next() == ',', "sf: list members are separated by ','");
      skip(' ');
      skip('\t');
      check(at_ < text_.size(), "sf: no trailing ','");
    }
  }

 private:
  SfItem item() {
    SfItem item;
    item.value = bare_item();
    while (at_ < text_.size() && text_[at_] == ';') {
      ++at_;
      skip(' ');
      std::string key = this->key();
      SfValue value{SfValue::Kind::boolean, 0, {}, true};
      if (at_ < text_.size() && text_[at_] == '=') {
        ++at_;
        value = bare_item();
      }
      for (const auto& param : item.params) {
        check(param.first != key, "sf: no repeated parameter (the spec keeps the last; the headers never repeat one)");
      }
      item.params.emplace_back(std::move(key), std::move(value));
    }
    return item;
  }

  std::string key() {
    check(at_ < text_.size() && ((text_[at_] >= 'a' && text_[at_] <= 'z') || text_[at_] == '*'), "sf: a key starts lcalpha or *");
    const std::size_t start = at_;
    while (at_ < text_.size()) {
      const char c = text_[at_];
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' || c == '*')) break;
      ++at_;
    }
    return std::string(text_.substr(start, at_ - start));
  }

  SfValue bare_item() {
    check(at_ < text_.size(), "sf: an item is not empty");
    const char c = text_[at_];
    if (c == '-' || (c >= '0' && c <= '9')) return integer();
    if (c == '"') return string();
    if (c == '?') {
      ++at_;
      const char b = next();
      check(b == '0' || b == '1', "sf: a boolean is ?0 or ?1");
      return {SfValue::Kind::boolean, 0, {}, b == '1'};
    }
    check((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '*', "sf: a bare item is an integer, string, boolean or token");
    const std::size_t start = at_;
    while (at_ < text_.size() && text_[at_] > ' ' && text_[at_] < 0x7F && std::string_view(",;=\"()<>@[]{}\\").find(text_[at_]) == std::string_view::npos) ++at_;
    return {SfValue::Kind::token, 0, std::string(text_.substr(start, at_ - start)), false};
  }

  SfValue integer() {
    bool negative = false;
    if (text_[at_] == '-') {
      negative = true;
      ++at_;
    }
    std::int64_t value = 0;
    std::size_t digits = 0;
    while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') {
      value = value * 10 + (text_[at_++] - '0');
      ++digits;
      check(digits <= 15, "sf: an integer has at most 15 digits");
    }
    check(digits > 0, "sf: an integer has digits");
    check(at_ == text_.size() || text_[at_] != '.', "sf: the headers use no decimals");
    return {SfValue::Kind::integer, negative ? -value : value, {}, false};
  }

  SfValue string() {
    ++at_;  // the opening quote
    std::string out;
    for (;;) {
      check(at_ < text_.size(), "sf: a string is closed");
      const char c = text_[at_++];
      if (c == '"') break;
      if (c == '\\') {
        check(at_ < text_.size(), "sf: an escape is complete");
        const char escaped = text_[at_++];
        check(escaped == '"' || escaped == '\\', "sf: only \\\" and \\\\ are escapes");
        out += escaped;
        continue;
      }
      check(c >= 0x20 && c <= 0x7E, "sf: a string holds printable ASCII only");
      out += c;
    }
    return {SfValue::Kind::string, 0, std::move(out), false};
  }

  char next() {
    check(at_ < text_.size(), "sf: text ends too early");
    return text_[at_++];
  }
  void skip(char c) {
    while (at_ < text_.size() && text_[at_] == c) ++at_;
  }

  std::string_view text_;
  std::size_t at_ = 0;
};

// The tier name a policy identifier stands for: %xx decoded (the identifier writes '%' itself as %25).
std::string percent_decoded(std::string_view text) {
  std::string out;
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (std::size_t at = 0; at < text.size(); ++at) {
    if (text[at] != '%') {
      out += text[at];
      continue;
    }
    check(at + 2 < text.size(), "a %xx escape is complete");
    const int high = hex(text[at + 1]), low = hex(text[at + 2]);
    check(high >= 0 && low >= 0, "a %xx escape is two lowercase hex digits");
    out += static_cast<char>(high * 16 + low);
    at += 2;
  }
  return out;
}

std::uint64_t sf_clamped(std::uint64_t value) { return std::min<std::uint64_t>(value, 999'999'999'999'999); }

std::uint64_t ceil_seconds(std::chrono::milliseconds duration) {
  return duration.count() <= 0 ? 0 : (static_cast<std::uint64_t>(duration.count()) + 999) / 1000;
}

void check_header_text(const airl::http::Header& header) {
  check(!header.name.empty(), "a header has a name");
  for (const char c : header.name) {
    const bool token = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    check(token, "a header name is a token");
  }
  for (const char c : header.value) check(c >= 0x20 && c <= 0x7E, "a header value is visible ASCII or spaces");
  check(!header.value.empty() && header.value.front() != ' ' && header.value.back() != ' ', "no blank edges");
}

// Decimal digits only, and their value.
std::uint64_t digits_value(const std::string& text) {
  check(!text.empty() && text.size() <= 20, "a count is 1 to 20 digits");
  std::uint64_t value = 0;
  for (const char c : text) {
    check(c >= '0' && c <= '9', "a count is decimal digits");
    check(value <= (std::numeric_limits<std::uint64_t>::max() - static_cast<std::uint64_t>(c - '0')) / 10, "a count fits 64 bits");
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return value;
}

// A Go duration as duration_text writes it: [<h>h][<m>m]<s>[.<frac>]s or <ms>ms; back to milliseconds.
std::uint64_t duration_ms(const std::string& text) {
  check(text.size() >= 2, "a duration has a number and a unit");
  if (text.ends_with("ms")) {
    const std::uint64_t ms = digits_value(text.substr(0, text.size() - 2));
    check(ms >= 1 && ms <= 999, "a duration in ms is under a second");
    return ms;
  }
  check(text.back() == 's', "a duration ends in s");
  std::uint64_t total = 0;
  std::size_t at = 0;
  const std::string body = text.substr(0, text.size() - 1);
  if (const std::size_t h = body.find('h'); h != std::string::npos) {
    total += digits_value(body.substr(0, h)) * 3'600'000;
    at = h + 1;
  }
  if (const std::size_t m = body.find('m', at); m != std::string::npos) {
    const std::uint64_t minutes = digits_value(body.substr(at, m - at));
    check(minutes < 60 || at == 0, "minutes under 60 after hours");
    total += minutes * 60'000;
    at = m + 1;
  }
  const std::string seconds = body.substr(at);
  const std::size_t dot = seconds.find('.');
  total += digits_value(seconds.substr(0, dot)) * 1000;
  if (dot != std::string::npos) {
    const std::string fraction = seconds.substr(dot + 1);
    check(!fraction.empty() && fraction.size() <= 3 && fraction.back() != '0', "a fraction of 1 to 3 digits, no trailing 0");
    total += digits_value((fraction + "00").substr(0, 3));
  }
  return total;
}

// --- Decisions ---

std::vector<airl::Tier> read_tiers(airl::fuzz::Bytes& in) {
  std::vector<airl::Tier> tiers(in.byte() % 4 + 1);
  for (airl::Tier& tier : tiers) {
    tier.name = in.text(24);
    tier.scope = static_cast<airl::Scope>(in.byte() % 4);
    tier.quota.limit = in.flag() ? in.number(2) : in.number();
    tier.quota.window = std::chrono::milliseconds(static_cast<std::int64_t>(in.number(in.flag() ? 8 : 4)));
    tier.unit = in.flag() ? airl::Unit::requests : airl::Unit::cost;
  }
  return tiers;
}

std::chrono::milliseconds read_wait(airl::fuzz::Bytes& in) {
  switch (in.byte() % 4) {
    case 0: return airl::Decision::never;
    case 1: return std::chrono::milliseconds(static_cast<std::int64_t>(in.number(3)));
    case 2: return std::chrono::milliseconds(static_cast<std::int64_t>(in.number()));  // any, negative too
    default: return 0ms;
  }
}

airl::Decision read_decision(airl::fuzz::Bytes& in, std::size_t tiers) {
  airl::Decision decision;
  decision.status = static_cast<airl::Status>(in.byte() % 5);
  decision.allowed = airl::admits(decision.status) || in.byte() % 8 == 0;  // shadow admissions too
  decision.shadow_denied = decision.allowed && !airl::admits(decision.status);
  decision.limit = in.flag() ? in.number(2) : in.number();
  decision.remaining = in.flag() ? in.number(2) : in.number();
  decision.requested = in.number(in.byte() % 9);
  decision.retry_after = decision.allowed && !decision.shadow_denied ? 0ms : read_wait(in);
  decision.reset_after = read_wait(in);
  decision.binding_tier = in.byte() % (tiers + 1);  // sometimes not a tier: refused
  if (in.flag()) {
    decision.other_unit = airl::TierState{in.byte() % (tiers + 1), in.number(), in.number(), read_wait(in)};
  }
  decision.reason = in.flag() ? in.text(24) : std::string(airl::to_string(decision.status));
  return decision;
}

void check_decision_headers(const airl::Decision& decision, const std::vector<airl::Tier>& tiers,
                            const std::vector<airl::http::Header>& headers) {
  std::optional<std::string> retry_after, retry_after_ms, should_retry, policy, current;
  std::vector<std::pair<std::string, std::string>> openai;
  for (const airl::http::Header& header : headers) {
    check_header_text(header);
    if (header.name == "Retry-After") retry_after = header.value;
    else if (header.name == "retry-after-ms") retry_after_ms = header.value;
    else if (header.name == "x-should-retry") should_retry = header.value;
    else if (header.name == "RateLimit-Policy") policy = header.value;
    else if (header.name == "RateLimit") current = header.value;
    else if (header.name.starts_with("x-ratelimit-")) openai.emplace_back(header.name, header.value);
    else check(false, "a known header");
  }

  // Retry headers: only on a refusal.
  if (decision.allowed) {
    check(!retry_after && !retry_after_ms && !should_retry, "an admission has no retry headers");
  } else if (decision.retry_after == airl::Decision::never) {
    check(should_retry == "false" && !retry_after && !retry_after_ms, "no wait helps: x-should-retry: false only");
  } else {
    check(retry_after && retry_after_ms && !should_retry, "a wait helps: Retry-After and retry-after-ms");
    check(digits_value(*retry_after) == std::max<std::uint64_t>(1, ceil_seconds(decision.retry_after)), "Retry-After");
    check(digits_value(*retry_after_ms) ==
              static_cast<std::uint64_t>(std::max<std::int64_t>(1, decision.retry_after.count())),
          "retry-after-ms");
  }

  // RateLimit-Policy: every tier, in order.
  check(policy.has_value(), "RateLimit-Policy is always sent");
  const std::vector<SfItem> policies = SfParser(*policy).list();
  check(policies.size() == tiers.size(), "one policy per tier");
  for (std::size_t i = 0; i < tiers.size(); ++i) {
    const SfItem& item = policies[i];
    check(item.value.kind == SfValue::Kind::string, "a policy is named by an sf-string");
    check(percent_decoded(item.value.text) == tiers[i].name, "the policy name gives back the tier name");
    check(item.value.text == airl::detail::policy_identifier(tiers[i].name), "the name is the tier's policy identifier");
    const SfValue* q = item.param("q");
    const SfValue* w = item.param("w");
    const SfValue* qu = item.param("qu");
    check(item.params.size() == 3 && q && w && qu, "q, w and qu");
    check(q->kind == SfValue::Kind::integer && static_cast<std::uint64_t>(q->integer) == sf_clamped(tiers[i].quota.limit), "q is the limit");
    check(w->kind == SfValue::Kind::integer &&
              static_cast<std::uint64_t>(w->integer) == sf_clamped(std::max<std::uint64_t>(1, ceil_seconds(tiers[i].quota.window))),
          "w is the window in whole seconds, at least 1");
    check(qu->kind == SfValue::Kind::string &&
              qu->text == (tiers[i].unit == airl::Unit::requests ? "requests" : "airl-tokens"), "qu is the unit");
  }

  // RateLimit and x-ratelimit-*: the binding tier, and the other unit's; none when the store refused.
  const bool from_tier = decision.status != airl::Status::key_capacity && decision.status != airl::Status::backend_unavailable;
  if (!from_tier) {
    check(!current && openai.empty(), "no tier's counters when the store refused");
    return;
  }
  std::vector<airl::TierState> described{{decision.binding_tier, decision.limit, decision.remaining, decision.reset_after}};
  if (decision.other_unit && tiers[decision.other_unit->tier].unit != tiers[decision.binding_tier].unit) {
    described.push_back(*decision.other_unit);
  }
  check(current.has_value(), "RateLimit is sent");
  const std::vector<SfItem> items = SfParser(*current).list();
  check(items.size() == described.size(), "one RateLimit item per unit described");
  const bool waiting = !decision.allowed && decision.retry_after != airl::Decision::never;
  check(openai.size() == 3 * described.size(), "three x-ratelimit-* headers per unit described");
  for (std::size_t i = 0; i < described.size(); ++i) {
    const airl::TierState& state = described[i];
    const airl::Tier& tier = tiers[state.tier];
    check(items[i].value.kind == SfValue::Kind::string && percent_decoded(items[i].value.text) == tier.name,
          "a RateLimit item names its tier");
    const SfValue* r = items[i].param("r");
    const SfValue* t = items[i].param("t");
    check(items[i].params.size() == 2 && r && t && r->kind == SfValue::Kind::integer && t->kind == SfValue::Kind::integer,
          "r and t");
    check(static_cast<std::uint64_t>(r->integer) == sf_clamped(state.remaining), "r is the remaining");
    const std::uint64_t t_expected = waiting ? std::max<std::uint64_t>(1, ceil_seconds(decision.retry_after))
                                             : ceil_seconds(state.reset_after);
    check(static_cast<std::uint64_t>(t->integer) == sf_clamped(t_expected), "t: Retry-After on a wait, else the reset");
    const std::string unit(airl::http::unit_name(tier.unit));
    check(openai[3 * i].first == "x-ratelimit-limit-" + unit && digits_value(openai[3 * i].second) == state.limit, "limit");
    check(openai[3 * i + 1].first == "x-ratelimit-remaining-" + unit && digits_value(openai[3 * i + 1].second) == state.remaining,
          "remaining");
    check(openai[3 * i + 2].first == "x-ratelimit-reset-" + unit, "reset");
    const std::uint64_t reset_ms = state.reset_after.count() <= 0 ? 0 : static_cast<std::uint64_t>(state.reset_after.count());
    check(duration_ms(openai[3 * i + 2].second) == reset_ms, "the reset duration gives back the milliseconds");
  }
}

nlohmann::json parse_json(const std::string& body) {
  check(nlohmann::json::accept(body), "a body is JSON");
  return nlohmann::json::parse(body);
}

void check_openai_shape(const nlohmann::json& json) {
  check(json.is_object() && json.size() == 1 && json.contains("error"), "{\"error\":{...}}");
  const nlohmann::json& error = json["error"];
  check(error.is_object() && error.size() == 4, "message, type, param, code");
  check(error["message"].is_string() && error["type"].is_string() && error["param"].is_null(), "message, type, param");
  check(error["code"].is_string() || error["code"].is_null(), "code");
}

void decision_case(airl::fuzz::Bytes& in) {
  const std::vector<airl::Tier> tiers = read_tiers(in);
  const airl::Decision decision = read_decision(in, tiers.size());
  const bool tier_known = decision.binding_tier < tiers.size() &&
                          (!decision.other_unit || decision.other_unit->tier < tiers.size());

  std::vector<airl::http::Header> headers;
  try {
    headers = airl::http::response_headers(decision, tiers);
    check(tier_known, "a tier outside the tiers is refused");
  } catch (const std::invalid_argument&) {
    check(!tier_known, "only a tier outside the tiers is refused");
  }
  if (tier_known) check_decision_headers(decision, tiers, headers);

  const int status = airl::http::status_code(decision);
  check(status == (decision.allowed ? 200 : decision.status == airl::Status::backend_unavailable ? 503 : 429), "status code");

  // OpenAI's body.
  try {
    const std::string body = airl::http::openai_error_json(decision, tiers);
    check(!decision.allowed, "an admission has no error body");
    const nlohmann::json json = parse_json(body);
    check_openai_shape(json);
    const nlohmann::json& error = json["error"];
    if (decision.status == airl::Status::backend_unavailable) {
      check(error["type"] == "server_error" && error["code"] == "rate_limit_store_unavailable", "503 body");
    } else {
      check(error["code"] == "rate_limit_exceeded", "429 code");
      if (decision.status != airl::Status::key_capacity) {
        const airl::Tier& tier = tiers.at(decision.binding_tier);
        check(error["type"] == std::string(airl::http::unit_name(tier.unit)), "the type is the tier's unit");
        const std::string message = error["message"];
        check(message.find(airl::detail::policy_identifier(tier.name) + " (") != std::string::npos,
              "the message names the tier as the headers do");
      }
    }
  } catch (const std::invalid_argument&) {
    check(decision.allowed || (decision.status != airl::Status::backend_unavailable &&
                               decision.status != airl::Status::key_capacity && decision.binding_tier >= tiers.size()),
          "openai_error_json refuses only admissions and unknown tiers");
  }

  // problem+json.
  try {
    const std::string body = airl::http::problem_json(decision);
    check(!decision.allowed, "an admission has no problem body");
    const nlohmann::json json = parse_json(body);
    check(json.is_object() && json["status"] == status && json["type"].is_string() && json["title"].is_string(), "problem shape");
    if (decision.retry_after == airl::Decision::never) {
      check(!json.contains("retry-after"), "no retry-after when no wait helps");
    } else {
      check(json["retry-after"] == std::max<std::uint64_t>(1, ceil_seconds(decision.retry_after)), "retry-after");
    }
    if (status == 503) {
      check(!json.contains("violated-policies"), "a 503 names no policy");
    } else {
      check(json["violated-policies"] == nlohmann::json::array({airl::detail::policy_identifier(decision.reason)}),
            "violated-policies names the reason as the headers name tiers");
      check(percent_decoded(json["violated-policies"][0].get<std::string>()) == decision.reason, "and decodes back to it");
    }
  } catch (const std::invalid_argument&) {
    check(decision.allowed, "problem_json refuses only admissions");
  }
}

// --- Permits ---

void permit_case(airl::fuzz::Bytes& in) {
  std::vector<airl::ConcurrencyCap> caps(in.byte() % 3 + 1);
  for (airl::ConcurrencyCap& cap : caps) {
    cap.name = in.text(24);
    cap.scope = static_cast<airl::Scope>(in.byte() % 4);
    cap.max_in_flight = in.byte() % 2;
    cap.lease = std::chrono::milliseconds(static_cast<std::int64_t>(in.number(3) % 100'000 + 1));
  }
  std::optional<airl::ConcurrencyLimiter<airl::InMemoryConcurrencyStorage<>>> limiter;
  try {
    limiter.emplace(caps);
  } catch (const std::invalid_argument&) {
    return;  // names the limiter refuses (empty, reserved, repeated) never reach a permit
  }
  const std::string user = "u", model = "m";
  airl::Permit first = limiter->try_acquire(user, model);
  airl::Permit permit = limiter->try_acquire(user, model);  // a cap of 1 is full now; a cap of 0 was full already
  const std::chrono::milliseconds retry = read_wait(in);

  const int status = airl::http::status_code(permit);
  const std::vector<airl::http::Header> headers = airl::http::response_headers(permit, retry);
  for (const airl::http::Header& header : headers) check_header_text(header);
  if (status == 200) {
    check(headers.empty(), "an acquired permit has no headers");
    bool threw = false;
    try {
      (void)airl::http::problem_json(permit, retry);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    check(threw, "an acquired permit has no problem body");
    return;
  }
  check(status == 429, "a full cap is 429");
  const std::string cap_name = airl::fuzz::replace_invalid_utf8(permit.reason());
  const nlohmann::json problem = parse_json(airl::http::problem_json(permit, retry));
  check(problem["status"] == 429 && problem["detail"] == "too many requests in flight: " + cap_name + " is full",
        "the problem names the full cap");
  const nlohmann::json openai = parse_json(airl::http::openai_error_json(permit, retry));
  check_openai_shape(openai);
  const std::string message = openai["error"]["message"];
  check(message.starts_with("Too many requests in flight: " + cap_name + " is full"), "the message names the full cap");
  if (permit.retry_after() == airl::Decision::never) {
    check(headers.size() == 1 && headers[0].name == "x-should-retry", "a cap of 0: no wait helps");
  } else if (retry == airl::Decision::never) {
    check(headers.size() == 1 && headers[0].name == "x-should-retry", "a caller's never: no wait helps");
  } else {
    check(headers.size() == 2 && headers[0].name == "Retry-After" &&
              digits_value(headers[0].value) == std::max<std::uint64_t>(1, ceil_seconds(retry)),
          "Retry-After is the caller's hint");
    check(problem["retry-after"] == std::max<std::uint64_t>(1, ceil_seconds(retry)), "the body's retry-after");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  airl::fuzz::Bytes in(data, size);
  if (in.byte() % 4 == 0) {
    permit_case(in);
  } else {
    decision_case(in);
  }
  return 0;
}
