// SPDX-License-Identifier: MIT
#pragma once
// ConcurrencyLimiter: caps on the requests in flight, per user, model, user+model or globally. Rate limits
// say how much work may start per window; GPU capacity is also about how much is running at once, and a
// long completion holds its slot for as long as it streams.
//
// try_acquire(user, model) takes one lease per cap, all-or-nothing, and returns a Permit that gives them back
// when it is destroyed. A lease counts until released or until it runs out, so a holder that crashed (on
// Redis: a process that died) stops counting on its own; a holder that works longer than the lease renews it.
// The storage does the bookkeeping (in_memory_concurrency_storage.hpp, redis/redis_concurrency_storage.hpp).
// Each permit has a 128-bit id, unique across processes and forks (detail/limiter/permit_ids.hpp).

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clock.hpp"
#include "concurrency_storage_policy.hpp"
#include "decision.hpp"
#include "detail/limiter/counters.hpp"
#include "detail/limiter/permit_ids.hpp"
#include "detail/moved_from.hpp"
#include "detail/part_array.hpp"
#include "detail/validate.hpp"
#include "errors.hpp"
#include "metrics.hpp"
#include "permit.hpp"
#include "quota.hpp"
#include "tier.hpp"

namespace airl {

// The default storage, declared here and defined in in_memory_concurrency_storage.hpp (which <airl/airl.hpp>
// includes): a limiter names its storage, it does not include one.
template <ClockPolicy Clock>
class InMemoryConcurrencyStorage;

namespace detail {

// Throws std::invalid_argument unless the caps are usable: at least one; names non-empty, at most
// max_id_length bytes, unique and not a reserved reason; a known scope; a lease in (0, max_window].
inline void validate_caps(const std::vector<ConcurrencyCap>& caps) {
  if (caps.empty()) refuse("a concurrency limiter needs at least one cap");
  for (std::size_t i = 0; i < caps.size(); ++i) {
    const ConcurrencyCap& cap = caps[i];
    validate_id(cap.name, "cap name");
    if (cap.name == key_capacity_reason || cap.name == backend_unavailable_reason) {
      refuse("cap name '{}' is reserved", {cap.name});
    }
    if (!known_scope(cap.scope)) refuse("cap '{}': unknown scope", {cap.name});
    if (cap.lease.count() <= 0) refuse("cap '{}': lease must be > 0", {cap.name});
    if (cap.lease > max_window) refuse("cap '{}': lease must be at most 366 days", {cap.name});
    for (std::size_t j = 0; j < i; ++j) {
      if (caps[j].name == cap.name) refuse("duplicate cap name '{}'", {cap.name});
    }
  }
}

}  // namespace detail

template <class Storage = InMemoryConcurrencyStorage<SteadyClock>>
class ConcurrencyLimiter {
  static_assert(ConcurrencyStoragePolicy<Storage>,
                "airl::ConcurrencyLimiter: Storage must satisfy airl::ConcurrencyStoragePolicy "
                "(see include/airl/concurrency_storage_policy.hpp)");

 public:
  // Throws std::invalid_argument on an empty cap list, an empty, over-long, reserved or duplicate cap name,
  // an unknown scope, a lease <= 0 or above max_window, or a cap the storage cannot enforce (its
  // validate_cap(): on Redis a max_in_flight above 2^53). May be built before fork(): each process draws its
  // own permit ids.
  explicit ConcurrencyLimiter(std::vector<ConcurrencyCap> caps, Storage storage = Storage{}) {
    detail::validate_caps(caps);
    if constexpr (ConcurrencyCapValidator<Storage>) {
      for (const ConcurrencyCap& cap : caps) storage.validate_cap(cap);
    }
    core_ = new Core(std::move(caps), std::move(storage));
  }

  // Movable. Every member of a moved-from limiter throws std::logic_error naming it (besides what it lists);
  // destroying it or assigning to it works. Its permits keep working: they share its core, not the object.
  ConcurrencyLimiter(ConcurrencyLimiter&& other) noexcept : core_(std::exchange(other.core_, nullptr)) {}
  ConcurrencyLimiter& operator=(ConcurrencyLimiter&& other) noexcept {
    if (this != &other) {
      if (core_ != nullptr) core_->drop();
      core_ = std::exchange(other.core_, nullptr);
    }
    return *this;
  }
  ConcurrencyLimiter(const ConcurrencyLimiter&) = delete;
  ConcurrencyLimiter& operator=(const ConcurrencyLimiter&) = delete;
  // The core lives on while permits it granted hold leases. Throws nothing.
  ~ConcurrencyLimiter() {
    if (core_ != nullptr) core_->drop();
  }

  // Takes a lease in every cap's scope for (user, model), or in none: the permit is acquired only if every
  // scope has fewer than its cap in flight; a refused permit says why (status(), reason()). A store fault is
  // answered by the storage's failure policy (on Redis: fail_closed refuses with Status::backend_unavailable,
  // fail_open admits a degraded permit, local decides in process), never thrown by the shipped storages.
  // Thread safety: safe from any thread. Throws std::invalid_argument on an empty or over-long user or model;
  // airl::BackendError when a storage without a failure policy fails (no permit holds anything);
  // airl::PermitIdInUse if three fresh ids were all held already (never expected); std::logic_error when
  // the limiter was moved from.
  [[nodiscard]] Permit try_acquire(std::string_view user, std::string_view model) {
    Core& core = live("try_acquire");
    detail::validate_request(user, model, 1, {});
    Permit permit;
    ConcurrencyResult result;
    for (int attempt = 1;; ++attempt) {
      permit.ticket_.id = core.ids.next();
      try {
        result = core.counting_backend_errors([&] {
          return core.with_slots(user, model,
                                 [&](auto slots) { return core.acquire_in_store(slots, permit.ticket_.id); });
        });
        break;
      } catch (const PermitIdInUse&) {
        if (attempt == max_id_attempts) throw;
        core.ids.draw(/*forced=*/true);  // this base collides with another process's: leave it
      }
    }
    const Status status = result.acquired ? Status::allowed : refusal(result.status);
    permit.degraded_ = result.degraded;
    permit.status_ = status;
    if (result.degraded) core.counters.count_degraded();
    core.counters.count(status, result.denied_by);
    if (!result.acquired) {
      permit.ticket_.id = PermitId{};
      permit.denied_by_ = status == Status::denied && result.denied_by < core.caps.size() ? result.denied_by : 0;
      switch (status) {
        case Status::key_capacity: permit.reason_ = key_capacity_reason; break;
        case Status::backend_unavailable: permit.reason_ = backend_unavailable_reason; break;
        default: permit.reason_ = core.caps[permit.denied_by_].name; break;
      }
      permit.retry_after_ = result.retry_after;
      return permit;
    }
    // The ids are copied only once the leases are taken; should that fail, the leases are given back.
    permit.ticket_.location = result.location;
    try {
      permit.ticket_.names.assign(user, model);
    } catch (...) {
      core.release_slots(user, model, permit.ticket_);
      throw;
    }
    core.hold();  // the permit's reference, which also counts it as held
    permit.owner_ = &core;
    permit.acquired_.store(true, std::memory_order_relaxed);
    return permit;
  }

  // Live permits in `cap`'s scope for (user, model) now (the ids the scope does not use are ignored).
  // Thread safety: safe. Throws std::invalid_argument on an unknown cap or an invalid id; airl::BackendError
  // when the store fails.
  std::uint64_t in_flight(std::string_view cap, std::string_view user, std::string_view model) {
    Core& core = live("in_flight");
    detail::validate_request(user, model, 1, {});
    const ConcurrencyCap& found = core.cap_named(cap);
    const ConcurrencySlot slot{BucketRef{found.scope, found.name, user, model}, found.max_in_flight, found.lease};
    return core.counting_backend_errors([&] { return core.storage.in_flight(slot); });
  }

  // Drops run-out leases and empty scopes held in process; returns how many scopes went. Thread safety: safe.
  std::size_t purge_expired() {
    Core& core = live("purge_expired");
    return core.counting_backend_errors([&] { return core.storage.purge_expired(); });
  }

  // A snapshot of the counters. Thread safety: safe. Throws only std::bad_alloc (and std::logic_error when
  // moved from).
  ConcurrencyMetrics metrics() const {
    const Core& core = live("metrics");
    ConcurrencyMetrics metrics;
    const auto totals = core.counters.totals();
    const auto read = [](const std::atomic<std::uint64_t>& counter) { return counter.load(std::memory_order_relaxed); };
    metrics.acquired = totals.allowed;
    metrics.denied = totals.denied;
    metrics.held = core.references() - 1;  // the permits' references: all but this limiter's
    metrics.renewed = read(core.renewed_count);
    metrics.leases_lost = read(core.lost_count);
    metrics.degraded = totals.degraded;
    metrics.backend_errors = totals.backend_errors;
    metrics.release_errors = read(core.release_error_count);
    metrics.denied_key_capacity = totals.key_capacity;
    metrics.denied_backend_unavailable = totals.backend_unavailable;
    for (std::size_t i = 0; i < totals.denied_by_tier.size() && i < core.caps.size(); ++i) {
      metrics.denied_by_cap.push_back({core.caps[i].name, totals.denied_by_tier[i]});
    }
    return metrics;
  }

  // The caps, in declared order (Permit::denied_by() indexes them). Throws std::logic_error when moved from.
  const std::vector<ConcurrencyCap>& caps() const { return live("caps").caps; }
  // The storage, shared with the permits this limiter granted. Throws std::logic_error when moved from.
  Storage& storage() { return live("storage").storage; }
  const Storage& storage() const { return live("storage").storage; }

 private:
  using PermitTicket = detail::PermitTicket;

  // What the limiter and its permits share: the caps, the storage and the counters. Each acquired permit holds
  // a reference (PermitOwner), so a permit outliving its limiter still releases into the right store.
  struct Core final : detail::PermitOwner {
    Core(std::vector<ConcurrencyCap> c, Storage s)
        : caps(std::move(c)), storage(std::move(s)), counters(caps.size()) {}

    // Calls `work(slots)` with one slot per cap for (user, model): on the stack for up to inline_parts caps
    // (detail::PartArray), each built in place.
    template <class Work>
    decltype(auto) with_slots(std::string_view user, std::string_view model, Work&& work) const {
      detail::PartArray<ConcurrencySlot> slots(caps.size());
      for (std::size_t i = 0; i < caps.size(); ++i) {
        slots.make(i, [&] {
          return ConcurrencySlot{BucketRef{caps[i].scope, caps[i].name, user, model}, caps[i].max_in_flight,
                                 caps[i].lease};
        });
      }
      return work(std::span<const ConcurrencySlot>(slots.span()));
    }

    // The storage's try_acquire, told the slots are valid when it takes that (detail::Validated).
    ConcurrencyResult acquire_in_store(std::span<const ConcurrencySlot> slots, const PermitId& id) {
      if constexpr (requires { storage.try_acquire(slots, id, detail::validated); }) {
        return storage.try_acquire(slots, id, detail::validated);
      } else {
        return storage.try_acquire(slots, id);
      }
    }

    template <class Call>
    decltype(auto) counting_backend_errors(Call&& call) {
      try {
        return call();
      } catch (const BackendError&) {
        counters.count_backend_error();
        throw;
      }
    }

    void release_slots(std::string_view user, std::string_view model, const PermitTicket& ticket) noexcept {
      try {
        with_slots(user, model, [&](auto slots) {
          if constexpr (requires { storage.release(slots, ticket.id, ticket.location, detail::validated); }) {
            storage.release(slots, ticket.id, ticket.location, detail::validated);
          } else {
            storage.release(slots, ticket.id, ticket.location);
          }
        });
      } catch (const BackendError&) {
        counters.count_backend_error();
        count(release_error_count);
      } catch (...) {
        count(release_error_count);  // e.g. std::bad_alloc building the call: the leases run out
      }
    }

    void release(const PermitTicket& ticket) noexcept override {
      if (ticket.location != LeaseLocation::nowhere) release_slots(ticket.names.user(), ticket.names.model(), ticket);
    }

    RenewStatus renew(const PermitTicket& ticket) override {
      if (ticket.location == LeaseLocation::nowhere || ticket.location == LeaseLocation::unconfirmed) {
        count(renewed_count);  // a degraded permit holds no confirmed lease: nothing to extend or lose
        return RenewStatus::assumed;
      }
      const RenewStatus status = counting_backend_errors([&] {
        return with_slots(ticket.names.user(), ticket.names.model(),
                          [&](auto slots) { return storage.renew(slots, ticket.id, ticket.location); });
      });
      switch (status) {
        case RenewStatus::renewed: count(renewed_count); break;
        case RenewStatus::assumed:
          count(renewed_count);
          counters.count_degraded();
          break;
        case RenewStatus::lost: count(lost_count); break;  // the permit then drops its reference
      }
      return status;
    }

    void abandon(const PermitTicket&) noexcept override {}  // counted by the reference the permit drops

    const ConcurrencyCap& cap_named(std::string_view name) const {
      for (const ConcurrencyCap& cap : caps) {
        if (cap.name == name) return cap;
      }
      detail::refuse("no concurrency cap named '{}'", {name});
    }

    static void count(std::atomic<std::uint64_t>& counter) noexcept { counter.fetch_add(1, std::memory_order_relaxed); }

    std::vector<ConcurrencyCap> caps;
    Storage storage;
    detail::PermitIds ids;
    detail::DecisionCounters counters;  // acquisitions, as a rate limiter counts decisions (denials per cap)
    std::atomic<std::uint64_t> renewed_count{0}, lost_count{0}, release_error_count{0};  // held: references() - 1
  };

  static constexpr int max_id_attempts = 3;

  // The refusal a storage reported; a storage that set no refusal status was refused by a cap.
  static Status refusal(Status status) noexcept {
    return status == Status::key_capacity || status == Status::backend_unavailable ? status : Status::denied;
  }

  // The one way every member reaches the core: a moved-from limiter has none, and `member` throws
  // std::logic_error (detail/moved_from.hpp).
  Core& live(const char* member) const { return detail::live_state(core_, "airl::ConcurrencyLimiter", member); }

  Core* core_ = nullptr;  // holds one reference (PermitOwner); none when moved from
};

}  // namespace airl
