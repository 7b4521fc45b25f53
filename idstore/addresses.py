"""Which addresses this node publishes when none is configured.

The node's primary address is the source address the kernel would use to reach the store
(so a node on several networks publishes the one its peers share with the store), else
the one of the default route. Connecting a UDP socket only asks the kernel for a route:
no packet is sent. Loopback and link-local addresses are never picked on their own.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# Documentation prefixes (RFC 5737 / RFC 3849): only used to ask for the default route.
_DEFAULT_ROUTE_PROBES = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}


def endpoint_host(endpoint: str) -> str | None:
    """``http://10.0.0.5:2379`` / ``10.0.0.5:2181`` / ``[::1]:2379`` -> the host part."""
    text = endpoint if "//" in endpoint else f"//{endpoint}"
    host = urlsplit(text).hostname
    return host or None


def route_source(destination: str, family: socket.AddressFamily) -> str | None:
    """The local address the kernel would use towards ``destination``, or None."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((destination, 9))
            return str(s.getsockname()[0])
    except OSError:
        return None


def usable(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def _resolve(host: str) -> list[tuple[socket.AddressFamily, str]]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)
    except OSError:
        return []
    return [(family, str(addr[0])) for family, _, _, _, addr in infos]


def detect(endpoints: Iterable[str] = ()) -> tuple[str, ...]:
    """This node's primary addresses: at most one IPv4 and one IPv6."""
    found: dict[socket.AddressFamily, str] = {}
    targets: list[tuple[socket.AddressFamily, str]] = []
    for ep in endpoints:
        host = endpoint_host(ep)
        if host:
            targets.extend(_resolve(host))
    targets.extend(_DEFAULT_ROUTE_PROBES.items())
    for family, dest in targets:
        if family in found:
            continue
        src = route_source(dest, family)
        if src and usable(src):
            found[family] = src
    result = tuple(found[f] for f in (socket.AF_INET, socket.AF_INET6) if f in found)
    log.debug("detected addresses %s", result)
    return result


_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's (primary) IPv4 address


def interface_of(addresses: Iterable[str]) -> str | None:
    """The name of the local interface holding one of ``addresses``, or None.

    IPv4 through the SIOCGIFADDR ioctl (an interface's primary address, the one a
    node publishes), IPv6 from /proc/net/if_inet6; no address tool is needed."""
    wanted = {ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses}
    for _, name in socket.if_nameindex():
        if any(ip.version == 4 for ip in wanted) and _ipv4_of(name) in wanted:
            return name
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 6:
            ip = ipaddress.ip_address(":".join(fields[0][i : i + 4] for i in range(0, 32, 4)))
            if ip in wanted:
                return fields[5]
    return None


def _ipv4_of(ifname: str) -> ipaddress.IPv4Address | None:
    request = struct.pack("256s", ifname[:15].encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, request)
        except OSError:  # no IPv4 address on that interface
            return None
    return ipaddress.IPv4Address(packed[20:24])
