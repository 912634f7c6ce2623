// flowmark — observe, mark and announce network flows; multicast messaging.
//
//   flowmark mcast say|recv|hear …   (also: `multicast SAY|RECV|HEAR …`)
#include <cstring>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "command.hpp"
#include "common/cli.hpp"
#include "flowmark/core/exit_code.hpp"
#include "mcast_cli.hpp"

namespace {

std::string_view basename_of(const char* path) {
  std::string_view p(path);
  auto slash = p.rfind('/');
  return slash == std::string_view::npos ? p : p.substr(slash + 1);
}

}  // namespace

static int flowmark_main(int argc, char** argv) {
  using flowmark::apps::McastInvocation;
  // Installed as `multicast` too: then the seed's grammar is the whole command line.
  if (argc >= 1 && basename_of(argv[0]) == "multicast")
    return flowmark::apps::multicast_main(argc, argv);
  if (argc >= 2 && std::strcmp(argv[1], "multicast") == 0)
    return flowmark::apps::multicast_main(argc - 1, argv + 1);

  CLI::App app{"flowmark: observe, mark and announce network flows; UDP multicast messaging",
               "flowmark"};
  app.set_version_flag("--version", "flowmark " FLOWMARK_VERSION);
  app.require_subcommand(1);
  McastInvocation inv;
  auto* mcast = app.add_subcommand("mcast",
                                   "send, receive and answer UDP multicast datagrams "
                                   "(also as `multicast SAY|RECV|HEAR`)");
  flowmark::apps::add_mcast_verbs(*mcast, inv);
  app.add_subcommand("multicast", "the seed's grammar: multicast SAY|RECV|HEAR [options]");
  // The one list of the other commands; each file adds its own subcommand.
  std::vector<flowmark::apps::Command> commands;
  commands.push_back(flowmark::apps::add_registry_command(app));
  commands.push_back(flowmark::apps::add_label_command(app));
  commands.push_back(flowmark::apps::add_observe_command(app));
  commands.push_back(flowmark::apps::add_firefly_command(app));
  commands.push_back(flowmark::apps::add_stun_command(app));
  commands.push_back(flowmark::apps::add_report_command(app));
#ifdef FLOWMARK_HAVE_BPF
  commands.push_back(flowmark::apps::add_bpf_command(app));
#endif
  app.footer(
      "Run 'flowmark <command> --help' for a command's options and the exit codes it "
      "returns.\n\n" +
      flowmark::exit_code_table());
  if (auto rc = flowmark::apps::parse_command_line(app, argc, argv, "flowmark")) return *rc;
  if (mcast->parsed()) return flowmark::apps::run_mcast(inv);
  for (const auto& c : commands)
    if (c.app->parsed()) return c.run();
  return flowmark::kExitUsage;
}

int main(int argc, char** argv) {
  try {
    return flowmark_main(argc, argv);
  } catch (const std::exception& e) {  // a bug, not an input error: say so and exit 70
    fmt::print(stderr, "flowmark: internal error: {}\n", e.what());
    return flowmark::kExitSoftware;
  }
}
