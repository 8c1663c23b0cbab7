// SPDX-License-Identifier: MIT
#pragma once
// The parts of an OpenAI-style chat completion request the gateway needs, read from untrusted JSON.
//
// Every way a body can be wrong becomes a ParseError with a message for the 400 reply: not JSON, too deep,
// wrong types, a missing or over-long model, no messages, max_tokens out of range. nlohmann::json parses
// with exceptions caught here, so no body can crash the gateway; the body's size is bounded before parsing.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace gateway {

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ChatRequest {
  std::string model;
  std::uint64_t prompt_tokens = 0;  // estimated: what the reservation charges for the prompt
  std::uint64_t max_tokens = 0;     // the most the reply may produce
  bool stream = false;
};

struct ChatLimits {
  std::uint64_t default_max_tokens = 256;  // when the request names none
  std::uint64_t max_tokens_cap = 8192;     // larger max_tokens is refused
  std::size_t max_model_length = 256;
};

// Tokens in a text, estimated the usual way for English (about 4 bytes a token), at least 1.
inline std::uint64_t estimate_tokens(std::string_view text) { return text.size() / 4 + 1; }

// Reads the request. Throws ParseError on anything but a well-formed chat completion request.
inline ChatRequest parse_chat_request(std::string_view body, const ChatLimits& limits = {}) {
  // A parser callback that refuses deep nesting: a body of 100k '[' must not recurse 100k times.
  constexpr int max_depth = 32;
  const auto shallow = [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth > max_depth) throw ParseError("JSON nested deeper than 32 levels");
    return true;
  };
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(body.begin(), body.end(), shallow);
  } catch (const nlohmann::json::exception& error) {
    throw ParseError(std::string("body is not JSON: ") + error.what());
  }
  if (!json.is_object()) throw ParseError("body must be a JSON object");

  ChatRequest request;
  const auto model = json.find("model");
  if (model == json.end() || !model->is_string()) throw ParseError("\"model\" must be a string");
  request.model = model->get<std::string>();
  if (request.model.empty() || request.model.size() > limits.max_model_length) {
    throw ParseError("\"model\" must be 1 to " + std::to_string(limits.max_model_length) + " bytes");
  }

  const auto messages = json.find("messages");
  if (messages == json.end() || !messages->is_array() || messages->empty()) {
    throw ParseError("\"messages\" must be a non-empty array");
  }
  for (const nlohmann::json& message : *messages) {
    const auto content = message.is_object() ? message.find("content") : message.end();
    if (!message.is_object() || content == message.end() || !content->is_string()) {
      throw ParseError("every message must be an object with a string \"content\"");
    }
    const std::string& text = content->get_ref<const std::string&>();
    request.prompt_tokens += estimate_tokens(text) + 3;  // a few tokens of role and framing per message
  }

  request.max_tokens = limits.default_max_tokens;
  if (const auto max_tokens = json.find("max_tokens"); max_tokens != json.end() && !max_tokens->is_null()) {
    if (!max_tokens->is_number_unsigned() || max_tokens->get<std::uint64_t>() == 0 ||
        max_tokens->get<std::uint64_t>() > limits.max_tokens_cap) {
      throw ParseError("\"max_tokens\" must be an integer from 1 to " + std::to_string(limits.max_tokens_cap));
    }
    request.max_tokens = max_tokens->get<std::uint64_t>();
  }
  if (const auto stream = json.find("stream"); stream != json.end() && !stream->is_null()) {
    if (!stream->is_boolean()) throw ParseError("\"stream\" must be true or false");
    request.stream = stream->get<bool>();
  }
  return request;
}

}  // namespace gateway
