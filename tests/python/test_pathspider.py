"""flowmark.pathspider: pathspider 2.0.1's chain classes (Debian's pathspider, unmodified) in
flowmark.pathspider.Observer.

- On pathspider's own test captures, the records its chains make in our Observer equal
  what flowmark's C++ chains record (`flowmark observe --chains all`), but for the
  documented deviations: the comparison is tests/integration/observe_pathspider_compare.py's
  (imported), with our Observer standing where pathspider's own Observer stood there.
- The packet objects give what python-libtrace's plt objects give for the same packets
  (plt.ip()/plt.ip6() over the same bytes: every attribute the chains read).
- A user's own chain class works; a falsy return completes the flow and stops the packet's
  remaining functions; a new_flow veto ignores the flow; SHUTDOWN_SENTINEL ends the queue;
  the interrupt queue stops a run; a chain's exception comes out of run_flow_enqueuer.
"""
import os
import queue
import sys

import pytest

from conftest import PATHSPIDER_CAPTURES

pathspider = pytest.importorskip("pathspider", reason="needs Debian's pathspider (apt-get "
                                 "install pathspider)")
from pathspider.base import SHUTDOWN_SENTINEL as PS_SENTINEL  # noqa: E402
from pathspider.chains.basic import BasicChain  # noqa: E402
from pathspider.chains.ecn import ECNChain  # noqa: E402
from pathspider.chains.tcp import TCPChain  # noqa: E402
from pathspider.chains.udp import UDPChain  # noqa: E402

import flowmark.pathspider as fps  # noqa: E402


def _import_compare(build_dir):
    """observe_pathspider_compare takes the build dir from argv when imported."""
    saved = sys.argv
    sys.argv = ["observe_pathspider_compare.py", build_dir]
    try:
        import observe_pathspider_compare as compare
    finally:
        sys.argv = saved
    return compare


@pytest.fixture(scope="module")
def compare(build_dir, flowmark_bin):
    mod = _import_compare(build_dir)
    if mod.MISSING:
        pytest.skip(mod.MISSING)
    assert os.access(flowmark_bin, os.X_OK), f"no flowmark binary at {flowmark_bin}"
    return mod


def run(lturi, chains, **kw):
    """Our Observer over lturi: (records, observer); the queue must end with the sentinel."""
    observer = fps.Observer(lturi, chains=chains, **kw)
    out = queue.Queue()
    observer.run_flow_enqueuer(out)
    items = []
    while not out.empty():
        items.append(out.get_nowait())
    assert items and items[-1] == PS_SENTINEL, f"the queue does not end with the sentinel: " \
                                               f"{items[-1:]}"
    assert PS_SENTINEL not in items[:-1]
    return items[:-1], observer


# ---- against the C++ chains -----------------------------------------------------------------


def _pcaps():
    if not os.path.isdir(PATHSPIDER_CAPTURES):
        return []
    return sorted(f for f in os.listdir(PATHSPIDER_CAPTURES) if f.endswith(".pcap"))


def _comparison(compare, path, flowmark_records):
    """compare.Comparison with our Observer in place of pathspider's: the reference,
    trimmed and faithful runs are ours (our packets carry no Ethernet padding, so the
    trimmed run is the reference run)."""
    def ours(name, frames, chains, trim=False):
        records, observer = run("pcapfile:" + name, chains)
        return records, observer
    saved = compare.run_pathspider
    compare.run_pathspider = ours
    try:
        return compare.Comparison(os.path.basename(path), compare.ALL_CHAINS).run(
            path, flowmark_records)
    finally:
        compare.run_pathspider = saved


@pytest.mark.parametrize("name", _pcaps())
def test_pathspider_capture_matches_cpp_chains(compare, name):
    path = os.path.join(PATHSPIDER_CAPTURES, name)
    comparison = _comparison(compare, path, compare.run_flowmark(path))
    print(comparison.summary())
    for note in comparison.notes:
        print("  " + note)
    assert comparison.problems == [], "\n".join(comparison.problems[:40])
    if name == "random.pcap":  # ARP only: no flow
        assert comparison.records == 0
    else:
        assert comparison.records > 0
    # Same flow table, same timers: no split may be explained away.
    assert not any(k.startswith("split") for k in comparison.kinds), comparison.kinds
    assert not any(k.startswith("padding") for k in comparison.kinds), comparison.kinds


def test_pathspider_captures_present():
    assert len(_pcaps()) >= 40, f"pathspider's captures missing from {PATHSPIDER_CAPTURES}"


def test_comparison_can_fail(compare):
    """A C++ record changed by one field is reported (the comparison looks)."""
    path = os.path.join(PATHSPIDER_CAPTURES, "tcp_ipv4_ecn.pcap")
    records = compare.run_flowmark(path)
    assert len(records) == 1
    for field, value in [("ecn_ect0_data_fwd", False), ("tcp_synflags_fwd", 2),
                         ("oct_rev", 1), ("pkt_fwd", 99)]:
        changed = [dict(records[0], **{field: value})]
        problems = _comparison(compare, path, changed).problems
        assert problems, f"changing {field} went unnoticed"


# ---- the packet objects against python-libtrace's ---------------------------------------------


def _crafted_frames():
    scapy = pytest.importorskip("scapy.all", reason="needs Debian's python3-scapy")
    from scapy.all import (ICMP, IP, TCP, UDP, Ether, ICMPv6DestUnreach, ICMPv6EchoRequest,
                           IPv6, Raw)
    a, b, a6, b6 = "10.1.0.1", "10.1.0.2", "2001:db8::1", "2001:db8:0:1::2"
    mss = [("MSS", 1460), ("NOP", None), ("WScale", 7)]
    pkts = [
        IP(src=a, dst=b, tos=0x2e, ttl=17, flags="evil") / TCP(sport=4000, dport=80, flags="SEC",
                                                              seq=1000, options=mss),
        IP(src=b, dst=a, tos=0x01, ttl=60) / TCP(sport=80, dport=4000, flags="SAE", seq=5,
                                                ack=1001, options=mss),
        IP(src=a, dst=b, tos=0x03) / TCP(sport=4000, dport=80, flags="PA", seq=1001, ack=6)
        / Raw(b"GET / HTTP/1.0\r\n\r\n"),
        IP(src=a, dst=b, flags="DF") / TCP(sport=4000, dport=80, flags="FUA", urgptr=3),
        IP(src=a, dst=b) / UDP(sport=5353, dport=53, chksum=0) / Raw(b"\x12\x34query"),
        IP(src=a, dst=b) / UDP(sport=5354, dport=53) / Raw(b"q"),
        IP(src=b, dst=a) / ICMP(type=3, code=3) / IP(src=a, dst=b) / UDP(sport=5354, dport=53)
        / Raw(b"q"),
        IP(src=a, dst=b) / ICMP(type=8, id=7, seq=1) / Raw(b"ping"),
        IPv6(src=a6, dst=b6, tc=0xb9, hlim=9, fl=0x12345) / TCP(sport=4001, dport=443,
                                                                flags="S", options=mss),
        IPv6(src=b6, dst=a6, tc=0x02) / TCP(sport=443, dport=4001, flags="SA", ack=1),
        IPv6(src=a6, dst=b6) / UDP(sport=7000, dport=7001, chksum=0x1234) / Raw(b"v6data"),
        IPv6(src=b6, dst=a6) / ICMPv6DestUnreach(code=4) / IPv6(src=a6, dst=b6)
        / UDP(sport=7000, dport=7001) / Raw(b"v6data"),
        IPv6(src=a6, dst=b6) / ICMPv6EchoRequest(id=1, seq=2) / Raw(b"ping6"),
    ]
    frames = []
    for i, p in enumerate(pkts):
        f = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p
        f.time = 1_700_000_000 + i * 0.25
        frames.append(f)
    return frames


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    from scapy.all import wrpcap
    frames = _crafted_frames()
    path = str(tmp_path_factory.mktemp("pathspider") / "crafted.pcap")
    wrpcap(path, frames)
    return path, frames


TCP_ATTRS = ["src_port", "dst_port", "seq_nbr", "ack_nbr", "doff", "flags", "fin_flag",
             "syn_flag", "rst_flag", "psh_flag", "ack_flag", "urg_flag", "window", "checksum",
             "urg_ptr", "data"]
UDP_ATTRS = ["src_port", "dst_port", "len", "checksum", "data"]
IP_ATTRS = ["version", "proto", "size", "traffic_class", "ttl", "hop_limit", "data", "payload"]
IP4_ATTRS = ["pkt_len", "has_rf", "has_df", "has_mf", "hdr_len", "ident", "checksum"]
IP6_ATTRS = ["flow_label", "payload_len", "next_hdr"]


def _describe(ip, version):
    """What a chain can read of an ip / ip6 object, as plain values."""
    d = {a: _plain(getattr(ip, a)) for a in IP_ATTRS + (IP4_ATTRS if version == 4 else IP6_ATTRS)}
    d["src"] = (str(ip.src_prefix), bytes(ip.src_prefix.addr))
    d["dst"] = (str(ip.dst_prefix), bytes(ip.dst_prefix.addr))
    tcp, udp = ip.tcp, ip.udp
    d["tcp"] = None if tcp is None else {a: _plain(getattr(tcp, a)) for a in TCP_ATTRS}
    if tcp is not None:
        d["tcp"]["payload"] = None if tcp.payload is None else bytes(tcp.payload.data)
    d["udp"] = None if udp is None else {a: _plain(getattr(udp, a)) for a in UDP_ATTRS}
    if udp is not None:
        d["udp"]["payload"] = None if udp.payload is None else bytes(udp.payload.data)
    icmp = ip.icmp if version == 4 else ip.icmp6
    if icmp is None:
        d["icmp"] = None
    else:
        d["icmp"] = {"type": icmp.type, "code": icmp.code, "data": bytes(icmp.data)}
        q = icmp.payload
        if q is None or isinstance(q, (bytes, bytearray)):
            d["icmp"]["payload"] = None if q is None else bytes(q)
        else:
            d["icmp"]["payload"] = {"src": str(q.src_prefix), "dst": str(q.dst_prefix),
                                    "proto": q.proto, "data": bytes(q.data),
                                    "sp": (q.udp or q.tcp).src_port if (q.udp or q.tcp) else None}
    return d


def _plain(v):
    return bytes(v) if isinstance(v, (bytes, bytearray)) else v


class Recorder:
    """A user's chain: records what it reads of every packet (class attribute: the test
    reads it after the run)."""
    seen = []

    def new_flow(self, rec, ip):
        rec["new_flow_src"] = str(ip.src_prefix)
        return True

    def ip4(self, rec, ip, rev):
        Recorder.seen.append((round(ip.seconds, 6), 4, _describe(ip, 4)))
        return True

    def ip6(self, rec, ip, rev):
        Recorder.seen.append((round(ip.seconds, 6), 6, _describe(ip, 6)))
        return True


def test_packet_objects_offer_what_plt_offers(compare, crafted):
    path, frames = crafted
    Recorder.seen = []
    records, _ = run("pcapfile:" + path, [Recorder])
    assert len(Recorder.seen) == len(frames)
    assert {r["new_flow_src"] for r in records} >= {"10.1.0.1", "2001:db8::1"}
    plt = compare.REAL_PLT
    for (seconds, version, ours), f in zip(sorted(Recorder.seen, key=lambda s: s[0]), frames):
        l3 = bytearray(bytes(f.payload))
        theirs = _describe(plt.ip(l3) if version == 4 else plt.ip6(l3), version)
        assert seconds == round(float(f.time), 6)
        quoted = (theirs["icmp"] or {}).get("payload")
        if version == 6 and isinstance(quoted, dict):
            # python-libtrace finds no transport header in an ICMPv6 error's quote; we do
            assert (quoted["sp"], ours["icmp"]["payload"]["sp"]) == (None, 7000)
            quoted["sp"] = 7000
        assert ours == theirs, f"{f.payload.summary()}:\n ours   {ours}\n plt    {theirs}"


def test_ece_cwr_flags(crafted):
    path, frames = crafted

    class Flags:
        seen = []

        def tcp(self, rec, tcp, rev):
            Flags.seen.append((tcp.ece_flag, tcp.cwr_flag, tcp.flags))
            return True
    run("pcapfile:" + path, [Flags])
    assert (True, True, 0xC2) in Flags.seen and (True, False, 0x52) in Flags.seen


# ---- the Observer's behaviour -----------------------------------------------------------------


def _udp_capture(tmp_path, n=4, gap=1.0):
    from scapy.all import IP, UDP, Ether, Raw, wrpcap
    frames = []
    for i in range(n):
        f = Ether() / IP(src="10.2.0.1", dst="10.2.0.2") / UDP(sport=999, dport=53) / Raw(b"x")
        f.time = 1_700_000_000 + i * gap
        frames.append(f)
    path = str(tmp_path / "udp.pcap")
    wrpcap(path, frames)
    return path


class CompleteOnSecond:
    """Completes a flow on its second packet; counts its calls."""
    calls = 0

    def new_flow(self, rec, ip):
        rec["n"] = 0
        return True

    def udp(self, rec, udp, rev):
        CompleteOnSecond.calls += 1
        rec["n"] += 1
        return rec["n"] < 2


class AfterIt:
    """Comes after CompleteOnSecond: pathspider does not call it once a function of the
    packet said "complete"."""
    calls = 0

    def udp(self, rec, udp, rev):
        AfterIt.calls += 1
        return True


def test_falsy_return_completes_the_flow(tmp_path):
    pytest.importorskip("scapy.all", reason="needs Debian's python3-scapy")
    path = _udp_capture(tmp_path)
    records, _ = run("pcapfile:" + path, [BasicChain, UDPChain], expiry_timeout=0.5)
    assert [r["pkt_fwd"] for r in records] == [4]  # no completion: one record
    CompleteOnSecond.calls = AfterIt.calls = 0
    records, _ = run("pcapfile:" + path, [BasicChain, CompleteOnSecond, AfterIt],
                     expiry_timeout=0.5)
    # completed on packet 2, emitted 0.5 s later: packets 3 and 4 make a second flow
    assert [r["pkt_fwd"] for r in records] == [2, 2]
    assert [r["n"] for r in records] == [2, 2]
    assert CompleteOnSecond.calls == 4
    assert AfterIt.calls == 2  # not on the completing packets
    assert all(r["pkt_first"] < r["pkt_last"] for r in records)


def test_none_return_completes_too(tmp_path):
    pytest.importorskip("scapy.all", reason="needs Debian's python3-scapy")
    path = _udp_capture(tmp_path)

    class ReturnsNone:
        def ip4(self, rec, ip, rev):
            pass
    records, _ = run("pcapfile:" + path, [BasicChain, ReturnsNone], expiry_timeout=0.1)
    assert [r["pkt_fwd"] for r in records] == [1, 1, 1, 1]


def test_new_flow_veto_ignores_the_flow(crafted):
    path, _ = crafted

    class NoUdp:
        def new_flow(self, rec, ip):
            return ip.udp is None

    records, observer = run("pcapfile:" + path, [BasicChain, NoUdp])
    assert records and all(r["proto"] != 17 for r in records)
    assert observer.stats()["ignored"] == 3  # two IPv4 UDP flows, one IPv6


def test_chain_exception_propagates(crafted):
    path, _ = crafted

    class Broken:
        def tcp(self, rec, tcp, rev):
            raise ZeroDivisionError("chain bug")
    with pytest.raises(ZeroDivisionError, match="chain bug"):
        fps.Observer("pcapfile:" + path, chains=[Broken]).run_flow_enqueuer(queue.Queue())


def test_irqueue_stops_the_run():
    path = os.path.join(PATHSPIDER_CAPTURES, "random.pcap")  # 5,000 frames
    observer = fps.Observer("pcap:" + path, chains=[BasicChain])
    irq, out = queue.Queue(), queue.Queue()
    irq.put(True)
    observer.run_flow_enqueuer(out, irq)
    assert out.get_nowait() == PS_SENTINEL
    assert 0 < observer.stats()["packets"] < 5000


def test_dummy_observer_and_sentinel():
    assert fps.SHUTDOWN_SENTINEL == PS_SENTINEL
    irq, out = queue.Queue(), queue.Queue()
    irq.put(True)
    fps.DummyObserver().run_flow_enqueuer(out, irq)
    assert out.get_nowait() == PS_SENTINEL and out.empty()


def test_flush_and_records_of_basic_tcp_ecn():
    path = os.path.join(PATHSPIDER_CAPTURES, "tcp_ipv4_ecn.pcap")
    records, _ = run("pcapfile:" + path, [BasicChain, TCPChain, ECNChain])
    assert len(records) == 1
    r = records[0]
    assert (r["sip"], r["dip"], r["sp"], r["dp"], r["proto"]) == (
        "139.133.208.62", "139.133.210.32", 34240, 80, 6)
    assert (r["pkt_fwd"], r["pkt_rev"]) == (6, 4)
    assert r["tcp_connected"] is True and r["ecn_ect0_data_fwd"] is True
    assert "_idle_bin" not in r


def test_lturi_forms():
    assert fps.parse_lturi("pcapfile:/x.pcap") == ("file", "/x.pcap")
    assert fps.parse_lturi("pcap:x.pcapng") == ("file", "x.pcapng")
    assert fps.parse_lturi("int:eth0") == ("live", "eth0")
    assert fps.parse_lturi("pcapint:eth0") == ("pcapint", "eth0")
    assert fps.parse_lturi("/tmp/a:b.pcap") == ("file", "/tmp/a:b.pcap")
    with pytest.raises(ValueError, match="unknown libtrace format 'dag:'"):
        fps.parse_lturi("dag:/dev/dag0")
    with pytest.raises(RuntimeError, match="no-such.pcap"):
        fps.Observer("pcapfile:/nonexistent/no-such.pcap")


def test_live_interface_opens_or_says_why():
    """int:lo opens as root (AF_PACKET); the run is stopped through the interrupt queue."""
    if os.geteuid() != 0:
        with pytest.raises(RuntimeError):
            fps.Observer("int:lo")
        return
    observer = fps.Observer("int:lo", chains=[BasicChain])
    irq, out = queue.Queue(), queue.Queue()
    irq.put(True)
    observer.run_flow_enqueuer(out, irq)
    items = [out.get_nowait() for _ in range(out.qsize())]
    assert items[-1] == PS_SENTINEL


_CTRL_C_SCRIPT = """
import queue, sys
from flowmark.pathspider import Observer

class Ready:
    def ip4(self, rec, ip, rev):
        print("packet", flush=True)
        return True
    ip6 = ip4

observer = Observer(sys.argv[1], chains=[Ready])
print("running", flush=True)
try:
    observer.run_flow_enqueuer(queue.Queue())
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
print("ended without interrupt", flush=True)
"""


def test_ctrl_c_interrupts_a_live_capture_waiting_for_frames(build_dir):
    """SIGINT while int:lo waits in the kernel for frames (GIL released): KeyboardInterrupt."""
    import signal
    import socket
    import subprocess
    import threading
    import time
    if os.geteuid() != 0:
        pytest.skip("needs root (an AF_PACKET capture on lo)")
    env = dict(os.environ, PYTHONPATH=os.path.join(build_dir, "python"))
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_SCRIPT, "int:lo"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put((time.monotonic(), line.strip()))
                                     for line in proc.stdout], daemon=True).start()
    try:
        def wait_for(word, deadline):
            while time.monotonic() < deadline:
                try:
                    _, line = lines.get(timeout=0.1)
                except queue.Empty:
                    continue
                if line == word:
                    return True
            return False
        deadline = time.monotonic() + 20
        assert wait_for("running", deadline), "the Observer did not start"
        # Frames on lo until the chain has seen one: the capture is running.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            seen = False
            while not seen and time.monotonic() < deadline:
                s.sendto(b"x", ("127.0.0.1", 9))
                seen = wait_for("packet", time.monotonic() + 0.2)
        assert seen, "no packet reached the chain"
        # Then quiet: no chain output for 0.5 s and the process asleep (waiting in poll).
        last = time.monotonic()
        while time.monotonic() < deadline:
            try:
                last, _ = lines.get(timeout=0.1)
            except queue.Empty:
                pass
            with open(f"/proc/{proc.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if time.monotonic() - last > 0.5 and state == "S":
                break
        proc.send_signal(signal.SIGINT)
        assert wait_for("interrupted", time.monotonic() + 10), \
            f"no KeyboardInterrupt (stderr: {proc.stderr.read() if proc.poll() is not None else ''})"
        assert proc.wait(timeout=10) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("name,valid", [("dns_valid_response.pcap", True),
                                        ("dns_no_response.pcap", False),
                                        ("dns_valid_response_tcp.pcap", True)])
def test_dns_chain_through_pldns(name, valid):
    """pathspider's DNSChain hands our payload objects to python-libtrace's pldns."""
    pytest.importorskip("pldns", reason="DNSChain needs Debian's python3-libtrace (pldns)")
    from pathspider.chains.dns import DNSChain
    records, _ = run("pcapfile:" + os.path.join(PATHSPIDER_CAPTURES, name),
                     [BasicChain, DNSChain])
    assert [(r["dp"], r["dns_response_valid"]) for r in records] == [(53, valid)]


def test_live_capture_in_a_thread_as_pathspider_observe_runs_it():
    """pathspider's `observe` command: run_flow_enqueuer in a thread on int:IFACE, bounded
    queues, the main thread consuming records and stopping it through the interrupt queue."""
    import socket
    import threading
    import time
    if os.geteuid() != 0:
        pytest.skip("needs root (an AF_PACKET capture on lo)")
    seen = threading.Event()

    class Seen:
        def new_flow(self, rec, ip):
            if ip.udp is not None and ip.udp.dst_port == 9:
                seen.set()
            return True

    observer = fps.Observer("int:lo", chains=[BasicChain, Seen])
    irq, flows = queue.Queue(1000), queue.Queue(1000)
    thread = threading.Thread(target=observer.run_flow_enqueuer, args=(flows, irq))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not seen.is_set() and time.monotonic() < deadline:
                s.sendto(b"x", ("127.0.0.1", 9))
                seen.wait(0.05)
        assert seen.is_set(), "no datagram reached the chains"
        irq.put(True)
        records = []
        while True:
            item = flows.get(timeout=max(0.1, deadline - time.monotonic()))
            if item == PS_SENTINEL:
                break
            records.append(item)
        assert any(r["dp"] == 9 and r["dip"] == "127.0.0.1" and r["pkt_fwd"] >= 1
                   for r in records), records
    finally:
        if thread.is_alive():
            irq.put(True)
        thread.join(10)
    assert not thread.is_alive()


def test_run_in_a_forked_process_as_pathspider_plugins_do():
    """pathspider's Spider.start(): the Observer made in the parent, run_flow_enqueuer in an
    mp.Process (fork) putting onto an mp.Queue."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    path = os.path.join(PATHSPIDER_CAPTURES, "tcp_http.pcap")
    observer = fps.Observer("pcapfile:" + path, chains=[BasicChain, TCPChain])
    flows, irq = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=observer.run_flow_enqueuer, args=(flows, irq), daemon=True)
    proc.start()
    records = []
    try:
        while True:
            item = flows.get(timeout=30)
            if item == PS_SENTINEL:
                break
            records.append(item)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    expected, _ = run("pcapfile:" + path, [BasicChain, TCPChain])
    assert records == expected and len(records) == 3
