#!/usr/bin/python3
"""`flowmark observe --ipfix` read back by independent IPFIX readers (issue 17).

    /usr/bin/python3 tests/integration/test_ipfix.py BUILD_DIR [unittest options]

Captures are built here with scapy (IPv4/IPv6, TCP/UDP/ICMP/ICMPv6, a VLAN-tagged flow).
One run writes both the IPFIX file and the JSON records (`--format jsonl` alongside); then
- libfixbuf's ipfixDump (Debian libfixbuf-tools) reads the file with exit 0, nothing on
  standard error, no warning, every element of the templates named, and as many data records
  as there are JSON records;
- python3-ipfix (Debian) reads the biflow records, reverse RFC 5103 elements included, and
  every value equals the JSON record of the same flow;
- the message headers (parsed here from RFC 7011 §3.1) carry version 10, the lengths, the
  observation domain asked for, and sequence numbers counting the data records before each
  message; a small --ipfix-max-message splits the records over many messages, all still read;
- --ipfix-uniflow writes a forward and (when it saw packets) a reverse record per flow,
  without reverse elements;
- tshark's CFLOW dissector decodes the messages with no malformed packet or expert info;
- nfcapd (nfdump 1.7) receives the export over UDP on loopback with no sequence error, and
  nfdump shows the JSON records' forward and reverse packets and octets;
- on a capture of flows ended by FIN, by the idle and active timeouts and by the end of the
  capture: flowEndReason 3, 1, 2 and 4; ipClassOfService and its reverse (the first packet's
  TOS each way); biflowDirection 1 (SYN seen first), 2 (SYN+ACK seen first), 0 (UDP);
  --ipfix-times ns: flowStart/EndNanoseconds equal to the JSON times to the nanosecond; and
  the Scitags experiment and activity of a flow-label-marked flow as CESNET's elements
  8057/1200 and 8057/1201 (packaging/ipfix/ gives python3-ipfix and ipfixDump their
  definitions), equal to the JSON record's.
- --ipfix tcp://: a TCP collector here (a socket server keeping each connection's bytes: a
  TCP stream has the byte format of a file) gets the file export's records, read by
  ipfixDump and python3-ipfix; a collector started only after the export began still gets
  every record, templates first; a collector never up: the records not delivered are told,
  exit code 1, within --ipfix-timeout.
Loopback only, no root. Needs /usr/bin/python3 with python3-scapy and python3-ipfix,
ipfixDump, nfcapd and nfdump: scripts/install-deps.sh installs them; missing, the test fails (it does not skip).
"""

import collections
import datetime
import decimal
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_ipfix.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")
SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ELEMENTS_XML = os.path.join(SOURCE_DIR, "packaging", "ipfix", "cesnet-scitags.xml")
ELEMENTS_IESPEC = os.path.join(SOURCE_DIR, "packaging", "ipfix", "cesnet-scitags.iespec")

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import (ICMP, IP, TCP, UDP, Dot1Q, Ether, ICMPv6EchoReply,  # noqa: E402
                       ICMPv6EchoRequest, IPv6, Raw, wrpcap)
import ipfix.ie  # noqa: E402
import ipfix.reader  # noqa: E402
from ipfix_tcp_collector import TcpCollector  # noqa: E402

T0 = 1_700_000_000.0


def build_capture(path):
    """Frames of several flows, interleaved, with time stamps 10 ms apart."""
    frames = []

    def tcp_flow(ipc, a, b, sport, dport, payloads):
        out = [Ether() / ipc(src=a, dst=b) / TCP(sport=sport, dport=dport, flags="S"),
               Ether() / ipc(src=b, dst=a) / TCP(sport=dport, dport=sport, flags="SA"),
               Ether() / ipc(src=a, dst=b) / TCP(sport=sport, dport=dport, flags="A")]
        for i, n in enumerate(payloads):
            fwd = i % 3 != 2
            s, d = (a, b) if fwd else (b, a)
            sp, dp = (sport, dport) if fwd else (dport, sport)
            out.append(Ether() / ipc(src=s, dst=d) / TCP(sport=sp, dport=dp, flags="PA")
                       / Raw(b"x" * n))
        out += [Ether() / ipc(src=a, dst=b) / TCP(sport=sport, dport=dport, flags="FA"),
                Ether() / ipc(src=b, dst=a) / TCP(sport=dport, dport=sport, flags="FA"),
                Ether() / ipc(src=a, dst=b) / TCP(sport=sport, dport=dport, flags="A")]
        return out

    flows = [
        tcp_flow(IP, "10.1.0.1", "10.1.0.2", 40001, 443, [100, 1400, 7, 300, 50]),
        tcp_flow(IPv6, "2001:db8::1", "2001:db8::2", 40002, 80, [10, 20, 30, 999]),
        [Ether() / IP(src="10.1.0.3", dst="10.1.0.4") / UDP(sport=5353, dport=53) / Raw(b"q" * n)
         for n in (30, 40, 50)],
        [Ether() / IPv6(src="2001:db8::3", dst="2001:db8::4") / UDP(sport=7000, dport=7001)
         / Raw(b"u" * 64),
         Ether() / IPv6(src="2001:db8::4", dst="2001:db8::3") / UDP(sport=7001, dport=7000)
         / Raw(b"v" * 128)],
        [Ether() / IP(src="10.1.0.5", dst="10.1.0.6") / ICMP(type=8, id=1, seq=1),
         Ether() / IP(src="10.1.0.6", dst="10.1.0.5") / ICMP(type=0, id=1, seq=1)],
        [Ether() / IPv6(src="2001:db8::5", dst="2001:db8::6") / ICMPv6EchoRequest(id=2),
         Ether() / IPv6(src="2001:db8::6", dst="2001:db8::5") / ICMPv6EchoReply(id=2)],
        [Ether() / Dot1Q(vlan=42) / IP(src="10.2.0.1", dst="10.2.0.2") / UDP(sport=9, dport=9999)
         / Raw(b"v" * n) for n in (10, 20)]
        + [Ether() / Dot1Q(vlan=42) / IP(src="10.2.0.2", dst="10.2.0.1")
           / UDP(sport=9999, dport=9) / Raw(b"w" * 33)],
    ]
    # Interleave the flows frame by frame.
    i = 0
    while any(flows):
        for f in flows:
            if f:
                frames.append(f.pop(0))
    for n, fr in enumerate(frames):
        fr.time = T0 + n * 0.010 + 0.000123
    wrpcap(path, frames)


def scitags_label(experiment, activity, entropy=0):
    """The Scitags flow label (bits 17-9: the experiment bit-reversed; 7-2: the activity)."""
    rev = int(f"{experiment:09b}"[::-1], 2)
    return (((entropy >> 3) & 3) << 18 | rev << 9 | ((entropy >> 2) & 1) << 8 | activity << 2
            | (entropy & 3))


def build_fields_capture(path):
    """Flows for the fields of the record's end: (time, frame) pairs, sorted by time.
    Run with --idle-timeout 2 --active-timeout 3 (the expiry delay its default 5 s)."""
    a, b, c, d = "10.5.0.1", "10.5.0.2", "10.5.0.3", "10.5.0.4"
    out = [
        # TCP opened by a SYN, closed by FIN both ways: end detected (3), initiator (1);
        # TOS 0x28 forward, 0x0a back (the first packet each way), others later.
        (0.000, Ether() / IP(src=a, dst=b, tos=0x28) / TCP(sport=41000, dport=80, flags="S")),
        (0.001, Ether() / IP(src=b, dst=a, tos=0x0a) / TCP(sport=80, dport=41000, flags="SA")),
        (0.002, Ether() / IP(src=a, dst=b, tos=0xb8) / TCP(sport=41000, dport=80, flags="A")),
        (0.003, Ether() / IP(src=a, dst=b) / TCP(sport=41000, dport=80, flags="FA")),
        (0.004, Ether() / IP(src=b, dst=a) / TCP(sport=80, dport=41000, flags="FA")),
        (0.005, Ether() / IP(src=a, dst=b) / TCP(sport=41000, dport=80, flags="A")),
        # UDP one datagram each way, then silence: idle timeout (1), direction arbitrary (0).
        (0.010, Ether() / IP(src=c, dst=d, tos=0x10) / UDP(sport=5000, dport=53) / Raw(b"q")),
        (0.011, Ether() / IP(src=d, dst=c, tos=0x04) / UDP(sport=53, dport=5000) / Raw(b"r")),
        # A connection seen from its SYN+ACK: the reverse side opened it (2); idle (1).
        (0.020, Ether() / IP(src=b, dst=c) / TCP(sport=443, dport=42000, flags="SA")),
    ]
    # IPv6 UDP, a datagram each way every 0.9 s for 7.2 s: two parts ended by the active
    # timeout (2), the last by the end of the capture (4).
    for i in range(9):
        t = 0.030 + 0.9 * i
        s, dd, sp, dp = (("2001:db8::1", "2001:db8::2", 6000, 6001) if i % 2 == 0
                         else ("2001:db8::2", "2001:db8::1", 6001, 6000))
        out.append((t, Ether() / IPv6(src=s, dst=dd, tc=0x20 + i) / UDP(sport=sp, dport=dp)
                    / Raw(b"x" * 10)))
    # IPv6 UDP marked by its flow label (experiment 300, activity 17), open at the end.
    for t in (7.0, 7.1):
        out.append((t, Ether() / IPv6(src="2001:db8::a", dst="2001:db8::b",
                                      fl=scitags_label(300, 17, 5))
                    / UDP(sport=7000, dport=7001) / Raw(b"s" * 20)))
    out.sort(key=lambda x: x[0])
    frames = []
    for t, fr in out:
        fr.time = T0 + t + 0.000123  # off the millisecond (the file keeps microseconds)
        frames.append(fr)
    wrpcap(path, frames)


def raw_records(data):
    """Each data record of the messages as {(pen, id): value bytes} (RFC 7011 §3.4),
    decoded here from the templates."""
    out, off, templates = [], 0, {}
    while off < len(data):
        length = struct.unpack_from("!H", data, off + 2)[0]
        p = off + 16
        while p < off + length:
            sid, slen = struct.unpack_from("!HH", data, p)
            q, end = p + 4, p + slen
            if sid == 2:
                while q + 4 <= end:
                    tid, count = struct.unpack_from("!HH", data, q)
                    q += 4
                    fields = []
                    for _ in range(count):
                        eid, elen = struct.unpack_from("!HH", data, q)
                        pen = 0
                        if eid & 0x8000:
                            pen = struct.unpack_from("!I", data, q + 4)[0]
                            q += 4
                        q += 4
                        fields.append(((pen, eid & 0x7fff), elen))
                    templates[tid] = fields
            else:
                size = sum(n for _, n in templates[sid])
                while q + size <= end:
                    rec = {}
                    for k, n in templates[sid]:
                        rec[k] = data[q:q + n]
                        q += n
                    out.append(rec)
            p = end
        off += length
    return out


def ntp_to_ns(value):
    """dateTimeNanoseconds (NTP format, era 0) to nanoseconds since the epoch."""
    seconds, fraction = value >> 32, value & 0xffffffff
    return (seconds - 2208988800) * 10**9 + (fraction * 10**9 >> 32)


def json_ns(text):
    """A JSON time in seconds with 9 decimals (as text) to nanoseconds, exactly."""
    return int(decimal.Decimal(text) * 10**9)


def run(*args, check=True):
    # One worker unless a test asks for more: several workers' records reach the writer in an
    # order that varies with the threads' timing, and some tests compare the bytes.
    if "--workers" not in args and "-i" not in args:
        args = ("--workers", "1", *args)
    r = subprocess.run([FLOWMARK, "observe", *args], capture_output=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"flowmark observe {' '.join(args)} exited {r.returncode}: "
                             f"{r.stderr.decode(errors='replace')}")
    return r


def messages(data):
    """(version, length, export_time, sequence, domain, data records) for each message, from
    the bytes (RFC 7011 §3.1 / §3.3); data records counted with the templates' lengths."""
    out, off, tlen = [], 0, {}
    while off < len(data):
        version, length, etime, seq, dom = struct.unpack_from("!HHIII", data, off)
        assert length >= 16 and off + length <= len(data), (off, length, len(data))
        p, nrec = off + 16, 0
        while p < off + length:
            sid, slen = struct.unpack_from("!HH", data, p)
            q, end = p + 4, p + slen
            if sid == 2:
                while q + 4 <= end:
                    tid, count = struct.unpack_from("!HH", data, q)
                    q += 4
                    total = 0
                    for _ in range(count):
                        eid, elen = struct.unpack_from("!HH", data, q)
                        q += 8 if eid & 0x8000 else 4
                        total += elen
                    tlen[tid] = total
            else:
                nrec += (slen - 4) // tlen[sid]
            p = end
        out.append((version, length, etime, seq, dom, nrec))
        off += length
    return out


def utc_seconds(t):
    """Seconds since the epoch of a python3-ipfix datetime (naive ones are UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def wait_for(cond, timeout):
    """Polls cond() until it is true or timeout seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def udp_rx_queue(port):
    """The receive queue (bytes) of the IPv4 UDP socket bound to 127.0.0.1:port, or None."""
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == f"0100007F:{port:04X}":
                return int(fields[4].split(":")[1], 16)
    return None


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def key(sip, dip, sp, dp, proto):
    return (sip, dip, sp or 0, dp or 0, proto)


class IpfixTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="flowmark-ipfix-")
        cls.pcap = os.path.join(cls.dir, "flows.pcap")
        build_capture(cls.pcap)
        cls.ipfix = os.path.join(cls.dir, "flows.ipfix")
        r = run("-r", cls.pcap, "--ipfix", cls.ipfix, "--format", "jsonl",
                "--observation-domain", "4242")
        cls.json = [json.loads(line) for line in r.stdout.decode().splitlines()]
        ipfix.ie.use_iana_default()
        ipfix.ie.use_5103_default()
        ipfix.ie.use_specfile(ELEMENTS_IESPEC)  # CESNET's Scitags elements
        cls.fields_pcap = os.path.join(cls.dir, "fields.pcap")
        build_fields_capture(cls.fields_pcap)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def read_records(self, path):
        with open(path, "rb") as f:
            return list(ipfix.reader.from_stream(f).namedict_iterator())

    def test_captures_cover_the_cases(self):
        self.assertEqual(len(self.json), 7)
        self.assertEqual({r["ip_version"] for r in self.json}, {4, 6})
        self.assertEqual({r["proto"] for r in self.json}, {1, 6, 17, 58})
        self.assertIn(42, {r["vlan"] for r in self.json})
        self.assertTrue(any(r["pkt_rev"] > 0 for r in self.json))
        self.assertTrue(any(r["pkt_rev"] == 0 for r in self.json))

    def test_ipfixdump_reads_without_warnings(self):
        r = subprocess.run(["ipfixDump", "-i", self.ipfix], capture_output=True, timeout=60)
        out, err = r.stdout.decode(), r.stderr.decode()
        self.assertEqual(r.returncode, 0, err)
        self.assertEqual(err.strip(), "", "ipfixDump wrote to standard error")
        self.assertNotIn("warning", out.lower())
        self.assertNotIn("error", out.lower())
        for name in ("sourceIPv4Address", "destinationIPv4Address", "sourceIPv6Address",
                     "destinationIPv6Address", "sourceTransportPort", "destinationTransportPort",
                     "protocolIdentifier", "vlanId", "flowStartMilliseconds",
                     "flowEndMilliseconds", "packetDeltaCount", "octetDeltaCount",
                     "tcpControlBits", "reversePacketDeltaCount", "reverseOctetDeltaCount",
                     "reverseTcpControlBits"):
            self.assertIn(name, out)
        self.assertIn(f"{len(self.json)} Data Records, 2 Template Records", out)
        self.assertEqual(out.count("--- data record"), len(self.json))

    def test_biflow_values_equal_the_json_records(self):
        recs = self.read_records(self.ipfix)
        self.assertEqual(len(recs), len(self.json))
        got = {}
        for r in recs:
            v6 = "sourceIPv6Address" in r
            sip = str(r["sourceIPv6Address" if v6 else "sourceIPv4Address"])
            dip = str(r["destinationIPv6Address" if v6 else "destinationIPv4Address"])
            got[key(sip, dip, r["sourceTransportPort"], r["destinationTransportPort"],
                    r["protocolIdentifier"])] = r
        for j in self.json:
            k = key(j["sip"], j["dip"], j["sp"], j["dp"], j["proto"])
            self.assertIn(k, got, f"no IPFIX record for {k}")
            r = got[k]
            self.assertEqual(r["packetDeltaCount"], j["pkt_fwd"], k)
            self.assertEqual(r["octetDeltaCount"], j["oct_fwd"], k)
            self.assertEqual(r["reversePacketDeltaCount"], j["pkt_rev"], k)
            self.assertEqual(r["reverseOctetDeltaCount"], j["oct_rev"], k)
            self.assertEqual(r["tcpControlBits"], j["tcp_flags_fwd"], k)
            self.assertEqual(r["reverseTcpControlBits"], j["tcp_flags_rev"], k)
            self.assertEqual(r["vlanId"], j["vlan"], k)
            # python3-ipfix gives datetimes (UTC); JSON gives seconds.
            start = utc_seconds(r["flowStartMilliseconds"])
            end = utc_seconds(r["flowEndMilliseconds"])
            self.assertAlmostEqual(start, int(float(j["first"]) * 1000) / 1000, places=3, msg=k)
            self.assertAlmostEqual(end, int(float(j["last"]) * 1000) / 1000, places=3, msg=k)

    def test_headers_domain_and_sequence(self):
        with open(self.ipfix, "rb") as f:
            data = f.read()
        msgs = messages(data)
        self.assertEqual(sum(m[1] for m in msgs), len(data))
        self.assertEqual(sum(m[5] for m in msgs), len(self.json))
        for m in msgs:
            self.assertEqual(m[0], 10)
            self.assertEqual(m[4], 4242)

    def test_small_messages_split_and_still_read(self):
        path = os.path.join(self.dir, "small.ipfix")
        run("-r", self.pcap, "--ipfix", path, "--ipfix-max-message", "512")
        with open(path, "rb") as f:
            data = f.read()
        msgs = messages(data)
        self.assertGreater(len(msgs), 1)
        seq = 0
        for m in msgs:
            self.assertLessEqual(m[1], 512)
            self.assertEqual(m[3], seq, "sequence number = data records before the message")
            seq += m[5]
        self.assertEqual(seq, len(self.json))
        self.assertEqual(len(self.read_records(path)), len(self.json))
        r = subprocess.run(["ipfixDump", "-i", path], capture_output=True, timeout=60)
        self.assertEqual((r.returncode, r.stderr), (0, b""))
        self.assertIn(f"{len(msgs)} Messages, {len(self.json)} Data Records", r.stdout.decode())

    def test_uniflow(self):
        path = os.path.join(self.dir, "uni.ipfix")
        run("-r", self.pcap, "--ipfix", path, "--ipfix-uniflow")
        recs = self.read_records(path)
        for r in recs:
            self.assertFalse([n for n in r if n.startswith("reverse")], r)
        expected = collections.Counter()
        for j in self.json:
            expected[(j["sip"], j["dip"], j["sp"] or 0, j["dp"] or 0, j["pkt_fwd"],
                      j["oct_fwd"])] += 1
            if j["pkt_rev"]:
                expected[(j["dip"], j["sip"], j["dp"] or 0, j["sp"] or 0, j["pkt_rev"],
                          j["oct_rev"])] += 1
        got = collections.Counter()
        for r in recs:
            v6 = "sourceIPv6Address" in r
            got[(str(r["sourceIPv6Address" if v6 else "sourceIPv4Address"]),
                 str(r["destinationIPv6Address" if v6 else "destinationIPv4Address"]),
                 r["sourceTransportPort"], r["destinationTransportPort"],
                 r["packetDeltaCount"], r["octetDeltaCount"])] += 1
        self.assertEqual(got, expected)

    def test_stdout_and_ipfix_only(self):
        r = run("-r", self.pcap, "--ipfix", "-")
        with open(self.ipfix, "rb") as f:
            ref = f.read()
        # Same bytes but the export times (bytes 4..8 of each message).
        self.assertEqual(len(r.stdout), len(ref))
        self.assertEqual(r.stdout[:4], ref[:4])
        self.assertEqual(r.stdout[16:], ref[16:])
        # Without --format, no JSON beside the file.
        path = os.path.join(self.dir, "only.ipfix")
        r = run("-r", self.pcap, "--ipfix", path)
        self.assertEqual(r.stdout, b"")

    def test_flow_labels_with_the_scitags_chain(self):
        pcap = os.path.join(self.dir, "labels.pcap")
        frames = [Ether() / IPv6(src="2001:db8::a", dst="2001:db8::b", fl=0x5a5a5)
                  / UDP(sport=2000, dport=3000) / Raw(b"a" * 20),
                  Ether() / IPv6(src="2001:db8::b", dst="2001:db8::a", fl=0x00c3f)
                  / UDP(sport=3000, dport=2000) / Raw(b"b" * 20),
                  Ether() / IPv6(src="2001:db8::c", dst="2001:db8::d", fl=0x12345)
                  / TCP(sport=4000, dport=5000, flags="S"),
                  Ether() / IP(src="10.3.0.1", dst="10.3.0.2") / UDP(sport=1, dport=2)]
        for n, fr in enumerate(frames):
            fr.time = T0 + n * 0.001
        wrpcap(pcap, frames)
        path = os.path.join(self.dir, "labels.ipfix")
        r = run("-r", pcap, "--chains", "scitags", "--ipfix", path, "--format", "jsonl")
        js = [json.loads(line) for line in r.stdout.decode().splitlines()]
        recs = self.read_records(path)
        self.assertEqual(len(recs), 3)
        seen = 0
        for r in recs:
            if "sourceIPv6Address" not in r:
                self.assertNotIn("flowLabelIPv6", r)
                continue
            j = next(j for j in js if j["sip"] == str(r["sourceIPv6Address"]))
            self.assertEqual(r["flowLabelIPv6"], j["flowlabel_fwd"])
            self.assertEqual(r["reverseFlowLabelIPv6"], j["flowlabel_rev"] or 0)
            seen += 1
        self.assertEqual(seen, 2)
        self.assertIn(0x5a5a5, [r.get("flowLabelIPv6") for r in recs])
        self.assertIn(0x00c3f, [r.get("reverseFlowLabelIPv6") for r in recs])
        d = subprocess.run(["ipfixDump", "-i", path], capture_output=True, timeout=60)
        self.assertEqual((d.returncode, d.stderr), (0, b""))
        self.assertIn("reverseFlowLabelIPv6", d.stdout.decode())
        # Without the scitags chain, no flow label element.
        run("-r", pcap, "--ipfix", path)
        self.assertFalse(any("flowLabelIPv6" in r for r in self.read_records(path)))

    def fields_run(self, name, *extra):
        """The fields capture through --ipfix (with JSON records of the same run): the IPFIX
        file's bytes and the JSON records (times kept as text)."""
        path = os.path.join(self.dir, name)
        r = run("-r", self.fields_pcap, "--idle-timeout", "2", "--active-timeout", "3",
                "--chains", "tcp,scitags", "--ipfix", path, "--format", "jsonl", *extra)
        js = [json.loads(line, parse_float=str) for line in r.stdout.decode().splitlines()]
        with open(path, "rb") as f:
            return path, f.read(), js

    @staticmethod
    def ipfix_key(r):
        v6 = "sourceIPv6Address" in r
        return (str(r["sourceIPv6Address" if v6 else "sourceIPv4Address"]),
                str(r["destinationIPv6Address" if v6 else "destinationIPv4Address"]),
                r["sourceTransportPort"], r["destinationTransportPort"], r["packetDeltaCount"])

    def test_end_reason_class_of_service_and_direction(self):
        path, _, js = self.fields_run("fields.ipfix")
        recs = self.read_records(path)
        self.assertEqual(len(recs), len(js))
        got = collections.defaultdict(list)
        for r in recs:
            got[self.ipfix_key(r)[:4]].append(r)
        want = {  # (sip, dip, sp, dp): [(flowEndReason, biflowDirection, tos, reverse tos)]
            ("10.5.0.1", "10.5.0.2", 41000, 80): [(3, 1, 0x28, 0x0a)],
            ("10.5.0.3", "10.5.0.4", 5000, 53): [(1, 0, 0x10, 0x04)],
            ("10.5.0.2", "10.5.0.3", 443, 42000): [(1, 2, 0, 0)],
            ("2001:db8::1", "2001:db8::2", 6000, 6001): [(2, 0, 0x20, 0x21), (2, 0, 0x24, 0x25),
                                                        (4, 0, 0x28, 0)],
            ("2001:db8::a", "2001:db8::b", 7000, 7001): [(4, 0, 0, 0)],
        }
        self.assertEqual(set(got), set(want))
        for k, rs in got.items():
            rs.sort(key=lambda r: utc_seconds(r["flowStartMilliseconds"]))
            self.assertEqual([(r["flowEndReason"], r["biflowDirection"], r["ipClassOfService"],
                               r["reverseIpClassOfService"]) for r in rs], want[k], k)
        # Every record is one of the JSON records (counters, and continuation for parts).
        by_json = collections.Counter((j["sip"], j["dip"], j["sp"] or 0, j["dp"] or 0,
                                       j["pkt_fwd"]) for j in js)
        self.assertEqual(collections.Counter(self.ipfix_key(r) for r in recs), by_json)
        # ipfixDump names every element (CESNET's from the element file) without a warning.
        d = subprocess.run(["ipfixDump", "-e", ELEMENTS_XML, "-i", path], capture_output=True,
                           timeout=60)
        out = d.stdout.decode()
        self.assertEqual((d.returncode, d.stderr), (0, b""))
        self.assertNotIn("warning", out.lower())
        for name in ("ipClassOfService", "reverseIpClassOfService", "flowEndReason",
                     "biflowDirection", "flowLabelIPv6", "reverseFlowLabelIPv6",
                     "scitagExperimentID", "scitagExperimentAct"):
            self.assertIn(name, out)
        # Without the element file ipfixDump still reads every record.
        d = subprocess.run(["ipfixDump", "-i", path], capture_output=True, timeout=60)
        self.assertEqual((d.returncode, d.stderr), (0, b""))
        self.assertEqual(d.stdout.decode().count("--- data record"), len(js))

    def test_scitags_marking_as_cesnet_elements(self):
        path, data, js = self.fields_run("scitags.ipfix")
        marked = [j for j in js if j["scitags_experiment"] is not None]
        self.assertEqual([(j["sip"], j["scitags_experiment"], j["scitags_activity"])
                          for j in marked], [("2001:db8::a", 300, 17)])
        recs = self.read_records(path)
        v6 = [r for r in recs if "sourceIPv6Address" in r]
        self.assertTrue(v6)
        for r in v6:
            mark = (300, 17) if str(r["sourceIPv6Address"]) == "2001:db8::a" else (0, 0)
            self.assertEqual((r["scitagExperimentID"], r["scitagExperimentAct"]), mark, r)
        for r in recs:
            if "sourceIPv4Address" in r:
                self.assertNotIn("scitagExperimentID", r)
        # In the templates: enterprise bit, PEN 8057, ids 1200 (2 octets) and 1201 (1 octet).
        raw = raw_records(data)
        sci = [r for r in raw if (8057, 1200) in r]
        self.assertEqual(len(sci), len(v6))
        self.assertTrue(all(len(r[(8057, 1200)]) == 2 and len(r[(8057, 1201)]) == 1
                            for r in sci))
        # Without the scitags chain: no Scitags elements.
        run("-r", self.fields_pcap, "--ipfix", path)
        with open(path, "rb") as f:
            self.assertFalse(any((8057, 1200) in r for r in raw_records(f.read())))

    def test_nanosecond_times(self):
        path, data, js = self.fields_run("ns.ipfix", "--ipfix-times", "ns")
        raw = raw_records(data)
        self.assertEqual(len(raw), len(js))
        got = collections.Counter()
        for r in raw:
            self.assertNotIn((0, 152), r)
            got[(ntp_to_ns(int.from_bytes(r[(0, 156)], "big")),
                 ntp_to_ns(int.from_bytes(r[(0, 157)], "big")),
                 int.from_bytes(r[(0, 2)], "big"))] += 1
        want = collections.Counter((json_ns(j["first"]), json_ns(j["last"]), j["pkt_fwd"])
                                   for j in js)
        self.assertEqual(got, want)
        # Not all on a millisecond: the nanoseconds are the capture's.
        self.assertTrue(any(t % 1_000_000 for t, _, _ in got))
        # python3-ipfix reads them as times, to the microsecond (its datetime's resolution).
        # Its 0.9.7 decoder takes NTP seconds for Unix seconds (no 1900 -> 1970 offset): the
        # difference is either 0 or those 2208988800 s, the sub-second part the same.
        recs = self.read_records(path)
        for r in recs:
            self.assertIn("flowStartNanoseconds", r)
            self.assertNotIn("flowStartMilliseconds", r)
        starts = sorted(decimal.Decimal(str(utc_seconds(r["flowStartNanoseconds"])))
                        for r in recs)
        first = decimal.Decimal(min(json_ns(j["first"]) for j in js)) / 10**9
        self.assertIn(round(starts[0] - first), (0, 2208988800))
        self.assertLess(abs(starts[0] - first - round(starts[0] - first)),
                        decimal.Decimal("0.000002"))
        # ipfixDump reads and names them (it prints the whole seconds, its fraction as 0).
        d = subprocess.run(["ipfixDump", "-e", ELEMENTS_XML, "-i", path], capture_output=True,
                           timeout=60)
        out = d.stdout.decode()
        self.assertEqual((d.returncode, d.stderr), (0, b""))
        self.assertNotIn("warning", out.lower())
        second = datetime.datetime.fromtimestamp(int(first), datetime.timezone.utc)
        self.assertIn("flowStartNanoseconds : " + second.strftime("%Y-%m-%d %H:%M:%S"), out)
        r = run("-r", self.fields_pcap, "--ipfix", path, "--ipfix-times", "us", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"--ipfix-times us", r.stderr)

    def test_nfcapd_receives_udp_export(self):
        """nfcapd (nfdump 1.7) gets the export over UDP on loopback; nfdump shows every flow
        with the JSON record's forward and reverse packets and octets (nfdump maps RFC 5103's
        reverse packets and octets to its 'out' counters). Also with every optional element
        (the scitags chain's labels and CESNET elements, nanosecond times)."""
        for n, args in enumerate(([], ["--chains", "tcp,scitags", "--ipfix-times", "ns"])):
            with self.subTest(args=args):
                self.nfcapd_run(f"nfcapd{n}", args)

    def nfcapd_run(self, name, args):
        nfdir = os.path.join(self.dir, name)
        os.mkdir(nfdir)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        log = open(os.path.join(self.dir, name + ".log"), "w+")
        nf = subprocess.Popen(["nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", nfdir],
                              stdout=log, stderr=subprocess.STDOUT)
        try:
            self.assertTrue(wait_for(lambda: udp_rx_queue(port) is not None, 10),
                            "nfcapd did not bind its port")
            run("-r", self.pcap, "--ipfix", f"udp://127.0.0.1:{port}", *args)
            # nfcapd has read every datagram when its socket's receive queue is empty.
            self.assertTrue(wait_for(lambda: udp_rx_queue(port) == 0, 10))
        finally:
            nf.terminate()
            nf.wait(timeout=10)
        log.seek(0)
        log_text = log.read()
        log.close()
        self.assertIn("Sequence Errors: 0", log_text)
        files = [f for f in os.listdir(nfdir) if f.startswith("nfcapd.")]
        self.assertEqual(len(files), 1, files)
        out = subprocess.run(["nfdump", "-q", "-o", "csv", "-r", os.path.join(nfdir, files[0])],
                             capture_output=True, timeout=60, check=True).stdout.decode()
        rows = {}
        for line in out.splitlines():
            f = line.split(",")
            if len(f) < 15:
                continue
            rows[(f[3], f[4])] = tuple(int(x) for x in (f[11], f[12], f[13], f[14]))
        expected = {(str(ipaddress.ip_address(j["sip"])), str(ipaddress.ip_address(j["dip"]))):
                    (j["pkt_fwd"], j["oct_fwd"], j["pkt_rev"], j["oct_rev"]) for j in self.json}
        self.assertEqual(rows, expected)

    def test_tshark_cflow_decodes_without_expert_info(self):
        """tshark's CFLOW dissector decodes the messages (each in a UDP datagram to port 4739,
        as the export sends them) with no malformed packet and no expert info."""
        for args in ([], ["--ipfix-uniflow"], ["--ipfix-max-message", "512"],
                     ["--chains", "tcp,scitags", "--ipfix-times", "ns"],
                     ["--chains", "tcp,scitags", "--ipfix-uniflow", "--ipfix-max-message",
                      "512"]):
            path = os.path.join(self.dir, "tshark.ipfix")
            run("-r", self.pcap, "--ipfix", path, *args)
            with open(path, "rb") as f:
                data = f.read()
            frames, off = [], 0
            while off < len(data):
                length = struct.unpack_from("!H", data, off + 2)[0]
                frames.append(Ether() / IP(src="127.0.0.1", dst="127.0.0.1")
                              / UDP(sport=40000, dport=4739) / Raw(data[off:off + length]))
                off += length
            pcap = os.path.join(self.dir, "tshark.pcap")
            wrpcap(pcap, frames)
            tshark = ["tshark", "-r", pcap, "-d", "udp.port==4739,cflow"]
            expert = subprocess.run(tshark + ["-q", "-z", "expert"], capture_output=True,
                                    timeout=120, check=True).stdout.decode()
            for word in ("Malformed", "Errors", "Warns", "Notes"):
                self.assertNotIn(word, expert, (args, expert))
            verbose = subprocess.run(tshark + ["-V"], capture_output=True, timeout=120,
                                     check=True).stdout.decode()
            self.assertNotIn("Malformed", verbose)
            if "--ipfix-uniflow" not in args:
                self.assertIn("PEN: IPFIX Reverse Information Element Private Enterprise "
                              "(29305)", verbose)
            flows = len(re.findall(r"^\s+Packets: \d+$", verbose, re.M))
            n = len(self.json) + (sum(1 for j in self.json if j["pkt_rev"])
                                  if "--ipfix-uniflow" in args else 0)
            self.assertEqual(flows, n, args)

    def test_workers_give_the_same_records(self):
        """--workers 2 and 3: the same IPFIX records (as a multiset) as one worker."""
        def records(path):
            return collections.Counter(
                tuple(sorted((k, str(v)) for k, v in r.items())) for r in self.read_records(path))
        one = records(self.ipfix)
        self.assertEqual(sum(one.values()), len(self.json))
        for n in ("2", "3"):
            path = os.path.join(self.dir, f"workers{n}.ipfix")
            run("-r", self.pcap, "--ipfix", path, "--workers", n)
            self.assertEqual(records(path), one, f"--workers {n}")

    def records_multiset(self, path):
        return collections.Counter(
            tuple(sorted((k, str(v)) for k, v in r.items())) for r in self.read_records(path))

    def test_tcp_collector_gets_the_file_export(self):
        """tcp://: one connection; its bytes read by ipfixDump (no warning) and python3-ipfix
        give the records of the file export; --stats tells the connection."""
        c = TcpCollector()
        try:
            r = run("-r", self.pcap, "--ipfix", f"tcp://127.0.0.1:{c.port}", "--stats",
                    "--observation-domain", "4242")
            self.assertTrue(c.wait_closed(1), "the export did not close its connection")
        finally:
            c.close()
        self.assertEqual(len(c.sessions), 1)
        path = os.path.join(self.dir, "tcp.ipfix")
        with open(path, "wb") as f:
            f.write(c.sessions[0])
        self.assertEqual(self.records_multiset(path), self.records_multiset(self.ipfix))
        d = subprocess.run(["ipfixDump", "-i", path], capture_output=True, timeout=60)
        self.assertEqual((d.returncode, d.stderr), (0, b""))
        self.assertNotIn("warning", d.stdout.decode().lower())
        self.assertIn(f"{len(self.json)} Data Records", d.stdout.decode())
        err = r.stderr.decode()
        self.assertIn(f"records {len(self.json)},", err)
        self.assertIn("connections 1, reconnects 0, records dropped 0, not delivered 0", err)
        # The templates-only message first, then the file's messages.
        msgs = messages(c.sessions[0])
        self.assertEqual(msgs[0][5], 0)
        self.assertEqual(sum(m[5] for m in msgs), len(self.json))

    def test_tcp_collector_started_late(self):
        """The collector starts after the export told it could not connect: the records
        waited in the buffer and arrive, templates first; exit 0."""
        port = free_tcp_port()
        p = subprocess.Popen([FLOWMARK, "observe", "-r", self.pcap, "--ipfix",
                              f"tcp://127.0.0.1:{port}", "--ipfix-timeout", "30", "--stats"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            first = p.stderr.readline().decode()
            self.assertIn("cannot connect", first)
            self.assertIn("trying again", first)
            c = TcpCollector(port)
            try:
                out, err = p.communicate(timeout=60)
                self.assertTrue(c.wait_closed(1))
            finally:
                c.close()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        path = os.path.join(self.dir, "late.ipfix")
        with open(path, "wb") as f:
            f.write(c.sessions[0])
        self.assertEqual(len(self.read_records(path)), len(self.json))
        msgs = messages(c.sessions[0])
        self.assertEqual(msgs[0][5], 0, "a templates-only message first")
        self.assertIn("connections 1, reconnects 0", err.decode())

    def test_tcp_collector_never_up(self):
        """No collector, a small buffer: the messages beyond it are dropped, the rest not
        delivered after --ipfix-timeout; told on standard error, exit code 1, no hang."""
        port = free_tcp_port()
        t0 = time.monotonic()
        r = run("-r", self.pcap, "--ipfix", f"tcp://127.0.0.1:{port}", "--ipfix-max-message",
                "512", "--ipfix-buffer", "600", "--ipfix-timeout", "0.5", check=False)
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertLess(took, 10)
        m = re.search(rb"(\d+) records not delivered \((\d+) dropped with the buffer full, "
                      rb"(\d+) still buffered", r.stderr)
        self.assertIsNotNone(m, r.stderr)
        self.assertEqual(int(m.group(1)), len(self.json))
        self.assertGreater(int(m.group(2)), 0)
        self.assertEqual(int(m.group(2)) + int(m.group(3)), len(self.json))

    def test_errors(self):
        r = run("-r", self.pcap, "--ipfix", os.path.join(self.dir, "no", "such", "dir"),
                check=False)
        self.assertEqual(r.returncode, 74, r.stderr)
        self.assertIn(b"cannot open for writing", r.stderr)
        r = run("-r", self.pcap, "--ipfix", "-", "--format", "jsonl", check=False)
        self.assertEqual(r.returncode, 2)
        r = run("-r", self.pcap, "--ipfix", "x", "--ipfix-max-message", "100", check=False)
        self.assertEqual(r.returncode, 2)
        for target in ("tcp://", "tcp://127.0.0.1:70000", "tpc://127.0.0.1:4739"):
            r = run("-r", self.pcap, "--ipfix", target, check=False)
            self.assertEqual(r.returncode, 2, (target, r.stderr))
            self.assertIn(f"--ipfix {target}: expected".encode(), r.stderr)
        r = run("-r", self.pcap, "--ipfix", "tcp://127.0.0.1:1", "--ipfix-timeout", "-1",
                check=False)
        self.assertEqual(r.returncode, 2)



if __name__ == "__main__":
    unittest.main(verbosity=2)
