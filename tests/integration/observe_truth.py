#!/usr/bin/python3
"""End-to-end tests of `flowmark observe -r FILE` against ground truth, and a cross-check
with tshark's conversation tables.

    /usr/bin/python3 tests/integration/observe_truth.py BUILD_DIR [unittest options]

BUILD_DIR holds the `flowmark` binary. Needs Debian's python3-scapy (hence /usr/bin/python3,
not a pyenv python) and tshark (for the cross-check; those tests are skipped without it).
No network, no root.

How the truth is made: every scenario builds its packets with scapy, writes them to a pcap
in a temporary directory and, independently of our code, says which packets make which
record (the builder attaches each packet to an expected record as it generates it). The
record's fields are then computed here from the bytes actually written, re-dissected by
scapy: addresses, protocol and ports of the record's first packet; per direction the
packets, the IP octets (IPv4 total length, or 40 + IPv6 payload length — never the frame
length, so Ethernet padding must not count) and the OR of the TCP flags; the outer VLAN
id; the non-first fragments; the ICMP errors quoting the flow; first/last from the pcap
timestamps. flowmark's output (JSON lines, and CSV) is compared field by field; times with
a tolerance of 1 µs. Nothing here runs flowmark to decide what is expected.

Semantics taken from include/flowmark/observe/observer.hpp and apps/flowmark/observe_cli.cpp:
forward = direction of the flow's first packet; TCP/UDP/SCTP keyed by the 5-tuple, other
protocols by the 3-tuple (sp and dp null in JSON, empty in CSV); a TCP flow completes on FIN from both sides or on RST
and is emitted `--expiry-delay` (5 s) later on the packet clock, so trailing packets still
count, and a SYN on a completed flow starts a new record; a flow idle for `--idle-timeout`
is emitted at once; a flow longer than `--active-timeout` is emitted in parts,
continuation = true on the later parts, which keep the flow's orientation; a frame stamped
behind the packet clock counts at the clock; a self-flow counts every packet forward;
non-first fragments count on their first fragment's flow (or on the 3-tuple flow when it
was not seen); an ICMP error quoting a packet of a flow held counts in icmp_errors of that
flow and as one of its packets, in the direction opposite to the quoted packet's, with no
record of its own (as pathspider) — with --icmp-flows it is a packet of its own 3-tuple
ICMP flow instead — and an error quoting no flow held is its own ICMP flow; exit codes 65 (corrupt capture, flows so far still
emitted) and 66 (the capture cannot be opened).

Runs in ~15-25 s (most of it scapy building ~3,000 frames, and tshark). One test reads
pathspider's own capture icmp_ttl.pcap (Debian package pathspider; skipped without it).
OBSERVE_TEST_KEEP=1 keeps the pcaps (their directory is printed).
"""

import atexit
import csv
import io
import ipaddress
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from decimal import Decimal

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: observe_truth.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
try:
    from scapy.all import (IP, SCTP, TCP, UDP, ICMP, Ether, IPv6, IPv6ExtHdrDestOpt,
                           IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
                           ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, IPOption_RR, Padding,
                           PcapNgWriter, PcapWriter, Raw, SCTPChunkCookieAck,
                           SCTPChunkCookieEcho, SCTPChunkData, SCTPChunkInit, SCTPChunkInitAck,
                           SCTPChunkSACK, fragment, fragment6)
    from scapy.layers.ipsec import AH
    from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q
except ImportError as e:  # pragma: no cover
    sys.exit(f"observe_truth.py: needs scapy ({e}); run it with /usr/bin/python3 "
             "(Debian's python3-scapy), not a python without it")

TSHARK = shutil.which("tshark")
T0 = 1_700_000_000 * 1_000_000_000  # ns: the packet clock of every scenario starts here
SEC = 1_000_000_000
MS = 1_000_000
US = 1_000
TIME_TOLERANCE = Decimal("0.000001")  # 1 µs
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"

FIELDS = ["sip", "dip", "proto", "sp", "dp", "first", "last", "pkt_fwd", "pkt_rev", "oct_fwd",
          "oct_rev", "ip_version", "vlan", "tcp_flags_fwd", "tcp_flags_rev", "fragments",
          "icmp_errors", "continuation"]
INT_FIELDS = ["proto", "pkt_fwd", "pkt_rev", "oct_fwd", "oct_rev", "ip_version",
              "vlan", "tcp_flags_fwd", "tcp_flags_rev", "fragments", "icmp_errors"]
PORT_PROTOS = (6, 17, 132)

# TCP flag bits
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

PATHSPIDER_DATA = "/usr/lib/python3/dist-packages/pathspider/tests/data"


# ---------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------

def dissect(linktype, data):
    if linktype == 1:
        return Ether(data)
    if linktype == 113:
        return CookedLinux(data)
    if linktype == 101:
        return IP(data) if data[0] >> 4 == 4 else IPv6(data)
    raise ValueError(f"linktype {linktype}")


def layers(pkt):
    out = []
    layer = pkt
    while layer is not None and type(layer).__name__ != "NoPayload":
        out.append(layer)
        layer = layer.payload
    return out


IPV6_EXT = (IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, AH)
L4_CLASS = {6: TCP, 17: UDP, 132: SCTP}


def facts(pkt):
    """What a flow meter must see in one frame, as scapy dissects it: dict with
    src dst ip_version proto ip_len sport dport (None when not readable) tcp_flags vlan
    nonfirst_fragment."""
    ls = layers(pkt)
    vlan = 0
    ip = None
    idx = 0
    for idx, layer in enumerate(ls):
        if isinstance(layer, Dot1Q) and vlan == 0 and ip is None:
            vlan = layer.vlan
        if type(layer) in (IP, IPv6):
            ip = layer
            break
    assert ip is not None, f"no IP layer in {pkt.summary()}"
    f = {"src": ip.src, "dst": ip.dst, "vlan": vlan, "sport": None, "dport": None,
         "tcp_flags": 0, "nonfirst_fragment": False}
    rest = ls[idx + 1:]
    if type(ip) is IP:
        f["ip_version"], f["proto"], f["ip_len"] = 4, ip.proto, ip.len
        f["nonfirst_fragment"] = ip.frag != 0
    else:
        f["ip_version"], f["ip_len"] = 6, 40 + ip.plen
        nh = ip.nh
        while rest and isinstance(rest[0], IPV6_EXT):
            if isinstance(rest[0], IPv6ExtHdrFragment) and rest[0].offset != 0:
                f["nonfirst_fragment"] = True
            nh = rest[0].nh
            rest = rest[1:]
        f["proto"] = nh
    if rest and type(rest[0]) is Raw and f["proto"] in L4_CLASS and not f["nonfirst_fragment"]:
        rest = [L4_CLASS[f["proto"]](rest[0].load)]  # scapy leaves what follows AH undecoded
    if rest and not f["nonfirst_fragment"] and type(rest[0]) in (TCP, UDP, SCTP):
        f["sport"], f["dport"] = rest[0].sport, rest[0].dport
        if type(rest[0]) is TCP:
            f["tcp_flags"] = int(rest[0].flags) & 0xFF
    return f


class Rec:
    """One expected flow record: the frames that make it up."""

    def __init__(self, scenario, continuation=False, of=None):
        self.scenario = scenario
        self.of = of               # a continuation part: the flow's first part
        self.frames = []           # indices into scenario.frames
        self.icmp_errors = 0
        self.continuation = continuation
        self.quoting = {}          # frame index of an ICMP error counted here → quoted facts

    def expected(self):
        sc = self.scenario
        assert self.frames, "an expected record without packets"
        # A continuation part keeps the flow's orientation: forward is still the direction
        # of the flow's first packet (that of its first part), whatever its own first
        # packet's direction.
        first = sc.facts[(self.of or self).frames[0]]
        # A record that starts with a non-first fragment (its first fragment unseen) is the
        # 3-tuple flow of its addresses and protocol (observer.hpp, "Fragments").
        portless = first["nonfirst_fragment"]
        r = {"sip": first["src"], "dip": first["dst"], "proto": first["proto"],
             "ip_version": first["ip_version"], "vlan": first["vlan"],
             "sp": None, "dp": None, "pkt_fwd": 0, "pkt_rev": 0, "oct_fwd": 0, "oct_rev": 0,
             "tcp_flags_fwd": 0, "tcp_flags_rev": 0, "fragments": 0,
             "icmp_errors": self.icmp_errors, "continuation": self.continuation}
        if first["proto"] in PORT_PROTOS and not portless:
            r["sp"], r["dp"] = first["sport"], first["dport"]
        times = []
        for i in self.frames:
            f = sc.facts[i]
            if i in self.quoting:
                # An ICMP error counted on the flow it quotes: it goes back towards the
                # quoted packet's source, against the quoted packet's direction.
                q = self.quoting[i]
                quoted_fwd = (norm(q["src"]), norm(q["dst"])) == (norm(r["sip"]), norm(r["dip"])) and (
                    r["sp"] is None or (q["sport"], q["dport"]) == (r["sp"], r["dp"]))
                fwd = not quoted_fwd
            elif f["nonfirst_fragment"]:
                fwd = (f["src"], f["dst"]) == (r["sip"], r["dip"])
                r["fragments"] += 1
            else:
                fwd = (f["src"], f["dst"]) == (r["sip"], r["dip"]) and (
                    first["proto"] not in PORT_PROTOS or portless
                    or (f["sport"], f["dport"]) == (r["sp"], r["dp"]))
            d = "fwd" if fwd else "rev"
            r["pkt_" + d] += 1
            r["oct_" + d] += f["ip_len"]
            r["tcp_flags_" + d] |= f["tcp_flags"]
            times.append(sc.clock[i])
        r["first"] = Decimal(min(times)) / SEC
        r["last"] = Decimal(max(times)) / SEC
        return r


class Scenario:
    """A capture under construction: frames in capture order plus the expected records."""

    def __init__(self, name, linktype=1, nano=False, pcapng=False, args=()):
        self.name, self.linktype, self.nano, self.pcapng = name, linktype, nano, pcapng
        self.args = list(args)
        self.pkts, self.times, self.facts, self.records = [], [], [], []
        self.clock = []            # the packet clock at each frame: the largest time so far
        self.wirelen = []          # the frame's length on the wire (> len(data) when cut)
        self.owner = []            # the Rec each frame counts in (None: none)
        self.path = None

    def record(self, continuation=False, of=None):
        assert continuation == (of is not None), "a continuation part names the flow's first part"
        r = Rec(self, continuation, of)
        self.records.append(r)
        return r

    def add(self, rec, t_ns, pkt, late=False, snap=None, quoting=None):
        """A frame stamped t_ns counted in `rec` (None: in no record). late: the stamp may
        be behind an earlier frame's (the observer then counts it at the packet clock, the
        largest stamp so far: observer.hpp, "Clock"). snap: keep only that many bytes of the
        frame (a capture with a snap length), the wire length being the whole frame's."""
        if not self.nano:
            assert t_ns % US == 0, "a microsecond pcap holds whole microseconds"
        if self.times and not late:
            assert t_ns >= self.times[-1], f"{self.name}: time goes backwards"
        data = bytes(pkt)
        self.wirelen.append(len(data))
        if snap is not None:
            data = data[:snap]
        self.pkts.append(data)
        self.times.append(t_ns)
        self.clock.append(max(t_ns, self.clock[-1]) if self.clock else t_ns)
        self.facts.append(facts(dissect(self.linktype, data)))
        self.owner.append(rec)
        if rec is not None:
            rec.frames.append(len(self.pkts) - 1)
            if quoting is not None:
                rec.quoting[len(self.pkts) - 1] = quoting

    def icmp_error(self, quoted_rec, t_ns, pkt, quoted, own_rec):
        """An ICMP error quoting `quoted` (the bytes it quotes, from the IP header on) of a
        packet of `quoted_rec`: a packet of that flow, or with --icmp-flows of `own_rec`."""
        quoted_rec.icmp_errors += 1
        if "--icmp-flows" in self.args:
            self.add(own_rec, t_ns, pkt)
        else:
            self.add(quoted_rec, t_ns, pkt, quoting=quoted_facts(quoted))

    def write(self, directory):
        suffix = ".pcapng" if self.pcapng else ".pcap"
        self.path = os.path.join(directory, self.name + suffix)
        if self.pcapng:
            w = PcapNgWriter(self.path)
        else:
            w = PcapWriter(self.path, linktype=self.linktype, nano=self.nano, sync=False)
        for data, t, wl in zip(self.pkts, self.times, self.wirelen):
            p = dissect(self.linktype, data)
            p.time = Decimal(t) / SEC
            p.wirelen = wl
            w.write(p)
        w.close()
        return self.path

    def expected(self):
        return [r.expected() for r in self.records if r.frames]

    # Link-layer overhead per direction (frame length - IP length, summed), for converting
    # tshark's frame bytes to IP bytes. Keyed (proto, (src, sport), (dst, dport)).
    def link_overhead(self):
        out = {}
        for wl, f, owner in zip(self.wirelen, self.facts, self.owner):
            if owner is None or f["proto"] not in PORT_PROTOS or f["nonfirst_fragment"]:
                continue
            k = (f["proto"], (norm(f["src"]), f["sport"]), (norm(f["dst"]), f["dport"]))
            out[k] = out.get(k, 0) + wl - f["ip_len"]
        return out


def norm(addr):
    return str(ipaddress.ip_address(addr))


def quoted_facts(b):
    """Addresses and ports of the packet an ICMP error quotes (IP header without IPv6
    extension headers, then at least 4 bytes), read from its bytes."""
    b = bytes(b)
    if b[0] >> 4 == 4:
        hl, proto = (b[0] & 15) * 4, b[9]
        src, dst = ipaddress.ip_address(b[12:16]), ipaddress.ip_address(b[16:20])
    else:
        hl, proto = 40, b[6]
        src, dst = ipaddress.ip_address(b[8:24]), ipaddress.ip_address(b[24:40])
    ports = (int.from_bytes(b[hl:hl + 2], "big"), int.from_bytes(b[hl + 2:hl + 4], "big"))
    if proto not in PORT_PROTOS:
        ports = (None, None)
    return {"src": str(src), "dst": str(dst), "sport": ports[0], "dport": ports[1]}


def eth(vlans=(), qinq_8a88=False):
    """Ethernet header with optional tags: vlans = (outer, inner...)."""
    e = Ether(src=MAC_A, dst=MAC_B)
    for i, v in enumerate(vlans):
        e = e / (Dot1AD(vlan=v) if (i == 0 and qinq_8a88) else Dot1Q(vlan=v))
    return e


def pad60(frame):
    """Pads a short Ethernet frame to 60 bytes, as a NIC does (the padding is not IP)."""
    n = len(bytes(frame))
    return frame / Padding(b"\x00" * (60 - n)) if n < 60 else frame


class TcpConn:
    """Builds the segments of one TCP connection with consistent sequence numbers."""

    def __init__(self, cip, sip, cport, sport, v6=False, link=eth):
        self.c, self.s, self.cp, self.sp, self.v6, self.link = cip, sip, cport, sport, v6, link
        self.seq = {True: 1000, False: 5000}

    def seg(self, from_client, flags, payload=b"", opts=()):
        L3 = IPv6 if self.v6 else IP
        src, dst = (self.c, self.s) if from_client else (self.s, self.c)
        sp, dp = (self.cp, self.sp) if from_client else (self.sp, self.cp)
        ack = self.seq[not from_client] if "A" in flags else 0
        p = self.link() / L3(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags,
                                                     seq=self.seq[from_client], ack=ack,
                                                     options=list(opts)) / payload
        self.seq[from_client] += len(payload) + (1 if ("S" in flags or "F" in flags) else 0)
        return pad60(p) if self.link is eth else p


# ---------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------

def sc_tcp4():
    """(a) IPv4 TCP: handshake, data both ways, FIN/FIN, last ACK (after the second FIN:
    within the expiry delay, so it counts). Pure ACKs padded to 60 bytes."""
    sc = Scenario("tcp4_handshake")
    r = sc.record()
    c = TcpConn("192.0.2.10", "198.51.100.20", 40000, 80)
    t = T0
    steps = [(True, "S", b"", [("MSS", 1460), ("SAckOK", b"")]), (False, "SA", b"", [("MSS", 1400)]),
             (True, "A", b"", []), (True, "PA", b"G" * 300, []), (False, "A", b"", []),
             (False, "PA", b"H" * 1400, []), (False, "PA", b"I" * 800, []), (True, "A", b"", []),
             (True, "FA", b"", []), (False, "FA", b"", []), (True, "A", b"", [])]
    for i, (fc, fl, pl, opts) in enumerate(steps):
        t += 12_345 * US + i * US
        sc.add(r, t, c.seg(fc, fl, pl, opts))
    return sc


def sc_pcapng_nano():
    """The TCP conversation of (a) in a pcapng file, and a nanosecond pcap of a UDP flow."""
    sc = Scenario("tcp4_pcapng", pcapng=True)
    r = sc.record()
    c = TcpConn("192.0.2.11", "198.51.100.21", 40001, 443)
    t = T0 + 7 * SEC
    for fc, fl, pl in [(True, "S", b""), (False, "SA", b""), (True, "A", b""),
                       (True, "PA", b"x" * 517), (False, "PA", b"y" * 1200), (True, "FA", b""),
                       (False, "FA", b""), (True, "A", b"")]:
        t += 3 * MS
        sc.add(r, t, c.seg(fc, fl, pl))
    return sc


def sc_nano():
    sc = Scenario("udp4_nanosecond", nano=True)
    r = sc.record()
    t = T0 + 123_456_789
    for i in range(6):
        fwd = i % 2 == 0
        src, dst = ("192.0.2.30", "192.0.2.31") if fwd else ("192.0.2.31", "192.0.2.30")
        sp, dp = (33333, 4789) if fwd else (4789, 33333)
        t += 1_000_001 + i * 7  # nanosecond digits
        sc.add(r, t, eth() / IP(src=src, dst=dst) / UDP(sport=sp, dport=dp) / (b"n" * (100 + i)))
    return sc


def sc_udp6():
    """(b) IPv6 UDP request/response exchange; a second IPv6 UDP flow whose packets carry
    hop-by-hop and destination-options extension headers, a third with routing,
    destination options and AH (the transport is found after the walk, and the extension
    headers count in the IP octets). The routing header has no segment left, so the IPv6
    destination is the final one (tshark keys conversations on a routing header's final
    address while segments are left; flowmark, like other flow meters, on the header's)."""
    sc = Scenario("udp6_exchange")
    r1, r2, r3 = sc.record(), sc.record(), sc.record()
    a, b = "2001:db8:1::10", "2001:db8:2::20"
    t = T0
    for i in range(4):
        t += 40 * MS
        sc.add(r1, t, eth() / IPv6(src=a, dst=b) / UDP(sport=5353, dport=53) / (b"q" * (30 + i)))
        t += 2 * MS
        sc.add(r1, t, eth() / IPv6(src=b, dst=a) / UDP(sport=53, dport=5353) / (b"r" * (200 + 10 * i)))
    for i in range(3):
        t += 5 * MS
        src, dst = (b, a) if i != 1 else (a, b)
        sp, dp = (7000, 7001) if i != 1 else (7001, 7000)
        sc.add(r2, t, eth() / IPv6(src=src, dst=dst) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
               / UDP(sport=sp, dport=dp) / (b"e" * 64))
        t += 5 * MS
        sc.add(r3, t, eth() / IPv6(src=src, dst=dst) / IPv6ExtHdrRouting(addresses=["2001:db8:3::1"], segleft=0)
               / IPv6ExtHdrDestOpt() / AH(nh=17, payloadlen=4, spi=0x100, seq=i + 1, icv=b"\x00" * 12)
               / UDP(sport=sp + 100, dport=dp + 100) / (b"h" * 33))
    return sc


def sc_sctp():
    """(c) SCTP association set-up and data, over IPv4 and over IPv6."""
    sc = Scenario("sctp")
    t = T0
    for a, b, L3 in [("10.1.0.1", "10.1.0.2", IP), ("2001:db8:5::1", "2001:db8:5::2", IPv6)]:
        r = sc.record()
        seq = [(True, SCTPChunkInit(init_tag=1, a_rwnd=65535, n_out_streams=2, n_in_streams=2, init_tsn=1)),
               (False, SCTPChunkInitAck(init_tag=2, a_rwnd=65535, n_out_streams=2, n_in_streams=2, init_tsn=9)),
               (True, SCTPChunkCookieEcho(cookie=b"c" * 32)), (False, SCTPChunkCookieAck()),
               (True, SCTPChunkData(tsn=1, data=b"d" * 100)), (False, SCTPChunkSACK(cumul_tsn_ack=1)),
               (True, SCTPChunkData(tsn=2, data=b"d" * 900))]
        for fwd, chunk in seq:
            t += 10 * MS
            src, dst = (a, b) if fwd else (b, a)
            sp, dp = (5000, 36412) if fwd else (36412, 5000)
            sc.add(r, t, eth() / L3(src=src, dst=dst) / SCTP(sport=sp, dport=dp, tag=7) / chunk)
    return sc


def sc_icmp_echo():
    """(d) ICMP echo request/reply: one 3-tuple flow (sp and dp null) even across echo ids;
    ICMPv6 echo likewise. A TCP flow between ports 0 keeps sp = dp = 0 (not null)."""
    sc = Scenario("icmp_echo")
    r4, r6, zero = sc.record(), sc.record(), sc.record()
    sc.add(zero, T0, eth() / IP(src="192.0.2.51", dst="192.0.2.61") / TCP(sport=0, dport=0, flags="S"))
    t = T0
    for i in range(3):
        ident = 0x100 + (i // 2)  # two different echo ids: still the same 3-tuple flow
        t += 1 * SEC
        sc.add(r4, t, eth() / IP(src="192.0.2.50", dst="192.0.2.60") / ICMP(type=8, id=ident, seq=i) / (b"p" * 56))
        t += 300 * US
        sc.add(r4, t, eth() / IP(src="192.0.2.60", dst="192.0.2.50") / ICMP(type=0, id=ident, seq=i) / (b"p" * 56))
        t += 100 * MS
        sc.add(r6, t, eth() / IPv6(src="2001:db8::50", dst="2001:db8::60") / ICMPv6EchoRequest(id=7, seq=i, data=b"z" * 32))
        t += 200 * US
        sc.add(r6, t, eth() / IPv6(src="2001:db8::60", dst="2001:db8::50") / ICMPv6EchoReply(id=7, seq=i, data=b"z" * 32))
    return sc


def sc_vlan():
    """(e) 802.1Q-tagged and QinQ (0x88a8 outer, and 0x8100/0x8100) traffic; vlan = the
    outer id; octets are the IP layer's whatever the tags."""
    sc = Scenario("vlan_qinq")
    t = T0
    cases = [((100,), False, "10.2.0.1", "10.2.0.2"), ((200, 300), True, "10.2.1.1", "10.2.1.2"),
             ((10, 20), False, "10.2.2.1", "10.2.2.2")]
    recs = [sc.record() for _ in cases]
    for i in range(4):
        for rec, (vl, q, a, b) in zip(recs, cases):
            fwd = i % 2 == 0
            c = TcpConn(a, b, 41000, 8080, link=lambda vl=vl, q=q: eth(vl, q))
            c.seq = {True: 100 + i, False: 200 + i}
            t += 1 * MS
            sc.add(rec, t, c.seg(fwd, "PA" if i else "S", b"v" * (10 * i)))
    return sc


def sc_vlan_keyed(key_vlan):
    """(e) The same 5-tuple in VLAN 100 and VLAN 101: with --vlan two records, without it
    one (vlan = the first seen)."""
    sc = Scenario("vlan_keyed" if key_vlan else "vlan_unkeyed", args=["--vlan"] if key_vlan else [])
    ra = sc.record()
    rb = sc.record() if key_vlan else ra
    t = T0
    for i in range(6):
        rec, v = (ra, 100) if i % 2 == 0 else (rb, 101)
        t += 2 * MS
        fwd = i % 3 != 2
        src, dst = ("10.3.0.1", "10.3.0.2") if fwd else ("10.3.0.2", "10.3.0.1")
        sp, dp = (6000, 6001) if fwd else (6001, 6000)
        sc.add(rec, t, eth((v,)) / IP(src=src, dst=dst) / UDP(sport=sp, dport=dp) / (b"k" * (20 + i)))
    return sc


def sc_fragments():
    """(f) A UDP datagram in three IPv4 fragments (first, then the last, then the middle
    one: out of order), and an IPv6 UDP datagram in three fragments (fragment header),
    likewise. Non-first fragments belong to the UDP flow and count in `fragments`; every
    fragment counts as a packet with its own IP length. A reply follows each."""
    sc = Scenario("fragments")
    t = T0
    r4, r6 = sc.record(), sc.record()
    dgram = IP(src="192.0.2.70", dst="192.0.2.71", id=0x4242) / UDP(sport=2049, dport=4000) / (b"F" * 3000)
    frags = fragment(dgram, fragsize=1200)
    assert len(frags) == 3
    for fr in (frags[0], frags[2], frags[1]):
        t += 1 * MS
        sc.add(r4, t, eth() / fr)
    t += 1 * MS
    sc.add(r4, t, eth() / IP(src="192.0.2.71", dst="192.0.2.70") / UDP(sport=4000, dport=2049) / b"ok")
    d6 = (IPv6(src="2001:db8:f::1", dst="2001:db8:f::2") / IPv6ExtHdrFragment(id=0xABCDEF)
          / UDP(sport=2050, dport=4001) / (b"G" * 3000))
    f6 = fragment6(d6, 1280)
    assert len(f6) == 3
    for fr in (f6[0], f6[2], f6[1]):
        t += 1 * MS
        sc.add(r6, t, eth() / fr)
    t += 1 * MS
    sc.add(r6, t, eth() / IPv6(src="2001:db8:f::2", dst="2001:db8:f::1") / UDP(sport=4001, dport=2050) / b"ok")
    return sc


def sc_icmp_errors(icmp_flows=False):
    """(g) An ICMP port unreachable quoting a UDP datagram of a flow (IP header + 8 bytes,
    as routers do) → icmp_errors = 1 on that UDP flow; an ICMPv6 destination unreachable
    quoting an IPv6 UDP datagram likewise. A retry follows each error (so `last` does not
    depend on whether the error touches it). By default each error is also a packet of the
    flow it quotes (reverse direction) and makes no record; with --icmp-flows (icmp_flows)
    it is a packet of its own 3-tuple ICMP flow."""
    sc = Scenario("icmp_errors_icmp_flows" if icmp_flows else "icmp_errors",
                  args=["--icmp-flows"] if icmp_flows else [])
    t = T0
    r4, r6 = sc.record(), sc.record()
    icmp4, icmp6 = sc.record(), sc.record()  # own records: only with --icmp-flows
    q = IP(src="192.0.2.80", dst="192.0.2.81", id=9) / UDP(sport=51000, dport=33434) / (b"u" * 20)
    t += 1 * MS
    sc.add(r4, t, eth() / q)
    t += 1 * MS
    sc.icmp_error(r4, t, eth() / IP(src="192.0.2.81", dst="192.0.2.80") / ICMP(type=3, code=3)
                  / Raw(bytes(q)[:28]), bytes(q)[:28], icmp4)
    t += 1 * MS
    sc.add(r4, t, eth() / q)
    q6 = IPv6(src="2001:db8:e::1", dst="2001:db8:e::2") / UDP(sport=51001, dport=33435) / (b"u" * 20)
    t += 1 * MS
    sc.add(r6, t, eth() / q6)
    t += 1 * MS
    sc.icmp_error(r6, t, eth() / IPv6(src="2001:db8:e::2", dst="2001:db8:e::1")
                  / ICMPv6DestUnreach(code=4) / Raw(bytes(q6)), bytes(q6), icmp6)
    t += 1 * MS
    sc.add(r6, t, eth() / q6)
    # A time exceeded quoting a TCP segment of the reverse direction: the same flow, and
    # (by default) a packet in its forward direction, towards the quoted segment's source.
    rt = sc.record()
    icmp_t = sc.record()
    c = TcpConn("192.0.2.82", "198.51.100.83", 52000, 443)
    for fc, fl in [(True, "S"), (False, "SA")]:
        t += 1 * MS
        sc.add(rt, t, c.seg(fc, fl))
    quoted = bytes(c.seg(False, "A", b"w" * 10)[IP])
    t += 1 * MS
    sc.icmp_error(rt, t, eth() / IP(src="203.0.113.1", dst="198.51.100.83") / ICMP(type=11, code=0)
                  / Raw(quoted[:28]), quoted[:28], icmp_t)
    t += 1 * MS
    sc.add(rt, t, c.seg(True, "A"))
    # A time exceeded quoting an ICMP echo request: the echo's 3-tuple flow.
    echo = sc.record()
    icmp_x = sc.record()
    req = IP(src="192.0.2.86", dst="198.51.100.87", ttl=1) / ICMP(type=8, id=3, seq=1) / (b"p" * 20)
    t += 1 * MS
    sc.add(echo, t, eth() / req)
    t += 1 * MS
    sc.icmp_error(echo, t, eth() / IP(src="203.0.113.2", dst="192.0.2.86") / ICMP(type=11, code=0)
                  / Raw(bytes(req)[:28]), bytes(req)[:28], icmp_x)
    # An error quoting a packet of no flow seen: only its own ICMP flow, in both modes.
    lone = sc.record()
    ghost = IP(src="192.0.2.84", dst="192.0.2.85") / UDP(sport=9, dport=9) / b"g"
    t += 1 * MS
    sc.add(lone, t, eth() / IP(src="192.0.2.85", dst="192.0.2.84") / ICMP(type=3, code=1)
           / Raw(bytes(ghost)[:28]))
    return sc


def sc_many(seed=20240611):
    """(h) 300 flows (TCP and UDP, IPv4 and IPv6) interleaved at random; some start with
    the "server's" packet (a capture begun mid-conversation: forward is then the server's
    direction, whatever the port numbers); some TCP flows are captured from the SYN-ACK on.
    Timestamps increase over ~8 s (no timeout fires)."""
    rng = random.Random(seed)
    sc = Scenario("many_interleaved")
    flows = []
    used = set()
    for i in range(300):
        v6 = rng.random() < 0.25
        proto = 6 if rng.random() < 0.6 else 17
        while True:
            if v6:
                a, b = f"2001:db8:{i % 7}::{rng.randrange(1, 65535):x}", f"2001:db8:ff::{rng.randrange(1, 65535):x}"
            else:
                a, b = f"10.{rng.randrange(10, 20)}.{rng.randrange(256)}.{rng.randrange(1, 255)}", \
                    f"172.16.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            ap, bp = rng.randrange(1024, 65535), rng.choice([53, 80, 443, 8080, 123, 5000])
            k = (proto, a, b, ap, bp)
            if k not in used:
                used.add(k)
                break
        n = rng.randrange(1, 17)
        server_first = rng.random() < 0.15
        rec = sc.record()
        segs = []
        L3 = IPv6 if v6 else IP
        for j in range(n):
            from_a = j % 3 != 1
            if j == 0 and server_first:
                from_a = False
            src, dst = (a, b) if from_a else (b, a)
            sp, dp = (ap, bp) if from_a else (bp, ap)
            size = rng.choice([0, 0, 10, 100, 536, 1200, 1400])
            if proto == 6:
                if j == 0:
                    flags = "SA" if server_first else "S"
                else:
                    flags = rng.choice(["A", "PA", "PA", "A"])
                    if flags == "A":
                        size = 0
                l4 = TCP(sport=sp, dport=dp, flags=flags, seq=j * 1000, ack=1 if "A" in flags else 0)
            else:
                l4 = UDP(sport=sp, dport=dp)
            p = eth() / L3(src=src, dst=dst) / l4 / (b"m" * size)
            segs.append(pad60(p))
        flows.append((rec, segs))
    # Random interleaving that keeps each flow's own order.
    queue = []
    for rec, segs in flows:
        queue.extend([(rec, None)] * len(segs))
    rng.shuffle(queue)
    pos = {id(rec): 0 for rec, _ in flows}
    segs_of = {id(rec): segs for rec, segs in flows}
    t = T0
    for rec, _ in queue:
        segs = segs_of[id(rec)]
        p = segs[pos[id(rec)]]
        pos[id(rec)] += 1
        t += rng.randrange(1, 5000) * US
        sc.add(rec, t, p)
    return sc


def sc_idle_gap():
    """(i) A UDP flow with a 61 s gap, --idle-timeout 30 → two records; the second starts
    with the reverse direction's packet, so its forward is that direction. Another flow
    keeps the clock going inside the gap only at its start (the gap is a clock jump)."""
    sc = Scenario("idle_gap", args=["--idle-timeout", "30"])
    r1, r2 = sc.record(), sc.record()
    a, b = "192.0.2.90", "192.0.2.91"
    t = T0
    for i in range(3):
        t += 1 * SEC
        fwd = i != 1
        sc.add(r1, t, eth() / IP(src=a if fwd else b, dst=b if fwd else a)
               / UDP(sport=1111 if fwd else 2222, dport=2222 if fwd else 1111) / (b"i" * (50 + i)))
    t += 61 * SEC
    for i in range(2):
        fwd = i == 1  # the new record's first packet goes b -> a
        sc.add(r2, t, eth() / IP(src=a if fwd else b, dst=b if fwd else a)
               / UDP(sport=1111 if fwd else 2222, dport=2222 if fwd else 1111) / (b"j" * (70 + i)))
        t += 1 * SEC
    return sc


def sc_active_timeout():
    """(i) A flow of 35 s with --active-timeout 10 → parts; continuation = true on the
    later parts. Packets every 3 s, with one packet just (10 ms) after each 10-s deadline,
    so whether a part's deadline is counted from its own first packet or from the flow's
    start gives the same parts; no packet on a deadline. Each part starts with a forward
    packet; reverse packets in between."""
    sc = Scenario("active_timeout", args=["--active-timeout", "10"])
    offsets_ms = [0, 3000, 6000, 9000,            # part 1: [0, 10 s)
                  10010, 13000, 16000, 19000,     # part 2 starts 10.01 s: deadline 20.01 (or 20)
                  20020, 23000, 26000, 29000,     # part 3 starts 20.02 s: deadline 30.02 (or 30)
                  30030, 33000, 35000]            # part 4
    parts = [sc.record()]
    parts += [sc.record(continuation=True, of=parts[0]) for _ in range(3)]
    starts = {0: 0, 10010: 1, 20020: 2, 30030: 3}
    a, b = "192.0.2.100", "192.0.2.101"
    part = None
    for n, off in enumerate(offsets_ms):
        if off in starts:
            part = parts[starts[off]]
            fwd = True
        else:
            fwd = n % 2 == 1
        sc.add(part, T0 + off * MS, eth() / IP(src=a if fwd else b, dst=b if fwd else a)
               / UDP(sport=3333 if fwd else 4444, dport=4444 if fwd else 3333) / (b"a" * (10 + n)))
    return sc


def sc_tcp_rst():
    """(i) A TCP flow ended by RST (completed; emitted 5 s later), and 20 s later a new
    connection on the same 5-tuple → a second record."""
    sc = Scenario("tcp_rst")
    r1, r2 = sc.record(), sc.record()
    t = T0
    c = TcpConn("192.0.2.110", "192.0.2.111", 45000, 25)
    for fc, fl, pl in [(True, "S", b""), (False, "SA", b""), (True, "A", b""),
                       (False, "PA", b"220 hi\r\n"), (True, "R", b"")]:
        t += 20 * MS
        sc.add(r1, t, c.seg(fc, fl, pl))
    t += 20 * SEC
    c = TcpConn("192.0.2.110", "192.0.2.111", 45000, 25)
    for fc, fl, pl in [(True, "S", b""), (False, "RA", b"")]:
        t += 20 * MS
        sc.add(r2, t, c.seg(fc, fl, pl))
    return sc


def sc_tcp_syn_after_fin():
    """(i) A TCP connection closed by FIN/FIN/ACK, then a new connection (SYN) on the same
    5-tuple 1 s later, inside the 5-s expiry delay: observer.md's rule — a SYN after FIN
    starts a new record."""
    sc = Scenario("tcp_syn_after_fin")
    r1, r2 = sc.record(), sc.record()
    t = T0
    c = TcpConn("192.0.2.120", "192.0.2.121", 46000, 80)
    for fc, fl, pl in [(True, "S", b""), (False, "SA", b""), (True, "A", b""),
                       (True, "PA", b"GET / HTTP/1.0\r\n\r\n"), (False, "PA", b"x" * 700),
                       (False, "FA", b""), (True, "FA", b""), (False, "A", b"")]:
        t += 10 * MS
        sc.add(r1, t, c.seg(fc, fl, pl))
    t += 1 * SEC
    c = TcpConn("192.0.2.120", "192.0.2.121", 46000, 80)
    c.seq = {True: 900000, False: 700000}
    for fc, fl, pl in [(True, "S", b""), (False, "SA", b""), (True, "A", b""),
                       (True, "PA", b"again")]:
        t += 10 * MS
        sc.add(r2, t, c.seg(fc, fl, pl))
    return sc


def sc_linktypes():
    """Linux cooked capture (SLL) and raw IP link types."""
    out = []
    sc = Scenario("linux_sll", linktype=113)
    r = sc.record()
    t = T0
    for i in range(4):
        fwd = i % 2 == 0
        t += 5 * MS
        sc.add(r, t, CookedLinux(pkttype=0 if fwd else 4, lladdrtype=1, lladdrlen=6,
                                 src=b"\x02\x00\x00\x00\x00\x0a\x00\x00", proto=0x0800)
               / IP(src="192.0.2.130" if fwd else "192.0.2.131", dst="192.0.2.131" if fwd else "192.0.2.130")
               / UDP(sport=1234 if fwd else 80, dport=80 if fwd else 1234) / (b"s" * (30 * i + 1)))
    out.append(sc)
    sc = Scenario("raw_ip", linktype=101)
    r4, r6 = sc.record(), sc.record()
    c4 = TcpConn("192.0.2.140", "192.0.2.141", 47000, 22, link=lambda: Raw(b""))
    c6 = TcpConn("2001:db8:7::1", "2001:db8:7::2", 47001, 22, v6=True, link=lambda: Raw(b""))
    for fc, fl, pl in [(True, "S", b""), (False, "SA", b""), (True, "PA", b"SSH-2.0-x\r\n")]:
        t += 5 * MS
        sc.add(r4, t, c4.seg(fc, fl, pl)[IP])
        t += 5 * MS
        sc.add(r6, t, c6.seg(fc, fl, pl)[IPv6])
    out.append(sc)
    return out


def sc_fragment_first_unseen():
    """(f) A non-first IPv4 fragment that arrives before its first fragment: counted on the
    3-tuple flow (ports 0) of its addresses and protocol, fragments = 1 (observer.hpp,
    "Fragments"); the first fragment then starts the UDP flow and the third fragment,
    arriving after it, is attributed to that flow."""
    sc = Scenario("fragment_first_unseen")
    early, udp = sc.record(), sc.record()
    t = T0
    dgram = IP(src="192.0.2.72", dst="192.0.2.73", id=0x777) / UDP(sport=2051, dport=4002) / (b"H" * 3000)
    f = fragment(dgram, fragsize=1200)
    for rec, fr in [(early, f[1]), (udp, f[0]), (udp, f[2])]:
        t += 1 * MS
        sc.add(rec, t, eth() / fr)
    return sc


def sc_mpls_ipopts():
    """MPLS label stacks (two labels, and one) and IPv4 with options (IHL 7): the
    transport header is found after them; octets are the IP total length."""
    from scapy.contrib.mpls import MPLS
    sc = Scenario("mpls_ip_options")
    r1, r2 = sc.record(), sc.record()
    t = T0
    for i in range(4):
        fwd = i % 2 == 0
        a, b = ("10.4.0.1", "10.4.0.2") if fwd else ("10.4.0.2", "10.4.0.1")
        sp, dp = (7100, 7200) if fwd else (7200, 7100)
        t += 1 * MS
        labels = MPLS(label=100 + i, s=0) / MPLS(label=16, s=1) if fwd else MPLS(label=30, s=1)
        sc.add(r1, t, Ether(src=MAC_A, dst=MAC_B, type=0x8847) / labels / IP(src=a, dst=b)
               / UDP(sport=sp, dport=dp) / (b"l" * (40 + i)))
        t += 1 * MS
        a, b = ("10.4.1.1", "10.4.1.2") if fwd else ("10.4.1.2", "10.4.1.1")
        sp, dp = (7300, 7400) if fwd else (7400, 7300)
        sc.add(r2, t, eth() / IP(src=a, dst=b, options=[IPOption_RR(routers=["1.2.3.4"])])
               / TCP(sport=sp, dport=dp, flags="PA") / (b"o" * (10 + i)))
    return sc


def sc_snaplen():
    """A capture with a 64-byte snap length: the octets come from the IP length fields,
    not from the captured bytes."""
    sc = Scenario("snaplen_64")
    r4, r6 = sc.record(), sc.record()
    t = T0
    for i in range(3):
        fwd = i != 1
        t += 1 * MS
        sc.add(r4, t, eth() / IP(src="10.5.0.1" if fwd else "10.5.0.2", dst="10.5.0.2" if fwd else "10.5.0.1")
               / TCP(sport=8000 if fwd else 9000, dport=9000 if fwd else 8000, flags="PA") / (b"s" * 1400), snap=64)
        t += 1 * MS
        sc.add(r6, t, eth() / IPv6(src="2001:db8:9::1" if fwd else "2001:db8:9::2", dst="2001:db8:9::2" if fwd else "2001:db8:9::1")
               / UDP(sport=8001 if fwd else 9001, dport=9001 if fwd else 8001) / (b"s" * 1200), snap=64)
    return sc


def sc_late_and_self():
    """Frames stamped behind the packet clock (merged captures): counted at the clock, so a
    record's times never go backwards (observer.hpp, "Clock"); and a self-flow (same
    address and port on both ends): every packet counts forward."""
    sc = Scenario("late_and_self")
    r1, r2 = sc.record(), sc.record()
    t = T0 + 1 * SEC
    stamps = [0, 10, 4, 20, 15, 16, 30]  # ms: 4, 15 and 16 are late
    for n, ms in enumerate(stamps):
        fwd = n % 2 == 0
        sc.add(r1, t + ms * MS, eth() / IP(src="10.6.0.1" if fwd else "10.6.0.2", dst="10.6.0.2" if fwd else "10.6.0.1")
               / UDP(sport=6100 if fwd else 6200, dport=6200 if fwd else 6100) / (b"t" * (n + 1)), late=True)
    # a record whose first packet is late: first = the clock, not its own stamp
    r3 = sc.record()
    sc.add(r3, t + 25 * MS, eth() / IP(src="10.6.1.1", dst="10.6.1.2") / UDP(sport=1, dport=2), late=True)
    for n in range(3):
        sc.add(r2, t + (40 + n) * MS, eth() / IP(src="10.6.0.9", dst="10.6.0.9")
               / UDP(sport=6300, dport=6300) / (b"q" * (n + 5)))
    return sc


def sc_eviction():
    """--max-flows 2: a third flow evicts the least recently active one (emitted then);
    when the evicted flow's 5-tuple comes back it is a new record."""
    sc = Scenario("eviction", args=["--max-flows", "2"])
    a1, b, c, a2 = sc.record(), sc.record(), sc.record(), sc.record()
    t = T0
    def pkt(n):
        return eth() / IP(src=f"10.7.0.{n}", dst="10.7.1.1") / UDP(sport=1000 + n, dport=53) / b"e"
    for rec, n, off in [(a1, 1, 0), (a1, 1, 500), (b, 2, 1000), (c, 3, 2000), (a2, 1, 3000), (c, 3, 4000)]:
        sc.add(rec, t + off * MS, pkt(n))
    return sc


def sc_expiry_delay():
    """--expiry-delay 2: after FIN/FIN a trailing ACK 1.5 s later still counts; a stray ACK
    2.5 s after the completion is a new record (forward = its own direction)."""
    sc = Scenario("expiry_delay", args=["--expiry-delay", "2"])
    r1, r2 = sc.record(), sc.record()
    c = TcpConn("192.0.2.150", "192.0.2.151", 48000, 80)
    t = T0
    for fc, fl, pl in [(True, "S", b""), (False, "SA", b""), (True, "A", b""),
                       (False, "PA", b"z" * 100), (True, "FA", b""), (False, "FA", b"")]:
        t += 10 * MS
        sc.add(r1, t, c.seg(fc, fl, pl))
    done = t
    sc.add(r1, done + 1500 * MS, c.seg(True, "A"))
    sc.add(r2, done + 2500 * MS, c.seg(False, "A"))
    return sc


def sc_no_tcp_completion():
    """--no-tcp-completion: FIN/FIN does not complete the flow, so a SYN on the same 5-tuple
    1 s later is counted in the same record."""
    base = sc_tcp_syn_after_fin()
    sc = Scenario("no_tcp_completion", args=["--no-tcp-completion"])
    r = sc.record()
    for data, t in zip(base.pkts, base.times):
        sc.add(r, t, dissect(1, data))
    return sc


def sc_idle_steady():
    """(i) Idle timeout while another flow keeps the clock moving in 1-s steps (no jump):
    flow A (3 packets, then silent) is emitted once idle 30 s; its next packet at 65 s
    starts a new record."""
    sc = Scenario("idle_steady")
    a1, a2, b = sc.record(), sc.record(), sc.record()
    def pa(fwd):
        return eth() / IP(src="10.8.0.1" if fwd else "10.8.0.2", dst="10.8.0.2" if fwd else "10.8.0.1") \
            / UDP(sport=1500 if fwd else 1600, dport=1600 if fwd else 1500) / b"a"
    for s_ in range(0, 71):
        t = T0 + s_ * SEC
        if s_ in (0, 1, 2):
            sc.add(a1, t, pa(s_ != 1))
        if s_ == 65:
            sc.add(a2, t, pa(False))
        sc.add(b, t + 500 * MS, eth() / IP(src="10.8.1.1", dst="10.8.1.2") / UDP(sport=1700, dport=1800) / b"b")
    return sc


def sc_active_then_idle():
    """(i) --active-timeout 10 --idle-timeout 30: flow X (packets at 0..9 s, then one at
    25 s, in the reverse direction) gives a first part and a continuation part holding the
    25-s packet, oriented as the flow (that packet counts as reverse); flow Y
    (packets at 0..9 s, then one at 50 s) goes idle after its first part (at 9 + 30 s),
    so its 50-s packet starts a new record, not a continuation."""
    sc = Scenario("active_then_idle", args=["--active-timeout", "10", "--idle-timeout", "30"])
    x1, y1 = sc.record(), sc.record()
    x2, y2 = sc.record(continuation=True, of=x1), sc.record()
    def px(fwd):
        return eth() / IP(src="10.8.2.1" if fwd else "10.8.2.2", dst="10.8.2.2" if fwd else "10.8.2.1") \
            / UDP(sport=2500 if fwd else 2600, dport=2600 if fwd else 2500) / b"x"
    def py(fwd):
        return eth() / IP(src="10.8.3.1" if fwd else "10.8.3.2", dst="10.8.3.2" if fwd else "10.8.3.1") \
            / UDP(sport=3500 if fwd else 3600, dport=3600 if fwd else 3500) / b"yy"
    for s_ in range(10):
        sc.add(x1, T0 + s_ * SEC, px(s_ % 3 != 2))
        sc.add(y1, T0 + s_ * SEC + 100 * MS, py(s_ % 4 != 3))
    sc.add(x2, T0 + 25 * SEC, px(False))
    sc.add(y2, T0 + 50 * SEC, py(False))
    return sc


def all_scenarios():
    out = [sc_tcp4(), sc_pcapng_nano(), sc_nano(), sc_udp6(), sc_sctp(), sc_icmp_echo(),
           sc_vlan(), sc_vlan_keyed(True), sc_vlan_keyed(False), sc_fragments(),
           sc_icmp_errors(), sc_icmp_errors(icmp_flows=True), sc_many(), sc_idle_gap(), sc_active_timeout(), sc_tcp_rst(),
           sc_tcp_syn_after_fin(), sc_fragment_first_unseen(), sc_mpls_ipopts(), sc_snaplen(),
           sc_late_and_self(), sc_eviction(), sc_expiry_delay(), sc_no_tcp_completion(),
           sc_idle_steady(), sc_active_then_idle()]
    out.extend(sc_linktypes())
    return out


# ---------------------------------------------------------------------------------------
# Running flowmark and comparing
# ---------------------------------------------------------------------------------------

def run_flowmark(args, timeout=30):
    return subprocess.run([FLOWMARK, "observe"] + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def parse_jsonl(text):
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_float=Decimal)
        except ValueError as e:
            raise AssertionError(f"output line {n} is not JSON ({e}): {line!r}") from None
        missing = [f for f in FIELDS if f not in obj]
        if missing:
            raise AssertionError(f"output line {n} lacks {missing}: {line!r}")
        out.append(normalise(obj))
    return out


def parse_csv(text):
    rows = list(csv.DictReader(io.StringIO(text)))
    out = []
    for n, row in enumerate(rows, 2):
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise AssertionError(f"CSV line {n} lacks columns {missing}: {row}")
        obj = dict(row)
        if obj["continuation"] not in ("0", "1", "true", "false"):
            raise AssertionError(f"CSV line {n}: continuation {obj['continuation']!r}")
        obj["continuation"] = obj["continuation"] in ("1", "true")
        out.append(normalise(obj))
    return out


def normalise(obj):
    r = dict(obj)
    r["sip"], r["dip"] = norm(r["sip"]), norm(r["dip"])
    for f in INT_FIELDS:
        r[f] = int(r[f])
    for f in ("sp", "dp"):  # null in JSON, empty in CSV: no ports
        r[f] = None if r[f] in (None, "") else int(r[f])
    r["first"], r["last"] = Decimal(str(r["first"])), Decimal(str(r["last"]))
    if not isinstance(r["continuation"], bool):
        raise AssertionError(f"continuation is not a boolean: {r['continuation']!r}")
    return r


def canon_key(r):
    """(proto, low endpoint, high endpoint, vlan): the same for both directions."""
    a = (norm(r["sip"]), r["sp"])
    b = (norm(r["dip"]), r["dp"])
    lo, hi = sorted([a, b], key=lambda e: (ipaddress.ip_address(e[0]).version,
                                            ipaddress.ip_address(e[0]), e[1] or 0))
    return (r["proto"], lo, hi)


def fmt_rec(r):
    return (f"{r['sip']}:{r['sp']} -> {r['dip']}:{r['dp']} proto {r['proto']} vlan {r['vlan']} "
            f"first {r['first']} pkts {r['pkt_fwd']}/{r['pkt_rev']} oct {r['oct_fwd']}/{r['oct_rev']}"
            f"{' (continuation)' if r['continuation'] else ''}")


def compare(scenario, got, want, what):
    """Matches records by (canonical key, vlan, first ± 1 µs) and compares every field."""
    problems = []
    remaining = list(got)
    pairs = []
    for w in sorted(want, key=lambda r: (str(canon_key(r)), r["first"])):
        match = None
        for g in remaining:
            if (canon_key(g) == canon_key(w) and abs(g["first"] - w["first"]) <= TIME_TOLERANCE
                    and (g["vlan"] == w["vlan"] or "--vlan" not in scenario.args)):
                match = g
                break
        if match is None:
            problems.append(f"  missing record: {fmt_rec(w)}")
            continue
        remaining.remove(match)
        pairs.append((w, match))
    for g in remaining:
        problems.append(f"  unexpected record: {fmt_rec(g)}")
    for w, g in pairs:
        for f in FIELDS:
            if f in ("first", "last"):
                ok = abs(g[f] - w[f]) <= TIME_TOLERANCE
            else:
                ok = g[f] == w[f]
            if not ok:
                problems.append(f"  {fmt_rec(w)}: {f} expected {w[f]!r}, got {g[f]!r}")
    if problems:
        raise AssertionError(
            f"{scenario.name} ({what}, flowmark observe -r {os.path.basename(scenario.path)} "
            f"{' '.join(scenario.args)}): {len(problems)} problem(s), {len(want)} records "
            f"expected, {len(got)} printed\n" + "\n".join(problems[:40])
            + ("\n  ..." if len(problems) > 40 else ""))


_TMP = None
_SCENARIOS = {}


def built_scenarios():
    """Builds and writes every scenario once (the pcaps live until the process exits;
    OBSERVE_TEST_KEEP=1 keeps them)."""
    global _TMP
    if _TMP is None:
        _TMP = tempfile.mkdtemp(prefix="fm_observe_")
        atexit.register(_cleanup)
        for sc in all_scenarios():
            sc.write(_TMP)
            _SCENARIOS[sc.name] = sc
    return _TMP, _SCENARIOS


def _cleanup():
    if os.environ.get("OBSERVE_TEST_KEEP") == "1":
        print(f"pcaps kept in {_TMP}", file=sys.stderr)
    else:
        shutil.rmtree(_TMP, ignore_errors=True)


class ObserveTest(unittest.TestCase):
    tmp = None
    scenarios = {}

    @classmethod
    def setUpClass(cls):
        cls.tmp, cls.scenarios = built_scenarios()

    def observe(self, sc, fmt="jsonl"):
        args = ["-r", sc.path] + sc.args + (["--format", "csv"] if fmt == "csv" else [])
        if "--max-flows" in sc.args:
            args += ["--workers", "1"]  # the bound is per worker: one table, as expected here
        r = run_flowmark(args)
        self.assertEqual(r.returncode, 0, f"{sc.name}: flowmark observe {' '.join(args)} exited "
                         f"{r.returncode}: {r.stderr.strip()}")
        return parse_csv(r.stdout) if fmt == "csv" else parse_jsonl(r.stdout)

    def check(self, name):
        sc = self.scenarios[name]
        want = sc.expected()
        compare(sc, self.observe(sc), want, "JSON lines")
        compare(sc, self.observe(sc, "csv"), want, "CSV")

    # (a)
    def test_a_tcp4_handshake_data_fin(self):
        self.check("tcp4_handshake")

    def test_a_tcp4_pcapng(self):
        self.check("tcp4_pcapng")

    def test_a_nanosecond_pcap(self):
        self.check("udp4_nanosecond")

    # (b)
    def test_b_udp6_exchange_and_extension_headers(self):
        self.check("udp6_exchange")

    # (c)
    def test_c_sctp(self):
        self.check("sctp")

    # (d)
    def test_d_icmp_echo_three_tuple(self):
        self.check("icmp_echo")

    # (e)
    def test_e_vlan_and_qinq(self):
        self.check("vlan_qinq")

    def test_e_vlan_keyed(self):
        self.check("vlan_keyed")

    def test_e_vlan_not_keyed(self):
        self.check("vlan_unkeyed")

    # (f)
    def test_f_fragments(self):
        self.check("fragments")

    # (g)
    def test_g_icmp_error_linked_to_udp_flow(self):
        self.check("icmp_errors")

    def test_g_icmp_flows_option_keeps_own_records(self):
        self.check("icmp_errors_icmp_flows")

    @unittest.skipUnless(os.path.exists(os.path.join(PATHSPIDER_DATA, "icmp_ttl.pcap")),
                         "pathspider's test captures are not installed (Debian package pathspider)")
    def test_g_pathspider_icmp_ttl_flow_count(self):
        """pathspider's icmp_ttl.pcap (9,009 frames: traceroute-like TCP probes and the ICMP
        time-exceeded errors quoting them): as many records as pathspider's flow keys give
        (observer.py _flow4_ids/_flow6_ids: an ICMP error with a quotation of at least an IP
        header counts on the quoted flow's reversed key; ports for protocols 6, 17, 132,
        136), computed here from the frames with scapy. Timers are left out of this count:
        that they split nothing here is part of what is checked."""
        from scapy.all import PcapReader
        path = os.path.join(PATHSPIDER_DATA, "icmp_ttl.pcap")
        keys = set()
        for pkt in PcapReader(path):
            ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            if ip is None:
                continue
            b = bytes(ip)
            if b[0] >> 4 == 4:
                hl, proto, src, dst = (b[0] & 15) * 4, b[9], b[12:16], b[16:20]
                errors, alen = (3, 4, 5, 11, 12), 20
            else:
                hl, proto, src, dst = 40, b[6], b[8:24], b[24:40]
                errors, alen = (1, 2, 3, 4), 40
            l4 = b[hl:]
            if proto in (1, 58) and l4 and l4[0] in errors and len(l4) - 8 >= alen:
                q = l4[8:]  # the quotation: its reversed key
                qhl = (q[0] & 15) * 4 if b[0] >> 4 == 4 else 40
                proto = q[9] if b[0] >> 4 == 4 else q[6]
                qsrc, qdst = (q[12:16], q[16:20]) if b[0] >> 4 == 4 else (q[8:24], q[24:40])
                src, dst, l4 = qdst, qsrc, q[qhl:]
                ports = l4[2:4] + l4[0:2]
            else:
                ports = l4[0:4]
            if proto not in (6, 17, 132, 136):
                ports = b""
            rports = ports[2:4] + ports[0:2]
            if (dst, src, proto, rports) not in keys:
                keys.add((src, dst, proto, ports))
        r = run_flowmark(["-r", path])
        self.assertEqual(r.returncode, 0, r.stderr)
        got = parse_jsonl(r.stdout)
        self.assertEqual(len(got), len(keys),
                         f"records: flowmark {len(got)}, pathspider's keys {len(keys)}")
        self.assertTrue(all(rec["proto"] != 1 for rec in got),
                        "every ICMP error of this capture quotes a known flow: no ICMP record")
        r = run_flowmark(["-r", path, "--icmp-flows"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(len(parse_jsonl(r.stdout)), len(keys),
                           "--icmp-flows: the errors' own ICMP records too")

    # (h)
    def test_h_many_interleaved_flows(self):
        self.check("many_interleaved")

    # (i)
    def test_i_idle_gap_two_records(self):
        self.check("idle_gap")

    def test_i_active_timeout_parts(self):
        self.check("active_timeout")

    def test_i_idle_with_steady_clock(self):
        self.check("idle_steady")

    def test_i_active_timeout_then_idle(self):
        self.check("active_then_idle")

    def test_i_tcp_rst_completes(self):
        self.check("tcp_rst")

    def test_i_tcp_syn_after_fin_new_record(self):
        self.check("tcp_syn_after_fin")

    def test_f_fragment_before_its_first(self):
        self.check("fragment_first_unseen")
        r = run_flowmark(["-r", self.scenarios["fragment_first_unseen"].path, "--stats"])
        m = re.search(r"fragments (\d+) \((\d+) unmatched\)", r.stderr)
        self.assertIsNotNone(m, r.stderr)
        self.assertEqual((int(m.group(1)), int(m.group(2))), (2, 1),
                         f"2 non-first fragments, one unmatched, expected: {r.stderr!r}")

    def test_i_eviction_max_flows(self):
        self.check("eviction")
        r = run_flowmark(["-r", self.scenarios["eviction"].path, "--max-flows", "2", "--workers",
                          "1", "--stats"])
        self.assertRegex(r.stderr, r"evicted 2,", "two evictions expected")

    def test_i_expiry_delay(self):
        self.check("expiry_delay")

    def test_i_no_tcp_completion(self):
        self.check("no_tcp_completion")

    def test_mpls_and_ipv4_options(self):
        self.check("mpls_ip_options")

    def test_snap_length_cut_frames(self):
        self.check("snaplen_64")

    def test_late_timestamps_and_self_flow(self):
        self.check("late_and_self")

    def test_filter(self):
        """--filter udp: only the UDP flows of the interleaved capture."""
        sc = self.scenarios["many_interleaved"]
        r = run_flowmark(["-r", sc.path, "--filter", "udp"])
        self.assertEqual(r.returncode, 0, r.stderr)
        compare(sc, parse_jsonl(r.stdout), [x for x in sc.expected() if x["proto"] == 17],
                "--filter udp")
        r = run_flowmark(["-r", sc.path, "--filter", "udp and ("])
        self.assertEqual(r.returncode, 2, f"a bad filter is a usage error (2): {r.returncode} {r.stderr}")

    def test_standard_input(self):
        """-r -: the capture from standard input."""
        sc = self.scenarios["tcp4_handshake"]
        with open(sc.path, "rb") as f:
            r = subprocess.run([FLOWMARK, "observe", "-r", "-"], stdin=f, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        compare(sc, parse_jsonl(r.stdout), sc.expected(), "standard input")

    def test_link_types_sll_and_raw(self):
        self.check("linux_sll")
        self.check("raw_ip")

    def test_stats(self):
        """--stats: packet count, fragments, "unknown" drops for a file, on stderr."""
        sc = self.scenarios["fragments"]
        r = run_flowmark(["-r", sc.path, "--stats"])
        self.assertEqual(r.returncode, 0, r.stderr)
        m = re.search(r"(\d+) packets, drops (\S+),", r.stderr)
        self.assertIsNotNone(m, f"no statistics line on stderr: {r.stderr!r}")
        self.assertEqual(int(m.group(1)), len(sc.pkts), r.stderr)
        self.assertEqual(m.group(2), "unknown", "a file has no drop count: expected 'unknown'")
        m = re.search(r"fragments (\d+) \((\d+) unmatched\)", r.stderr)
        self.assertIsNotNone(m, r.stderr)
        self.assertEqual((int(m.group(1)), int(m.group(2))), (4, 0),
                         f"4 non-first fragments, all matched, expected: {r.stderr!r}")

    def test_stats_bytes_per_flow(self):
        """--stats ends with the memory per flow of the chains asked for (issue 14: at most
        200 B with the default chains, 224 B with all; each chain adds to basic alone)."""
        sc = self.scenarios["fragments"]

        def per_flow(chains):
            r = run_flowmark(["-r", sc.path, "--stats", "--chains", chains])
            self.assertEqual(r.returncode, 0, r.stderr)
            m = re.search(r", bytes per flow (\d+)\n", r.stderr)
            self.assertIsNotNone(m, f"no 'bytes per flow' in the statistics: {r.stderr!r}")
            return int(m.group(1))

        basic, default, everything = per_flow("basic"), per_flow("basic,tcp"), per_flow("all")
        self.assertLessEqual(default, 200)
        self.assertLessEqual(everything, 224)
        self.assertLess(basic, default)
        self.assertLess(default, everything)

    # (j)
    def _truncated(self, name, cut_in_header):
        sc = self.scenarios["tcp4_handshake"]
        many = self.scenarios["udp6_exchange"]
        # A capture: the TCP conversation, then the IPv6 flows; cut inside the last record.
        cut = Scenario(name)
        recs = {}
        frames = sorted([(t, 0, i, sc) for i, t in enumerate(sc.times)]
                        + [(t + 10 * SEC, 1, i, many) for i, t in enumerate(many.times)])
        for t, _, i, src in frames:
            owner = src.owner[i]
            if id(owner) not in recs:
                recs[id(owner)] = cut.record()
            cut.add(recs[id(owner)], t, dissect(1, src.pkts[i]))
        path = cut.write(self.tmp)
        size = os.path.getsize(path)
        last_len = len(cut.pkts[-1])
        last_start = size - 16 - last_len
        cut_at = last_start + 7 if cut_in_header else last_start + 16 + last_len // 2
        with open(path, "r+b") as f:
            f.truncate(cut_at)
        # The truth: everything but the last frame.
        last_owner = cut.owner[-1]
        last_owner.frames.pop()
        r = run_flowmark(["-r", path])
        self.assertEqual(r.returncode, 65, f"a truncated capture: exit 65 expected, got "
                         f"{r.returncode}; stderr: {r.stderr.strip()}")
        self.assertIn(path, r.stderr, "the error must name the file")
        m = re.search(r"offset (\d+)", r.stderr)
        self.assertIsNotNone(m, f"the error must give the byte offset: {r.stderr.strip()}")
        self.assertTrue(last_start <= int(m.group(1)) <= cut_at,
                        f"offset {m.group(1)} is not where the cut record is "
                        f"({last_start}..{cut_at}): {r.stderr.strip()}")
        compare(cut, parse_jsonl(r.stdout), cut.expected(), "flows before the cut")

    def test_j_truncated_in_record_data(self):
        self._truncated("truncated_data", cut_in_header=False)

    def test_j_truncated_in_record_header(self):
        self._truncated("truncated_header", cut_in_header=True)

    def test_j_garbage_global_header(self):
        sc = self.scenarios["tcp4_handshake"]
        with open(sc.path, "rb") as f:
            data = f.read()
        path = os.path.join(self.tmp, "garbage_header.pcap")
        with open(path, "wb") as f:
            f.write(bytes(random.Random(5).randrange(256) for _ in range(24)) + data[24:])
        r = run_flowmark(["-r", path])
        self.assertEqual(r.returncode, 66, f"a capture with a garbage header cannot be opened: "
                         f"exit 66 expected, got {r.returncode}; stderr: {r.stderr.strip()}")
        self.assertIn(path, r.stderr, "the error must name the file")
        self.assertEqual(r.stdout, "", "nothing can be decoded from it")

    def test_j_missing_file(self):
        path = os.path.join(self.tmp, "does_not_exist.pcap")
        r = run_flowmark(["-r", path])
        self.assertEqual(r.returncode, 66, f"exit 66 expected, got {r.returncode}: {r.stderr}")
        self.assertIn(path, r.stderr)


# ---------------------------------------------------------------------------------------
# tshark cross-check
# ---------------------------------------------------------------------------------------

CONV_ROW = re.compile(r"^(\S+)\s+<->\s+(\S+)\s+(\d+)\s+(\d+(?:\.\d+)?) (bytes|kB|MB|GB)\s+"
                      r"(\d+)\s+(\d+(?:\.\d+)?) (bytes|kB|MB|GB)\s+")
UNIT = {"bytes": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def split_endpoint(s):
    addr, port = s.rsplit(":", 1)
    return norm(addr), int(port)


def tshark_conversations(path):
    """{(proto, A, B): [frames B->A, bytes B->A, frames A->B, bytes A->B, unit_B->A, unit_A->B]}
    from `tshark -q -z conv,tcp -z conv,udp -z conv,sctp`. In these tables "<-" are the
    frames going to A (from B), "->" those from A to B. Bytes above 10 kB are printed
    rounded to a unit (kB = 1000 bytes): compared within that unit."""
    r = subprocess.run([TSHARK, "-n", "-r", path, "-q", "-z", "conv,tcp", "-z", "conv,udp",
                        "-z", "conv,sctp"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"tshark failed on {path}: {r.stderr}")
    out = {}
    proto = None
    for line in r.stdout.splitlines():
        if line.startswith("TCP Conversations"):
            proto = 6
        elif line.startswith("UDP Conversations"):
            proto = 17
        elif line.startswith("SCTP Conversations"):
            proto = 132
        m = CONV_ROW.match(line)
        if m and proto:
            a, b = split_endpoint(m.group(1)), split_endpoint(m.group(2))
            row = [int(m.group(3)), Decimal(m.group(4)) * UNIT[m.group(5)],
                   int(m.group(6)), Decimal(m.group(7)) * UNIT[m.group(8)], UNIT[m.group(5)],
                   UNIT[m.group(8)]]
            k = (proto, a, b)
            if k in out:  # several conversations on one 5-tuple (tshark splits TCP streams)
                prev = out[k]
                row = [prev[0] + row[0], prev[1] + row[1], prev[2] + row[2], prev[3] + row[3],
                       max(prev[4], row[4]), max(prev[5], row[5])]
            out[k] = row
    return out


# Scenarios whose flows tshark's conversation tables count the same way as we do. Not:
# the fragments (tshark reassembles the datagram and counts the reassembled UDP datagram
# once); the ICMP errors (ICMP is in no tcp/udp table).
TSHARK_SCENARIOS = ["tcp4_handshake", "tcp4_pcapng", "udp4_nanosecond", "udp6_exchange", "sctp",
                    "vlan_qinq", "vlan_keyed", "vlan_unkeyed", "many_interleaved", "idle_gap",
                    "active_timeout", "tcp_rst", "tcp_syn_after_fin", "linux_sll", "raw_ip",
                    "mpls_ip_options", "snaplen_64", "eviction", "expiry_delay",
                    "no_tcp_completion", "idle_steady", "active_then_idle"]


@unittest.skipIf(TSHARK is None, "tshark is not installed")
class TsharkCrossCheck(unittest.TestCase):
    """flowmark vs tshark -z conv,tcp/udp/sctp on the same pcaps: the same set of 5-tuples,
    the same packets per direction, and the same bytes per direction once converted.

    Byte conversion: tshark counts frame bytes (frame.len: the link header — 14 bytes of
    Ethernet, 18 with one 802.1Q tag, 22 with two, 16 for Linux SLL, 0 for raw IP — plus
    any Ethernet padding of short frames, plus the IP packet); flowmark counts IP bytes
    (the IP total length). We know every frame we wrote, so per direction we add to
    flowmark's octets the sum over that direction's frames of (frame length - IP length)
    and compare with tshark's bytes. flowmark's records that one 5-tuple was split into
    (idle or active timeout, a new connection, one per VLAN with --vlan) are summed, as
    tshark keeps one conversation per 5-tuple (TCP: per stream, also summed here)."""

    def test_conversations(self):
        _, scen = built_scenarios()
        failures = []
        for name in TSHARK_SCENARIOS:
            sc = scen[name]
            r = run_flowmark(["-r", sc.path] + sc.args)
            if r.returncode != 0:
                failures.append(f"{name}: flowmark exited {r.returncode}: {r.stderr.strip()}")
                continue
            ours = {}
            for rec in parse_jsonl(r.stdout):
                if rec["proto"] not in PORT_PROTOS:
                    continue
                a, b = (rec["sip"], rec["sp"]), (rec["dip"], rec["dp"])
                d = ours.setdefault((rec["proto"],) + tuple(sorted([a, b])), {})
                d[(a, b)] = [x + y for x, y in zip(d.get((a, b), [0, 0]), [rec["pkt_fwd"], rec["oct_fwd"]])]
                d[(b, a)] = [x + y for x, y in zip(d.get((b, a), [0, 0]), [rec["pkt_rev"], rec["oct_rev"]])]
            theirs = tshark_conversations(sc.path)
            overhead = sc.link_overhead()
            keys_t = {(p,) + tuple(sorted([a, b])) for p, a, b in theirs}
            if set(ours) != keys_t:
                failures.append(f"{name}: 5-tuples differ: only flowmark {sorted(set(ours) - keys_t)}, "
                                f"only tshark {sorted(keys_t - set(ours))}")
                continue
            for (p, a, b), (f_ba, by_ba, f_ab, by_ab, u_ba, u_ab) in theirs.items():
                d = ours[(p,) + tuple(sorted([a, b]))]
                for direction, frames, tbytes, unit in [((a, b), f_ab, by_ab, u_ab),
                                                        ((b, a), f_ba, by_ba, u_ba)]:
                    pk, octets = d.get(direction, [0, 0])
                    src, dst = direction
                    if pk != frames:
                        failures.append(f"{name}: proto {p} {src} -> {dst}: flowmark {pk} packets, "
                                        f"tshark {frames} frames")
                    converted = octets + overhead.get((p, src, dst), 0)
                    if abs(converted - tbytes) >= unit:
                        failures.append(f"{name}: proto {p} {src} -> {dst}: flowmark {octets} IP "
                                        f"bytes + {overhead.get((p, src, dst), 0)} link bytes = "
                                        f"{converted}, tshark {tbytes} frame bytes")
        self.assertFalse(failures, "flowmark and tshark disagree:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    if not os.access(FLOWMARK, os.X_OK):  # a failure, not a skip: CTest must not pass
        sys.exit(f"observe_truth.py: {FLOWMARK} is missing or not executable: build first")
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
