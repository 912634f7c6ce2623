"""flowmark.multicast.__main__ — the `multicast` package's command line and dispatcher.

    python3 -m flowmark.multicast (SAY|RECV|HEAR|NOOP) [--use-std] [--daemon] [--port PORT]
        [--iface IFACE] [--group BIND_GROUP] [--groups GROUP ...] [-m MESSAGE ... | --pipe]

    McastDispatch().doStep(["SAY", "--group", "239.1.1.2", "--message", "hi"])  # (0, ...)

doStep returns (exit code, detail): 0 when the tool succeeded, 70 when it ran and failed, 1
when the arguments could not be handled. RECV and HEAR run the receiver (one datagram)
without --daemon and the answering server (until a datagram containing STOP) with it, as
the package does. doStep also takes the verb and its arguments as two arguments
(doStep("HEAR", [...]), the package's README form) and nested lists.
"""

import argparse
import sys

from . import exceptions, hear, mtool, recv, send
import flowmark.multicast as _pkg

__all__ = ["McastDispatch", "McastNope", "McastRecvHearDispatch", "TASK_OPTIONS", "cli", "main"]


def unquoted(text):
    """An address as given, without the quotes a script may have put around it
    ("'224.0.0.1'")."""
    text = str(text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


class McastNope(mtool):
    """NOOP: does nothing, successfully."""

    __proc__ = "NOOP"
    __prologue__ = "No Operation."

    @classmethod
    def setupArgs(cls, parser):  # noqa: N802
        pass

    @staticmethod
    def NoOp(*args, **kwargs):  # noqa: N802
        return None

    def doStep(self, *args, **kwargs):  # noqa: N802
        result = self.NoOp(*args, **kwargs)
        return (result is None, result)


class McastRecvHearDispatch(mtool):
    """RECV and HEAR: the receiver without --daemon, the answering server with it."""

    __proc__ = "HEAR"
    __prologue__ = "Python Multicast Receiver. Primitives for a listener for multicast data."
    __epilogue__ = ("Generally speaking you want to bind to one of the groups you joined in "
                    "this module/instance.")

    @classmethod
    def setupArgs(cls, parser):  # noqa: N802
        if parser is None:
            return
        parser.add_argument("--port", type=int, default=_pkg._MCAST_DEFAULT_PORT)
        # Also after the verb (`multicast HEAR --daemon`, as flowmark's multicast command
        # takes them); SUPPRESS keeps a flag given before the verb.
        parser.add_argument("--daemon", dest="is_daemon", action="store_true",
                            default=argparse.SUPPRESS)
        parser.add_argument("--use-std", dest="is_std", action="store_true",
                            default=argparse.SUPPRESS)
        parser.add_argument("--iface", default=None,
                            help="interface of the joins: name, index or address; if "
                                 "unspecified, the route decides")
        parser.add_argument("--group", "--bind-group", dest="group", type=unquoted,
                            default=_pkg._MCAST_DEFAULT_GROUP,
                            help="the bind group: joined when --groups is not given, and "
                                 f"HEAR's group (default {_pkg._MCAST_DEFAULT_GROUP})")
        parser.add_argument("--groups", "--join-mcast-groups", dest="groups", default=[],
                            nargs="*", type=unquoted,
                            help="multicast groups to join (default: the bind group)")

    @staticmethod
    def _help_daemon_dispatch(*args, **kwargs):
        return kwargs.get("is_daemon", False)

    def doStep(self, *args, **kwargs):  # noqa: N802
        tool = hear.McastHEAR if self._help_daemon_dispatch(*args, **kwargs) else recv.McastRECV
        return tool().doStep(*args, **kwargs)


TASK_OPTIONS = {
    "NOOP": McastNope(),
    "RECV": McastRecvHearDispatch(),
    "SAY": send.McastSAY(),
    "HEAR": McastRecvHearDispatch(),
}


class McastDispatch(mtool):
    """The command line: the verb picks the tool of TASK_OPTIONS."""

    __proc__ = "multicast"
    __prologue__ = "The Main Entrypoint."
    __epilogue__ = "Called from the command line, this main component handles the CLI dispatch."

    @classmethod
    def setupArgs(cls, parser):  # noqa: N802
        if parser is None:
            return
        for name in sorted(TASK_OPTIONS):
            sub = parser.add_parser(name, help="...")
            type(TASK_OPTIONS[name]).setupArgs(sub)

    @staticmethod
    def useTool(tool, **kwargs):  # noqa: N802
        """Runs TASK_OPTIONS[tool] with kwargs: (done, result); a tool that raises gives
        (False, a message naming the error)."""
        if tool is None or tool not in TASK_OPTIONS:
            return (False, None)
        try:
            return TASK_OPTIONS[tool]([], **kwargs)
        except Exception as e:  # noqa: BLE001 - reported as the result, as the package does
            return (False, f"CRITICAL - Attempted '[{tool}]: {kwargs}' just failed! :: {e}")

    def doStep(self, *args, **kwargs):  # noqa: N802
        response = (64, exceptions.EXIT_CODES[64][1])
        try:
            argz, _ = type(self).parseArgs(list(args))
            tool = argz.cmd_tool
            del argz.__dict__["cmd_tool"]
            message = self.useTool(tool, **argz.__dict__)
            if message[0]:
                response = (0, message)
            else:
                response = (70, message)
                if sys.stdout.isatty():
                    print(str(message))
        except Exception as e:  # noqa: BLE001 - an exit code and a reason, as the package
            code = exceptions.get_exit_code_from_exception(e)
            response = (1, f"CRITICAL - Attempted '[{__name__}]: {args}' just failed! :: "
                           f"{code} {e}")
            if sys.stderr.isatty():
                print("WARNING - An error occurred while handling the arguments. Refused.",
                      file=sys.stderr)
                print(f"{exceptions.EXIT_CODES[code][1]}: {e}\n{e.args}", file=sys.stderr)
        return response


@exceptions.exit_on_exception
def main(*argv):
    """McastDispatch()(*argv): (exit code, detail)."""
    return McastDispatch()(*argv)


def cli():
    """The console command: the exit code of `multicast` with sys.argv."""
    if sys.argv is not None and len(sys.argv) > 1:
        return main(sys.argv[1:])[0]
    return main([__name__, "-h"])[0]


if __name__ == "__main__":
    sys.exit(cli())
