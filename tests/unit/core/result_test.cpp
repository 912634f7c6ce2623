#include "flowmark/core/result.hpp"

#include <gtest/gtest.h>

namespace flowmark {
namespace {

Result<int> half(int v) {
  if (v % 2 != 0) return fail(Errc::kInvalidArgument, "odd");
  return v / 2;
}

Result<int> quarter(int v) {
  FM_TRY(int h, half(v));
  FM_TRY(int q, half(h));
  return q;
}

TEST(Result, TryPropagatesTheFirstError) {
  EXPECT_EQ(*quarter(8), 2);
  auto r = quarter(6);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "odd");
}

TEST(Result, ErrnoErrorsCarryStrerrorAndContext) {
  auto e = fail_errno("cannot open x", ENOENT).error();
  EXPECT_EQ(e.code(), std::error_code(ENOENT, std::system_category()));
  EXPECT_EQ(e.message(), "cannot open x: No such file or directory");
  auto wrapped = std::move(e).with_context("loading config");
  EXPECT_EQ(wrapped.message(), "loading config: cannot open x: No such file or directory");
}

}  // namespace
}  // namespace flowmark
