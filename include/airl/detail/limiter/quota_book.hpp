// SPDX-License-Identifier: MIT
#pragma once
// The rules a limiter's tiers follow at runtime: the tiers' current quotas, plans, per-user / per-model /
// per-user+model limit overrides and the plan resolver.
//
// A limiter holds none until the first change (RuleSlot): what a decision reads of them goes through function
// pointers set where the book is made (QuotaRules), so the code that keeps them (QuotaBook: maps, snapshots,
// the resolver) is compiled only in the translation units that change rules, not in every file that decides.
// (Not virtual calls: a compiler may devirtualize those speculatively, and compile the book in after all.)
//
// The rules are an immutable snapshot; a change builds a new one under a mutex and publishes it with a new
// version number. Deciding threads never lock: each keeps the snapshots it last used (a few, per thread) and
// re-reads one only when the version moved, so decisions on different keys share no written cache line.
// A limiter configured once at construction reads none of this (active() is one atomic load). Every decision
// that starts after a change returns uses the new rules; logs are never touched, so a change loses nothing
// recorded. The resolver runs with no lock held and may call into limiters (even this one).

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../../plans.hpp"
#include "../../storage_policy.hpp"
#include "../../tier.hpp"
#include "../lock.hpp"
#include "../mutex.hpp"
#include "../thread_annotations.hpp"
#include "../transparent_hash.hpp"
#include "../validate.hpp"

namespace airl::detail {

// What a decision reads of the rules in force: QuotaBook::resolve and QuotaBook::current of `book`.
struct QuotaRules {
  const void* book;
  void (*resolve)(const void* book, std::string_view user, std::string_view model, std::string_view plan,
                  std::span<Charge> charges);
  Quota (*current)(const void* book, std::size_t tier);
};

// A template only so that its members (maps of strings, shared snapshots) are instantiated where rules change,
// not in every file that includes a limiter: QuotaBook is the one instantiation.
template <class = void>
class BasicQuotaBook {
 public:
  explicit BasicQuotaBook(const std::vector<Tier>& tiers) {
    auto rules = std::make_shared<Rules>();
    for (const Tier& tier : tiers) {
      names_.push_back(tier.name);
      scopes_.push_back(tier.scope);
      rules->quotas.push_back(tier.quota);
    }
    rules->override_counts.resize(tiers.size());
    Lock lock(mutex_);
    rules_ = std::move(rules);
  }

  // Writes the quota each charge's tier has for this request into charges[i].quota (one charge per tier, in
  // tier order). `plan` empty: the resolver's plan for the user, if there is a resolver.
  // Throws std::invalid_argument on an unknown plan; whatever the resolver throws.
  void resolve(std::string_view user, std::string_view model, std::string_view plan, std::span<Charge> charges) const {
    std::shared_ptr<const Rules> pinned;
    const Rules& rules = current_rules(pinned);
    std::string resolved;
    if (plan.empty() && rules.resolver) {
      const ResolverCall nested;  // the resolver may decide on limiters itself: it must not replace `rules`
      resolved = (*rules.resolver)(user);
      plan = resolved;
    }
    const std::vector<std::optional<std::uint64_t>>* plan_limits = nullptr;
    if (!plan.empty()) {
      const auto found = rules.plans.find(plan);
      if (found == rules.plans.end()) refuse("unknown plan '{}'", {plan});
      plan_limits = &found->second;
    }
    for (std::size_t i = 0; i < charges.size() && i < rules.quotas.size(); ++i) {
      Quota quota = rules.quotas[i];
      if (plan_limits != nullptr && (*plan_limits)[i]) quota.limit = *(*plan_limits)[i];
      if (const std::optional<std::uint64_t> limit = override_for(rules, i, user, model)) quota.limit = *limit;
      charges[i].quota = quota;
    }
  }

  // Tier i's current quota for everyone (its limit before plans and overrides).
  Quota current(std::size_t tier) const {
    std::shared_ptr<const Rules> pinned;
    return current_rules(pinned).quotas[tier];
  }

  void set_quota(std::size_t tier, Quota quota) {
    validate_quota(quota, names_[tier]);
    validate_limit(quota.limit, names_[tier]);
    change([&](Rules& rules) { rules.quotas[tier] = quota; });
  }

  // Throws std::invalid_argument on an empty or over-long name, an unknown or repeated tier, a tier whose
  // bucket is shared between users (model, global), or a limit above max_exact_count.
  void set_plan(std::string_view name, const std::vector<PlanLimit>& limits) {
    validate_id(name, "plan name");
    std::vector<std::optional<std::uint64_t>> by_tier(names_.size());
    for (const PlanLimit& limit : limits) {
      const std::size_t tier = index_of(limit.tier);
      if (scopes_[tier] != Scope::user && scopes_[tier] != Scope::user_model) {
        refuse("plan '{}': tier '{}' is shared between users (scope {}), so it has one limit for everyone: use set_quota",
               {name, limit.tier, to_string(scopes_[tier])});
      }
      if (by_tier[tier]) refuse("plan '{}' names tier '{}' twice", {name, limit.tier});
      validate_limit(limit.limit, limit.tier);
      by_tier[tier] = limit.limit;
    }
    change([&](Rules& rules) { rules.plans.insert_or_assign(std::string(name), std::move(by_tier)); });
  }

  bool remove_plan(std::string_view name) {
    bool removed = false;
    change([&](Rules& rules) {
      const auto found = rules.plans.find(name);
      if (found == rules.plans.end()) return;
      rules.plans.erase(found);
      removed = true;
    });
    return removed;
  }

  void set_resolver(PlanResolver resolver) {
    auto shared = resolver ? std::make_shared<const PlanResolver>(std::move(resolver)) : nullptr;
    change([&](Rules& rules) { rules.resolver = std::move(shared); });
  }

  // Throws std::invalid_argument on an unknown tier, ids the tier's scope does not have (see LimitTarget), or
  // a limit above max_exact_count.
  void set_override(const LimitTarget& target, std::uint64_t limit) {
    std::string key = override_key(target);
    validate_limit(limit, target.tier);
    change([&](Rules& rules) {
      const std::size_t tier = index_of(target.tier);
      if (rules.overrides.insert_or_assign(std::move(key), limit).second) ++rules.override_counts[tier][kind_of(target)];
    });
  }

  bool clear_override(const LimitTarget& target) {
    const std::string key = override_key(target);
    bool cleared = false;
    change([&](Rules& rules) {
      const auto found = rules.overrides.find(key);
      if (found == rules.overrides.end()) return;
      rules.overrides.erase(found);
      --rules.override_counts[index_of(target.tier)][kind_of(target)];
      cleared = true;
    });
    return cleared;
  }

  std::size_t index_of(std::string_view tier) const {
    for (std::size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == tier) return i;
    }
    refuse("no tier named '{}'", {tier});
  }

 private:
  enum Kind : std::size_t { both = 0, user_only = 1, model_only = 2, kinds = 3 };

  // One immutable set of rules. Shared by the book and the threads' caches; never changed once published.
  struct Rules {
    std::vector<Quota> quotas;
    std::unordered_map<std::string, std::vector<std::optional<std::uint64_t>>, TransparentHash, std::equal_to<>> plans;
    std::unordered_map<std::string, std::uint64_t, TransparentHash, std::equal_to<>> overrides;
    std::vector<std::array<std::size_t, kinds>> override_counts;  // per tier and kind: lookups only where some exist
    std::shared_ptr<const PlanResolver> resolver;
  };

  // Marks a resolver call on this thread: rules read meanwhile are pinned, not cached, so the caller's cached
  // snapshot stays alive and unchanged however the resolver uses limiters.
  struct ResolverCall {
    ResolverCall() noexcept { ++depth(); }
    ~ResolverCall() { --depth(); }
    ResolverCall(const ResolverCall&) = delete;
    ResolverCall& operator=(const ResolverCall&) = delete;
    static int& depth() noexcept {
      thread_local int calls = 0;
      return calls;
    }
  };

  // The rules in force: from this thread's cache when its copy is current, else read under the mutex (and
  // cached, except inside a resolver call, where `pinned` holds them). The reference lives as long as `pinned`
  // or until this thread's next call outside a resolver.
  const Rules& current_rules(std::shared_ptr<const Rules>& pinned) const {
    const std::uint64_t version = version_.load(std::memory_order_acquire);
    if (ResolverCall::depth() != 0) {
      Lock lock(mutex_);
      pinned = rules_;
      return *pinned;
    }
    struct Entry {
      std::uint64_t book = 0;  // a QuotaBook's id_ (addresses can be reused, ids are not)
      std::uint64_t version = 0;
      std::shared_ptr<const Rules> rules;
    };
    thread_local std::array<Entry, 4> cache;  // a thread may use a few limiters with rules in turn
    thread_local std::size_t next_victim = 0;
    for (Entry& entry : cache) {
      if (entry.book == id_ && entry.version == version) return *entry.rules;
    }
    Entry* slot = nullptr;
    for (Entry& entry : cache) {
      if (entry.book == id_) slot = &entry;  // an older version of this book's rules
    }
    if (slot == nullptr) slot = &cache[next_victim++ % cache.size()];
    Lock lock(mutex_);
    slot->book = id_;
    slot->version = version_.load(std::memory_order_relaxed);  // rules_ and version_ change together under the lock
    slot->rules = rules_;
    return *slot->rules;
  }

  // Applies `edit` to a copy of the rules and publishes it. Changes are rare: copying keeps readers lock-free.
  template <class Edit>
  void change(Edit&& edit) {
    Lock lock(mutex_);
    auto next = std::make_shared<Rules>(*rules_);
    edit(*next);
    rules_ = std::move(next);
    version_.fetch_add(1, std::memory_order_release);
  }

  static void validate_limit(std::uint64_t limit, std::string_view tier) {
    if (limit > max_exact_count) {
      refuse("tier '{}': a limit set at runtime must be at most 2^53 (what every storage decides exactly; 2^53 is "
             "as good as unlimited)", {tier});
    }
  }

  static Kind kind_of(const LimitTarget& target) noexcept {
    if (!target.user.empty() && !target.model.empty()) return both;
    return target.user.empty() ? model_only : user_only;
  }

  // The most specific override of tier i for (user, model): user+model, then user, then model.
  std::optional<std::uint64_t> override_for(const Rules& rules, std::size_t tier, std::string_view user,
                                            std::string_view model) const {
    if (rules.overrides.empty()) return std::nullopt;
    const Scope scope = scopes_[tier];
    const bool has_user = scope == Scope::user || scope == Scope::user_model;
    const bool has_model = scope == Scope::model || scope == Scope::user_model;
    thread_local std::string key;
    const auto lookup = [&](Kind kind, std::string_view u, std::string_view m) -> std::optional<std::uint64_t> {
      if (rules.override_counts[tier][kind] == 0) return std::nullopt;
      encode_key(key, tier, kind, u, m);
      const auto found = rules.overrides.find(std::string_view(key));
      return found == rules.overrides.end() ? std::nullopt : std::optional<std::uint64_t>(found->second);
    };
    if (has_user && has_model) {
      if (auto limit = lookup(both, user, model)) return limit;
    }
    if (has_user) {
      if (auto limit = lookup(user_only, user, {})) return limit;
    }
    if (has_model) return lookup(model_only, {}, model);
    return std::nullopt;
  }

  std::string override_key(const LimitTarget& target) const {
    const std::size_t tier = index_of(target.tier);
    if (target.user.empty() && target.model.empty()) {
      refuse("an override of tier '{}' needs a user, a model or both (set_quota changes the tier)", {target.tier});
    }
    if (!target.user.empty()) validate_id(target.user, "user");
    if (!target.model.empty()) validate_id(target.model, "model");
    const Scope scope = scopes_[tier];
    const bool user_ok = scope_has_user(scope), model_ok = scope_has_model(scope);
    if ((!target.user.empty() && !user_ok) || (!target.model.empty() && !model_ok)) {
      refuse("tier '{}' (scope {}) has no bucket per {} to override",
             {target.tier, to_string(scope), target.user.empty() || user_ok ? "model" : "user"});
    }
    std::string key;
    encode_key(key, tier, kind_of(target), target.user, target.model);
    return key;
  }

  // tier index, kind, the 4-byte lengths of user and model, then both: no two targets share a key.
  static void encode_key(std::string& out, std::size_t tier, Kind kind, std::string_view user, std::string_view model) {
    const auto word = [](std::size_t value, char* at) {
      for (int byte = 0; byte < 4; ++byte) at[byte] = static_cast<char>((value >> (8 * byte)) & 0xFFu);
    };
    char head[13];
    word(tier, head);
    head[4] = static_cast<char>('0' + kind);
    word(user.size(), head + 5);
    word(model.size(), head + 9);
    out.assign(head, sizeof head);  // lengths first, then the ids: still no two targets share a key
    out.append(user);
    out.append(model);
  }

  static std::uint64_t next_id() noexcept {
    static std::atomic<std::uint64_t> ids{0};
    return ids.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  // Fixed at construction, read without the lock.
  std::vector<std::string> names_;
  std::vector<Scope> scopes_;
  const std::uint64_t id_ = next_id();

  mutable Mutex mutex_;                                          // serialises changes
  std::shared_ptr<const Rules> rules_ AIRL_GUARDED_BY(mutex_);  // the rules in force
  std::atomic<std::uint64_t> version_{0};  // bumped with every change of rules_
};

using QuotaBook = BasicQuotaBook<>;

// A limiter's rules: none until the first change, then a QuotaBook, published once to every deciding thread.
class RuleSlot {
 public:
  RuleSlot() = default;
  RuleSlot(const RuleSlot&) = delete;
  RuleSlot& operator=(const RuleSlot&) = delete;
  ~RuleSlot() AIRL_NO_THREAD_SAFETY_ANALYSIS {  // no other thread reaches a slot being destroyed
    if (owned_ != nullptr) destroy_(owned_);
  }

  // The rules decisions must read, or nullptr while none was ever set (the tiers' own quotas apply). One
  // atomic load. Throws nothing.
  const QuotaRules* active() const noexcept { return active_.load(std::memory_order_acquire); }

  // The book, made with `tiers` on first use. A template, so its code is compiled only where rules change.
  // Thread safety: safe. Throws std::bad_alloc.
  template <class Book = QuotaBook>
  Book& book(const std::vector<Tier>& tiers) {
    Lock lock(mutex_);
    if (owned_ == nullptr) {
      auto made = std::make_unique<Book>(tiers);
      rules_ = QuotaRules{made.get(),
                          [](const void* book, std::string_view user, std::string_view model, std::string_view plan,
                             std::span<Charge> charges) {
                            static_cast<const Book*>(book)->resolve(user, model, plan, charges);
                          },
                          [](const void* book, std::size_t tier) { return static_cast<const Book*>(book)->current(tier); }};
      destroy_ = [](void* book) { delete static_cast<Book*>(book); };
      owned_ = made.release();
      active_.store(&rules_, std::memory_order_release);
    }
    return *static_cast<Book*>(owned_);
  }

 private:
  Mutex mutex_;
  void* owned_ AIRL_GUARDED_BY(mutex_) = nullptr;  // a Book, destroyed by destroy_
  void (*destroy_)(void*) AIRL_GUARDED_BY(mutex_) = nullptr;
  QuotaRules rules_{};                               // written once, before it is published
  std::atomic<const QuotaRules*> active_{nullptr};  // &rules_ once a book exists
};

}  // namespace airl::detail
