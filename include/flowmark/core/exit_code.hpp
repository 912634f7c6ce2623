// flowmark::core — the one table of exit codes of `flowmark` (every command) and `flowmarkd`.
//
// One meaning per number, taken from sysexits.h where one fits (64..78), plus 0, 1, 2 and
// 128+signal as shells use them. The multicast commands' numbers (0 1 2 68 69 70 77 130
// 143) are the ones the `multicast` tool documents; the others fit around them.
// Each command lists in its --help the codes it can return, rendered from this table:
//
//   return exit_code_for(error);  // a failed set-up call: 2, 68, 69, 70 or 77
//   sub->footer(exit_code_help({{kExitOk}, {kExitNothing, "nothing received"}, {kExitUsage}}));
#pragma once

#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "flowmark/core/result.hpp"

namespace flowmark {

enum ExitCode : int {
  kExitOk = 0,             // success
  kExitNothing = 1,        // completed without full success (a warning says why)
  kExitUsage = 2,          // bad flag, argument or value on the command line
  kExitDataErr = 65,       // EX_DATAERR: input data is malformed (a registry, a capture)
  kExitNoInput = 66,       // EX_NOINPUT: an input file or source cannot be opened or read
  kExitNoInterface = 68,   // the named interface does not exist
  kExitUnavailable = 69,   // EX_UNAVAILABLE: the kernel refused (a join, a bind, a capture)
  kExitSoftware = 70,      // EX_SOFTWARE: socket or internal error
  kExitIoErr = 74,         // EX_IOERR: writing the output failed
  kExitNoPermission = 77,  // EX_NOPERM: not permitted (needs root or a capability)
  kExitConfig = 78,        // EX_CONFIG: the configuration file is missing or invalid
  kExitInterrupted = 130,  // 128 + SIGINT (Ctrl-C)
  kExitTerminated = 143,   // 128 + SIGTERM
};

// Every code above, in increasing order.
std::span<const ExitCode> all_exit_codes() noexcept;

// The one-line meaning of a code, e.g. "usage error (a bad flag, argument or value)".
std::string_view exit_code_meaning(ExitCode code) noexcept;

// The code for a failed set-up call: kInvalidArgument, kTruncated, kMalformed → 2;
// kNotFound → 68; kRefused, kUnsupported, EADDRINUSE, EADDRNOTAVAIL → 69; EPERM,
// EACCES → 77; anything else → 70.
int exit_code_for(const Error& error) noexcept;

// The code for the signal that ended a run (SIGINT → 130, SIGTERM → 143).
int exit_code_for_signal(int signal) noexcept;

// One line of a command's exit-code list: the code, and optionally when this command
// returns it ("nothing received before --timeout"), printed after the table's meaning.
struct ExitCodeUse {
  ExitCode code;
  std::string_view when = {};
};

// "Exit codes:\n  0    success\n  2    usage error: ...\n", for a --help footer: the
// codes a command can return, each with the table's meaning and the command's `when`.
std::string exit_code_help(std::initializer_list<ExitCodeUse> uses);
// The whole table, in the same layout (for `flowmark --help` and `flowmarkd --help`).
std::string exit_code_table();

}  // namespace flowmark
