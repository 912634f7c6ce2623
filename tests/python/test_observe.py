"""flowmark.observe() against `flowmark observe --format json`: the same records, field by field.

The captures are those of the observer's own truth tests (tests/integration/observe_truth.py:
~30 scenarios — TCP, UDP, SCTP, ICMP errors, VLANs, fragments, timeouts, eviction, link types;
observe_chains_truth.py: every chain's features and the Scitags labels and options, with the
builtin registry and a registry file), built with scapy, and pathspider's own test captures
(Debian package pathspider). For each, the records flowmark.observe() gives (as dicts, as
numpy columns and as a DataFrame) must equal the JSON lines of the CLI binary of the same
build run with the same options. Also: errors raise with flowmark's message; Ctrl-C
(SIGINT) interrupts a read that would not end (a FIFO fed by a thread), and a live capture
on a quiet interface.
"""
import errno
import glob
import importlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import BUILD, PATHSPIDER_CAPTURES, need_root

import flowmark  # noqa: E402  (the build tree's, conftest put it on sys.path)


def _import_truth(name):
    """The truth tests take the build directory as their first argument when imported."""
    saved = sys.argv
    sys.argv = [name, BUILD]
    try:
        return importlib.import_module(name)
    finally:
        sys.argv = saved


@pytest.fixture(scope="session")
def scenarios():
    truth = _import_truth("observe_truth")
    _, scs = truth.built_scenarios()
    return scs


@pytest.fixture(scope="session")
def chain_captures():
    truth = _import_truth("observe_chains_truth")
    tmp, caps = truth.built_captures()
    return tmp, caps


def kwargs_of(args):
    """`flowmark observe` options → flowmark.observe() keyword arguments."""
    out, i = {}, 0
    names = {"--idle-timeout": "idle_timeout", "--active-timeout": "active_timeout",
             "--expiry-delay": "expiry_delay", "--max-flows": "max_flows",
             "--chains": "chains", "--registry": "registry", "--filter": "filter"}
    flags = {"--vlan": ("vlan", True), "--icmp-flows": ("icmp_flows", True),
             "--no-tcp-completion": ("tcp_completion", False)}
    while i < len(args):
        a = args[i]
        if a in flags:
            k, v = flags[a]
            out[k] = v
            i += 1
        elif a in names:
            v = args[i + 1]
            k = names[a]
            out[k] = int(v) if k == "max_flows" else float(v) if "timeout" in k or \
                k == "expiry_delay" else v
            i += 2
        else:
            raise AssertionError(f"no keyword argument for {a}")
    return out


def cli_records(flowmark_bin, path, args):
    # One worker, as flowmark.observe(): the records in the same order.
    p = subprocess.run([flowmark_bin, "observe", "-r", path, "--format", "jsonl", "--workers",
                        "1"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 0, f"flowmark observe {path} {args}: {p.returncode} {p.stderr}"
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def assert_same(got, want, what):
    assert len(got) == len(want), f"{what}: {len(got)} records, the CLI wrote {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert list(g) == list(w), f"{what}: record {i}: field names/order differ"
        for k in w:
            # Exact: the same types (bool is not int, None is null) and values, floats too.
            assert type(g[k]) is type(w[k]) and g[k] == w[k], \
                f"{what}: record {i} field {k}: {g[k]!r}, the CLI wrote {w[k]!r}"


def all_cases(scenarios, chain_captures):
    """(name, path, CLI args) of every capture, with the options its truth test uses, each
    once with the default chains and once with all."""
    tmp, caps = chain_captures
    out = []
    for name, sc in sorted(scenarios.items()):
        out.append((name, sc.path, list(sc.args)))
        out.append((name + "/all", sc.path, list(sc.args) + ["--chains", "all"]))
    for name, cap in sorted(caps.items()):
        extra = ["--no-tcp-completion"] if name.endswith("notcpcompletion") or \
            "no_tcp" in name else []
        out.append((name + "/all", cap.path, ["--chains", "all"] + extra))
        out.append((name + "/all+registry", cap.path,
                    ["--chains", "all", "--registry", os.path.join(tmp, "registry.json")] + extra))
    for path in sorted(glob.glob(os.path.join(PATHSPIDER_CAPTURES, "*.pcap"))):
        out.append((os.path.basename(path), path, []))
        out.append((os.path.basename(path) + "/all", path, ["--chains", "all"]))
    return out


def test_records_as_dicts_equal_the_cli(scenarios, chain_captures, flowmark_bin):
    cases = all_cases(scenarios, chain_captures)
    assert len(cases) > 100
    total = 0
    for name, path, args in cases:
        want = cli_records(flowmark_bin, path, args)
        got = list(flowmark.observe(path, **kwargs_of(args)))
        assert_same(got, want, name)
        total += len(want)
    assert total > 1000, "the captures make too few records to compare"


def frame_rows(df):
    """A DataFrame's rows as dicts of plain Python values (pd.NA → None)."""
    import pandas as pd
    cols = {}
    for c in df.columns:
        values = df[c].tolist()
        cols[c] = [None if v is pd.NA or (isinstance(v, float) and math.isnan(v) and
                                          df[c].dtype == object) else v for v in values]
    return [{c: cols[c][i] for c in df.columns} for i in range(len(df))]


def plain(v):
    return v.item() if isinstance(v, np.generic) else v


def test_to_pandas_and_to_arrays_equal_the_cli(scenarios, chain_captures, flowmark_bin):
    tmp, caps = chain_captures
    cases = [(n, p, a) for n, p, a in all_cases(scenarios, chain_captures)
             if n.endswith("/all") or n.endswith("+registry")]
    import pandas as pd
    for name, path, args in cases:
        want = cli_records(flowmark_bin, path, args)
        df = flowmark.observe(path, **kwargs_of(args)).to_pandas()
        assert len(df) == len(want), f"{name}: {len(df)} rows, {len(want)} records"
        if want:
            assert list(df.columns) == list(want[0]), name
        for i, row in enumerate(frame_rows(df)):
            for k, w in want[i].items():
                g = plain(row[k])
                assert g == w and (w is None) == (g is None), \
                    f"{name}: row {i} {k}: {g!r}, the CLI wrote {w!r}"
        # nullable integers stay integers (no float NaN)
        assert str(df["sp"].dtype) == "UInt16" and str(df["tcp_synflags_fwd"].dtype) == "UInt64"
        assert str(df["tcp_connected"].dtype) == "boolean" and df["first"].dtype == np.float64

        arrays = flowmark.observe(path, **kwargs_of(args)).to_arrays()
        assert set(arrays) == set(want[0]) if want else True
        for k, col in arrays.items():
            assert len(col) == len(want), f"{name}: {k}: {len(col)} values"
            for i, w in enumerate(want):
                masked = isinstance(col, np.ma.MaskedArray) and bool(np.ma.getmaskarray(col)[i])
                assert masked == (w[k] is None), f"{name}: {k}[{i}] masked {masked}, {w[k]!r}"
                if not masked:
                    g = plain(col.data[i] if isinstance(col, np.ma.MaskedArray) else col[i])
                    assert g == w[k], f"{name}: {k}[{i}]: {g!r}, the CLI wrote {w[k]!r}"
        assert arrays["sip"].dtype == object and isinstance(arrays["sp"], np.ma.MaskedArray)
        assert arrays["pkt_fwd"].dtype == np.uint64
    assert pd is not None


def test_iteration_then_arrays_take_the_rest(scenarios, flowmark_bin):
    sc = scenarios["many_interleaved"]
    want = cli_records(flowmark_bin, sc.path, sc.args + ["--chains", "all"])
    assert len(want) > 10
    obs = flowmark.observe(sc.path, chains="all", **kwargs_of(sc.args))
    head = [next(obs) for _ in range(7)]
    rest = obs.to_pandas()
    assert_same(head, want[:7], "first seven")
    assert len(rest) == len(want) - 7
    assert rest["sip"].tolist() == [w["sip"] for w in want[7:]]
    assert rest["last"].tolist() == [w["last"] for w in want[7:]]
    assert list(obs) == [] and len(obs.to_pandas()) == 0
    st = obs.stats
    assert st["finished"] and st["emitted"] == len(want) and st["drops"] is None
    assert st["packets"] == len(sc.pkts)
    assert obs.columns == list(want[0])


def test_chains_given_as_a_list(scenarios):
    sc = scenarios["tcp4_handshake"]
    a = list(flowmark.observe(sc.path, chains=["basic", "tcp", "ecn"]))
    b = list(flowmark.observe(sc.path, chains="basic,tcp,ecn"))
    assert a == b and "ecn_ce_data_fwd" in a[0] and "mss_len_fwd" not in a[0]


def test_errors_raise_with_flowmarks_message(scenarios, tmp_path):
    path = scenarios["tcp4_handshake"].path
    with pytest.raises(FileNotFoundError, match="nope.pcap") as e:
        flowmark.observe(str(tmp_path / "nope.pcap"))
    assert e.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match="unknown chain 'bogus'"):
        flowmark.observe(path, chains="basic,bogus")
    with pytest.raises(ValueError, match="filter"):
        flowmark.observe(path, filter="tcp and and")
    with pytest.raises(ValueError, match="idle-timeout"):
        flowmark.observe(path, idle_timeout=0)
    with pytest.raises(ValueError, match="max-flows"):
        flowmark.observe(path, max_flows=0)
    with pytest.raises(OSError, match="registry"):
        flowmark.observe(path, chains="all", registry=str(tmp_path / "no-registry.json"))
    not_pcap = tmp_path / "text.pcap"
    not_pcap.write_text("not a capture\n" * 10)
    with pytest.raises(ValueError, match="not pcap or pcapng"):
        flowmark.observe(str(not_pcap))
    with pytest.raises(OSError, match="nosuchif0"):
        flowmark.observe("int:nosuchif0")
    with pytest.raises(ValueError):
        flowmark.observe()
    with pytest.raises(TypeError):
        flowmark.observe(path, chains=[1, 2])


def test_corrupt_capture_gives_the_records_before_the_damage(scenarios, tmp_path,
                                                              flowmark_bin):
    src = scenarios["many_interleaved"].path
    data = open(src, "rb").read()
    cut = tmp_path / "cut.pcap"
    # a record header claiming more bytes than the file has left, halfway through
    half = len(data) // 2
    cut.write_bytes(data[:half])
    p = subprocess.run([flowmark_bin, "observe", "-r", str(cut), "--workers", "1"],
                       stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    want = [json.loads(line) for line in p.stdout.splitlines()]
    obs = flowmark.observe(str(cut))
    got = []
    if p.returncode == 0:  # the cut fell between two records: no damage to report
        got = list(obs)
    else:
        with pytest.raises(ValueError, match="cut.pcap"):
            for rec in obs:
                got.append(rec)
    assert_same(got, want, "cut capture")
    assert len(want) > 0
    if p.returncode != 0:
        # to_arrays() raises too; called again it gives the records before the damage
        obs = flowmark.observe(str(cut))
        with pytest.raises(ValueError, match="cut.pcap"):
            obs.to_arrays()
        arrays = obs.to_arrays()
        assert arrays["sip"].tolist() == [w["sip"] for w in want]
        assert obs.stats["finished"]


PCAP_HEADER = bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")


def _frame(i):
    """An Ethernet/IPv4/UDP frame of flow i (distinct source ports)."""
    import struct
    payload = b"x" * 18
    udp = struct.pack("!HHHH", 1024 + i % 60000, 9, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([10, 1, (i >> 8) & 255, i & 255]), bytes([10, 2, 0, 1]))
    eth = b"\x02\x00\x00\x00\x00\x0b\x02\x00\x00\x00\x00\x0a\x08\x00"
    frame = eth + ip + udp
    ts = 1_700_000_000 + i // 1000
    return struct.pack("<IIII", ts, (i % 1000) * 1000, len(frame), len(frame)) + frame


def test_times_are_the_floats_the_json_parses_to(tmp_path, flowmark_bin):
    """first/last: the double nearest to the nanosecond time, as float() of the JSON's nine
    decimals, over random times from 1970 to 2106 (a nanosecond pcap, one flow a frame)."""
    import random
    import struct
    rng = random.Random(16)
    times = sorted(rng.randrange(1, (1 << 32) * 10**9) for _ in range(4000))
    times += [10**9, 1, 999_999_999, 1_700_000_000_000_000_000, (1 << 53) + 1]
    times.sort()
    path = tmp_path / "nano.pcap"
    with open(path, "wb") as f:
        f.write(bytes.fromhex("4d3cb2a1020004000000000000000000ffff000001000000"))
        for i, t in enumerate(times):
            frame = _frame(i)[16:]
            f.write(struct.pack("<IIII", t // 10**9, t % 10**9, len(frame), len(frame)) + frame)
    want = cli_records(flowmark_bin, str(path), ["--idle-timeout", "1e7"])
    got = list(flowmark.observe(str(path), idle_timeout=1e7))
    assert len(want) > 3000
    assert_same(got, want, "nanosecond times")
    df = flowmark.observe(str(path), idle_timeout=1e7).to_pandas()
    assert df["first"].tolist() == [w["first"] for w in want]


def test_ctrl_c_interrupts_a_read_that_does_not_end(tmp_path):
    """A FIFO fed without end by a thread: the read cannot finish; once the thread has pushed
    enough frames through it that the reader is certainly busy with them (the FIFO holds
    64 KiB), SIGINT is sent, and to_arrays() must raise KeyboardInterrupt soon after."""
    fifo = tmp_path / "stream.pcap"
    os.mkfifo(fifo)
    fed = threading.Event()
    stop = threading.Event()
    sent_at = []

    def feed():
        try:
            with open(fifo, "wb", buffering=0) as w:
                w.write(PCAP_HEADER)
                chunk = b"".join(_frame(i) for i in range(2000))
                n = 0
                while not stop.is_set():
                    w.write(chunk)
                    n += 2000
                    if n >= 200_000 and not fed.is_set():
                        fed.set()
        except (BrokenPipeError, OSError):
            pass

    def interrupt():
        if fed.wait(60):
            sent_at.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    obs = flowmark.observe(str(fifo))  # opens the FIFO: the feeder is writing
    killer = threading.Thread(target=interrupt, daemon=True)
    killer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            obs.to_arrays()
        raised_at = time.monotonic()
    finally:
        stop.set()
    assert fed.is_set() and sent_at, "the feeder never got 200,000 frames through"
    assert raised_at - sent_at[0] < 2.0, f"KeyboardInterrupt came {raised_at - sent_at[0]:.2f} s " \
                                         "after SIGINT"
    assert obs.stats["packets"] > 100_000
    del obs  # closes the FIFO: the feeder's next write fails and it ends
    feeder.join(10)
    killer.join(10)


def _udp_to(port, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(n):
        s.sendto(b"flowmark python test", ("127.0.0.1", port))
    s.close()


def test_live_capture_and_ctrl_c_on_a_quiet_interface():
    """A live AF_PACKET capture on lo: a UDP flow sent here comes out after stop(); and Ctrl-C
    while lo is quiet for the filter (no frame reaches the reader) raises KeyboardInterrupt."""
    need_root()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    obs = flowmark.observe(interface="lo", filter=f"udp and port {port}")
    _udp_to(port, 5)
    # Reads the frames the kernel captured, then ends the input: the flow is emitted.
    got = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(r["dp"] == port for r in got):
        # stop() only once the frames are in the ring: an iteration step reads what is there
        obs.stop()
        got.extend(obs)
    flows = [r for r in got if r["dp"] == port]
    assert len(flows) == 1, got
    # lo delivers each datagram once to a packet socket on it (outgoing), so 5 forward
    assert flows[0]["pkt_fwd"] >= 5 and flows[0]["proto"] == 17 and flows[0]["sip"] == "127.0.0.1"
    rx.close()

    # Ctrl-C on a capture that receives nothing (the filter matches no traffic).
    _ctrl_c_on_a_quiet_capture("afpacket")


def test_ctrl_c_on_a_quiet_interface_with_libpcap():
    """capture="pcap": libpcap's reads wait at most 100 ms, so Ctrl-C on a live capture that
    receives nothing raises KeyboardInterrupt without waiting for a frame."""
    need_root()
    _ctrl_c_on_a_quiet_capture("pcap")


def _ctrl_c_on_a_quiet_capture(capture):
    quiet = flowmark.observe("int:lo", filter="udp and dst port 9 and dst host 127.0.0.99",
                             capture=capture)
    started = threading.Event()
    sent_at = []
    done = threading.Event()

    def interrupt():
        started.wait(10)
        sent_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)
        # Should the capture not notice, a matching frame would wake a reader stuck in poll:
        # the test then fails on the time it took rather than hanging.
        if not done.wait(5):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendto(b"wake", ("127.0.0.99", 9))
            except OSError:
                pass

    t = threading.Thread(target=interrupt, daemon=True)
    t.start()
    started.set()
    with pytest.raises(KeyboardInterrupt):
        for _ in quiet:
            pass
    done.set()
    assert time.monotonic() - sent_at[0] < 2.0
    t.join(10)
    quiet.stop()
    assert list(quiet) == []
