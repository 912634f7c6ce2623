#include "options.hpp"

#include <fmt/format.h>

#include "flowmark/core/option_value.hpp"

namespace flowmark::apps {
namespace {

CLI::Option* add_text(CLI::App& app, const std::string& names, std::optional<std::string>& dst,
                      const std::string& help, const std::string& type) {
  return app
      .add_option_function<std::string>(
          names, [&dst](const std::string& v) { dst = v; }, help)
      ->type_name(type);
}

}  // namespace

CLI::Option* add_group_option(CLI::App& app, std::optional<std::string>& group,
                              const std::string& help, const std::string& names) {
  return add_text(app, names, group, help, "GROUP");
}

CLI::Option* add_source_option(CLI::App& app, std::vector<std::string>& sources,
                               const std::string& help) {
  return app.add_option("--source", sources, help + "; repeatable")
      ->type_name("S")
      ->expected(1, CLI::detail::expected_max_vector_size);
}

CLI::Option* add_iface_option(CLI::App& app, std::optional<std::string>& iface,
                              const std::string& help) {
  return add_text(app, "--iface", iface, help + " (name, index or address)", "IF");
}

CLI::Option* add_ttl_option(CLI::App& app, std::optional<std::string>& ttl) {
  return add_text(app, "--ttl", ttl, fmt::format("multicast TTL / hop limit, 0..{} (1)", kMaxTtl),
                  "TTL");
}

CLI::Option* add_rcvbuf_option(CLI::App& app, std::optional<std::string>& rcvbuf) {
  return add_text(app, "--rcvbuf", rcvbuf,
                  fmt::format("socket receive buffer in bytes ({} MiB; 0: the kernel's default; "
                              "at most {})",
                              kDefaultReceiveBuffer >> 20, kMaxReceiveBuffer),
                  "BYTES");
}

CLI::Option* add_timeout_option(CLI::App& app, std::optional<std::string>& timeout,
                                const std::string& help) {
  return add_text(app, "--timeout", timeout, help, "SECONDS");
}

CLI::Option* add_count_option(CLI::App& app, std::optional<std::string>& count,
                              const std::string& help) {
  return add_text(app, "--count", count, help, "N");
}

CLI::Option* add_registry_option(CLI::App& app, std::string& registry) {
  return app
      .add_option("--registry", registry,
                  "where experiment and activity names resolve: a file, an http(s):// URL, or "
                  "builtin")
      ->type_name("SRC")
      ->capture_default_str();
}

}  // namespace flowmark::apps
