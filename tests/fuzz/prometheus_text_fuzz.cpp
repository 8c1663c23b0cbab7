// SPDX-License-Identifier: MIT
// Fuzz target: <airl/prometheus.hpp>'s exposition text, for metrics whose tier and cap names (label values)
// and counts come from the input. The text is read back by a small parser of the text format 0.0.4 written
// here: every line is a HELP, a TYPE or a sample of a family announced before it, names start with the prefix,
// the text is valid UTF-8, and every label value unescapes (\\, \", \n only) to the name it was written from
// (invalid UTF-8 replaced by U+FFFD, one per byte), with its count. A prefix that is not a metric name must
// be refused with std::invalid_argument.

#include <airl/prometheus.hpp>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"

namespace {

using airl::fuzz::check;

struct Sample {
  std::string name;
  std::string label;  // empty when unlabelled
  std::string value;  // the label's value, unescaped
  std::string number;
};

bool metric_name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || (!first && c >= '0' && c <= '9');
}

// A sample line: name, optionally {label="value"}, one space, a number. Checks the grammar as it reads.
Sample parse_sample(std::string_view line) {
  Sample sample;
  std::size_t at = 0;
  while (at < line.size() && metric_name_char(line[at], at == 0)) ++at;
  check(at > 0, "a sample line starts with a metric name");
  sample.name = std::string(line.substr(0, at));
  if (at < line.size() && line[at] == '{') {
    const std::size_t label_start = ++at;
    while (at < line.size() && line[at] != '=') {
      check(metric_name_char(line[at], at == label_start), "a label name is [a-zA-Z_][a-zA-Z0-9_]*");
      ++at;
    }
    sample.label = std::string(line.substr(label_start, at - label_start));
    check(!sample.label.empty() && at + 1 < line.size() && line[at + 1] == '"', "label=\" follows a label name");
    at += 2;
    for (;; ++at) {
      check(at < line.size(), "a label value is closed by '\"'");
      const char c = line[at];
      if (c == '"') break;
      if (c == '\\') {
        check(at + 1 < line.size(), "an escape has a character after the backslash");
        const char escaped = line[++at];
        check(escaped == '\\' || escaped == '"' || escaped == 'n', "only \\\\, \\\" and \\n are escapes");
        sample.value += escaped == 'n' ? '\n' : escaped;
      } else {
        sample.value += c;
      }
    }
    check(at + 1 < line.size() && line[at + 1] == '}', "'}' closes the labels");
    at += 2;
  }
  check(at < line.size() && line[at] == ' ', "one space before the value");
  sample.number = std::string(line.substr(at + 1));
  check(!sample.number.empty(), "a sample has a value");
  for (const char c : sample.number) check((c >= '0' && c <= '9') || c == '.', "values are plain decimal numbers");
  return sample;
}

// Every sample of `text`, checking the lines around them: HELP and TYPE before a family's samples, every
// name starting with `prefix` + "_", nothing but those three kinds of line, a newline at the end.
std::vector<Sample> parse_text(std::string_view text, std::string_view prefix) {
  check(airl::fuzz::valid_utf8(text), "the exposition text is valid UTF-8");
  check(!text.empty() && text.back() == '\n', "the text ends with a newline");
  const std::string base = std::string(prefix) + "_";
  std::vector<Sample> samples;
  std::string family;  // the family the last TYPE line announced
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t end = text.find('\n', at);
    const std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (line.starts_with("# HELP ") || line.starts_with("# TYPE ")) {
      const std::string_view rest = line.substr(7);
      const std::size_t space = rest.find(' ');
      check(space != std::string_view::npos, "HELP and TYPE name a family, then text");
      const std::string_view name = rest.substr(0, space);
      check(name.starts_with(base), "every family starts with the prefix");
      if (line.starts_with("# TYPE ")) {
        const std::string_view type = rest.substr(space + 1);
        check(type == "counter" || type == "gauge" || type == "histogram", "a known type");
        family = std::string(name);
      }
      continue;
    }
    Sample sample = parse_sample(line);
    check(!family.empty() && sample.name.starts_with(family), "a sample follows its family's TYPE");
    samples.push_back(std::move(sample));
  }
  return samples;
}

// The samples of `name` with label `label`, as (value, number) pairs in order.
std::vector<std::pair<std::string, std::string>> labelled(const std::vector<Sample>& samples, const std::string& name,
                                                          std::string_view label) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Sample& sample : samples) {
    if (sample.name == name) {
      check(sample.label == label, "the family's label");
      out.emplace_back(sample.value, sample.number);
    }
  }
  return out;
}

// The expected (reason, count) samples of a denials family: the names in order, then the store-made reasons.
template <class Named>
std::vector<std::pair<std::string, std::string>> expected_denials(const Named& named, std::uint64_t key_capacity,
                                                                  std::uint64_t backend_unavailable) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, count] : named) out.emplace_back(airl::fuzz::replace_invalid_utf8(name), std::to_string(count));
  out.emplace_back("key_capacity", std::to_string(key_capacity));
  out.emplace_back("backend_unavailable", std::to_string(backend_unavailable));
  return out;
}

// A prefix: one of two fixed ones, or the input's bytes (then maybe not a metric name).
std::string read_prefix(airl::fuzz::Bytes& in, std::string_view fixed) {
  switch (in.byte() % 4) {
    case 0: return std::string(fixed);
    case 1: return "svc:api_2";
    default: return in.text(16);
  }
}

bool valid_prefix(std::string_view prefix) {
  if (prefix.empty()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (!metric_name_char(prefix[i], i == 0)) return false;
  }
  return true;
}

void rate_metrics(airl::fuzz::Bytes& in) {
  airl::Metrics metrics;
  metrics.allowed = in.number();
  metrics.denied = in.number();
  metrics.backend_errors = in.number(2);
  metrics.degraded = in.number(2);
  metrics.active_keys = static_cast<std::size_t>(in.number(4));
  metrics.denied_key_capacity = in.number(3);
  metrics.denied_backend_unavailable = in.number(3);
  const std::size_t tiers = in.byte() % 8;
  for (std::size_t i = 0; i < tiers; ++i) metrics.denied_by_tier.push_back({in.text(), in.number(in.byte() % 8 + 1)});
  for (std::uint64_t& count : metrics.latency.counts) count = in.number(in.byte() % 5);
  metrics.latency.sum_ns = in.number();
  const std::string prefix = read_prefix(in, "airl");

  std::string text;
  try {
    text = airl::prometheus::text(metrics, prefix);
  } catch (const std::invalid_argument&) {
    check(!valid_prefix(prefix), "only a prefix that is not a metric name is refused");
    return;
  }
  check(valid_prefix(prefix), "a prefix that is not a metric name is refused");
  const std::vector<Sample> samples = parse_text(text, prefix);
  const std::string base = prefix + "_";
  check(labelled(samples, base + "denials_total", "reason") ==
            expected_denials(metrics.denied_by_tier, metrics.denied_key_capacity, metrics.denied_backend_unavailable),
        "every tier's name and count round-trip through the denials samples");
  check(labelled(samples, base + "decisions_total", "result") ==
            std::vector<std::pair<std::string, std::string>>{{"allowed", std::to_string(metrics.allowed)},
                                                             {"denied", std::to_string(metrics.denied)}},
        "the decisions samples");
  // The histogram: cumulative buckets ending at +Inf = count, and the exact sum in seconds.
  const auto buckets = labelled(samples, base + "decision_latency_seconds_bucket", "le");
  check(buckets.size() == metrics.latency.counts.size() && buckets.back().first == "+Inf", "one bucket per bound and +Inf");
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    cumulative += metrics.latency.counts[b];
    check(buckets[b].second == std::to_string(cumulative), "buckets are cumulative");
  }
  for (const Sample& sample : samples) {
    if (sample.name == base + "decision_latency_seconds_count") check(sample.number == std::to_string(cumulative), "count");
    if (sample.name == base + "decision_latency_seconds_sum") {
      const std::size_t dot = sample.number.find('.');
      check(dot != std::string::npos && sample.number.size() - dot == 10, "the sum has 9 decimals");
      check(sample.number.substr(0, dot) + sample.number.substr(dot + 1) ==
                std::to_string(metrics.latency.sum_ns / 1'000'000'000) +
                    std::to_string(1'000'000'000 + metrics.latency.sum_ns % 1'000'000'000).substr(1),
            "the sum is the exact nanoseconds");
    }
  }
}

void concurrency_metrics(airl::fuzz::Bytes& in) {
  airl::ConcurrencyMetrics metrics;
  metrics.acquired = in.number();
  metrics.denied = in.number(3);
  metrics.held = in.number(2);
  metrics.renewed = in.number(2);
  metrics.leases_lost = in.number(2);
  metrics.degraded = in.number(2);
  metrics.backend_errors = in.number(2);
  metrics.release_errors = in.number(2);
  metrics.denied_key_capacity = in.number(2);
  metrics.denied_backend_unavailable = in.number(2);
  const std::size_t caps = in.byte() % 8;
  for (std::size_t i = 0; i < caps; ++i) metrics.denied_by_cap.push_back({in.text(), in.number(in.byte() % 8 + 1)});
  const std::string prefix = read_prefix(in, "airl_concurrency");

  std::string text;
  try {
    text = airl::prometheus::text(metrics, prefix);
  } catch (const std::invalid_argument&) {
    check(!valid_prefix(prefix), "only a prefix that is not a metric name is refused");
    return;
  }
  check(valid_prefix(prefix), "a prefix that is not a metric name is refused");
  const std::vector<Sample> samples = parse_text(text, prefix);
  check(labelled(samples, prefix + "_denials_total", "reason") ==
            expected_denials(metrics.denied_by_cap, metrics.denied_key_capacity, metrics.denied_backend_unavailable),
        "every cap's name and count round-trip through the denials samples");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  airl::fuzz::Bytes in(data, size);
  if (in.flag()) {
    concurrency_metrics(in);
  } else {
    rate_metrics(in);
  }
  return 0;
}
