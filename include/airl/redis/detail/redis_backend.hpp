// SPDX-License-Identifier: MIT
#pragma once
// What both Redis storages are made of: their options, the one command path running their script
// (script_client.hpp), their failure policy with its in-process store (fallback.hpp), and the members they
// answer alike. `Own` is a storage's own state (the rate storage's member seed, the caps' release queue).

#include <cstddef>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "../../detail/moved_from.hpp"
#include "../errors.hpp"
#include "../options.hpp"
#include "fallback.hpp"
#include "script_client.hpp"

namespace airl::detail {

template <class LocalStore, class Own>
class RedisBackend {
 public:
  // Movable. Every member of a moved-from storage throws std::logic_error naming it (besides what it lists);
  // destroying it or assigning to it works.
  RedisBackend(RedisBackend&&) noexcept = default;
  RedisBackend& operator=(RedisBackend&&) noexcept = default;

  // Redis drops expired keys itself (every key carries a TTL); this purges the in-process fallback and returns
  // how many keys went. Thread safety: safe. Throws std::logic_error when moved from.
  std::size_t purge_expired() {
    LocalStore* local = core("purge_expired").fallback.local();
    return local != nullptr ? local->purge_expired() : 0;
  }

  // Keys held in process: the local fallback's (Redis's own are counted by Redis: INFO keyspace).
  // Throws only std::logic_error (as healthy() and options()), when moved from.
  std::size_t active_keys() const {
    const LocalStore* local = core("active_keys").fallback.local();
    return local != nullptr ? local->active_keys() : 0;
  }

  // Whether the last round trip to Redis succeeded. Thread safety: safe.
  bool healthy() const { return core("healthy").client.healthy(); }

  // The last backend fault the storage met, whatever became of it (a degraded decision, a thrown error, a
  // release left for later): its type, its text and when; nothing before the first fault. It stays after
  // Redis recovers (healthy() says whether the last round trip succeeded). Thread safety: safe.
  std::optional<BackendFault> last_backend_error() const { return core("last_backend_error").client.last_fault(); }

  // The options it was made with.
  const RedisOptions& options() const { return core("options").options; }

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

  // The storage's parts, which every public member reaches first through core(its name): a moved-from storage
  // has none and throws std::logic_error naming the member (detail/moved_from.hpp). Private helpers, reached
  // only after that, leave `member` out.
  Core& core(const char* member = "(internal)") const { return live_state(core_.get(), owner_, member); }

 private:
  const char* owner_;
  std::unique_ptr<Core> core_;
};

}  // namespace airl::detail
