// The TCP state of a live flow read from netlink sock_diag (INET_DIAG_INFO), shared by the
// backends that report it (Prometheus flow_tcp_*, `ongoing` fireflies): one netlink socket
// per reader, opened on first use; calls from several backend threads are serialised.
//
//   auto read = make_tcp_info_reader();   // the backends' TcpInfoReader / FlowInfoReader
//   std::optional<scitags::TcpInfo> info = read(event);
#pragma once

#include <functional>
#include <optional>

#include "flowmark/scitags/enrichment.hpp"
#include "flowmark/scitags/flow_event.hpp"

namespace flowmark::daemon {

// A reader over one lazily opened sock_diag socket. A flow announced from the other side
// is looked up the other way round; nothing (std::nullopt) for UDP, for a socket that is
// gone, or when sock_diag is unavailable (warned once).
std::function<std::optional<scitags::TcpInfo>(const scitags::FlowEvent&)> make_tcp_info_reader();

// The same for the whole struct tcp_info, state and congestion algorithm (the `ongoing`
// fireflies in flowd-go's shapes); its own sock_diag socket, opened on first use.
std::function<std::optional<scitags::TcpDetail>(const scitags::FlowEvent&)>
make_tcp_detail_reader();

}  // namespace flowmark::daemon
