"""Helpers shared by the integration tests that build hosts from network namespaces:
set-up commands that fail loudly, and namespace clean-up that runs even when a test (or
the interpreter) stops half-way."""
import atexit
import ctypes
import os
import signal
import subprocess
import threading

_live_namespaces = set()


def _sh(args, timeout=10, check=True, input=None):
    """Runs a set-up command (ip, nft, sysctl); raises with its stderr on failure."""
    r = subprocess.run(args, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def _delete_namespace(name):
    if name in _live_namespaces:
        _sh(["ip", "netns", "del", name], check=False)
        _live_namespaces.discard(name)


@atexit.register
def _delete_all_namespaces():
    for name in list(_live_namespaces):
        _delete_namespace(name)


def _default_sigint():
    # A child started from a background shell inherits SIGINT ignored; the SIGINT test
    # needs the default disposition (which the tool then blocks and reads by signalfd).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns, make):
    """make() run by a thread inside namespace `ns`: the sockets it opens live there."""
    out = {}

    def body():
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            out["value"] = make()
        except Exception as e:  # noqa: BLE001 - re-raised below
            out["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]
