"""A TCP port for a server a test starts in another process (a DDP master, a keras-tuner chief).

Such programs need the port before they start, so the test picks one and
hands it over. A port the kernel hands out (bind to 0) lies in the ephemeral
range, from which every outgoing connection also draws its local port: in
the moment between the test's check and the server's bind, any connection
on the machine can take it ("address already in use", seen in full runs).
Ports below that range are only ever taken by an explicit bind, so a random
free one there is safe from that race.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]

# Below Linux's default ephemeral range (32768-60999) and above the registered services most machines run.
_LOW, _HIGH = 20000, 32767


def _ephemeral() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A port outside the ephemeral range that nothing is bound to now (on ``host``)."""
    low, high = _ephemeral()
    candidates = [p for p in range(_LOW, _HIGH + 1) if not low <= p <= high]
    tries = min(200, len(candidates))
    for port in random.Random().sample(candidates, tries):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port among {tries} tried in {_LOW}-{_HIGH} outside the ephemeral range {low}-{high}")
