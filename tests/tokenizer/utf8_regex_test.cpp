// UTF-8 helpers and the PCRE2 regex wrapper.
#include <gtest/gtest.h>

#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace shardlm {
namespace {

const std::string kFFFD = "\xEF\xBF\xBD";

TEST(Utf8, SanitizeReplacesMaximalSubparts) {
  EXPECT_EQ(utf8::sanitize("abc"), "abc");
  EXPECT_EQ(utf8::sanitize("a\xFF" "b"), "a" + kFFFD + "b");
  // Truncated 3-byte sequence: one replacement for the two bytes.
  EXPECT_EQ(utf8::sanitize("a\xE6\x97"), "a" + kFFFD);
  // Overlong and surrogate encodings: one replacement per byte.
  EXPECT_EQ(utf8::sanitize("\xC0\xAF"), kFFFD + kFFFD);
  EXPECT_EQ(utf8::sanitize("\xED\xA0\x80"), kFFFD + kFFFD + kFFFD);
  // F4 90 is above U+10FFFF.
  EXPECT_EQ(utf8::sanitize("\xF4\x90\x80\x80"), kFFFD + kFFFD + kFFFD + kFFFD);
  // A lead byte followed by ASCII.
  EXPECT_EQ(utf8::sanitize("\xE6" "a"), kFFFD + "a");
  EXPECT_TRUE(utf8::is_valid("\xF0\x9F\x98\x80"));
  EXPECT_FALSE(utf8::is_valid("\xF0\x9F\x98"));
}

TEST(Utf8, IncompleteTail) {
  EXPECT_EQ(utf8::incomplete_tail_length("ab"), 0u);
  EXPECT_EQ(utf8::incomplete_tail_length("a\xE6"), 1u);
  EXPECT_EQ(utf8::incomplete_tail_length("a\xE6\x97"), 2u);
  EXPECT_EQ(utf8::incomplete_tail_length("a\xE6\x97\xA5"), 0u);
  EXPECT_EQ(utf8::incomplete_tail_length("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(utf8::incomplete_tail_length("\xFF"), 0u);  // invalid, not incomplete
}

std::vector<std::pair<size_t, size_t>> matches(const std::string& pattern, const std::string& text) {
  auto re = Regex::compile(pattern);
  EXPECT_TRUE(re.ok()) << re.status().to_string();
  std::vector<std::pair<size_t, size_t>> m;
  EXPECT_TRUE((*re)->find_all(text, m).ok());
  return m;
}

TEST(Regex, WhitespaceIsWhiteSpaceProperty) {
  // U+0085 (NEL) and U+3000 are White_Space; U+180E is not (PCRE2's \s has it).
  EXPECT_EQ(matches("\\s", "\xC2\x85").size(), 1u);
  EXPECT_EQ(matches("\\s", "\xE3\x80\x80").size(), 1u);
  EXPECT_EQ(matches("\\s", "\xE1\xA0\x8E").size(), 0u);
  EXPECT_EQ(matches("[^\\s\\p{L}]", "\xE1\xA0\x8E").size(), 1u);
  EXPECT_EQ(matches("\\S+", "a\xE1\xA0\x8E" "b c").size(), 2u);
}

TEST(Regex, UnicodeClassesAndCaseInsensitiveGroups) {
  auto m = matches("(?i:'s|'t)|\\p{L}+|\\p{N}{1,3}", "IT'S 12345 日本");
  ASSERT_EQ(m.size(), 5u);  // IT, 'S, 123, 45, 日本
  EXPECT_EQ(m[1], (std::pair<size_t, size_t>{2, 4}));
}

TEST(Regex, EmptyMatchesAdvance) {
  auto m = matches("a*", "baac");
  // Onig-style: empty at 0, "aa" at 1..3, (empty at 3 skipped: follows a match), empty at 4.
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0], (std::pair<size_t, size_t>{0, 0}));
  EXPECT_EQ(m[1], (std::pair<size_t, size_t>{1, 3}));
  EXPECT_EQ(m[2], (std::pair<size_t, size_t>{4, 4}));
}

TEST(Regex, LiteralsAreEscaped) {
  auto re = Regex::literal("a.b*(c)\\s");
  ASSERT_TRUE(re.ok());
  std::vector<std::pair<size_t, size_t>> m;
  ASSERT_TRUE((*re)->find_all("xa.b*(c)\\sy axb", m).ok());
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].first, 1u);
}

TEST(Regex, InvalidPatternIsAnError) {
  auto re = Regex::compile("(unclosed");
  ASSERT_FALSE(re.ok());
  EXPECT_NE(re.status().message().find("invalid regex"), std::string::npos);
}

}  // namespace
}  // namespace shardlm
