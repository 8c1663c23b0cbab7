// SPDX-License-Identifier: MIT
#pragma once
// The identity under which a storage remembers a request id.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace airl::detail {

// The identity under which a request id is remembered: (user, model, id), each with a 4-byte length. A retry
// is the same request, so an id replays only for the user and model that were admitted with it: another user
// (or the same user on another model) reusing the id is charged like any new request.
inline void encode_request_id(std::string& out, std::string_view user, std::string_view model,
                              std::string_view request_id) {
  // One resize, then plain copies: appending byte by byte cost more than the rest of the id's path.
  out.resize(12 + user.size() + model.size() + request_id.size());
  char* at = out.data();
  for (const std::string_view part : {user, model, request_id}) {
    const auto size = static_cast<std::uint32_t>(part.size());
    for (int shift = 0; shift < 32; shift += 8) *at++ = static_cast<char>((size >> shift) & 0xFFu);
    if (!part.empty()) std::memcpy(at, part.data(), part.size());
    at += part.size();
  }
}

}  // namespace airl::detail
