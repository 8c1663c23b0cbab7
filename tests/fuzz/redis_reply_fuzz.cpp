// SPDX-License-Identifier: MIT
// Fuzz target: any Redis reply (RESP of every type and nesting: nil, errors, integers, empty and truncated
// arrays, wrong counts, huge numbers) turned into a result by the Redis storages. Two modes, by the first byte:
//   decode  the bytes go through hiredis's own reader (redisReaderFeed / redisReaderGetReply), and every reply
//           it builds goes through each pure decoder: check_reply (error replies to typed errors), the rate and
//           caps scripts' acquire replies, CLUSTER SLOTS and the "host:port" of redirects and Sentinels;
//   serve   a fake Redis on a unix socket answers the handshake (AUTH, SELECT, SCRIPT LOAD, ROLE) itself and each
//           other command with the next reply taken from the input, then ends the connection (so a truncated
//           reply ends in EOF). A MultiTierLimiter<RedisStorage> and a ConcurrencyLimiter<RedisConcurrencyStorage>
//           under a failure policy from the input run allow, settle, refund, usage, reset, try_acquire, renew,
//           release and in_flight against it; each Decision and Permit then makes its HTTP answer.
// A result, airl::BackendError (or a degraded decision where a failure policy decides), or what a call
// documents (std::invalid_argument for a settle the script refused, PermitIdInUse) are the only outcomes: any
// other exception, crash or undefined behaviour is a finding. Inputs declaring an array or string longer than
// 100000 are skipped: hiredis 0.14 allocates what a header declares before reading it (a cost of hiredis's,
// the same for every client; not what this target looks at).

#include <airl/concurrency_limiter.hpp>
#include <airl/http.hpp>
#include <airl/multi_tier_limiter.hpp>
#include <airl/redis.hpp>
#include <airl/redis/detail/connection.hpp>
#include <airl/redis/detail/topology.hpp>

#include <hiredis/hiredis.h>

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "fuzz_support.hpp"

namespace airl::detail {

// The storages' private reply decoders, reached by the friend declaration each class makes for this struct.
struct ReplyDecoderAccess {
  static int rate_acquire(const redisReply& reply, std::size_t n, std::vector<WindowVerdict>& verdicts) {
    RedisStorage::Part part;
    for (std::size_t i = 0; i < n; ++i) part.charges.push_back(i);
    return RedisStorage::parse_acquire_reply(reply, part, verdicts);
  }
  static ConcurrencyResult caps_acquire(const redisReply& reply, std::size_t n, long long& verdict) {
    return RedisConcurrencyStorage::parse_acquire_reply(reply, n, verdict);
  }
  static auto cluster_slots(const redisReply& reply) { return Topology::parse_slots(reply, "asked.host"); }
};

}  // namespace airl::detail

namespace {

using airl::fuzz::check;
using namespace std::chrono_literals;

// Whether `bytes` declare no array or string longer than 100000 (see the top).
bool modest(std::string_view bytes) {
  for (std::size_t at = 0; at < bytes.size(); ++at) {
    if (bytes[at] != '*' && bytes[at] != '$') continue;
    std::uint64_t value = 0;
    for (std::size_t d = at + 1; d < bytes.size() && bytes[d] >= '0' && bytes[d] <= '9'; ++d) {
      value = value * 10 + static_cast<std::uint64_t>(bytes[d] - '0');
      if (value > 100'000) return false;
    }
  }
  return true;
}

// --- decode: hiredis's reader, then every decoder ---

void decode_one(const redisReply& reply, airl::fuzz::Bytes& in) {
  try {
    airl::detail::RedisConnection::check_reply(reply, "fuzz");
    check(reply.type != REDIS_REPLY_ERROR, "check_reply throws for every error reply");
  } catch (const airl::BackendError&) {
    check(reply.type == REDIS_REPLY_ERROR, "check_reply throws only for error replies");
  }

  if (reply.type == REDIS_REPLY_STRING || reply.type == REDIS_REPLY_STATUS || reply.type == REDIS_REPLY_ERROR) {
    try {
      const airl::detail::Endpoint endpoint =
          airl::detail::Topology::parse_endpoint(airl::detail::reply_text(reply), "fallback.host");
      check(endpoint.port >= 1 && endpoint.port <= 65535, "an endpoint's port is in 1..65535");
    } catch (const airl::BackendError&) {
    }
  }

  try {
    for (const auto& [range, endpoint] : airl::detail::ReplyDecoderAccess::cluster_slots(reply)) {
      check(range[0] >= 0 && range[0] <= range[1] && range[1] < static_cast<long long>(airl::detail::cluster_slots),
            "a slot range within 0..16383");
      check(!endpoint.host.empty() && endpoint.port >= 1 && endpoint.port <= 65535, "a master's host and port");
    }
  } catch (const airl::BackendError&) {
  }

  // The rate script's answer for n charges: n as the reply's size says (the well-formed case) or the input's.
  const std::uint8_t choice = in.byte();
  const std::size_t n = (choice & 0x80u) != 0 || reply.type != REDIS_REPLY_ARRAY || reply.elements == 0
                            ? choice % 5u + 1
                            : std::max<std::size_t>(1, (reply.elements - 1) / 4);
  try {
    std::vector<airl::detail::WindowVerdict> verdicts(n);
    const int status = airl::detail::ReplyDecoderAccess::rate_acquire(reply, n, verdicts);
    check(status >= 0 && status <= 2, "an acquire status is 0, 1 or 2");
    for (const airl::detail::WindowVerdict& verdict : verdicts) {
      check(verdict.retry_after >= 0 && verdict.reset_after >= 0, "no negative duration comes out");
      check(verdict.remaining <= airl::max_exact_count, "no count above 2^53 comes out");
    }
  } catch (const airl::BackendError&) {
  }

  try {
    long long verdict = 99;
    const airl::ConcurrencyResult result = airl::detail::ReplyDecoderAccess::caps_acquire(reply, n, verdict);
    check(verdict >= -1 && verdict <= 1, "a caps verdict is -1, 0 or 1");
    if (verdict == 0) check(result.denied_by < n && result.retry_after >= 0ms, "a denial names one of the slots");
  } catch (const airl::BackendError&) {
  }
}

void decode(airl::fuzz::Bytes& in) {
  std::vector<std::uint8_t> choices_bytes(4);  // how each reply is read (see decode_one)
  for (std::uint8_t& choice : choices_bytes) choice = in.byte();
  airl::fuzz::Bytes choices(choices_bytes.data(), choices_bytes.size());
  const std::string_view bytes = in.rest();
  if (!modest(bytes)) return;
  std::unique_ptr<redisReader, decltype(&redisReaderFree)> reader(redisReaderCreate(), &redisReaderFree);
  check(reader != nullptr, "a reader");
  redisReaderFeed(reader.get(), bytes.data(), bytes.size());
  for (int replies = 0; replies < 4; ++replies) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader.get(), &raw) != REDIS_OK || raw == nullptr) return;
    const airl::detail::Reply reply(static_cast<redisReply*>(raw));
    decode_one(*reply, choices);
  }
}

// --- serve: a fake Redis answering with the input's replies ---

class FakeRedis {
 public:
  static FakeRedis& instance() {
    static FakeRedis server;
    return server;
  }

  const std::string& path() const { return path_; }

  // The replies to hand out, one per command the handshake does not answer.
  void load(std::vector<std::string> replies) {
    std::lock_guard lock(mutex_);
    replies_.assign(replies.begin(), replies.end());
  }

 private:
  FakeRedis() : path_("/tmp/airl-reply-fuzz-" + std::to_string(::getpid()) + ".sock") {
    ::unlink(path_.c_str());
    listener_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path_.c_str(), sizeof address.sun_path - 1);
    check(listener_ >= 0 && ::bind(listener_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0 &&
              ::listen(listener_, 64) == 0,
          "the fake Redis listens");
    std::thread([this] { serve(); }).detach();  // for the life of the process
  }

  ~FakeRedis() { ::unlink(path_.c_str()); }  // at exit; the serving thread stays blocked in accept()

  std::optional<std::string> next_reply() {
    std::lock_guard lock(mutex_);
    if (replies_.empty()) return std::nullopt;
    std::string reply = std::move(replies_.front());
    replies_.pop_front();
    return reply;
  }

  void serve() {
    for (;;) {
      const int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) continue;
      const timeval limit{0, 500'000};  // a client that sends nothing more does not hold the server
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
      handle(fd);
      ::close(fd);
    }
  }

  // Answers the handshake's commands; the first other command gets the next reply, and the connection ends.
  void handle(int fd) {
    std::string buffer;
    for (;;) {
      std::vector<std::string> words;
      if (!read_command(fd, buffer, words) || words.empty()) return;
      std::string name = words[0];
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
      if (name == "AUTH" || name == "SELECT" || name == "ASKING") {
        send_all(fd, "+OK\r\n");
      } else if (name == "SCRIPT") {
        send_all(fd, "$40\r\n" + std::string(40, 'a') + "\r\n");
      } else if (name == "ROLE") {
        send_all(fd, "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");
      } else {
        if (const std::optional<std::string> reply = next_reply()) send_all(fd, *reply);
        return;
      }
    }
  }

  static void send_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent <= 0) return;
      bytes.remove_prefix(static_cast<std::size_t>(sent));
    }
  }

  // One command as clients send it: *<n>\r\n then n times $<len>\r\n<bytes>\r\n.
  static bool read_command(int fd, std::string& buffer, std::vector<std::string>& words) {
    std::size_t at = 0;
    const auto line = [&](std::string& out) {
      for (;;) {
        const std::size_t end = buffer.find("\r\n", at);
        if (end != std::string::npos) {
          out = buffer.substr(at, end - at);
          at = end + 2;
          return true;
        }
        if (!fill(fd, buffer)) return false;
      }
    };
    std::string header;
    if (!line(header) || header.size() < 2 || header[0] != '*') return false;
    const long count = std::strtol(header.c_str() + 1, nullptr, 10);
    for (long i = 0; i < count; ++i) {
      std::string length_line;
      if (!line(length_line) || length_line.size() < 2 || length_line[0] != '$') return false;
      const auto length = static_cast<std::size_t>(std::strtoul(length_line.c_str() + 1, nullptr, 10));
      while (buffer.size() < at + length + 2) {
        if (!fill(fd, buffer)) return false;
      }
      words.push_back(buffer.substr(at, length));
      at += length + 2;
    }
    buffer.erase(0, at);
    return true;
  }

  static bool fill(int fd, std::string& buffer) {
    char chunk[4096];
    const ssize_t got = ::recv(fd, chunk, sizeof chunk, 0);
    if (got <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(got));
    return true;
  }

  std::string path_;
  int listener_ = -1;
  std::mutex mutex_;
  std::deque<std::string> replies_;
};

const std::vector<airl::Tier> tiers = {{"rpm", airl::Scope::user_model, {5, 60s}, airl::Unit::requests},
                                       {"tpm", airl::Scope::user, {1000, 60s}, airl::Unit::cost}};
const std::vector<airl::ConcurrencyCap> caps = {{"in_flight", airl::Scope::user, 2, 60s},
                                                {"model_in_flight", airl::Scope::model, 3, 60s}};

void check_decision(const airl::Decision& decision, airl::FailurePolicy policy) {
  check(decision.binding_tier < tiers.size(), "the binding tier is a tier");
  if (decision.degraded && policy == airl::FailurePolicy::fail_open) check(decision.allowed, "fail_open admits");
  if (decision.degraded && policy == airl::FailurePolicy::fail_closed) {
    check(!decision.allowed && decision.status == airl::Status::backend_unavailable, "fail_closed refuses with 503");
  }
  if (!decision.degraded) check(decision.status != airl::Status::backend_unavailable, "only a failure policy says 503");
  (void)airl::http::response_headers(decision, tiers);
  if (!decision.allowed) {
    (void)airl::http::openai_error_json(decision, tiers);
    (void)airl::http::problem_json(decision);
  }
}

void check_permit(const airl::Permit& permit, airl::FailurePolicy policy) {
  if (permit.degraded() && policy == airl::FailurePolicy::fail_open) check(permit.acquired(), "fail_open admits");
  if (permit.degraded() && policy == airl::FailurePolicy::fail_closed) {
    check(!permit.acquired() && permit.status() == airl::Status::backend_unavailable, "fail_closed refuses with 503");
  }
  if (!permit.acquired()) {
    check(permit.status() != airl::Status::allowed, "a refused permit says why");
    if (permit.status() == airl::Status::denied) check(permit.denied_by() < caps.size(), "it names one of the caps");
    (void)airl::http::response_headers(permit);
    (void)airl::http::problem_json(permit);
  }
}

void serve(airl::fuzz::Bytes& in) {
  static constexpr airl::FailurePolicy policies[] = {airl::FailurePolicy::fail_open, airl::FailurePolicy::fail_closed,
                                                     airl::FailurePolicy::local};
  const airl::FailurePolicy policy = policies[in.byte() % 3];
  std::vector<std::uint8_t> operations(in.byte() % 4 + 1);
  for (std::uint8_t& operation : operations) operation = in.byte();
  std::vector<std::string> replies;
  while (!in.empty() && replies.size() < 8) {
    std::string reply(static_cast<std::size_t>(in.number(2) % 2048), '\0');
    for (char& c : reply) c = static_cast<char>(in.byte());
    if (!modest(reply)) return;
    // Redirects name other servers, which the storage would then dial: that is the Cluster's business, not
    // this target's (the decode mode reads their "host:port").
    if (reply.starts_with("-MOVED") || reply.starts_with("-ASK")) return;
    replies.push_back(std::move(reply));
  }
  FakeRedis& server = FakeRedis::instance();
  server.load(replies);

  airl::RedisOptions options;
  options.unix_socket = server.path();
  options.pool_size = 1;
  options.connect_timeout = 500ms;
  options.command_timeout = 500ms;
  options.key_prefix = "fuzz";
  options.on_failure = policy;
  airl::MultiTierLimiter<airl::RedisStorage> rates(tiers, airl::RedisStorage(options));
  airl::ConcurrencyLimiter<airl::RedisConcurrencyStorage> slots(caps, airl::RedisConcurrencyStorage(options));
  std::vector<airl::Permit> permits;

  for (const std::uint8_t operation : operations) {
    const std::string id = "req-" + std::to_string(operation % 3);
    try {
      switch (operation % 9) {
        case 0: check_decision(rates.allow({"alice", "llama", 40, id}), policy); break;
        case 1: check_decision(rates.allow({"alice", "llama", 1}), policy); break;
        case 2:
          try {
            (void)rates.settle("alice", "llama", id, operation);
          } catch (const std::invalid_argument&) {  // the script's answer that the cost would not fit
          }
          break;
        case 3: (void)rates.refund("alice", "llama", id); break;
        case 4: (void)rates.usage("tpm", "alice", "llama"); break;
        case 5: rates.reset("alice"); break;
        case 6:
          permits.push_back(slots.try_acquire("alice", "llama"));
          check_permit(permits.back(), policy);
          break;
        case 7:
          for (airl::Permit& permit : permits) {
            try {
              (void)permit.renew();
            } catch (const airl::BackendError&) {
              check(policy == airl::FailurePolicy::fail_closed, "renew throws only under fail_closed");
            }
          }
          break;
        default: (void)slots.in_flight("in_flight", "alice", "llama"); break;
      }
    } catch (const airl::BackendError&) {
      // settle, refund, usage, reset and in_flight have no failure policy: the fault is theirs to throw.
      check(operation % 9 >= 2 && operation % 9 != 6 && operation % 9 != 7, "allow and try_acquire never throw");
    } catch (const airl::PermitIdInUse&) {
      check(operation % 9 == 6, "only try_acquire meets an id in use");
    }
  }
  permits.clear();  // releases (never throw)
  server.load({});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  airl::fuzz::Bytes in(data, size);
  if (in.byte() % 4 == 0) {
    serve(in);
  } else {
    decode(in);
  }
  return 0;
}
