"""flowmark.multicast — the API of the Python `multicast` package (2.1), on flowmark.

A script written for the package runs with its import changed:

    import flowmark.multicast as multicast
    from flowmark.multicast import send, recv, hear, skt

    multicast.send.McastSAY()(group="239.1.1.2", port=59559, data="Hello World!")
    ok, text = multicast.recv.McastRECV()(groups=["239.1.1.2"], port=59559,
                                          group="239.1.1.2")
    multicast.__main__.McastDispatch().doStep(["HEAR", "--port", "59559", "--daemon"])

The same classes, functions, arguments, defaults and return conventions: McastSAY,
McastRECV, McastHEAR (and its McastServer / HearUDPHandler), McastDispatch().doStep(...),
genSocket / endSocket, joinstep / tryrecv / recvstep, EXIT_CODES, mtool, the
_MCAST_DEFAULT_* constants and the MULTICAST_* environment. Sockets are set up by flowmark's
C++ library (flowmark.mcast), so groups may also be IPv6 ("ff02::1:77%eth0") and interfaces
are given by name ("eth0"), index or address where the package took only an IPv4 address.

Where this differs from the package (flowmark-python(7), MULTICAST):
  - the default port is 59559, as the package's documentation and `flowmark mcast` say
    (its code said 59259);
  - importing does not change socket.setdefaulttimeout() for the whole process; the
    sockets of genSocket() and joinstep() still time out after _MCAST_DEFAULT_TTL seconds;
  - a receiver reads whole datagrams (up to 65535 bytes, not 1316) and decodes invalid
    UTF-8 with replacement characters instead of failing;
  - HEAR joins --groups too (not only the bind group) and answers from its group socket.
HEAR, as the package's, answers every datagram and stops with success (exit 0) after one
containing STOP: anyone who can send to the group can stop it.
"""

import abc
import argparse
import logging

from .. import __version__ as __flowmark_version__
from . import exceptions
from . import env

__version__ = "2.1.0"
__prologue__ = f"Python Multicast library version {__version__} (flowmark {__flowmark_version__})."

logging.getLogger("multicast").addHandler(logging.NullHandler())

EXIT_CODES = exceptions.EXIT_CODES
EXCEPTION_EXIT_CODES = exceptions.EXCEPTION_EXIT_CODES
CommandExecutionError = exceptions.CommandExecutionError
ShutdownCommandReceived = exceptions.ShutdownCommandReceived
get_exit_code_from_exception = exceptions.get_exit_code_from_exception
exit_on_exception = exceptions.exit_on_exception

_BLANK = ""
_MCAST_DEFAULT_BUFFER_SIZE = env.DEFAULT_BUFFER_SIZE
_MCAST_DEFAULT_PORT = env.DEFAULT_PORT
_MCAST_DEFAULT_GROUP = env.DEFAULT_GROUP
_MCAST_DEFAULT_TTL = env.DEFAULT_TTL

_config = env.load_config()
_MCAST_DEFAULT_PORT = _config["port"]
_MCAST_DEFAULT_GROUP = _config["group"]
_MCAST_DEFAULT_TTL = _config["ttl"]
_MCAST_DEFAULT_BUFFER_SIZE = _config["buffer_size"]
_MCAST_DEFAULT_BIND_IP = _config["bind_addr"]
_MCAST_DEFAULT_GROUPS = _config["groups"]
del _config


class mtool(abc.ABC):  # noqa: N801 - the package's name
    """A multicast tool: its arguments (setupArgs) and its one step (doStep), called as
    tool(**kwargs). doStep returns a tuple (success, result)."""

    __proc__ = None
    __prologue__ = "Add a prologue here."
    __epilogue__ = "Add an epilogue here."

    @classmethod
    def buildArgs(cls, calling_parser_group):  # noqa: N802
        """The argparse parser of the tool (a new one when `calling_parser_group` is None,
        with -h/--help, -v/--version, --use-std and --daemon), its subcommands added by
        setupArgs."""
        if calling_parser_group is None:
            calling_parser_group = argparse.ArgumentParser(
                prog=str(cls.__name__ if cls.__proc__ is None else cls.__proc__),
                description=cls.__prologue__, epilog=cls.__epilogue__, add_help=False)
            group = calling_parser_group.add_mutually_exclusive_group(required=False)
            group.add_argument("-h", "--help", action="help")
            group.add_argument("-v", "--version", action="version",
                               version=f"%(prog)s {__version__}")
            calling_parser_group.add_argument(
                "--use-std", dest="is_std", default=False, action="store_true",
                help="Use interactive command mode. Disabled by default.")
            calling_parser_group.add_argument("--daemon", dest="is_daemon", default=False,
                                              action="store_true")
        subparsers = calling_parser_group.add_subparsers(
            title="Tools", dest="cmd_tool", help="Sub-Commands.", metavar="CMD")
        cls.setupArgs(subparsers)
        return calling_parser_group

    @classmethod
    def parseArgs(cls, arguments):  # noqa: N802
        """(namespace, unknown arguments) of `arguments` (a list; nested lists are
        flattened and values made text, so ["--port", 59559] works)."""
        return cls.buildArgs(None).parse_known_args(cls.checkToolArgs(arguments))

    @classmethod
    def checkToolArgs(cls, args):  # noqa: N802
        """[None] for None; otherwise the arguments flattened into a list of str."""
        if args is None:
            return [None]
        flat = []

        def add(a):
            if isinstance(a, (list, tuple)):
                for x in a:
                    add(x)
            elif a is not None:
                flat.append(str(a))

        add(args)
        return flat

    def __call__(self, *args, **kwargs):
        return self.doStep(*args, **kwargs)

    @classmethod
    @abc.abstractmethod
    def setupArgs(cls, parser):  # noqa: N802
        """Adds the tool's arguments to `parser` (a subparsers object or None)."""

    @abc.abstractmethod
    def doStep(self, *args, **kwargs):  # noqa: N802
        """Runs the tool once; returns (success, result)."""
        raise NotImplementedError("Subclasses must implement this method.")


from . import skt  # noqa: E402 - after the constants it reads
from . import recv  # noqa: E402
from . import send  # noqa: E402
from . import hear  # noqa: E402


def __getattr__(name):
    # multicast.__main__ (McastDispatch, main, cli) on first use: imported eagerly it would be
    # in sys.modules before `python3 -m flowmark.multicast` runs it, which runpy warns about.
    if name == "__main__":
        import importlib
        return importlib.import_module(".__main__", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


genSocket = skt.genSocket
endSocket = skt.endSocket

__all__ = [
    "CommandExecutionError", "EXCEPTION_EXIT_CODES", "EXIT_CODES", "ShutdownCommandReceived",
    "_BLANK", "_MCAST_DEFAULT_BIND_IP", "_MCAST_DEFAULT_BUFFER_SIZE", "_MCAST_DEFAULT_GROUP",
    "_MCAST_DEFAULT_GROUPS", "_MCAST_DEFAULT_PORT", "_MCAST_DEFAULT_TTL", "__version__",
    "endSocket", "env", "exceptions", "exit_on_exception", "genSocket",
    "get_exit_code_from_exception", "hear", "mtool", "recv", "send", "skt",
]
