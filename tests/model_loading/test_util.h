// Assertions shared by the model loading tests.
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "base/status.h"

namespace shardlm::test {

// The Status is an error whose message contains every one of `parts`.
inline ::testing::AssertionResult error_mentions(const Status& s, std::initializer_list<std::string> parts) {
  if (s.ok()) return ::testing::AssertionFailure() << "expected an error, got ok";
  for (const auto& p : parts)
    if (s.message().find(p) == std::string::npos)
      return ::testing::AssertionFailure() << "error '" << s.to_string() << "' does not mention '" << p << "'";
  return ::testing::AssertionSuccess();
}

}  // namespace shardlm::test
