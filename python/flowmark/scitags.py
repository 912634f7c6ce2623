"""flowmark.scitags: Scitags fireflies, IPv6 flow labels, the registry, and announcing flows.

For storage systems and transfer tools that tag their flows (what XRootD and dCache do in C++
and Java), over flowmark's C++ codecs (the same ones `flowmark` and `flowmarkd` use):

    from flowmark import scitags
    doc = scitags.decode_firefly(datagram)          # a dict, field names as in the JSON
    wire = scitags.encode_firefly(doc)              # bytes: syslog header + compact JSON
    label = scitags.encode_label("atlas", "perfSONAR", entropy=0)   # 65544
    scitags.decode_label(label)                     # Label(experiment=2, activity=2, entropy=0)
    reg = scitags.Registry.builtin()                # or Registry.load(path_or_url)
    reg.experiment("atlas").id                      # 2

    # Tell flowmarkd (or flowd) about a flow through its named pipe:
    with scitags.Announcer() as a:                  # /run/flowmark/flowmark.pipe
        a.start("tcp", "192.0.2.1", 2345, "198.51.100.2", 5777, "atlas", "perfSONAR")
        ...
        a.end("tcp", "192.0.2.1", 2345, "198.51.100.2", 5777, "atlas", "perfSONAR")

    # Or send the fireflies yourself (to the flow's destination, port 10514, and collectors):
    scitags.send_firefly("start", "tcp", "192.0.2.1", 2345, "198.51.100.2", 5777, 2, 1,
                         collectors=["collector.example.org"])

Errors: a firefly the codec rejects raises FireflyError (a ValueError; .reason, .detail); a bad
argument ValueError with the codec's message; an unknown registry name LookupError; a file,
pipe or socket failure OSError.
"""

import datetime
import errno
import json
import os
import random
import stat
import threading
import time
from contextlib import contextmanager
from typing import NamedTuple

from ._flowmark import scitags as _c

__all__ = [
    "FIREFLY_PORT", "DEFAULT_PIPE", "FLOWD_PIPE", "FireflyError", "encode_firefly",
    "decode_firefly", "Label", "encode_label", "decode_label", "make_scitag", "split_scitag",
    "Activity", "Experiment", "Registry", "Announcer", "Sender", "send_firefly",
]

FIREFLY_PORT = _c.FIREFLY_PORT  # 10514
DEFAULT_PIPE = "/run/flowmark/flowmark.pipe"  # flowmarkd's named-pipe source's default
FLOWD_PIPE = "/var/run/flowd"  # flowd's (and flowmarkd's when it reads a flowd config)


class FireflyError(ValueError):
    """A firefly the codec rejects. `reason` is the rejection kind ("missing_field",
    "port_out_of_range", ... as in `flowmark firefly decode`), `detail` names the element."""

    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ---- times ---------------------------------------------------------------------------------
def _micros(t):
    """Microseconds since the epoch from None (0: unknown), a datetime (naive: local time, as
    datetime.timestamp() takes it), seconds as int/float, or an RFC 3339 string."""
    if t is None:
        return 0
    if isinstance(t, datetime.datetime):
        return round(t.timestamp() * 1_000_000)
    if isinstance(t, str):
        return _c.parse_time(t)
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return round(t * 1_000_000)
    raise TypeError(f"a time is a datetime, seconds since the epoch or an RFC 3339 string, "
                    f"not {type(t).__name__}")


def _json_default(o):
    if isinstance(o, datetime.datetime):
        return _c.format_time(_micros(o))
    raise TypeError(f"{type(o).__name__} is not JSON serializable in a firefly")


# ---- fireflies -----------------------------------------------------------------------------
def encode_firefly(document, *, header=True, hostname=None, app_name="flowmark",
                   timestamp=None):
    """The datagram of a firefly `document` (a dict nested as the JSON, in the schema's field
    names; times as RFC 3339 strings or datetimes).

    The document is checked exactly as a receiver checks it (FireflyError says why not) and
    written in the canonical compact form `flowmark firefly decode` prints (times in UTC with
    microseconds; members the schema does not name kept at the end). With `header` (default)
    it gets the RFC 5424 syslog header flowmark sends: `<134>1 TIMESTAMP HOSTNAME APP-NAME -
    firefly-json - `; `hostname` defaults to this host's name, `timestamp` (the header's) to
    now."""
    if not isinstance(document, dict):
        raise TypeError(f"a firefly document is a dict, not {type(document).__name__}")
    text = json.dumps(document, default=_json_default, separators=(",", ":"))
    r = _c.encode_firefly(text, header, hostname or "", app_name or "", _micros(timestamp))
    if isinstance(r, tuple):
        raise FireflyError(*r)
    return r


def decode_firefly(data, *, lenient=False, header=False):
    """The firefly in `data` (bytes or str; one datagram, syslog header optional, a trailing
    newline allowed) as a dict: exactly the JSON `flowmark firefly decode` prints for it.

    `lenient` accepts end events whose start-time is null or "" (flowd's defect). With
    `header=True` returns (document, header), header being {"hostname", "app-name",
    "timestamp"} (None where the datagram has the nil value) or None without one. Raises
    FireflyError (a ValueError) for what a receiver rejects."""
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = bytes(data)
    r = _c.decode_firefly(data, lenient)
    if not r[0].startswith("{"):
        raise FireflyError(*r)
    doc = json.loads(r[0])
    return (doc, r[1]) if header else doc


# ---- flow labels and scitags ---------------------------------------------------------------
class Label(NamedTuple):
    """A decoded Scitags IPv6 flow label."""
    experiment: int
    activity: int
    entropy: int


def _id(registry, experiment, activity):
    """(experiment id, activity id): ints as they are, names (str) through the registry."""
    reg = registry or Registry.builtin()
    if isinstance(experiment, str) and not experiment.isdigit():
        experiment = reg.experiment_id(experiment)
    experiment = int(experiment)
    if isinstance(activity, str) and not activity.isdigit():
        activity = reg.activity_id(experiment, activity)
    return experiment, int(activity)


def encode_label(experiment, activity, entropy=None, *, registry=None):
    """The 20-bit flow label of (experiment, activity): ids (int), or names resolved through
    `registry` (default: the built-in copy). `entropy` is the 5 entropy bits, 0..31; None draws
    them at random (once per flow: keep the label for the flow's life). Same as `flowmark label
    encode EXP ACT --entropy N`. ValueError for experiment > 511, activity > 63, entropy > 31."""
    exp, act = _id(registry, experiment, activity)
    if entropy is None:
        entropy = random.randrange(_c.MAX_ENTROPY + 1)
    for what, v in (("experiment", exp), ("activity", act), ("entropy", entropy)):
        if v < 0:
            raise ValueError(f"{what} {v} is negative")
    return _c.encode_label(exp, act, entropy)


def decode_label(label):
    """Label(experiment, activity, entropy) of a flow label (an int, 0..0xfffff), as `flowmark
    label decode` prints it. Names: Registry.builtin().experiment_name(...)."""
    return Label(*_c.decode_label(label))


def make_scitag(experiment, activity):
    """The combined "scitag" integer storage systems pass around: experiment << 6 | activity
    (experiment 1..1023, activity 1..63; ValueError otherwise)."""
    return _c.make_scitag(experiment, activity)


def split_scitag(scitag):
    """(experiment, activity) of a scitag (65..65535 with an activity part 1..63)."""
    return tuple(_c.split_scitag(scitag))


# ---- the registry --------------------------------------------------------------------------
class Activity(NamedTuple):
    name: str
    id: int


class Experiment(NamedTuple):
    name: str
    id: int
    activities: tuple  # of Activity, in the document's order


class Registry:
    """The registry of experiments and activities (flowd's FLOW_MAP_API document). Names map
    case-sensitively to ids. Lookups take a name or an id (int, or its decimal text)."""

    _builtin = None

    def __init__(self, impl):
        self._r = impl
        self._experiments = tuple(
            Experiment(n, i, tuple(Activity(an, ai) for an, ai in acts))
            for n, i, acts in impl.experiments())

    @classmethod
    def builtin(cls):
        """The copy of the public registry built into flowmark (no network needed)."""
        if cls._builtin is None:
            cls._builtin = cls(_c.Registry.builtin())
        return cls._builtin

    @classmethod
    def load(cls, source, *, verify_tls=True, timeout=10):
        """From a file path, an http(s):// URL (fetched now; the certificate verified unless
        verify_tls=False) or "builtin". OSError when it cannot be read or fetched, ValueError
        (naming the bad element) when it is not a registry document."""
        return cls(_c.Registry.load(os.fspath(source), verify_tls, int(timeout)))

    @classmethod
    def parse(cls, text, source_name="<string>"):
        """From the text of a registry document."""
        if isinstance(text, bytes):
            text = text.decode()
        return cls(_c.Registry.parse(text, source_name))

    @property
    def source(self):
        """Where it came from: "builtin", the path or the URL."""
        return self._r.source

    @property
    def modified(self):
        """The document's "modified" time as written there ("" when absent)."""
        return self._r.modified

    @property
    def experiments(self):
        """Every Experiment, in the document's order."""
        return list(self._experiments)

    def __iter__(self):
        return iter(self._experiments)

    def __len__(self):
        return len(self._experiments)

    def __contains__(self, name_or_id):
        try:
            self.experiment_id(name_or_id)
            return True
        except LookupError:
            return False

    def __repr__(self):
        return f"<flowmark.scitags.Registry {self.source!r}: {len(self)} experiments>"

    def experiment_id(self, name_or_id):
        """The id of experiment "atlas" (or "2", or 2) — LookupError naming the known ones."""
        return self._r.resolve_experiment(str(name_or_id))

    def activity_id(self, experiment, name_or_id):
        """The id of an activity (name or id) of an experiment (name or id)."""
        return self._r.resolve_activity(self.experiment_id(experiment), str(name_or_id))

    def experiment(self, name_or_id):
        """The Experiment of that name or id (LookupError if unknown)."""
        eid = self.experiment_id(name_or_id)
        return next(e for e in self._experiments if e.id == eid)

    def activity(self, experiment, name_or_id):
        """The Activity of that name or id in the experiment (LookupError if unknown)."""
        exp = self.experiment(experiment)
        aid = self._r.resolve_activity(exp.id, str(name_or_id))
        return next(a for a in exp.activities if a.id == aid)

    def experiment_name(self, experiment_id):
        """The name of an experiment id, or None."""
        return self._r.experiment_name(experiment_id)

    def activity_name(self, experiment_id, activity_id):
        """The name of an activity id of an experiment id, or None."""
        return self._r.activity_name(experiment_id, activity_id)


# ---- announcing flows ----------------------------------------------------------------------
_PROTOCOLS = {6: "tcp", 17: "udp"}


def _tokens(state, protocol, src, src_port, dst, dst_port, experiment, activity):
    protocol = _PROTOCOLS.get(protocol, protocol) if isinstance(protocol, int) else protocol
    return [str(x) for x in (state, protocol, src, src_port, dst, dst_port, experiment,
                             activity)]


def _registry_impl(registry):
    return (registry or Registry.builtin())._r


class Announcer:
    """Announces flows to flowmarkd (or flowd) through its named pipe, one line per event:
    `state protocol src_ip src_port dst_ip dst_port experiment activity` (flowd's np_api).

    `pipe` defaults to flowmarkd's /run/flowmark/flowmark.pipe (flowd's is FLOWD_PIPE,
    /var/run/flowd). The FIFO must exist and have a reader (the service): otherwise the
    constructor raises FileNotFoundError / ConnectionRefusedError at once, or after waiting up
    to `wait` seconds for one. Each event is checked here as the service checks it (ValueError
    naming the bad token), names resolved through `registry` (default: the built-in one) and
    written as ids in one write(2) — atomic, so several writers never interleave lines. A full
    pipe blocks the write until the service reads (back-pressure; nothing is dropped); Ctrl-C
    interrupts it. If the service restarts, the pipe is reopened once per failed write.

        with Announcer("/var/run/flowd") as a:
            a.start("tcp", src, sport, dst, dport, "atlas", "default")
            ...
            a.end("tcp", src, sport, dst, dport, "atlas", "default")

    Thread-safe. Usable as a context manager (closes the pipe), or call close() (which waits
    for a write another thread has blocked on a full pipe).
    """

    def __init__(self, pipe=DEFAULT_PIPE, *, registry=None, wait=0.0):
        self.pipe = os.fspath(pipe)
        self._registry = _registry_impl(registry)
        self._wait = float(wait)
        self._lock = threading.Lock()
        self._fd = -1
        self._open()

    def _open(self):
        try:
            st = os.stat(self.pipe)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT, f"{self.pipe} does not exist: is flowmarkd (or flowd) running with "
                f"a named-pipe source there?", self.pipe) from None
        if not stat.S_ISFIFO(st.st_mode):
            raise OSError(errno.EINVAL, f"{self.pipe} is not a named pipe (FIFO)", self.pipe)
        deadline = time.monotonic() + self._wait
        while True:
            try:
                fd = os.open(self.pipe, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                if time.monotonic() >= deadline:
                    raise ConnectionRefusedError(
                        errno.ENXIO, f"{self.pipe} has no reader: is flowmarkd (or flowd) "
                        f"running?", self.pipe) from None
                time.sleep(0.05)
        os.set_blocking(fd, True)  # a full pipe blocks the writer: back-pressure, not loss
        self._fd = fd

    def fileno(self):
        return self._fd

    @property
    def closed(self):
        return self._fd < 0

    def close(self):
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)

    def line(self, state, protocol, src, src_port, dst, dst_port, experiment, activity):
        """The line announce() would write (without the newline), or ValueError."""
        return _c.pipe_line(_tokens(state, protocol, src, src_port, dst, dst_port, experiment,
                                    activity), self._registry)

    def announce(self, state, protocol, src, src_port, dst, dst_port, experiment, activity):
        """Writes one event ("start", "ongoing" or "end"); returns the line written. Protocol
        "tcp"/"udp" (or 6/17), addresses as text or ipaddress objects, experiment and activity
        as ids or registry names."""
        text = self.line(state, protocol, src, src_port, dst, dst_port, experiment, activity)
        data = (text + "\n").encode()
        with self._lock:
            if self._fd < 0:
                raise ValueError("write to a closed Announcer")
            try:
                os.write(self._fd, data)
            except BrokenPipeError:
                # The reader went away (the service restarted): a new one may be there.
                os.close(self._fd)
                self._fd = -1
                self._open()
                os.write(self._fd, data)
        return text

    def start(self, protocol, src, src_port, dst, dst_port, experiment, activity):
        return self.announce("start", protocol, src, src_port, dst, dst_port, experiment,
                             activity)

    def ongoing(self, protocol, src, src_port, dst, dst_port, experiment, activity):
        return self.announce("ongoing", protocol, src, src_port, dst, dst_port, experiment,
                             activity)

    def end(self, protocol, src, src_port, dst, dst_port, experiment, activity):
        return self.announce("end", protocol, src, src_port, dst, dst_port, experiment,
                             activity)

    @contextmanager
    def flow(self, protocol, src, src_port, dst, dst_port, experiment, activity):
        """`with a.flow(...): transfer()` announces the start, and the end however the block
        ends."""
        args = (protocol, src, src_port, dst, dst_port, experiment, activity)
        self.start(*args)
        try:
            yield
        finally:
            self.end(*args)


def _usage(usage):
    if usage is None:
        return None
    if isinstance(usage, dict):
        return (int(usage.get("received", 0)), int(usage.get("sent", 0)))
    received, sent = usage
    return (int(received), int(sent))


class Sender:
    """Sends fireflies (UDP, syslog header + JSON) as flowmarkd's firefly backend does: to the
    flow's destination address, port 10514 (`to_destination`), and to every collector
    ("host", "host:port", "[v6]:port", multicast groups with `ttl` and `iface`; port 10514 by
    default). Destinations are resolved and checked when the Sender is made.

    The start time of a flow whose start this Sender sent is remembered and put in its later
    ongoing and end fireflies (as the schema wants), unless start_time is given. `usage` is
    (received, sent) bytes or {"received": .., "sent": ..}. Times: datetime, seconds since the
    epoch, or RFC 3339 text. send() returns the datagram sent; a send failure raises OSError
    after every destination was tried.
    """

    _MAX_REMEMBERED = 65536

    def __init__(self, collectors=(), *, to_destination=True, ttl=1, iface=None, hostname=None,
                 application="flowmark", registry=None):
        if isinstance(collectors, str):
            collectors = [collectors]
        self._s = _c.Sender(int(ttl), iface, hostname or "", application)
        self.collectors = [self._s.add_destination(str(c)) for c in collectors]
        self.to_destination = bool(to_destination)
        self._registry = _registry_impl(registry)
        self._starts = {}
        self._lock = threading.Lock()

    def send(self, state, protocol, src, src_port, dst, dst_port, experiment, activity, *,
             start_time=None, end_time=None, usage=None):
        tokens = _tokens(state, protocol, src, src_port, dst, dst_port, experiment, activity)
        key = tuple(tokens[1:6])
        now = _c.now_micros()
        start = _micros(start_time)
        with self._lock:
            if not start and tokens[0] != "start":
                start = self._starts.get(key, 0)
            wire = self._s.send(tokens, self._registry, start, _micros(end_time), now,
                                _usage(usage), self.to_destination)
            if tokens[0] == "start":
                self._starts.pop(key, None)
                self._starts[key] = start or now
                if len(self._starts) > self._MAX_REMEMBERED:
                    self._starts.pop(next(iter(self._starts)))
            elif tokens[0] == "end":
                self._starts.pop(key, None)
        return wire

    def start(self, *args, **kw):
        return self.send("start", *args, **kw)

    def ongoing(self, *args, **kw):
        return self.send("ongoing", *args, **kw)

    def end(self, *args, **kw):
        return self.send("end", *args, **kw)


def send_firefly(state, protocol, src, src_port, dst, dst_port, experiment, activity, *,
                 collectors=(), to_destination=True, ttl=1, iface=None, hostname=None,
                 application="flowmark", registry=None, start_time=None, end_time=None,
                 usage=None):
    """One firefly, sent now by a Sender made for it (see Sender; for many flows keep one).
    Without start_time an ongoing or end event carries now as its start. Returns the datagram."""
    s = Sender(collectors, to_destination=to_destination, ttl=ttl, iface=iface,
               hostname=hostname, application=application, registry=registry)
    return s.send(state, protocol, src, src_port, dst, dst_port, experiment, activity,
                  start_time=start_time, end_time=end_time, usage=usage)
