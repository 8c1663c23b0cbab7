// SPDX-License-Identifier: MIT
#pragma once
// The gateway's own error answers, in the shape OpenAI's API and SDKs use,
// {"error":{"message","type","param","code"}}, or as application/problem+json (RFC 9457) for a client whose
// Accept asks for it. The limiters' refusals come from <airl/http.hpp> in the same two shapes.

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <airl/http.hpp>

#include <string>
#include <string_view>

namespace gateway {

struct ApiError {
  int status = 400;
  std::string_view type = "invalid_request_error";  // OpenAI's error types: invalid_request_error, server_error...
  std::string_view code;                            // OpenAI's error code, e.g. "model_not_found"; "" for null
  std::string message;
};

// The OpenAI-shaped body of `error`. Invalid UTF-8 quoted from a request is replaced, never a throw.
inline std::string openai_error_body(const ApiError& error) {
  nlohmann::json body = {{"error",
                          {{"message", error.message},
                           {"type", error.type},
                           {"param", nullptr},
                           {"code", error.code.empty() ? nlohmann::json(nullptr) : nlohmann::json(error.code)}}}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

inline std::string_view reason_phrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return status >= 500 ? "Server Error" : "Client Error";
  }
}

// Whether the client asked for problem details: its Accept names application/problem+json.
inline bool wants_problem_json(const httplib::Request& req) {
  const std::string accept = req.get_header_value("Accept");
  return accept.find(airl::http::problem_content_type) != std::string::npos;
}

// Writes `error` as the response: OpenAI's shape, or a problem+json body when the client asks for one.
inline void reply_error(const httplib::Request& req, httplib::Response& res, const ApiError& error) {
  res.status = error.status;
  if (wants_problem_json(req)) {
    nlohmann::json body = {{"type", "about:blank"},
                           {"title", reason_phrase(error.status)},
                           {"status", error.status},
                           {"detail", error.message}};
    if (!error.code.empty()) body["code"] = error.code;
    res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                    std::string(airl::http::problem_content_type));
  } else {
    res.set_content(openai_error_body(error), std::string(airl::http::openai_content_type));
  }
}

}  // namespace gateway
