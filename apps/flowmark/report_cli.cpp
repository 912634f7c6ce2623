// `flowmark report --store FILE|postgresql://...`: argument parsing only; the work is in
// flowmark::collector (report_command.hpp): the flows a collector stored, grouped by
// experiment, activity, sites or day, with their bytes and throughput percentiles.
//
//   flowmark report --store /var/lib/flowmark/flows.db
//   flowmark report --store postgresql://flowmark@db/flows --by experiment,day --format json
#include <cstdio>
#include <memory>
#include <string>

#include "command.hpp"
#include "flowmark/collector/report_command.hpp"

namespace flowmark::apps {

Command add_report_command(CLI::App& parent) {
  auto args = std::make_shared<collector::ReportCommandOptions>();
  CLI::App* app = parent.add_subcommand(
      "report",
      "totals of the flows a collector stored (flowmarkd's store backend): flows, bytes and "
      "throughput by experiment, activity, site or day");
  app->add_option("--store", args->store,
                  "the store: a SQLite file, or a postgresql:// URL (libpq's form)")
      ->required()
      ->type_name("FILE|URL");
  app->add_option("--from", args->from,
                  "only flows that started at or after this time: RFC 3339 or a UTC date")
      ->type_name("TIME");
  app->add_option("--to", args->to,
                  "only flows that started before this time: RFC 3339 or a UTC date")
      ->type_name("TIME");
  app->add_option("--by", args->by,
                  "group by these columns, comma-separated: experiment, activity, src_site, "
                  "dst_site, day (UTC)")
      ->type_name("COLUMNS")
      ->capture_default_str();
  app->add_option("--format", args->format, "text (a table), json (one array) or csv")
      ->type_name("FORMAT")
      ->capture_default_str();
  app->footer(
      "Columns: the --by ones (experiment and activity as names, with experiment_id and\n"
      "activity_id), flows, bytes (the sum of the flows' volumes, max(sent, received)),\n"
      "throughput_median and throughput_p95 (bytes/s, over the group's complete flows with a\n"
      "duration > 0; null when there are none).\n\n" +
      collector::report_exit_help());
  return Command{app, [args] { return collector::run_report(*args, stdout); }};
}

}  // namespace flowmark::apps
