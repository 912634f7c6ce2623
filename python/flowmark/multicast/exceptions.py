"""flowmark.multicast.exceptions — the exit codes and exceptions of the `multicast` package.

EXIT_CODES maps each exit code to (the exception class that maps to it, or None; its
meaning), as the package's CEP-8 table does; get_exit_code_from_exception() and the
exit_on_exception decorator turn an exception into its code.
"""

import argparse
import functools
import logging

__all__ = [
    "CommandExecutionError",
    "EXCEPTION_EXIT_CODES",
    "EXIT_CODES",
    "ShutdownCommandReceived",
    "exit_on_exception",
    "get_exit_code_from_exception",
    "validate_exit_code",
]

_log = logging.getLogger("multicast.exceptions")


class CommandExecutionError(RuntimeError):
    """A command failed. CommandExecutionError([cause,] message, ..., [exit_code]) — the exit
    code is the last positional argument when it is an int (or exit_code=), default 1."""

    def __init__(self, *args, **kwargs):
        if args and isinstance(args[-1], int):
            code, args = args[-1], args[:-1]
        else:
            code = kwargs.pop("exit_code", 1)
        cause = None
        if args and isinstance(args[0], BaseException):
            cause, args = args[0], args[1:]
        else:
            cause = kwargs.pop("__cause__", None)
        super().__init__(*args, **kwargs)
        if cause is not None:
            self.__cause__ = cause
        self.message = (args[0] if args else kwargs.get("message")) or "An error occurred"
        self.exit_code = code


class ShutdownCommandReceived(RuntimeError):
    """HEAR received a datagram containing STOP. Its exit_code is 143."""

    def __init__(self, *args, **kwargs):
        cause = None
        if args and isinstance(args[0], BaseException):
            cause, args = args[0], args[1:]
        else:
            cause = kwargs.pop("__cause__", None)
        if args and isinstance(args[0], str):
            message, args = args[0], args[1:]
        else:
            message = kwargs.pop("message", "SHUTDOWN")
        if not isinstance(message, str):
            raise TypeError("[CWE-573] message must be a string")
        super().__init__(message, *args, **kwargs)
        if cause is not None:
            self.__cause__ = cause
        self.message = message
        self.exit_code = 143


EXIT_CODE_RANGE_ERROR = "Exit code must be an integer between 0 and 255"


def validate_exit_code(code):
    """Raises ValueError unless `code` is an int in 0..255."""
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 255:
        raise ValueError(EXIT_CODE_RANGE_ERROR)


EXIT_CODES = {
    0: (None, "Success"),
    1: (RuntimeError, "General Error"),
    2: (OSError, "Misuse of Shell Builtins"),
    64: (argparse.ArgumentError, "Usage Error"),
    65: (ValueError, "Data Error"),
    66: (FileNotFoundError, "No Input"),
    69: (ConnectionError, "Unavailable Service"),
    70: (Exception, "Internal Software Error"),
    77: (PermissionError, "Permission Denied"),
    125: (BaseException, "Critical Failure"),
    126: (AssertionError, "Command Invoked Cannot Execute"),
    127: (ModuleNotFoundError, "Command Not Found"),
    129: (None, "Hangup (SIGHUP)"),
    130: (KeyboardInterrupt, "Interrupt (SIGINT)"),
    134: (None, "Abort (SIGABRT)"),
    137: (None, "Killed (SIGKILL)"),
    141: (BrokenPipeError, "Broken Pipe (SIGPIPE)"),
    143: (SystemExit, "Terminated (SIGTERM)"),
    255: (None, "Exit Status Out of Range"),
}

EXCEPTION_EXIT_CODES = {exc: code for code, (exc, _) in EXIT_CODES.items() if exc is not None}


def get_exit_code_from_exception(exc):
    """The exit code of `exc`: its own class's, else the first class of the table it is an
    instance of (in the table's order), else 70."""
    code = EXCEPTION_EXIT_CODES.get(type(exc))
    if code is not None:
        return code
    for cls, code in EXCEPTION_EXIT_CODES.items():
        if isinstance(exc, cls):
            return code
    return 70


def exit_on_exception(func):
    """Decorates `func` so that any exception leaving it becomes SystemExit(its exit code),
    logged as a warning."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        logger = logging.getLogger(getattr(func, "__name__", "multicast"))
        try:
            return func(*args, **kwargs)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
            logger.warning("%s: %s", EXIT_CODES.get(code, (None, "Exit"))[1], e)
            raise SystemExit(code) from e
        except BaseException as e:  # noqa: BLE001 - every exception becomes an exit code
            code = get_exit_code_from_exception(e)
            logger.warning("%s: %s", EXIT_CODES[code][1], e)
            raise SystemExit(code) from e

    return wrapper
