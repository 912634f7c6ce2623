// The `ipfix` backend: every flow that ends, as an IPFIX record (RFC 7011; biflows per RFC
// 5103), to a collector over UDP or TCP or to a file (RFC 5655), for the monitoring systems
// operators already run (nfdump, pmacct, ipfixcol2, Akvorado...). The same writer
// (observe::IpfixWriter) and exporter (net::IpfixExporter) as `flowmark observe --ipfix`.
//
// A record holds the addresses, ports, protocol, flowStart/EndMilliseconds and the octets
// each way from the event's usage (sent: forward, received: reverse; 0 when the source does
// not count them); packet counts are 0 (no source counts packets in its events yet). The
// record is written on the backend's worker thread; the network is the exporter's own
// thread (TCP) — on_event never waits on a socket. Messages leave when full and at least
// every second.
//   flowmark_ipfix_records_total{backend,outcome=exported|dropped}
//   flowmark_ipfix_messages_total{backend}, flowmark_ipfix_reconnects_total{backend},
//   flowmark_ipfix_buffered_bytes{backend} (gauge)
//
// [backend.ipfix]
// type = "ipfix"
// target = "tcp://collector.example.org:4739"  # udp://HOST[:PORT] | tcp://HOST[:PORT] | a file
// observation_domain = 0
// uniflow = false               # true: two uniflow records per flow, no RFC 5103 elements
// max_message = 65535           # bytes, 512..65535 (default 1400 for UDP)
// template_refresh_seconds = 60 # UDP (0: templates in the first message only; TCP and files)
// buffer = 67108864             # TCP: bytes held while the collector is down
// drain_timeout = 5.0           # seconds stop() waits for a TCP collector to take the buffer
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

Result<void> register_ipfix_backend(BackendFactories& factories);

}  // namespace flowmark::daemon
