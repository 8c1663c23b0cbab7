// SPDX-License-Identifier: MIT
// Fuzz target: the Redis address parsers of <airl/redis/options.hpp>, as a command line hands them text:
//   redis_options_from_address  "host:port", "host" or ":port": a host parse_node would accept too (the two
//                               read one address alike), a port in 1..65535; host:port written back parses
//                               to the same options
//   redis_node_list             "host:port,...": entries without blanks, each one a node parse_node accepts;
//                               the list joined back with ',' parses to the same list
//   detail::parse_node          a host of name characters, a port in 1..65535; host:port written back
//                               parses to the same node
//   detail::validate_redis_options with those nodes as cluster or Sentinel seeds
// Anything refused must be refused with std::invalid_argument, nothing else.

#include <airl/redis/options.hpp>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"

namespace {

using airl::fuzz::check;

bool name_like(std::string_view host) {
  if (host.empty()) return false;
  for (const char c : host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '-' || c == '_' || c == ':';
    if (!ok) return false;
  }
  return true;
}

void node(std::string_view text) {
  airl::detail::NodeAddress address;
  try {
    address = airl::detail::parse_node(text, "node");
  } catch (const std::invalid_argument&) {
    return;
  }
  check(name_like(address.host), "a node's host is a name or an address");
  check(address.port >= 1 && address.port <= 65535, "a node's port is in 1..65535");
  const std::string_view port = text.substr(text.rfind(':') + 1);
  check(!port.empty() && port.find_first_not_of("0123456789") == std::string_view::npos, "the port is the digits after the last ':'");
  const airl::detail::NodeAddress again = airl::detail::parse_node(address.host + ":" + std::to_string(address.port), "node");
  check(again.host == address.host && again.port == address.port, "host:port written back parses to the same node");
}

void address(std::string_view text, airl::fuzz::Bytes& in) {
  airl::RedisOptions base;
  base.host = "base.host";
  base.port = static_cast<int>(in.number(2) % 65535 + 1);
  airl::RedisOptions options;
  try {
    options = airl::redis_options_from_address(text, base);
  } catch (const std::invalid_argument&) {
    return;
  }
  check(options.port >= 1 && options.port <= 65535, "an address's port is in 1..65535");
  check(name_like(options.host), "an address's host is a name or an address, as parse_node requires");
  if (text.find(':') != std::string_view::npos && !text.starts_with(':')) {
    // host:port: the same host and port as parse_node reads from it.
    const airl::detail::NodeAddress node = airl::detail::parse_node(text, "address");
    check(node.host == options.host && node.port == options.port, "an address and a node read host:port alike");
  }
  const airl::RedisOptions again = airl::redis_options_from_address(options.host + ":" + std::to_string(options.port));
  check(again.host == options.host && again.port == options.port, "host:port written back parses to the same options");
  check(options.key_prefix == base.key_prefix && options.database == base.database, "what the address does not name is kept");
}

void node_list(std::string_view text, airl::fuzz::Bytes& in) {
  std::vector<std::string> nodes;
  try {
    nodes = airl::redis_node_list(text);
  } catch (const std::invalid_argument&) {
    return;
  }
  check(!nodes.empty(), "a node list is never empty");
  std::string joined;
  for (const std::string& entry : nodes) {
    check(entry.find(',') == std::string::npos, "an entry holds no ','");
    check(!entry.starts_with(' ') && !entry.ends_with(' ') && !entry.starts_with('\t') && !entry.ends_with('\t'),
          "blanks around an entry are dropped");
    airl::detail::parse_node(entry, "node");  // throws (a finding: not invalid_argument-caught here) if not a node
    if (!joined.empty()) joined += ',';
    joined += entry;
  }
  check(airl::redis_node_list(joined) == nodes, "the list joined back parses to the same list");
  // As a Redis Cluster's or Sentinel's seeds, the options are accepted.
  airl::RedisOptions options;
  if (in.flag()) {
    options.cluster_nodes = nodes;
  } else {
    options.sentinel_nodes = nodes;
    options.sentinel_master = "m";
  }
  airl::detail::validate_redis_options(options);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  airl::fuzz::Bytes in(data, size);
  const std::uint8_t mode = in.byte();
  const std::string text = in.text(255);
  switch (mode % 3) {
    case 0: address(text, in); break;
    case 1: node_list(text, in); break;
    default: node(text); break;
  }
  return 0;
}
