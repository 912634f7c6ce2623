// flowmark::scitags — the `flowmark registry` command, independent of argument parsing
// (apps/flowmark/registry_cli.cpp parses): the registry of experiments and activities — the
// embedded copy, a file or an http(s):// URL — as a table or as one JSON document.
//
//   RegistryShowOptions o;  o.source = "https://www.scitags.org/api.json";  o.json = true;
//   return run_registry_show(o, stdout);   // an exit code (core/exit_code.hpp)
#pragma once

#include <cstdio>
#include <string>

#include "flowmark/core/result.hpp"

namespace flowmark::scitags {

struct RegistryShowOptions {
  std::string source = "builtin";  // a file, an http(s):// URL, or builtin
  bool insecure = false;           // do not verify the certificate of an https:// source
  bool json = false;               // the published JSON format instead of a table
  long timeout_seconds = 10;       // for fetching a URL
};

int run_registry_show(const RegistryShowOptions& o, std::FILE* out);

// The exit code for a registry that failed to load (Registry::load): 65 malformed, 2 a bad
// source name, 66 a source that cannot be read or fetched. Every command that loads one
// (registry, label, firefly send) uses it.
int registry_load_exit_code(const Error& error) noexcept;

// The exit codes of run_registry_show(), as text for --help.
std::string registry_exit_help();

}  // namespace flowmark::scitags
