// SPDX-License-Identifier: MIT
#pragma once
// The gateway's replies as OpenAI's API writes them, so OpenAI's SDKs read them as they read OpenAI's:
// chat.completion objects, the chat.completion.chunk stream (a first chunk with the assistant role, one per
// token, one with the finish reason, then the usage when stream_options.include_usage asks), and the model
// list of GET /v1/models.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

namespace gateway {

// One reply being written: what every object of it repeats.
struct ReplyHeader {
  std::string id;      // "chatcmpl-..."
  std::string model;
  std::int64_t created = static_cast<std::int64_t>(std::time(nullptr));
};

// "length" when the reply stopped at max_tokens, else "stop" (the model ended it).
inline const char* finish_reason(std::uint64_t produced, std::uint64_t max_tokens) {
  return produced >= max_tokens ? "length" : "stop";
}

inline nlohmann::json usage_json(std::uint64_t prompt_tokens, std::uint64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

// An object of the reply: what each one repeats, and its `choices`.
inline nlohmann::json reply_json(const ReplyHeader& reply, const char* object, nlohmann::json choices) {
  return {{"id", reply.id}, {"object", object}, {"created", reply.created}, {"model", reply.model},
          {"choices", std::move(choices)}};
}

inline nlohmann::json completion_json(const ReplyHeader& reply, const std::string& text, const char* finish,
                                      std::uint64_t prompt_tokens, std::uint64_t completion_tokens) {
  nlohmann::json json = reply_json(reply, "chat.completion",
                                   {{{"index", 0},
                                     {"message", {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}}},
                                     {"logprobs", nullptr},
                                     {"finish_reason", finish}}});
  json["usage"] = usage_json(prompt_tokens, completion_tokens);
  return json;
}

// A chunk of the stream with this delta and finish reason (null while the reply goes on).
inline nlohmann::json chunk_json(const ReplyHeader& reply, nlohmann::json delta, const char* finish = nullptr) {
  return reply_json(reply, "chat.completion.chunk",
                    {{{"index", 0},
                      {"delta", std::move(delta)},
                      {"logprobs", nullptr},
                      {"finish_reason", finish == nullptr ? nlohmann::json(nullptr) : nlohmann::json(finish)}}});
}

// The stream's last chunk when stream_options.include_usage asks: no choices, the usage.
inline nlohmann::json usage_chunk_json(const ReplyHeader& reply, std::uint64_t prompt_tokens,
                                       std::uint64_t completion_tokens) {
  nlohmann::json json = reply_json(reply, "chat.completion.chunk", nlohmann::json::array());
  json["usage"] = usage_json(prompt_tokens, completion_tokens);
  return json;
}

// One server-sent event carrying `json`.
inline std::string sse_event(const nlohmann::json& json) { return "data: " + json.dump() + "\n\n"; }

inline nlohmann::json model_json(const std::string& model) {
  return {{"id", model}, {"object", "model"}, {"created", 0}, {"owned_by", "airl-gateway"}};
}

inline nlohmann::json model_list_json(const std::vector<std::string>& models) {
  nlohmann::json data = nlohmann::json::array();
  for (const std::string& model : models) data.push_back(model_json(model));
  return {{"object", "list"}, {"data", std::move(data)}};
}

}  // namespace gateway
