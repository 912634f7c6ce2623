// flowmark::scitags — the `flowmark label encode|decode` commands (the Scitags IPv6 flow
// label by hand), independent of argument parsing (apps/flowmark/label_cli.cpp parses).
//
//   LabelOptions o;  o.experiment = "atlas";  o.activity = "perfSONAR";  o.entropy = 0;
//   return run_label_encode(o, stdout);   // an exit code (core/exit_code.hpp)
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace flowmark::scitags {

struct LabelOptions {
  std::string experiment, activity;      // encode: ids, or names resolved through `registry`
  std::string label;                     // decode: decimal, or hexadecimal with 0x
  std::string registry = "builtin";      // a file, an http(s):// URL, or builtin
  std::optional<std::uint32_t> entropy;  // encode: the 5 entropy bits (none: random)
  bool json = false;                     // one JSON object instead of text
};

int run_label_encode(const LabelOptions& o, std::FILE* out);
int run_label_decode(const LabelOptions& o, std::FILE* out);

// The exit codes of both, as text for --help.
std::string label_exit_help();

}  // namespace flowmark::scitags
