#include <cstring>

#include <fmt/format.h>

#include "flowmark/core/result.hpp"

namespace flowmark {
namespace {
class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "flowmark"; }
  std::string message(int c) const override {
    switch (static_cast<Errc>(c)) {
      case Errc::kInvalidArgument: return "invalid argument";
      case Errc::kNotFound: return "not found";
      case Errc::kUnsupported: return "not supported";
      case Errc::kTruncated: return "truncated";
      case Errc::kMalformed: return "malformed";
      case Errc::kRefused: return "refused";
    }
    return "unknown error";
  }
};
}  // namespace

const std::error_category& flowmark_category() noexcept {
  static const Category category;
  return category;
}

Error&& Error::with_context(std::string_view context) && {
  message_ = fmt::format("{}: {}", context, message_);
  return std::move(*this);
}

std::unexpected<Error> fail_errno(std::string_view what, int err) {
  return std::unexpected(Error(std::error_code(err, std::system_category()),
                               fmt::format("{}: {}", what, std::strerror(err))));
}

std::unexpected<Error> fail(Errc code, std::string message) {
  return std::unexpected(Error(make_error_code(code), std::move(message)));
}

}  // namespace flowmark
