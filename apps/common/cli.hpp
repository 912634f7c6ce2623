// What the mains of both programs (`flowmark`, `flowmarkd`) share: parsing the command line
// with CLI11 the same way. Header-only (CLI11 is too), so that `flowmarkd` links nothing of
// the tool and the tool nothing of the service.
//
//   if (auto rc = parse_command_line(app, argc, argv, "flowmark")) return *rc;
//   ... run the parsed command ...
#pragma once

#include <cstdio>
#include <optional>
#include <string_view>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "flowmark/core/exit_code.hpp"

namespace flowmark::apps {

// Parses argc/argv into `app`. Returns nothing when the parsed command is to run; otherwise
// the exit code to return at once: 0 after --help or --version (printed on standard output),
// kExitUsage (2) after a bad flag, argument or value, reported on standard error as
// "<program>: error: <what>" followed by where to find the usage.
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv,
                                             std::string_view program) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "{0}: error: {1}\nRun '{0} --help' for usage.\n", program, e.what());
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace flowmark::apps
