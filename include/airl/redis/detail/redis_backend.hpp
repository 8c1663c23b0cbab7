// SPDX-License-Identifier: MIT
#pragma once
// What both Redis storages are made of: their options, the one command path running their script
// (script_client.hpp), their failure policy with its in-process store (fallback.hpp), and the members they
// answer alike. `Own` is a storage's own state (the rate storage's member seed, the caps' release queue).

#include <cstddef>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "../options.hpp"
#include "fallback.hpp"
#include "script_client.hpp"

namespace airl::detail {

template <class LocalStore, class Own>
class RedisBackend {
 public:
  RedisBackend(RedisBackend&&) noexcept = default;
  RedisBackend& operator=(RedisBackend&&) noexcept = default;

  // Redis drops expired keys itself (every key carries a TTL); this purges the in-process fallback and returns
  // how many keys went. Thread safety: safe. Throws std::logic_error when moved from.
  std::size_t purge_expired() {
    LocalStore* local = core().fallback.local();
    return local != nullptr ? local->purge_expired() : 0;
  }

  // Keys held in process: the local fallback's (Redis's own are counted by Redis: INFO keyspace). Throws nothing.
  std::size_t active_keys() const noexcept {
    return core_ && core_->fallback.local() != nullptr ? core_->fallback.local()->active_keys() : 0;
  }

  // Whether the last round trip to Redis succeeded. Thread safety: safe. Throws nothing.
  bool healthy() const noexcept { return core_ && core_->client.healthy(); }

  // The options it was made with. Requires a storage not moved from. Throws nothing.
  const RedisOptions& options() const noexcept { return core_->options; }

 protected:
  // A window or lease as the scripts take it: microseconds (Redis TIME's unit).
  static std::int64_t micros(std::chrono::milliseconds duration) noexcept {
    return std::chrono::duration_cast<std::chrono::microseconds>(duration).count();
  }

  struct Core : Own {
    Core(RedisOptions opts, std::string_view script, std::string_view script_name)
        : options(std::move(opts)), client(options, script, script_name), fallback(options.on_failure) {}
    RedisOptions options;
    ScriptClient client;
    Fallback<LocalStore> fallback;
  };

  // Connects lazily: does not fail when Redis is down. Throws std::invalid_argument on bad options.
  RedisBackend(RedisOptions options, std::string_view script, std::string_view script_name, const char* owner)
      : owner_(owner) {
    validate_redis_options(options);
    core_ = std::make_unique<Core>(std::move(options), script, script_name);
  }

  // Whether the storage has its parts (a moved-from one has none). Throws nothing.
  bool usable() const noexcept { return core_ != nullptr; }

  // The storage's parts. Throws std::logic_error on a moved-from storage (a caller mistake).
  Core& core() const {
    if (!core_) throw std::logic_error(std::string(owner_) + ": used after being moved from");
    return *core_;
  }

 private:
  const char* owner_;
  std::unique_ptr<Core> core_;
};

}  // namespace airl::detail
