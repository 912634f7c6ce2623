// flowmark::net — where IPFIX messages go, for `flowmark observe --ipfix` and flowmarkd's
// ipfix backend: a file (RFC 5655: the messages one after another), standard output ("-"),
// a UDP collector (udp://HOST:PORT, one message a datagram) or a TCP collector
// (tcp://HOST:PORT, RFC 7011 §10.4: the messages as one stream; PORT defaults to 4739).
//
// The messages come whole from an encoder (observe::IpfixWriter) with the number of data
// records each holds; this class knows only the 16-byte message header (RFC 7011 §3.1).
//
// TCP runs on a thread of its own, so send() never waits on the network: the connection is
// made without blocking; a collector that is down, refuses or goes away is tried again with
// exponential back-off (retry_initial doubling up to retry_max); meanwhile messages wait in
// a buffer of buffer_bytes, and a message that does not fit is dropped whole (its records
// counted in records_dropped). A new connection is a new session in which the collector
// knows no template: the templates-only message given to set_templates() goes first, then
// the messages waiting, in order. finish() waits up to its timeout for the buffer to drain
// and says how many records were not delivered. Messages the kernel had accepted when a
// collector went away are lost with the connection, as with any TCP exporter.
//
//   FM_TRY(auto out, IpfixExporter::open("tcp://collector.example.org:4739", {}));
//   observe::IpfixWriter w(opts, [&](std::span<const std::uint8_t> m) {
//     out->send(m, w.records_in_message());
//   });
//   out->set_templates(w.templates_message());
//   for (...) w.add(record);
//   w.flush();
//   auto end = out->finish(std::chrono::seconds(5));  // end.not_delivered, end.error
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/core/result.hpp"

namespace flowmark::net {

inline constexpr std::uint16_t kIpfixPort = 4739;  // IANA: IPFIX over UDP, TCP and SCTP

struct IpfixExportOptions {
  // TCP: bytes of messages held while no collector takes them; beyond, messages are dropped
  // (one message is held whatever the bound).
  std::size_t buffer_bytes = std::size_t{64} << 20;
  std::chrono::milliseconds retry_initial{100};       // TCP: first wait before connecting again
  std::chrono::milliseconds retry_max{30'000};        // TCP: the back-off doubles up to this
  std::chrono::milliseconds connect_timeout{10'000};  // TCP: a connection not made by then failed
  // TCP, connected, buffer full: send() waits for room rather than dropping (a capture file
  // read faster than the collector takes it); while disconnected it drops all the same.
  bool wait_for_room = false;
  bool append = false;  // a file is appended to (the service) instead of truncated (the tool)
  std::FILE* standard_output = nullptr;  // for "-" (nullptr: stdout)
  // Told of connection events (connected, lost, cannot connect), from the exporter's thread;
  // each message names the target. nullptr: not told.
  std::function<void(std::string_view)> log;
};

struct IpfixExportStats {
  // Handed to the file, the UDP socket or the TCP connection.
  std::uint64_t messages = 0, records = 0, bytes = 0;
  std::uint64_t connections = 0;  // TCP connections made
  std::uint64_t reconnects = 0;   // of them, after the first
  // Messages lost here and their records: TCP buffer full; UDP send failed; file write failed.
  std::uint64_t messages_dropped = 0, records_dropped = 0;
  std::uint64_t records_buffered = 0, bytes_buffered = 0;  // TCP: waiting now
};

class IpfixExporter {
 public:
  enum class Kind : std::uint8_t { kFile, kStdout, kUdp, kTcp };

  // Opens the file, or resolves the collector's address (UDP: connects the socket; TCP: the
  // thread starts connecting). The error names the target and what was wrong with it:
  // Errc::kInvalidArgument for a malformed target, an errno for a file that cannot be opened.
  static Result<std::unique_ptr<IpfixExporter>> open(std::string_view target,
                                                     IpfixExportOptions options = {});
  virtual ~IpfixExporter() = default;

  Kind kind() const noexcept { return kind_; }
  const std::string& target() const noexcept { return target_; }

  // The templates-only message sent first on each new TCP connection (and after reopen()).
  // TCP: the connecting starts here (or at the first send()), so that the first connection
  // too begins with it.
  virtual void set_templates(std::vector<std::uint8_t> message) = 0;
  // One whole message holding `records` data records. Never throws; TCP: never waits on the
  // network (unless wait_for_room, connected and the buffer full).
  virtual void send(std::span<const std::uint8_t> message, std::uint32_t records) noexcept = 0;
  // A file is closed and opened again (log rotation), the templates written first; nothing
  // for the other kinds.
  virtual Result<void> reopen() { return {}; }

  struct End {
    IpfixExportStats stats;
    std::uint64_t not_delivered = 0;  // TCP: records still buffered when the time was up
    std::optional<Error> error;       // a file write or close that failed
  };
  // The last messages out (TCP: waits up to `timeout` for a collector to take the buffer),
  // then closed. Call once; nothing may be sent after.
  virtual End finish(std::chrono::milliseconds timeout) = 0;

  // A snapshot, from any thread.
  virtual IpfixExportStats stats() const = 0;

 protected:
  IpfixExporter(Kind kind, std::string target) : kind_(kind), target_(std::move(target)) {}

 private:
  Kind kind_;
  std::string target_;
};

}  // namespace flowmark::net
