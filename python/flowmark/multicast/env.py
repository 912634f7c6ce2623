"""flowmark.multicast.env — defaults from the environment, as the `multicast` package reads
them: MULTICAST_PORT, MULTICAST_GROUP, MULTICAST_TTL, MULTICAST_BUFFER_SIZE,
MULTICAST_GROUPS (space-separated) and MULTICAST_BIND_ADDR. A value that does not validate
is warned about and the default is kept.

Unlike the package, IPv6 groups are accepted (with an optional "%interface" scope).
"""

import ipaddress
import logging
import os
import warnings

__all__ = [
    "load_config",
    "validate_buffer_size",
    "validate_multicast_address",
    "validate_port",
    "validate_ttl",
]

_log = logging.getLogger("multicast.env")

# The package's own defaults (multicast/__init__.py reads the environment over them).
DEFAULT_BUFFER_SIZE = 1316
DEFAULT_PORT = 59559
DEFAULT_GROUP = "224.0.0.1"
DEFAULT_TTL = 1


def validate_buffer_size(size):
    """True when `size` is a datagram size, 1..65507; ValueError when it is not a number."""
    try:
        return 0 < int(size) <= 65507
    except (TypeError, ValueError) as e:
        raise ValueError(f"Invalid buffer size value: {size}. Must be a positive integer.") from e


def validate_port(port):
    """True when `port` is in the dynamic/private range 49152..65535 (RFC 6335)."""
    try:
        return 49152 <= int(port) <= 65535
    except (TypeError, ValueError) as e:
        raise ValueError(f"Invalid port value: {port}. Must be an integer.") from e


def validate_multicast_address(addr):
    """True when `addr` is an IPv4 or IPv6 multicast address ("ff02::1%eth0" too)."""
    try:
        text = str(addr).split("%", 1)[0]
        return ipaddress.ip_address(text).is_multicast
    except (TypeError, ValueError, AttributeError):
        return False


def validate_ttl(ttl):
    """True when `ttl` is in 1..126 (RFC 1112)."""
    try:
        return 1 <= int(ttl) <= 126
    except (TypeError, ValueError) as e:
        raise ValueError(f"Invalid TTL value: {ttl}. Must be a positive integer below 127.") from e


def _load_int(name, default, valid, what):
    raw = os.getenv(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        warnings.warn(f"Invalid {name} value, using default {default}", stacklevel=3)
        return default
    if not valid(value):
        warnings.warn(f"{what} {value} is out of range, using default {default}", stacklevel=3)
        return default
    return value


def load_buffer_size():
    return _load_int("MULTICAST_BUFFER_SIZE", DEFAULT_BUFFER_SIZE, validate_buffer_size,
                     "MULTICAST_BUFFER_SIZE")


def load_port():
    return _load_int("MULTICAST_PORT", DEFAULT_PORT, validate_port, "Port (49152-65535)")


def load_TTL():  # noqa: N802 - the package's name
    return _load_int("MULTICAST_TTL", DEFAULT_TTL, validate_ttl, "TTL (1-126)")


def load_group():
    """The group of MULTICAST_GROUP (or the default) as an ipaddress object."""
    group = os.getenv("MULTICAST_GROUP", DEFAULT_GROUP)
    if not validate_multicast_address(group):
        warnings.warn(f"Invalid multicast group {group}, using default {DEFAULT_GROUP}",
                      stacklevel=2)
        group = DEFAULT_GROUP
    return ipaddress.ip_address(group.split("%", 1)[0])


def load_config():
    """{"port", "group", "groups", "ttl", "bind_addr", "buffer_size"} from the environment
    over the defaults. "groups" is the sorted set of MULTICAST_GROUPS, the group and the
    bind address when it is a group."""
    port = load_port()
    group = load_group()
    ttl = load_TTL()
    buffer_size = load_buffer_size()
    groups = set()
    for addr in os.getenv("MULTICAST_GROUPS", "").split():
        if validate_multicast_address(addr):
            groups.add(addr)
        else:
            warnings.warn(f"Invalid multicast group {addr} in MULTICAST_GROUPS, skipping",
                          stacklevel=2)
    groups.add(str(group))
    bind_addr = os.getenv("MULTICAST_BIND_ADDR", str(group))
    if validate_multicast_address(bind_addr):
        groups.add(bind_addr)
    return {"port": port, "group": str(group), "groups": sorted(groups), "ttl": ttl,
            "bind_addr": bind_addr, "buffer_size": buffer_size}
