#include "flowmark/core/json.hpp"

#include <gtest/gtest.h>

namespace flowmark {
namespace {

TEST(Json, Utf8Validation) {
  EXPECT_TRUE(is_valid_utf8("Hello World!"));
  EXPECT_TRUE(is_valid_utf8("gr\xc3\xbc\xc3\x9f"));  // grüß
  EXPECT_TRUE(is_valid_utf8("\xf0\x9f\x8e\x89"));    // 🎉
  EXPECT_FALSE(is_valid_utf8("\xff"));
  EXPECT_FALSE(is_valid_utf8("\xc3"));              // cut short
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // > U+10FFFF
}

TEST(Json, Escapes) {
  std::string out;
  append_json_string(out, std::string_view("a\"b\\c\n\x01\x7f", 8));
  EXPECT_EQ(out, R"("a\"b\\c\n\u0001\u007f")");
}

TEST(Json, Base64) {
  const std::pair<const char*, const char*> cases[] = {
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foobar", "Zm9vYmFy"}};
  for (auto [in, want] : cases) {
    std::string out;
    append_base64(out, in);
    EXPECT_EQ(out, want) << in;
  }
  std::string out;
  append_base64(out, std::string_view("\xff\x00\x80", 3));
  EXPECT_EQ(out, "/wCA");
}

}  // namespace
}  // namespace flowmark
