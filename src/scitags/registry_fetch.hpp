// Private to flowmark_scitags: fetching a registry document over http:// or https://.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "flowmark/core/result.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::scitags::detail {

// A registry is a few kilobytes; anything this large is not one.
inline constexpr std::size_t kMaxRegistryBytes = std::size_t{16} << 20;  // 16 MiB

// GETs `url` (http:// or https:// only) with libcurl and returns the body. Follows up to 5
// redirects, verifies the server certificate unless options.verify_tls is false, gives up
// after options.timeout_seconds, and fails on an HTTP status >= 400 or a body larger than
// `max_bytes`. Errors name the URL, say what went wrong and what to do instead.
Result<std::string> http_get(std::string_view url, const LoadOptions& options,
                             std::size_t max_bytes = kMaxRegistryBytes);

}  // namespace flowmark::scitags::detail
