// SPDX-License-Identifier: MIT
// Plans and overrides: users on free / pro / enterprise plans get different limits on the same tiers, one
// customer gets an override, and an operator lowers a model's limit at runtime without losing what was
// recorded. The resolver maps a user to a plan (a serving binary would look it up from the API key).
// Exits 0 only when the numbers are what this file says (it runs as a CTest test).

#include <airl/airl.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

using namespace std::chrono_literals;

namespace {

int admitted_in_a_row(airl::MultiTierRateLimiter& limiter, std::string_view user, std::string_view model) {
  int admitted = 0;
  while (admitted < 100 && limiter.allow(user, model)) ++admitted;
  return admitted;
}

}  // namespace

int main() {
  airl::MultiTierRateLimiter limiter({
      {"rpm", airl::Scope::user_model, {3, 1min}, airl::Unit::requests},  // the free tier's limits
      {"model-rpm", airl::Scope::model, {1'000, 1min}, airl::Unit::requests},
  });
  limiter.set_plan("pro", {{"rpm", 10}});
  limiter.set_plan("enterprise", {{"rpm", 50}});
  limiter.set_plan_resolver([](std::string_view user) -> std::string {
    if (user.starts_with("ent-")) return "enterprise";
    if (user.starts_with("pro-")) return "pro";
    return "";  // no plan: the tiers' own limits
  });
  limiter.set_override({.tier = "rpm", .user = "pro-bigco", .model = "llama-3-70b"}, 25);

  const int free_user = admitted_in_a_row(limiter, "someone", "llama-3-70b");
  const int pro_user = admitted_in_a_row(limiter, "pro-alice", "llama-3-70b");
  const int enterprise_user = admitted_in_a_row(limiter, "ent-carol", "llama-3-70b");
  const int overridden = admitted_in_a_row(limiter, "pro-bigco", "llama-3-70b");
  std::printf("admitted per minute: free %d, pro %d, enterprise %d, pro-bigco (override) %d\n", free_user, pro_user,
              enterprise_user, overridden);

  // An operator lowers the model's limit below what it already admitted: the next request is denied, and the
  // 88 requests recorded still count.
  limiter.set_quota("model-rpm", {80, 1min});
  const airl::Decision after = limiter.allow("ent-dave", "llama-3-70b");
  std::printf("after lowering model-rpm to 80: %s (%s), %llu recorded\n", after ? "admitted" : "denied",
              after.reason.c_str(), static_cast<unsigned long long>(limiter.usage("model-rpm", "x", "llama-3-70b")));

  // The limits in force for one user, as <airl/http.hpp> should advertise them.
  for (const airl::Tier& tier : limiter.tiers_for("pro-alice", "llama-3-70b")) {
    std::printf("pro-alice: %s = %llu per minute\n", tier.name.c_str(), static_cast<unsigned long long>(tier.quota.limit));
  }

  const bool as_documented = free_user == 3 && pro_user == 10 && enterprise_user == 50 && overridden == 25 &&
                             !after && after.reason == "model-rpm" &&
                             limiter.usage("model-rpm", "x", "llama-3-70b") == 88;
  return as_documented ? 0 : 1;
}
