"""From a merged table (file + env + flags) to checked Settings.

Every invalid value raises ConfigError naming the key as written in the file, the value
and what is allowed; the ``[dns]`` table is checked by idstore.config.dns.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idstore.backends.base import MIN_TTL, StoreOptions
from idstore.config.dns import dns_settings
from idstore.config.hints import prefer_mode, prefer_slot
from idstore.config.ports import pool_ports
from idstore.config.schema import (
    DEFAULT_PATTERN,
    POOL_KEYS,
    STORE_KEYS,
    TOP_KEYS,
    PoolSettings,
    Settings,
)
from idstore.config.values import NAME_RE, as_float, as_int, check_known, parse_hostport, str_list
from idstore.errors import ConfigError
from idstore.pattern import Pattern


def build(raw: dict[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Checked Settings; ``environ`` is where ``prefer_slot = "env:NAME"`` looks."""
    check_known(raw, TOP_KEYS, "")
    backend = str(raw.get("backend", "memory"))
    ttl = as_float(raw.get("ttl", 10.0), "ttl", 0.0)
    if ttl < MIN_TTL:
        raise ConfigError(
            "ttl",
            raw.get("ttl"),
            f"must be at least {MIN_TTL:g} seconds: the store renews "
            "every ttl/3, and shorter leases lapse on any pause of the host",
        )
    store = store_options(raw, ttl)
    pools = pool_table(raw)
    pool = str(raw.get("pool") or pools[0].name)
    if pool not in {p.name for p in pools}:
        raise ConfigError(
            "pool", pool, f"not a configured pool; pools: {', '.join(p.name for p in pools)}"
        )
    dns = dns_settings(raw.get("dns", {}), pools)
    addresses = address_list(raw.get("addresses", []))
    http = parse_hostport(str(raw["http"]), "http") if raw.get("http") else None
    log_level = str(raw.get("log_level", "info")).lower()
    if log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level", log_level, "must be debug, info, warning or error")
    log_format = str(raw.get("log_format", "text"))
    if log_format not in ("text", "json"):
        raise ConfigError("log_format", log_format, "must be text or json")
    hint = prefer_slot(
        raw.get("prefer_slot"),
        "prefer_slot",
        os.environ if environ is None else environ,
        next(p for p in pools if p.name == pool).slots(),
    )
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
        prefer_slot=hint,
        prefer=prefer_mode(raw.get("prefer", "fallback"), "prefer"),
    )


def store_options(raw: Mapping[str, Any], ttl: float) -> StoreOptions:
    st = raw.get("store", {})
    if not isinstance(st, dict):
        raise ConfigError("store", st, "must be a table ([store])")
    check_known(st, STORE_KEYS, "store.")
    backend = str(raw.get("backend", "memory"))
    extra = st.get(backend if backend != "zk" else "zookeeper", {})
    if not isinstance(extra, dict):
        raise ConfigError(f"store.{backend}", extra, "must be a table")
    prefix = str(raw.get("prefix", "/idstore"))
    if not prefix.startswith("/"):
        raise ConfigError("prefix", prefix, "must start with '/', e.g. /idstore")
    cluster = str(raw.get("cluster", "default"))
    if not NAME_RE.match(cluster):
        raise ConfigError("cluster", cluster, "must be lower-case letters, digits, '-' or '_'")
    opt = {
        k: str(st[k])
        for k in ("tls_ca", "tls_cert", "tls_key", "username", "password")
        if st.get(k)
    }
    return StoreOptions(
        endpoints=str_list(raw.get("endpoints", []), "endpoints"),
        ttl=ttl,
        prefix=prefix,
        cluster=cluster,
        request_timeout=as_float(raw.get("request_timeout", 5.0), "request_timeout", 0.1),
        connect_timeout=as_float(raw.get("connect_timeout", 30.0), "connect_timeout", 0.1),
        extra=extra,
        **opt,
    )


def pool_table(raw: Mapping[str, Any]) -> tuple[PoolSettings, ...]:
    table = raw.get("pools")
    if table is None:
        table = {pool_name_from_pattern(DEFAULT_PATTERN): {"pattern": DEFAULT_PATTERN}}
    if not isinstance(table, dict) or not table:
        raise ConfigError("pools", table, "must define at least one pool, e.g. [pools.worker]")
    pools = []
    for name, body in table.items():
        where = f"pools.{name}."
        if not NAME_RE.match(name):
            raise ConfigError(
                f"pools.{name}",
                name,
                "pool names are lower-case letters, digits, '-' or '_' (at most 63)",
            )
        if not isinstance(body, dict):
            raise ConfigError(f"pools.{name}", body, "must be a table")
        check_known(body, POOL_KEYS, where)
        if "pattern" not in body:
            raise ConfigError(
                where + "pattern", None, "is required, e.g. 'worker{{.ID}}.tf.local.'"
            )
        pattern = Pattern.parse(str(body["pattern"]), where + "pattern")
        limit = as_int(body.get("limit", 64), where + "limit", 1, 1_000_000)
        first = as_int(body.get("first", 0), where + "first", 0)
        pattern.validate(first, limit, where + "pattern")
        _check_zone_above(pattern, first, where + "pattern")
        service = str(body.get("service", "grpc"))
        protocol = str(body.get("protocol", "tcp"))
        for key, val in (("service", service), ("protocol", protocol)):
            if not re.match(r"^[a-z0-9][a-z0-9-]{0,14}$", val):
                raise ConfigError(where + key, val, "must be a short lower-case label, e.g. grpc")
        ports, service = pool_ports(body, where, service, "service" in body)
        primary = next((s for s in ports if s.name == service), None)
        port = primary.fixed if primary is not None else None
        pools.append(PoolSettings(name, pattern, limit, first, port, service, protocol, ports))
    _check_disjoint(pools)
    return tuple(pools)


def _check_zone_above(pattern: Pattern, first: int, key: str) -> None:
    """``w{{.ID}}`` would make idstore authoritative for the root zone, answering
    NXDOMAIN for every name on the Internet: a name needs a domain above it."""
    name = pattern.render(first)
    if name.count(".") < 2:
        raise ConfigError(
            key,
            pattern.source,
            f"renders {name!r}, a name with no zone above it (idstore would answer for "
            "every domain); add one, e.g. 'worker{{.ID}}.cluster.internal.'",
        )


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


def pool_name_from_pattern(pattern: str) -> str:
    """``worker{{.ID}}.tf.local.`` -> ``worker``: a pool named after its names."""
    first_label = re.sub(r"\{\{.*?\}\}", "", pattern).split(".", 1)[0]
    base = first_label.strip("-_").lower()
    return base if NAME_RE.match(base or "-") else "default"


def address_list(value: Any) -> tuple[str, ...]:
    out = []
    for a in str_list(value, "addresses"):
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
