"""Per-node ports: a pool port of ``auto`` or a range is chosen by each node at start.

The check is a bind: a port is free on this host when a socket of the pool's protocol
binds to it on every published address (an address this host does not own, behind
NAT say, is checked as the wildcard). SO_REUSEADDR is set as servers set it, so a
port whose last connections linger in TIME_WAIT counts as free, while one with a
listener does not. Nothing is held after the check: the application binds the port
itself, moments later; a port taken in between is the application's error to report,
as it would be with a fixed port.

Sticky: a node that still has a claim from an earlier boot (a crash, a restart within
the TTL) keeps that claim's port when it is still free, as it keeps the slot. A range
search starts at a place derived from the node identity, so a node that restarts
after its claim expired usually lands on the same port too.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import zlib
from collections.abc import Iterator, Mapping, Sequence

from idstore.config import PoolSettings
from idstore.config.ports import PortSpec
from idstore.errors import IdstoreError

log = logging.getLogger(__name__)


class NoFreePort(IdstoreError):
    """Every port of a pool's range is in use on this host (a runtime error: exit 1)."""


class PortPicker:
    """Chooses this node's ports for ``pool``; ``choose`` is called with the ports of
    this identity's earlier claim (empty when there is none)."""

    def __init__(self, pool: PoolSettings, addresses: Sequence[str], node_id: str) -> None:
        self.pool = pool
        self.addresses = tuple(addresses)
        self.node_id = node_id
        self._socktype = socket.SOCK_DGRAM if pool.protocol == "udp" else socket.SOCK_STREAM

    @property
    def needed(self) -> bool:
        """Does any port of the pool have to be chosen (``auto`` or a range)?"""
        return any(s.fixed is None for s in self.pool.ports)

    def choose(self, previous: Mapping[str, int] | None = None) -> dict[str, int]:
        """Every named port of the pool: fixed ones as configured, the others a free one
        (the earlier claim's when it is still free). Raises NoFreePort."""
        previous = previous or {}
        out: dict[str, int] = {}
        for spec in self.pool.ports:
            if spec.fixed is not None:
                out[spec.name] = spec.fixed
                continue
            before = self.pool.member_port(previous, spec.name)
            out[spec.name] = self._pick(spec, before, set(out.values()))
        return out

    def _pick(self, spec: PortSpec, before: int | None, used: set[int]) -> int:
        if before is not None and spec.holds(before) and before not in used:
            if self.free(before):
                return before
            log.info("port %s (%s) of the earlier claim is in use; choosing another",
                     before, spec.name)  # fmt: skip
        for port in self._candidates(spec):
            if port not in used and self.free(port):
                return port
        where = "no port is free (the kernel found none)" if spec.auto else (
            f"every port of the range {spec.text()} is in use on this host"
        )  # fmt: skip
        raise NoFreePort(f"pools.{self.pool.name} port {spec.name}: {where}")

    def _candidates(self, spec: PortSpec) -> Iterator[int]:
        if spec.auto:
            for _ in range(16):  # the kernel's pick, checked on every published address
                port = self._kernel_port()
                if port:
                    yield port
            return
        size = spec.hi - spec.lo + 1
        # Start where this identity always starts: restarts land on the same port.
        start = zlib.crc32(f"{self.node_id}/{self.pool.name}/{spec.name}".encode()) % size
        for i in range(size):
            yield spec.lo + (start + i) % size

    def _kernel_port(self) -> int:
        host = self._check_hosts()[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, self._socktype) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
            return port

    def free(self, port: int) -> bool:
        """Can a server bind ``port`` on every published address?"""
        return all(self._binds(host, port) for host in self._check_hosts())

    def _check_hosts(self) -> list[str]:
        hosts = [a for a in self.addresses if _local(a)]
        if not hosts:  # published addresses this host does not own (NAT): the wildcard
            v6 = bool(self.addresses) and all(":" in a for a in self.addresses)
            hosts = ["::" if v6 else "0.0.0.0"]
        return hosts

    def _binds(self, host: str, port: int) -> bool:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, self._socktype) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                if self._socktype == socket.SOCK_STREAM:
                    s.listen(1)  # Linux reports some conflicts only at listen
            except OSError as e:
                if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                    log.debug("bind check of %s:%s: %s", host, port, e)
                return False
            return True


def _local(address: str) -> bool:
    """Does this host own ``address`` (can a socket bind to it)?"""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True
