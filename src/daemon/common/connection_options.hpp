// The configuration keys shared by the sources that follow this host's connections (the
// `sockets` source, netlink sock_diag polls; the `kernel-events` source, a BPF tracer):
// `ports` (an integer, or a list of "5201" / "8000-8100" strings), `experiment` +
// `activity` (ids or registry names; absent: Tag{} = the rules decide), and the part's
// name ("conns" for [source.conns]).
//
//   FM_TRY(o.ports, parse_ports(section));
//   FM_TRY(o.tag, parse_tag(section, context.registry));
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "daemon/common/tracker.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/daemon/config.hpp"
#include "flowmark/daemon/section.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::daemon::sockets {

Result<std::vector<PortRange>> parse_ports(Section& section);
Result<Tag> parse_tag(Section& section, const scitags::Registry* registry);
std::string source_name(const Section& section);

// An (experiment, activity) pair given as ids or names, resolved through `registry` (null:
// ids only); both 0 = let the rules decide. The error says which one and why.
Result<Tag> resolve_tag(std::string_view experiment, std::string_view activity,
                        const scitags::Registry* registry);

}  // namespace flowmark::daemon::sockets
