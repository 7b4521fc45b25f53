"""What a checked configuration is: the settings types and the keys a file may hold.

The ``[dns]`` section has its own module (idstore.config.dns); loading and checking are
in idstore.config.loading and idstore.config.build.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from idstore.backends.base import StoreOptions
from idstore.config.dns import DnsSettings
from idstore.config.ports import PortSpec
from idstore.errors import ConfigError
from idstore.pattern import Pattern

# .internal: reserved by ICANN (2024) for private use. Not .local, which belongs to
# multicast DNS (RFC 6762): with nss-mdns or systemd-resolved's mDNS a host may never
# ask idstore about a .local name. tf.local in a user's own pattern still works.
DEFAULT_PATTERN = "node{{.ID}}.idstore.internal."
# The name under which the previous release published a pool's one port in its claims.
LEGACY_PORT_NAME = "app"


@dataclass(frozen=True)
class PoolSettings:
    """One role of the cluster (``worker``, ``ps``): its names and how many there may be."""

    name: str
    pattern: Pattern
    limit: int
    first: int = 0
    # The primary port's number when it is fixed (the same on every node); None when it
    # is chosen per node ("auto", a range) or not set: then each claim publishes its own.
    port: int | None = None
    # The primary port's name, SRV owner: _<service>._<protocol>.<pool>.<zone>
    service: str = "grpc"
    protocol: str = "tcp"
    ports: tuple[PortSpec, ...] = ()  # every named port, the primary among them

    def __post_init__(self) -> None:
        # Made with a fixed ``port`` only (as before named ports existed): that port is
        # the pool's one named port, so every reader can go by ``ports``.
        if self.port is not None and not self.ports:
            object.__setattr__(self, "ports", (PortSpec(self.service, fixed=self.port),))

    def port_spec(self, name: str | None = None) -> PortSpec | None:
        wanted = name or self.service
        return next((s for s in self.ports if s.name == wanted), None)

    def member_port(self, published: Mapping[str, int], name: str | None = None) -> int | None:
        """A member's port ``name`` (default: the primary): the one its claim publishes,
        else the pool's fixed number. A claim of the previous release publishes its one
        port as ``app``."""
        wanted = name or self.service
        if wanted in published:
            return published[wanted]
        if wanted == self.service and LEGACY_PORT_NAME in published:
            return published[LEGACY_PORT_NAME]
        spec = self.port_spec(wanted)
        return spec.fixed if spec is not None else None

    def slots(self) -> range:
        return range(self.first, self.first + self.limit)

    def name_of(self, slot: int) -> str:
        return self.pattern.render(slot)


@dataclass(frozen=True)
class Settings:
    backend: str = "memory"
    store: StoreOptions = field(default_factory=StoreOptions)
    pools: tuple[PoolSettings, ...] = ()
    pool: str = ""  # the pool this node joins
    node_id: str = ""
    addresses: tuple[str, ...] = ()
    dns: DnsSettings = field(default_factory=DnsSettings)
    http: tuple[str, int] | None = None
    log_level: str = "info"
    log_format: str = "text"
    state_dir: str | None = None
    prefer_slot: int | None = None  # the slot this node tries first (a scheduler's index)
    prefer: str = "fallback"  # hinted slot held by another: "fallback" in line, or "require"

    def pool_settings(self, name: str | None = None) -> PoolSettings:
        wanted = name or self.pool
        for p in self.pools:
            if p.name == wanted:
                return p
        raise ConfigError("pool", wanted, f"not a configured pool; pools: {self.pool_names()}")

    def pool_names(self) -> str:
        return ", ".join(p.name for p in self.pools)


# The keys each table may hold (the [dns] table's are idstore.config.dns.DNS_KEYS).
TOP_KEYS = {
    "backend",
    "endpoints",
    "cluster",
    "prefix",
    "ttl",
    "request_timeout",
    "connect_timeout",
    "pool",
    "node_id",
    "addresses",
    "http",
    "log_level",
    "log_format",
    "state_dir",
    "prefer_slot",
    "prefer",
    "pools",
    "dns",
    "store",
}
POOL_KEYS = {"pattern", "limit", "first", "port", "ports", "service", "protocol"}
STORE_KEYS = {"tls_ca", "tls_cert", "tls_key", "username", "password", "etcd", "zookeeper"}
