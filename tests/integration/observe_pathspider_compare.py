#!/usr/bin/python3
"""`flowmark observe --chains all` against pathspider 2.0.1's own chains, on pathspider's
own test captures.

    /usr/bin/python3 tests/integration/observe_pathspider_compare.py BUILD_DIR [unittest options]

BUILD_DIR holds the `flowmark` binary. Needs Debian's pathspider (its chains, its Observer
and its captures in /usr/lib/python3/dist-packages/pathspider/tests/data), python3-libtrace
(which pathspider uses to decode packets) and python3-scapy (to read the captures): hence
/usr/bin/python3. Each test skips, saying why, when one of them is missing. No network, no
root.

How pathspider's records are made. pathspider's Observer reads captures through
python-libtrace's plt.trace(), which cannot open a file on Python 3.11 (its URI argument is
parsed with "s#" without PY_SSIZE_T_CLEAN: "Expected a string for URI"). Everything else of
python-libtrace works, so only the trace is replaced: a stand-in `plt` module whose trace()
yields the capture's frames, read with scapy, and whose packet() offers what the Observer
reads of a packet (ip, ip6, icmp, icmp6, tcp, udp, seconds). The IP objects are real
python-libtrace objects, made with plt.ip()/plt.ip6() from the frame's bytes after the link
header: exactly the bytes (and length) plt.packet().ip would cover, Ethernet padding
included. pathspider's Observer class then runs unmodified — its flow ids with ICMP
quotations, forward/reverse lookup, completion, idle and expiry timers on the packet clock,
the short-circuit of chain verdicts — and so do its chain classes (pathspider.chains.*),
except for the three thin wrappers below, which are the deviations CHAINS.md lists.

The run compared with flowmark ("reference"):
- chains: basic ecn dscp evil icmp mss tfo udp tcp. pathspider stops calling a packet's
  remaining chain functions once one says the flow is complete (keep_flow and fn(...)); with
  the completing chain (tcp) last in its layer every function sees every packet, as
  flowmark's chains do. The order is a pathspider user's choice (plugins list their chains).
- EvilChain.ip4 returns None (flow complete) on every data packet after the first one a way:
  CHAINS.md deviation, flowmark never completes on it; the wrapper returns True instead (the
  fields are EvilChain's own).
- MSS/TFO option walk: pathspider's tcp_options() loops forever on an option length 0 and
  raises IndexError on a missing length byte, TFOChain raises KeyError on option 255 without
  254 and reads 254's data for 255 (CHAINS.md deviations). The wrappers skip such a SYN (the
  flow's mss_* / tfo_* fields are then not compared, and counted) and let every other
  segment through to the chain.

Two more runs and a probe explain what differs:
- IpLengthProbe (not a pathspider chain; it only adds "_iplen_*" to the record) sums the IP
  total lengths beside BasicChain's octets. python-libtrace's ip.size is the captured length
  after the link header (python-libtrace's plt_get_ip hands over libtrace's l3 remainder, and
  libtrace 3 does not clip it to the IP total length): pathspider's oct_* count Ethernet
  padding and, for a frame cut short by the snap length, only what was captured. flowmark
  counts IP total lengths (CHAINS.md). An oct_* difference is "ip.size" only when flowmark's
  value is the probe's.
- "trimmed": the reference run with every frame cut to its IP length. python-libtrace's TCP
  payload covers the padding too (so a padded pure ACK has "payload" for dscp/evil, and
  tfo_dlen counts padding); such a difference is "padding" only when the trimmed run has
  flowmark's value.
- "faithful": pathspider's chain order as CHAINS.md lists them (tcp first) and EvilChain
  unwrapped; records that differ from the reference run are counted per capture
  ("faithful-order": evil completion splits flows, and once EvilChain has said "complete"
  the TCP chain no longer sees that packet), not compared with flowmark.

Matching: records by (sip, dip, proto, sp, dp) and first packet time. Fields compared: sip
dip proto sp dp first last (pathspider's pkt_first/pkt_last, 2 µs) pkt_* oct_* and every
field of tcp ecn dscp mss tfo udp icmp evil. Accepted differences, each counted by kind in
the per-capture summary (and, but for the two frequent CHAINS.md ones, printed with their
values):
- CHAINS.md deviations: tcp_fin_* swapped (flowmark's tcp_fin_fwd is compared with
  pathspider's tcp_fin_rev, "tcp-fin-swap" counts where it matters); MSS data longer than 4
  bytes ("mss-long"); the option-walk and TFO-255 cases above; evil completion.
- ip.size and padding, as above (README: "pathspider's include the Ethernet padding").
- late-frame: a frame stamped behind the packet clock counts at the clock in flowmark
  (observer.hpp), at its own stamp in pathspider: first/last differ by that much.
- Flow splitting. flowmark starts a new record for a TCP SYN without ACK on a completed flow
  ("split-syn"; pathspider adds it to the expiring record) and emits an idle flow at once
  ("split-idle"; pathspider first moves it to its expiring table for expiry_timeout, where
  packets still join it, and its timers run on whole-second bins). Records of one flow that
  do not pair up are accepted only when both sides hold the same packets and IP octets in
  all and every record start found on one side only is at a packet that is a SYN (flowmark)
  or comes at least idle_timeout - 1 s after the flow's previous packet.
Anything else fails the test, naming capture, flow, field and both values.

pathspider's captures contain none of the malformed-option, long-MSS, TFO-255, SYN-after-
completion or padded-payload cases, so CraftedDeviations builds a capture with one flow of
each (and an ICMP port unreachable) and checks that they are found and explained;
ComparisonCanFail checks that a changed value, a missing field, a swapped direction or a
missing record is reported.
"""

import collections
import ipaddress
import json
import logging
import os
import queue
import subprocess
import sys
import types
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: observe_pathspider_compare.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ksft import main  # noqa: E402

PATHSPIDER_DATA = "/usr/lib/python3/dist-packages/pathspider/tests/data"

MISSING = None
try:
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.utils import RawPcapReader
except ImportError as e:
    MISSING = f"needs Debian's python3-scapy, run with /usr/bin/python3 ({e})"
if MISSING is None:
    try:
        import plt as REAL_PLT
    except ImportError as e:
        MISSING = f"needs Debian's python3-libtrace (pathspider decodes with it) ({e})"
if MISSING is None:
    try:
        from pathspider.base import SHUTDOWN_SENTINEL
        from pathspider.chains.basic import BasicChain
        from pathspider.chains.dscp import DSCPChain
        from pathspider.chains.ecn import ECNChain
        from pathspider.chains.evil import EvilChain
        from pathspider.chains.icmp import ICMPChain
        from pathspider.chains.mss import MSSChain
        from pathspider.chains.tcp import TCPChain
        from pathspider.chains.tfo import TFOChain
        from pathspider.chains.udp import UDPChain
        from pathspider.observer import Observer
    except ImportError as e:
        MISSING = f"needs Debian's pathspider 2.0.1 (its chains and Observer) ({e})"
if MISSING is None:
    try:
        import importlib.metadata
        _version = importlib.metadata.version("pathspider")
    except importlib.metadata.PackageNotFoundError:
        _version = "unknown"
    if _version != "2.0.1":  # the chains' semantics (and CHAINS.md's deviations) are 2.0.1's
        MISSING = f"compares with pathspider 2.0.1's chains; pathspider {_version} is installed"
if MISSING is not None:  # the wrapper classes below still need their bases to be defined
    EvilChain = MSSChain = TFOChain = object
if MISSING is None and not os.path.isdir(PATHSPIDER_DATA):
    MISSING = f"pathspider's test captures are not in {PATHSPIDER_DATA}"

# ---- captures → frames -------------------------------------------------------------------

Frame = collections.namedtuple("Frame", "ts_ns version l3 padding")


def read_frames(path):
    """Every frame of a pcap/pcapng: time (ns), IP version (None: not IP), the bytes from the
    IP header to the end of the frame (what libtrace's layer 3 covers) and how many of them
    lie past the IP length (Ethernet padding)."""
    frames = []
    reader = RawPcapReader(path)
    nano = getattr(reader, "nano", False)
    for data, meta in reader:
        if hasattr(meta, "tsresol"):  # pcapng
            ticks = (meta.tshigh << 32) | meta.tslow
            ts_ns = ticks * 1_000_000_000 // meta.tsresol
            linktype = meta.linktype
        else:
            ts_ns = meta.sec * 1_000_000_000 + meta.usec * (1 if nano else 1000)
            linktype = reader.linktype
        version, l3 = None, b""
        if linktype == 1:  # Ethernet, VLAN tags skipped as libtrace does
            off, et = 14, int.from_bytes(data[12:14], "big")
            while et in (0x8100, 0x88A8, 0x9100) and len(data) >= off + 4:
                et, off = int.from_bytes(data[off + 2:off + 4], "big"), off + 4
            version = {0x0800: 4, 0x86DD: 6}.get(et)
            l3 = data[off:]
        elif linktype in (101, 12, 14, 228, 229):  # raw IP
            l3 = data
            version = {4: 4, 6: 6}.get(data[0] >> 4) if data else None
        elif linktype == 113:  # Linux cooked
            version = {0x0800: 4, 0x86DD: 6}.get(int.from_bytes(data[14:16], "big"))
            l3 = data[16:]
        padding = 0
        if version == 4 and len(l3) >= 4:
            padding = max(0, len(l3) - int.from_bytes(l3[2:4], "big"))
        elif version == 6 and len(l3) >= 6:
            padding = max(0, len(l3) - 40 - int.from_bytes(l3[4:6], "big"))
        frames.append(Frame(ts_ns, version, bytes(l3), padding))
    reader.close()
    return frames


# ---- the stand-in for python-libtrace's trace and packet ----------------------------------


class _Ip:
    """A real plt.ip / plt.ip6 object plus the packet time (plt's own comes from the packet)."""

    __slots__ = ("_obj", "seconds")

    def __init__(self, obj, seconds):
        self._obj = obj
        self.seconds = seconds

    def __getattr__(self, name):
        return getattr(self._obj, name)


class _Packet:
    """What pathspider's Observer reads of a plt.packet()."""

    def __init__(self):
        self.load(None)

    def load(self, frame):
        self.ip = self.ip6 = self.icmp = self.icmp6 = self.tcp = self.udp = None
        self.seconds = 0.0
        if frame is None:
            return
        self.seconds = frame.ts_ns / 1e9
        if frame.version == 4:
            self.ip = _Ip(REAL_PLT.ip(bytearray(frame.l3)), self.seconds)
            inner = self.ip
            self.icmp = inner.icmp
        elif frame.version == 6:
            self.ip6 = _Ip(REAL_PLT.ip6(bytearray(frame.l3)), self.seconds)
            inner = self.ip6
            self.icmp6 = inner.icmp6
        else:
            return
        self.tcp = inner.tcp
        self.udp = inner.udp


_FRAMES_BY_URI = {}


class _Trace:
    """plt.trace(uri) over frames registered in _FRAMES_BY_URI."""

    def __init__(self, uri):
        self._frames = iter(_FRAMES_BY_URI[uri])

    def start(self):
        pass

    def read_packet(self, pkt):
        frame = next(self._frames, None)
        if frame is None:
            return False
        pkt.load(frame)
        return True

    def pkt_drops(self):
        return 0


def _install_plt_stand_in():
    shim = types.ModuleType("plt")
    shim.trace = _Trace
    shim.packet = _Packet
    shim.__getattr__ = lambda name: getattr(REAL_PLT, name)
    sys.modules["plt"] = shim


# ---- the deviation wrappers ---------------------------------------------------------------


def option_walk_trouble(tcp):
    """How pathspider's tcp_options() goes wrong on this segment's options: None, or
    (fatal, reason); fatal: it never returns (length 0) or raises (no length byte)."""
    opts = bytes(tcp.data[20:tcp.doff * 4])
    cp, trouble = 0, None
    while cp < len(opts):
        if opts[cp] == 1:
            cp += 1
            continue
        if opts[cp] == 0:
            break
        if cp + 1 >= len(opts):
            return (True, "option without length byte (pathspider: IndexError)")
        if opts[cp + 1] == 0:
            return (True, "option length 0 (pathspider: endless loop)")
        if opts[cp + 1] == 1:
            trouble = (False, "option length 1 (pathspider walks on, flowmark stops)")
        cp += opts[cp + 1]
    return trouble


def tfo_255_trouble(tcp):
    """Option 255 with the TFO ExID and no option 34 / 254-TFO: pathspider reads 254's data."""
    opts = {}
    data = bytes(tcp.data[20:tcp.doff * 4])
    cp = 0
    while cp < len(data):
        if data[cp] == 1:
            cp += 1
            continue
        if data[cp] == 0 or cp + 1 >= len(data) or data[cp + 1] < 2:
            break
        opts[data[cp]] = data[cp + 2:cp + data[cp + 1]]
        cp += data[cp + 1]
    if 34 in opts or (254 in opts and opts[254][:2] == b"\xf9\x89"):
        return None
    if 255 in opts and opts[255][:2] == b"\xf9\x89":
        return "TFO option 255 (pathspider reads option 254's data or raises KeyError)"
    return None


class EvilNeverCompletes(EvilChain):
    """EvilChain whose ip4 never completes the flow (CHAINS.md evil deviation)."""

    def ip4(self, rec, ip, rev):
        if EvilChain.ip4(self, rec, ip, rev) is None:
            rec["_evil_would_complete"] = True
        return True


class GuardedMSS(MSSChain):
    def tcp(self, rec, tcp, rev):
        if tcp.syn_flag:
            trouble = option_walk_trouble(tcp)
            if trouble:
                rec.setdefault("_skip_mss", trouble[1])
                if trouble[0]:
                    return True
        return MSSChain.tcp(self, rec, tcp, rev)


class GuardedTFO(TFOChain):
    def tcp(self, rec, tcp, rev):
        if tcp.syn_flag:
            trouble = option_walk_trouble(tcp)
            if trouble:
                rec.setdefault("_skip_tfo", trouble[1])
                if trouble[0]:
                    return True
            trouble = tfo_255_trouble(tcp)
            if trouble and (not tcp.ack_flag or rec["tfo_synkind"]):
                rec.setdefault("_skip_tfo", trouble)
                return True
        return TFOChain.tcp(self, rec, tcp, rev)


class IpLengthProbe:
    """Not a pathspider chain: sums the IP total lengths per direction beside BasicChain's
    octets (python-libtrace's ip.size, the captured length), to tell the two apart."""

    def new_flow(self, rec, ip):
        rec["_iplen_fwd"] = rec["_iplen_rev"] = 0
        return True

    def ip4(self, rec, ip, rev):
        rec["_iplen_rev" if rev else "_iplen_fwd"] += ip.pkt_len
        return True

    def ip6(self, rec, ip, rev):
        rec["_iplen_rev" if rev else "_iplen_fwd"] += 40 + ip.payload_len
        return True


REFERENCE_CHAINS = None
FAITHFUL_CHAINS = None
if MISSING is None:
    REFERENCE_CHAINS = [IpLengthProbe, BasicChain, ECNChain, DSCPChain, EvilNeverCompletes,
                        ICMPChain, GuardedMSS, GuardedTFO, UDPChain, TCPChain]
    FAITHFUL_CHAINS = [IpLengthProbe, BasicChain, TCPChain, ECNChain, DSCPChain, GuardedMSS,
                       GuardedTFO, UDPChain, ICMPChain, EvilChain]
    _install_plt_stand_in()


def run_pathspider(name, frames, chains, trim=False):
    """pathspider's Observer over the frames; its records, in emission order."""
    if trim:
        frames = [f._replace(l3=f.l3[:len(f.l3) - f.padding], padding=0) for f in frames]
    uri = f"pcapfile:{name}#{id(frames)}"
    _FRAMES_BY_URI[uri] = frames
    try:
        observer = Observer(uri, chains=chains)
        out = queue.Queue()
        observer.run_flow_enqueuer(out)
    finally:
        del _FRAMES_BY_URI[uri]
    records = []
    while True:
        rec = out.get_nowait()
        if rec == SHUTDOWN_SENTINEL:
            break
        records.append(rec)
    return records, observer


# ---- flowmark ------------------------------------------------------------------------------


def run_flowmark(path, chains="all"):
    proc = subprocess.run([FLOWMARK, "observe", "-r", path, "--chains", chains,
                           "--format", "jsonl"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"flowmark observe -r {path} --chains {chains} exited "
                             f"{proc.returncode}: {proc.stderr.strip()}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


# ---- comparison ----------------------------------------------------------------------------

from observe_fields import CHAIN_FIELDS as ALL_CHAIN_FIELDS  # noqa: E402

BASIC_FIELDS = ["sip", "dip", "proto", "sp", "dp", "pkt_fwd", "pkt_rev", "oct_fwd", "oct_rev"]
TIME_FIELDS = [("first", "pkt_first"), ("last", "pkt_last")]
# pathspider's chains: every one of flowmark's but scitags.
CHAIN_FIELDS = {c: f for c, f in ALL_CHAIN_FIELDS.items() if c != "scitags"}
ALL_CHAINS = list(CHAIN_FIELDS)
# pathspider's TCPChain sets tcp_fin_fwd on a reverse FIN and tcp_fin_rev on a forward one
# (CHAINS.md deviation): flowmark's field is compared with pathspider's other one.
PATHSPIDER_NAME = {"tcp_fin_fwd": "tcp_fin_rev", "tcp_fin_rev": "tcp_fin_fwd"}
TIME_TOLERANCE = 2e-6  # s: pathspider's times are doubles, flowmark prints nanoseconds


IDLE_TIMEOUT = 30  # s: pathspider's Observer default, flowmark's --idle-timeout default
PORT_PROTOCOLS = (6, 17, 132, 136)  # pathspider's protos_with_ports


def packet_index(frames):
    """group_key → [(time, is a TCP SYN without ACK)] of the flow's own packets, in order."""
    index = collections.defaultdict(list)
    for f in frames:
        b = f.l3
        if f.version == 4 and len(b) >= 20:
            hl, proto, src, dst = (b[0] & 15) * 4, b[9], b[12:16], b[16:20]
            first_fragment = int.from_bytes(b[6:8], "big") & 0x1FFF == 0
        elif f.version == 6 and len(b) >= 40:
            hl, proto, src, dst, first_fragment = 40, b[6], b[8:24], b[24:40], True
        else:
            continue
        sp = dp = None
        syn = False
        if proto in PORT_PROTOCOLS and first_fragment and len(b) >= hl + 4:
            sp, dp = int.from_bytes(b[hl:hl + 2], "big"), int.from_bytes(b[hl + 2:hl + 4], "big")
            if proto == 6 and len(b) >= hl + 14:
                syn = b[hl + 13] & 0x12 == 0x02
        rec = {"sip": str(ipaddress.ip_address(src)), "dip": str(ipaddress.ip_address(dst)),
               "proto": proto, "sp": sp, "dp": dp}
        index[group_key(rec)].append((f.ts_ns / 1e9, syn))
    return index


def _addr(text):
    return ipaddress.ip_address(text)


def oriented_key(rec):
    return (_addr(rec["sip"]), _addr(rec["dip"]), rec["proto"], rec.get("sp"), rec.get("dp"))


def group_key(rec):
    a = (_addr(rec["sip"]), rec.get("sp"))
    b = (_addr(rec["dip"]), rec.get("dp"))
    return (rec["proto"],) + tuple(sorted([a, b], key=lambda e: (e[0].version, e[0], e[1] or 0)))


def _first(rec):
    return rec["first"] if "first" in rec else rec["pkt_first"]


def _show(key):
    sip, dip, proto, sp, dp = key
    ports = f" {sp} > {dp}" if sp is not None else ""
    return f"{sip} > {dip} proto {proto}{ports}"


def _find(records, rec, late=()):
    """The record of `records` with rec's oriented key and first time, or None. With `late`,
    rec is flowmark's and its time may be the one flowmark gives a late frame (_time_match)."""
    key, first = oriented_key(rec), _first(rec)
    for other in records:
        if oriented_key(other) == key and _time_match(first, _first(other), late):
            return other
    return None


class RecordIndex:
    """Records by oriented key, for _find without a scan of every record."""

    def __init__(self, records):
        self.by_key = collections.defaultdict(list)
        for rec in records:
            self.by_key[oriented_key(rec)].append(rec)

    def find(self, rec, late=()):
        return _find(self.by_key.get(oriented_key(rec), []), rec, late)


def _time_match(ours, theirs, late=()):
    """None when two times differ, else how they match: "exact", or "late" when `ours` is the
    packet-clock time flowmark gives a late frame stamped `theirs` (late: (stamp, clock)
    pairs in seconds)."""
    if abs(ours - theirs) <= TIME_TOLERANCE:
        return "exact"
    for stamp, clock in late:
        if abs(stamp - theirs) <= TIME_TOLERANCE and abs(clock - ours) <= TIME_TOLERANCE:
            return "late"
    return None


class Comparison:
    """flowmark's records of one capture against pathspider's (see the module docstring)."""

    def __init__(self, name, chains):
        self.name = name
        self.chains = chains
        self.records = 0
        self.fields = 0
        self.kinds = collections.Counter()
        self.problems = []
        self.notes = []

    def run(self, path, flowmark_records):
        frames = read_frames(path)
        # Frames stamped behind the packet clock (the largest stamp so far): flowmark counts
        # them at the clock (observer.hpp), pathspider at their own stamp.
        self.late, clock = [], 0
        for f in frames:
            if f.ts_ns < clock:
                self.late.append((f.ts_ns / 1e9, clock / 1e9))
            clock = max(clock, f.ts_ns)
        ref, _ = run_pathspider(path, frames, REFERENCE_CHAINS)
        trimmed, _ = run_pathspider(path, frames, REFERENCE_CHAINS, trim=True)
        trimmed = RecordIndex(trimmed)
        faithful, _ = run_pathspider(path, frames, FAITHFUL_CHAINS)
        self._faithful_effects(ref, faithful)

        groups = collections.defaultdict(lambda: ([], []))
        for rec in ref:
            groups[group_key(rec)][0].append(rec)
        for rec in flowmark_records:
            groups[group_key(rec)][1].append(rec)
        self.packets = packet_index(frames)
        for key, (ps_recs, fm_recs) in groups.items():
            unmatched_ps, unmatched_fm, split_ps, split_fm = list(ps_recs), [], [], []
            for fm in fm_recs:
                ps = _find(unmatched_ps, fm, self.late)
                if ps is None:
                    unmatched_fm.append(fm)
                    continue
                unmatched_ps.remove(ps)
                if (ps["pkt_fwd"], ps["pkt_rev"]) == (fm["pkt_fwd"], fm["pkt_rev"]) and \
                        _time_match(fm["last"], ps["pkt_last"], self.late):
                    self._compare(ps, fm, trimmed.find(ps))
                else:  # the same start, not the same packets: another boundary later
                    split_ps.append(ps)
                    split_fm.append(fm)
            if unmatched_ps or unmatched_fm or split_ps:
                self._split(key, ps_recs, fm_recs, split_ps + unmatched_ps, split_fm + unmatched_fm)
        return self

    # -- matched records

    def _compare(self, ps, fm, ps_trimmed):
        self.records += 1
        flow = _show(oriented_key(fm))
        if ps.get("_evil_would_complete"):
            self.kinds["evil-completion (pathspider would complete the flow)"] += 1
        for ours, theirs in TIME_FIELDS:
            self.fields += 1
            how = _time_match(fm[ours], ps[theirs], self.late)
            if how is None:
                self.problems.append(f"{flow}: {ours}: pathspider {ps[theirs]!r}, "
                                     f"flowmark {fm[ours]!r}")
            elif how == "late":
                self.kinds["late-frame (stamped behind the packet clock: flowmark uses the "
                           "clock)"] += 1
                self.notes.append(f"late-frame: {flow}: {ours}: pathspider {ps[theirs]:.6f}, "
                                  f"flowmark {fm[ours]:.6f}")
        fields = list(BASIC_FIELDS)
        for chain in self.chains:
            fields += CHAIN_FIELDS[chain]
        for field in fields:
            self.fields += 1
            if field not in fm:
                self.problems.append(f"{flow}: {field} missing from flowmark's record")
                continue
            theirs = PATHSPIDER_NAME.get(field, field)
            want, got = ps[theirs], fm[field]
            if field in ("sip", "dip"):
                want, got = _addr(want), _addr(got)
            if theirs != field and ps[field] != ps[theirs]:
                self.kinds["tcp-fin-swap (pathspider's tcp_fin_* the wrong way round)"] += 1
            if want == got and type(want) is type(got):
                continue
            kind = self._explain(field, ps, fm, ps_trimmed)
            if kind:
                self.kinds[kind] += 1
                label = kind.split(" ")[0].rstrip(":")
                self.notes.append(f"{label}: {flow}: {field}: pathspider {want!r}, "
                                  f"flowmark {got!r}")
            else:
                self.problems.append(f"{flow}: {field}: pathspider {want!r}, flowmark {got!r}")

    def _explain(self, field, ps, fm, ps_trimmed):
        got = fm[field]
        theirs = PATHSPIDER_NAME.get(field, field)
        if field.startswith("oct_") and got == ps["_iplen" + field[3:]]:
            return "ip.size (pathspider counts captured octets: Ethernet padding, truncation)"
        if (ps_trimmed is not None and ps_trimmed[theirs] == got
                and type(ps_trimmed[theirs]) is type(got) and ps_trimmed[theirs] != ps[theirs]):
            return "padding (pathspider sees Ethernet padding as TCP payload)"
        if field.startswith("mss_"):
            if ps.get("_skip_mss"):
                return f"option-walk: {ps['_skip_mss']}"
            length = ps["mss_len_" + field[-3:]]
            if field.startswith("mss_value_") and got is None and length and length > 6:
                return "mss-long (MSS data longer than 4 bytes: flowmark null)"
        if field.startswith("tfo_") and ps.get("_skip_tfo"):
            return f"tfo-option: {ps['_skip_tfo']}"
        return None

    # -- flow splitting

    def _split(self, key, ps_recs, fm_recs, split_ps, split_fm):
        """Records of one flow that do not pair up: the same packets cut at other places. Every
        place where only one side starts a record must be explained by a timer rule."""
        def totals(recs, octets):
            return (sum(r["pkt_fwd"] + r["pkt_rev"] for r in recs),
                    sum(r[octets + "_fwd"] + r[octets + "_rev"] for r in recs))

        desc = (f"{_show(oriented_key((split_fm or split_ps)[0]))}: pathspider records at "
                f"{[round(_first(r), 6) for r in ps_recs]}, flowmark at "
                f"{[round(_first(r), 6) for r in fm_recs]}")
        ps_tot, fm_tot = totals(ps_recs, "_iplen"), totals(fm_recs, "oct")
        if ps_tot != fm_tot:
            self.problems.append(f"{desc}: not the same packets (pathspider {ps_tot} packets, "
                                 f"IP octets; flowmark {fm_tot})")
            return
        def same_start(ps, fm):
            return (oriented_key(ps) == oriented_key(fm)
                    and _time_match(_first(fm), _first(ps), self.late))

        only = [(_first(r), "pathspider") for r in ps_recs
                if not any(same_start(r, fm) for fm in fm_recs)]
        only += [(_first(r), "flowmark") for r in fm_recs
                 if not any(same_start(ps, r) for ps in ps_recs)]
        if not only:
            theirs = [(r["pkt_fwd"], r["pkt_rev"], r["pkt_last"]) for r in split_ps]
            ours = [(r["pkt_fwd"], r["pkt_rev"], r["last"]) for r in split_fm]
            self.problems.append(f"{desc}: records with the same starts differ in (pkt_fwd, "
                                 f"pkt_rev, last): pathspider {theirs}, flowmark {ours}")
            return
        times = self.packets.get(key, [])
        for start, side in only:
            at = [i for i, (t, _) in enumerate(times) if abs(t - start) <= TIME_TOLERANCE]
            if not at or at[0] == 0:
                self.problems.append(f"{desc}: {side} starts a record at {start:.6f}, not at a "
                                     f"later packet of the flow")
                continue
            gap = start - times[at[0] - 1][0]
            if gap >= IDLE_TIMEOUT - 1:
                self.kinds["split-idle (flowmark emits an idle flow at once, pathspider keeps it "
                           "expiry_timeout longer)"] += 1
            elif side == "flowmark" and times[at[0]][1]:
                self.kinds["split-syn (a SYN on a completed flow starts a flowmark record)"] += 1
            else:
                self.problems.append(f"{desc}: {side} alone starts a record at {start:.6f} "
                                     f"({gap:.3f} s after the flow's previous packet)")
                continue
            self.notes.append(f"split at {start:.6f} ({side}; {gap:.3f} s after the previous "
                              f"packet): {desc}")

    # -- what pathspider's own chain order and evil completion change

    def _faithful_effects(self, ref, faithful):
        differ = 0
        ref = RecordIndex(ref)
        for rec in faithful:
            other = ref.find(rec)
            if other is None or any(other.get(k) != v for k, v in rec.items()
                                    if not k.startswith("_")):
                differ += 1
        if differ:
            self.kinds["faithful-order (records pathspider's own chain order and evil completion "
                       "make differently; not compared)"] += differ

    def summary(self):
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.kinds.items())) or "none"
        return (f"{self.name}: {self.records} records, {self.fields} fields compared; "
                f"deviations seen: {kinds}")


# ---- the tests -----------------------------------------------------------------------------


def captures():
    if not os.path.isdir(PATHSPIDER_DATA):
        return []
    return sorted(f for f in os.listdir(PATHSPIDER_DATA) if f.endswith(".pcap"))


class PathspiderCaptures(unittest.TestCase):
    """One test per capture of pathspider's test data: flowmark's records = pathspider's."""

    def setUp(self):
        if MISSING:
            self.skipTest(MISSING)
        self.assertTrue(os.access(FLOWMARK, os.X_OK), f"no flowmark binary at {FLOWMARK}")

    def check_capture(self, name):
        path = os.path.join(PATHSPIDER_DATA, name)
        comparison = Comparison(name, ALL_CHAINS).run(path, run_flowmark(path))
        print(comparison.summary(), flush=True)
        for note in comparison.notes:
            print(f"  {note}", flush=True)
        if comparison.problems:
            shown = "\n  ".join(comparison.problems[:40])
            more = len(comparison.problems) - 40
            self.fail(f"{name}: {len(comparison.problems)} unexplained difference(s) between "
                      f"pathspider and flowmark:\n  {shown}" + (f"\n  ... {more} more" if more > 0
                                                                   else ""))
        return comparison


def _make_test(name):
    def test(self):
        comparison = self.check_capture(name)
        if name == "random.pcap":  # 5,000 ARP frames: no IP, no flow on either side
            self.assertEqual(comparison.records, 0)
        else:
            self.assertGreater(comparison.records, 0, f"{name}: no record compared")
    test.__doc__ = f"pathspider's {name}"
    return test


for _name in captures():
    setattr(PathspiderCaptures, "test_" + _name[:-5], _make_test(_name))


class ComparisonCanFail(unittest.TestCase):
    """The comparison notices a changed value, a missing field, a swapped direction and a
    missing record (so that the tests above cannot pass by not looking)."""

    NAME = "tcp_ipv4_ecn.pcap"

    def setUp(self):
        if MISSING:
            self.skipTest(MISSING)
        if not os.path.exists(os.path.join(PATHSPIDER_DATA, self.NAME)):
            self.skipTest(f"pathspider's {self.NAME} is missing")
        self.assertTrue(os.access(FLOWMARK, os.X_OK), f"no flowmark binary at {FLOWMARK}")
        self.path = os.path.join(PATHSPIDER_DATA, self.NAME)
        self.records = run_flowmark(self.path)
        self.assertEqual(len(self.records), 1)
        clean = Comparison(self.NAME, ALL_CHAINS).run(self.path, self.records)
        self.assertEqual(clean.problems, [])

    def problems_with(self, change):
        records = json.loads(json.dumps(self.records))
        change(records)
        return Comparison(self.NAME, ALL_CHAINS).run(self.path, records).problems

    def test_changed_values(self):
        for field, value in [("ecn_ect0_data_fwd", False), ("mss_value_rev", 1459),
                             ("tcp_synflags_fwd", 2), ("dscp_mark_data_rev", None),
                             ("evilbit_syn_fwd", None), ("udp_zero_checksum_fwd", False),
                             ("tfo_seq", 1), ("icmp_unreachable", True), ("oct_rev", 1),
                             ("tcp_fin_fwd", False), ("last", 0.0)]:
            with self.subTest(field=field):
                problems = self.problems_with(lambda r: r[0].__setitem__(field, value))
                self.assertTrue(any(field in p for p in problems), problems)

    def test_missing_field(self):
        problems = self.problems_with(lambda r: r[0].pop("tfo_ackclen"))
        self.assertTrue(any("tfo_ackclen missing" in p for p in problems), problems)

    def test_swapped_direction(self):
        def swap(records):
            r = records[0]
            r["sip"], r["dip"], r["sp"], r["dp"] = r["dip"], r["sip"], r["dp"], r["sp"]
        self.assertNotEqual(self.problems_with(swap), [])

    def test_missing_record(self):
        self.assertNotEqual(self.problems_with(lambda r: r.clear()), [])


def _tcp(sport, dport, flags, seq=1000, ack=0, options=b"", payload=b""):
    """A TCP header built by hand (so that options can be malformed), checksum 0: neither
    side checks it."""
    options += b"\x00" * (-len(options) % 4)
    offset = (5 + len(options) // 4) << 12
    bits = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}
    flag_byte = sum(bits[c] for c in flags)
    header = (sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + seq.to_bytes(4, "big")
              + ack.to_bytes(4, "big") + (offset | flag_byte).to_bytes(2, "big")
              + (65535).to_bytes(2, "big") + bytes(4))
    return header + options + payload


class CraftedDeviations(unittest.TestCase):
    """A capture made here with one flow per CHAINS.md deviation that pathspider's captures do
    not contain (malformed TCP options, a long MSS, TFO option 255, evil completion, a SYN on a
    completed flow, padding read as payload, an ICMP unreachable): the comparison passes and
    names each deviation, so the wrappers and explanations above are exercised too."""

    def setUp(self):
        if MISSING:
            self.skipTest(MISSING)
        try:
            from scapy.all import ICMP, IP, UDP, Ether, Padding, PcapWriter, Raw
        except ImportError as e:
            self.skipTest(f"needs scapy's packet classes ({e})")
        self.assertTrue(os.access(FLOWMARK, os.X_OK), f"no flowmark binary at {FLOWMARK}")
        import tempfile
        self.dir = tempfile.TemporaryDirectory(prefix="observe_pathspider_")
        self.path = os.path.join(self.dir.name, "deviations.pcap")
        a, b = "10.0.0.1", "10.0.0.2"
        t = [1_600_000_000.0]

        def frame(src, dst, l4, proto=6, tos=0, flags=0, pad=0, dt=0.01):
            t[0] += dt
            pkt = Ether() / IP(src=src, dst=dst, proto=proto, tos=tos, flags=flags) / Raw(l4)
            if pad:
                pkt = pkt / Padding(load=bytes(pad))
            pkt.time = t[0]
            return pkt

        mss = b"\x02\x04\x05\xb4"
        frames = [
            # option length 0 after the MSS: pathspider never returns
            frame(a, b, _tcp(1001, 80, "S", options=mss + b"\x08\x00")),
            # an option kind without its length byte: pathspider raises IndexError
            frame(a, b, _tcp(1002, 80, "S", options=mss + b"\x01\x01\x01\x03")),
            # option length 1: pathspider walks on (and finds the MSS), flowmark stops
            frame(a, b, _tcp(1003, 80, "S", options=b"\x05\x01" + mss)),
            # an MSS option with 6 data bytes: flowmark's value is null
            frame(a, b, _tcp(1004, 80, "S", options=b"\x02\x08\x00\x00\x00\x00\x05\xb4")),
            # TFO in option 255 (no 254): pathspider raises KeyError
            frame(a, b, _tcp(1005, 80, "S", options=b"\xff\x0c\xf9\x89" + bytes(range(8)))),
            # a pure ACK in a padded frame, DSCP 10: pathspider reads the padding as payload
            frame(a, b, _tcp(1007, 80, "S", options=mss)),
            frame(b, a, _tcp(80, 1007, "SA", seq=5000, ack=1001, options=mss)),
            frame(a, b, _tcp(1007, 80, "A", seq=1001, ack=5001), tos=10 << 2, pad=6),
            # UDP with the evil bit on three datagrams: pathspider's EvilChain completes
            frame(a, b, bytes(UDP(sport=2001, dport=53) / b"q1"), proto=17, flags=4),
            frame(a, b, bytes(UDP(sport=2001, dport=53) / b"q2"), proto=17, flags=4),
            frame(a, b, bytes(UDP(sport=2001, dport=53) / b"q3"), proto=17, flags=4),
            # a port unreachable quoting a UDP datagram
            frame(a, b, bytes(UDP(sport=2002, dport=9) / b"x"), proto=17),
            frame(b, a, bytes(ICMP(type=3, code=3) / IP(src=a, dst=b) / UDP(sport=2002, dport=9)
                              / b"x"), proto=1),
            # a connection reset, then a new SYN 1 s later: a new flowmark record
            frame(a, b, _tcp(1006, 80, "S", options=mss)),
            frame(b, a, _tcp(80, 1006, "SA", seq=7000, ack=1001, options=mss)),
            frame(a, b, _tcp(1006, 80, "PA", seq=1001, ack=7001, payload=b"GET /")),
            frame(b, a, _tcp(80, 1006, "R", seq=7001)),
            frame(a, b, _tcp(1006, 80, "S", seq=9000, options=mss), dt=1.0),
            frame(b, a, _tcp(80, 1006, "SA", seq=3000, ack=9001, options=mss)),
        ]
        writer = PcapWriter(self.path, linktype=1, sync=True)
        for f in frames:
            writer.write(f)
        writer.close()

    def tearDown(self):
        if hasattr(self, "dir"):
            self.dir.cleanup()

    def test_every_deviation_explained(self):
        records = run_flowmark(self.path)
        comparison = Comparison("crafted deviations", ALL_CHAINS).run(self.path, records)
        print(comparison.summary(), flush=True)
        for note in comparison.notes:
            print(f"  {note}", flush=True)
        self.assertEqual(comparison.problems, [])
        seen = " ".join(comparison.kinds)
        for kind in ["option length 0", "without length byte", "option length 1", "mss-long",
                     "tfo-option", "padding", "evil-completion", "split-syn"]:
            self.assertIn(kind, seen)
        self.assertGreaterEqual(comparison.records, 8)
        unreachable = [r for r in records if r["sp"] == 2002]
        self.assertEqual([r["icmp_unreachable"] for r in unreachable], [True])


if __name__ == "__main__":
    main()
