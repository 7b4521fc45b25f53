"""What a checked configuration is: the settings types and the keys a file may hold.

The ``[dns]`` section has its own module (idstore.config.dns); loading and checking are
in idstore.config.loading and idstore.config.build.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from idstore.backends.base import StoreOptions
from idstore.config.dns import DnsSettings
from idstore.errors import ConfigError
from idstore.pattern import Pattern

DEFAULT_PATTERN = "node{{.ID}}.idstore.local."


@dataclass(frozen=True)
class PoolSettings:
    """One role of the cluster (``worker``, ``ps``): its names and how many there may be."""

    name: str
    pattern: Pattern
    limit: int
    first: int = 0
    port: int | None = None  # the application's port, published in SRV records
    service: str = "grpc"  # SRV owner: _<service>._<protocol>.<pool>.<zone>
    protocol: str = "tcp"

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
    "pools",
    "dns",
    "store",
}
POOL_KEYS = {"pattern", "limit", "first", "port", "service", "protocol"}
STORE_KEYS = {"tls_ca", "tls_cert", "tls_key", "username", "password", "etcd", "zookeeper"}
