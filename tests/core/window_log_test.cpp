// SPDX-License-Identifier: MIT
// airl::detail::WindowLog, the pure per-bucket log: the rules of docs/DESIGN.md for one bucket, checked with
// raw nanosecond times, plus a randomized differential test against a plain std::deque model.
#include <catch2/catch.hpp>

#include "allocation_counter.hpp"
#include "support.hpp"

#include <airl/detail/memory/window_log.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

using airl::detail::never_ticks;
using airl::detail::WindowLog;
using airl::detail::WindowVerdict;

constexpr std::int64_t ms = 1'000'000;  // nanoseconds per millisecond

// The straightforward model of the rules: every entry kept, every answer computed by walking them.
class ReferenceLog {
 public:
  std::size_t expire(std::int64_t now, std::int64_t window) {
    std::size_t dropped = 0;
    while (!entries_.empty() && entries_.front().time + window <= now) {
      entries_.pop_front();
      ++dropped;
    }
    return dropped;
  }

  std::uint64_t usage() const {
    std::uint64_t sum = 0;
    for (const Entry& entry : entries_) sum += entry.cost;
    return sum;
  }

  WindowVerdict check(std::int64_t now, std::int64_t window, std::uint64_t limit, std::uint64_t cost) const {
    const std::uint64_t used = usage();
    WindowVerdict verdict;
    if (used + cost <= limit) {
      verdict.fits = true;
      verdict.remaining = limit - used - cost;
      verdict.reset_after = window;
      return verdict;
    }
    verdict.remaining = used >= limit ? 0 : limit - used;
    verdict.reset_after = entries_.empty() ? 0 : entries_.back().time + window - now;
    if (cost > limit) {
      verdict.retry_after = never_ticks;
      return verdict;
    }
    const std::uint64_t need = used + cost - limit;
    std::uint64_t freed = 0;
    for (const Entry& entry : entries_) {  // oldest first, until enough has expired
      freed += entry.cost;
      if (freed >= need) {
        verdict.retry_after = entry.time + window - now;
        break;
      }
    }
    return verdict;
  }

  // What a replay sees: always admissible (nothing is charged), the units left, and the time until the
  // window empties.
  WindowVerdict peek(std::int64_t now, std::int64_t window, std::uint64_t limit) const {
    const std::uint64_t used = usage();
    WindowVerdict verdict;
    verdict.fits = true;
    verdict.remaining = used >= limit ? 0 : limit - used;
    verdict.reset_after = entries_.empty() ? 0 : entries_.back().time + window - now;
    return verdict;
  }

  void record(std::int64_t now, std::uint64_t cost, std::string id) {
    const std::int64_t time = entries_.empty() ? now : std::max(now, entries_.back().time);
    entries_.push_back(Entry{time, cost, std::move(id)});
  }

  void undo_record() { entries_.pop_back(); }

  bool replace_cost(const std::string& id, std::uint64_t cost) {
    if (id.empty()) return false;
    for (Entry& entry : entries_) {
      if (entry.id == id) {
        entry.cost = cost;
        return true;
      }
    }
    return false;
  }

  bool holds_id(const std::string& id) const {
    if (id.empty()) return false;
    for (const Entry& entry : entries_) {
      if (entry.id == id) return true;
    }
    return false;
  }

  std::size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::int64_t time;
    std::uint64_t cost;
    std::string id;
  };
  std::deque<Entry> entries_;
};

void require_same_verdict(const WindowVerdict& actual, const WindowVerdict& expected) {
  REQUIRE(actual.fits == expected.fits);
  REQUIRE(actual.remaining == expected.remaining);
  REQUIRE(actual.retry_after == expected.retry_after);
  REQUIRE(actual.reset_after == expected.reset_after);
}

// A log holding costs 5, 3, 7 admitted at 0, 10 and 20 ns.
WindowLog five_three_seven() {
  WindowLog log;
  log.record(0, 5, {});
  log.record(10, 3, {});
  log.record(20, 7, {});
  return log;
}

}  // namespace

TEST_CASE("an entry counts while now < t + window and stops exactly at t + window", "[window_log]") {
  SECTION("millisecond window") {
    WindowLog log;
    log.record(100 * ms, 1, {});
    const std::int64_t window = 1000 * ms;
    CHECK(log.expire(1100 * ms - 1, window) == 0);
    CHECK(log.usage() == 1);
    CHECK(log.expire(1100 * ms, window) == 1);
    CHECK(log.usage() == 0);
    CHECK(log.empty());
  }
  SECTION("sub-millisecond window, honoured to the nanosecond") {
    WindowLog log;
    const std::int64_t window = 250'000;  // 250 µs: no rounding to milliseconds anywhere
    log.record(3, 2, {});
    log.record(7, 4, {});
    CHECK(log.expire(250'002, window) == 0);
    CHECK(log.usage() == 6);
    CHECK(log.expire(250'003, window) == 1);  // the entry at 3 ns, not the one at 7 ns
    CHECK(log.usage() == 4);
    CHECK(log.expire(250'007, window) == 1);
    CHECK(log.empty());
  }
}

TEST_CASE("usage is the sum of the costs of the entries that still count", "[window_log]") {
  WindowLog log = five_three_seven();
  const std::int64_t window = 100;
  CHECK(log.usage() == 15);
  CHECK(log.size() == 3);  // one entry per request whatever its cost
  log.expire(100, window);
  CHECK(log.usage() == 10);
  log.expire(110, window);
  CHECK(log.usage() == 7);
  log.expire(120, window);
  CHECK(log.usage() == 0);
}

TEST_CASE("check fits iff usage + cost <= limit and reports the remaining units", "[window_log]") {
  const WindowLog log = five_three_seven();  // usage 15
  const std::int64_t window = 100;

  const WindowVerdict exact = log.check(30, window, 20, 5);
  CHECK(exact.fits);
  CHECK(exact.remaining == 0);
  CHECK(exact.retry_after == 0);

  const WindowVerdict roomy = log.check(30, window, 20, 2);
  CHECK(roomy.fits);
  CHECK(roomy.remaining == 3);

  const WindowVerdict one_over = log.check(30, window, 20, 6);
  CHECK_FALSE(one_over.fits);
  CHECK(one_over.remaining == 5);  // limit - usage when denied: nothing charged
  CHECK(one_over.retry_after == 0 + window - 30);  // need = 15 + 6 - 20 = 1: the oldest entry
}

TEST_CASE("retry_after for unit costs is when exactly enough of the oldest entries have expired", "[window_log]") {
  const std::int64_t window = 100;
  const std::uint64_t limit = 3;
  const std::int64_t now = 30;
  const auto full_log = [] {  // three unit entries at 0, 10 and 20: full under a limit of 3
    WindowLog log;
    for (std::int64_t t = 0; t <= 20; t += 10) log.record(t, 1, {});
    return log;
  };

  for (std::uint64_t cost = 1; cost <= limit; ++cost) {
    CAPTURE(cost);
    const WindowVerdict verdict = full_log().check(now, window, limit, cost);
    REQUIRE_FALSE(verdict.fits);
    // `cost` entries must expire: the cost-th oldest was admitted at 10 * (cost - 1).
    CHECK(verdict.retry_after == static_cast<std::int64_t>(10 * (cost - 1)) + window - now);

    // The wait is tight: one nanosecond earlier the request still does not fit, at the wait it does.
    WindowLog later = full_log();
    const std::int64_t ready = now + verdict.retry_after;
    later.expire(ready - 1, window);
    CHECK_FALSE(later.check(ready - 1, window, limit, cost).fits);
    later.expire(ready, window);
    CHECK(later.check(ready, window, limit, cost).fits);
  }
}

TEST_CASE("retry_after for weighted costs walks the oldest entries until enough units are freed", "[window_log]") {
  WindowLog log = five_three_seven();  // costs 5, 3, 7 at 0, 10, 20; usage 15
  const std::int64_t window = 100;
  const std::uint64_t limit = 15;
  const std::int64_t now = 40;

  // need = 15 + 6 - 15 = 6: the first entry frees 5, not enough; the second brings it to 8.
  CHECK(log.check(now, window, limit, 6).retry_after == 10 + window - now);
  // need 5: the first entry alone is enough.
  CHECK(log.check(now, window, limit, 5).retry_after == 0 + window - now);
  // need 9: all three must go.
  CHECK(log.check(now, window, limit, 9).retry_after == 20 + window - now);

  // Walking time forward confirms the cost-6 answer: still denied after the first expiry, admitted after the second.
  log.expire(100, window);
  CHECK_FALSE(log.check(100, window, limit, 6).fits);
  log.expire(110, window);
  CHECK(log.check(110, window, limit, 6).fits);

  // With usage above a lowered limit the excess must expire too: 15 + 1 - 10 = 6 units, again the first two.
  const WindowVerdict over = five_three_seven().check(30, window, 10, 1);
  CHECK_FALSE(over.fits);
  CHECK(over.remaining == 0);  // never below zero
  CHECK(over.retry_after == 10 + window - 30);
}

TEST_CASE("a cost above the limit, or a limit of zero, is never admissible", "[window_log]") {
  const WindowLog empty;
  const WindowVerdict too_big = empty.check(0, 100, 4, 5);
  CHECK_FALSE(too_big.fits);
  CHECK(too_big.retry_after == never_ticks);
  CHECK(too_big.remaining == 4);
  CHECK(too_big.reset_after == 0);  // an empty bucket holds nothing to wait for

  const WindowVerdict zero_limit = empty.check(0, 100, 0, 1);
  CHECK_FALSE(zero_limit.fits);
  CHECK(zero_limit.retry_after == never_ticks);
  CHECK(zero_limit.remaining == 0);

  const WindowLog busy = five_three_seven();
  CHECK(busy.check(30, 100, 15, 16).retry_after == never_ticks);
}

TEST_CASE("reset_after is window on admission and newest + window - now otherwise", "[window_log]") {
  const WindowLog log = five_three_seven();  // newest at 20
  const std::int64_t window = 100;

  CHECK(log.check(30, window, 100, 1).reset_after == window);  // the new entry would be the newest
  CHECK(log.check(30, window, 15, 1).reset_after == 20 + window - 30);

  const WindowVerdict peeked = log.peek(45, window, 20);
  CHECK(peeked.fits);
  CHECK(peeked.remaining == 5);
  CHECK(peeked.reset_after == 20 + window - 45);
  CHECK(log.usage() == 15);  // peeking charges nothing

  CHECK(WindowLog{}.peek(45, window, 20).reset_after == 0);
}

TEST_CASE("record keeps the log sorted when now goes backwards", "[window_log]") {
  WindowLog log;
  const std::int64_t window = 1000;
  log.record(100, 1, {});
  log.record(50, 2, {});  // a misbehaving clock: logged at 100, not 50
  CHECK(log.newest_time() == 100);

  CHECK(log.expire(1099, window) == 0);
  CHECK(log.usage() == 3);
  CHECK(log.expire(1100, window) == 2);  // both expire together, as both were logged at 100
  CHECK(log.empty());
}

TEST_CASE("undo_record restores usage and forgets the undone id", "[window_log]") {
  WindowLog log;
  log.record(0, 5, "first");
  log.record(10, 3, "second");
  log.undo_record();
  CHECK(log.usage() == 5);
  CHECK(log.size() == 1);
  CHECK(log.holds_id("first"));
  CHECK_FALSE(log.holds_id("second"));

  // Undoing down to empty and recording again must still count from the right base.
  log.undo_record();
  CHECK(log.usage() == 0);
  log.record(20, 4, "second");
  CHECK(log.usage() == 4);
  CHECK(log.holds_id("second"));
}

TEST_CASE("request ids are held while their entry counts and forgotten when it expires", "[window_log]") {
  WindowLog log;
  const std::int64_t window = 100;
  log.record(0, 1, "a");
  log.record(50, 1, {});  // no id: nothing indexed
  log.record(60, 1, "b");

  CHECK(log.holds_id("a"));
  CHECK(log.holds_id("b"));
  CHECK_FALSE(log.holds_id("c"));
  CHECK_FALSE(log.holds_id(""));  // an empty id is "no id", never a match

  log.expire(100, window);
  CHECK_FALSE(log.holds_id("a"));
  CHECK(log.holds_id("b"));
  log.expire(160, window);
  CHECK_FALSE(log.holds_id("b"));
  CHECK(log.empty());
}

TEST_CASE("a forgotten id is free to be recorded again, and its old entry leaving does not drop the new one",
          "[window_log][refund]") {
  WindowLog log;
  const std::int64_t window = 100;
  log.record(0, 7, "x");
  log.record(10, 1, "y");
  REQUIRE(log.replace_cost("x", 0));
  log.forget_id("x");
  CHECK_FALSE(log.holds_id("x"));
  CHECK(log.usage() == 1);
  log.record(20, 2, "x");  // admitted again: a new entry answers to the id
  CHECK(log.cost_of("x") == 2);
  log.expire(110, window);  // the forgotten entry (0) and "y" (10) leave; the index must keep the new one
  CHECK(log.holds_id("x"));
  CHECK_FALSE(log.holds_id("y"));
  CHECK(log.usage() == 2);
  log.forget_id("x");
  log.undo_record();  // the newest entry's id was forgotten: undo must not unindex anything else
  CHECK(log.empty());
  log.forget_id("never");  // unknown: nothing happens
}

TEST_CASE("the id index gives memory back after a burst, and keeps it under steady traffic", "[window_log][memory]") {
  airl::detail::RequestIdIndex index;
  std::size_t live = 0;
  for (; live < 100'000; ++live) index.remember("burst-" + std::to_string(live), live);
  const std::size_t at_peak = index.memory_bytes();
  index.drop_oldest(live - 100);  // 100 ids remain
  const std::size_t after = index.memory_bytes();
  CHECK(after * 50 < at_peak);
  CHECK(index.find("burst-99999", 100) == std::size_t{99});
  CHECK_FALSE(index.find("burst-0", 100));
  // Steady traffic: one in, one out, for a long time: the room stays the same (no shrink-grow cycle).
  std::size_t first = live - 100;
  for (int i = 0; i < 10'000; ++i, ++live, ++first) {
    index.remember("steady-" + std::to_string(live), 100);
    index.drop_oldest(1);
  }
  const std::size_t steady = index.memory_bytes();
  for (int i = 0; i < 10'000; ++i, ++live) {
    index.remember("steady-" + std::to_string(live), 100);
    index.drop_oldest(1);
    CHECK(index.memory_bytes() <= steady);
  }
}

TEST_CASE("100000 entries and costs of 1e15 are decided exactly, even when running totals wrap", "[window_log]") {
  constexpr std::uint64_t huge = 1'000'000'000'000'000;  // 1e15 units, a whole bucket of tokens at once
  SECTION("100000 live unit entries and one huge entry") {
    WindowLog log;
    const std::int64_t window = 1'000'000;
    for (std::int64_t t = 0; t < 100'000; ++t) log.record(t, 1, {});
    log.record(100'000, huge, "big");
    CHECK(log.size() == 100'001);
    CHECK(log.usage() == huge + 100'000);
    CHECK(log.holds_id("big"));

    // need = (1e15 + 1e5) + 1e15 - 2e15 = 1e5 unit entries: the last unit entry, admitted at 99999.
    const WindowVerdict verdict = log.check(100'000, window, 2 * huge, huge);
    CHECK_FALSE(verdict.fits);
    CHECK(verdict.remaining == huge - 100'000);
    CHECK(verdict.retry_after == 99'999 + window - 100'000);
  }
  SECTION("100000 huge entries whose running total wraps 64 bits") {
    // 100000 records of 1e15 sum to 1e20 > 2^64: the running totals wrap several times while at most
    // 1000 entries (1e18 units) count at once.
    WindowLog log;
    ReferenceLog reference;
    const std::int64_t window = 1000;
    for (std::int64_t t = 0; t < 100'000; ++t) {
      REQUIRE(log.expire(t, window) == reference.expire(t, window));
      log.record(t, huge, {});
      reference.record(t, huge, {});
      REQUIRE(log.usage() == reference.usage());
    }
    CHECK(log.usage() == 1000 * huge);
    const std::uint64_t limit = 1000 * huge;
    require_same_verdict(log.check(100'000, window, limit, 3 * huge),
                         reference.check(100'000, window, limit, 3 * huge));
  }
}

TEST_CASE("the ring buffer grows, wraps and shrinks without losing an entry", "[window_log]") {
  SECTION("grows by about 1.5x and shrinks once the live entries fit in a quarter") {
    WindowLog log;
    for (std::int64_t t = 0; t < 1000; ++t) log.record(t, 1, {});
    const std::size_t grown = log.capacity();
    CHECK(grown >= 1000);
    CHECK(grown < 1500);  // not doubled past what 1000 entries need
    // Keep 100 entries (under a quarter of the ring): memory should follow them down.
    log.expire(899 + 1000, 1000);  // drops the entries at 0..899
    CHECK(log.size() == 100);
    CHECK(log.usage() == 100);
    CHECK(log.capacity() <= 200);
    CHECK(log.capacity() >= log.size());
  }
  SECTION("stays exact over 10000 record/expire cycles with bursts that regrow it mid-wrap") {
    WindowLog log;
    ReferenceLog reference;
    const std::int64_t window = 16;
    std::int64_t now = 0;
    for (int step = 0; step < 10'000; ++step) {
      ++now;
      REQUIRE(log.expire(now, window) == reference.expire(now, window));
      const auto cost = static_cast<std::uint64_t>(step % 7 + 1);
      // Every 1000 steps, a burst of 50 at one instant forces growth while the head is mid-ring.
      const int records = step % 1000 == 500 ? 50 : 1;
      for (int r = 0; r < records; ++r) {
        log.record(now, cost, {});
        reference.record(now, cost, {});
      }
      REQUIRE(log.size() == reference.size());
      REQUIRE(log.usage() == reference.usage());
    }
    CHECK(log.size() == 16);  // steady state: one entry per ns of window
  }
}

TEST_CASE("a moved log keeps its entries and ids, and the moved-from log is empty and reusable", "[window_log]") {
  WindowLog source = five_three_seven();
  source.record(30, 1, "id");
  WindowLog target(std::move(source));
  CHECK(target.usage() == 16);
  CHECK(target.holds_id("id"));

  // The source gave its ring away; it must not still claim entries it can no longer reach.
  // NOLINTNEXTLINE(bugprone-use-after-move): inspecting the moved-from state is the point
  REQUIRE(source.empty());
  CHECK(source.usage() == 0);
  source.record(40, 2, {});
  CHECK(source.usage() == 2);

  WindowLog assigned;
  assigned = std::move(target);
  CHECK(assigned.usage() == 16);
  REQUIRE(target.empty());  // NOLINT(bugprone-use-after-move)
}

TEST_CASE("randomized differential test against a std::deque model", "[window_log]") {
  // The last two windows make live spans exceed 32 bits, so offsets are stored 5 and 6 bytes wide.
  const std::int64_t window = GENERATE(as<std::int64_t>{}, 1, 1000, 250'000, 20'000'000'000, 4'000'000'000'000);
  CAPTURE(window);
  std::mt19937_64 rng(0xA1B1'2026);
  const auto below = [&rng](std::uint64_t bound) { return std::uniform_int_distribution<std::uint64_t>(0, bound - 1)(rng); };

  WindowLog log;
  ReferenceLog reference;
  std::vector<std::string> ids;  // every id ever recorded
  std::int64_t clock = 0;
  int fits = 0, denials = 0, finite_retries = 0, undos = 0, id_hits = 0, settles = 0;
  std::size_t peak_capacity = 0;

  for (int step = 0; step < 20'000; ++step) {
    CAPTURE(step);
    clock += static_cast<std::int64_t>(below(static_cast<std::uint64_t>(window) / 4 + 2));
    // Now and then the caller's `now` lags behind the newest entry (a misbehaving clock).
    const std::int64_t now = below(20) == 0 ? clock - static_cast<std::int64_t>(below(static_cast<std::uint64_t>(window) + 1)) : clock;

    REQUIRE(log.expire(now, window) == reference.expire(now, window));
    REQUIRE(log.size() == reference.size());
    REQUIRE(log.usage() == reference.usage());

    const std::uint64_t limit = below(60);
    const std::uint64_t cost = below(8) == 0 ? 1 + below(70) : 1 + below(6);
    const WindowVerdict expected = reference.check(now, window, limit, cost);
    CAPTURE(now, limit, cost, reference.usage(), reference.size());
    require_same_verdict(log.check(now, window, limit, cost), expected);
    require_same_verdict(log.peek(now, window, limit), reference.peek(now, window, limit));

    if (expected.fits) {
      ++fits;
      std::string id = below(3) == 0 ? "req-" + std::to_string(step) : std::string{};
      if (!id.empty()) ids.push_back(id);
      log.record(now, cost, id);
      reference.record(now, cost, id);
    } else {
      ++denials;
      if (expected.retry_after != never_ticks) ++finite_retries;
    }
    if (reference.size() != 0 && below(25) == 0) {  // roll back the newest, as a failed multi-bucket admission does
      log.undo_record();
      reference.undo_record();
      ++undos;
    }
    if (!ids.empty()) {
      const std::string& probe = ids[below(ids.size())];
      const bool held = reference.holds_id(probe);
      REQUIRE(log.holds_id(probe) == held);
      id_hits += held ? 1 : 0;
      if (below(8) == 0) {  // settle a reservation: a refund, an overcharge or a full refund (0)
        const std::uint64_t actual = below(4) == 0 ? below(90) : below(7);
        const std::string& recent = ids[ids.size() - 1 - below(std::min<std::size_t>(ids.size(), 6))];  // likely live
        const bool settled = reference.replace_cost(recent, actual);
        REQUIRE(log.replace_cost(recent, actual) == settled);
        settles += settled ? 1 : 0;
      }
    }
    REQUIRE(log.usage() == reference.usage());
    peak_capacity = std::max(peak_capacity, log.capacity());
  }
  // The run must have exercised every branch it claims to test.
  CHECK(fits > 1000);
  CHECK(denials > 1000);
  CHECK(finite_retries > 100);
  CHECK(undos > 100);
  CHECK(id_hits > 0);
  CHECK(settles > 50);
  CHECK(peak_capacity >= 11);  // grew several times (4, 7, 11, ...)
}

TEST_CASE("times are stored in the fewest bytes their live span needs, and stay exact", "[window_log][layout]") {
  constexpr std::int64_t four_bytes = 0xFFFF'FFFF;  // the longest span 4-byte offsets hold (4.29 s in ns)
  SECTION("a span past 32 bits widens the offsets; every time stays exact") {
    WindowLog log;
    const std::int64_t window = 3 * four_bytes;
    log.record(7, 1, {});
    CHECK(log.time_width() == 4);
    log.record(7 + four_bytes + 1, 1, {});  // one past what 4 bytes hold from the oldest entry
    CHECK(log.time_width() == 5);
    CHECK(log.newest_time() == 8 + four_bytes);
    // The oldest still expires to the nanosecond.
    const WindowVerdict verdict = log.check(9 + four_bytes, window, 2, 1);
    REQUIRE_FALSE(verdict.fits);
    CHECK(verdict.retry_after == 7 + window - (9 + four_bytes));
    CHECK(log.expire(7 + window - 1, window) == 0);
    CHECK(log.expire(7 + window, window) == 1);
    CHECK(log.usage() == 1);
  }
  SECTION("when old entries expire, the origin moves up instead of widening") {
    WindowLog log;
    const std::int64_t window = 1'000'000'000;  // 1 s
    for (std::int64_t step = 0; step < 20; ++step) {  // 20 s of traffic, one entry per 500 ms
      const std::int64_t now = step * 500'000'000 + 3;
      log.expire(now, window);
      log.record(now, 1, {});
      REQUIRE(log.newest_time() == now);
    }
    CHECK(log.time_width() == 4);
    CHECK(log.size() == 2);
  }
  SECTION("a burst that spanned a long time narrows again when the ring is rebuilt") {
    WindowLog log;
    const std::int64_t window = 100 * four_bytes;
    log.record(0, 1, {});
    log.record(10 * four_bytes, 1, {});
    REQUIRE(log.time_width() == 5);
    CHECK(log.expire(window, window) == 1);  // only the entry at 10 * four_bytes remains
    for (int i = 0; i < 40; ++i) log.record(10 * four_bytes + i, 1, {});  // regrows the ring several times
    CHECK(log.time_width() == 4);
    CHECK(log.newest_time() == 10 * four_bytes + 39);
    CHECK(log.usage() == 41);
  }
}

TEST_CASE("costs are stored only once a cost above 1 arrives, and forgotten when the log empties", "[window_log][layout]") {
  WindowLog log;
  const std::int64_t window = 100;
  for (std::int64_t t = 0; t < 5; ++t) log.record(t, 1, {});
  CHECK_FALSE(log.weighted());
  CHECK(log.usage() == 5);
  // The third-oldest entry frees the third unit.
  CHECK(log.check(10, window, 5, 3).retry_after == 2 + window - 10);

  log.record(5, 10, {});
  CHECK(log.weighted());
  CHECK(log.usage() == 15);
  // need = 15 + 2 - 12 = 5 units: the five unit entries, the fifth admitted at 4.
  CHECK(log.check(10, window, 12, 2).retry_after == 4 + window - 10);
  // need = 15 + 1 - 10 = 6 units: only the weighted entry at 5 frees the sixth.
  CHECK(log.check(10, window, 10, 1).retry_after == 5 + window - 10);

  CHECK(log.expire(5 + window, window) == 6);
  CHECK_FALSE(log.weighted());
  log.record(200, 1, {});
  CHECK(log.usage() == 1);
  CHECK_FALSE(log.weighted());
}

// ---------------------------------------------------------------------------------------------------------
// Mixed randomized test and record()'s strong guarantee.

#include <algorithm>
#include <cstdlib>
#include <new>

namespace {

// Everything observable about a log, to compare before and after a failed record().
struct Observed {
  std::size_t size;
  std::uint64_t usage;
  std::int64_t oldest, newest;
  std::size_t capacity;
  unsigned width;
  std::vector<bool> ids_held;
  std::vector<WindowVerdict> verdicts;

  bool operator==(const Observed& other) const {
    if (verdicts.size() != other.verdicts.size()) return false;
    for (std::size_t i = 0; i < verdicts.size(); ++i) {
      const WindowVerdict &a = verdicts[i], &b = other.verdicts[i];
      if (a.fits != b.fits || a.remaining != b.remaining || a.retry_after != b.retry_after || a.reset_after != b.reset_after) {
        return false;
      }
    }
    return size == other.size && usage == other.usage && capacity == other.capacity && width == other.width &&
           ids_held == other.ids_held && (size == 0 || (oldest == other.oldest && newest == other.newest));
  }
};

Observed observe(const WindowLog& log, std::int64_t now, std::int64_t window, const std::vector<std::string>& ids) {
  Observed seen{log.size(), log.usage(), log.empty() ? 0 : log.oldest_time(), log.empty() ? 0 : log.newest_time(),
                log.capacity(), log.time_width(), {}, {}};
  for (const std::string& id : ids) seen.ids_held.push_back(log.holds_id(id));
  for (const std::uint64_t limit : {0ull, 1ull, 7ull, 64ull, 1000ull}) {
    for (const std::uint64_t cost : {1ull, 3ull, 50ull}) seen.verdicts.push_back(log.check(now, window, limit, cost));
  }
  return seen;
}

}  // namespace


TEST_CASE("mixed randomized test: weighted costs, ids, undo streaks, bursts and huge time gaps", "[window_log]") {
  // Windows up to 2^59 ns keep entries across gaps of 2^33..2^58 ns, so offsets need every width 4..8, and the
  // origin moves, the ring widens, grows, wraps and shrinks while costs switch between unit and weighted.
  const std::uint64_t seed = GENERATE(as<std::uint64_t>{}, 1, 2, 3, 4, 5, 6);
  CAPTURE(seed);
  std::mt19937_64 rng(0x31C3'D000 + seed);
  const auto below = [&rng](std::uint64_t bound) { return std::uniform_int_distribution<std::uint64_t>(0, bound - 1)(rng); };
  constexpr std::int64_t top = std::int64_t{1} << 61;  // times stay below this, windows at most 2^60
  const std::int64_t window =
      seed <= 2 ? std::int64_t{1} << 59
                : static_cast<std::int64_t>(1 + below(std::min(std::uint64_t{1} << (20 + 7 * seed), std::uint64_t{1} << 60)));
  CAPTURE(window);

  WindowLog log;
  ReferenceLog reference;
  std::vector<std::string> ids;
  std::int64_t clock = 0;
  int records = 0, denials = 0, undos = 0, replays = 0;
  unsigned widths_seen = 0;  // bit w set: some state had time_width() == w
  std::size_t peak_capacity = 0;
  bool saw_weighted = false, saw_unweighted_after_weighted = false;

  int restarts = 0;
  const auto restart = [&] {  // time ran out of room: a fresh log (by move assignment) and model from 0
    log = WindowLog{};
    reference = ReferenceLog{};
    ids.clear();
    clock = 0;
    ++restarts;
  };

  for (int step = 0; step < 15'000; ++step) {
    CAPTURE(step);
    // Scheduled gaps of 2^33, 2^36, ..., 2^57 ns over a live entry, each followed by a record that must fit:
    // with the 2^59 ns window they force every width from 5 to 8 on every run.
    const bool scheduled = seed <= 2 && step % 1500 == 750;
    if (scheduled) {
      const std::int64_t gap = std::int64_t{1} << (33 + 3 * ((step / 1500) % 9));
      if (clock + gap > top) restart();
      if (reference.size() == 0) {
        log.record(clock, 1, {});
        reference.record(clock, 1, {});
      }
      clock += gap;
    } else {
      switch (below(300)) {
        case 0: clock += std::int64_t{1} << (33 + below(25)); break;  // a huge gap, up to 2^57 ns
        case 1: case 2: clock += window; break;                       // everything expires
        case 3: case 4: case 5: case 6: case 7: case 8: break;        // same nanosecond
        default: clock += static_cast<std::int64_t>(below(1 + static_cast<std::uint64_t>(std::min<std::int64_t>(window / 8, std::int64_t{1} << 40)))); break;
      }
      if (clock > top) restart();  // keeps t + window inside int64
    }
    const std::int64_t now = !scheduled && below(16) == 0 ? clock - static_cast<std::int64_t>(below(static_cast<std::uint64_t>(window))) : clock;
    CAPTURE(now);

    REQUIRE(log.expire(now, window) == reference.expire(now, window));
    REQUIRE(log.size() == reference.size());
    REQUIRE(log.usage() == reference.usage());
    if (!log.empty()) REQUIRE(log.oldest_time() + window > now);

    const std::uint64_t limit = scheduled ? 1'000'000 : below(10) == 0 ? below(3) : 20 + below(200);
    const int burst = !scheduled && below(30) == 0 ? 1 + static_cast<int>(below(60)) : 1;  // bursts grow the ring
    for (int b = 0; b < burst; ++b) {
      const std::uint64_t cost = below(3) == 0 ? 1 + below(40) : 1;
      CAPTURE(limit, cost);
      const WindowVerdict expected = reference.check(now, window, limit, cost);
      require_same_verdict(log.check(now, window, limit, cost), expected);
      require_same_verdict(log.peek(now, window, limit), reference.peek(now, window, limit));
      // An id the storage would replay is never recorded again: probe one, as acquire() does.
      std::string id;
      if (!scheduled && below(3) == 0) {
        id = below(2) == 0 && !ids.empty() ? ids[below(ids.size())]
                                           : "a-request-id-long-enough-to-allocate-" + std::to_string(step) + "-" + std::to_string(b);
        if (reference.holds_id(id)) {
          REQUIRE(log.holds_id(id));
          ++replays;
          continue;
        }
        REQUIRE_FALSE(log.holds_id(id));
      }
      if (!expected.fits) {
        ++denials;
        continue;
      }
      log.record(now, cost, id);
      reference.record(now, cost, id);
      if (!id.empty()) ids.push_back(id);
      ++records;
    }
    if (reference.size() != 0 && below(12) == 0) {  // an undo streak: several rolled-back records in a row
      for (std::uint64_t n = 1 + below(4); n > 0 && reference.size() != 0; --n) {
        log.undo_record();
        reference.undo_record();
        ++undos;
      }
    }
    REQUIRE(log.size() == reference.size());
    REQUIRE(log.usage() == reference.usage());
    for (int probe = 0; probe < 2 && !ids.empty(); ++probe) {
      const std::string& id = ids[below(ids.size())];
      REQUIRE(log.holds_id(id) == reference.holds_id(id));
    }
    widths_seen |= 1u << log.time_width();
    peak_capacity = std::max(peak_capacity, log.capacity());
    if (log.weighted()) saw_weighted = true;
    else if (saw_weighted && !log.empty()) saw_unweighted_after_weighted = true;
    if (ids.size() > 4000) ids.erase(ids.begin(), ids.begin() + 2000);
  }
  CHECK(records > 3000);
  CHECK(denials > 100);
  CHECK(undos > 300);
  CHECK(replays > 10);
  CHECK(peak_capacity >= 17);
  CHECK((widths_seen & (1u << 4)) != 0);
  if (seed <= 2) {  // a 2^59 ns window holds entries across the largest gaps (2^56 and more need 8 bytes)
    CHECK((widths_seen & (1u << 7)) != 0);
    CHECK((widths_seen & (1u << 8)) != 0);
  }
  CHECK(saw_weighted);
  CHECK(saw_unweighted_after_weighted);  // an emptied log went back to unit costs
  CHECK(restarts < 200);
}

TEST_CASE("record() changes nothing when any of its allocations fails (strong guarantee)", "[window_log]") {
  // Each trial builds a log, then fails the k-th allocation of one record() for k = 0, 1, 2, ... until the record
  // succeeds: every failed attempt must throw std::bad_alloc and leave everything observable as it was, and the
  // log must then keep matching the reference model.
  std::mt19937_64 rng(0x57'0AC);
  const auto below = [&rng](std::uint64_t bound) { return std::uniform_int_distribution<std::uint64_t>(0, bound - 1)(rng); };
  const std::int64_t window = std::int64_t{1} << 45;
  int failures = 0, trials = 0, expiries_under_failure = 0;

  for (int trial = 0; trial < 400; ++trial) {
    CAPTURE(trial);
    WindowLog log;
    ReferenceLog reference;
    std::vector<std::string> ids;
    std::int64_t now = static_cast<std::int64_t>(below(1000));
    const int prefill = static_cast<int>(below(40));
    for (int i = 0; i < prefill; ++i) {
      now += below(4) == 0 ? static_cast<std::int64_t>(below(std::uint64_t{1} << 36)) : static_cast<std::int64_t>(below(100));
      const std::uint64_t cost = below(5) == 0 ? 2 + below(9) : 1;
      std::string id = below(3) == 0 ? "prefill-request-id-" + std::to_string(trial) + "-" + std::to_string(i) : std::string{};
      log.record(now, cost, id);
      reference.record(now, cost, id);
      if (!id.empty()) ids.push_back(id);
    }
    // The record under test: a shape that makes it allocate (a first id or cost above 1, a full ring, a gap
    // wide enough to widen the offsets), chosen at random.
    switch (below(4)) {
      case 0: now += std::int64_t{1} << (32 + below(12)); break;
      case 1: now += 1; break;
      default: break;
    }
    const std::uint64_t cost = below(2) == 0 ? 1 : 2 + below(20);
    const std::string id = below(2) == 0 ? "the-record-under-test-" + std::to_string(trial) : std::string{};
    std::vector<std::string> probes = ids;
    if (!id.empty()) probes.push_back(id);
    const Observed before = observe(log, now, window, probes);
    for (long k = 0;; ++k) {
      CAPTURE(k);
      REQUIRE(k < 64);
      airl::test::fail_allocation_after(k);
      bool threw = false;
      try {
        log.record(now, cost, id);
      } catch (const std::bad_alloc&) {
        threw = true;
      }
      const bool injected = !airl::test::allocation_failure_armed();  // the armed failure was used up
      airl::test::fail_allocation_after(-1);
      if (!threw) {
        REQUIRE_FALSE(injected);  // no allocation failed, so the record went through
        break;
      }
      REQUIRE(injected);
      ++failures;
      REQUIRE(observe(log, now, window, probes) == before);
    }
    reference.record(now, cost, id);
    if (!id.empty()) ids.push_back(id);
    ++trials;
    REQUIRE(log.usage() == reference.usage());
    REQUIRE(log.size() == reference.size());
    for (const std::string& probe : ids) REQUIRE(log.holds_id(probe) == reference.holds_id(probe));

    // expire() is noexcept and shrinks the ring best-effort: a failing allocation there changes no answer.
    const std::int64_t later = now + static_cast<std::int64_t>(below(static_cast<std::uint64_t>(window) + 1));
    airl::test::fail_allocation_after(0);
    const std::size_t dropped = log.expire(later, window);
    airl::test::fail_allocation_after(-1);
    REQUIRE(dropped == reference.expire(later, window));
    ++expiries_under_failure;
    REQUIRE(log.usage() == reference.usage());
    require_same_verdict(log.check(later, window, 30, 4), reference.check(later, window, 30, 4));
    for (const std::string& probe : ids) REQUIRE(log.holds_id(probe) == reference.holds_id(probe));
    // And it keeps working afterwards.
    log.record(later, 3, "after-the-failures");
    reference.record(later, 3, "after-the-failures");
    REQUIRE(log.usage() == reference.usage());
    REQUIRE(log.holds_id("after-the-failures"));
  }
  CHECK(trials == 400);
  CHECK(failures > 200);
  CHECK(expiries_under_failure == 400);
}

TEST_CASE("weighted logs stay exact when usage and costs outgrow the packed cache", "[window_log]") {
  // A weighted log keeps its usage (40 bits) and oldest cost (23 bits) packed beside the ring while they fit and
  // reads the ring when they do not. Costs here cross both bounds in both directions, with ids,
  // undos and expiry, and every answer must match the plain model.
  std::mt19937_64 rng(0xCAC4E);
  const auto below = [&rng](std::uint64_t bound) { return std::uniform_int_distribution<std::uint64_t>(0, bound - 1)(rng); };
  const std::int64_t window = 1'000'000;
  WindowLog log;
  ReferenceLog reference;
  std::int64_t now = 0;
  int big_costs = 0, big_usages = 0, small_after_big = 0;
  bool was_big = false;
  for (int step = 0; step < 20'000; ++step) {
    CAPTURE(step);
    now += static_cast<std::int64_t>(below(window / 20));
    REQUIRE(log.expire(now, window) == reference.expire(now, window));
    REQUIRE(log.usage() == reference.usage());
    const std::uint64_t cost = [&]() -> std::uint64_t {
      switch (below(4)) {
        case 0: return (std::uint64_t{1} << 23) + below(1000) - 500;   // around the cost bound
        case 1: return std::uint64_t{1} << (30 + below(12));           // large: usage passes 2^40
        case 2: return 1 + below(100);
        default: return 1;
      }
    }();
    if (cost > (std::uint64_t{1} << 23) - 1) ++big_costs;
    const std::uint64_t limit = below(5) == 0 ? reference.usage() + cost - 1 : std::uint64_t{1} << 50;
    CAPTURE(cost, limit);
    const WindowVerdict expected = reference.check(now, window, limit, cost);
    require_same_verdict(log.check(now, window, limit, cost), expected);
    require_same_verdict(log.peek(now, window, limit), reference.peek(now, window, limit));
    const std::string id = below(4) == 0 ? "id-" + std::to_string(step) : std::string{};
    if (expected.fits) {
      log.record(now, cost, id);
      reference.record(now, cost, id);
    }
    if (reference.size() != 0 && below(10) == 0) {
      log.undo_record();
      reference.undo_record();
    }
    REQUIRE(log.usage() == reference.usage());
    if (!id.empty()) REQUIRE(log.holds_id(id) == reference.holds_id(id));
    const bool big = reference.usage() > (std::uint64_t{1} << 40);
    if (big) ++big_usages;
    if (was_big && !big && reference.usage() != 0) ++small_after_big;
    was_big = big;
  }
  CHECK(big_costs > 1000);
  CHECK(big_usages > 1000);
  CHECK(small_after_big > 10);
}

TEST_CASE("weighted logs are exact at the packed cache's bounds", "[window_log]") {
  const std::int64_t window = 1000;
  for (const std::uint64_t oldest_cost : {(std::uint64_t{1} << 23) - 1, std::uint64_t{1} << 23}) {
    for (const std::uint64_t usage : {(std::uint64_t{1} << 40) - 1, std::uint64_t{1} << 40, (std::uint64_t{1} << 40) + 1}) {
      CAPTURE(oldest_cost, usage);
      WindowLog log;
      log.record(0, oldest_cost, {});
      log.record(10, usage - oldest_cost, {});
      CHECK(log.usage() == usage);
      // Needing exactly the oldest cost waits for the oldest entry; one unit more waits for the second.
      CHECK(log.check(20, window, usage, oldest_cost).retry_after == 0 + window - 20);
      CHECK(log.check(20, window, usage, oldest_cost + 1).retry_after == 10 + window - 20);
      CHECK(log.check(20, window, usage + 5, 5).fits);
      CHECK(log.check(20, window, usage + 5, 6).remaining == 5);
    }
  }
}

TEST_CASE("a weighted log emptied by undo stays weighted and exact for the next entries", "[window_log]") {
  // undo_record() of the only entry leaves a weighted log with no entries: the next record must take its
  // total from the base (there is no newest slot) and rebuild the packed usage from scratch.
  const std::int64_t window = 1000;
  WindowLog log;
  log.record(0, 5, {});
  log.undo_record();
  CHECK(log.empty());
  CHECK(log.usage() == 0);
  CHECK(log.weighted());
  log.record(1, 3, {});
  CHECK(log.usage() == 3);
  log.record(2, 4, {});
  CHECK(log.usage() == 7);
  CHECK(log.check(3, window, 7, 3).retry_after == 1 + window - 3);  // the cost-3 entry frees enough
  CHECK(log.check(3, window, 7, 4).retry_after == 2 + window - 3);  // 4 units need both entries gone
}

TEST_CASE("a unit log that wrapped becomes weighted with its entries, ids and order intact", "[window_log]") {
  // The first cost above 1 rebuilds the ring with running totals; on a ring whose head has moved (entries
  // expired, so the live ones wrap around), the rebuilt one must keep every live entry in order, and ids.
  const std::int64_t window = 100;
  WindowLog log;
  for (std::int64_t t = 0; t < 4; ++t) log.record(t * 10, 1, "id-" + std::to_string(t));
  log.expire(window + 15, window);  // t = 0 and 10 expire: the head has moved
  REQUIRE(log.size() == 2);
  log.record(window + 16, 1, "id-4");  // wraps into a freed slot
  log.record(window + 17, 50, "id-5");  // weighted from here on
  REQUIRE(log.weighted());
  CHECK(log.usage() == 53);
  CHECK(log.holds_id("id-2"));
  CHECK(log.holds_id("id-4"));
  CHECK(log.holds_id("id-5"));
  CHECK_FALSE(log.holds_id("id-0"));
  CHECK(log.oldest_time() == 20);
  CHECK(log.newest_time() == window + 17);
  // Freeing 3 units waits for the entries at 20, 30 and window + 16, in that order.
  CHECK(log.check(window + 18, window, 53, 1).retry_after == 20 + window - (window + 18));
  CHECK(log.check(window + 18, window, 53, 3).retry_after == (window + 16) + window - (window + 18));
  CHECK(log.check(window + 18, window, 53, 4).retry_after == (window + 17) + window - (window + 18));
}

TEST_CASE("replace_cost settles one entry: refunds, overcharges and zero, keeping its time", "[window_log][settle]") {
  constexpr std::int64_t window = 1000 * ms;
  WindowLog log;
  log.record(0, 1, "a");
  log.record(10 * ms, 1, "b");
  log.record(20 * ms, 1, "c");
  REQUIRE_FALSE(log.weighted());
  CHECK(log.replace_cost("b", 1));  // same cost on a unit-cost log: nothing to store
  CHECK_FALSE(log.weighted());
  CHECK_FALSE(log.replace_cost("unknown", 5));
  CHECK_FALSE(log.replace_cost({}, 5));

  REQUIRE(log.replace_cost("b", 40));  // the log now stores costs
  CHECK(log.weighted());
  CHECK(log.usage() == 42);
  CHECK(log.cost_of("b") == 40u);
  CHECK(log.cost_of("a") == 1u);
  CHECK_FALSE(log.cost_of("zzz").has_value());
  REQUIRE(log.replace_cost("a", 0));  // the oldest, refunded in full
  CHECK(log.usage() == 41);
  // 41 used of 45: a cost of 10 needs 6 freed; "a" frees 0, "b" 40: ready when "b" expires.
  CHECK(log.check(30 * ms, window, 45, 10).retry_after == 10 * ms + window - 30 * ms);
  REQUIRE(log.replace_cost("b", 3));
  CHECK(log.usage() == 4);
  CHECK(log.check(30 * ms, window, 45, 10).fits);
  // Times are kept: "a" and "b" expire when they would have.
  CHECK(log.expire(window + 10 * ms, window) == 2);
  CHECK(log.usage() == 1);
  CHECK_FALSE(log.replace_cost("b", 9));  // expired: nothing to settle
  CHECK(log.replace_cost("c", 9));
  CHECK(log.usage() == 9);
}

TEST_CASE("replace_cost stays exact in a wrapped ring with the packed cache in and out of range", "[window_log][settle]") {
  constexpr std::int64_t window = 100;
  WindowLog log;
  ReferenceLog reference;
  std::int64_t now = 0;
  for (int i = 0; i < 60; ++i, now += 10) {  // ten live at a time: the ring wraps many times
    log.expire(now, window);
    reference.expire(now, window);
    const std::string id = "r" + std::to_string(i);
    log.record(now, 2, id);
    reference.record(now, 2, id);
    const std::string older = "r" + std::to_string(i / 2 + i % 3);
    const std::uint64_t actual = i % 7 == 0 ? (std::uint64_t{1} << 45) : static_cast<std::uint64_t>(i % 5);
    REQUIRE(log.replace_cost(older, actual) == reference.replace_cost(older, actual));
    REQUIRE(log.usage() == reference.usage());
    for (const std::uint64_t cost : {1u, 7u, 20u}) {
      require_same_verdict(log.check(now, window, 30, cost), reference.check(now, window, 30, cost));
    }
  }
}

TEST_CASE("replace_cost changes nothing when storing costs fails (strong guarantee)", "[window_log][settle]") {
  WindowLog log;
  log.record(0, 1, "a");
  log.record(5, 1, "b");
  airl::test::fail_allocation_after(0);
  CHECK_THROWS_AS(log.replace_cost("a", 10), std::bad_alloc);
  airl::test::fail_allocation_after(-1);
  CHECK_FALSE(log.weighted());
  CHECK(log.usage() == 2);
  CHECK(log.cost_of("a") == 1u);
  CHECK(log.replace_cost("a", 10));
  CHECK(log.usage() == 11);
}
