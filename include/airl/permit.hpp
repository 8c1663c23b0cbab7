// SPDX-License-Identifier: MIT
#pragma once
// Permit: the RAII answer of ConcurrencyLimiter::try_acquire(). An acquired permit holds one lease per cap
// and gives them back when it is destroyed (or earlier, with release()); a denied one holds nothing and says
// which cap was full. It is not a template: code that passes permits around (a request context, a streaming
// handler) needs no storage type, and a permit keeps what it needs to release alive even if its limiter
// is destroyed first.
//
// renew() and release() may race on one permit (a heartbeat thread renewing while the request thread
// finishes): they take the permit's own small lock, so exactly one of them ends the permit. A release first
// raises `ending_`, so a heartbeat looping on renew() stops taking the lock: the lock is held across a store
// call and is not fair, and a renew loop would otherwise starve the release for as long as it runs. Moving
// or destroying a permit while another thread still uses it remains a caller error, as for any object.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "concurrency_storage_policy.hpp"
#include "decision.hpp"
#include "detail/lock.hpp"
#include "detail/shard_mutex.hpp"
#include "detail/thread_annotations.hpp"

namespace airl {

template <class Storage>
class ConcurrencyLimiter;

namespace detail {

// The user and model of an acquired permit, kept to find its scopes again: inline when they fit together in
// 48 bytes (typical ids: no heap allocation per permit), on the heap beyond. Movable; a move copies the inline
// bytes.
class PermitNames {
 public:
  // Replaces the names. Strong guarantee: throws only std::bad_alloc.
  void assign(std::string_view user, std::string_view model) {
    const std::size_t total = user.size() + model.size();
    char* out = inline_.data();
    if (total > inline_.size()) {
      heap_ = std::make_unique<char[]>(total);
      out = heap_.get();
    } else {
      heap_.reset();
    }
    if (!user.empty()) std::memcpy(out, user.data(), user.size());
    if (!model.empty()) std::memcpy(out + user.size(), model.data(), model.size());
    user_size_ = user.size();
    model_size_ = model.size();
  }
  std::string_view user() const noexcept { return {data(), user_size_}; }
  std::string_view model() const noexcept { return {data() + user_size_, model_size_}; }

 private:
  const char* data() const noexcept { return heap_ ? heap_.get() : inline_.data(); }

  std::array<char, 48> inline_{};
  std::unique_ptr<char[]> heap_;
  std::size_t user_size_ = 0, model_size_ = 0;
};

// What a permit's owner needs to find its leases again.
struct PermitTicket {
  PermitId id;
  PermitNames names;
  LeaseLocation location = LeaseLocation::nowhere;
};

// The limiter side of a permit, behind a virtual interface so Permit stays a plain type. Counted by hand
// (intrusively): one reference for the limiter and one per permit holding leases, so the count minus one is
// the number of permits held, and a permit costs one atomic add and one subtract instead of a shared_ptr's
// count plus a separate held counter. The last drop() destroys the owner.
class PermitOwner {
 public:
  PermitOwner() = default;
  PermitOwner(const PermitOwner&) = delete;
  PermitOwner& operator=(const PermitOwner&) = delete;

  // Gives the leases back (the store is not asked when they are nowhere); a backend fault is swallowed (the
  // leases run out) and counted. Throws nothing.
  virtual void release(const PermitTicket& ticket) noexcept = 0;
  // Extends the leases (assumed, without the store, when none is confirmed). Throws what the storage throws
  // for a fault its failure policy does not absorb.
  virtual RenewStatus renew(const PermitTicket& ticket) = 0;
  // The holder lets go without releasing (the leases run out on their own): counted only. Throws nothing.
  virtual void abandon(const PermitTicket& ticket) noexcept = 0;

  // One more reference (a permit taking leases). Throws nothing.
  void hold() noexcept { references_.fetch_add(1, std::memory_order_relaxed); }
  // One reference fewer; the last destroys the owner. Throws nothing.
  void drop() noexcept {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  // References now (the limiter's included, while it lives). Throws nothing.
  std::uint64_t references() const noexcept { return references_.load(std::memory_order_relaxed); }

 protected:
  virtual ~PermitOwner() = default;

 private:
  std::atomic<std::uint64_t> references_{1};  // the creator's
};

}  // namespace detail

class Permit {
 public:
  // An empty permit: not acquired, holds nothing (e.g. a member to move an acquired permit into). Throws nothing.
  Permit() noexcept = default;

  // Move-only: exactly one permit releases a given set of leases. The moved-from permit holds nothing.
  // Thread safety: `other` may be renewed or released by another thread meanwhile (it takes other's lock);
  // this permit must not be in use elsewhere. Throws nothing.
  Permit(Permit&& other) noexcept {
    detail::Lock lock(other.mutex_);
    take(other);
  }

  // Releases what this permit holds, then takes `other`'s. Thread safety: as for the move constructor.
  // Throws nothing.
  Permit& operator=(Permit&& other) noexcept {
    if (this != &other) {
      Permit taken(std::move(other));
      {
        detail::Lock lock(mutex_);
        swap_state(taken);
      }
    }  // `taken` now holds what this permit held, and releases it
    return *this;
  }

  Permit(const Permit&) = delete;
  Permit& operator=(const Permit&) = delete;

  // Releases the leases if still held. Never throws: a backend fault is swallowed (and counted in the
  // limiter's metrics); the leases then run out on their own. No other thread may use the permit any more.
  ~Permit() {
    // By then no other thread uses the permit (see above), so the lock and `ending_` are not needed.
    if (!acquired_.load(std::memory_order_relaxed)) return;  // it holds nothing: owner_ is null
    acquired_.store(false, std::memory_order_relaxed);
    owner_->release(ticket_);
    std::exchange(owner_, nullptr)->drop();
  }

  // Whether this permit holds its caps now: true from a successful try_acquire() until release(), a lost
  // renew(), abandon() or a move out. Thread safety: safe, also while another thread renews or releases.
  // Throws nothing.
  bool acquired() const noexcept { return acquired_.load(std::memory_order_acquire); }
  explicit operator bool() const noexcept { return acquired(); }

  // Set when a failure policy decided without the store (Redis down): under fail_open the permit was
  // admitted holding no confirmed lease; under local it holds leases in the replica's own in-process store.
  // The accessors below read what try_acquire() set, which only a move changes: safe from any thread while
  // nobody moves the permit. They throw nothing.
  bool degraded() const noexcept { return degraded_; }

  // What try_acquire() decided: Status::allowed when acquired (degraded ones included); otherwise denied (a
  // cap was full), key_capacity (the in-memory store was full) or backend_unavailable (the store could not be
  // reached under FailurePolicy::fail_closed). <airl/http.hpp> answers a refused permit from it.
  Status status() const noexcept { return status_; }

  // Empty when acquired; otherwise the name of the first cap (in declared order) that was full, or
  // "key_capacity" / "backend_unavailable" when the store refused.
  const std::string& reason() const noexcept { return reason_; }
  // Index in the limiter's caps() of the cap named by reason() (0 when acquired).
  std::size_t denied_by() const noexcept { return denied_by_; }

  // 0 when acquired. On a denial, when the earliest live lease of the full cap's scope runs out: an upper
  // bound of the wait (holders usually release before their lease ends, and others may take the slot
  // first), Decision::never when that cap's max_in_flight is 0.
  std::chrono::milliseconds retry_after() const noexcept { return retry_after_; }

  // The permit's 128-bit id (the member written to Redis), for logs. Zero for a denied permit.
  const PermitId& id() const noexcept { return ticket_.id; }

  // Gives the leases back now; afterwards acquired() is false. Idempotent; does nothing for a denied or
  // moved-from permit. A degraded fail_open permit sends a best-effort release too (its acquisition may
  // have reached Redis after all). Thread safety: safe to call while another thread calls renew() or
  // release() on the same permit (one of them ends it; a release waits for a renew in progress). Never
  // throws (a backend fault is swallowed and counted: the leases run out on their own).
  void release() noexcept {
    ending_.store(true, std::memory_order_release);
    detail::Lock lock(mutex_);
    if (!acquired_.load(std::memory_order_relaxed)) return;
    acquired_.store(false, std::memory_order_release);
    if (owner_ != nullptr) {
      owner_->release(ticket_);
      std::exchange(owner_, nullptr)->drop();
    }
  }

  // Extends every lease to its cap's full lease from now, for a holder still working (a long stream).
  // Returns true when renewed (or, during an outage, when the failure policy assumes the leases hold; and
  // for a degraded fail_open permit, which holds no confirmed lease); false when a lease had already run
  // out or was gone, or the permit was released meanwhile (or a release has begun): the permit then holds
  // nothing (acquired() is false once that release returns) and the holder should stop, since its slot may
  // have gone to someone else. Thread safety: safe to call while another thread calls release() or renew()
  // on the same permit (e.g. a heartbeat thread).
  // Throws airl::BackendError when the store fails and its failure policy is fail_closed (the permit keeps
  // its state; its destructor still tries to release).
  bool renew() {
    if (ending_.load(std::memory_order_acquire)) return false;  // a release or abandon waits for the lock
    detail::Lock lock(mutex_);
    if (!acquired_.load(std::memory_order_relaxed)) return false;
    if (owner_->renew(ticket_) != RenewStatus::lost) return true;
    acquired_.store(false, std::memory_order_release);
    std::exchange(owner_, nullptr)->drop();
    return false;
  }

  // Lets go of the permit without releasing it: its leases keep counting until they run out, exactly as if
  // the holder had crashed. For tests and failure drills. Afterwards acquired() is false. Thread safety: as
  // release(). Throws nothing.
  void abandon() noexcept {
    ending_.store(true, std::memory_order_release);
    detail::Lock lock(mutex_);
    if (!acquired_.load(std::memory_order_relaxed)) return;
    acquired_.store(false, std::memory_order_release);
    if (owner_ != nullptr) {
      owner_->abandon(ticket_);
      std::exchange(owner_, nullptr)->drop();
    }
  }

 private:
  template <class Storage>
  friend class ConcurrencyLimiter;

  // Moves `other`'s state here, leaving it empty. Call with other's lock held (and this one unshared).
  void take(Permit& other) noexcept {
    owner_ = std::exchange(other.owner_, nullptr);
    ticket_ = std::move(other.ticket_);
    reason_ = std::move(other.reason_);
    retry_after_ = other.retry_after_;
    denied_by_ = other.denied_by_;
    acquired_.store(other.acquired_.exchange(false, std::memory_order_acq_rel), std::memory_order_relaxed);
    degraded_ = other.degraded_;
    status_ = other.status_;
    ending_.store(false, std::memory_order_relaxed);  // `other` may be ending (a release waiting for its lock)
  }

  void swap_state(Permit& other) noexcept {
    using std::swap;
    swap(owner_, other.owner_);
    swap(ticket_, other.ticket_);
    swap(reason_, other.reason_);
    swap(retry_after_, other.retry_after_);
    swap(denied_by_, other.denied_by_);
    const bool mine = acquired_.load(std::memory_order_relaxed);
    acquired_.store(other.acquired_.load(std::memory_order_relaxed), std::memory_order_release);
    other.acquired_.store(mine, std::memory_order_relaxed);
    swap(degraded_, other.degraded_);
    swap(status_, other.status_);
    const bool ending = ending_.load(std::memory_order_relaxed);
    ending_.store(other.ending_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    other.ending_.store(ending, std::memory_order_relaxed);
  }

  detail::ShardMutex mutex_;  // serialises release(), renew(), abandon() and moves
  detail::PermitOwner* owner_ = nullptr;  // one reference to it while acquired (none otherwise)
  detail::PermitTicket ticket_;
  std::string reason_;
  std::chrono::milliseconds retry_after_{0};
  std::size_t denied_by_ = 0;
  std::atomic<bool> acquired_{false};
  std::atomic<bool> ending_{false};  // a release() or abandon() has begun: renew() stops contending
  bool degraded_ = false;
  Status status_ = Status::denied;
};

}  // namespace airl
