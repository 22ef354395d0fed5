"""Free TCP ports for the servers we start (dev server, PostgreSQL, API, metrics)."""

from __future__ import annotations

import collections
import random
import socket
from pathlib import Path

_handed_out: collections.deque[int] = collections.deque(maxlen=256)
# Below the system's ephemeral range, where the dev server picks its internal services'
# ports and the kernel picks clients': a port handed out here is not one of those, so no
# dev server takes it in the moment before the server it was meant for binds it.
_OWN_PORTS = range(20_000, 32_768)


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A TCP port on localhost nobody listens on right now, below the ephemeral range, and
    not one this process handed out lately (it may not be bound yet)."""
    below = min(_OWN_PORTS.stop, _ephemeral_start())
    if below <= _OWN_PORTS.start:  # an unusual system: let the kernel choose
        with socket.socket() as sock:
            sock.bind(("localhost", 0))
            return int(sock.getsockname()[1])
    while True:
        port = random.randrange(_OWN_PORTS.start, below)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("localhost", port))
            except OSError:
                continue
        _handed_out.append(port)
        return port
