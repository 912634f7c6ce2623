// flowmark::collector — the `flowmark report` command, independent of argument parsing
// (apps/flowmark/report_cli.cpp parses): totals of the flows in a store, one row per group —
// the --by columns, flows, bytes (the sum of volumes) and the median and 95th percentile of
// throughput (bytes/s, over complete flows with a duration > 0) — as a table, JSON or CSV.
//
//   ReportCommandOptions o;  o.store = "/var/lib/flowmark/flows.db";  o.by = "experiment,day";
//   return run_report(o, stdout);   // an exit code (core/exit_code.hpp)
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "flowmark/collector/store.hpp"

namespace flowmark::collector {

struct ReportCommandOptions {
  std::string store;                // a SQLite file or a postgresql:// URL
  std::optional<std::string> from;  // RFC 3339 time or YYYY-MM-DD (UTC): start_time >= from
  std::optional<std::string> to;    // the same: start_time < to
  std::string by = "experiment";    // comma-separated group columns (group_by_names())
  std::string format = "text";      // text, json or csv
};

int run_report(const ReportCommandOptions& o, std::FILE* out);

// The rows as the command prints them (for tests and other callers).
void format_report(const std::vector<ReportRow>& rows, const std::vector<GroupBy>& by,
                   std::string_view format, std::string& out);

// "2026-12-07T04:00:00Z" (RFC 3339) or "2026-12-07" (midnight UTC).
Result<Micros> parse_report_time(std::string_view text);
// "experiment,day" → the columns; an unknown name is an error listing the allowed ones.
Result<std::vector<GroupBy>> parse_group_by_list(std::string_view text);

// The exit codes of run_report(), as text for --help.
std::string report_exit_help();

}  // namespace flowmark::collector
