"""Helpers shared by the integration tests that build hosts from network namespaces:
set-up commands that fail loudly, namespace clean-up that runs even when a test (or the
interpreter) stops half-way, two hosts joined by a veth pair, waits for a process to be
ready, and writing lines into flowmarkd's named pipe."""
import atexit
import ctypes
import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time

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


class Ipv6PacketCapture:
    """A packet socket on `dev` inside namespace `ns`, reading every incoming IPv6 frame on a
    thread. Subclasses turn a frame into a tuple whose second item is the source port
    (parse(frame) -> tuple or None); take() hands them out by source port."""

    ETH_P_IPV6 = 0x86DD

    def __init__(self, ns, dev):
        self.sock = in_netns(ns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                                       socket.htons(self.ETH_P_IPV6)))
        self.sock.bind((dev, 0))
        self.packets, self.lock, self.stop = [], threading.Lock(), False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def parse(self, frame):
        raise NotImplementedError

    def _run(self):
        while not self.stop:
            if not select.select([self.sock], [], [], 0.05)[0]:
                continue
            frame, meta = self.sock.recvfrom(65535)
            if meta[2] == socket.PACKET_OUTGOING or len(frame) < 14 + 40 + 4:
                continue
            packet = self.parse(frame)
            if packet is not None:
                with self.lock:
                    self.packets.append(packet)

    def take(self, sport, at_least=1):
        """The packets from `sport` (forgotten here), once at least `at_least` came and the
        count is steady for 0.2 s."""
        deadline, last = time.monotonic() + 5, -1
        while time.monotonic() < deadline:
            time.sleep(0.2)
            with self.lock:
                n = sum(1 for p in self.packets if p[1] == sport)
            if n >= at_least and n == last:
                break
            last = n
        with self.lock:
            mine = [p for p in self.packets if p[1] == sport]
            self.packets = [p for p in self.packets if p[1] != sport]
        if len(mine) < at_least:
            raise AssertionError(f"{len(mine)} packets from port {sport}, expected {at_least}+")
        return mine

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def signals_handled(pid, signals=(signal.SIGINT, signal.SIGTERM)):
    """True once process `pid` handles every one of `signals` itself: blocked (our event
    loops read them from a signalfd) or caught (a handler). Our tools set that up right
    after opening their sockets or captures, so it also means "ready"."""
    try:
        with open(f"/proc/{pid}/status") as f:
            masks = {k: int(v, 16) for k, _, v in
                     (line.partition(":") for line in f if line.startswith(("SigBlk", "SigCgt")))}
    except FileNotFoundError:
        return False
    mask = masks.get("SigBlk", 0) | masks.get("SigCgt", 0)
    return all(mask & (1 << (int(s) - 1)) for s in signals)


def wait_signals_handled(pid, timeout=5, signals=(signal.SIGINT, signal.SIGTERM)):
    """Waits until process `pid` handles `signals` itself (see signals_handled): then a
    signal is handled, not fatal, and the process is set up."""
    deadline = time.monotonic() + timeout
    while not signals_handled(pid, signals):
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} does not handle {[s.name for s in signals]} "
                                 f"within {timeout} s")
        time.sleep(0.01)


def wait_until(predicate, timeout, what):
    """Polls predicate() until it is true and returns its value; fails naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)
    return value


def wait_stdout(p, predicate, timeout=5, what="output"):
    """Reads the stdout of Popen `p` as it comes until predicate(text so far) is true. The
    bytes read are kept in p.early_out: prepend early_stdout(p) to what communicate() then
    returns (communicate reads the pipe's fd directly, after these bytes)."""
    deadline = time.monotonic() + timeout
    fd = p.stdout.fileno()
    p.early_out = getattr(p, "early_out", b"")
    while not predicate(p.early_out.decode(errors="replace")):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{what}: not within {timeout} s; stdout so far "
                                 f"{p.early_out!r}")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"{what}: {p.args} closed its stdout; so far "
                                     f"{p.early_out!r}")
            p.early_out += chunk


def early_stdout(p):
    """What wait_stdout() read of p's stdout ("" if nothing)."""
    return getattr(p, "early_out", b"").decode(errors="replace")


def write_pipe(path, text, timeout=5):
    """Opens the FIFO for writing once it has a reader (waiting up to `timeout` seconds for
    one), writes `text`, closes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        os.set_blocking(fd, True)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class VethHosts:
    """Two hosts, namespaces A and B, joined by a veth pair. `a` and `b` are (device, IPv4,
    IPv6) for each end: a /24 and a /64 (no duplicate address detection, so link-local
    addresses are usable at once), loopback up, a route for 224.0.0.0/4 on the device, and
    an optional MTU. After create(), link_local[namespace] is the device's link-local
    address. Namespace names start with `prefix` and are unique per process and instance."""

    _serial = 0

    def __init__(self, prefix, a, b, mtu=None):
        VethHosts._serial += 1
        self.a = f"{prefix}A{os.getpid()}n{VethHosts._serial}"
        self.b = f"{prefix}B{os.getpid()}n{VethHosts._serial}"
        self.ends = ((self.a, *a), (self.b, *b))
        self.mtu = mtu
        self.link_local = {}

    def create(self):
        for ns in (self.a, self.b):
            _sh(["ip", "netns", "add", ns])
            _live_namespaces.add(ns)
        (_, if_a, _, _), (_, if_b, _, _) = self.ends
        _sh(["ip", "-n", self.a, "link", "add", if_a, "type", "veth", "peer", "name", if_b,
             "netns", self.b])
        for ns, dev, v4, v6 in self.ends:
            _sh(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0"])
            if self.mtu:
                _sh(["ip", "-n", ns, "link", "set", dev, "mtu", str(self.mtu)])
            _sh(["ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev])
            _sh(["ip", "-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad"])
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            _sh(["ip", "-n", ns, "link", "set", dev, "up"])
            _sh(["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])
        for ns, dev, _, _ in self.ends:
            self.link_local[ns] = wait_link_local(ns, dev)

    def destroy(self):
        _delete_namespace(self.a)
        _delete_namespace(self.b)


def wait_link_local(ns, dev, timeout=5):
    """The usable (not tentative) IPv6 link-local address of `dev` in `ns`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = _sh(["ip", "-j", "-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link"]).stdout
        for link in json.loads(out or "[]"):
            for a in link.get("addr_info", []):
                if a.get("family") == "inet6" and not a.get("tentative"):
                    return a["local"]
        time.sleep(0.05)
    raise RuntimeError(f"no link-local address on {dev} in {ns} within {timeout} s")


def wait_udp_ready(test, ns, p, port, sockets=1, dev=None, groups=(), users=1, timeout=5):
    """Waits until process p has `sockets` UDP sockets bound to `port` in namespace `ns`
    (None: this one), every group in `groups` has at least `users` memberships on `dev`, and
    p handles SIGINT and SIGTERM; fails `test` (a TestCase) when p exits first or after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pid_re = re.compile(rf":{port}\s.*pid={p.pid},")
    in_ns = ["ip", "netns", "exec", ns] if ns else []
    while True:
        if p.poll() is not None:
            out, err = p.communicate()
            test.fail(f"{p.args} exited early ({p.returncode}): {out!r} {err!r}")
        bound = sum(1 for line in _sh(in_ns + ["ss", "-Hulpn"]).stdout.splitlines()
                    if pid_re.search(line))
        joined = True
        if bound >= sockets and groups:
            maddr = _sh(["ip", "-n", ns, "maddr", "show", "dev", dev]).stdout
            for g in groups:
                m = re.search(rf"^\s*inet6?\s+{re.escape(g)}(?:\s+users\s+(\d+))?(?:\s|$)",
                              maddr, re.M)
                if not m or int(m.group(1) or 1) < users:
                    joined = False
        if bound >= sockets and joined:
            # SIGINT/SIGTERM are blocked (signalfd) once the sockets are set up
            wait_signals_handled(p.pid)
            return
        if time.monotonic() > deadline:
            test.fail(f"{p.args} not ready on port {port} / {groups} within {timeout} s")
        time.sleep(0.02)


def firefly_doc(src, dst, **over):
    """A firefly (JSON, bytes): a TCP flow start from src:1 to dst:2, experiment 2 activity 1.
    Keyword arguments update its parts: flow_id={"src-port": 7} changes doc["flow-id"]."""
    doc = {"version": 1,
           "flow-lifecycle": {"state": "start", "start-time": "2025-03-25T10:00:00Z"},
           "flow-id": {"afi": "ipv4", "src-ip": src, "dst-ip": dst, "protocol": "tcp",
                       "src-port": 1, "dst-port": 2},
           "context": {"experiment-id": 2, "activity-id": 1}}
    for k, v in over.items():
        doc[k.replace("_", "-")].update(v)
    return json.dumps(doc).encode()


class NetnsProcesses:
    """unittest.TestCase mix-in: runs commands inside network namespace `ns` (None: this
    one) with the default SIGINT disposition. ENV (None: inherit) is the environment of
    every command, updated by a call's `env`. Spawned processes are killed at the end of the
    test; finish() records p.elapsed, the seconds since p was spawned."""

    ENV = None

    @staticmethod
    def _argv(ns, args):
        return (["ip", "netns", "exec", ns] if ns else []) + list(args)

    def _env(self, env):
        if self.ENV is None and not env:
            return None
        e = dict(os.environ if self.ENV is None else self.ENV)
        e.update(env or {})
        return e

    def run_cmd(self, ns, args, timeout=10, env=None, input=None, text=True):
        """Runs to completion; returns (exit code, stdout, stderr)."""
        r = subprocess.run(self._argv(ns, args), input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=self._env(env), timeout=timeout, text=text,
                           preexec_fn=_default_sigint)
        return r.returncode, r.stdout, r.stderr

    def spawn(self, ns, args, env=None):
        p = subprocess.Popen(self._argv(ns, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=self._env(env), text=True, preexec_fn=_default_sigint)
        p.started = time.monotonic()

        def cleanup():
            if p.poll() is None:
                p.kill()
            try:
                p.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        self.addCleanup(cleanup)
        return p

    def finish(self, p, timeout=10):
        """Waits for a spawned process; returns (exit code, stdout, stderr)."""
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            self.fail(f"{p.args} did not finish within {timeout} s; stdout={out!r} stderr={err!r}")
        p.elapsed = time.monotonic() - p.started
        out = early_stdout(p) + (out or "")  # what wait_stdout() already read
        return p.returncode, out, err
