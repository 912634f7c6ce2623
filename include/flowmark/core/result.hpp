// flowmark::core — Result<T> and Error: how every set-up and library call reports failure.
//
// A call that can fail returns Result<T> (std::expected<T, Error>). An Error carries an
// std::error_code (errno or one of ours) and a message written for the user, which says
// what failed and, where possible, what to do about it.
//
//   Result<int> open_thing(std::string_view name) {
//     int fd = ::open(...);
//     if (fd < 0) return fail_errno(fmt::format("cannot open {}", name));
//     return fd;
//   }
//   FM_TRY(auto fd, open_thing("x"));    // returns the error to the caller
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <system_error>
#include <utility>

namespace flowmark {

// Errors that are not an errno: invalid user input and similar.
enum class Errc {
  kInvalidArgument = 1,  // a value given by the user is not acceptable
  kNotFound,             // a named thing (interface, file) does not exist
  kUnsupported,          // valid, but not something we can do
  kTruncated,            // data did not fit
  kMalformed,            // bytes from outside do not parse
  kRefused,              // the kernel or a peer refused a valid request
};
const std::error_category& flowmark_category() noexcept;
inline std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), flowmark_category()};
}

class Error {
 public:
  Error(std::error_code code, std::string message) : code_(code), message_(std::move(message)) {}

  const std::error_code& code() const noexcept { return code_; }
  // The message for the user, e.g. "cannot join 239.1.1.1 on eth0: No such device".
  const std::string& message() const noexcept { return message_; }
  // Adds outer context: "loading config: <inner message>".
  Error&& with_context(std::string_view context) &&;

 private:
  std::error_code code_;
  std::string message_;
};

template <typename T = void>
using Result = std::expected<T, Error>;

// An Error for the current errno, with message "<what>: <strerror>".
std::unexpected<Error> fail_errno(std::string_view what, int err = errno);
// An Error of one of our own kinds.
std::unexpected<Error> fail(Errc code, std::string message);

}  // namespace flowmark

template <>
struct std::is_error_code_enum<flowmark::Errc> : std::true_type {};

#define FM_CONCAT_INNER(a, b) a##b
#define FM_CONCAT(a, b) FM_CONCAT_INNER(a, b)
// NOLINTBEGIN(bugprone-macro-parentheses): `decl` is a declaration, not an expression.
#define FM_TRY_IMPL(tmp, decl, expr)                        \
  auto tmp = (expr);                                        \
  if (!tmp) return std::unexpected(std::move(tmp).error()); \
  decl = std::move(*tmp)
// NOLINTEND(bugprone-macro-parentheses)
// FM_TRY(auto x, call()) — declares x from a Result, or returns its error.
#define FM_TRY(decl, expr) FM_TRY_IMPL(FM_CONCAT(fm_try_, __LINE__), decl, expr)
// FM_TRY_VOID(call()) — returns the error of a Result<void>, if any.
#define FM_TRY_VOID(expr)                                                       \
  do {                                                                          \
    auto fm_try_void_ = (expr);                                                 \
    if (!fm_try_void_) return std::unexpected(std::move(fm_try_void_).error()); \
  } while (0)
