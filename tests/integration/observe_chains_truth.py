#!/usr/bin/python3
"""End-to-end tests of `flowmark observe --chains ...` against ground truth: every field of
every chain (tcp ecn dscp mss tfo udp icmp evil scitags) and the basic record.

    /usr/bin/python3 tests/integration/observe_chains_truth.py BUILD_DIR [unittest options]

BUILD_DIR holds the `flowmark` binary. Needs Debian's python3-scapy (hence /usr/bin/python3).
No network, no root.

The contract tested is the field contract of issue 14 (the chain names, field names and
meanings of pathspider 2.0.1's chains, its listed deviations, and the new scitags chain);
it is restated next to the code that computes each field below (`Truth`).

How the truth is made: the flows are built with scapy and written to pcaps in a temporary
directory; the builder says which frames make which record. The expected fields are then
computed here from the bytes actually written, read back by a small byte-level parser of
this file (Ethernet, IPv4, IPv6 and its hop-by-hop / destination-options / routing /
fragment headers, TCP with its option walk, UDP, ICMP and ICMPv6 with the packet they
quote) — never from flowmark's output, never with flowmark's code. A first test checks the
generation itself: scapy's own dissection of every written frame agrees with that parser,
and the captures really exercise every field (each takes more than one value, each ECN
codepoint shows on SYN and on data both ways in IPv4 and IPv6, ...), so no test here can
pass against an output that ignores the packets.

Scitags flow labels are encoded here from the spec (/work/shared/spec/scitags.md §4: bits
19-18 entropy, 17-9 the experiment bit-reversed, bit 8 entropy, 7-2 the activity, 1-0
entropy) with random entropy bits; the seed is printed when a test fails and can be fixed
with CHAINS_TEST_SEED=N. Registry names for the builtin registry come from the spec's list
(§5: experiments 1..14, activity 1 "default" and 2 "perfSONAR", ids up to 26); a second run
uses a registry file written here (--registry).

Output checked both as JSON lines and as CSV (header = the JSON keys in the same order,
null = empty field, booleans true/false), and for the key set: the basic fields first, then
the fields of the chains asked for only, chain by chain in the order tcp ecn dscp mss tfo
udp icmp evil scitags, whatever the order of the list. `--chains bogus` must be a usage error
(exit 2) with a message naming it. OBSERVE_TEST_KEEP=1 keeps the pcaps (their directory is printed).
"""

import atexit
import csv
import io
import ipaddress
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest
from decimal import Decimal

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: observe_chains_truth.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
try:
    from scapy.all import (ICMP, IP, TCP, UDP, Ether, ICMPv6DestUnreach, ICMPv6EchoRequest,
                           ICMPv6TimeExceeded, IPOption_NOP, RouterAlert, IPv6,
                           IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, HBHOptUnknown, Pad1, PadN,
                           Padding, PcapReader, PcapWriter, Raw)
except ImportError as e:  # pragma: no cover
    sys.exit(f"observe_chains_truth.py: needs scapy ({e}); run it with /usr/bin/python3 "
             "(Debian's python3-scapy), not a python without it")

T0 = 1_700_000_000 * 1_000_000_000  # ns
SEC = 1_000_000_000
MS = 1_000_000
US = 1_000
TIME_TOLERANCE = Decimal("0.000001")
MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"

SEED = int(os.environ.get("CHAINS_TEST_SEED") or random.SystemRandom().randrange(1 << 30))
RNG = random.Random(SEED)

# TCP flag bits
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

from observe_fields import BASIC_FIELDS, CHAIN_FIELDS, CHAIN_ORDER  # noqa: E402

FIELD_CHAIN = {f: c for c, fs in CHAIN_FIELDS.items() for f in fs}
FIELD_CHAIN.update({f: "basic" for f in BASIC_FIELDS})
PORT_PROTOS = (6, 17, 132)
KEXIT_USAGE = 2  # include/flowmark/core/exit_code.hpp: a bad flag, argument or value

# ---------------------------------------------------------------------------------------
# Scitags: flow-label encoding (spec §4) and registries
# ---------------------------------------------------------------------------------------


def rev9(v):
    """The 9 low bits of v in reverse order (bit 0 ↔ bit 8)."""
    return sum(((v >> i) & 1) << (8 - i) for i in range(9))


def encode_label(experiment, activity, entropy):
    """A Scitags flow label: entropy bits 19-18, reversed experiment 17-9, entropy bit 8,
    activity 7-2, entropy bits 1-0 (entropy: 5 bits, high to low in that order)."""
    assert 0 <= experiment < 512 and 0 <= activity < 64 and 0 <= entropy < 32
    return (((entropy >> 3) & 3) << 18 | rev9(experiment) << 9 | ((entropy >> 2) & 1) << 8
            | activity << 2 | (entropy & 3))


def decode_label(label):
    """(experiment, activity) when the semantic bits (mask 0x3FEFC) are not all zero."""
    if label & 0x3FEFC == 0:
        return None
    return rev9((label >> 9) & 0x1FF), (label >> 2) & 0x3F


def random_label(experiment, activity):
    return encode_label(experiment, activity, RNG.randrange(32))


# The spec's list of the public registry (§5): experiments 1..14, in every experiment
# activity 1 "default" and 2 "perfSONAR" (the builtin copy lacks perfSONAR in juno, nova and
# xenon: not used here), activity ids up to 26. Outside that the builtin knows no name.
SPEC_EXPERIMENTS = {1: "default", 2: "atlas", 3: "cms", 4: "lhcb", 5: "alice", 6: "belleii",
                    7: "ska", 8: "dune", 9: "lsst", 10: "ilc", 11: "auger", 12: "juno",
                    13: "nova", 14: "xenon"}


def builtin_names(exp, act):
    """(experiment name, activity name) in the builtin registry, from the spec's facts only;
    fails for a pair about which the spec says nothing (the scenarios must not use one)."""
    if exp not in SPEC_EXPERIMENTS:
        return None, None
    if act == 1:
        return SPEC_EXPERIMENTS[exp], "default"
    if act == 2 and exp <= 11:
        return SPEC_EXPERIMENTS[exp], "perfSONAR"
    if act > 26 or act == 0:
        return SPEC_EXPERIMENTS[exp], None
    raise AssertionError(f"the spec does not say whether the builtin registry names activity "
                         f"{act} of experiment {exp}: use another pair")


# A registry file of our own, for --registry: names with characters CSV must quote.
CUSTOM_REGISTRY = {
    "experiments": [
        {"expName": "two, custom", "expId": 2, "activities": [
            {"activityName": "the \"default\"", "activityId": 1},
            {"activityName": "sixty-three", "activityId": 63}]},
        {"expName": "three-hundred", "expId": 300, "activities": [
            {"activityName": "five", "activityId": 5}]},
        {"expName": "cms-ish", "expId": 3, "activities": []},
    ],
    "version": 1, "modified": "2026-01-01T00:00:00+00:00"}


def custom_names(exp, act):
    for e in CUSTOM_REGISTRY["experiments"]:
        if e["expId"] == exp:
            for a in e["activities"]:
                if a["activityId"] == act:
                    return e["expName"], a["activityName"]
            return e["expName"], None
    return None, None


# ---------------------------------------------------------------------------------------
# The truth side's parser of the bytes written (independent of scapy's dissection, which
# the generation test compares it with)
# ---------------------------------------------------------------------------------------

class Pkt:
    """What one frame says, from its bytes. Attributes: ip_version src dst ip_len tos
    flowlabel (IPv6) evil (IPv4 reserved bit) proto ext_options [(hdr, type, data)]
    sport dport (TCP/UDP) tcp_flags seq ack doff tcp_options payload_len (TCP) udp_checksum
    icmp_type icmp_code quote (a Pkt of the quoted packet, for ICMP errors)."""

    def __init__(self):
        self.sport = self.dport = None
        self.tcp_flags = 0
        self.flowlabel = None
        self.evil = None
        self.ext_options = []
        self.tcp_options = None
        self.payload_len = None
        self.udp_checksum = None
        self.icmp_type = self.icmp_code = None
        self.quote = None

    @property
    def is_tcp(self):
        return self.proto == 6 and self.doff is not None

    @property
    def is_syn(self):
        return self.is_tcp and bool(self.tcp_flags & SYN)


def u16(b, o):
    return int.from_bytes(b[o:o + 2], "big")


def u32(b, o):
    return int.from_bytes(b[o:o + 4], "big")


def parse_frame(data):
    assert u16(data, 12) in (0x0800, 0x86DD), f"not IP over Ethernet: {data[:16].hex()}"
    return parse_ip(data, 14)


def parse_ip(b, o, quoted=False):
    """The IP packet at b[o:]. quoted: a packet quoted by an ICMP error, maybe cut short
    (only addresses, protocol and ports are read)."""
    p = Pkt()
    p.doff = None
    v = b[o] >> 4
    p.ip_version = v
    if v == 4:
        ihl = (b[o] & 15) * 4
        p.tos = b[o + 1]
        p.ip_len = u16(b, o + 2)
        p.evil = bool(u16(b, o + 6) & 0x8000)
        p.proto = b[o + 9]
        p.src = str(ipaddress.ip_address(b[o + 12:o + 16]))
        p.dst = str(ipaddress.ip_address(b[o + 16:o + 20]))
        l4 = o + ihl
    elif v == 6:
        word = u32(b, o)
        p.tos = (word >> 20) & 0xFF
        p.flowlabel = word & 0xFFFFF
        p.ip_len = 40 + u16(b, o + 4)
        nh = b[o + 6]
        p.src = str(ipaddress.ip_address(b[o + 8:o + 24]))
        p.dst = str(ipaddress.ip_address(b[o + 24:o + 40]))
        l4 = o + 40
        while nh in (0, 43, 44, 60):
            if nh == 44:
                hlen = 8
            else:
                hlen = (b[l4 + 1] + 1) * 8
            if nh in (0, 60):
                name = "hbh" if nh == 0 else "dstopt"
                i = l4 + 2
                while i < l4 + hlen:
                    t = b[i]
                    if t == 0:  # Pad1
                        i += 1
                        continue
                    ln = b[i + 1]
                    assert i + 2 + ln <= l4 + hlen, "an option runs past its header"
                    p.ext_options.append((name, t, bytes(b[i + 2:i + 2 + ln])))
                    i += 2 + ln
            nh = b[l4]
            l4 += hlen
        p.proto = nh
    else:
        raise AssertionError(f"IP version {v}")
    ip_end = o + p.ip_len
    if p.proto in (6, 17, 132):
        p.sport, p.dport = u16(b, l4), u16(b, l4 + 2)
    if quoted:
        return p
    if p.proto == 6:
        p.seq, p.ack = u32(b, l4 + 4), u32(b, l4 + 8)
        p.doff = (b[l4 + 12] >> 4) * 4
        p.tcp_flags = b[l4 + 13]
        p.tcp_options = bytes(b[l4 + 20:l4 + p.doff])
        p.payload_len = ip_end - l4 - p.doff
    elif p.proto == 17:
        p.udp_checksum = u16(b, l4 + 6)
    elif p.proto in (1, 58):
        p.icmp_type, p.icmp_code = b[l4], b[l4 + 1]
        if (p.proto, p.icmp_type) in ((1, 3), (1, 4), (1, 5), (1, 11), (1, 12), (58, 1),
                                      (58, 2), (58, 3), (58, 4)):
            p.quote = parse_ip(b[:ip_end], l4 + 8, quoted=True)
    return p


def tcp_option_walk(opts):
    """{kind: data} per the contract: EOL ends, NOP is one byte, other options are kind +
    length + data; a length < 2 or a missing length byte ends the walk; an option running
    past the header keeps the data bytes present (its length counts as 2 + those: "2 + its
    data bytes present", as pathspider's slice does) and ends the walk; the last of a kind
    wins."""
    out = {}
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts):
            break
        ln = opts[i + 1]
        if ln < 2:
            break
        out[kind] = opts[i + 2:i + ln]
        i += ln
    return out


def pathspider_walk_fails(opts):
    """pathspider's option walk loops forever (length 0), misreads (length 1: it steps one
    byte on) or raises (no length byte) on these options: the contract's deviation."""
    i = 0
    while i < len(opts):
        if opts[i] == 1:
            i += 1
            continue
        if opts[i] == 0:
            return False
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            return True
        i += opts[i + 1]
    return False


def tfo_cookie(opts):
    """(kind, cookie bytes) of a TFO option: 34, else 254 with ExID F989, else 255 with
    ExID F989 (255's own data); (0, None) when none."""
    if 34 in opts:
        return 34, opts[34]
    for kind in (254, 255):
        if kind in opts and opts[kind][:2] == b"\xf9\x89":
            return kind, opts[kind][2:]
    return 0, None


def scitags_option(p):
    """(source, experiment, activity) of the first Scitags option (type 0x1E, length 3)."""
    for hdr, t, data in p.ext_options:
        if t == 0x1E and len(data) == 3:
            return hdr, data[0] << 8 | data[1], data[2]
    return None


ICMP_UNREACHABLE = {4: 3, 6: 1}  # IP version → the unreachable type of its ICMP


# ---------------------------------------------------------------------------------------
# Captures and expected records
# ---------------------------------------------------------------------------------------

def norm(addr):
    return str(ipaddress.ip_address(addr))


class Rec:
    """One expected record: the frames that make it up (indices into the capture), the ones
    that are ICMP errors counted on it (their direction comes from the packet they quote),
    and a note saying what the flow is for (in failure messages)."""

    def __init__(self, cap, note):
        self.cap, self.note = cap, note
        self.frames = []
        self.errors = set()

    def expected(self, names):
        return Truth(self, names).record


class Capture:
    def __init__(self, name):
        self.name = name
        self.frames, self.times, self.parsed, self.recs = [], [], [], []
        self.t = T0
        self.path = None

    def record(self, note):
        r = Rec(self, note)
        self.recs.append(r)
        return r

    def add(self, rec, pkt, gap=MS, error=False):
        """Appends a frame `gap` after the previous one, counted in `rec`; error: an ICMP
        error counted on the flow it quotes."""
        if len(bytes(pkt)) < 60:
            pkt = pkt / Padding(b"\x00" * (60 - len(bytes(pkt))))  # as a NIC pads
        self.t += gap
        data = bytes(pkt)
        self.frames.append(data)
        self.times.append(self.t)
        self.parsed.append(parse_frame(data))
        rec.frames.append(len(self.frames) - 1)
        if error:
            rec.errors.add(len(self.frames) - 1)
        return data

    def write(self, directory):
        self.path = os.path.join(directory, self.name + ".pcap")
        w = PcapWriter(self.path, linktype=1, sync=False)
        for data, t in zip(self.frames, self.times):
            p = Ether(data)
            p.time = Decimal(t) / SEC
            w.write(p)
        w.close()
        return self.path

    def expected(self, names=builtin_names):
        return [r.expected(names) for r in self.recs]


class Truth:
    """The record the contract asks for, from the frames of one Rec (every field)."""

    def __init__(self, rec, names):
        cap = rec.cap
        first = cap.parsed[rec.frames[0]]
        assert rec.frames[0] not in rec.errors
        r = {"sip": first.src, "dip": first.dst, "proto": first.proto,
             "sp": first.sport, "dp": first.dport, "pkt_fwd": 0, "pkt_rev": 0, "oct_fwd": 0,
             "oct_rev": 0, "ip_version": first.ip_version, "vlan": 0, "tcp_flags_fwd": 0,
             "tcp_flags_rev": 0, "fragments": 0, "icmp_errors": len(rec.errors),
             "continuation": False}
        r["first"] = Decimal(cap.times[rec.frames[0]]) / SEC
        r["last"] = Decimal(cap.times[rec.frames[-1]]) / SEC
        # tcp: pathspider's new_flow values for every flow
        r.update({"tcp_synflags_fwd": None, "tcp_synflags_rev": None, "tcp_fin_fwd": False,
                  "tcp_fin_rev": False, "tcp_rst_fwd": False, "tcp_rst_rev": False,
                  "tcp_connected": False})
        r.update({f: False for f in CHAIN_FIELDS["ecn"]})
        r.update({f: None for f in CHAIN_FIELDS["dscp"] + CHAIN_FIELDS["mss"]
                  + CHAIN_FIELDS["udp"] + CHAIN_FIELDS["evil"] + CHAIN_FIELDS["scitags"]})
        r.update({f: 0 for f in CHAIN_FIELDS["tfo"]})
        r["icmp_unreachable"] = False
        self.record = r
        self.names = names
        self.tag = None  # (source, experiment, activity)
        self.tag_known = False  # a label-derived tag whose pair the registry names
        for i in rec.frames:
            p = cap.parsed[i]
            if i in rec.errors:
                # An ICMP error goes back to the quoted packet's source: against the
                # quoted packet's direction.
                q = p.quote
                quoted_fwd = (norm(q.src), norm(q.dst)) == (norm(r["sip"]), norm(r["dip"])) and (
                    r["sp"] is None or (q.sport, q.dport) == (r["sp"], r["dp"]))
                d = "rev" if quoted_fwd else "fwd"
            else:
                fwd = (p.src, p.dst) == (r["sip"], r["dip"]) and (
                    r["sp"] is None or (p.sport, p.dport) == (r["sp"], r["dp"]))
                d = "fwd" if fwd else "rev"
            self.basic(p, d)
            self.ecn(p, d)
            self.dscp(p, d)
            self.evil(p, d)
            if i not in rec.errors:  # an ICMPv6 error's label and options are its sender's
                self.scitags(p, d)
            if p.is_tcp:
                self.tcp(p, d)
                self.mss(p, d)
                self.tfo(p)
            if p.proto == 17:
                self.udp(p, d)
            if p.icmp_type is not None:
                self.icmp(p, d)
        if self.tag is not None:
            src, exp, act = self.tag
            en, an = names(exp, act)
            r.update({"scitags_source": src, "scitags_experiment": exp, "scitags_activity": act,
                      "scitags_experiment_name": en, "scitags_activity_name": an})
        for k in ("sip", "dip"):
            r[k] = norm(r[k])

    def basic(self, p, d):
        r = self.record
        r["pkt_" + d] += 1
        r["oct_" + d] += p.ip_len  # the IP length, never the (padded) frame's
        if p.is_tcp:
            r["tcp_flags_" + d] |= p.tcp_flags

    def tcp(self, p, d):
        """tcp_synflags_*: the flags byte of the last SYN that way; tcp_fin_* / tcp_rst_*: seen
        from that way (pathspider swaps fin: deviation); tcp_connected: a forward ACK after a
        forward SYN and a reverse SYN+ACK."""
        r = self.record
        if p.tcp_flags & SYN:
            r["tcp_synflags_" + d] = p.tcp_flags
        if (d == "fwd" and p.tcp_flags & ACK and r["tcp_synflags_fwd"] is not None
                and r["tcp_synflags_rev"] is not None and r["tcp_synflags_fwd"] & SYN
                and r["tcp_synflags_rev"] & (SYN | ACK) == SYN | ACK):
            r["tcp_connected"] = True
        if p.tcp_flags & FIN:
            r["tcp_fin_" + d] = True
        if p.tcp_flags & RST:
            r["tcp_rst_" + d] = True

    def ecn(self, p, d):
        """Every IP packet: its ECN codepoint, on `syn` (a TCP segment with SYN) or `data`
        (everything else, payload or not, ICMP errors included)."""
        cp = {2: "ect0", 1: "ect1", 3: "ce"}.get(p.tos & 3)
        if cp:
            self.record[f"ecn_{cp}_{'syn' if p.is_syn else 'data'}_{d}"] = True

    def dscp(self, p, d):
        """syn: the DSCP of the last SYN that way; data (non-TCP packets, non-SYN segments with
        payload): pathspider's `rec[k] = rec[k] or dscp`."""
        r = self.record
        dscp = p.tos >> 2
        if p.is_syn:
            r["dscp_mark_syn_" + d] = dscp
        elif not p.is_tcp or p.payload_len > 0:
            r["dscp_mark_data_" + d] = r["dscp_mark_data_" + d] or dscp

    def evil(self, p, d):
        """IPv4 only: syn = the reserved bit of the last SYN that way; data = that of the first
        non-TCP packet or non-SYN segment with payload that way."""
        if p.ip_version != 4:
            return
        r = self.record
        if p.is_syn:
            r["evilbit_syn_" + d] = p.evil
        elif (not p.is_tcp or p.payload_len > 0) and r["evilbit_data_" + d] is None:
            r["evilbit_data_" + d] = p.evil

    def scitags(self, p, d):
        """flowlabel_*: the label of the first packet that way, changed_*: a later one differed
        (IPv6 only; an ICMPv6 error counted on the flow is not read). The tag: the first
        Scitags option (it replaces a label-derived tag), else the first label with semantic
        bits — replaced by a later label (either way) whose pair the registry names, when
        the registry does not name the first one's (automatic labels are random)."""
        if p.ip_version != 6:
            return
        r = self.record
        if r["flowlabel_" + d] is None:
            r["flowlabel_" + d] = p.flowlabel
            r["flowlabel_changed_" + d] = False
        elif p.flowlabel != r["flowlabel_" + d]:
            r["flowlabel_changed_" + d] = True
        opt = scitags_option(p)
        if opt is not None:
            if self.tag is None or self.tag[0] == "flowlabel":
                self.tag = opt
        elif decode_label(p.flowlabel) is not None:
            e, a = decode_label(p.flowlabel)
            known = self.names(e, a)[1] is not None
            if self.tag is None or (self.tag[0] == "flowlabel" and not self.tag_known and known):
                self.tag = ("flowlabel", e, a)
                self.tag_known = known

    def mss(self, p, d):
        """SYNs only: the last SYN that way with an MSS option: len = 2 + its data bytes,
        value = their big-endian value (null beyond 4 bytes)."""
        if not p.is_syn:
            return
        opts = tcp_option_walk(p.tcp_options)
        if 2 in opts:
            data = opts[2]
            self.record["mss_len_" + d] = 2 + len(data)
            self.record["mss_value_" + d] = int.from_bytes(data, "big") if len(data) <= 4 else None

    def tfo(self, p):
        """A SYN without ACK (either way) with a cookie option: synkind, synclen, seq, dlen,
        ack = 0. A SYN+ACK once synkind != 0: ack; with a cookie option: ackkind, ackclen."""
        r = self.record
        if not p.is_syn:
            return
        kind, cookie = tfo_cookie(tcp_option_walk(p.tcp_options))
        if not p.tcp_flags & ACK:
            if kind:
                r.update({"tfo_synkind": kind, "tfo_synclen": len(cookie), "tfo_seq": p.seq,
                          "tfo_dlen": p.payload_len, "tfo_ack": 0})
        elif r["tfo_synkind"]:
            r["tfo_ack"] = p.ack
            if kind:
                r["tfo_ackkind"], r["tfo_ackclen"] = kind, len(cookie)

    def udp(self, p, d):
        """The checksum of the last UDP datagram that way was 0."""
        self.record["udp_zero_checksum_" + d] = p.udp_checksum == 0

    def icmp(self, p, d):
        """An ICMP(v6) unreachable counted on the flow in the reverse direction."""
        if d == "rev" and p.icmp_type == ICMP_UNREACHABLE[p.ip_version]:
            self.record["icmp_unreachable"] = True


# ---------------------------------------------------------------------------------------
# Building the flows
# ---------------------------------------------------------------------------------------

def l3(v6, src, dst, tos=0, evil=False, fl=0, ext=(), df=False, ipopts=()):
    if v6:
        h = IPv6(src=src, dst=dst, tc=tos, fl=fl)
        for e in ext:
            h = h / e
        return h
    assert not ext
    return IP(src=src, dst=dst, tos=tos, flags=(4 if evil else 0) | (2 if df else 0),
              options=list(ipopts))


def eth():
    return Ether(src=MAC_A, dst=MAC_B)


class Conn:
    """The segments of one TCP connection (consistent sequence numbers) added to a record."""

    def __init__(self, cap, rec, v6, client, server, cport, sport, isn_c=1000, isn_s=5000):
        self.cap, self.rec, self.v6 = cap, rec, v6
        self.c, self.s, self.cp, self.sp = client, server, cport, sport
        self.seq = {True: isn_c, False: isn_s}

    def build(self, from_client, flags, payload=b"", tos=0, evil=False, fl=0, ext=(), opts=(),
              raw_opts=None, ack=None, seq=None, df=False, ipopts=()):
        src, dst = (self.c, self.s) if from_client else (self.s, self.c)
        sp, dp = (self.cp, self.sp) if from_client else (self.sp, self.cp)
        if ack is None:
            ack = self.seq[not from_client] if "A" in flags else 0
        s = self.seq[from_client] if seq is None else seq
        if raw_opts is not None:  # exact option bytes (malformed ones too)
            assert len(raw_opts) % 4 == 0
            tcp = TCP(sport=sp, dport=dp, flags=flags, seq=s, ack=ack,
                      dataofs=5 + len(raw_opts) // 4) / Raw(raw_opts + payload)
        else:
            tcp = TCP(sport=sp, dport=dp, flags=flags, seq=s, ack=ack, options=list(opts))
            if payload:
                tcp = tcp / Raw(payload)
        pkt = eth() / l3(self.v6, src, dst, tos, evil, fl, ext, df, ipopts) / tcp
        if seq is None:
            self.seq[from_client] += len(payload) + (1 if ("S" in flags or "F" in flags) else 0)
        return pkt

    def seg(self, from_client, flags, payload=b"", gap=MS, **kw):
        return self.cap.add(self.rec, self.build(from_client, flags, payload, **kw), gap=gap)

    def ip_bytes(self, data):
        """The IP packet of a frame built here (for an ICMP error to quote)."""
        return data[14:14 + parse_frame(data).ip_len]


def udp_pkt(v6, src, dst, sp, dp, payload, zero=False, **kw):
    u = UDP(sport=sp, dport=dp, chksum=0) if zero else UDP(sport=sp, dport=dp)
    return eth() / l3(v6, src, dst, **kw) / u / Raw(payload)


def icmp_error(v6, src, dst, quoted_ip, unreachable=True, tos=0, evil=False, fl=0):
    """An ICMP destination unreachable (or a time exceeded) quoting an IP packet: IPv4
    quotes the IP header + 8 bytes, as routers do; ICMPv6 the whole packet."""
    if v6:
        body = ICMPv6DestUnreach(code=4) if unreachable else ICMPv6TimeExceeded(code=0)
        return eth() / IPv6(src=src, dst=dst, tc=tos, fl=fl) / body / Raw(quoted_ip)
    ihl = (quoted_ip[0] & 15) * 4
    icmp = ICMP(type=3, code=3) if unreachable else ICMP(type=11, code=0)
    return (eth() / IP(src=src, dst=dst, tos=tos, flags=4 if evil else 0) / icmp
            / Raw(quoted_ip[:ihl + 8]))


def opt_bytes(*opts):
    """Raw TCP option bytes padded with EOL to a multiple of 4."""
    b = b"".join(opts)
    return b + b"\x00" * (-len(b) % 4)


def hbh(*options):
    return IPv6ExtHdrHopByHop(options=list(options))


def dstopt(*options):
    return IPv6ExtHdrDestOpt(options=list(options))


def scitag_opt(exp, act, length=3):
    data = bytes([exp >> 8, exp & 0xFF, act]) + b"\x00" * (length - 3)
    return HBHOptUnknown(otype=0x1E, optdata=data[:length])


V4 = lambda n: f"10.14.{n // 250}.{n % 250 + 1}"  # noqa: E731
V6 = lambda n: f"2001:db8:14::{n:x}"  # noqa: E731


class Addr:
    """Fresh addresses: every flow its own pair, so no flow can meet another's packets."""

    def __init__(self):
        self.n = 0

    def pair(self, v6):
        self.n += 2
        f = V6 if v6 else V4
        return f(self.n), f(self.n + 1)


def build_chains_capture():
    cap = Capture("chains")
    addr = Addr()

    # ---- ECN, DSCP and the evil bit on TCP, both directions, IPv4 and IPv6 -------------
    for v6 in (False, True):
        a, b = addr.pair(v6)
        c = Conn(cap, cap.record(f"ecn/dscp/evil TCP {'v6' if v6 else 'v4'}"), v6, a, b, 40001, 443)
        # SYN: DSCP 10 + ECT(0), evil; SYN-ACK: DSCP 46 + CE, evil; pure ACKs carry DSCPs and ECN
        # marks (ECN: data; DSCP and evil: ignored without payload)
        c.seg(True, "S", tos=10 << 2 | 2, evil=True, opts=[("MSS", 1460)])
        c.seg(False, "SA", tos=46 << 2 | 3, evil=True, opts=[("MSS", 1400)])
        c.seg(True, "A", tos=12 << 2 | 1, evil=True)
        c.seg(True, "PA", b"a" * 100, tos=0 << 2 | 2)          # data fwd: DSCP 0 first
        c.seg(False, "A", tos=63 << 2 | 3, evil=True)
        c.seg(True, "PA", b"b" * 200, tos=26 << 2 | 3, evil=True)  # then DSCP 26
        c.seg(True, "PA", b"c" * 10, tos=0)                     # then 0 again
        c.seg(False, "PA", b"d" * 300, tos=0 << 2 | 1)          # rev data: only DSCP 0
        c.seg(False, "PA", b"e" * 30, tos=0 << 2 | 2, evil=True)
        c.seg(True, "FA", tos=8 << 2 | 2)
        c.seg(False, "FA", tos=8 << 2 | 1)
        c.seg(True, "A")
    for v6 in (False, True):
        a, b = addr.pair(v6)
        c = Conn(cap, cap.record(f"ecn on SYN rev/SYN retransmitted {'v6' if v6 else 'v4'}"),
                 v6, a, b, 40002, 80)
        # The first SYN with ECT(1) and DSCP 4, its retransmission with CE and DSCP 0 (the last
        # SYN's DSCP and evil bit win); a SYN-ACK with ECT(1), DSCP 5, evil, retransmitted with
        # ECT(0), DSCP 7, not evil; reverse data DSCP 34 then 0.
        c.seg(True, "S", tos=4 << 2 | 1, evil=False, seq=1000)
        c.seg(True, "S", tos=0 << 2 | 3, evil=True)
        c.seg(False, "SA", tos=5 << 2 | 1, evil=True)
        c.seg(False, "SA", tos=7 << 2 | 2, evil=False, seq=5000)  # retransmitted SYN-ACK
        c.seg(True, "A", tos=2)
        c.seg(False, "PA", b"x" * 40, tos=34 << 2 | 3, evil=True)  # rev data: 34 first
        c.seg(False, "PA", b"y" * 40, tos=0 << 2 | 2)
        c.seg(True, "PA", b"z" * 40, tos=3 << 2 | 1, evil=False)
        c.seg(True, "A", tos=1)
    # UDP: non-TCP packets are data; checksums zero / nonzero both ways; first-zero-then-
    # nonzero DSCP in reverse, the evil bit on the first datagram that way only.
    for v6 in (False, True):
        a, b = addr.pair(v6)
        r = cap.record(f"udp ecn/dscp/evil/checksum {'v6' if v6 else 'v4'}")
        steps = [(True, False, 0 << 2 | 2, False), (False, True, 0 << 2 | 1, True),
                 (True, True, 9 << 2 | 3, True), (False, True, 0, False),
                 (False, False, 17 << 2 | 3, False), (True, False, 0, True),
                 (True, True, 1 << 2 | 1, False)]
        if v6:  # the last reverse checksum zero again; the last forward one nonzero
            steps += [(False, True, 2, False), (True, False, 3, False)]
        for fwd, zero, tos, evil in steps:
            src, dst, sp, dp = (a, b, 5000, 6000) if fwd else (b, a, 6000, 5000)
            cap.add(r, udp_pkt(v6, src, dst, sp, dp, b"u" * 20, zero=zero, tos=tos,
                               evil=evil and not v6))
    for v6 in (False, True):
        a, b = addr.pair(v6)
        r = cap.record(f"udp one way, nonzero checksum {'v6' if v6 else 'v4'}")
        for i in range(3):
            cap.add(r, udp_pkt(v6, a, b, 5001, 53, b"q" * (10 + i), zero=(i == 1), tos=i << 2))

    # ---- MSS ---------------------------------------------------------------------------
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("mss 1460 fwd, none rev; an MSS on a non-SYN ignored"), False, a, b,
             40010, 22)
    c.seg(True, "S", opts=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
    c.seg(False, "SA", opts=[("SAckOK", b""), ("NOP", None), ("WScale", 9)])
    c.seg(True, "A", opts=[("MSS", 999)])
    a, b = addr.pair(True)
    c = Conn(cap, cap.record("mss malformed 3-byte fwd, 1220 rev after other options"), True, a, b,
             40011, 22)
    c.seg(True, "S", raw_opts=opt_bytes(b"\x02\x03\x05", b"\x01"))
    c.seg(False, "SA", opts=[("NOP", None), ("WScale", 2), ("SAckOK", b""),
                             ("Timestamp", (1, 0)), ("MSS", 1220)])
    c.seg(True, "A")
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("mss absent fwd, 3-byte on SYN-ACK"), False, a, b, 40012, 22)
    c.seg(True, "S", opts=[("WScale", 1)])
    c.seg(False, "SA", raw_opts=opt_bytes(b"\x02\x03\x40"))
    a, b = addr.pair(True)
    c = Conn(cap, cap.record("mss last SYN wins; a kind twice: the last"), True, a, b, 40013, 22)
    c.seg(True, "S", opts=[("MSS", 1460)], seq=1000)
    c.seg(True, "S", opts=[("MSS", 536)])
    c.seg(False, "SA", raw_opts=opt_bytes(b"\x02\x04\x03\xe8", b"\x01\x01", b"\x02\x04\x04\xb0"))
    c.seg(False, "SA", seq=5000)  # a SYN-ACK without the option keeps the last one found
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("mss after a length-0 option: walk ends; before a length-1: kept"),
             False, a, b, 40014, 22)
    c.seg(True, "S", raw_opts=opt_bytes(b"\x01\x08\x00", b"\x02\x04\x05\xb4"))
    c.seg(False, "SA", raw_opts=opt_bytes(b"\x02\x04\x05\x78", b"\x05\x01\x02\x04\x01\x00"))
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("mss with 6 data bytes: len 8, value null"), False, a, b, 40015, 22)
    c.seg(True, "S", raw_opts=opt_bytes(b"\x02\x08\x00\x00\x05\xb4\x00\x00"))
    c.seg(False, "SA", raw_opts=opt_bytes(b"\x02\x02"))  # no data bytes: len 2, value 0

    # ---- TCP Fast Open -----------------------------------------------------------------
    exid = b"\xf9\x89"
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("tfo cookie request (34, empty); SYN-ACK cookie 34"), False, a, b,
             40020, 443, isn_c=4_000_000_000)
    c.seg(True, "S", opts=[("MSS", 1460), (34, b"")])
    c.seg(False, "SA", opts=[("MSS", 1460), (34, bytes(range(8)))])
    c.seg(True, "A")
    a, b = addr.pair(True)
    c = Conn(cap, cap.record("tfo 34 cookie + data on SYN, acked"), True, a, b, 40021, 443,
             isn_c=0xFFFFFF00)
    c.seg(True, "S", b"D" * 100, opts=[("MSS", 1440), (34, bytes(range(16, 24)))])
    c.seg(False, "SA", opts=[("MSS", 1440)])
    c.seg(True, "A")
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("tfo 254/F989 cookie + data; SYN-ACK acks the SYN only"), False, a, b,
             40022, 443, isn_c=77777)
    c.seg(True, "S", b"E" * 50, opts=[("MSS", 1460), (254, exid + bytes(6))])
    c.seg(False, "SA", ack=77778, opts=[(254, exid + b"\x01\x02\x03\x04")])
    c.seg(True, "A")
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("tfo 255/F989 cookie + data; SYN-ACK 255 cookie (its own data)"),
             False, a, b, 40023, 443, isn_c=123456789)
    c.seg(True, "S", b"F" * 30, opts=[(255, exid + bytes(range(8)))])
    c.seg(False, "SA", opts=[(255, exid + bytes(range(16)))])
    c.seg(True, "A")
    a, b = addr.pair(True)
    c = Conn(cap, cap.record("tfo 254 other ExID + 255/F989: 255"), True, a, b, 40024, 443)
    c.seg(True, "S", b"G" * 7, opts=[(254, b"\x12\x34" + bytes(10)), (255, exid + bytes(4))])
    c.seg(False, "SA", opts=[(254, b"\x12\x34abcd")])
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("tfo none on SYN (254 other ExID): SYN-ACK cookie ignored"), False,
             a, b, 40025, 443)
    c.seg(True, "S", b"H" * 5, opts=[(254, b"\x12\x34" + bytes(6))])
    c.seg(False, "SA", opts=[(34, bytes(8))])

    # ---- headers to walk: IPv4 options, IPv6 extension headers, options past the end ----
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("IPv4 options (IHL 6) and DF: payload lengths from the IP header"),
             False, a, b, 40050, 443)
    nops = [IPOption_NOP()] * 4
    c.seg(True, "S", tos=1 << 2, df=True, evil=True, ipopts=nops, opts=[("MSS", 1380)])
    c.seg(False, "SA", tos=2 << 2, df=True, opts=[("MSS", 1300)])
    c.seg(True, "A", tos=20 << 2 | 2, df=True, evil=True, ipopts=nops)  # no payload: ignored
    c.seg(True, "PA", b"i" * 8, tos=0, df=True, ipopts=nops)
    c.seg(False, "PA", b"j" * 8, tos=11 << 2, df=True, evil=False)
    c.seg(False, "A", tos=40 << 2, df=True, evil=True, ipopts=nops)
    a, b = addr.pair(True)
    c = Conn(cap, cap.record("IPv6 extension headers on every segment: TFO dlen, MSS, pure ACK"),
             True, a, b, 40051, 443)
    c.seg(True, "S", b"k" * 20, ext=(dstopt(PadN(optdata=b"\x00\x00\x00\x00")),),
          opts=[("MSS", 1200), (34, b"\xaa" * 4)])
    c.seg(False, "SA", ext=(hbh(RouterAlert(), scitag_opt(2, 2)),), opts=[("MSS", 1180)])
    c.seg(True, "A", tos=30 << 2 | 1, ext=(hbh(PadN(optdata=b"")), dstopt(PadN(optdata=b""))))
    c.seg(True, "PA", b"l" * 3, tos=0, ext=(dstopt(PadN(optdata=b"\x00")),))
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("TCP options: MSS running past the header (its 4 bytes present) / "
                             "a kind without its length byte"),
             False, a, b, 40052, 443)
    c.seg(True, "S", raw_opts=b"\x01\x01\x02\x08\x05\xb4\x00\x00")
    c.seg(False, "SA", raw_opts=b"\x01\x01\x01\x02")
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("TFO SYN in the reverse direction (the flow seen first from the "
                             "server's side), its SYN-ACK forward"), False, a, b, 40053, 443,
             isn_c=9000, isn_s=600)
    c.seg(True, "A", seq=8000, ack=700)
    c.seg(False, "S", b"m" * 12, opts=[(34, b"\x01\x02\x03\x04")])
    c.seg(True, "SA", opts=[("MSS", 1460)])
    c.seg(False, "S", seq=600, opts=[("MSS", 1460)])  # retransmission without the cookie
    c.seg(False, "A")

    # ---- the tcp chain -----------------------------------------------------------------
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("tcp handshake, FIN both ways, last ACK"), False, a, b, 40030, 80)
    for fc, fl, pl in [(True, "S", b""), (False, "SA", b""), (True, "A", b""), (True, "PA", b"g"),
                       (False, "PA", b"h" * 9), (True, "FA", b""), (False, "FA", b""),
                       (True, "A", b"")]:
        c.seg(fc, fl, pl)
    a, b = addr.pair(True)
    c = Conn(cap, cap.record("tcp ECN-setup SYN 0xC2, SYN-ACK 0x52, RST from the server"), True,
             a, b, 40031, 80)
    c.seg(True, "SEC")
    c.seg(False, "SAE")
    c.seg(True, "A")
    c.seg(False, "R")
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("tcp mid-stream (no SYN), FIN fwd only"), False, a, b, 40032, 80,
             isn_c=31337, isn_s=4242)
    c.seg(True, "PA", b"m" * 50)
    c.seg(False, "A")
    c.seg(True, "PA", b"n" * 60)
    c.seg(True, "FA")
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("tcp SYN, SYN-ACK, RST (no ACK) from the client"), False, a, b,
             40033, 80)
    c.seg(True, "S")
    c.seg(False, "SA")
    c.seg(True, "R", seq=1001)
    a, b = addr.pair(True)
    c = Conn(cap, cap.record("tcp SYN retransmitted, RST-ACK reply"), True, a, b, 40034, 81)
    c.seg(True, "S", seq=1000)
    c.seg(True, "S", gap=1000 * MS)
    c.seg(False, "RA")
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("tcp handshake with a reverse ACK only: not connected"), False, a, b,
             40035, 25)
    c.seg(True, "S")
    c.seg(False, "SA")
    c.seg(False, "PA", b"220 hello\r\n")
    c.seg(False, "A")
    a, b = addr.pair(False)
    c = Conn(cap, cap.record("tcp SYN-ACK without SYN seen, then a forward ACK: not connected"),
             False, a, b, 40036, 443)
    c.seg(True, "A")
    c.seg(False, "SA")
    c.seg(True, "A")
    c.seg(True, "PUA", b"u" * 3)

    # ---- ICMP errors -------------------------------------------------------------------
    # v4 UDP: an unreachable quoting a forward datagram, from a router, back to the source:
    # the flow's first reverse packet (its DSCP, ECN and evil bit count as data).
    a, b = addr.pair(False)
    r = cap.record("icmp v4 unreachable quoting a UDP datagram, to its source")
    q = cap.add(r, udp_pkt(False, a, b, 33000, 33434, b"p" * 30))
    cap.add(r, udp_pkt(False, a, b, 33000, 33434, b"p" * 31, tos=1))
    cap.add(r, icmp_error(False, "192.0.2.254", a, q[14:14 + 50], tos=8 << 2 | 1, evil=True),
            error=True)
    # v6 TCP: an ICMPv6 unreachable quoting a forward data segment.
    a, b = addr.pair(True)
    r = cap.record("icmp v6 unreachable quoting a TCP segment, to its source")
    c = Conn(cap, r, True, a, b, 40040, 443)
    c.seg(True, "S", fl=0x12345)
    c.seg(False, "SA", fl=0x54321)
    c.seg(True, "A", fl=0x12345)
    d = c.seg(True, "PA", b"w" * 80, fl=0x12345)
    # (its label, another than the reverse packets', is its sender's: not read)
    cap.add(r, icmp_error(True, "2001:db8:14::ffff", a, c.ip_bytes(d), tos=3,
                          fl=random_label(9, 1)), error=True)
    # v4 TCP: an unreachable quoting a reverse segment travels forward: stays false.
    a, b = addr.pair(False)
    r = cap.record("icmp v4 unreachable quoting a reverse TCP segment (forward): false")
    c = Conn(cap, r, False, a, b, 40041, 443)
    c.seg(True, "S")
    c.seg(False, "SA")
    c.seg(True, "A")
    d = c.seg(False, "PA", b"v" * 20)
    cap.add(r, icmp_error(False, "192.0.2.253", b, c.ip_bytes(d), tos=2), error=True)
    c.seg(True, "A")
    # v6 UDP: the same, forward.
    a, b = addr.pair(True)
    r = cap.record("icmp v6 unreachable quoting a reverse UDP datagram (forward): false")
    cap.add(r, udp_pkt(True, a, b, 33001, 53, b"Q" * 20))
    q = cap.add(r, udp_pkt(True, b, a, 53, 33001, b"R" * 40))
    cap.add(r, icmp_error(True, "2001:db8:14::fffe", b, q[14:], fl=random_label(4, 2)),
            error=True)  # its label (lhcb/perfSONAR) is not the flow's: not read
    cap.add(r, udp_pkt(True, a, b, 33001, 53, b"Q" * 21))
    # v4 UDP: a time exceeded back to the source: an error, not an unreachable.
    a, b = addr.pair(False)
    r = cap.record("icmp v4 time exceeded quoting a forward datagram: false")
    q = cap.add(r, udp_pkt(False, a, b, 33002, 33435, b"t" * 12))
    cap.add(r, icmp_error(False, "192.0.2.252", a, q[14:14 + 40], unreachable=False, tos=4 << 2),
            error=True)
    cap.add(r, udp_pkt(False, a, b, 33002, 33436 - 1, b"t" * 13))
    # An ICMP flow: echo A → B, then B → A an unreachable quoting a flow never seen: a
    # reverse packet of the ICMP flow itself.
    a, b = addr.pair(False)
    r = cap.record("icmp flow: echo request, then an unreachable back (no flow quoted)")
    cap.add(r, eth() / IP(src=a, dst=b, tos=2) / ICMP(type=8, id=1, seq=1) / Raw(b"p" * 32))
    unseen = bytes(IP(src=a, dst="198.51.100.99") / UDP(sport=1, dport=2) / Raw(b"z" * 8))
    cap.add(r, eth() / IP(src=b, dst=a, tos=3) / ICMP(type=3, code=1) / Raw(unseen[:28]))
    a, b = addr.pair(True)
    r = cap.record("icmpv6 flow: echo request only")
    cap.add(r, eth() / IPv6(src=a, dst=b, tc=1, fl=encode_label(2, 1, 0)) / ICMPv6EchoRequest(id=9))

    # ---- Scitags -----------------------------------------------------------------------
    def tagged(note, steps, v6=True, cport=41000):
        """A TCP flow: steps = (from_client, flags, payload, fl, ext)."""
        a, b = addr.pair(v6)
        c = Conn(cap, cap.record(note), v6, a, b, cport, 2811)
        for fc, fl, pl, label, ext in steps:
            c.seg(fc, fl, pl, fl=label, ext=ext)

    # Each marking host draws its entropy once per flow: the same label on all its packets.
    L = random_label
    l21 = L(2, 1)
    tagged("scitags label (2,1) fwd, rev 0: atlas/default",
           [(True, "S", b"", l21, ()), (False, "SA", b"", 0, ()), (True, "A", b"", l21, ()),
            (True, "PA", b"x" * 100, l21, ())])
    lab = L(300, 5)
    tagged("scitags forward unmarked, reverse label (300,5): ids, null names",
           [(True, "S", b"", 0, ()), (False, "SA", b"", lab, ()), (True, "A", b"", 0, ()),
            (False, "PA", b"y" * 10, lab, ())])
    l1, l2 = L(3, 2), L(5, 1)
    tagged("scitags label changes mid-flow forward: first label's tag, changed_fwd",
           [(True, "S", b"", l1, ()), (False, "SA", b"", l2, ()), (True, "A", b"", l1, ()),
            (True, "PA", b"z" * 10, l2, ()), (False, "A", b"", l2, ())])
    l21 = L(2, 1)
    tagged("scitags label (2,1) then a hop-by-hop option (258,7) replaces it",
           [(True, "S", b"", l21, ()), (False, "SA", b"", 0, ()),
            (True, "A", b"", l21, (hbh(Pad1(), PadN(optdata=b""), scitag_opt(258, 7)),)),
            (True, "PA", b"o" * 30, l21, (hbh(scitag_opt(4, 1)),))])
    l41 = L(4, 1)
    tagged("scitags destination option (2,63) with a label (4,1) on the first packet: option",
           [(True, "S", b"", l41, (dstopt(scitag_opt(2, 63)),)), (False, "SA", b"", 0, ()),
            (True, "PA", b"p" * 5, l41, ())])
    tagged("scitags hop-by-hop option on a reverse packet first, a later destination option "
           "does not replace it (the forward label appears late: changed)",
           [(True, "S", b"", 0, ()), (False, "SA", b"", 0, (hbh(scitag_opt(1000, 2)),)),
            (True, "A", b"", 0, (dstopt(scitag_opt(2, 1)),)), (True, "PA", b"q", L(3, 2), ())])
    l51 = L(5, 1)
    tagged("scitags 0x1E option of length 4 is not Scitags: the label (5,1)",
           [(True, "S", b"", l51, (dstopt(PadN(optdata=b"\x00\x00"), scitag_opt(2, 2, 4)),)),
            (False, "SA", b"", 0, ()), (True, "A", b"", l51, ())])
    tagged("scitags unmarked IPv6: labels 0",
           [(True, "S", b"", 0, ()), (False, "SA", b"", 0, ()), (True, "PA", b"r" * 3, 0, ())])
    tagged("scitags label with entropy bits only (no semantic bits): unmarked",
           [(True, "S", b"", 0xC0103, ()), (False, "SA", b"", 0x40001, ()),
            (True, "A", b"", 0xC0103, ())])
    tagged("scitags label (0,5): semantic bits, experiment 0",
           [(True, "S", b"", L(0, 5), ()), (False, "SA", b"", 0, ())])
    lf, lr1, lr2 = L(511, 63), L(1, 2), L(7, 1)
    tagged("scitags label (511,63) forward, unknown: the reverse's known (1,2) replaces it, "
           "and stays when (7,1) follows",
           [(True, "S", b"", lf, ()), (False, "SA", b"", lr1, ()),
            (False, "PA", b"s", lr2, ()), (True, "A", b"", lf, ())])
    lf, lr = L(3, 1), L(11, 2)
    tagged("scitags labels both ways, unchanged; seen from the SYN-ACK on: the first "
           "packet's (11,2)",
           [(False, "SA", b"", lr, ()), (True, "A", b"", lf, ()), (False, "PA", b"t" * 9, lr, ()),
            (True, "PA", b"u" * 9, lf, ())])
    a, b = addr.pair(True)
    r = cap.record("scitags UDP over IPv6 with a hop-by-hop option (2,1) and label (3,1)")
    l31 = L(3, 1)
    for i in range(3):
        fwd = i != 1
        src, dst, sp, dp = (a, b, 7000, 7001) if fwd else (b, a, 7001, 7000)
        cap.add(r, udp_pkt(True, src, dst, sp, dp, b"U" * 8,
                           ext=(hbh(scitag_opt(2, 1)),) if i == 2 else (), fl=l31 if fwd else 0,
                           zero=i == 2))  # the checksum read behind the extension header
    tagged("scitags IPv4: nulls", [(True, "S", b"", 0, ()), (False, "SA", b"", 0, ())], v6=False)
    return cap


def build_completion_capture(tcp_completion=True):
    """Flows whose records depend on completion: a packet comes after the expiry delay (5 s)
    of a completion; it starts a new record only if the flow had completed. The same frames
    with tcp_completion=False: the records of a run with --no-tcp-completion (FIN and RST
    complete nothing; ICMP unreachable still does)."""
    cap = Capture("completion" if tcp_completion else "completion_no_tcp")
    addr = Addr()
    addr.n = 1000
    gap = 6 * SEC
    # An unreachable back to the source completes the flow: the datagram 6 s later is a new
    # record (forward: its own first packet's direction, here the other host's).
    a, b = addr.pair(False)
    r = cap.record("icmp unreachable completes the flow")
    q = cap.add(r, udp_pkt(False, a, b, 34000, 53, b"a" * 20))
    cap.add(r, udp_pkt(False, b, a, 53, 34000, b"b" * 20))
    cap.add(r, icmp_error(False, "192.0.2.250", a, q[14:14 + 28]), error=True)
    r2 = cap.record("the datagram after the completed flow's expiry: a new record")
    cap.add(r2, udp_pkt(False, b, a, 53, 34000, b"c" * 20), gap=gap)
    a, b = addr.pair(True)
    r = cap.record("icmpv6 unreachable completes the flow")
    q = cap.add(r, udp_pkt(True, a, b, 34001, 53, b"a" * 20))
    cap.add(r, icmp_error(True, "2001:db8:14::fffd", a, q[14:]), error=True)
    r2 = cap.record("after the icmpv6-completed flow: a new record")
    cap.add(r2, udp_pkt(True, a, b, 34001, 53, b"d" * 20), gap=gap)
    # An unreachable forward, a time exceeded backward: no completion, one record.
    a, b = addr.pair(True)
    r = cap.record("icmpv6 unreachable forward: no completion")
    cap.add(r, udp_pkt(True, a, b, 34002, 53, b"a" * 20))
    q = cap.add(r, udp_pkt(True, b, a, 53, 34002, b"b" * 20))
    cap.add(r, icmp_error(True, "2001:db8:14::fffc", b, q[14:]), error=True)
    cap.add(r, udp_pkt(True, a, b, 34002, 53, b"e" * 20), gap=gap)
    a, b = addr.pair(False)
    r = cap.record("icmp time exceeded backward: no completion")
    q = cap.add(r, udp_pkt(False, a, b, 34003, 53, b"a" * 20))
    cap.add(r, icmp_error(False, "192.0.2.249", a, q[14:14 + 28], unreachable=False), error=True)
    cap.add(r, udp_pkt(False, a, b, 34003, 53, b"f" * 20), gap=gap)
    # The evil bit never completes a flow (pathspider completes on the second data packet).
    a, b = addr.pair(False)
    r = cap.record("evil data packets: no completion")
    c = Conn(cap, r, False, a, b, 34004, 80)
    c.seg(True, "PA", b"e" * 10, evil=True)
    c.seg(False, "PA", b"f" * 10)
    c.seg(True, "PA", b"g" * 10, evil=False)
    c.seg(False, "PA", b"h" * 10, evil=True, gap=gap)
    a, b = addr.pair(False)
    r = cap.record("evil UDP data: no completion")
    for i, g in enumerate((MS, MS, gap, MS)):
        cap.add(r, udp_pkt(False, a, b, 34006, 53, b"x" * 5, evil=i % 2 == 0), gap=g)
    # A RST completes; the server's segment 6 s later is a mid-stream record of its own.
    a, b = addr.pair(False)
    r = cap.record("RST completes the flow")
    c = Conn(cap, r, False, a, b, 34007, 80)
    c.seg(True, "S")
    c.seg(False, "SA")
    c.seg(True, "A")
    c.seg(True, "R")
    if tcp_completion:
        c.rec = cap.record("after the RST: mid-stream record from the server")
    c.seg(False, "PA", b"late" * 4, gap=gap)
    c.seg(True, "A")
    # FIN both ways completes (the last ACK within the expiry delay still counts); a segment
    # 6 s later is a mid-stream record of its own.
    a, b = addr.pair(True)
    r = cap.record("FIN both ways completes the flow")
    c = Conn(cap, r, True, a, b, 34008, 80)
    for fc, fl in [(True, "S"), (False, "SA"), (True, "A"), (False, "FA"), (True, "FA")]:
        c.seg(fc, fl)
    c.seg(False, "A", gap=4 * SEC)
    if tcp_completion:
        c.rec = cap.record("after FIN/FIN: mid-stream record")
    c.seg(True, "PA", b"again", gap=gap)
    # A SYN on a completed flow starts a new record at once (within the expiry delay).
    a, b = addr.pair(False)
    r = cap.record("SYN after FIN/FIN: the completed flow's record")
    c = Conn(cap, r, False, a, b, 34009, 80)
    for fc, fl in [(True, "S"), (False, "SA"), (True, "A"), (True, "FA"), (False, "FA"),
                   (True, "A")]:
        c.seg(fc, fl, tos=2 if fc else 1)
    if tcp_completion:
        c.rec = cap.record("the new connection on the same 5-tuple: a new record")
    c.seq = {True: 70000, False: 90000}
    c.seg(True, "S", gap=100 * MS, tos=3, opts=[("MSS", 1000)])
    c.seg(False, "SA", tos=3)
    c.seg(True, "A")
    return cap


# ---------------------------------------------------------------------------------------
# Running flowmark and comparing
# ---------------------------------------------------------------------------------------

def run_flowmark(args, timeout=60):
    return subprocess.run([FLOWMARK, "observe"] + args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def parse_jsonl(text):
    """[(keys in order, record)] of JSON lines."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            pairs = json.loads(line, parse_float=Decimal, object_pairs_hook=list)
        except ValueError as e:
            raise AssertionError(f"output line {n} is not JSON ({e}): {line!r}") from None
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise AssertionError(f"output line {n} repeats a key: {line!r}")
        out.append((keys, dict(pairs)))
    return out


def canon_key(sip, sp, dip, dp, proto):
    a, b = (norm(sip), sp), (norm(dip), dp)
    lo, hi = sorted([a, b], key=lambda e: (ipaddress.ip_address(e[0]).version,
                                            ipaddress.ip_address(e[0]), e[1] or 0))
    return proto, lo, hi


def expected_keys(chains):
    keys = list(BASIC_FIELDS)
    for c in CHAIN_ORDER:
        if c in chains:
            keys += CHAIN_FIELDS[c]
    return keys


def check_key_order(keys, chains, where):
    """The basic fields first, in today's order; then each chain's fields, chain by chain in
    the contract's order; exactly the fields of the chains asked for."""
    problems = []
    want = expected_keys(chains)
    if keys[:len(BASIC_FIELDS)] != BASIC_FIELDS:
        problems.append(f"{where}: the basic fields must come first, in order {BASIC_FIELDS}; "
                        f"got {keys[:len(BASIC_FIELDS)]}")
    missing = [k for k in want if k not in keys]
    extra = [k for k in keys if k not in want]
    if missing:
        problems.append(f"{where}: missing fields {missing}")
    if extra:
        problems.append(f"{where}: fields of chains not asked for (or unknown): {extra}")
    order = [CHAIN_ORDER.index(FIELD_CHAIN[k]) for k in keys[len(BASIC_FIELDS):]
             if k in FIELD_CHAIN and FIELD_CHAIN[k] != "basic"]
    if order != sorted(order):
        problems.append(f"{where}: chain fields not grouped in the order {CHAIN_ORDER}: "
                        f"{keys[len(BASIC_FIELDS):]}")
    return problems


def same(want, got):
    if isinstance(want, bool) or isinstance(got, bool):
        return type(want) is type(got) and want == got
    if isinstance(want, Decimal):
        return isinstance(got, (Decimal, int)) and abs(got - want) <= TIME_TOLERANCE
    if want is None or got is None:
        return want is got
    return type(want) is type(got) and want == got


def csv_text(v):
    """How CSV writes an expected value: null empty, booleans true/false."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def describe(cap, w, note):
    return (f"[{note}] {w['sip']}:{w['sp']} -> {w['dip']}:{w['dp']} proto {w['proto']} "
            f"first {w['first']}")


def match_records(cap, wants, gots, key_of):
    """Pairs expected and printed records by (canonical 5-tuple, first ± 1 µs)."""
    problems, pairs = [], []
    remaining = list(gots)
    for note, w in wants:
        k = canon_key(w["sip"], w["sp"], w["dip"], w["dp"], w["proto"])
        m = None
        for g in remaining:
            gk, gfirst = key_of(g)
            if gk == k and gfirst is not None and abs(gfirst - w["first"]) <= TIME_TOLERANCE:
                m = g
                break
        if m is None:
            problems.append(f"  missing record: {describe(cap, w, note)}")
            continue
        remaining.remove(m)
        pairs.append((note, w, m))
    for g in remaining:
        problems.append(f"  unexpected record: {g}")
    return problems, pairs


def compare_jsonl(cap, stdout, chains, names, what):
    """Every record printed against the truth, field by field (types included)."""
    recs = parse_jsonl(stdout)
    wants = [(r.note, w) for r, w in zip(cap.recs, cap.expected(names))]
    fields = expected_keys(chains)
    problems = []
    key_problems = {}  # the same key problem on many records: said once, with a count
    for keys, g in recs:
        for p in check_key_order(keys, chains, "keys"):
            key_problems.setdefault(p, []).append(f"{g.get('sip')}:{g.get('sp')} -> "
                                                  f"{g.get('dip')}:{g.get('dp')}")
    for p, where in key_problems.items():
        problems.append(f"  {p} (in {len(where)} record(s), e.g. {where[0]})")

    def key_of(g):
        try:
            return (canon_key(g["sip"], g["sp"], g["dip"], g["dp"], g["proto"]),
                    Decimal(str(g["first"])))
        except (KeyError, ValueError, TypeError):
            return None, None
    mp, pairs = match_records(cap, wants, [g for _, g in recs], key_of)
    problems += mp
    for note, w, g in pairs:
        for f in fields:
            if f not in g:
                continue  # reported by the key check
            gv = norm(g[f]) if f in ("sip", "dip") and isinstance(g[f], str) else g[f]
            if not same(w[f], gv):
                problems.append(f"  {describe(cap, w, note)}: {f} expected {w[f]!r}, got {gv!r}")
    return fail_text(cap, what, problems, len(wants), len(recs))


def compare_csv(cap, stdout, chains, names, json_keys, what):
    """CSV: the header is the JSON keys in the same order; every field as CSV writes the
    expected value (null empty, booleans true/false; continuation, today's basic field, may
    stay 0/1 as it was)."""
    rows = list(csv.reader(io.StringIO(stdout)))
    problems = []
    if not rows:
        return fail_text(cap, what, ["  no output"], len(cap.recs), 0)
    header = rows[0]
    if header != json_keys:
        problems.append(f"  CSV header {header} is not the JSON keys in order {json_keys}")
    wants = [(r.note, w) for r, w in zip(cap.recs, cap.expected(names))]
    dicts = []
    for n, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            problems.append(f"  CSV line {n} has {len(row)} fields, the header {len(header)}")
            continue
        dicts.append(dict(zip(header, row)))

    def key_of(g):
        try:
            sp = None if g["sp"] == "" else int(g["sp"])
            dp = None if g["dp"] == "" else int(g["dp"])
            return canon_key(g["sip"], sp, g["dip"], dp, int(g["proto"])), Decimal(g["first"])
        except (KeyError, ValueError, ArithmeticError):
            return None, None
    mp, pairs = match_records(cap, wants, dicts, key_of)
    problems += mp
    for note, w, g in pairs:
        for f in expected_keys(chains):
            if f not in g:
                continue
            gv = g[f]
            if f in ("first", "last"):
                ok = abs(Decimal(gv) - w[f]) <= TIME_TOLERANCE
            elif f in ("sip", "dip"):
                ok = norm(gv) == w[f]
            elif f == "continuation":
                ok = gv in (("true", "1") if w[f] else ("false", "0"))
            else:
                ok = gv == csv_text(w[f])
            if not ok:
                problems.append(f"  {describe(cap, w, note)}: {f} expected {csv_text(w[f])!r}, "
                                f"got {gv!r}")
    return fail_text(cap, what, problems, len(wants), len(rows) - 1)


def fail_text(cap, what, problems, n_want, n_got):
    if not problems:
        return None
    return (f"{cap.name} ({what}, flowmark observe -r {os.path.basename(cap.path)}; "
            f"entropy seed {SEED}: CHAINS_TEST_SEED={SEED} repeats it): {len(problems)} "
            f"problem(s), {n_want} records expected, {n_got} printed\n"
            + "\n".join(problems[:60]) + ("\n  ..." if len(problems) > 60 else ""))


TCP_OPTION_NUM = {"EOL": 0, "NOP": 1, "MSS": 2, "WScale": 3, "SAckOK": 4, "SAck": 5,
                  "Timestamp": 8, "TFO": 34}


def options_well_formed(opts):
    """The options are a clean list: every length >= 2 and inside the header, padding EOLs."""
    i = 0
    while i < len(opts):
        if opts[i] == 0:
            return all(x == 0 for x in opts[i:])
        if opts[i] == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2 or i + opts[i + 1] > len(opts):
            return False
        i += opts[i + 1]
    return True


def frame_note(cap, i):
    return next((r.note for r in cap.recs if i in r.frames), "?")


_TMP = None
_CAPS = {}


def built_captures():
    global _TMP
    if _TMP is None:
        _TMP = tempfile.mkdtemp(prefix="fm_chains_")
        atexit.register(_cleanup)
        for cap in (build_chains_capture(), build_completion_capture()):
            cap.write(_TMP)
            _CAPS[cap.name] = cap
        # the same capture, the records of a run with --no-tcp-completion
        alt = build_completion_capture(tcp_completion=False)
        assert alt.frames == _CAPS["completion"].frames and alt.times == _CAPS["completion"].times
        alt.path = _CAPS["completion"].path
        _CAPS[alt.name] = alt
        with open(os.path.join(_TMP, "registry.json"), "w") as f:
            json.dump(CUSTOM_REGISTRY, f)
    return _TMP, _CAPS


def _cleanup():
    if os.environ.get("OBSERVE_TEST_KEEP") == "1":
        print(f"pcaps kept in {_TMP}", file=sys.stderr)
    else:
        shutil.rmtree(_TMP, ignore_errors=True)


class Generation(unittest.TestCase):
    """The captures themselves: scapy's dissection of each written frame agrees with the
    parser the truth is computed with, and the flows exercise every field."""

    @classmethod
    def setUpClass(cls):
        cls.tmp, cls.caps = built_captures()

    def test_read_back_with_scapy(self):
        for cap in self.caps.values():
            with PcapReader(cap.path) as reader:
                frames = list(reader)
            self.assertEqual(len(frames), len(cap.frames), cap.name)
            for i, (s, p) in enumerate(zip(frames, cap.parsed)):
                where = f"{cap.name} frame {i + 1} [{frame_note(cap, i)}]: {s.summary()}"
                self.assertEqual(int(round(s.time * 1_000_000)) * 1000, cap.times[i], where)
                self.assertEqual(bytes(s), cap.frames[i], where)
                ip = s[IP] if p.ip_version == 4 else s[IPv6]
                self.assertEqual((norm(ip.src), norm(ip.dst)), (norm(p.src), norm(p.dst)), where)
                inner = ip.payload
                if p.ip_version == 4:
                    self.assertEqual((ip.tos, ip.len, bool(ip.flags.evil), ip.proto),
                                     (p.tos, p.ip_len, p.evil, p.proto), where)
                else:
                    self.assertEqual((ip.tc, ip.fl, ip.plen + 40), (p.tos, p.flowlabel, p.ip_len),
                                     where)
                    opts = []
                    while type(inner) in (IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt):
                        name = "hbh" if type(inner) is IPv6ExtHdrHopByHop else "dstopt"
                        opts += [(name, o.otype, bytes(o)[2:]) for o in inner.options
                                 if o.otype != 0]
                        inner = inner.payload
                    self.assertEqual(opts, p.ext_options, where)
                if type(inner) is TCP:
                    t = inner
                    self.assertEqual((t.sport, t.dport, int(t.flags) & 0xFF, t.seq, t.ack,
                                      t.dataofs * 4),
                                     (p.sport, p.dport, p.tcp_flags, p.seq, p.ack, p.doff), where)
                    payload = b"".join(bytes(x.load) for x in t.payload.iterpayloads()
                                       if type(x) is Raw)
                    self.assertEqual(len(payload), p.payload_len, where)
                    if options_well_formed(p.tcp_options):
                        # scapy's option list names the same kinds, MSS the same value
                        kinds = {TCP_OPTION_NUM.get(k, k) for k, _ in t.options} - {0, 1}
                        walked = tcp_option_walk(p.tcp_options)
                        self.assertEqual(kinds, set(walked), where)
                        mss = [v for k, v in t.options if k == "MSS"]
                        if mss and isinstance(mss[-1], int):
                            self.assertEqual(mss[-1], int.from_bytes(walked[2], "big"), where)
                elif type(inner) is UDP:
                    self.assertEqual((inner.sport, inner.dport, inner.chksum),
                                     (p.sport, p.dport, p.udp_checksum), where)
                else:
                    self.assertEqual((inner.type, inner.code), (p.icmp_type, p.icmp_code), where)
                    if p.quote is not None:
                        q = inner.payload
                        self.assertEqual((norm(q.src), norm(q.dst)), (p.quote.src, p.quote.dst),
                                         where)
                        self.assertEqual((q.payload.sport, q.payload.dport),
                                         (p.quote.sport, p.quote.dport), where)

    def test_truth_parser_on_known_bytes(self):
        """The option walk and the label codec on hand-written bytes and the spec's values."""
        self.assertEqual(tcp_option_walk(b"\x02\x04\x05\xb4\x01\x03\x03\x07"),
                         {2: b"\x05\xb4", 3: b"\x07"})
        self.assertEqual(tcp_option_walk(b"\x02\x03\x05\x01"), {2: b"\x05"})
        self.assertEqual(tcp_option_walk(b"\x01\x01\x02\x08\x05\xb4\x00\x00"),
                         {2: b"\x05\xb4\x00\x00"})
        self.assertEqual(tcp_option_walk(b"\x01\x01\x01\x02"), {})
        self.assertEqual(tcp_option_walk(b"\x01\x08\x00\x02\x04\x05\xb4\x00"), {})
        self.assertEqual(tcp_option_walk(b"\x02\x04\x05\xb4\x05\x01\x02\x04"), {2: b"\x05\xb4"})
        self.assertEqual(tcp_option_walk(b"\x02\x04\x03\xe8\x00\x02\x04\x04"), {2: b"\x03\xe8"})
        self.assertEqual(tcp_option_walk(b"\x02\x04\x03\xe8\x02\x04\x04\xb0"), {2: b"\x04\xb0"})
        for (e, a), v in [((2, 9), 65572), ((3, 3), 196620), ((4, 3), 32780), ((5, 10), 163880),
                          ((5, 14), 163896)]:
            self.assertEqual(encode_label(e, a, 0), v, (e, a))
        for e, a in [(0, 5), (1, 1), (300, 5), (511, 63)]:
            for ent in range(32):
                self.assertEqual(decode_label(encode_label(e, a, ent)), (e, a))
        self.assertIsNone(decode_label(0xC0103))
        self.assertEqual(tfo_cookie({254: b"\x12\x34ab", 255: b"\xf9\x89cd"}), (255, b"cd"))

    @unittest.skipUnless(os.path.isdir("/usr/lib/python3/dist-packages/pathspider/chains"),
                         "Debian package pathspider (its chains) is not installed")
    def test_truth_agrees_with_pathspiders_chains(self):
        """The truth above and pathspider's own chain code on the same packets agree on
        every field of its chains except the contract's listed deviations: tcp_fin_* swapped;
        an MSS option of more than 4 data bytes (value null); TFO option 255 (pathspider
        reads option 254's data, KeyError without one); option lengths below 2 and a missing
        length byte (not given to it)."""
        problems = []
        for cap in self.caps.values():
            for rec, w in zip(cap.recs, cap.expected()):
                r, raised, withheld = pathspider_record(cap, rec)
                r["tcp_fin_fwd"], r["tcp_fin_rev"] = r["tcp_fin_rev"], r["tcp_fin_fwd"]
                tfo255 = 255 in (w["tfo_synkind"], w["tfo_ackkind"])
                if raised and not (tfo255 and all(x.startswith("TFOChain: KeyError(254)")
                                                  for x in raised)):
                    problems.append(f"[{rec.note}] pathspider raised {raised}")
                for k, v in r.items():
                    if k.startswith("tfo_") and tfo255 or withheld and k.startswith(("mss_",
                                                                                       "tfo_")):
                        continue
                    if k.startswith("mss_value_") and (w["mss_len_" + k[-3:]] or 0) > 6:
                        continue
                    if not same(w[k], v):
                        problems.append(f"[{rec.note}] {k}: truth {w[k]!r}, pathspider {v!r}")
        if problems:
            self.fail("\n".join(problems))

    def test_flows_exercise_every_field(self):
        """Every chain field takes at least two values over the records (so a constant cannot
        pass), and the cases the issue names are there."""
        allw = []
        for cap in self.caps.values():
            allw += cap.expected()

        def seen(f, v=None):
            return {json.dumps(w[f]) for w in allw if v is None or w["ip_version"] == v}
        for c in CHAIN_ORDER:
            for f in CHAIN_FIELDS[c]:
                self.assertGreaterEqual(len(seen(f)), 2, f"{f} is {seen(f)} in every record")
        for v in (4, 6):
            for f in CHAIN_FIELDS["ecn"]:
                self.assertIn("true", seen(f, v), f"{f} never true in IPv{v}")
            self.assertIn("true", seen("icmp_unreachable", v))
        for f in CHAIN_FIELDS["evil"]:
            self.assertTrue({"true", "false"} <= seen(f, 4), f)
            self.assertEqual({"null"}, seen(f, 6), f)
        for d in ("fwd", "rev"):
            self.assertTrue({"null", "0"} < seen("dscp_mark_data_" + d), d)
            self.assertGreater(len(seen("dscp_mark_data_" + d)), 3, d)
            self.assertTrue({"null", "true", "false"} <= seen("udp_zero_checksum_" + d), d)
            self.assertTrue({"null", "3", "4"} <= seen("mss_len_" + d), d)
            self.assertTrue({"true", "false"} <= seen("tcp_fin_" + d) & seen("tcp_rst_" + d), d)
            self.assertTrue({"null", "true", "false"} <= seen("flowlabel_changed_" + d), d)
            self.assertIn("null", seen("tcp_synflags_" + d))
        self.assertIn("8", seen("mss_len_fwd"))
        self.assertIn("null", seen("mss_value_fwd") - seen("mss_len_fwd") | {"null"})
        self.assertTrue({"0", "34", "254", "255"} <= seen("tfo_synkind") & seen("tfo_ackkind"))
        self.assertTrue({'"hbh"', '"dstopt"', '"flowlabel"', "null"} <= seen("scitags_source"))
        self.assertTrue(any(w["scitags_experiment"] is not None
                            and w["scitags_experiment_name"] is None for w in allw),
                        "an experiment the registry does not know")
        self.assertIn('"atlas"', seen("scitags_experiment_name"))
        self.assertIn('"default"', seen("scitags_activity_name"))
        pairs = {(w["scitags_experiment"], w["scitags_activity"]) for w in allw
                 if w["scitags_source"] == "flowlabel"}
        self.assertGreaterEqual(len(pairs), 5, pairs)
        self.assertTrue({"true", "false"} <= seen("tcp_connected"))
        self.assertTrue({"2", "18", "194", "82"}
                        <= seen("tcp_synflags_fwd") | seen("tcp_synflags_rev"))


# ---------------------------------------------------------------------------------------
# pathspider's own chain code on the same packets (a check of the truth above)
# ---------------------------------------------------------------------------------------

class _PsTcp:
    """The few attributes of python-libtrace's tcp object that pathspider's chains read."""

    def __init__(self, p, segment):
        self.flags = p.tcp_flags
        self.syn_flag, self.ack_flag = bool(p.tcp_flags & SYN), bool(p.tcp_flags & ACK)
        self.fin_flag, self.rst_flag = bool(p.tcp_flags & FIN), bool(p.tcp_flags & RST)
        self.doff, self.seq_nbr, self.ack_nbr = p.doff // 4, p.seq, p.ack
        self.data = bytearray(segment)  # header + payload, as far as the IP length says
        self.payload = segment[p.doff:] if p.payload_len > 0 else None


class _PsObj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def pathspider_record(cap, rec):
    """Runs pathspider 2.0.1's chain classes (tcp ecn dscp mss tfo udp icmp evil) over the
    frames of one expected record, each with the direction the truth gives it, the way its
    Observer dispatches (new_flow; ip4/ip6 and icmp4/icmp6; tcp or udp). Segments with an
    option length below 2 or without a length byte are not given to its mss/tfo chains (it
    loops forever or raises on them: a listed deviation). Returns (record, [exceptions
    raised], whether a segment was withheld from mss/tfo)."""
    from pathspider.chains.dscp import DSCPChain
    from pathspider.chains.ecn import ECNChain
    from pathspider.chains.evil import EvilChain
    from pathspider.chains.icmp import ICMPChain
    from pathspider.chains.mss import MSSChain
    from pathspider.chains.tcp import TCPChain
    from pathspider.chains.tfo import TFOChain
    from pathspider.chains.udp import UDPChain
    chains = [TCPChain(), ECNChain(), DSCPChain(), MSSChain(), TFOChain(), UDPChain(),
              ICMPChain(), EvilChain()]
    r, raised, withheld = {}, [], False
    for c in chains:
        c.new_flow(r, None)
    first = cap.parsed[rec.frames[0]]
    for i in rec.frames:
        p = cap.parsed[i]
        if i in rec.errors:
            q = p.quote
            rev = (q.src, q.dst) == (first.src, first.dst) and (
                first.sport is None or (q.sport, q.dport) == (first.sport, first.dport))
        else:
            rev = not ((p.src, p.dst) == (first.src, first.dst) and (
                first.sport is None or (p.sport, p.dport) == (first.sport, first.dport)))
        tcp = None
        if p.is_tcp:
            end = 14 + p.ip_len
            tcp = _PsTcp(p, cap.frames[i][end - p.doff - p.payload_len:end])
        ip = _PsObj(traffic_class=p.tos, has_rf=p.evil, tcp=tcp,
                    icmp=_PsObj(type=p.icmp_type) if p.proto == 1 else None,
                    icmp6=_PsObj(type=p.icmp_type) if p.proto == 58 else None)
        bad_options = p.is_tcp and pathspider_walk_fails(p.tcp_options)
        withheld = withheld or bad_options
        for c in chains:
            try:
                if hasattr(c, f"ip{p.ip_version}"):
                    getattr(c, f"ip{p.ip_version}")(r, ip, rev)
                if p.proto == 1 and hasattr(c, "icmp4"):
                    c.icmp4(r, ip, None, rev)
                if p.proto == 58 and hasattr(c, "icmp6"):
                    c.icmp6(r, ip, None, rev)
                if p.is_tcp and hasattr(c, "tcp") and not (
                        bad_options and isinstance(c, (MSSChain, TFOChain))):
                    c.tcp(r, tcp, rev)
                if p.proto == 17 and hasattr(c, "udp"):
                    c.udp(r, _PsObj(checksum=p.udp_checksum), rev)
            except Exception as e:  # noqa: BLE001 - its bugs are part of what is compared
                raised.append(f"{type(c).__name__}: {e!r}")
    return r, raised, withheld


class ChainsTruth(unittest.TestCase):
    tmp = None
    caps = {}

    @classmethod
    def setUpClass(cls):
        cls.tmp, cls.caps = built_captures()

    def observe(self, cap, chains_arg, fmt="jsonl", extra=()):
        args = ["-r", cap.path] + (["--chains", chains_arg] if chains_arg is not None else [])
        args += list(extra) + (["--format", "csv"] if fmt == "csv" else [])
        r = run_flowmark(args)
        self.assertEqual(r.returncode, 0, f"flowmark observe {' '.join(args)} exited "
                         f"{r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def check(self, cap_name, chains_arg, chains, names=builtin_names, extra=()):
        cap = self.caps[cap_name]
        label = f"--chains {chains_arg}" if chains_arg is not None else "default chains"
        out = self.observe(cap, chains_arg, extra=extra)
        errors = [compare_jsonl(cap, out, chains, names, f"JSON lines, {label} {' '.join(extra)}")]
        recs = parse_jsonl(out)
        keys = recs[0][0] if recs else expected_keys(chains)
        out_csv = self.observe(cap, chains_arg, "csv", extra=extra)
        errors.append(compare_csv(cap, out_csv, chains, names, keys,
                                  f"CSV, {label} {' '.join(extra)}"))
        errors = [e for e in errors if e]
        if errors:
            self.fail("\n".join(errors))

    def test_all_chains(self):
        self.check("chains", "all", set(CHAIN_ORDER))
        cap = self.caps["chains"]
        out = self.observe(cap, "all", extra=["--format", "jsonl"])
        err = compare_jsonl(cap, out, set(CHAIN_ORDER), builtin_names,
                            "JSON lines, --chains all --format jsonl")
        if err:
            self.fail(err)

    def test_each_chain_alone(self):
        for c in CHAIN_ORDER:
            with self.subTest(chain=c):
                self.check("chains", c, {c})

    def test_default_is_basic_and_tcp(self):
        self.check("chains", None, {"tcp"})

    def test_basic_only(self):
        self.check("chains", "basic", set())

    def test_list_order_does_not_matter(self):
        self.check("chains", "scitags,basic,ecn,tcp", {"scitags", "ecn", "tcp"})
        self.check("chains", "evil,udp,mss", {"evil", "udp", "mss"})

    def test_registry_file(self):
        path = os.path.join(self.tmp, "registry.json")
        self.check("chains", "scitags,tfo", {"scitags", "tfo"}, names=custom_names,
                   extra=["--registry", path])

    def test_completion(self):
        """ICMP unreachable back to the source and RST complete a flow; an unreachable
        forward, a time exceeded and the evil bit do not."""
        self.check("completion", "all", set(CHAIN_ORDER))

    def test_no_tcp_completion(self):
        """--no-tcp-completion: FIN and RST complete nothing (and a SYN joins the flow);
        an ICMP unreachable back to the source still completes."""
        self.check("completion_no_tcp", "all", set(CHAIN_ORDER), extra=["--no-tcp-completion"])

    def test_unknown_chain_is_a_usage_error(self):
        """An unknown chain name: the usage error exit code, a message naming it, no records.
        The code is the project's one usage-error code, 2 (kExitUsage in
        include/flowmark/core/exit_code.hpp, listed in every --help; a bad --format or
        --filter gives it too); the issue's field contract said 64 (sysexits' EX_USAGE),
        which is not in that table."""
        cap = self.caps["chains"]
        for arg in ("bogus", "ecn,bogus", "tcp,all2"):
            bad = arg.split(",")[-1]
            r = run_flowmark(["-r", cap.path, "--chains", arg])
            self.assertEqual(r.returncode, KEXIT_USAGE, f"--chains {arg}: exit {KEXIT_USAGE} "
                             f"(usage error) expected, got {r.returncode}; stderr "
                             f"{r.stderr.strip()!r}")
            self.assertIn(bad, r.stderr, f"--chains {arg}: the message must name {bad!r}")
            self.assertEqual(r.stdout, "", f"--chains {arg}: no records")


if __name__ == "__main__":
    if not os.access(FLOWMARK, os.X_OK):  # a failure, not a skip: CTest must not pass
        sys.exit(f"observe_chains_truth.py: {FLOWMARK} is missing or not executable: build first")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
