"""The ``[dns]`` section of the configuration: its keys, defaults and checks.

Everything about ``dns.*`` lives in this one module (the settings type, the set of known
keys and the checks), so a new DNS key is one change here: a field of DnsSettings, its
name in DNS_KEYS and its check in dns_settings().
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from idstore.config.values import as_float, as_int, check_known, parse_hostport, str_list
from idstore.errors import ConfigError
from idstore.pattern import check_name, normalize_name

if TYPE_CHECKING:
    from idstore.config.schema import PoolSettings

MAX_UDP = 1232  # RFC 9715 / DNS flag day 2020: the largest UDP reply we ever send


@dataclass(frozen=True)
class DnsSettings:
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 5353),)
    zone: str = "idstore.internal."
    ttl: int = 5  # TTL of positive answers
    negative_ttl: int = 5  # SOA minimum: how long resolvers cache NXDOMAIN / NODATA
    reverse_zones: tuple[str, ...] = ()
    # reverse_zones not set: PTR for every published address, in zones derived from the
    # claims (idstore.dns.reverse); set (even to []) it is exactly what is served
    reverse_auto: bool = True  # e.g. "2.0.192.in-addr.arpa."
    forward: tuple[str, ...] = ()  # upstream resolvers ("host" or "host:port")
    forward_timeout: float = 2.0
    stale_ttl: int = 30  # answer TTL while serving a stale view (RFC 8767)
    max_stale: float = 120.0  # after this long without the store: SERVFAIL
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 256
    rrl_per_second: int = 0  # responses per second per client /24 (/56); 0 = off
    log_queries: bool = False
    # After a store outage, a freed name keeps its last owner until the store has been
    # back this long, so live nodes re-claim before anyone answers NXDOMAIN for them
    # (idstore.continuity); 0 = off.
    reclaim_grace: float = 5.0
    transfer_allow: tuple[str, ...] = ()  # networks allowed AXFR over TCP; none by default


DNS_KEYS = {
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
    "reclaim_grace",
    "transfer_allow",
}


def dns_settings(table: Any, pools: Sequence[PoolSettings]) -> DnsSettings:
    """The checked ``[dns]`` table; ``pools`` decide the default zone and must lie in it."""
    if not isinstance(table, dict):
        raise ConfigError("dns", table, "must be a table ([dns])")
    check_known(table, DNS_KEYS, "dns.")
    listen = tuple(
        parse_hostport(x, "dns.listen")
        for x in str_list(table.get("listen", ["127.0.0.1:5353"]), "dns.listen")
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
        normalize_name(z) for z in str_list(table.get("reverse_zones", []), "dns.reverse_zones")
    )
    for z in reverse:
        if not (z.endswith(".in-addr.arpa.") or z.endswith(".ip6.arpa.")):
            raise ConfigError("dns.reverse_zones", z, "must end in .in-addr.arpa or .ip6.arpa")
    forward = str_list(table.get("forward", []), "dns.forward")
    for f in forward:
        if f != "resolv.conf":
            parse_hostport(f, "dns.forward", 53)
    return DnsSettings(
        listen=listen,
        zone=zone,
        ttl=as_int(table.get("ttl", 5), "dns.ttl", 0, 86400),
        negative_ttl=as_int(table.get("negative_ttl", 5), "dns.negative_ttl", 0, 86400),
        reverse_zones=reverse,
        reverse_auto="reverse_zones" not in table,
        forward=forward,
        forward_timeout=as_float(table.get("forward_timeout", 2.0), "dns.forward_timeout", 0.1),
        stale_ttl=as_int(table.get("stale_ttl", 30), "dns.stale_ttl", 0, 30),
        max_stale=as_float(table.get("max_stale", 120.0), "dns.max_stale", 0.0),
        tcp_idle_timeout=as_float(
            table.get("tcp_idle_timeout", 10.0), "dns.tcp_idle_timeout", 0.1
        ),
        tcp_max_connections=as_int(
            table.get("tcp_max_connections", 256), "dns.tcp_max_connections", 1
        ),
        rrl_per_second=as_int(table.get("rrl_per_second", 0), "dns.rrl_per_second", 0),
        log_queries=bool(table.get("log_queries", False)),
        reclaim_grace=as_float(table.get("reclaim_grace", 5.0), "dns.reclaim_grace", 0.0),
        transfer_allow=_networks(table.get("transfer_allow", []), "dns.transfer_allow"),
    )


def _networks(value: Any, key: str) -> tuple[str, ...]:
    """Networks (``10.0.0.0/8``, ``fd00::/8``, or one address) in canonical form."""
    out = []
    for text in str_list(value, key):
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError as e:
            raise ConfigError(key, text, f"not an IP network: {e}") from None
    return tuple(out)
