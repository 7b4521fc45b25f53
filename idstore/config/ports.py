"""A pool's ports: ``port = 9000``, ``port = "auto"``, ``port = "20000-20999"`` or
several named ones, ``ports = { grpc = "auto", master = 29500 }``.

A fixed number is the same on every node (as before). ``auto`` and a range are chosen by
each node at start (idstore.portpick) and published in its claim, because with host
networking a fixed port collides with whatever else runs on the host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from idstore.errors import ConfigError

AUTO = "auto"
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
# A port's name becomes an SRV service label: _<name>._tcp.<pool>.<zone>
PORT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,14}$")


@dataclass(frozen=True)
class PortSpec:
    """One named port of a pool: ``fixed`` when a number, else chosen in lo..hi
    (``auto``: lo = hi = 0, the kernel's choice)."""

    name: str
    fixed: int | None = None
    lo: int = 0
    hi: int = 0

    @property
    def auto(self) -> bool:
        return self.fixed is None and self.lo == 0

    def text(self) -> str:
        """As written in the file: 9000, "auto" or "20000-20999"."""
        if self.fixed is not None:
            return str(self.fixed)
        return AUTO if self.auto else f"{self.lo}-{self.hi}"

    def holds(self, port: int) -> bool:
        """May ``port`` be this spec's port (the sticky port of an earlier boot)?"""
        if self.fixed is not None:
            return port == self.fixed
        return 1 <= port <= 65535 if self.auto else self.lo <= port <= self.hi


def port_spec(name: str, value: Any, key: str) -> PortSpec:
    """A number, ``"auto"`` or ``"LO-HI"``; anything else is a ConfigError naming ``key``."""
    if isinstance(value, bool):
        raise ConfigError(key, value, _ALLOWED)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        n = int(value)
        if not 1 <= n <= 65535:
            raise ConfigError(key, value, "a port number must be between 1 and 65535")
        return PortSpec(name, fixed=n)
    if not isinstance(value, str):
        raise ConfigError(key, value, _ALLOWED)
    if value.strip().lower() == AUTO:
        return PortSpec(name)
    m = _RANGE.match(value)
    if not m:
        raise ConfigError(key, value, _ALLOWED)
    lo, hi = int(m.group(1)), int(m.group(2))
    if not 1 <= lo <= hi <= 65535:
        raise ConfigError(
            key, value, "a range is LO-HI with 1 <= LO <= HI <= 65535 (it must not be empty)"
        )
    return PortSpec(name, lo=lo, hi=hi)


_ALLOWED = 'must be a port number, "auto" or a range "LO-HI" such as "20000-20999"'


def pool_ports(
    body: Mapping[str, Any], where: str, service: str, service_given: bool
) -> tuple[tuple[PortSpec, ...], str]:
    """The pool's ports and the name of its primary one (TF_CONFIG's, IDSTORE_PORT's,
    the ``_<service>`` SRV's).

    ``port`` is one port named after ``service``; ``ports`` names several, and the
    primary is ``service`` when it names one of them, else the first."""
    if "port" in body and "ports" in body:
        raise ConfigError(where + "ports", body["ports"], f"give either {where}port or ports")
    if "port" in body:
        return (port_spec(service, body["port"], where + "port"),), service
    table = body.get("ports")
    if table is None:
        return (), service
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(
            where + "ports", table, 'must be a table of named ports, e.g. { grpc = "auto" }'
        )
    specs = []
    for name, value in table.items():
        if not PORT_NAME.match(str(name)):
            raise ConfigError(
                f"{where}ports.{name}", value, "port names are short lower-case labels, e.g. grpc"
            )
        specs.append(port_spec(str(name), value, f"{where}ports.{name}"))
    names = [s.name for s in specs]
    if service_given and service not in names:
        raise ConfigError(where + "service", service, f"must name one of ports: {', '.join(names)}")
    return tuple(specs), service if service in names else names[0]
