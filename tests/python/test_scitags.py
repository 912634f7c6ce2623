"""flowmark.scitags: fireflies, flow labels and the registry against the `flowmark` CLI's
answers for the same inputs; an Announcer's lines through a real flowmarkd's named pipe; the
fireflies of send_firefly/Sender in a test socket and in `flowmark firefly listen`."""
import datetime
import fcntl
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import termios
import threading
import time

import pytest

from conftest import TEST_DATA, need_root
from flowmark import scitags
from netns_helpers import _delete_namespace, _live_namespaces, _sh, in_netns, wait_until

FIREFLIES = os.path.join(TEST_DATA, "fireflies")


def cli(flowmark_bin, *args, input=None):
    return subprocess.run([flowmark_bin, *args], input=input, capture_output=True, timeout=30)


def cli_decode(flowmark_bin, data):
    """`flowmark firefly decode` of one datagram: (dict or None, rc, stderr text)."""
    r = cli(flowmark_bin, "firefly", "decode", input=data + b"\n")
    out = r.stdout.decode().strip()
    return (json.loads(out) if out else None), r.returncode, r.stderr.decode()


def a_firefly():
    return {"version": 1,
            "flow-lifecycle": {"state": "end", "current-time": "2025-03-25T10:05:00.000000+00:00",
                               "start-time": "2025-03-25T10:00:00.123456+00:00",
                               "end-time": "2025-03-25T10:05:00.000000+00:00"},
            "flow-id": {"afi": "ipv4", "src-ip": "192.0.2.1", "dst-ip": "198.51.100.2",
                        "protocol": "tcp", "src-port": 2345, "dst-port": 5777},
            "context": {"experiment-id": 2, "activity-id": 9, "application": "xfer 1.0"},
            "usage": {"received": 10, "sent": 1 << 40}}


# ---- fireflies -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(os.listdir(FIREFLIES)))
def test_decode_matches_cli_and_round_trips(flowmark_bin, name):
    path = os.path.join(FIREFLIES, name)
    with open(path, "rb") as f:
        data = f.read().strip()
    doc = scitags.decode_firefly(data)
    r = cli(flowmark_bin, "firefly", "decode", path)
    assert r.returncode == 0, r.stderr
    assert doc == json.loads(r.stdout)
    assert scitags.decode_firefly(data.decode()) == doc  # str works as bytes do
    # Encoded with the header flowmark sends, decoded back: the same document, by us and by
    # the CLI; without the header: exactly the CLI's canonical line.
    wire = scitags.encode_firefly(doc, hostname="dtn1.example.org", app_name="xfer",
                                  timestamp=datetime.datetime(2025, 3, 25, 10, 0, 1,
                                                              tzinfo=datetime.timezone.utc))
    assert wire.startswith(b"<134>1 2025-03-25T10:00:01.000000+00:00 dtn1.example.org xfer - "
                           b"firefly-json - {")
    again, header = scitags.decode_firefly(wire, header=True)
    assert again == doc
    assert header == {"hostname": "dtn1.example.org", "app-name": "xfer",
                      "timestamp": "2025-03-25T10:00:01.000000+00:00"}
    assert cli_decode(flowmark_bin, wire)[0] == doc
    bare = scitags.encode_firefly(doc, header=False)
    assert bare == r.stdout.strip()
    assert scitags.decode_firefly(bare, header=True) == (doc, None)


def test_encode_takes_datetimes_and_keeps_extra_members(flowmark_bin):
    doc = a_firefly()
    utc = datetime.timezone.utc
    doc["flow-lifecycle"]["start-time"] = datetime.datetime(2025, 3, 25, 12, 0, 0, 123456,
                                                            tzinfo=datetime.timezone(
                                                                datetime.timedelta(hours=2)))
    doc["flow-lifecycle"]["end-time"] = datetime.datetime(2025, 3, 25, 10, 5, tzinfo=utc)
    doc["storage-stats"] = {"read": {"bytes": 7, "ops": 1}, "lfn": "/atlas/f.root"}
    wire = scitags.encode_firefly(doc)
    got = scitags.decode_firefly(wire)
    assert got["flow-lifecycle"]["start-time"] == "2025-03-25T10:00:00.123456+00:00"
    assert got["flow-lifecycle"]["end-time"] == "2025-03-25T10:05:00.000000+00:00"
    assert got["storage-stats"] == doc["storage-stats"]
    assert got["usage"] == {"received": 10, "sent": 1 << 40}
    assert cli_decode(flowmark_bin, wire)[0] == got
    # The header's host name defaults to this host's.
    _, header = scitags.decode_firefly(wire, header=True)
    assert header["hostname"] == socket.gethostname()


def _mutated(path, value):
    doc = a_firefly()
    *parents, last = path
    d = doc
    for p in parents:
        d = d[p]
    if value is KeyError:
        del d[last]
    else:
        d[last] = value
    return doc


BAD = [
    (("flow-id", "src-port"), 70000, "port_out_of_range"),
    (("flow-id", "dst-port"), 0, "port_out_of_range"),
    (("flow-id",), KeyError, "missing_field"),
    (("flow-lifecycle", "state"), "begin", "unknown_state"),
    (("flow-lifecycle", "end-time"), KeyError, "missing_end_time"),
    (("flow-lifecycle", "start-time"), "yesterday", "bad_time"),
    (("flow-id", "protocol"), "sctp", "unknown_protocol"),
    (("flow-id", "src-ip"), "2001:db8::1", "afi_mismatch"),
    (("flow-id", "colour"), "blue", "unknown_key"),
    (("version",), 2, "bad_version"),
    (("context", "experiment-id"), -1, "bad_number"),
    (("usage", "sent"), "lots", "wrong_type"),
]


@pytest.mark.parametrize("path,value,reason", BAD, ids=[b[2] + ":" + ".".join(b[0]) for b in BAD])
def test_bad_fireflies_raise_the_cli_reason(flowmark_bin, path, value, reason):
    doc = _mutated(path, value)
    text = json.dumps(doc).encode()
    with pytest.raises(scitags.FireflyError) as e:
        scitags.decode_firefly(text)
    assert isinstance(e.value, ValueError)
    assert e.value.reason == reason
    with pytest.raises(scitags.FireflyError) as e2:
        scitags.encode_firefly(doc)
    assert (e2.value.reason, e2.value.detail) == (e.value.reason, e.value.detail)
    got, rc, err = cli_decode(flowmark_bin, text)
    assert (got, rc) == (None, 1)
    assert f"<stdin>:1: {reason}: {e.value.detail}" in err
    assert str(e.value) == f"{reason}: {e.value.detail}"


@pytest.mark.parametrize("data,reason", [(b"", "empty"), (b"  \n", "empty"),
                                         (b"{not json", "not_json"), (b"[1]", "bad_header"),
                                         (b'{"version":1,"flow-id":[]}', "not_object"),
                                         (b"<134>1 - h a - something-else - {}", "bad_header"),
                                         (b"x" * 70000, "too_large")])
def test_bad_datagrams_raise(flowmark_bin, data, reason):
    with pytest.raises(scitags.FireflyError) as e:
        scitags.decode_firefly(data)
    assert e.value.reason == reason
    if data.strip():
        r = cli(flowmark_bin, "firefly", "decode", input=data + b"\n")
        assert f"<stdin>:1: {reason}: " in r.stderr.decode()


def test_lenient_accepts_flowds_null_start_time():
    doc = a_firefly()
    doc["flow-lifecycle"]["start-time"] = None
    text = json.dumps(doc)
    with pytest.raises(scitags.FireflyError, match="bad_time"):
        scitags.decode_firefly(text)
    assert scitags.decode_firefly(text, lenient=True)["flow-lifecycle"]["start-time"] is None
    with pytest.raises(TypeError):
        scitags.encode_firefly([doc])


# ---- flow labels ---------------------------------------------------------------------------
LABELS = [(2, 9, 0, 65572), (3, 3, 0, 196620), (4, 3, 0, 32780), (5, 10, 0, 163880),
          (5, 14, 0, 163896), ("atlas", "perfSONAR", 0, None), ("cms", "default", 31, None),
          (511, 63, 31, None), (0, 0, 0, 0), ("lhcb", 2, 17, None)]


@pytest.mark.parametrize("exp,act,entropy,want", LABELS)
def test_labels_match_cli(flowmark_bin, exp, act, entropy, want):
    label = scitags.encode_label(exp, act, entropy)
    r = cli(flowmark_bin, "label", "encode", str(exp), str(act), "--entropy", str(entropy),
            "--json")
    assert r.returncode == 0, r.stderr
    enc = json.loads(r.stdout)
    assert label == enc["label"]
    if want is not None:
        assert label == want
    d = scitags.decode_label(label)
    assert d == (enc["experiment"], enc["activity"], entropy)
    assert (d.experiment, d.activity, d.entropy) == tuple(d)
    r = cli(flowmark_bin, "label", "decode", hex(label), "--json")
    dec = json.loads(r.stdout)
    assert (dec["experiment"], dec["activity"], dec["entropy"]) == tuple(d)


def test_label_entropy_is_random_when_not_given():
    labels = {scitags.encode_label(2, 9) for _ in range(200)}
    assert len(labels) > 1
    for label in labels:
        d = scitags.decode_label(label)
        assert (d.experiment, d.activity) == (2, 9) and 0 <= d.entropy <= 31
        assert label & 0x3FEFC == 65572


@pytest.mark.parametrize("args,exc,cli_args", [
    ((512, 1, 0), ValueError, ["512", "1"]),
    ((2, 64, 0), ValueError, ["2", "64"]),
    ((2, 1, 32), ValueError, None),
    ((2, 1, -1), ValueError, None),
    (("nosuch", 1, 0), LookupError, ["nosuch", "1"]),
    (("atlas", "nosuch", 0), LookupError, ["atlas", "nosuch"]),
])
def test_bad_labels_raise(flowmark_bin, args, exc, cli_args):
    with pytest.raises(exc) as e:
        scitags.encode_label(*args)
    if cli_args:
        r = cli(flowmark_bin, "label", "encode", *cli_args, "--entropy", "0")
        assert r.returncode == 2
        assert str(e.value) in r.stderr.decode()


def test_bad_label_decode_raises(flowmark_bin):
    for bad in (0x100000, -1):
        with pytest.raises(ValueError, match="is not a flow label"):
            scitags.decode_label(bad)
    assert cli(flowmark_bin, "label", "decode", "0x100000").returncode == 2


def test_scitags():
    assert scitags.make_scitag(2, 2) == 130
    assert scitags.split_scitag(130) == (2, 2)
    assert scitags.split_scitag(65535) == (1023, 63)
    for bad in ((0, 1), (1024, 1), (2, 0), (2, 64)):
        with pytest.raises(ValueError, match="out of range"):
            scitags.make_scitag(*bad)
    for bad in (64, 128, 65536):
        with pytest.raises(ValueError):
            scitags.split_scitag(bad)


# ---- the registry --------------------------------------------------------------------------
def test_builtin_registry_matches_cli(flowmark_bin):
    reg = scitags.Registry.builtin()
    r = cli(flowmark_bin, "registry", "--json")
    doc = json.loads(r.stdout)
    assert [(e.name, e.id, [(a.name, a.id) for a in e.activities]) for e in reg] == \
        [(e["expName"], e["expId"], [(a["activityName"], a["activityId"]) for a in e["activities"]])
         for e in doc["experiments"]]
    assert reg.source == "builtin" and len(reg) == len(doc["experiments"]) >= 14
    assert reg.experiment("atlas") == reg.experiment(2) == reg.experiment("2")
    assert reg.experiment("atlas").name == "atlas"
    assert reg.experiment_id("cms") == 3
    assert reg.activity("atlas", "perfSONAR") == scitags.Activity("perfSONAR", 2)
    assert reg.activity_id(2, 9) == 9 and reg.activity(2, 9).name == "Debug"
    assert reg.experiment_name(5) == "alice" and reg.experiment_name(999) is None
    assert reg.activity_name(2, 2) == "perfSONAR" and reg.activity_name(2, 63) is None
    assert "atlas" in reg and 2 in reg and "ATLAS" not in reg  # names are case-sensitive
    with pytest.raises(LookupError, match="unknown experiment 'nosuch'; known: .*atlas"):
        reg.experiment("nosuch")
    with pytest.raises(LookupError, match="unknown activity 'nosuch' in experiment atlas"):
        reg.activity("atlas", "nosuch")
    assert scitags.Registry.builtin() is reg
    assert scitags.Registry.load("builtin").experiments == reg.experiments


def test_registry_from_a_file(tmp_path, flowmark_bin):
    doc = {"experiments": [{"expName": "lab", "expId": 77, "activities": [
        {"activityName": "bulk", "activityId": 5}, {"activityName": "Probe", "activityId": 6}]}],
        "version": 1, "modified": "2025-01-01T00:00:00Z"}
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(doc))
    reg = scitags.Registry.load(path)
    assert reg.source == str(path) and reg.modified == "2025-01-01T00:00:00Z"
    assert reg.experiments == [scitags.Experiment("lab", 77, (scitags.Activity("bulk", 5),
                                                               scitags.Activity("Probe", 6)))]
    assert scitags.encode_label("lab", "bulk", 0, registry=reg) == scitags.encode_label(77, 5, 0)
    r = cli(flowmark_bin, "label", "encode", "lab", "bulk", "--entropy", "0", "--registry",
            str(path))
    assert int(r.stdout.split()[0]) == scitags.encode_label(77, 5, 0, registry=reg)
    assert scitags.Registry.parse(json.dumps(doc)).experiment_id("lab") == 77
    with pytest.raises(FileNotFoundError):
        scitags.Registry.load(tmp_path / "missing.json")
    bad = json.loads(json.dumps(doc))
    bad["experiments"][0]["activities"][1]["activityId"] = "x"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"experiments\[0\]\.activities\[1\]\.activityId"):
        scitags.Registry.load(path)


# ---- Announcer: flowd's pipe lines ---------------------------------------------------------
class Flowmarkd:
    """flowmarkd from the build directory: a named-pipe source and a records backend (the
    firefly JSON of every event, one line each) in `workdir`."""

    def __init__(self, binary, workdir):
        self.pipe = os.path.join(workdir, "flowmark.pipe")
        self.records = os.path.join(workdir, "events.jsonl")
        config = os.path.join(workdir, "flowmarkd.toml")
        with open(config, "w") as f:
            f.write(f'[source.pipe]\ntype = "named-pipe"\npath = "{self.pipe}"\n\n'
                    f'[backend.rec]\ntype = "records"\npath = "{self.records}"\n'
                    f'flush = "event"\n')
        self.err = []
        self.p = subprocess.Popen([binary, "-c", config], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: any("flowmarkd running" in l for l in self.err) or
                   self.p.poll() is not None, 15, "flowmarkd running")
        assert self.p.poll() is None, "\n".join(self.err)

    def _read(self):
        for line in self.p.stderr:
            self.err.append(line.rstrip("\n"))

    def read_records(self):
        if not os.path.exists(self.records):
            return []
        with open(self.records) as f:
            return [json.loads(l) for l in f if l.endswith("\n")]

    def wait_records(self, n):
        return wait_until(lambda: len(self.read_records()) >= n and self.read_records(), 10,
                          f"{n} record(s) from flowmarkd; stderr: {self.err[-5:]}")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(15)
        self._reader.join(5)
        return rc

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)


@pytest.fixture
def flowmarkd(flowmarkd_bin, tmp_path):
    os.chmod(tmp_path, 0o755)
    d = Flowmarkd(flowmarkd_bin, str(tmp_path))
    yield d
    d.kill()


def test_announcer_lines_reach_flowmarkd(flowmarkd):
    flows = [("tcp", "192.0.2.1", 2345, "198.51.100.2", 5777, "atlas", "perfSONAR", 2, 2),
             (17, "2001:db8::1", 40002, "2001:db8:1::2", 443, 3, 1, 3, 1)]
    with scitags.Announcer(flowmarkd.pipe) as a:
        assert not a.closed
        lines = [a.start(*f[:7]) for f in flows]
        assert lines == ["start tcp 192.0.2.1 2345 198.51.100.2 5777 2 2",
                         "start udp 2001:db8::1 40002 2001:db8:1::2 443 3 1"]
        starts = flowmarkd.wait_records(2)
        for f in flows:
            a.end(*f[:7])
        recs = flowmarkd.wait_records(4)
    assert a.closed
    assert [(r["flow-lifecycle"]["state"], r["flow-id"]["src-port"]) for r in recs] == \
        [("start", 2345), ("start", 40002), ("end", 2345), ("end", 40002)]
    for r, (proto, src, sport, dst, dport, _, _, exp, act) in zip(recs, flows * 2):
        assert r["flow-id"] == {"afi": "ipv6" if ":" in src else "ipv4", "src-ip": src,
                                "dst-ip": dst, "protocol": scitags._tokens(0, proto, 0, 0, 0, 0,
                                                                           0, 0)[1],
                                "src-port": sport, "dst-port": dport}
        assert (r["context"]["experiment-id"], r["context"]["activity-id"]) == (exp, act)
    # flowmarkd paired each end with its start.
    for s, e in zip(starts, recs[2:]):
        assert e["flow-lifecycle"]["start-time"] == s["flow-lifecycle"]["start-time"]
    assert flowmarkd.stop() == 0
    assert any('"flowmark_pipe_lines_total{source=pipe}":4' in l for l in flowmarkd.err)


def test_announcer_flow_context_and_reopen(flowmarkd):
    a = scitags.Announcer(flowmarkd.pipe, wait=5)
    with pytest.raises(RuntimeError):
        with a.flow("tcp", "10.1.0.1", 1000, "10.1.0.2", 2000, "cms", "default"):
            flowmarkd.wait_records(1)
            raise RuntimeError("the transfer failed")
    recs = flowmarkd.wait_records(2)
    assert [r["flow-lifecycle"]["state"] for r in recs] == ["start", "end"]
    a.close()
    a.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        a.start("tcp", "10.1.0.1", 1000, "10.1.0.2", 2000, 3, 1)


def test_announcer_checks_lines_and_the_pipe(tmp_path):
    with pytest.raises(FileNotFoundError, match="is flowmarkd .* running"):
        scitags.Announcer(tmp_path / "nothing")
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(OSError, match="not a named pipe"):
        scitags.Announcer(plain)
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError, match="no reader"):
        scitags.Announcer(fifo, wait=0.2)
    assert time.monotonic() - t0 >= 0.2
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with scitags.Announcer(fifo) as a:
            for args, token in [(("tcp", "10.0.0.1", 0, "10.0.0.2", 80, 2, 1), "src_port"),
                                (("sctp", "10.0.0.1", 1, "10.0.0.2", 80, 2, 1), "protocol"),
                                (("tcp", "10.0.0.1", 1, "2001:db8::2", 80, 2, 1), ""),
                                (("tcp", "10.0.0.1", 1, "10.0.0.2", 80, "nosuch", 1), "exp"),
                                (("tcp", "10.0.0.1", 1, "10.0.0.2", 80, 2, 64), "act"),
                                (("tcp", "10.0.0.x", 1, "10.0.0.2", 80, 2, 1), "src_ip")]:
                with pytest.raises(ValueError, match=f"token .*{token}"):
                    a.start(*args)
            with pytest.raises(ValueError, match="token 1 .*state"):
                a.announce("begin", "tcp", "10.0.0.1", 1, "10.0.0.2", 80, 2, 1)
            # Nothing reached the pipe; a good line does, as ids.
            assert a.ongoing("tcp", "10.0.0.1", 1, "10.0.0.2", 80, "atlas", "Debug") == \
                "ongoing tcp 10.0.0.1 1 10.0.0.2 80 2 9"
        assert os.read(reader, 4096) == b"ongoing tcp 10.0.0.1 1 10.0.0.2 80 2 9\n"
    finally:
        os.close(reader)


def _fionread(fd):
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(buf, "little")


def test_announcer_blocks_on_a_full_pipe(tmp_path):
    """Back-pressure: with the reader not reading, the writer blocks once the pipe is full
    and goes on when it is drained; every line arrives, in order."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    capacity = fcntl.fcntl(reader, 1032)  # F_GETPIPE_SZ
    n = 3 * capacity // 40 + 100  # lines are 41..45 bytes: at least 3 pipes' worth
    written = []
    a = scitags.Announcer(fifo)
    writer = threading.Thread(target=lambda: [written.append(
        a.start("tcp", "10.0.0.1", 10000 + i % 50000, "10.0.0.2", 80, 2, 1)) for i in range(n)])
    writer.start()
    try:
        # The pipe fills up, and the writer is stuck in write(2) with lines still to write.
        # Lines are not split across the pipe's pages: up to ~45 bytes a page stay unused.
        wait_until(lambda: _fionread(reader) > capacity - 1024, 10, "a full pipe")
        assert writer.is_alive() and len(written) < n
        received = b""
        poller = select.poll()
        poller.register(reader, select.POLLIN)
        deadline = time.monotonic() + 30
        while received.count(b"\n") < n and time.monotonic() < deadline:
            if poller.poll(100):
                received += os.read(reader, 65536)
        writer.join(10)
        assert not writer.is_alive()
    finally:
        os.close(reader)  # a writer still blocked gets EPIPE and ends
        writer.join(10)
        a.close()
    lines = received.decode().splitlines()
    assert lines == written and len(lines) == n
    assert [int(l.split()[3]) for l in lines] == [10000 + i % 50000 for i in range(n)]


# ---- Sender / send_firefly: fireflies over UDP ---------------------------------------------
def test_send_firefly_to_a_collector(flowmark_bin):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)
        port = rx.getsockname()[1]
        start = datetime.datetime(2025, 3, 25, 10, 0, tzinfo=datetime.timezone.utc)
        sent = scitags.send_firefly("start", "tcp", "192.0.2.1", 2345, "198.51.100.2", 5777,
                                    "atlas", "perfSONAR", collectors=[f"127.0.0.1:{port}"],
                                    to_destination=False, hostname="dtn1.example.org",
                                    application="xfer", start_time=start, usage=(1, 2))
        data, _ = rx.recvfrom(65536)
    assert data == sent
    doc, header = scitags.decode_firefly(data, header=True)
    assert header["hostname"] == "dtn1.example.org" and header["app-name"] == "flowmark"
    assert doc["flow-id"] == {"afi": "ipv4", "src-ip": "192.0.2.1", "dst-ip": "198.51.100.2",
                              "protocol": "tcp", "src-port": 2345, "dst-port": 5777}
    assert doc["context"] == {"experiment-id": 2, "activity-id": 2, "application": "xfer"}
    assert doc["flow-lifecycle"]["start-time"] == "2025-03-25T10:00:00.000000+00:00"
    assert doc["usage"] == {"received": 1, "sent": 2}
    assert cli_decode(flowmark_bin, data) == (doc, 0, "")


def test_sender_pairs_end_with_start_and_checks(flowmark_bin):
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rx:
        rx.bind(("::1", 0))
        rx.settimeout(10)
        s = scitags.Sender([f"[::1]:{rx.getsockname()[1]}"], to_destination=False)
        assert s.collectors == [f"[::1]:{rx.getsockname()[1]}"]
        flow = ("tcp", "2001:db8::1", 1094, "2001:db8:1::2", 40412, 2, 3)
        s.start(*flow)
        s.ongoing(*flow, usage={"received": 5, "sent": 500})
        s.end(*flow, usage=(10, 1000))
        got = [scitags.decode_firefly(rx.recvfrom(65536)[0]) for _ in range(3)]
    assert [g["flow-lifecycle"]["state"] for g in got] == ["start", "ongoing", "end"]
    assert len({g["flow-lifecycle"]["start-time"] for g in got}) == 1
    assert got[2]["flow-lifecycle"]["end-time"] >= got[0]["flow-lifecycle"]["start-time"]
    assert got[2]["usage"] == {"received": 10, "sent": 1000}
    with pytest.raises(ValueError, match="token .*dst_port"):
        s.start("tcp", "2001:db8::1", 1094, "2001:db8:1::2", 70000, 2, 3)
    with pytest.raises(ValueError, match="nowhere to send"):
        scitags.send_firefly("start", "tcp", "10.0.0.1", 1, "10.0.0.2", 2, 2, 1,
                             to_destination=False)
    with pytest.raises(ValueError):
        scitags.Sender(["not an address:x"])
    with pytest.raises(LookupError):
        scitags.Sender(["239.1.1.1"], iface="nosuch0")


def test_send_firefly_to_the_destination_reaches_firefly_listen(flowmark_bin):
    """To the flow's destination, port 10514, as XRootD does: `flowmark firefly listen` in a
    namespace of its own (so port 10514 is free) prints what send_firefly sent."""
    need_root()
    ns = f"fmpyst{os.getpid()}"
    _sh(["ip", "netns", "add", ns])
    _live_namespaces.add(ns)
    try:
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        listen = subprocess.Popen(["ip", "netns", "exec", ns, flowmark_bin, "firefly", "listen",
                                   "--bind", "127.0.0.1", "--count", "1", "--timeout", "20"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: ":10514 " in _sh(["ip", "netns", "exec", ns, "ss", "-Huln"]).stdout,
                       10, "firefly listen bound to port 10514")
            sent = in_netns(ns, lambda: scitags.send_firefly(
                "end", "udp", "127.0.0.2", 40000, "127.0.0.1", 443, "cms", "perfSONAR",
                usage=(3, 4)))
            out, err = listen.communicate(timeout=20)
        finally:
            if listen.poll() is None:
                listen.kill()
                listen.wait()
        assert listen.returncode == 0, err
        got = json.loads(out)
        assert got["firefly"] == scitags.decode_firefly(sent)
        assert got["firefly"]["flow-id"]["dst-port"] == 443
        assert got["firefly"]["context"]["experiment-id"] == 3
    finally:
        _delete_namespace(ns)


def test_ctrl_c_interrupts_a_blocked_announcer(tmp_path, build_dir):
    """A writer blocked on a full pipe is interrupted by SIGINT (KeyboardInterrupt), at once."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    script = ("import sys\n"
              "from flowmark import scitags\n"
              "a = scitags.Announcer(sys.argv[1])\n"
              "try:\n"
              "    while True:\n"
              "        a.start('tcp', '10.0.0.1', 1, '10.0.0.2', 2, 2, 1)\n"
              "except KeyboardInterrupt:\n"
              "    print('interrupted', flush=True)\n")
    env = dict(os.environ, PYTHONPATH=os.path.join(build_dir, "python"))
    p = subprocess.Popen(["/usr/bin/python3", "-c", script, fifo], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        capacity = fcntl.fcntl(reader, 1032)  # F_GETPIPE_SZ
        wait_until(lambda: _fionread(reader) > capacity - 1024 or p.poll() is not None, 10,
                   "a full pipe")
        assert p.poll() is None, p.stderr.read()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(reader)
    assert (p.returncode, out) == (0, "interrupted\n"), err


def test_announcer_finds_a_restarted_flowmarkd(flowmarkd_bin, tmp_path):
    """flowmarkd stops (its FIFO goes away) and starts again (a new FIFO at the same path): the
    Announcer's next write finds no reader on the old one, reopens the path and goes on."""
    os.chmod(tmp_path, 0o755)
    first = Flowmarkd(flowmarkd_bin, str(tmp_path))
    try:
        a = scitags.Announcer(first.pipe)
        a.start("tcp", "10.2.0.1", 1000, "10.2.0.2", 2000, 2, 1)
        first.wait_records(1)
        assert first.stop() == 0
    finally:
        first.kill()
    os.unlink(first.records)
    second = Flowmarkd(flowmarkd_bin, str(tmp_path))
    try:
        with a:
            a.start("tcp", "10.2.0.1", 1001, "10.2.0.2", 2000, 2, 1)
        recs = second.wait_records(1)
        assert [r["flow-id"]["src-port"] for r in recs] == [1001]
        assert second.stop() == 0
    finally:
        second.kill()
