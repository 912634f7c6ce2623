"""flowmark.multicast.send — McastSAY, the `multicast` package's sender.

    McastSAY().doStep(group="239.1.1.2", port=59559, data="Hello World!")  # (True, None)
    McastSAY().doStep(data=["Hello", "World!"])   # words joined by spaces
    McastSAY().doStep(data=["-"])                 # standard input, 1316 characters a datagram

Each datagram goes out through flowmark.mcast.send (flowmark's C++ sender): IPv4 or IPv6
groups; `iface` (name, index or address) and `ttl` may be given as extra keyword
arguments, or --iface / --ttl on the command line. A unicast destination is sent to with a
plain socket, as the package allowed.
"""

import ipaddress
import logging
import socket as _socket
import sys

from .. import mcast as _mcast
from . import mtool
from . import skt as _skt
import flowmark.multicast as _pkg

__all__ = ["McastSAY"]

module_logger = logging.getLogger("multicast.send")


def _is_multicast(host):
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_multicast
    except ValueError:
        return False


def _unquoted(text):
    text = str(text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


class McastSAY(mtool):
    """Multicast broadcaster tool: SAY."""

    __proc__ = "SAY"
    __prologue__ = "Python Multicast Broadcaster."
    __epilogue__ = "At least a message is needed: --message TEXT ..., or --pipe."

    @classmethod
    def setupArgs(cls, parser):  # noqa: N802
        if parser is None:
            return
        parser.add_argument("--port", type=int, default=_pkg._MCAST_DEFAULT_PORT)
        parser.add_argument("--group", "--mcast-group", "--bind-group", dest="group",
                            type=_unquoted, default=_pkg._MCAST_DEFAULT_GROUP)
        parser.add_argument("--groups", "--join-mcast-groups", required=False, nargs="*",
                            type=_unquoted,
                            dest="groups", help="multicast groups (ip addrs) to listen to join.")
        parser.add_argument("--iface", default=None,
                            help="interface to send from: name, index or address")
        parser.add_argument("--ttl", type=int, default=None, help="TTL / hop limit")
        msg = parser.add_argument_group()
        msg.add_argument("-m", "--message", nargs="+", dest="data",
                         default="PING from {name}: group: {group}, port: {port}")
        msg.add_argument("--pipe", action="store_const", const=["-"], dest="data",
                         help="read message from stdin (equivalent to --message -)")

    @staticmethod
    def _sayStep(group, port, data, iface=None, ttl=None):  # noqa: N802
        """Sends `data` (str, UTF-8 encoded; or bytes) to (group, port); True when sent."""
        payload = data.encode("utf8") if isinstance(data, str) else bytes(data)
        ttl = _pkg._MCAST_DEFAULT_TTL if ttl is None else int(ttl)
        if _is_multicast(group):
            _mcast.send(str(group), int(port), payload, iface=iface, ttl=ttl)
        else:
            family = _socket.AF_INET6 if ":" in str(group) else _socket.AF_INET
            sock = _skt.genSocket(family)
            try:
                sock.sendto(payload, (str(group), int(port)))
            finally:
                _skt.endSocket(sock)
        module_logger.debug("sent %d bytes to (%s, %s)", len(payload), group, port)
        return True

    def doStep(self, *args, **kwargs):  # noqa: N802
        """Sends kwargs["data"] (str, bytes, list of words, or ["-"] for standard input) to
        kwargs["group"]:kwargs["port"]; returns (success, None)."""
        group = kwargs.get("group", _pkg._MCAST_DEFAULT_GROUP)
        port = kwargs.get("port", _pkg._MCAST_DEFAULT_PORT)
        iface = kwargs.get("iface")
        ttl = kwargs.get("ttl")
        data = kwargs.get("data")
        if data == ["-"]:
            result = True
            while True:
                try:
                    chunk = sys.stdin.read(_pkg._MCAST_DEFAULT_BUFFER_SIZE)
                except OSError:
                    module_logger.exception("[CWE-228] Error reading from stdin.")
                    break
                if not chunk:
                    break
                result = self._sayStep(group, port, chunk, iface, ttl) and result
            return (result, None)
        if isinstance(data, list):
            message = " ".join(str(w) for w in data)
        elif isinstance(data, (bytes, bytearray)):
            message = bytes(data).decode("utf8")
        else:
            message = str(data)
        return (self._sayStep(group, port, message, iface, ttl), None)
