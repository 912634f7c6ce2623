#include "daemon/backends/kafka/rdkafka_api.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "flowmark/core/dynamic_library.hpp"

namespace flowmark::daemon {
namespace {

constexpr const char* kLibrdkafka = "librdkafka.so.1";  // the soname since librdkafka 0.9
// Names another file to load instead (the tests use it to see the error when it is missing).
constexpr const char* kLibrdkafkaEnv = "FLOWMARK_LIBRDKAFKA";

struct Loaded {
  RdKafka api;
  std::string error;  // empty: usable
};

const Loaded& load() {
  static Loaded l;
  static std::once_flag once;
  std::call_once(once, [] {
    const char* forced = std::getenv(kLibrdkafkaEnv);
    const char* file = forced != nullptr && *forced != '\0' ? forced : kLibrdkafka;
    void* lib = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = dlerror();
      l.error = fmt::format(
          "cannot load librdkafka ({}): the kafka backend needs it: install Debian package "
          "librdkafka1",
          why ? why : file);
      return;
    }
    const char* missing = nullptr;
    bool ok = true;
#define FLOWMARK_RDKAFKA_RESOLVE(member, name) \
  ok = resolve_symbol(lib, "rd_kafka_" #name, l.api.member, missing) && ok;
    FLOWMARK_RDKAFKA_FUNCTIONS(FLOWMARK_RDKAFKA_RESOLVE)
#undef FLOWMARK_RDKAFKA_RESOLVE
    if (!ok) {
      l.error =
          fmt::format("{} has no symbol {}: librdkafka 1.6 or newer is needed", file, missing);
    }
  });
  return l;
}

}  // namespace

Result<const RdKafka*> rdkafka_api() {
  const auto& l = load();
  if (!l.error.empty()) return fail(Errc::kUnsupported, l.error);
  return &l.api;
}

}  // namespace flowmark::daemon
