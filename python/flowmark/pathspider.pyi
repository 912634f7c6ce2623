"""Type stubs of flowmark.pathspider (pathspider's Observer on flowmark's)."""
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple, Type, Union

SHUTDOWN_SENTINEL: str

class _Put(Protocol):
    def put(self, item: Any) -> None: ...

class _Get(Protocol):
    def get(self) -> Any: ...
    def get_nowait(self) -> Any: ...

class IPprefix:
    """An address as python-libtrace's ipp.IPprefix: str() is its text form."""
    @property
    def addr(self) -> bytearray: ...
    @property
    def version(self) -> int: ...
    @property
    def length(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class Payload:
    """What follows a transport header (python-libtrace's TransportObject)."""
    @property
    def data(self) -> bytearray: ...
    @property
    def size(self) -> int: ...
    def __len__(self) -> int: ...
    def __bytes__(self) -> bytes: ...

class Tcp:
    """A TCP segment (plt's tcp). Fields beyond the captured bytes are None."""
    src_port: Optional[int]
    dst_port: Optional[int]
    seq_nbr: Optional[int]
    ack_nbr: Optional[int]
    doff: int
    hdr_len: int
    flags: int
    fin_flag: bool
    syn_flag: bool
    rst_flag: bool
    psh_flag: bool
    ack_flag: bool
    urg_flag: bool
    ece_flag: bool
    cwr_flag: bool
    window: Optional[int]
    checksum: Optional[int]
    urg_ptr: Optional[int]
    size: int
    seconds: float
    data: bytearray
    payload: Optional[Payload]

class Udp:
    """A UDP datagram (plt's udp)."""
    src_port: Optional[int]
    dst_port: Optional[int]
    len: Optional[int]
    checksum: Optional[int]
    size: int
    seconds: float
    data: bytearray
    payload: Optional[Payload]

class Icmp:
    """An ICMP / ICMPv6 message (plt's icmp / icmp6); payload: the quoted packet of an
    error message (an Ip), the bytes after the header for others, or None."""
    type: Optional[int]
    code: Optional[int]
    checksum: Optional[int]
    size: int
    seconds: float
    data: bytearray
    payload: Union["Ip", bytearray, None]

class Ip:
    """An IPv4 or IPv6 packet (plt's ip / ip6). The IPv4-only fields are None for IPv6 and
    the IPv6-only ones None for IPv4 (has_rf/has_df/has_mf: False)."""
    version: int
    proto: int
    size: int
    seconds: float
    traffic_class: int
    ttl: int
    hop_limit: int
    src_prefix: IPprefix
    dst_prefix: IPprefix
    data: bytearray
    payload: bytearray
    hdr_len: Optional[int]
    pkt_len: Optional[int]
    ident: Optional[int]
    has_rf: bool
    has_df: bool
    has_mf: bool
    frag_offset: Optional[int]
    checksum: Optional[int]
    flow_label: Optional[int]
    payload_len: Optional[int]
    next_hdr: Optional[int]
    tcp: Optional[Tcp]
    udp: Optional[Udp]
    icmp: Optional[Icmp]
    icmp6: Optional[Icmp]

def parse_lturi(lturi: str) -> Tuple[str, str]: ...

class Observer:
    def __init__(self, lturi: str, chains: Optional[Sequence[Type[Any]]] = None,
                 idle_timeout: float = 30, expiry_timeout: float = 5) -> None: ...
    def run_flow_enqueuer(self, flowqueue: _Put, irqueue: Optional[_Get] = None) -> None: ...
    def flush(self) -> None: ...
    def stats(self) -> Dict[str, Optional[int]]: ...

class DummyObserver:
    def run_flow_enqueuer(self, flowqueue: _Put, irqueue: Optional[_Get] = None) -> None: ...
