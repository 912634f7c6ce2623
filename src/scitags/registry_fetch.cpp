// Fetching a registry over http(s):// with libcurl: certificate checks on by default, a
// whole-transfer timeout, at most 5 redirects (http and https only), a size cap, and errors
// that say what to do on a site that cannot reach the Internet.
#include "scitags/registry_fetch.hpp"

#include <curl/curl.h>

#include <memory>
#include <new>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace flowmark::scitags::detail {
namespace {

constexpr std::string_view kOffline = "use --source builtin or a file on a site with no internet";

struct Sink {
  std::string body;
  std::size_t max = 0;
  bool too_large = false;
};

// libcurl's write callback: appends to the Sink; returning less than given aborts.
std::size_t write_body(char* data, std::size_t size, std::size_t count, void* user) noexcept {
  auto* sink = static_cast<Sink*>(user);
  const std::size_t len = size * count;
  if (len > sink->max - sink->body.size()) {
    sink->too_large = true;
    return 0;
  }
  try {
    sink->body.append(data, len);
  } catch (const std::bad_alloc&) {
    return 0;
  }
  return len;
}

struct EasyDeleter {
  void operator()(CURL* curl) const noexcept { curl_easy_cleanup(curl); }
};

bool curl_ready() noexcept {
  // Once per process; a function-local static is initialised exactly once, thread-safely.
  static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  return rc == CURLE_OK;
}

bool is_tls_trust_error(CURLcode rc) noexcept {
  return rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
         rc == CURLE_SSL_ISSUER_ERROR || rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH;
}

}  // namespace

Result<std::string> http_get(std::string_view url_view, const LoadOptions& options,
                             std::size_t max_bytes) {
  const std::string url(url_view);
  if (!curl_ready())
    return fail(
        Errc::kRefused,
        fmt::format("cannot fetch registry {}: libcurl failed to initialise; {}", url, kOffline));
  std::unique_ptr<CURL, EasyDeleter> curl(curl_easy_init());
  if (!curl)
    return fail(
        Errc::kRefused,
        fmt::format("cannot fetch registry {}: libcurl failed to initialise; {}", url, kOffline));
  CURL* h = curl.get();
  Sink sink;
  sink.max = max_bytes;
  char errbuf[CURL_ERROR_SIZE] = {};
  const long verify = options.verify_tls ? 1L : 0L;
  // Options that cannot fail on a working libcurl of this version; their codes are checked
  // together, so a libcurl built without one still gives a clear error.
  CURLcode set = CURLE_OK;
  auto opt = [&](CURLoption o, auto value) {
    if (set == CURLE_OK) set = curl_easy_setopt(h, o, value);
  };
  opt(CURLOPT_ERRORBUFFER, errbuf);
  opt(CURLOPT_URL, url.c_str());
  opt(CURLOPT_PROTOCOLS_STR, "http,https");
  opt(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  opt(CURLOPT_FOLLOWLOCATION, 1L);
  opt(CURLOPT_MAXREDIRS, 5L);
  opt(CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for DNS timeouts: we may run in a threaded service
  if (options.timeout_seconds > 0) opt(CURLOPT_TIMEOUT, options.timeout_seconds);
  opt(CURLOPT_SSL_VERIFYPEER, verify);
  opt(CURLOPT_SSL_VERIFYHOST, options.verify_tls ? 2L : 0L);
  opt(CURLOPT_USERAGENT, "flowmark");
  opt(CURLOPT_ACCEPT_ENCODING, "");  // whatever libcurl can decode; the cap applies after
  opt(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(max_bytes));
  opt(CURLOPT_WRITEFUNCTION, &write_body);
  opt(CURLOPT_WRITEDATA, &sink);
  if (set != CURLE_OK)
    return fail(Errc::kRefused, fmt::format("cannot fetch registry {}: libcurl: {}; {}", url,
                                            curl_easy_strerror(set), kOffline));

  const CURLcode rc = curl_easy_perform(h);
  if (sink.too_large || rc == CURLE_FILESIZE_EXCEEDED)
    return fail(Errc::kTruncated,
                fmt::format("cannot fetch registry {}: the document is larger than {} MiB, "
                            "which no registry is — check the URL, or {}",
                            url, max_bytes >> 20, kOffline));
  if (rc != CURLE_OK) {
    std::string what = errbuf[0] != '\0' ? std::string(errbuf) : curl_easy_strerror(rc);
    while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
    if (is_tls_trust_error(rc))
      return fail(Errc::kRefused,
                  fmt::format("cannot fetch registry {}: {} — the server certificate could not "
                              "be verified: install the CA certificates, pass --insecure if you "
                              "trust the network, or {}",
                              url, what, kOffline));
    return fail(Errc::kRefused, fmt::format("cannot fetch registry {}: {} — check the URL and the "
                                            "network (proxy settings too), or {}",
                                            url, what, kOffline));
  }
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  if (status >= 400) {
    std::string where;
    char* effective = nullptr;
    if (curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective &&
        url != effective)
      where = fmt::format(" (redirected to {})", effective);
    return fail(status == 404 || status == 410 ? Errc::kNotFound : Errc::kRefused,
                fmt::format("cannot fetch registry {}{}: HTTP status {} — check the URL, or {}",
                            url, where, status, kOffline));
  }
  return std::move(sink.body);
}

}  // namespace flowmark::scitags::detail
