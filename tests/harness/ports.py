"""Free loopback ports for the servers tests and benchmarks start.

The one copy of these helpers. Benchmarks import it too (as they already import the
etcd and ZooKeeper harness from tests/harness/): it needs only the standard library,
so a benchmark run from a checkout needs no test dependency for it.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the kernel's pick for port 0); the
    caller binds it soon after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_dns_port(host: str = LOOPBACK) -> int:
    """A port free for both UDP and TCP on ``host`` (a DNS server binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for UDP and TCP")
