"""Checks of single values, shared by every section of the configuration.

Each raises ConfigError naming the key as written in the file (``pools.worker.limit``),
the value and what is allowed, so a bad file is fixed from the message alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from idstore.errors import ConfigError

# Pool and cluster names: they become DNS labels and store key segments.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_known(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Unknown keys are errors: a typo must not pass silently as a default."""
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{where}{key}",
                table[key],
                f"unknown key; known keys: {', '.join(sorted(allowed))}",
            )


def as_int(value: Any, key: str, lo: int, hi: int | None = None) -> int:
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


def as_float(value: Any, key: str, lo: float) -> float:
    try:
        x = float(value)
        if isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(key, value, "must be a number of seconds") from None
    if not x >= lo:  # also rejects NaN
        raise ConfigError(key, value, f"must be at least {lo:g}")
    return x


def str_list(value: Any, key: str) -> tuple[str, ...]:
    """A list of strings; a comma-separated string (from env or a flag) is split."""
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
    return host, as_int(port if port is not None else default_port, key, 0, 65535)
