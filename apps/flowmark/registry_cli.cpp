// `flowmark registry`: argument parsing only; the work is in flowmark::scitags
// (registry_command.hpp): the registry of experiments and activities — the embedded copy, a
// file or an http(s):// URL — as a table or as one JSON document.
//
//   flowmark registry                                   # the embedded copy, as a table
//   flowmark registry --registry https://www.scitags.org/api.json --json
#include <cstdio>
#include <memory>
#include <string>

#include "command.hpp"
#include "flowmark/scitags/registry_command.hpp"

namespace flowmark::apps {

Command add_registry_command(CLI::App& parent) {
  auto args = std::make_shared<scitags::RegistryShowOptions>();
  CLI::App* app = parent.add_subcommand(
      "registry", "show the Scitags registry of experiments and activities (names and ids)");
  app->add_option("--source,--registry", args->source,
                  "where the registry comes from: a file, an http:// or https:// URL, or "
                  "builtin (the embedded copy of the public registry); --registry is the "
                  "preferred name, as on label and firefly (--source stays)")
      ->type_name("FILE|URL|builtin")
      ->capture_default_str();
  app->add_flag("--insecure", args->insecure,
                "do not verify the server certificate of an https:// source");
  app->add_option("--timeout", args->timeout_seconds,
                  "give up fetching a URL after this many seconds")
      ->check(CLI::Range(1L, 3600L))
      ->type_name("SECONDS")
      ->capture_default_str();
  app->add_flag("--json", args->json,
                "print the registry as one JSON document (the published format)");
  app->footer("Scitags combine the two ids as experiment << 6 | activity (65..65535).\n\n" +
              scitags::registry_exit_help());
  return Command{app, [args] { return scitags::run_registry_show(*args, stdout); }};
}

}  // namespace flowmark::apps
