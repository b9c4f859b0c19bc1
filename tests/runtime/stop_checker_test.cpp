#include "runtime/stop_checker.h"

#include <gtest/gtest.h>

namespace shardlm {
namespace {

const std::vector<int32_t> kEos = {2};

Sequence make(std::vector<int32_t> output, int32_t max_tokens = 100) {
  Sequence s;
  s.prompt = {10, 11};
  s.output = std::move(output);
  s.params.max_tokens = max_tokens;
  return s;
}

TEST(StopChecker, NotFinished) {
  Sequence s = make({5, 6});
  s.output_text = "hello";
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kNone);
  EXPECT_EQ(s.output_text, "hello");
}

TEST(StopChecker, MaxTokens) {
  Sequence s = make({5, 6}, 3);
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kNone);
  s.output.push_back(7);
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kLength);
}

TEST(StopChecker, StopTokenIds) {
  Sequence s = make({5, 42});
  s.params.stop_token_ids = {41, 42};
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kStopToken);
  s.output = {42, 5};  // only the last token counts
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kNone);
}

TEST(StopChecker, EosUnlessIgnored) {
  Sequence s = make({5, 2});
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kStopToken);
  s.params.ignore_eos = true;
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kNone);
  s.params.stop_token_ids = {2};  // explicit stop ids still apply
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kStopToken);
  EXPECT_EQ(check_stop(s, {}), FinishReason::kStopToken);
}

TEST(StopChecker, StopStringTruncatesText) {
  Sequence s = make({5, 6});
  s.params.stop = {"END"};
  s.output_text = "the answer END and more";
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kStopString);
  EXPECT_EQ(s.output_text, "the answer ");
}

TEST(StopChecker, StopStringSpanningTwoTokens) {
  // Tokens "foo E" and "ND": neither holds "END", the decoded text does.
  Sequence s = make({5});
  s.params.stop = {"END"};
  s.output_text = "foo E";
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kNone);
  EXPECT_EQ(s.output_text, "foo E");
  s.output.push_back(6);
  s.output_text += "ND!";
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kStopString);
  EXPECT_EQ(s.output_text, "foo ");
}

TEST(StopChecker, EarliestStopStringWins) {
  Sequence s = make({5});
  s.params.stop = {"zzz", "", "c", "ab"};  // empty strings are ignored
  s.output_text = "xxabc zzz";
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kStopString);
  EXPECT_EQ(s.output_text, "xx");
}

TEST(StopChecker, StopStringAtStartLeavesEmptyText) {
  Sequence s = make({5});
  s.params.stop = {"\n\n"};
  s.output_text = "\n\nrest";
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kStopString);
  EXPECT_EQ(s.output_text, "");
}

TEST(StopChecker, PrecedenceStopTokenThenStringThenLength) {
  // All three rules match: the stop token wins, the text is left alone.
  Sequence s = make({5, 2}, 2);
  s.params.stop = {"x"};
  s.output_text = "axb";
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kStopToken);
  EXPECT_EQ(s.output_text, "axb");
  // Stop string and length: the string wins.
  s.params.ignore_eos = true;
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kStopString);
  EXPECT_EQ(s.output_text, "a");
  // Only length is left.
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kLength);
}

TEST(StopChecker, EmptyOutput) {
  Sequence s = make({}, 4);
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kNone);
  s.params.max_tokens = 0;
  EXPECT_EQ(check_stop(s, kEos), FinishReason::kLength);
}

}  // namespace
}  // namespace shardlm
