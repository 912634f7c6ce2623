// flowmark::net — socket set-up shared by every module that opens one: UDP and TCP sockets
// (IPv6 ones IPv6-only, all close-on-exec), bind with an error that says what to do,
// getsockname as an Endpoint, buffer sizes (the FORCE variants when privileged) and the
// per-datagram packet info that DatagramReader decodes.
//
//   FM_TRY(UniqueFd fd, bind_udp({*IpAddress::parse("127.0.0.1"), 0}));
//   FM_TRY(Endpoint here, local_endpoint(fd.get()));   // the port the kernel chose
//   FM_TRY_VOID(set_receive_buffer(fd.get(), 32 << 20));
#pragma once

#include <cstdint>
#include <string_view>

#include "flowmark/core/address.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::net {

// A UDP socket of `family` (IPv6 sockets are IPv6-only), close-on-exec. `flags` are added to
// the socket type (SOCK_NONBLOCK).
Result<UniqueFd> open_udp_socket(Family family, int flags = 0);
// The same for TCP.
Result<UniqueFd> open_tcp_socket(Family family, int flags = 0);

// Binds `fd` to `local`. The error reads "<doing> <local>: <reason> — <what to do>", e.g.
// "cannot listen on 0.0.0.0:10514: Address already in use — <in_use_hint>".
Result<void> bind_to(int fd, const Endpoint& local, std::string_view doing = "cannot bind to",
                     std::string_view in_use_hint = "another program already uses the port");

// The address the socket is bound to (the real port when 0 was asked for).
Result<Endpoint> local_endpoint(int fd);

// open_udp_socket + bind_to.
Result<UniqueFd> bind_udp(const Endpoint& local, int flags = 0);
// A TCP listener on `local` (bind, listen). No SO_REUSEADDR: with port 0 it would let the
// kernel hand out a port that connections in TIME_WAIT still use.
Result<UniqueFd> listen_tcp(const Endpoint& local, int backlog = 128);
// A TCP listener on [::]:`port` that takes IPv4 connections too (IPV6_V6ONLY off: their
// addresses read as ::ffff:a.b.c.d), as servers listening on "[::]" often are.
Result<UniqueFd> listen_tcp_dual_stack(std::uint16_t port, int backlog = 128);
// Connects `fd` to `to`, again when a signal interrupts: a UDP socket gets its default
// destination, a blocking TCP socket is connected on return, a non-blocking one has sent its
// SYN (EINPROGRESS is success).
Result<void> connect_to(int fd, const Endpoint& to);
// A TCP connection to `to`: open_tcp_socket(family, `flags`) + connect_to. Blocking unless
// `flags` holds SOCK_NONBLOCK; then the connection is under way on return.
Result<UniqueFd> connect_tcp(const Endpoint& to, int flags = 0);

// setsockopt(fd, level, name, &value): an int option; the error names `what` and the value.
Result<void> set_int_option(int fd, int level, int name, int value, const char* what);
// SO_REUSEADDR: several sockets may bind the same port (multicast receivers).
Result<void> set_reuse_address(int fd);
// SO_REUSEPORT: several sockets (one per thread) share one port; the kernel spreads the
// datagrams over them by a hash of the sender's address and port.
Result<void> set_reuse_port(int fd);
// SO_RCVBUF / SO_SNDBUF in bytes; SO_RCVBUFFORCE / SO_SNDBUFFORCE first, so that a
// privileged process is not capped at net.core.rmem_max / wmem_max. 0 or less: unchanged.
Result<void> set_receive_buffer(int fd, int bytes);
Result<void> set_send_buffer(int fd, int bytes);

// Enables the control messages DatagramReader decodes: packet info (IP_PKTINFO /
// IPV6_RECVPKTINFO: the destination address and interface of each datagram) and kernel
// receive timestamps (SO_TIMESTAMPNS).
Result<void> enable_packet_info(int fd, Family family);

}  // namespace flowmark::net
