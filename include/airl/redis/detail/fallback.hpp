// SPDX-License-Identifier: MIT
#pragma once
// What a Redis storage does when Redis fails (RedisOptions::on_failure) to decide a request or a permit,
// written once for both stacks; each storage only says what its answers look like. Every such answer is
// degraded (docs/REDIS.md, "Failure policies", which also gives settle, refund and renew):
//   fail_open    admit: a rate decision as if the buckets were empty, a permit holding no confirmed lease
//   fail_closed  refuse with Status::backend_unavailable and a short retry hint; never an exception
//   local        decide with the in-process store of the same kind (the same quotas or caps) until Redis is back

#include <memory>

#include "../options.hpp"

namespace airl::detail {

template <class LocalStore>
class Fallback {
 public:
  explicit Fallback(FailurePolicy policy)
      : policy_(policy), local_(policy == FailurePolicy::local ? std::make_unique<LocalStore>() : nullptr) {}

  FailurePolicy policy() const noexcept { return policy_; }
  // The in-process store: only under FailurePolicy::local, else nullptr.
  LocalStore* local() const noexcept { return local_.get(); }

  // The answer of the policy: open(), closed() or locally(local store). Throws what they throw.
  template <class Open, class Closed, class Locally>
  auto decide(Open&& open, Closed&& closed, Locally&& locally) const {
    switch (policy_) {
      case FailurePolicy::fail_closed: return closed();
      case FailurePolicy::local: return locally(*local_);
      case FailurePolicy::fail_open: break;
    }
    return open();
  }

 private:
  FailurePolicy policy_;
  std::unique_ptr<LocalStore> local_;
};

}  // namespace airl::detail
