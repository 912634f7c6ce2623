"""flowmark.multicast.skt — genSocket() and endSocket(), as the `multicast` package has them.

genSocket() is a UDP socket of the standard socket module with SO_REUSEADDR, the default
multicast TTL and a timeout of _MCAST_DEFAULT_TTL seconds; genSocket(socket.AF_INET6) makes
an IPv6 one (hop limit instead of TTL). endSocket() shuts down its reading side and closes
it, ignoring a socket that is already closed.
"""

import socket as _socket

from . import _MCAST_DEFAULT_TTL

__all__ = ["endSocket", "genSocket"]


def genSocket(family=_socket.AF_INET):  # noqa: N802 - the package's name
    sock = _socket.socket(family, _socket.SOCK_DGRAM, _socket.IPPROTO_UDP)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    if family == _socket.AF_INET6:
        sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_MULTICAST_HOPS, _MCAST_DEFAULT_TTL)
    else:
        sock.setsockopt(_socket.IPPROTO_IP, _socket.IP_MULTICAST_TTL, _MCAST_DEFAULT_TTL)
    sock.settimeout(_MCAST_DEFAULT_TTL)
    return sock


def endSocket(sock=None):  # noqa: N802
    """Shuts down and closes `sock` (None: nothing to do); returns None."""
    if sock is None:
        return None
    try:
        try:
            sock.shutdown(_socket.SHUT_RD)
        finally:
            sock.close()
    except OSError:
        pass
    return None
