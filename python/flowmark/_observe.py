"""flowmark.observe(): a capture file or a live interface into flow records, from Python.

The capture is read and its packets grouped into flows by flowmark's C++ observer with its
built-in chains, set up exactly as `flowmark observe` sets itself up (same options, same checks
and messages, same records); Python gets the records one dict at a time or as whole columns:

    import flowmark
    for rec in flowmark.observe("trace.pcapng", chains="all"):
        print(rec["sip"], rec["dp"], rec["tcp_connected"])
    df = flowmark.observe("trace.pcapng").to_pandas()

The GIL is released while packets are read and decoded; Ctrl-C raises KeyboardInterrupt within
~50 ms (the run keeps its place: iterating again reads on).
"""

import os

from ._flowmark import observe as _engine

__all__ = ["observe", "Observation"]

_RECORD_FIELDS = ("sip", "dip", "proto", "sp", "dp", "first", "last", "pkt_fwd", "pkt_rev",
                  "oct_fwd", "oct_rev", "ip_version", "vlan", "tcp_flags_fwd", "tcp_flags_rev",
                  "fragments", "icmp_errors", "continuation")


class Observation:
    """One run of the observer over a capture (made by flowmark.observe()).

    An iterator of records (dicts with the JSON output's field names and values); or, at
    once, to_arrays() (numpy) / to_pandas() (a DataFrame). Each record is handed out once:
    to_arrays() and to_pandas() take the records not yet iterated over, to the end of the
    input.
    """

    def __init__(self, run):
        self._run = run

    def __iter__(self):
        return self

    def __next__(self):
        rec = self._run.next()
        if rec is None:
            raise StopIteration
        return rec

    @property
    def columns(self):
        """The record's field names, in the JSON output's order (the chains' after the
        record's own)."""
        return list(self._run.column_names())

    @property
    def stats(self):
        """The observer's counters (as `flowmark observe --stats` prints them) so far: packets,
        flows, emitted, evicted, decode_errors (by reason), drops (live captures; None for
        files), active_flows, bytes_per_flow ...; finished is True once the input has ended.
        Taken between slices of reading: another thread may watch a run's progress."""
        return self._run.stats()

    def stop(self):
        """Ends the input, as Ctrl-C ends `flowmark observe`: the flows held are emitted, and
        iterating on (or to_arrays()) gives the records so far. For live captures."""
        self._run.stop()

    def to_arrays(self):
        """The remaining records as columns: {name: numpy array}, one row per record.

        The record's own fields are plain arrays (sip/dip: object arrays of str; proto,
        ip_version, tcp_flags_*: uint8; vlan: uint16; first/last: float64 seconds as in the
        JSON; pkt_*/oct_*: uint64; fragments/icmp_errors: uint32; continuation: bool), except
        sp and dp (uint16), which are numpy.ma.MaskedArray masked where the flow has no ports.
        Every chain field is a MaskedArray (masked where the JSON has null): bool, uint64, or
        object (text: str, None where masked).

        A corrupt capture raises ValueError (flowmark's message); called again, to_arrays()
        returns the records before the damage.
        """
        import numpy.ma as ma
        out = {}
        for name, col in self._run.columns().items():
            if isinstance(col, tuple):
                values, mask = col
                col = ma.MaskedArray(values, mask=mask, copy=False)
            out[name] = col
        return out

    def to_pandas(self):
        """The remaining records as a pandas DataFrame, one row per record, one column per
        field (the JSON's names and order). Columns that can be null use pandas' nullable
        dtypes: sp/dp UInt16, chain numbers UInt64, chain booleans boolean (pd.NA where the
        JSON has null); text columns are object (None). Needs pandas (python3-pandas)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("to_pandas() needs pandas (Debian: apt install python3-pandas)") \
                from e
        data = {}
        for name, col in self._run.columns().items():
            if isinstance(col, tuple):
                values, mask = col
                if values.dtype == bool:
                    col = pd.arrays.BooleanArray(values, mask, copy=False)
                elif values.dtype.kind in "iu":
                    col = pd.arrays.IntegerArray(values, mask, copy=False)
                else:
                    col = values
            data[name] = col
        return pd.DataFrame(data, copy=False)


def _chain_list(chains):
    if isinstance(chains, str):
        return chains
    names = list(chains)
    if not all(isinstance(n, str) for n in names):
        raise TypeError("chains: expected a string ('basic,tcp' or 'all') or names of chains")
    return ",".join(names)


def observe(source=None, chains=("basic", "tcp"), *, idle_timeout=30.0, expiry_delay=5.0,
            active_timeout=1800.0, max_flows=1 << 20, filter="", registry=None,
            icmp_flows=False, vlan=False, tcp_completion=True, interface=None,
            capture="afpacket"):
    """Observes a capture file or a live interface, as `flowmark observe` does.

    source: a pcap / pcapng file (a path; "-": standard input) or "int:IFACE" for a live
    interface (or give interface="IFACE" instead). The options are `flowmark observe`'s:
    chains ("basic,tcp", "all", or a list of names: basic tcp ecn dscp mss tfo udp icmp evil
    scitags), idle_timeout, expiry_delay, active_timeout (seconds; 0: never), max_flows,
    filter (BPF), registry (where the scitags chain's names come from: a file, an http(s)://
    URL, or "builtin", the default), icmp_flows, vlan (the VLAN id is part of the flow key),
    tcp_completion (False: --no-tcp-completion), capture ("afpacket" or "pcap", live only).

    Returns an Observation: iterate for dicts, or call to_arrays() / to_pandas(). Bad options
    raise ValueError, a missing file FileNotFoundError, an interface that cannot be captured
    on OSError, with flowmark's message; a corrupt capture raises ValueError after the records
    before the damage.
    """
    file, iface = "", ""
    if interface is not None:
        if source is not None:
            raise ValueError("give either a capture file or interface=, not both")
        iface = str(interface)
    elif source is None:
        raise ValueError("give a capture file (or \"-\") or an interface (\"int:IFACE\" or "
                         "interface=)")
    else:
        src = os.fspath(source)
        if isinstance(src, bytes):
            src = os.fsdecode(src)
        if src.startswith("int:"):
            iface = src[4:]
        else:
            file = src
    if file == "" and iface == "":
        raise ValueError("an empty capture file or interface name")
    run = _engine.open(file, iface, _chain_list(chains), float(idle_timeout),
                       float(expiry_delay), float(active_timeout), int(max_flows), str(filter),
                       "builtin" if registry is None else os.fspath(registry), bool(icmp_flows),
                       bool(vlan), bool(tcp_completion), str(capture))
    return Observation(run)
