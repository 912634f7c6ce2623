// marker_driver — a FlowLabelMarker driven line by line from stdin, for the namespace tests
// (test_flowlabel_netns.py) until the service's flowlabel backend exists.
//
//   marker_driver IFACE [IFACE...]      attaches, prints "ready <prog id>", then reads:
//   set tcp|udp SRC SPORT DST DPORT EXP ACT ENTROPY [hbh|dst]
//                                     -> "ok <label> inserted|replaced" (hbh, dst: also the
//                                        hop-by-hop / destination-options option)
//   erase tcp|udp SRC SPORT DST DPORT                 -> "ok 1|0"
//   counters                                          -> "ok <marked> <not_in_map> ..."
//   detach IFACE                                      -> "ok"
//   quit                                              -> detaches everything, exits 0
// Every failure prints "error <message>" and the driver goes on.
#include <iostream>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/core/log.hpp"
#include "flowmark/scitags/flow_label.hpp"

using namespace flowmark;

namespace {

Result<bpf::FlowTuple> parse_flow(std::istringstream& in) {
  std::string proto, src, dst;
  unsigned sport = 0, dport = 0;
  if (!(in >> proto >> src >> sport >> dst >> dport))
    return fail(Errc::kInvalidArgument, "expected: tcp|udp SRC SPORT DST DPORT");
  bpf::FlowTuple f;
  f.protocol = proto == "udp" ? IPPROTO_UDP : IPPROTO_TCP;
  FM_TRY(f.src, IpAddress::parse(src));
  FM_TRY(f.dst, IpAddress::parse(dst));
  f.src_port = static_cast<std::uint16_t>(sport);
  f.dst_port = static_cast<std::uint16_t>(dport);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: marker_driver IFACE [IFACE...]\n");
    return 2;
  }
  init_logging("marker_driver", LogLevel::kInfo);  // to stderr: stdout is the protocol
  auto marker = bpf::FlowLabelMarker::load();
  if (!marker) {
    fmt::print("error {}\n", marker.error().message());
    return 1;
  }
  for (int i = 1; i < argc; ++i) {
    if (auto r = marker->attach(argv[i]); !r) {
      fmt::print("error {}\n", r.error().message());
      return 1;
    }
  }
  fmt::print("ready {}\n", marker->program_id());
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string verb;
    in >> verb;
    std::string reply;
    if (verb == "set") {
      auto f = parse_flow(in);
      unsigned exp = 0, act = 0, entropy = 0;
      std::string ext;
      in >> exp >> act >> entropy >> ext;
      auto label = scitags::encode_flow_label(exp, act, entropy);
      bpf::Mark mark;
      mark.ext_header = ext == "hbh"   ? bpf::ExtHeader::kHopByHop
                        : ext == "dst" ? bpf::ExtHeader::kDestinationOptions
                                       : bpf::ExtHeader::kNone;
      mark.experiment = static_cast<std::uint16_t>(exp);
      mark.activity = static_cast<std::uint8_t>(act);
      if (!f) {
        reply = "error " + f.error().message();
      } else if (!label) {
        reply = "error " + label.error().message();
      } else {
        mark.label = *label;
        auto r = marker->set(*f, mark);
        reply = r ? fmt::format("ok {} {}", *label,
                                *r == bpf::SetOutcome::kInserted ? "inserted" : "replaced")
                  : "error " + r.error().message();
      }
    } else if (verb == "erase") {
      auto f = parse_flow(in);
      auto r = f ? marker->erase(*f) : Result<bool>(std::unexpected(f.error()));
      reply = r ? fmt::format("ok {}", *r ? 1 : 0) : "error " + r.error().message();
    } else if (verb == "counters") {
      auto c = marker->counters();
      reply = c ? fmt::format("ok {} {} {} {} {} {} {} {}", c->marked, c->not_in_map, c->not_ipv6,
                              c->parse_error, c->not_tcp_udp, c->ext_added, c->ext_too_big,
                              c->ext_skipped)
                : "error " + c.error().message();
    } else if (verb == "detach") {
      std::string ifname;
      in >> ifname;
      auto r = marker->detach(ifname);
      reply = r ? "ok" : "error " + r.error().message();
    } else if (verb == "quit") {
      break;
    } else {
      reply = "error unknown command '" + verb + "'";
    }
    fmt::print("{}\n", reply);
    std::fflush(stdout);
  }
  marker->detach_all();
  fmt::print("bye\n");
  return 0;
}
