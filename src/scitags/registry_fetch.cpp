// Fetching a registry over http(s):// with libcurl: certificate checks on by default, a
// whole-transfer timeout, at most 5 redirects (http and https only), a size cap, and errors
// that say what to do on a site that cannot reach the Internet.
//
// libcurl is loaded with dlopen() on the first fetch, not linked: with its TLS, Kerberos,
// LDAP, SSH and IDN dependencies it maps several megabytes of shared libraries into every
// process, which a service reading the built-in registry or a file never needs. Only the
// declarations and constants of <curl/curl.h> are used at build time.
#include "scitags/registry_fetch.hpp"

#include <curl/curl.h>
#include <dlfcn.h>

#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "flowmark/core/dynamic_library.hpp"

namespace flowmark::scitags::detail {
namespace {

constexpr std::string_view kOffline = "use --source builtin or a file on a site with no internet";
constexpr const char* kLibcurl = "libcurl.so.4";  // the soname of every libcurl since 7.16

// The few libcurl functions the fetch uses, resolved from the library loaded at run time.
struct Curl {
  CURLcode (*global_init)(long flags) = nullptr;
  CURL* (*easy_init)() = nullptr;
  void (*easy_cleanup)(CURL*) = nullptr;
  CURLcode (*easy_setopt)(CURL*, CURLoption, ...) = nullptr;
  CURLcode (*easy_perform)(CURL*) = nullptr;
  CURLcode (*easy_getinfo)(CURL*, CURLINFO, ...) = nullptr;
  const char* (*easy_strerror)(CURLcode) = nullptr;
  std::string error;  // why it is unusable; empty when ready
};

// Loads libcurl once per process (thread-safe) and initialises it; the library stays loaded.
const Curl& curl_api() noexcept {
  static Curl api;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = open_library(
        kLibcurl, "install libcurl4 (apt-get install libcurl4) to fetch a registry over http(s)",
        api.error);
    if (lib == nullptr) return;
    const char* missing = nullptr;
    bool ok = resolve_symbol(lib, "curl_global_init", api.global_init, missing);
    ok = resolve_symbol(lib, "curl_easy_init", api.easy_init, missing) && ok;
    ok = resolve_symbol(lib, "curl_easy_cleanup", api.easy_cleanup, missing) && ok;
    ok = resolve_symbol(lib, "curl_easy_setopt", api.easy_setopt, missing) && ok;
    ok = resolve_symbol(lib, "curl_easy_perform", api.easy_perform, missing) && ok;
    ok = resolve_symbol(lib, "curl_easy_getinfo", api.easy_getinfo, missing) && ok;
    ok = resolve_symbol(lib, "curl_easy_strerror", api.easy_strerror, missing) && ok;
    if (!ok) {
      api.error = fmt::format("{} has no symbol {}: reinstall libcurl4 (or libcurl4-openssl-dev)",
                              kLibcurl, missing);
      return;
    }
    if (api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      api.error = "libcurl failed to initialise";
    }
  });
  return api;
}

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

bool is_tls_trust_error(CURLcode rc) noexcept {
  return rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
         rc == CURLE_SSL_ISSUER_ERROR || rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH;
}

}  // namespace

Result<std::string> http_get(std::string_view url_view, const LoadOptions& options,
                             std::size_t max_bytes) {
  const std::string url(url_view);
  const Curl& c = curl_api();
  if (!c.error.empty()) {
    return fail(Errc::kRefused,
                fmt::format("cannot fetch registry {}: {}; or {}", url, c.error, kOffline));
  }
  auto cleanup = [&c](CURL* h) { c.easy_cleanup(h); };
  std::unique_ptr<CURL, decltype(cleanup)> curl(c.easy_init(), cleanup);
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
  // together, so a libcurl built without one still gives a clear error. The variadic
  // setopt takes exactly the types libcurl documents: long, pointers, curl_off_t.
  CURLcode set = CURLE_OK;
  auto opt = [&](CURLoption o, auto value) {
    if (set == CURLE_OK) set = c.easy_setopt(h, o, value);
  };
  opt(CURLOPT_ERRORBUFFER, static_cast<char*>(errbuf));
  opt(CURLOPT_URL, url.c_str());
  opt(CURLOPT_PROTOCOLS_STR, "http,https");
  opt(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  opt(CURLOPT_FOLLOWLOCATION, 1L);
  opt(CURLOPT_MAXREDIRS, 5L);
  opt(CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for DNS timeouts: we may run in a threaded service
  if (options.timeout_seconds > 0) opt(CURLOPT_TIMEOUT, static_cast<long>(options.timeout_seconds));
  opt(CURLOPT_SSL_VERIFYPEER, verify);
  opt(CURLOPT_SSL_VERIFYHOST, options.verify_tls ? 2L : 0L);
  opt(CURLOPT_USERAGENT, "flowmark");
  opt(CURLOPT_ACCEPT_ENCODING, "");  // whatever libcurl can decode; the cap applies after
  opt(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(max_bytes));
  opt(CURLOPT_WRITEFUNCTION, &write_body);
  opt(CURLOPT_WRITEDATA, static_cast<void*>(&sink));
  if (set != CURLE_OK)
    return fail(Errc::kRefused, fmt::format("cannot fetch registry {}: libcurl: {}; {}", url,
                                            c.easy_strerror(set), kOffline));

  const CURLcode rc = c.easy_perform(h);
  if (sink.too_large || rc == CURLE_FILESIZE_EXCEEDED)
    return fail(Errc::kTruncated,
                fmt::format("cannot fetch registry {}: the document is larger than {} MiB, "
                            "which no registry is — check the URL, or {}",
                            url, max_bytes >> 20, kOffline));
  if (rc != CURLE_OK) {
    std::string what = errbuf[0] != '\0' ? std::string(errbuf) : c.easy_strerror(rc);
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
  c.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  if (status >= 400) {
    std::string where;
    char* effective = nullptr;
    if (c.easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &effective) == CURLE_OK && effective &&
        url != effective)
      where = fmt::format(" (redirected to {})", effective);
    return fail(status == 404 || status == 410 ? Errc::kNotFound : Errc::kRefused,
                fmt::format("cannot fetch registry {}{}: HTTP status {} — check the URL, or {}",
                            url, where, status, kOffline));
  }
  return std::move(sink.body);
}

}  // namespace flowmark::scitags::detail
