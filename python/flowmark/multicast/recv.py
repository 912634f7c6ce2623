"""flowmark.multicast.recv — McastRECV and the receive steps of the `multicast` package.

    sock = joinstep(["239.1.1.2"], 59559, iface="eth0", bind_group="239.1.1.2")
    text = recvstep("", None, sock)        # one datagram as text ("" after the timeout)
    McastRECV().doStep(groups=["239.1.1.2"], port=59559, group="239.1.1.2")  # (ok, text)

joinstep() returns a standard socket.socket, set up by flowmark's C++ library (bound to the
port, joined to every group on `iface`, other groups on the port never delivered) with a
timeout of _MCAST_DEFAULT_TTL seconds. Groups may be IPv4 or IPv6 ("ff02::1:77%eth0");
`iface` is an interface name, index or address (the package took an IPv4 address only).
"""

import logging
import socket as _socket
import sys
import warnings

from .. import mcast as _mcast
from . import mtool
from . import skt as _skt
import flowmark.multicast as _pkg

__all__ = ["McastRECV", "joinstep", "recvstep", "tryrecv"]

module_logger = logging.getLogger("multicast.recv")

# Whole datagrams (the package read at most _MCAST_DEFAULT_BUFFER_SIZE = 1316 bytes).
_READ_SIZE = 65535


def _validate_join_args(groups=None, port=None, iface=None, bind_group=None, isock=None):
    if not groups:
        groups = []
        if bind_group and _pkg.env.validate_multicast_address(bind_group):
            groups = [bind_group]
        elif __debug__:
            warnings.warn("Unusual call to multicast.joinstep with no groups: give the groups "
                          "to join, or a multicast bind_group", category=SyntaxWarning,
                          stacklevel=3)
    return groups, port, iface, bind_group, isock


def joinstep(groups, port, iface=None, bind_group=None, isock=None):
    """A socket.socket bound to `port` and joined to `groups` (default: [bind_group]) on
    `iface`. `isock`: a socket whose timeout the new one takes (the package used its
    duplicate). OSError when the socket cannot be set up."""
    groups, _, _, bind_group, _ = _validate_join_args(groups=groups, bind_group=bind_group)
    if not groups:
        raise OSError("[CWE-440] Socket operation failed: no multicast group to join")
    try:
        fd = _mcast.open_joined_socket([str(g) for g in groups], int(port), iface=iface)
    except (OSError, ValueError) as e:
        raise OSError(f"[CWE-440] Socket operation failed: {e}") from e
    family = _socket.AF_INET6 if ":" in str(groups[0]) else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_DGRAM, _socket.IPPROTO_UDP, fileno=fd)
    sock.settimeout(isock.gettimeout() if isock is not None else _pkg._MCAST_DEFAULT_TTL)
    return sock


def tryrecv(msgbuffer, chunk, sock):
    """msgbuffer + the next datagram on `sock` as text (socket.timeout when none comes)."""
    chunk = sock.recv(_READ_SIZE)
    if chunk is not None:
        msgbuffer += str(chunk, encoding="utf8", errors="replace")
    return msgbuffer


def recvstep(msgbuffer, chunk, sock):
    """Receives one datagram into msgbuffer (nothing on a timeout or an OS error; a Ctrl-C
    is logged) and closes `sock`."""
    try:
        msgbuffer = tryrecv(msgbuffer, chunk, sock)
    except KeyboardInterrupt:
        if sys.stdout.isatty():
            module_logger.warning("User Interrupted")
    except OSError:
        module_logger.debug("[CWE-440] Nothing happened. There seems to have been an OS error.")
    finally:
        if sock:
            _skt.endSocket(sock)
    if chunk is not None:
        msgbuffer += str(chunk, encoding="utf8", errors="replace")
    return msgbuffer


class McastRECV(mtool):
    """Receiver tool: RECV (one datagram, within _MCAST_DEFAULT_TTL seconds)."""

    __proc__ = "RECV"
    __prologue__ = "Python Multicast Receiver. Primitives for a listener for multicast data."
    __epilogue__ = ("Generally speaking you want to bind to one of the groups you joined in "
                    "this module/instance.")

    @classmethod
    def setupArgs(cls, parser):  # noqa: N802 - the arguments are McastRecvHearDispatch's
        pass

    @staticmethod
    def _hearstep(groups, port, iface=None, bind_group=None):  # noqa: N802
        sock = joinstep(groups, port, iface, bind_group, None)
        return recvstep(_pkg._BLANK, None, sock)

    def doStep(self, *args, **kwargs):  # noqa: N802
        """Receives one datagram on kwargs["groups"] (default: the bind group
        kwargs["group"]) and kwargs["port"]; prints it when standard output is a terminal or
        kwargs["is_std"]; returns (True, text) or (False, None) when nothing came."""
        response = self._hearstep(
            kwargs.get("groups", [_pkg._MCAST_DEFAULT_GROUP]),
            kwargs.get("port", _pkg._MCAST_DEFAULT_PORT),
            kwargs.get("iface", None),
            kwargs.get("group", _pkg._MCAST_DEFAULT_GROUP))
        if (sys.stdout.isatty() or kwargs.get("is_std", False)) and len(response) > 0:
            print(_pkg._BLANK)
            print(str(response))
            print(_pkg._BLANK)
        ok = len(response) > 0
        return (ok, response if ok else None)
