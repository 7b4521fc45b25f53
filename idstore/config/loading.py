"""Where settings come from: the TOML file, IDSTORE_* variables and command-line flags.

Precedence: command-line flags > environment > file > defaults. The flags and variables
use flat names (``pattern``, ``listen``) that land at their place in the file's tables
before the whole is checked once (idstore.config.build).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idstore.config.build import build, pool_name_from_pattern
from idstore.config.schema import DEFAULT_PATTERN, Settings
from idstore.errors import ConfigError

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
    "prefer_slot": "IDSTORE_PREFER_SLOT",
    "prefer": "IDSTORE_PREFER",
}
_LIST_OVERRIDES = {"endpoints", "address", "listen"}


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
    hints_from: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from a file's table (``raw``, or the file named by config), env and CLI.

    ``prefer_slot = "env:NAME"`` reads ``hints_from`` (default: ``environ``)."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None and v != []}
    env = env_overrides(os.environ if environ is None else environ)
    flat = {**env, **cli}
    if raw is None:
        path = flat.get("config")
        raw = read_file(path) if path else {}
    merged = _apply_overrides(_deep_copy(raw), flat)
    if hints_from is None:
        hints_from = os.environ if environ is None else environ
    return build(merged, hints_from)


def _deep_copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def _apply_overrides(raw: dict[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    for key in (
        "backend",
        "pool",
        "ttl",
        "node_id",
        "http",
        "cluster",
        "log_level",
        "log_format",
        "prefer_slot",
        "prefer",
    ):
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
    if "pattern" in flat or "limit" in flat or "port" in flat:
        pools = raw.setdefault("pools", {})
        if not isinstance(pools, dict):
            raise ConfigError("pools", pools, "must be a table of pools, e.g. [pools.worker]")
        name = flat.get("pool") or raw.get("pool") or next(iter(pools), None)
        if name is None:
            name = pool_name_from_pattern(str(flat.get("pattern", DEFAULT_PATTERN)))
            raw.setdefault("pool", name)
        pool = pools.setdefault(name, {})
        for key in ("pattern", "limit", "port"):
            if key in flat:
                pool[key] = flat[key]
        if "port" in flat and isinstance(pool.get("ports"), dict):
            # --port sets the primary port of a pool that names several
            ports = dict(pool.pop("ports"))
            primary = str(pool.get("service") or "")
            primary = primary if primary in ports else next(iter(ports))
            pool["ports"] = {**ports, primary: pool.pop("port")}
    return raw
