"""flowmark.multicast.hear — McastHEAR, the `multicast` package's answering server.

    McastHEAR().doStep(group="239.1.1.2", port=59559)   # until a datagram containing STOP

Every datagram (valid UTF-8) to the group is answered, to its sender, with
    HEAR [ <PAYLOAD IN UPPER CASE> SAID ('<sender ip>', <sender port>) ] from <group>
and a datagram containing STOP, once answered, shuts the server down: doStep then returns
(True, None), and the command line exits 0. Anyone who can send to the group can stop it.

McastServer is a socketserver.UDPServer whose socket flowmark's C++ library sets up: bound
to the port and joined to the bind group (and `groups`, if given) on `iface` — IPv6 groups
and interface names accepted. HearUDPHandler is the request handler that answers.
"""

import logging
import socketserver
import threading

from .. import mcast as _mcast
from . import mtool
from . import skt as _skt
import flowmark.multicast as _pkg

__all__ = ["HearUDPHandler", "McastHEAR", "McastServer"]

module_logger = logging.getLogger("multicast.hear")


class McastServer(socketserver.UDPServer):
    """A UDPServer on (group, port) whose socket is joined to the group (and `groups`) on
    `iface`."""

    __log_handle__ = "multicast.hear.McastServer"
    allow_reuse_address = True

    def __init__(self, server_address, RequestHandlerClass, bind_and_activate=True, *,  # noqa: N803
                 iface=None, groups=None):
        self.group = str(server_address[0]) if server_address else _pkg._MCAST_DEFAULT_GROUP
        self.iface = iface
        self.groups = [str(g) for g in (groups or [])]
        if ":" in self.group:
            self.address_family = _skt._socket.AF_INET6
        self.__logger = logging.getLogger(f"{self.__log_handle__}.{self.group}")
        super().__init__(server_address, RequestHandlerClass, bind_and_activate)

    @property
    def logger(self):
        return self.__logger

    def server_bind(self):
        """Replaces the plain socket by one bound to the port and joined to the groups."""
        port = int(self.server_address[1])
        joined = [self.group] + [g for g in self.groups if g != self.group]
        fd = _mcast.open_joined_socket(joined, port, iface=self.iface)
        self.socket.close()
        self.socket = _skt._socket.socket(self.address_family, _skt._socket.SOCK_DGRAM,
                                          _skt._socket.IPPROTO_UDP, fileno=fd)
        self.server_address = self.socket.getsockname()
        self.logger.info("bound on: %s", self.server_address)

    def server_activate(self):
        self.logger.info("server_activate")

    def handle_error(self, request, client_address):
        """A request whose handler raised: when it contained STOP, shut the server down (from
        another thread: shutdown() waits for serve_forever to end); else log it."""
        if request is not None and request[0] is not None and "STOP" in str(request[0]):
            threading.Thread(name="Kill_Thread", target=self.shutdown, daemon=True).start()
        else:
            super().handle_error(request, client_address)


def _sender_text(address):
    """('ip', port) as the package prints a sender (IPv6 addresses without flow and scope)."""
    return f"({str(address[0])!r}, {int(address[1])})"


class HearUDPHandler(socketserver.BaseRequestHandler):
    """Answers one datagram; raises ShutdownCommandReceived after answering one containing
    STOP."""

    def handle(self):
        data, sock = self.request
        if data is None or not sock:
            return None
        try:
            text = data.decode("utf8") if isinstance(data, bytes) else str(data)
        except UnicodeDecodeError:
            module_logger.debug("Received invalid UTF-8 data from %s", self.client_address[0])
            return None
        me = getattr(self.server, "group", None) or str(sock.getsockname()[0])
        reply = f"HEAR [ {text.upper()} SAID {_sender_text(self.client_address)} ] from {me}"
        module_logger.info("%s SAYS: %s to ALL", self.client_address[0], text.strip())
        try:
            sock.sendto(reply.encode("utf8"), self.client_address)
        except OSError as e:
            module_logger.warning("cannot answer %s: %s", self.client_address, e)
        if "STOP" in text:
            raise _pkg.exceptions.ShutdownCommandReceived("SHUTDOWN") from None
        return None


class McastHEAR(mtool):
    """Server tool: HEAR (answers until a datagram containing STOP)."""

    __proc__ = "HEAR"
    __prologue__ = "Python Multicast Server for multicast input."
    __epilogue__ = ("Generally speaking you want to bind to one of the groups you joined in "
                    "this module/instance.")

    @classmethod
    def setupArgs(cls, parser):  # noqa: N802 - the arguments are McastRecvHearDispatch's
        pass

    def doStep(self, *args, **kwargs):  # noqa: N802
        """Serves kwargs["group"]:kwargs["port"] (joining kwargs["groups"] too, on
        kwargs["iface"]) until a datagram containing STOP; returns (True, None). Ctrl-C
        raises KeyboardInterrupt."""
        host = kwargs.get("group", _pkg._MCAST_DEFAULT_GROUP)
        port = kwargs.get("port", _pkg._MCAST_DEFAULT_PORT)
        started = False
        server = None
        try:
            with McastServer((host, port), HearUDPHandler, iface=kwargs.get("iface"),
                             groups=kwargs.get("groups")) as server:
                started = True
                server.serve_forever(poll_interval=0.1)
        except KeyboardInterrupt as e:
            raise KeyboardInterrupt(f"HEAR has stopped due to interruption signal, was "
                                    f"previously listening on ({host}, {port}).") from e
        return (started, None)
