// SPDX-License-Identifier: MIT
#pragma once
// The parts of an OpenAI-style chat completion request the gateway needs, read from untrusted JSON.
//
// Accepts what OpenAI's API accepts for the fields the gateway reads: a message's content as a string, as an
// array of parts (text parts counted, others such as images ignored) or null (an assistant message with
// tool_calls, whose names and arguments are counted); max_completion_tokens, or the older max_tokens; stream
// and stream_options.include_usage. Every way a body can be wrong becomes a ParseError naming the field
// (`param`) for the 400 reply: not JSON, too deep, wrong types, a missing or over-long model, no messages, a
// token count out of range. nlohmann::json parses with exceptions caught here, so no body can crash the
// gateway; the body's size is bounded before parsing.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace gateway {

struct ParseError : std::runtime_error {
  ParseError(const std::string& message, std::string field = "") : std::runtime_error(message), param(std::move(field)) {}
  std::string param;  // the request field at fault, as OpenAI's errors name it ("" when none)
};

struct ChatRequest {
  std::string model;
  std::uint64_t prompt_tokens = 0;  // estimated: what the reservation charges for the prompt
  std::uint64_t max_tokens = 0;     // the most the reply may produce
  bool stream = false;
  bool include_usage = false;       // stream_options.include_usage: a last chunk with the usage
};

struct ChatLimits {
  std::uint64_t default_max_tokens = 256;  // reserved when the request names no max_completion_tokens
  std::uint64_t max_tokens_cap = 8192;     // larger max_completion_tokens (or max_tokens) is refused
  std::size_t max_model_length = 256;
};

// Tokens in a text, estimated the usual way for English (about 4 bytes a token), at least 1.
inline std::uint64_t estimate_tokens(std::string_view text) { return text.size() / 4 + 1; }

// The estimated tokens of one message's text: its content (a string, text parts, or null), the names and
// arguments of its tool calls. Throws ParseError on a message OpenAI would refuse.
inline std::uint64_t message_tokens(const nlohmann::json& message) {
  if (!message.is_object()) throw ParseError("every message must be an object", "messages");
  const auto role = message.find("role");
  if (role == message.end() || !role->is_string()) throw ParseError("every message needs a string \"role\"", "messages");
  std::uint64_t tokens = 0;
  const auto content = message.find("content");
  const bool has_tool_calls = message.contains("tool_calls");
  if (content == message.end() || content->is_null()) {
    if (!has_tool_calls && *role != "assistant") {
      throw ParseError("a message's \"content\" may be null only for an assistant", "messages");
    }
  } else if (content->is_string()) {
    tokens += estimate_tokens(content->get_ref<const std::string&>());
  } else if (content->is_array()) {
    for (const nlohmann::json& part : *content) {
      const auto type = part.is_object() ? part.find("type") : part.end();
      if (!part.is_object() || type == part.end() || !type->is_string()) {
        throw ParseError("every content part must be an object with a string \"type\"", "messages");
      }
      for (const char* field : {"text", "refusal"}) {  // the text of "text" and "refusal" parts
        const auto text = part.find(field);
        if (text == part.end()) continue;
        if (!text->is_string()) throw ParseError(std::string("a content part's \"") + field + "\" must be a string", "messages");
        tokens += estimate_tokens(text->get_ref<const std::string&>());
      }
    }
  } else {
    throw ParseError("a message's \"content\" must be a string, an array of parts or null", "messages");
  }
  if (has_tool_calls) {
    const nlohmann::json& calls = message["tool_calls"];
    if (!calls.is_array()) throw ParseError("\"tool_calls\" must be an array", "messages");
    for (const nlohmann::json& call : calls) {
      const auto function = call.is_object() ? call.find("function") : call.end();
      if (function == call.end() || !function->is_object()) {
        throw ParseError("every tool call must be an object with a \"function\" object", "messages");
      }
      for (const char* field : {"name", "arguments"}) {
        const auto text = function->find(field);
        if (text != function->end() && text->is_string()) tokens += estimate_tokens(text->get_ref<const std::string&>());
      }
    }
  }
  return tokens;
}

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
  if (model == json.end() || !model->is_string()) throw ParseError("\"model\" must be a string", "model");
  request.model = model->get<std::string>();
  if (request.model.empty() || request.model.size() > limits.max_model_length) {
    throw ParseError("\"model\" must be 1 to " + std::to_string(limits.max_model_length) + " bytes", "model");
  }

  const auto messages = json.find("messages");
  if (messages == json.end() || !messages->is_array() || messages->empty()) {
    throw ParseError("\"messages\" must be a non-empty array", "messages");
  }
  for (const nlohmann::json& message : *messages) {
    request.prompt_tokens += message_tokens(message) + 3;  // a few tokens of role and framing per message
  }

  // max_completion_tokens is OpenAI's name now; max_tokens the older one. Given both, the newer one counts.
  request.max_tokens = limits.default_max_tokens;
  for (const char* field : {"max_tokens", "max_completion_tokens"}) {
    const auto value = json.find(field);
    if (value == json.end() || value->is_null()) continue;
    if (!value->is_number_unsigned() || value->get<std::uint64_t>() == 0 ||
        value->get<std::uint64_t>() > limits.max_tokens_cap) {
      throw ParseError("\"" + std::string(field) + "\" must be an integer from 1 to " +
                           std::to_string(limits.max_tokens_cap),
                       field);
    }
    request.max_tokens = value->get<std::uint64_t>();
  }
  if (const auto stream = json.find("stream"); stream != json.end() && !stream->is_null()) {
    if (!stream->is_boolean()) throw ParseError("\"stream\" must be true or false", "stream");
    request.stream = stream->get<bool>();
  }
  if (const auto options = json.find("stream_options"); options != json.end() && !options->is_null()) {
    const auto usage = options->is_object() ? options->find("include_usage") : options->end();
    if (!options->is_object() || (usage != options->end() && !usage->is_boolean() && !usage->is_null())) {
      throw ParseError("\"stream_options\" must be an object with a boolean \"include_usage\"", "stream_options");
    }
    request.include_usage = usage != options->end() && usage->is_boolean() && usage->get<bool>();
  }
  return request;
}

}  // namespace gateway
