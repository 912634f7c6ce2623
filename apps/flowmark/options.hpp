// The options several `flowmark` commands share, each declared once: the same name, value
// type, help wording and check everywhere (mcast say|recv|hear, firefly send|listen, stun,
// label).
// The value is kept as given and checked by the module that runs the command, through the
// parsers of flowmark/core/option_value.hpp (so that `mcast` can fall back to its MULTICAST_*
// environment and every error names where the value came from):
//
//   add_ttl_option(*sub, args.ttl);            // --ttl 0..255
//   add_rcvbuf_option(*sub, args.rcvbuf);      // --rcvbuf BYTES (32 MiB)
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace flowmark::apps {

// --group (names: e.g. "--group,--bind-group,--mcast-group"): a multicast group.
CLI::Option* add_group_option(CLI::App& app, std::optional<std::string>& group,
                              const std::string& help, const std::string& names = "--group");
// --source S...: the unicast source of a source-specific join (S, G); repeatable.
CLI::Option* add_source_option(CLI::App& app, std::vector<std::string>& sources,
                               const std::string& help);
// --iface IF: an interface by name, index or address.
CLI::Option* add_iface_option(CLI::App& app, std::optional<std::string>& iface,
                              const std::string& help);
// --ttl 0..255: the multicast TTL / hop limit (default 1).
CLI::Option* add_ttl_option(CLI::App& app, std::optional<std::string>& ttl);
// --rcvbuf BYTES: the socket receive buffer (default 32 MiB; 0: the kernel's default).
CLI::Option* add_rcvbuf_option(CLI::App& app, std::optional<std::string>& rcvbuf);
// --timeout SECONDS: a decimal number of seconds, more than 0 and at most 1000000.
CLI::Option* add_timeout_option(CLI::App& app, std::optional<std::string>& timeout,
                                const std::string& help);

// --count N: a number of datagrams, 1..2^62.
CLI::Option* add_count_option(CLI::App& app, std::optional<std::string>& count,
                              const std::string& help);
// --registry SRC: where experiment and activity names resolve (default builtin).
CLI::Option* add_registry_option(CLI::App& app, std::string& registry);

}  // namespace flowmark::apps
