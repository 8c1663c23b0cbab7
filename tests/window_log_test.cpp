// SPDX-License-Identifier: MIT
// airl::detail::WindowLog, the pure per-bucket log: the rules of docs/DESIGN.md for one bucket, checked with
// raw nanosecond times, plus a randomized differential test against a plain std::deque model.
#include <catch2/catch.hpp>

#include "support.hpp"

#include <airl/detail/window_log.hpp>

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
  int fits = 0, denials = 0, finite_retries = 0, undos = 0, id_hits = 0;
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
  CHECK(peak_capacity >= 11);  // grew several times (2, 4, 7, 11, ...)
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
