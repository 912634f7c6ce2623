"""Type stubs of flowmark.mcast (UDP multicast over flowmark's C++ sockets)."""

from typing import Any, Iterable, Iterator, Optional, Sequence, Tuple, Union

_Bytes = Union[bytes, bytearray, memoryview, str]
_Iface = Union[str, int, None]
_Groups = Union[str, Sequence[str]]
# (payload, (sender host, sender port), group)
Datagram = Tuple[bytes, Tuple[str, int], str]

DEFAULT_GROUP: str
DEFAULT_PORT: int
DEFAULT_RCVBUF: int
DEFAULT_TTL: int
MAX_BATCH: int
STREAM_HEADER_SIZE: int

class Receiver:
    def __init__(
        self,
        groups: _Groups,
        port: int = ...,
        iface: _Iface = None,
        source: Union[str, Sequence[str], None] = None,
        *,
        bind: Optional[str] = None,
        rcvbuf: int = ...,
        buffer_size: int = 65536,
        batch: int = 64,
        stats: bool = False,
        ttl: int = 1,
        loop: bool = True,
    ) -> None: ...
    def recv(self, timeout: Optional[float] = None) -> Optional[Datagram]: ...
    def recv_many(
        self, max: Optional[int] = None, timeout: Optional[float] = None
    ) -> list[Datagram]: ...
    def send_to(self, host: str, port: int, data: _Bytes) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    @property
    def port(self) -> int: ...
    @property
    def family(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def received(self) -> int: ...
    @property
    def truncated(self) -> int: ...
    def __iter__(self) -> Iterator[Datagram]: ...
    def __next__(self) -> Datagram: ...
    def __enter__(self) -> "Receiver": ...
    def __exit__(self, *exc: Any) -> bool: ...

class Sender:
    def __init__(
        self,
        group: str = ...,
        port: int = ...,
        iface: _Iface = None,
        ttl: int = 1,
        *,
        loop: bool = True,
        bind: Optional[str] = None,
        bind_port: int = 0,
        gso: bool = False,
    ) -> None: ...
    def send(self, data: _Bytes) -> None: ...
    def send_many(self, payloads: Iterable[_Bytes]) -> int: ...
    def send_stream(
        self,
        message: _Bytes = b"",
        count: int = 1,
        interval: float = 0.0,
        size: Optional[int] = None,
    ) -> int: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    @property
    def local(self) -> Tuple[str, int]: ...
    @property
    def refused(self) -> int: ...
    @property
    def stream_id(self) -> int: ...
    @property
    def sequence(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> "Sender": ...
    def __exit__(self, *exc: Any) -> bool: ...

def send(
    group: str,
    port: int,
    data: Union[_Bytes, Sequence[_Bytes]],
    iface: _Iface = None,
    ttl: int = 1,
    *,
    loop: bool = True,
    bind: Optional[str] = None,
    count: int = 1,
    interval: float = 0.0,
    sequence: Optional[bool] = None,
    size: Optional[int] = None,
) -> int: ...
def decode_stream_header(payload: bytes) -> Optional[dict[str, int]]: ...
def encode_stream_header(stream: int, sequence: int, sent_ns: Optional[int] = None) -> bytes: ...
def strip_stream_header(payload: bytes) -> Tuple[Optional[dict[str, int]], bytes]: ...
def open_joined_socket(
    groups: _Groups,
    port: int,
    iface: _Iface = None,
    source: Union[str, Sequence[str], None] = None,
    bind: Optional[str] = None,
    rcvbuf: int = 0,
) -> int: ...
