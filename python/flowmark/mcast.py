"""flowmark.mcast — UDP multicast from Python over flowmark's C++ sockets.

    import flowmark.mcast as mcast

    mcast.send("239.1.1.1", 5000, b"hello", iface="eth0", ttl=1)

    with mcast.Receiver(["239.1.1.1"], 5000, iface="eth0") as rx:
        got = rx.recv(timeout=2.0)          # (payload, (host, port), group) or None
        batch = rx.recv_many(256, 0.1)      # [(payload, (host, port), group), ...]
        for payload, sender, group in rx:   # blocks; Ctrl-C interrupts
            ...

IPv4 and IPv6 groups (a link-scoped IPv6 group needs an interface: ``iface="eth0"`` or
``"ff02::1:77%eth0"``); any-source joins, or source-specific ones (``source=``). An interface
is a name, an index (int or text) or one of its addresses. A receiver joins every group on
one socket of one address family and sees only the groups it joined, never other groups
sent to the same port.

Waiting happens with the GIL released (other Python threads run) and is interrupted by
Ctrl-C (KeyboardInterrupt) within 100 ms. ``recv_many`` reads with one ``recvmmsg`` system
call: it waits up to ``timeout`` for the first datagram, then returns what is queued, at
most ``max``, without waiting further.

Sequenced streams: ``Sender.send_stream`` (or ``send(..., count=N)``) puts flowmark's
24-byte stream header (magic ``FMS1``, stream id, sequence number, send time) in front of
each payload — the same header as ``flowmark mcast say --count``; a ``Receiver(...,
stats=True)`` keeps loss, duplicate, reordering and one-way delay statistics per sender,
group and stream, returned by ``stats()`` as a dict with the field names of
``flowmark mcast recv --stats``.

``open_joined_socket(groups, port, iface=None, source=None, bind=None, rcvbuf=0)`` returns
the descriptor of such a joined socket for ``socket.socket(fileno=...)`` (flowmark.multicast
builds its sockets with it); the caller owns it.

Errors: ``ValueError`` for a value that is not acceptable (a unicast address as a group, a
link-scoped group without an interface, a bad port or TTL); ``OSError`` (with ``errno``)
for what the kernel refuses or an interface that does not exist (ENODEV).
"""

import time

from ._flowmark.mcast import (  # noqa: F401 (re-exported)
    DEFAULT_GROUP,
    DEFAULT_PORT,
    DEFAULT_RCVBUF,
    DEFAULT_TTL,
    MAX_BATCH,
    STREAM_HEADER_SIZE,
    Receiver,
    Sender,
    decode_stream_header,
    encode_stream_header,
    open_joined_socket,
)

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_PORT",
    "DEFAULT_RCVBUF",
    "DEFAULT_TTL",
    "MAX_BATCH",
    "STREAM_HEADER_SIZE",
    "Receiver",
    "Sender",
    "decode_stream_header",
    "encode_stream_header",
    "open_joined_socket",
    "send",
    "strip_stream_header",
]


def send(group, port, data, iface=None, ttl=DEFAULT_TTL, *, loop=True, bind=None, count=1,
         interval=0.0, sequence=None, size=None):
    """Sends `data` to `group`:`port` and returns the number of datagrams the kernel took.

    data: bytes-like or str (UTF-8), one datagram; or a list/tuple of them, one datagram
    each (sent in sendmmsg batches).
    iface: the outgoing interface (name, index or address); None: the route decides.
    ttl: TTL / hop limit, 0..255. loop: deliver to receivers on this host too.
    bind: the local source address. count: send `data` this many times, `interval`
    seconds apart. sequence: put the stream header in front of each datagram (default: when
    count > 1 or interval > 0), as ``flowmark mcast say --count`` does. size: pad each
    datagram with '.' to this many bytes.
    """
    with Sender(group, port, iface, ttl, loop=loop, bind=bind) as tx:
        if isinstance(data, (list, tuple)):
            return tx.send_many(data)
        if count < 1:
            raise ValueError("count must be at least 1")
        if sequence is None:
            sequence = count > 1 or interval > 0
        if sequence:
            return tx.send_stream(data, count, interval, size)
        if isinstance(data, str):
            data = data.encode()
        if size is not None and size > len(data):
            data = bytes(data) + b"." * (size - len(data))
        if interval <= 0:
            return tx.send_many([data] * count) if count > 1 else (tx.send(data) or 1)
        for i in range(count):
            if i:
                time.sleep(interval)
            tx.send(data)
        return count


def strip_stream_header(payload):
    """(header dict, message bytes) of a sequenced datagram, or (None, payload) of a plain
    one."""
    header = decode_stream_header(payload)
    if header is None:
        return None, payload
    return header, payload[STREAM_HEADER_SIZE:]
