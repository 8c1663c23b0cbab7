// SPDX-License-Identifier: MIT
// RedisOptions helpers (no server needed): reading "host:port" as given on a command line.
#include <catch2/catch.hpp>

#include <airl/redis/options.hpp>

#include <stdexcept>

TEST_CASE("a Redis address sets host and port and keeps what it does not name", "[redis_options]") {
  const airl::RedisOptions both = airl::redis_options_from_address("10.0.0.7:6380");
  CHECK(both.host == "10.0.0.7");
  CHECK(both.port == 6380);
  const airl::RedisOptions host_only = airl::redis_options_from_address("cache.internal");
  CHECK(host_only.host == "cache.internal");
  CHECK(host_only.port == 6379);
  airl::RedisOptions base;
  base.host = "redis";
  base.key_prefix = "svc";
  const airl::RedisOptions port_only = airl::redis_options_from_address(":7000", base);
  CHECK(port_only.host == "redis");
  CHECK(port_only.port == 7000);
  CHECK(port_only.key_prefix == "svc");
  CHECK(airl::redis_options_from_address("").port == 6379);
}

TEST_CASE("a Redis address with a bad port is refused", "[redis_options]") {
  for (const char* bad : {"h:", "h:0", "h:65536", "h:-1", "h:63x", "h:99999999999"}) {
    INFO(bad);
    CHECK_THROWS_AS(airl::redis_options_from_address(bad), std::invalid_argument);
  }
}
