// SPDX-License-Identifier: MIT
#pragma once
// Checks that a moved-from limiter or storage refuses a table of its public members, each with
// std::logic_error itself (not std::invalid_argument or another subclass: a caller mistake in the arguments is
// not what is being reported) and a message naming the class and the member. Tests list one row per public
// member (tests/core/lifecycle_test.cpp, tests/redis/redis_storage_test.cpp).

#include <catch2/catch.hpp>

#include <functional>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

namespace airl::test {

// One public member of `Object`, called with arguments that would be valid on a live object.
template <class Object>
struct MemberCall {
  std::string name;  // as the message names it: "<owner>::<name>"
  std::function<void(Object&)> call;
};

// Calls every member on `moved_from`; each must throw exactly std::logic_error mentioning "<owner>::<name>".
template <class Object>
void require_refused_when_moved_from(Object& moved_from, const std::string& owner,
                                     const std::vector<MemberCall<Object>>& members) {
  for (const MemberCall<Object>& member : members) {
    const std::string expected = owner + "::" + member.name;
    INFO(expected);
    std::string thrown = "nothing";
    std::string message;
    try {
      member.call(moved_from);
    } catch (const std::logic_error& error) {
      thrown = typeid(error) == typeid(std::logic_error) ? "std::logic_error" : typeid(error).name();
      message = error.what();
    } catch (const std::exception& error) {
      thrown = typeid(error).name();
      message = error.what();
    }
    CHECK(thrown == "std::logic_error");
    CHECK_THAT(message, Catch::Contains(expected) && Catch::Contains("moved from"));
  }
}

}  // namespace airl::test
