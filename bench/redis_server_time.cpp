// SPDX-License-Identifier: MIT
// Redis server time per decision (see redis_server_time.hpp). Each case runs airl's real allow() through
// RedisStorage, one call at a time, and the minimal script through plain hiredis EVALSHA, on 10,000 users
// round-robin (one model), each kind on its own keys of the same shape. The kinds alternate in chunks of 500
// calls (after 50 untimed ones); before each chunk CONFIG RESETSTAT, after it INFO commandstats:
// cmdstat_evalsha usec / calls is the server's time per call (the script and every command it runs; not the
// network, not the client). A repetition's figure is the median of its chunks (Redis counts wall time, so a
// chunk in which a shared machine preempted Redis reads high; the median drops it); the rows are medians over
// the repetitions, the ratio the median of the repetitions' ratios. Every call's answer is checked against
// what the case says (admitted, denied, replayed), and the EVALSHA count against the calls made (one script
// call per decision, no EVAL fallback); a row that fails either is void.
//
// Quotas have a 1 h window, so nothing expires during a run: each run adds one entry per user it reaches
// to both kinds' logs alike (airl's denial and replay cases add nothing: their logs are prefilled).

#include "redis_server_time.hpp"

#include "redis_minimal_script.hpp"
#include "redis_raw.hpp"

#include <airl/redis.hpp>
#include <airl/redis/key_layout.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace airl::bench {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t user_count = 10'000;
constexpr std::string_view model = "llama-3-70b";
constexpr std::chrono::milliseconds window = 1h;         // longer than any run: nothing expires
constexpr std::uint64_t open_limit = 1'000'000'000'000;  // never reached (the weighted costs included)
constexpr std::uint64_t full_limit = 4;                  // the denial case: each user's log holds 4 entries
constexpr std::size_t batch = 64;                        // prefills go in pipelined batches
constexpr std::size_t chunk_calls = 500;                 // calls between CONFIG RESETSTAT and INFO
// Untimed calls of a kind before each of its chunks: the switch from the other kind falls on them (Redis runs
// a Lua GC step every 50 script calls, on whatever garbage the other kind's script left).
constexpr std::size_t warm_calls = 50;

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// The weighted case's costs: 1..4000, spread by a multiplicative hash of the call's number (both kinds
// make the same calls, so they see the same costs).
std::uint64_t weighted_cost(std::size_t i) { return 1 + (std::uint64_t{i} * 2654435761u) % 4000; }

// cmdstat_evalsha and cmdstat_eval since the last CONFIG RESETSTAT; the commands the scripts ran (Redis counts
// them too) go to `inner`: name -> {calls, usec}.
struct ScriptStats {
  std::uint64_t evalsha_calls = 0, evalsha_usec = 0, eval_calls = 0;
  std::uint64_t evalsha_failed = 0;  // rejected or failed (an error reply, as a script error): Redis 7+
  std::map<std::string, std::array<std::uint64_t, 2>> inner;
};

std::uint64_t stat_field(std::string_view line, std::string_view field) {
  const std::size_t at = line.find(field);
  if (at == std::string_view::npos) throw std::runtime_error("INFO commandstats: no " + std::string(field));
  return std::stoull(std::string(line.substr(at + field.size(), line.find(',', at) - at - field.size())));
}

ScriptStats read_stats(RawRedis& raw) {
  const Reply reply = raw.command({"INFO", "commandstats"});
  const std::string_view text(reply->str, reply->len);
  ScriptStats stats;
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    const std::string_view line = text.substr(start, end - start);
    if (line.starts_with("cmdstat_evalsha:")) {
      stats.evalsha_calls = stat_field(line, "calls=");
      stats.evalsha_usec = stat_field(line, "usec=");
      for (const std::string_view field : {"rejected_calls=", "failed_calls="}) {
        if (line.find(field) != std::string_view::npos) stats.evalsha_failed += stat_field(line, field);
      }
    } else if (line.starts_with("cmdstat_eval:")) {
      stats.eval_calls = stat_field(line, "calls=");
    } else if (line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info:") &&
               !line.starts_with("cmdstat_config|")) {
      const std::size_t colon = line.find(':');
      const std::string name(line.substr(8, colon - 8));  // after "cmdstat_"
      stats.inner[name] = {stat_field(line, "calls="), stat_field(line, "usec=")};
    }
    start = end + 1;
  }
  return stats;
}

// The minimal script's calls on one set of keys (one per user, airl's user_model layout under `prefix`):
// EVALSHA <sha> 1 <key> <member> <limit> <window us> <cost>, members of airl's generated shape.
class MinimalCalls {
 public:
  MinimalCalls(std::string sha, const std::string& prefix, const std::vector<std::string>& users, std::uint64_t limit)
      : sha_(std::move(sha)),
        limit_(std::to_string(limit)),
        window_us_(std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(window).count())) {
    for (const std::string& user : users) {
      keys_.emplace_back();
      airl::detail::redis_bucket_key(keys_.back(), prefix, {airl::Scope::user_model, "default", user, model});
    }
  }

  // Queues the call for `user` with `cost` on `raw` (read its reply with raw.get_reply()).
  void append(RawRedis& raw, std::size_t user, std::uint64_t cost) {
    airl::detail::redis_generated_member(member_, 0x9E3779B97F4A7C15ull, counter_++);
    cost_ = std::to_string(cost);
    const std::array<std::string_view, 8> args = {"EVALSHA", sha_,  "1",        keys_[user],
                                                  member_,   limit_, window_us_, cost_};
    std::array<const char*, args.size()> argv{};
    std::array<std::size_t, args.size()> lengths{};
    for (std::size_t a = 0; a < args.size(); ++a) {
      argv[a] = args[a].data();
      lengths[a] = args[a].size();
    }
    raw.append(args.size(), argv.data(), lengths.data());
  }

  // One call; whether the script answered `expected` (1 admitted, 0 denied).
  bool call(RawRedis& raw, std::size_t user, std::uint64_t cost, long long expected) {
    append(raw, user, cost);
    const Reply reply = raw.get_reply();
    return reply->type == REDIS_REPLY_INTEGER && reply->integer == expected;
  }

 private:
  std::string sha_;
  std::string limit_;
  std::string window_us_;
  std::vector<std::string> keys_;
  std::string member_;
  std::string cost_;
  inline static std::uint64_t counter_ = 0;  // members never repeat, across every key set
};

// One kind of a case: decides call number i (user i % user_count); returns whether the answer is the one
// the case expects.
struct Kind {
  std::function<bool(std::size_t)> decide;
  std::size_t next = 0;        // round-robin position, kept across repetitions
  std::size_t wrong = 0;       // answers that were not what the case says
  std::string fault;           // the first chunk whose EVALSHA count did not match its calls
  std::vector<double> usec;    // per repetition
  std::uint64_t timed = 0, timed_usec = 0;                     // over every timed chunk
  std::map<std::string, std::array<std::uint64_t, 2>> inner;   // likewise: command -> {calls, usec}
};

struct Case {
  ServerTimeRow row;
  Kind airl, minimal;
  std::vector<double> ratios;
  std::size_t prefill_wrong = 0;  // untimed calls (prefill, warm-up) whose answer was not the expected one
};

// One timed chunk of `kind`: warm_calls untimed decisions, then `calls` decisions between CONFIG RESETSTAT and
// INFO commandstats; returns the server's usec per EVALSHA.
double run_chunk(RawRedis& stats, Kind& kind, std::size_t calls) {
  for (std::size_t k = 0; k < warm_calls; ++k) {
    if (!kind.decide(kind.next++)) ++kind.wrong;
  }
  stats.command({"CONFIG", "RESETSTAT"});
  for (std::size_t k = 0; k < calls; ++k) {
    if (!kind.decide(kind.next++)) ++kind.wrong;
  }
  const ScriptStats after = read_stats(stats);
  kind.timed += after.evalsha_calls;
  kind.timed_usec += after.evalsha_usec;
  for (const auto& [name, counts] : after.inner) {
    kind.inner[name][0] += counts[0];
    kind.inner[name][1] += counts[1];
  }
  const bool wrong_count = after.evalsha_calls != calls || after.eval_calls != 0 || after.evalsha_failed != 0;
  if (wrong_count && kind.fault.empty()) {  // the first such chunk
    kind.fault = std::to_string(after.evalsha_calls) + " EVALSHA (" + std::to_string(after.evalsha_failed) +
                 " failed) and " + std::to_string(after.eval_calls) + " EVAL for " + std::to_string(calls) + " calls";
  }
  const std::uint64_t made = std::max<std::uint64_t>(after.evalsha_calls, 1);
  return static_cast<double>(after.evalsha_usec) / static_cast<double>(made);
}

// One repetition of a case: `calls` calls of each kind in chunks of `chunk`, the kinds alternating chunk by
// chunk (so a busy moment of a shared machine falls on both), each kind's figure the median of its chunks'
// usec per call (one preempted chunk does not move it).
void run_case(RawRedis& stats, Case& one, std::size_t calls, std::size_t chunk, bool airl_first) {
  std::vector<double> airl_chunks, minimal_chunks;
  for (std::size_t done = 0, k = 0; done < calls; done += chunk, ++k) {
    const std::size_t n = std::min(chunk, calls - done);
    const bool airl_now = (k % 2 == 0) == airl_first;
    (airl_now ? airl_chunks : minimal_chunks).push_back(run_chunk(stats, airl_now ? one.airl : one.minimal, n));
    (airl_now ? minimal_chunks : airl_chunks).push_back(run_chunk(stats, airl_now ? one.minimal : one.airl, n));
  }
  one.airl.usec.push_back(median(airl_chunks));
  one.minimal.usec.push_back(median(minimal_chunks));
  one.ratios.push_back(one.airl.usec.back() / one.minimal.usec.back());
}

// Deletes every key under `prefix` (SCAN + UNLINK).
void unlink_prefix(RawRedis& raw, const std::string& prefix) {
  const std::string pattern = prefix + "*";
  std::string cursor = "0";
  do {
    const Reply reply = raw.command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
    cursor.assign(reply->element[0]->str, reply->element[0]->len);
    const redisReply& keys = *reply->element[1];
    if (keys.elements == 0) continue;
    std::vector<std::string_view> args{"UNLINK"};
    for (std::size_t k = 0; k < keys.elements; ++k) args.emplace_back(keys.element[k]->str, keys.element[k]->len);
    raw.command(args);
  } while (cursor != "0");
}

ServerTimeRow row_of(std::string name, std::string baseline, const char* target_text, double target) {
  ServerTimeRow row;
  row.name = std::move(name);
  row.baseline = std::move(baseline);
  row.target_text = target_text;
  row.target = target;
  return row;
}

bool admitted(const airl::Decision& d) { return d.status == airl::Status::allowed && d.allowed && !d.degraded; }

}  // namespace

std::vector<ServerTimeRow> measure_server_time(const airl::RedisOptions& options, std::size_t calls,
                                               std::size_t repetitions) {
  const std::string prefix = options.key_prefix + "-st";
  const auto storage = [&](std::string_view name) {
    airl::RedisOptions mine = options;
    mine.key_prefix = prefix + "-" + std::string(name);
    // Generous timeouts: a shared machine's stall must not turn a decision into a degraded one (which would
    // void the row); they do not change what Redis does.
    mine.connect_timeout = 2s;
    mine.command_timeout = 2s;
    return airl::RedisStorage(mine);
  };
  RawRedis raw(options.host, options.port);  // the minimal calls, prefills and statistics
  const Reply loaded = raw.command({"SCRIPT", "LOAD", minimal_script});
  const std::string sha(loaded->str, loaded->len);

  std::vector<std::string> users(user_count), ids(user_count);
  for (std::size_t u = 0; u < user_count; ++u) {
    char text[48];
    std::snprintf(text, sizeof(text), "user-%06zu", u);
    users[u] = text;
    std::snprintf(text, sizeof(text), "5f0c2a9e-%04zx-4b7d-9c1e-%012zx", u % 0x10000, u);  // a UUID's shape
    ids[u] = text;
  }
  const airl::Quota open{open_limit, window};
  const airl::Quota full{full_limit, window};
  airl::RedisRateLimiter unit(open, storage("unit"));
  airl::RedisRateLimiter weighted(open, storage("weighted"));
  airl::RedisMultiTierRateLimiter three({{"per-model", airl::Scope::user_model, open},
                                         {"per-user", airl::Scope::user, open},
                                         {"per-user-2", airl::Scope::user, open}},
                                        storage("three"));
  airl::RedisRateLimiter denial(full, storage("denial"));
  airl::RedisRateLimiter replay(open, storage("replay"));
  MinimalCalls minimal_unit(sha, prefix + "-unit-min", users, open_limit);
  MinimalCalls minimal_weighted(sha, prefix + "-weighted-min", users, open_limit);
  MinimalCalls minimal_three(sha, prefix + "-three-min", users, open_limit);
  MinimalCalls minimal_denial(sha, prefix + "-denial-min", users, full_limit);
  MinimalCalls minimal_replay(sha, prefix + "-replay-min", users, open_limit);
  const auto user = [&](std::size_t i) -> const std::string& { return users[i % user_count]; };

  std::vector<Case> cases(5);
  cases[0].row = row_of("1 tier, unit costs, admitted", "minimal admission", "<= 1.5", 1.5);
  cases[0].airl.decide = [&](std::size_t i) { return admitted(unit.allow(user(i), model)); };
  cases[0].minimal.decide = [&](std::size_t i) { return minimal_unit.call(raw, i % user_count, 1, 1); };
  cases[1].row = row_of("1 tier, weighted costs, admitted", "minimal admission (counts entries)", "<= 2", 2.0);
  cases[1].airl.decide = [&](std::size_t i) {
    return admitted(weighted.allow(airl::Request{.user = user(i), .model = model, .cost = weighted_cost(i)}));
  };
  cases[1].minimal.decide = [&](std::size_t i) {
    return minimal_weighted.call(raw, i % user_count, weighted_cost(i), 1);
  };
  cases[2].row = row_of("3 tiers in 1 slot, admitted", "minimal admission (1 key)", "<= 2.5", 2.5);
  cases[2].airl.decide = [&](std::size_t i) { return admitted(three.allow(user(i), model)); };
  cases[2].minimal.decide = [&](std::size_t i) { return minimal_three.call(raw, i % user_count, 1, 1); };
  cases[3].row = row_of("1 tier at its limit, denied", "minimal denial (at its limit)", "<= 1.5", 1.5);
  cases[3].airl.decide = [&](std::size_t i) {
    const airl::Decision d = denial.allow(user(i), model);
    return d.status == airl::Status::denied && !d.allowed && !d.degraded && d.remaining == 0 && d.retry_after > 0ms;
  };
  cases[3].minimal.decide = [&](std::size_t i) { return minimal_denial.call(raw, i % user_count, 1, 0); };
  cases[4].row = row_of("1 tier, replayed request id", "minimal admission", "<= 1", 1.0);
  cases[4].airl.decide = [&](std::size_t i) {
    const airl::Request request{.user = user(i), .model = model, .request_id = ids[i % user_count]};
    const airl::Decision d = replay.allow(request);
    return d.status == airl::Status::replayed && d.replayed && d.allowed && !d.degraded;
  };
  cases[4].minimal.decide = [&](std::size_t i) { return minimal_replay.call(raw, i % user_count, 1, 1); };

  // Warm up every limiter's connection on a user outside the set (each needs an admission).
  const auto warm = [&](Case& one, auto& limiter) {
    if (!admitted(limiter.allow("warm-up", model))) ++one.prefill_wrong;
  };
  warm(cases[0], unit);
  warm(cases[1], weighted);
  warm(cases[2], three);
  warm(cases[3], denial);
  warm(cases[4], replay);
  // Prefills, pipelined: the denial case's logs reach their limit (each call admitted; the next will be
  // denied), the replay case's users each have their id admitted once.
  std::vector<airl::Request> requests;
  for (std::size_t u = 0; u < user_count; ++u) {
    for (std::uint64_t k = 0; k < full_limit; ++k) requests.push_back({.user = users[u], .model = model});
  }
  for (std::size_t at = 0; at < requests.size(); at += batch) {
    const std::size_t n = std::min(batch, requests.size() - at);
    for (const airl::Decision& d : denial.allow_many({requests.data() + at, n})) {
      if (!admitted(d)) ++cases[3].prefill_wrong;
    }
    for (std::size_t k = 0; k < n; ++k) minimal_denial.append(raw, (at + k) / full_limit, 1);
    for (std::size_t k = 0; k < n; ++k) {
      if (raw.get_reply()->integer != 1) ++cases[3].prefill_wrong;
    }
  }
  requests.clear();
  for (std::size_t u = 0; u < user_count; ++u) {
    requests.push_back({.user = users[u], .model = model, .request_id = ids[u]});
  }
  for (std::size_t at = 0; at < requests.size(); at += batch) {
    const std::size_t n = std::min(batch, requests.size() - at);
    for (const airl::Decision& d : replay.allow_many({requests.data() + at, n})) {
      if (!admitted(d)) ++cases[4].prefill_wrong;
    }
  }

  // Repetitions in turn; within each, every case with its two kinds interleaved chunk by chunk.
  for (std::size_t rep = 0; rep < repetitions; ++rep) {
    for (std::size_t c = 0; c < cases.size(); ++c) {
      run_case(raw, cases[c], calls, chunk_calls, (rep + c) % 2 == 0);
    }
  }
  unlink_prefix(raw, prefix + "-");

  std::vector<ServerTimeRow> rows;
  for (Case& one : cases) {
    ServerTimeRow& row = one.row;
    row.airl_us = median(one.airl.usec);
    row.minimal_us = median(one.minimal.usec);
    row.ratio = median(one.ratios);
    const auto wrong = [](const char* who, const Kind& kind) {
      return std::string(who) + ": " + std::to_string(kind.wrong) + " of " + std::to_string(kind.next) +
             " answers not as the case says";
    };
    std::vector<std::string> reasons;
    if (one.prefill_wrong != 0) {
      reasons.push_back(std::to_string(one.prefill_wrong) + " prefill or warm-up calls not as expected");
    }
    if (one.airl.wrong != 0) reasons.push_back(wrong("airl", one.airl));
    if (one.minimal.wrong != 0) reasons.push_back(wrong("minimal", one.minimal));
    if (!one.airl.fault.empty()) reasons.push_back("airl: " + one.airl.fault);
    if (!one.minimal.fault.empty()) reasons.push_back("minimal: " + one.minimal.fault);
    for (const std::string& reason : reasons) row.void_reason += (row.void_reason.empty() ? "" : "; ") + reason;
    rows.push_back(row);
  }

  std::printf("\n4. Redis server time per decision (INFO commandstats, EVALSHA usec / calls after CONFIG "
              "RESETSTAT):\n   %zu calls per kind and repetition over %zu users round-robin, the kinds alternating in "
              "chunks of %zu\n   (each after %zu untimed calls); medians of the chunks, then of %zu repetitions\n",
              calls, user_count, chunk_calls, warm_calls, repetitions);
  std::printf("   1 h windows (nothing expires); 3 tiers = user_model, user, user (one hash tag: one slot); the "
              "denial at\n   a limit of %llu; the replay re-sends each user's admitted id; weighted costs 1-4000; "
              "the minimal\n   script counts entries, not costs\n",
              static_cast<unsigned long long>(full_limit));
  std::printf("%-36s %9s %-36s %9s %8s %-8s %s\n", "airl allow()", "airl us", "against", "min us", "ratio", "target",
              "status");
  for (const ServerTimeRow& row : rows) {
    const std::string status = !row.void_reason.empty() ? "VOID: " + row.void_reason
                               : row.ratio <= row.target  ? "MET"
                                                          : "NOT MET";
    std::printf("%-36s %9.2f %-36s %9.2f %7.2fx %-8s %s\n", row.name.c_str(), row.airl_us, row.baseline.c_str(),
                row.minimal_us, row.ratio, row.target_text, status.c_str());
  }
  std::printf("   Where the time goes, per decision (means over the timed chunks): the commands the script ran,\n"
              "   calls x us each, and the rest (\"Lua\": the interpreter, redis.call's plumbing, EVALSHA's own "
              "work):\n");
  for (const Case& one : cases) {
    std::printf("   %s\n", one.row.name.c_str());
    for (const Kind* kind : {&one.airl, &one.minimal}) {
      const double per = static_cast<double>(std::max<std::uint64_t>(kind->timed, 1));
      double commands = 0;
      std::string line;
      for (const auto& [name, counts] : kind->inner) {
        char part[64];
        std::snprintf(part, sizeof(part), "%s%s %.2g x %.2f", line.empty() ? "" : ", ", name.c_str(),
                      static_cast<double>(counts[0]) / per,
                      counts[0] ? static_cast<double>(counts[1]) / static_cast<double>(counts[0]) : 0.0);
        line += part;
        commands += static_cast<double>(counts[1]) / per;
      }
      const double total = static_cast<double>(kind->timed_usec) / per;
      std::printf("     %-7s %5.2f us: %s; Lua %.2f\n", kind == &one.airl ? "airl" : "minimal", total, line.c_str(),
                  total - commands);
    }
  }
  return rows;
}

}  // namespace airl::bench
