// SPDX-License-Identifier: MIT
// airl::detail::EntryTable, the open-addressing index of one shard: a randomized differential test against
// std::unordered_map (inserts, finds, erases with backward shift across the end of the slot array, compaction),
// for_each with erase-during-visit never skipping a bucket, and hash sets built to collide (one full hash for
// many buckets, the same low bits for all, homes at the last slot so every run wraps). The table takes the hash
// from its caller, so the test chooses every hash; buckets come from Bucket::make and go back via Bucket::Deleter.
#include <catch2/catch.hpp>

#include <airl/detail/memory/entry.hpp>
#include <airl/detail/memory/entry_table.hpp>
#include <airl/detail/memory/window_log.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace {

using airl::BucketRef;
using airl::Scope;
using Bucket = airl::detail::Entry<airl::detail::WindowLog>;
using BucketTable = airl::detail::EntryTable<Bucket>;

// Every live bucket of a test: its hash and its owner (the table owns nothing).
struct Model {
  struct Entry {
    std::uint64_t hash;
    Bucket::Owner bucket;
  };
  std::unordered_map<std::string, Entry> entries;  // by user name
};

BucketRef name_of(const std::string& user) { return BucketRef{Scope::user, "rpm", user, {}}; }

Bucket* find_in(const BucketTable& table, std::uint64_t hash, const std::string& user) {
  const BucketRef name = name_of(user);
  return table.find(hash, [&name](const Bucket& bucket) { return bucket.names(name); });
}

void insert(BucketTable& table, Model& model, const std::string& user, std::uint64_t hash) {
  table.reserve_one();
  Bucket::Owner bucket = Bucket::make(name_of(user));
  table.insert(hash, bucket.get());
  model.entries.emplace(user, Model::Entry{hash, std::move(bucket)});
}

void erase(BucketTable& table, Model& model, const std::string& user) {
  const auto found = model.entries.find(user);
  REQUIRE(found != model.entries.end());
  table.erase(found->second.hash, found->second.bucket.get());
  model.entries.erase(found);
}

// The table and the model agree: same size, every live bucket found at its own hash, load at most 0.8.
void require_same(const BucketTable& table, const Model& model) {
  REQUIRE(table.size() == model.entries.size());
  REQUIRE(table.size() * 5 <= table.capacity() * 4);
  for (const auto& [user, entry] : model.entries) {
    CAPTURE(user, entry.hash);
    REQUIRE(find_in(table, entry.hash, user) == entry.bucket.get());
  }
}

// Hash families, each a different way to collide.
enum class Family { random, same_low_bits, last_slot_home, few_full_hashes, two_homes };

std::uint64_t make_hash(Family family, std::mt19937_64& rng) {
  switch (family) {
    case Family::random: return rng();
    case Family::same_low_bits: return (rng() << 24) | 0x5A5A5Aull;  // one home for every table up to 2^24 slots
    case Family::last_slot_home: return (rng() << 24) | 0xFFFFFFull;  // home = the last slot: every run wraps
    case Family::few_full_hashes: return 0xC0FFEE00ull + rng() % 3;   // many buckets share one full hash
    case Family::two_homes: return (rng() << 24) | (rng() % 2 == 0 ? 0xFFFFFEull : 0x000001ull);
  }
  return 0;
}

}  // namespace

TEST_CASE("an empty table finds nothing and prefetches safely", "[bucket_table]") {
  BucketTable table;
  CHECK(table.size() == 0);
  CHECK(table.capacity() == 0);
  CHECK(find_in(table, 42, "alice") == nullptr);
  table.prefetch_slot(42);  // nothing published yet
  table.compact();
  CHECK(table.capacity() == 0);
}

TEST_CASE("insert, find, erase and compact agree with std::unordered_map under colliding hashes", "[bucket_table]") {
  const Family family =
      GENERATE(Family::random, Family::same_low_bits, Family::last_slot_home, Family::few_full_hashes, Family::two_homes);
  CAPTURE(static_cast<int>(family));
  const auto family_index = static_cast<std::uint64_t>(static_cast<int>(family));
  std::mt19937_64 rng(std::uint64_t{0xB0C4'E7} + family_index);
  const auto below = [&rng](std::size_t bound) { return std::uniform_int_distribution<std::size_t>(0, bound - 1)(rng); };
  // Colliding families probe linearly through one long run: keep them smaller so the test stays quick.
  const std::size_t most = family == Family::random ? 2000 : 400;

  BucketTable table;
  Model model;
  std::vector<std::string> users;  // live users, for picking one at random
  int next_user = 0, inserts = 0, erases = 0, misses = 0, compactions = 0;
  std::size_t peak_capacity = 0;

  for (int step = 0; step < 12'000; ++step) {
    CAPTURE(step);
    // Phases: grow to `most`, shrink to a few (so compact() runs), and churn in between.
    const bool growing = (step / 3000) % 2 == 0;
    const std::size_t action = below(10);
    if ((growing ? action < 6 : action < 1) && model.entries.size() < most) {
      const std::string user = "user-" + std::to_string(next_user++);
      insert(table, model, user, make_hash(family, rng));
      users.push_back(user);
      ++inserts;
    } else if (action < 9 && !users.empty()) {
      const std::size_t at = below(users.size());
      erase(table, model, users[at]);
      users[at] = users.back();
      users.pop_back();
      ++erases;
    } else {
      // A miss: a name never inserted, under a hash from the same family (often a live bucket's hash).
      const std::uint64_t hash = users.empty() || below(2) == 0 ? make_hash(family, rng)
                                                                : model.entries.at(users[below(users.size())]).hash;
      REQUIRE(find_in(table, hash, "absent-" + std::to_string(step)) == nullptr);
      ++misses;
    }
    if (below(200) == 0) {
      const std::size_t before = table.capacity();
      table.compact();
      if (table.capacity() < before) ++compactions;
    }
    peak_capacity = std::max(peak_capacity, table.capacity());
    if (step % 50 == 0 || model.entries.size() < 20) require_same(table, model);
    if (!users.empty()) {
      const std::string& probe = users[below(users.size())];
      REQUIRE(find_in(table, model.entries.at(probe).hash, probe) == model.entries.at(probe).bucket.get());
    }
  }
  require_same(table, model);
  while (!users.empty()) {  // drain: every erase shifts a run back, down to an empty table
    erase(table, model, users.back());
    users.pop_back();
    if (users.size() % 16 == 0) require_same(table, model);
  }
  CHECK(table.size() == 0);
  table.compact();
  CHECK(table.capacity() <= 8);
  CHECK(inserts > 1000);
  CHECK(erases > 1000);
  CHECK(misses > 100);
  CHECK(compactions > 0);
  CHECK(peak_capacity >= 512);
}

TEST_CASE("erasing from a run that wraps past the last slot keeps every bucket findable", "[bucket_table]") {
  // 4..12 buckets: capacity 8 or 16. Homes at the last slots (15, 14, 13, or 7, 6, 5 at capacity 8) spill over
  // into slots 0, 1, ... where entries whose home is 0 or 1 sit behind them. Erase in random order, check the rest.
  std::mt19937_64 rng(0x5EED);
  for (int round = 0; round < 300; ++round) {
    CAPTURE(round);
    BucketTable table;
    Model model;
    std::vector<std::string> users;
    const std::size_t count = 4 + rng() % 9;  // 4..12
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint64_t homes[] = {14, 15, 15, 0, 1, 13};
      const std::uint64_t hash = (rng() << 8) | homes[rng() % 6];
      const std::string user = "u" + std::to_string(i);
      insert(table, model, user, hash);
      users.push_back(user);
    }
    REQUIRE((table.capacity() == 8 || table.capacity() == 16));
    std::shuffle(users.begin(), users.end(), rng);
    while (!users.empty()) {
      erase(table, model, users.back());
      users.pop_back();
      require_same(table, model);
    }
  }
}

TEST_CASE("for_each visits every bucket, also when the visitor erases the one it visits", "[bucket_table]") {
  const Family family =
      GENERATE(Family::random, Family::same_low_bits, Family::last_slot_home, Family::few_full_hashes, Family::two_homes);
  const int percent_erased = GENERATE(0, 10, 50, 90, 100);
  CAPTURE(static_cast<int>(family), percent_erased);
  const auto family_index = static_cast<std::uint64_t>(static_cast<int>(family));
  std::mt19937_64 rng(std::uint64_t{0xF0E4'C4} * (1 + family_index) + static_cast<std::uint64_t>(percent_erased));

  for (int round = 0; round < 20; ++round) {
    CAPTURE(round);
    BucketTable table;
    Model model;
    const std::size_t count = 1 + rng() % 300;
    std::unordered_map<const Bucket*, std::string> user_of;
    for (std::size_t i = 0; i < count; ++i) {
      const std::string user = "v" + std::to_string(i);
      insert(table, model, user, make_hash(family, rng));
      user_of[model.entries.at(user).bucket.get()] = user;
    }
    // Decide up front which buckets the visit erases.
    std::unordered_set<std::string> doomed;
    for (const auto& [user, entry] : model.entries) {
      if (static_cast<int>(rng() % 100) < percent_erased) doomed.insert(user);
    }
    std::unordered_map<std::string, int> visits;
    table.for_each([&](Bucket& bucket) {
      const auto found = user_of.find(&bucket);
      REQUIRE(found != user_of.end());  // a live bucket, never a stale or freed one
      const std::string user = found->second;
      ++visits[user];
      if (doomed.count(user) != 0) {
        REQUIRE(visits[user] == 1);  // an erased bucket is never visited again
        user_of.erase(found);
        erase(table, model, user);  // frees it: ASan reports any later touch
      }
    });
    // Nobody skipped; without erasures nobody is visited twice (nothing moves).
    REQUIRE(visits.size() == count);
    for (const auto& [user, times] : visits) {
      CAPTURE(user);
      REQUIRE(times >= 1);
      if (percent_erased == 0) REQUIRE(times == 1);
    }
    REQUIRE(table.size() == count - doomed.size());
    require_same(table, model);
    for (const std::string& user : doomed) REQUIRE(model.entries.count(user) == 0);
  }
}

TEST_CASE("buckets with one full hash are told apart by their names", "[bucket_table]") {
  BucketTable table;
  Model model;
  constexpr std::uint64_t hash = 0xFFFF'FFFF'FFFF'FFFFull;  // home = last slot of every table
  for (int i = 0; i < 200; ++i) insert(table, model, "same-" + std::to_string(i), hash);
  require_same(table, model);
  CHECK(find_in(table, hash, "same-200") == nullptr);
  CHECK(find_in(table, hash - 1, "same-0") == nullptr);  // right name, wrong hash: not this table's entry
  for (int i = 0; i < 200; i += 2) erase(table, model, "same-" + std::to_string(i));
  require_same(table, model);
  table.compact();
  require_same(table, model);
  for (int i = 1; i < 200; i += 2) erase(table, model, "same-" + std::to_string(i));
  require_same(table, model);
  table.compact();
  CHECK(table.capacity() == 8);
}

TEST_CASE("compact halves a mostly empty table and keeps its buckets", "[bucket_table]") {
  BucketTable table;
  Model model;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) insert(table, model, "c" + std::to_string(i), rng());
  const std::size_t full = table.capacity();
  REQUIRE(full >= 1024);
  for (int i = 0; i < 1000; ++i) {
    if (i % 50 != 0) erase(table, model, "c" + std::to_string(i));
  }
  REQUIRE(table.size() == 20);
  table.compact();
  CHECK(table.capacity() < full);
  CHECK(table.capacity() >= 2 * table.size());
  require_same(table, model);
  table.prefetch_slot(rng());  // reads the republished slot array
  // The compacted table grows again as needed.
  for (int i = 0; i < 500; ++i) insert(table, model, "d" + std::to_string(i), rng());
  require_same(table, model);
}
