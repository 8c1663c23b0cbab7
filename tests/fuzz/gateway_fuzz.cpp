// SPDX-License-Identifier: MIT
// Fuzz target: what examples/gateway reads from outside, the first input byte choosing which:
//   chat request (chat_request.hpp)   any body: a ChatRequest or a ParseError, nothing else. A request it
//       accepts names a model of 1..max_model_length bytes, asks 1..max_tokens_cap tokens, estimates at most a
//       few tokens per body byte, and makes what the gateway charges (prompt + max tokens, a valid
//       airl::Request) and replies (completion and stream chunks, JSON that parses back to the model);
//   config file (gateway_config.hpp)   any text: a Config or std::invalid_argument naming the file. A config
//       it accepts starts a gateway: its limits build (as main's make_limits does, in memory), each key's user
//       is admitted or refused by a tier or cap (never a std::invalid_argument for a request the gateway
//       makes), and GET /v1/models' body serialises;
//   command line (flags.hpp)           any arguments: Flags or std::invalid_argument; ports in range and apart.

#include <airl/airl.hpp>
#include <airl/redis/options.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "chat_request.hpp"
#include "flags.hpp"
#include "gateway_config.hpp"
#include "gateway_limits.hpp"
#include "openai_wire.hpp"

#include "fuzz_support.hpp"

namespace {

using airl::fuzz::check;

void chat_request(airl::fuzz::Bytes& in) {
  gateway::ChatLimits limits;
  if (in.flag()) {  // the config's max_tokens, default_max_tokens and the model name bound
    limits.max_tokens_cap = in.number(2) + 1;
    limits.default_max_tokens = std::min<std::uint64_t>(limits.max_tokens_cap, in.number(2) + 1);
  }
  const std::string_view body = in.rest();
  gateway::ChatRequest chat;
  try {
    chat = gateway::parse_chat_request(body, limits);
  } catch (const gateway::ParseError&) {
    return;
  }
  check(!chat.model.empty() && chat.model.size() <= limits.max_model_length, "the model is 1..max_model_length bytes");
  check(airl::fuzz::valid_utf8(chat.model), "the model is valid UTF-8 (it came from JSON)");
  check(chat.max_tokens >= 1 && chat.max_tokens <= limits.max_tokens_cap, "max tokens in 1..max_tokens_cap");
  check(chat.prompt_tokens >= 3 && chat.prompt_tokens <= 2 * body.size() + 4, "the prompt estimate is bounded by the body");
  check(nlohmann::json::accept(body), "an accepted body is JSON");

  // What the gateway charges: a request airl takes (no std::invalid_argument for a body it accepted).
  const std::uint64_t cost = chat.prompt_tokens + chat.max_tokens;
  check(cost > chat.prompt_tokens, "the charge does not wrap");
  airl::detail::validate_request("alice", chat.model, cost, "gw-id-1");

  // What it replies: JSON that serialises and parses back to the model.
  const gateway::ReplyHeader reply{"chatcmpl-1", chat.model};
  const std::uint64_t produced = std::min<std::uint64_t>(chat.max_tokens, 16);
  const std::string completion =
      gateway::completion_json(reply, "hi", gateway::finish_reason(produced, chat.max_tokens), chat.prompt_tokens, produced).dump();
  check(nlohmann::json::parse(completion)["model"] == chat.model, "the completion names the model");
  const std::string chunk = gateway::sse_event(gateway::usage_chunk_json(reply, chat.prompt_tokens, produced));
  check(chunk.starts_with("data: ") && chunk.ends_with("\n\n") && chunk.find('\n') == chunk.size() - 2,
        "a stream event is one data line");
}

void config_file(airl::fuzz::Bytes& in) {
  const std::string_view text = in.rest();
  gateway::Config config;
  try {
    config = gateway::parse_config(text, "fuzz.conf");
  } catch (const std::invalid_argument& error) {
    check(std::string_view(error.what()).starts_with("fuzz.conf"), "a config error names the file");
    return;
  }
  check(!config.models.empty() && !config.keys.empty(), "a config serves models to keys");
  check(config.chat.default_max_tokens <= config.chat.max_tokens_cap, "default_max_tokens <= max_tokens");

  // GET /v1/models.
  const nlohmann::json models = nlohmann::json::parse(gateway::model_list_json(config.models).dump());
  check(models["data"].size() == config.models.size(), "GET /v1/models lists every model");

  // The gateway starts: main's make_limits, in memory. Nothing may throw here.
  using Memory = gateway::BackendLimits<airl::InMemoryStorage<>, airl::InMemoryConcurrencyStorage<>>;
  Memory limits(config, airl::InMemoryStorage<>{}, airl::InMemoryConcurrencyStorage<>{}, "memory");
  int tried = 0;
  for (const auto& [key, owner] : config.keys) {
    if (++tried > 3) break;
    for (const std::string& model : {config.models.front(), config.models.back()}) {
      // A completion of the largest size the config lets a request ask for, and a sidecar check of 1.
      const std::string id = "id-" + std::to_string(tried);
      const airl::Request request{owner.user, model, 4 + config.chat.max_tokens_cap, id, owner.plan};
      gateway::Admission admission = limits.admit(request, /*hold_slot=*/true);
      if (admission.admitted) {
        limits.settle(owner.user, model, id, 1);
        (void)limits.refund(owner.user, model, id);
      }
      (void)limits.tiers_for(owner.user, model, owner.plan);
    }
  }
  const std::string metrics = limits.metrics_text();
  check(!metrics.empty(), "the limits' metrics text");
}

void command_line(airl::fuzz::Bytes& in) {
  std::vector<std::string> words = {"airl_gateway"};
  const std::string_view rest = in.rest();
  for (std::size_t at = 0; at <= rest.size() && words.size() < 24;) {
    const std::size_t end = std::min(rest.find('\0', at), rest.size());
    words.emplace_back(rest.substr(at, end - at));
    at = end + 1;
  }
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);
  gateway::Flags flags;
  try {
    flags = gateway::parse_flags(static_cast<int>(words.size()), argv.data());
  } catch (const std::invalid_argument&) {
    return;
  }
  check(!flags.config_path.empty(), "--config is required");
  check(flags.port >= 1 && flags.port <= 65535 && flags.admin_port >= 1 && flags.admin_port <= 65535 &&
            flags.port != flags.admin_port,
        "ports in 1..65535 and apart");
  if (flags.redis) {
    check(flags.redis->port >= 1 && flags.redis->port <= 65535, "the Redis port");
    try {
      airl::detail::validate_redis_options(*flags.redis);  // what the storages' constructors check at start
    } catch (const std::invalid_argument&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  airl::fuzz::Bytes in(data, size);
  switch (in.byte() % 3) {
    case 0: chat_request(in); break;
    case 1: config_file(in); break;
    default: command_line(in); break;
  }
  return 0;
}
