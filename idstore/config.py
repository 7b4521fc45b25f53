"""Configuration: one TOML file identical on every node, plus IDSTORE_* and CLI overrides.

Precedence: command-line flags > environment > file > defaults. Every invalid value
raises ConfigError naming the key (as written in the file, e.g. ``pools.worker.limit``),
the value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idstore.backends.base import StoreOptions
from idstore.errors import ConfigError
from idstore.pattern import Pattern, check_name, normalize_name

DEFAULT_PATTERN = "node{{.ID}}.idstore.local."
MIN_TTL = 2.0  # below this a lease/session can lapse between two keepalives on a busy host
MAX_UDP = 1232  # RFC 9715 / DNS flag day 2020: the largest UDP reply we ever send

_POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


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
class DnsSettings:
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 5353),)
    zone: str = "idstore.local."
    ttl: int = 5  # TTL of positive answers
    negative_ttl: int = 5  # SOA minimum: how long resolvers cache NXDOMAIN / NODATA
    reverse_zones: tuple[str, ...] = ()  # e.g. "2.0.192.in-addr.arpa."
    forward: tuple[str, ...] = ()  # upstream resolvers ("host" or "host:port")
    forward_timeout: float = 2.0
    stale_ttl: int = 30  # answer TTL while serving a stale view (RFC 8767)
    max_stale: float = 120.0  # after this long without the store: SERVFAIL
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 256
    rrl_per_second: int = 0  # responses per second per client /24 (/56); 0 = off
    log_queries: bool = False
    transfer_allow: tuple[str, ...] = ()  # networks allowed AXFR over TCP; none by default


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


# --------------------------------------------------------------------------- loading

# Flat override name -> environment variable. CLI flags use the same flat names.
ENV_VARS = {
    "config": "IDSTORE_CONFIG",
    "backend": "IDSTORE_BACKEND",
    "endpoints": "IDSTORE_ENDPOINTS",
    "pool": "IDSTORE_POOL",
    "pattern": "IDSTORE_PATTERN",
    "limit": "IDSTORE_LIMIT",
    "ttl": "IDSTORE_TTL",
    "node_id": "IDSTORE_NODE_ID",
    "address": "IDSTORE_ADDRESS",
    "listen": "IDSTORE_LISTEN",
    "http": "IDSTORE_HTTP",
    "cluster": "IDSTORE_CLUSTER",
    "log_level": "IDSTORE_LOG_LEVEL",
    "log_format": "IDSTORE_LOG_FORMAT",
    "log_queries": "IDSTORE_LOG_QUERIES",
}
_LIST_OVERRIDES = {"endpoints", "address", "listen"}

_TOP_KEYS = {
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
_POOL_KEYS = {"pattern", "limit", "first", "port", "service", "protocol"}
_DNS_KEYS = {
    "listen",
    "zone",
    "ttl",
    "negative_ttl",
    "reverse_zones",
    "forward",
    "forward_timeout",
    "stale_ttl",
    "max_stale",
    "tcp_idle_timeout",
    "tcp_max_connections",
    "rrl_per_second",
    "log_queries",
    "transfer_allow",
}
_STORE_KEYS = {"tls_ca", "tls_cert", "tls_key", "username", "password", "etcd", "zookeeper"}


def read_file(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError("config", str(path), "no such file") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("config", str(path), f"is not valid TOML: {e}") from e


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, var in ENV_VARS.items():
        if var in environ and environ[var] != "":
            value = environ[var]
            out[key] = (
                [v.strip() for v in value.split(",") if v.strip()]
                if (key in _LIST_OVERRIDES)
                else value
            )
    return out


def load(
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    raw: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from a file's table (``raw``, or the file named by config), env and CLI."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None and v != []}
    env = env_overrides(os.environ if environ is None else environ)
    flat = {**env, **cli}
    if raw is None:
        path = flat.get("config")
        raw = read_file(path) if path else {}
    merged = _apply_overrides(_deep_copy(raw), flat)
    return _build(merged)


def _deep_copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def _apply_overrides(raw: dict[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    for key in ("backend", "pool", "ttl", "node_id", "http", "cluster", "log_level", "log_format"):
        if key in flat:
            raw[key] = flat[key]
    if "endpoints" in flat:
        raw["endpoints"] = flat["endpoints"]
    if "address" in flat:
        raw["addresses"] = flat["address"]
    if "listen" in flat:
        raw.setdefault("dns", {})["listen"] = flat["listen"]
    if "log_queries" in flat:
        value = flat["log_queries"]
        on = value is True or str(value).strip().lower() in ("1", "true", "yes", "on")
        raw.setdefault("dns", {})["log_queries"] = on
    if "pattern" in flat or "limit" in flat:
        pools = raw.setdefault("pools", {})
        if not isinstance(pools, dict):
            raise ConfigError("pools", pools, "must be a table of pools, e.g. [pools.worker]")
        name = flat.get("pool") or raw.get("pool") or next(iter(pools), None)
        if name is None:
            name = _pool_name_from_pattern(str(flat.get("pattern", DEFAULT_PATTERN)))
            raw.setdefault("pool", name)
        pool = pools.setdefault(name, {})
        for key in ("pattern", "limit"):
            if key in flat:
                pool[key] = flat[key]
    return raw


def _pool_name_from_pattern(pattern: str) -> str:
    """``worker{{.ID}}.tf.local.`` -> ``worker``: a pool named after its names."""
    first_label = re.sub(r"\{\{.*?\}\}", "", pattern).split(".", 1)[0]
    base = first_label.strip("-_").lower()
    return base if _POOL_NAME.match(base or "-") else "default"


# --------------------------------------------------------------------------- checking


def _unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{where}{key}",
                table[key],
                f"unknown key; known keys: {', '.join(sorted(allowed))}",
            )


def _int(value: Any, key: str, lo: int, hi: int | None = None) -> int:
    try:
        n = int(value)
        if isinstance(value, float | bool) or str(n) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(key, value, "must be a whole number") from None
    if n < lo or (hi is not None and n > hi):
        raise ConfigError(
            key,
            value,
            f"must be between {lo} and {hi}" if hi is not None else f"must be at least {lo}",
        )
    return n


def _float(value: Any, key: str, lo: float) -> float:
    try:
        x = float(value)
        if isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(key, value, "must be a number of seconds") from None
    if not x >= lo:  # also rejects NaN
        raise ConfigError(key, value, f"must be at least {lo:g}")
    return x


def _str_list(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, value, "must be a list of strings")
    return tuple(value)


def parse_hostport(text: str, key: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or (with a default port) a bare address."""
    text = text.strip()
    m = re.match(r"^\[([0-9a-fA-F:.%\w]+)\](?::(\d+))?$", text) or re.match(
        r"^([^:\[\]]+)(?::(\d+))?$", text
    )
    if not m or (m.group(2) is None and default_port is None):
        raise ConfigError(key, text, "must be HOST:PORT, e.g. 127.0.0.1:5353 or [::1]:5353")
    host, port = m.group(1), m.group(2)
    if host not in ("localhost",):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(key, text, "HOST must be an IPv4 or IPv6 address") from None
    return host, _int(port if port is not None else default_port, key, 0, 65535)


def _build(raw: dict[str, Any]) -> Settings:
    _unknown(raw, _TOP_KEYS, "")
    backend = str(raw.get("backend", "memory"))
    ttl = _float(raw.get("ttl", 10.0), "ttl", 0.0)
    if ttl < MIN_TTL:
        raise ConfigError(
            "ttl",
            raw.get("ttl"),
            f"must be at least {MIN_TTL:g} seconds: the store renews "
            "every ttl/3, and shorter leases lapse on any pause of the host",
        )
    store = _store_options(raw, ttl)
    pools = _pools(raw)
    pool = str(raw.get("pool") or pools[0].name)
    if pool not in {p.name for p in pools}:
        raise ConfigError(
            "pool", pool, f"not a configured pool; pools: {', '.join(p.name for p in pools)}"
        )
    dns = _dns(raw.get("dns", {}), pools)
    addresses = _addresses(raw.get("addresses", []))
    http = parse_hostport(str(raw["http"]), "http") if raw.get("http") else None
    log_level = str(raw.get("log_level", "info")).lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level", log_level, "must be debug, info, warning or error")
    log_format = str(raw.get("log_format", "text"))
    if log_format not in ("text", "json"):
        raise ConfigError("log_format", log_format, "must be text or json")
    return Settings(
        backend=backend,
        store=store,
        pools=pools,
        pool=pool,
        node_id=str(raw.get("node_id") or default_node_id()),
        addresses=addresses,
        dns=dns,
        http=http,
        log_level=log_level,
        log_format=log_format,
        state_dir=str(raw["state_dir"]) if raw.get("state_dir") else None,
    )


def _store_options(raw: Mapping[str, Any], ttl: float) -> StoreOptions:
    st = raw.get("store", {})
    if not isinstance(st, dict):
        raise ConfigError("store", st, "must be a table ([store])")
    _unknown(st, _STORE_KEYS, "store.")
    backend = str(raw.get("backend", "memory"))
    extra = st.get(backend if backend != "zk" else "zookeeper", {})
    if not isinstance(extra, dict):
        raise ConfigError(f"store.{backend}", extra, "must be a table")
    prefix = str(raw.get("prefix", "/idstore"))
    if not prefix.startswith("/"):
        raise ConfigError("prefix", prefix, "must start with '/', e.g. /idstore")
    cluster = str(raw.get("cluster", "default"))
    if not _POOL_NAME.match(cluster):
        raise ConfigError("cluster", cluster, "must be lower-case letters, digits, '-' or '_'")
    opt = {
        k: str(st[k])
        for k in ("tls_ca", "tls_cert", "tls_key", "username", "password")
        if st.get(k)
    }
    return StoreOptions(
        endpoints=_str_list(raw.get("endpoints", []), "endpoints"),
        ttl=ttl,
        prefix=prefix,
        cluster=cluster,
        request_timeout=_float(raw.get("request_timeout", 5.0), "request_timeout", 0.1),
        connect_timeout=_float(raw.get("connect_timeout", 30.0), "connect_timeout", 0.1),
        extra=extra,
        **opt,
    )


def _pools(raw: Mapping[str, Any]) -> tuple[PoolSettings, ...]:
    table = raw.get("pools")
    if table is None:
        table = {_pool_name_from_pattern(DEFAULT_PATTERN): {"pattern": DEFAULT_PATTERN}}
    if not isinstance(table, dict) or not table:
        raise ConfigError("pools", table, "must define at least one pool, e.g. [pools.worker]")
    pools = []
    for name, body in table.items():
        where = f"pools.{name}."
        if not _POOL_NAME.match(name):
            raise ConfigError(
                f"pools.{name}",
                name,
                "pool names are lower-case letters, digits, '-' or '_' (at most 63)",
            )
        if not isinstance(body, dict):
            raise ConfigError(f"pools.{name}", body, "must be a table")
        _unknown(body, _POOL_KEYS, where)
        if "pattern" not in body:
            raise ConfigError(
                where + "pattern", None, "is required, e.g. 'worker{{.ID}}.tf.local.'"
            )
        pattern = Pattern.parse(str(body["pattern"]), where + "pattern")
        limit = _int(body.get("limit", 64), where + "limit", 1, 1_000_000)
        first = _int(body.get("first", 0), where + "first", 0)
        pattern.validate(first, limit, where + "pattern")
        port = _int(body["port"], where + "port", 1, 65535) if "port" in body else None
        service = str(body.get("service", "grpc"))
        protocol = str(body.get("protocol", "tcp"))
        for key, val in (("service", service), ("protocol", protocol)):
            if not re.match(r"^[a-z0-9][a-z0-9-]{0,14}$", val):
                raise ConfigError(where + key, val, "must be a short lower-case label, e.g. grpc")
        pools.append(PoolSettings(name, pattern, limit, first, port, service, protocol))
    _check_disjoint(pools)
    return tuple(pools)


def _check_disjoint(pools: list[PoolSettings]) -> None:
    """Two pools must never render the same name (they would fight over DNS answers)."""
    seen: dict[str, str] = {}
    for p in pools:
        for slot in (p.first, p.first + p.limit - 1):
            name = p.name_of(slot)
            if seen.get(name, p.name) != p.name:
                raise ConfigError(
                    f"pools.{p.name}.pattern",
                    p.pattern.source,
                    f"renders {name}, which pool {seen[name]} renders too",
                )
            seen[name] = p.name


def _dns(table: Any, pools: tuple[PoolSettings, ...]) -> DnsSettings:
    if not isinstance(table, dict):
        raise ConfigError("dns", table, "must be a table ([dns])")
    _unknown(table, _DNS_KEYS, "dns.")
    listen = tuple(
        parse_hostport(x, "dns.listen")
        for x in _str_list(table.get("listen", ["127.0.0.1:5353"]), "dns.listen")
    )
    zone = normalize_name(str(table.get("zone") or pools[0].pattern.parent()))
    if zone != "." and (why := check_name(zone)):
        raise ConfigError("dns.zone", zone, why)
    for p in pools:
        name = p.name_of(p.first)
        if zone != "." and not name.endswith("." + zone):
            raise ConfigError(
                f"pools.{p.name}.pattern",
                p.pattern.source,
                f"renders {name}, outside the zone {zone}; set dns.zone to a "
                "domain that holds every pool",
            )
    reverse = tuple(
        normalize_name(z) for z in _str_list(table.get("reverse_zones", []), "dns.reverse_zones")
    )
    for z in reverse:
        if not (z.endswith(".in-addr.arpa.") or z.endswith(".ip6.arpa.")):
            raise ConfigError("dns.reverse_zones", z, "must end in .in-addr.arpa or .ip6.arpa")
    forward = _str_list(table.get("forward", []), "dns.forward")
    for f in forward:
        if f != "resolv.conf":
            parse_hostport(f, "dns.forward", 53)
    return DnsSettings(
        listen=listen,
        zone=zone,
        ttl=_int(table.get("ttl", 5), "dns.ttl", 0, 86400),
        negative_ttl=_int(table.get("negative_ttl", 5), "dns.negative_ttl", 0, 86400),
        reverse_zones=reverse,
        forward=forward,
        forward_timeout=_float(table.get("forward_timeout", 2.0), "dns.forward_timeout", 0.1),
        stale_ttl=_int(table.get("stale_ttl", 30), "dns.stale_ttl", 0, 30),
        max_stale=_float(table.get("max_stale", 120.0), "dns.max_stale", 0.0),
        tcp_idle_timeout=_float(table.get("tcp_idle_timeout", 10.0), "dns.tcp_idle_timeout", 0.1),
        tcp_max_connections=_int(
            table.get("tcp_max_connections", 256), "dns.tcp_max_connections", 1
        ),
        rrl_per_second=_int(table.get("rrl_per_second", 0), "dns.rrl_per_second", 0),
        log_queries=bool(table.get("log_queries", False)),
        transfer_allow=_networks(table.get("transfer_allow", []), "dns.transfer_allow"),
    )


def _networks(value: Any, key: str) -> tuple[str, ...]:
    """Networks (``10.0.0.0/8``, ``fd00::/8``, or one address) in canonical form."""
    out = []
    for text in _str_list(value, key):
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError as e:
            raise ConfigError(key, text, f"not an IP network: {e}") from None
    return tuple(out)


def _addresses(value: Any) -> tuple[str, ...]:
    out = []
    for a in _str_list(value, "addresses"):
        try:
            out.append(str(ipaddress.ip_address(a)))
        except ValueError:
            raise ConfigError("addresses", a, "must be an IPv4 or IPv6 address") from None
    return tuple(out)


def default_node_id() -> str:
    """/etc/machine-id when present (stable across reboots), else the host name."""
    try:
        mid = Path("/etc/machine-id").read_text().strip()
        if mid:
            return mid
    except OSError:
        pass
    return socket.gethostname()
