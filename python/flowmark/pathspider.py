"""pathspider's Observer on flowmark's: pathspider's chain classes, unmodified, over
flowmark's flow table, timers and packet decoding.

    from flowmark.pathspider import Observer        # instead of pathspider.observer
    from pathspider.chains.basic import BasicChain
    from pathspider.chains.ecn import ECNChain

    observer = Observer("pcapfile:trace.pcap", chains=[BasicChain, ECNChain])
    observer.run_flow_enqueuer(flowqueue)           # records (dicts), then SHUTDOWN_SENTINEL

The chains are instantiated and called as pathspider 2.0.1 calls them: new_flow(rec, ip)
(a falsy return ignores the flow), ip4/ip6(rec, ip, rev=), icmp4/icmp6(rec, ip, q, rev=),
tcp/udp(rec, hdr, rev=); once one of a packet's functions returns something falsy the rest
are not called for that packet and the flow completes. The packet objects offer what
python-libtrace's plt objects offer (flowmark._flowmark.pathspider.Ip, Tcp, Udp, Icmp).
Where flowmark's grouping and timers differ from pathspider's: flowmark-python(7),
README "pathspider's Observer".
"""

import logging
import sys

from ._flowmark import pathspider as _core

# pathspider's end-of-queue marker (pathspider.base.SHUTDOWN_SENTINEL, compared with ==):
# its own object when pathspider.base is loaded already, else the same value. Importing
# pathspider.base here would cost `import flowmark` 0.2 s (it loads pyroute2).
_ps_base = sys.modules.get("pathspider.base")
SHUTDOWN_SENTINEL = getattr(_ps_base, "SHUTDOWN_SENTINEL", "SHUTDOWN_SENTINEL")
del _ps_base

Ip = _core.Ip
Tcp = _core.Tcp
Udp = _core.Udp
Icmp = _core.Icmp
Payload = _core.Payload
IPprefix = _core.IPprefix

__all__ = ["Observer", "DummyObserver", "SHUTDOWN_SENTINEL", "parse_lturi"]

_HOOKS = ("new_flow", "ip4", "ip6", "icmp4", "icmp6", "tcp", "udp")

# libtrace URI formats pathspider's callers use, and what flowmark reads them with.
_FILE_FORMATS = ("pcapfile", "pcap", "pcapng", "erf")
_LIVE_FORMATS = {"int": "live", "ring": "live", "pcapint": "pcapint"}


def parse_lturi(lturi):
    """A libtrace URI as pathspider's callers pass it → (kind, where): ("file", PATH) for
    pcap:PATH, pcapfile:PATH (a pcap or pcapng file; "-" is standard input) or a bare
    path; ("live", IFACE) for int:IFACE or ring:IFACE (AF_PACKET ring); ("pcapint", IFACE)
    for pcapint:IFACE (libpcap)."""
    if not isinstance(lturi, str) or not lturi:
        raise ValueError(f"expected a libtrace URI such as 'pcapfile:trace.pcap' or "
                         f"'int:eth0', got {lturi!r}")
    fmt, sep, rest = lturi.partition(":")
    if sep and fmt in _FILE_FORMATS:
        if fmt == "erf":
            raise ValueError(f"{lturi}: ERF traces are not read; convert to pcap first")
        return ("file", rest)
    if sep and fmt in _LIVE_FORMATS:
        return (_LIVE_FORMATS[fmt], rest)
    if sep and "/" not in fmt and len(fmt) > 1:
        known = ", ".join(f"{f}:" for f in ("pcap", "pcapfile", "int", "ring", "pcapint"))
        raise ValueError(f"{lturi}: unknown libtrace format '{fmt}:'; known: {known} "
                         f"(or a file path)")
    return ("file", lturi)


def _plt_payload(payload):
    """A Payload as python-libtrace's own object (made from the same IP bytes)."""
    import plt  # pylint: disable=import-outside-toplevel
    make = plt.ip if payload._ip_version == 4 else plt.ip6  # pylint: disable=protected-access
    ip = make(bytearray(payload._ip_bytes))  # pylint: disable=protected-access
    hdr = ip.tcp if payload._proto == 6 else ip.udp  # pylint: disable=protected-access
    return hdr.payload if hdr is not None else None


def _adapt_pldns():
    """pathspider's DNSChain hands tcp.payload / udp.payload to python-libtrace's
    pldns.ldns(), which takes python-libtrace objects only: where pldns is installed,
    pldns.ldns is wrapped to turn one of our Payload objects into python-libtrace's for the
    same bytes (anything else passes through unchanged)."""
    try:
        import pldns  # pylint: disable=import-outside-toplevel
    except ImportError:
        return
    original = pldns.ldns
    if getattr(original, "_flowmark_adapter", False):
        return

    def ldns(obj, *args, **kwargs):
        if isinstance(obj, Payload):
            obj = _plt_payload(obj)
        return original(obj, *args, **kwargs)
    ldns._flowmark_adapter = True
    ldns.__doc__ = original.__doc__
    pldns.ldns = ldns


class Observer:
    """pathspider.observer.Observer's API on flowmark's C++ observer.

    lturi: "pcapfile:FILE", "pcap:FILE" (pcap or pcapng), "int:IFACE" (live, needs
    CAP_NET_RAW), "ring:IFACE", "pcapint:IFACE" or a file path. chains: chain classes
    (pathspider.chains.* or your own), instantiated here in the given order.
    idle_timeout / expiry_timeout: seconds of packet time, as pathspider's.
    The capture is opened here (OSError/RuntimeError naming it when it cannot be)."""

    def __init__(self, lturi, chains=None, idle_timeout=30, expiry_timeout=5):
        kind, where = parse_lturi(lturi)
        _adapt_pldns()
        self._chains = [chain() for chain in (chains if chains is not None else [])]
        hooks = {name: [getattr(c, name) for c in self._chains if hasattr(c, name)]
                 for name in _HOOKS}
        self._logger = logging.getLogger("observer")
        self._core = _core._Observer(kind, where, hooks, float(idle_timeout),
                                     float(expiry_timeout))

    def run_flow_enqueuer(self, flowqueue, irqueue=None):
        """Reads the capture to its end (or until something arrives on irqueue), putting
        each finished flow's record (a dict) on flowqueue, then every flow still open, then
        SHUTDOWN_SENTINEL. Ctrl-C raises KeyboardInterrupt (no sentinel then)."""
        self._core.run(flowqueue.put, irqueue)
        s = self._core.stats()
        self._logger.info("processed %u packets (%s dropped, %u short, %u non-ip) into %u "
                          "flows (%u ignored)", s["packets"],
                          s["drops"] if s["drops"] is not None else 0, s["short"],
                          s["non_ip"], s["flows"], s["ignored"])
        flowqueue.put(SHUTDOWN_SENTINEL)

    def flush(self):
        """Completes every flow held (expiring ones first, then active ones), as
        pathspider's flush(); their records go onto the queue at the next
        run_flow_enqueuer()."""
        self._core.flush()

    def stats(self):
        """flowmark's counters: packets, non_ip, short, flows, ignored, ignored_packets,
        emitted, late_packets, drops (None for files)."""
        return self._core.stats()


class DummyObserver:  # pylint: disable=too-few-public-methods
    """pathspider's DummyObserver: reads nothing, waits for the shutdown signal on irqueue
    and passes SHUTDOWN_SENTINEL on to flowqueue."""

    def run_flow_enqueuer(self, flowqueue, irqueue=None):
        irqueue.get()
        flowqueue.put(SHUTDOWN_SENTINEL)
