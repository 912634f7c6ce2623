// `flowmark label encode|decode`: argument parsing only; the work is in flowmark::scitags
// (label_commands.hpp): the Scitags IPv6 flow label by hand.
#include <cstdio>
#include <memory>
#include <string>

#include "command.hpp"
#include "flowmark/scitags/label_commands.hpp"
#include "options.hpp"

namespace flowmark::apps {

Command add_label_command(CLI::App& parent) {
  auto args = std::make_shared<scitags::LabelOptions>();
  auto* label = parent.add_subcommand("label", "encode or decode a Scitags IPv6 flow label");
  label->require_subcommand(1);
  label->footer(
      "Layout (20 bits): entropy 19-18, experiment 17-9 bit-reversed, entropy 8, activity 7-2, "
      "entropy 1-0.\n\n" +
      scitags::label_exit_help());
  auto* enc = label->add_subcommand("encode", "experiment and activity (ids or names) to a label");
  enc->add_option("EXP", args->experiment, "experiment id or registry name")->required();
  enc->add_option("ACT", args->activity, "activity id or registry name")->required();
  enc->add_option("--entropy", args->entropy, "the 5 entropy bits, 0..31 (default: random)")
      ->check(CLI::Range(0, 31));
  auto* dec = label->add_subcommand("decode", "a label (decimal or 0x hex) to its ids");
  dec->add_option("LABEL", args->label, "the flow label")->required();
  for (auto* sub : {enc, dec}) {
    add_registry_option(*sub, args->registry);
    sub->add_flag("--json", args->json, "print one JSON object");
  }
  return {label, [args, enc] {
            return enc->parsed() ? scitags::run_label_encode(*args, stdout)
                                 : scitags::run_label_decode(*args, stdout);
          }};
}

}  // namespace flowmark::apps
