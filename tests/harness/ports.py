"""Free loopback ports for the servers tests and benchmarks start.

The one copy of these helpers. Benchmarks import it too (as they already import the
etcd and ZooKeeper harness from tests/harness/): it needs only the standard library,
so a benchmark run from a checkout needs no test dependency for it.

Ports come from below the kernel's ephemeral range, never from a bind to port 0: the
kernel hands ephemeral ports to every outgoing connection too (a node's client socket
to etcd, a dig, a forwarder's upstream query), so a port it picked for us could be
taken by such a connection between the check and the server's own bind. A full suite
lost a run that way ("cannot bind DNS ... Address already in use"). Ports handed out
are remembered, so one process never hands the same port to two servers either.
"""

from __future__ import annotations

import random
import socket
import threading

LOOPBACK = "127.0.0.1"

# Below Linux's default ip_local_port_range (32768-60999), above the usual services.
_FIRST, _LAST = 20000, 32767
_given: set[int] = set()
_lock = threading.Lock()


def _bindable(host: str, port: int, kinds: tuple[int, ...]) -> bool:
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _pick(host: str, kinds: tuple[int, ...]) -> int:
    with _lock:
        for _ in range(200):
            port = random.randint(_FIRST, _LAST)
            if port not in _given and _bindable(host, port, kinds):
                _given.add(port)
                return port
    raise RuntimeError(f"no free port in {_FIRST}-{_LAST} on {host}")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now, not handed out before; the caller binds
    it soon after."""
    return _pick(host, (socket.SOCK_STREAM,))


def free_dns_port(host: str = LOOPBACK) -> int:
    """A port free for both UDP and TCP on ``host`` (a DNS server binds both)."""
    return _pick(host, (socket.SOCK_DGRAM, socket.SOCK_STREAM))
