"""What every subcommand shares: exit codes, one-line messages, settings from the flags."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from idstore import config, corefile
from idstore.config import Settings

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
# sysexits.h EX_CONFIG: this process was displaced by another one given the same node
# identity. A configuration error, which restarting cannot cure: the systemd unit lists
# it in RestartPreventExitStatus=.
EXIT_DUPLICATE = 78


class UsageError(Exception):
    pass


def settings_from(args: argparse.Namespace) -> Settings:
    names = (
        "config",
        "backend",
        "endpoints",
        "cluster",
        "pool",
        "pattern",
        "limit",
        "port",
        "ttl",
        "node_id",
        "log_level",
        "log_format",
        "http",
        "log_queries",
        "prefer_slot",
        "prefer",
    )
    cli: dict[str, Any] = {n: getattr(args, n, None) for n in names}
    if getattr(args, "endpoints", None):
        cli["endpoints"] = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    cli["address"] = getattr(args, "address", None)
    cli["listen"] = getattr(args, "listen", None)
    path = getattr(args, "corefile", None)
    if not path:
        return config.load(cli=cli)
    if args.config:
        raise UsageError("--config and --corefile cannot be used together")
    cli.pop("config")
    return config.load(cli=cli, raw=read_corefile(path))


def read_corefile(path: str) -> dict[str, Any]:
    parsed = corefile.read(path)
    if parsed.ignored:
        warn(f"{path}: CoreDNS plugins idstore ignores: {', '.join(parsed.ignored)}")
    return parsed.raw


def fail(message: str) -> None:
    print(f"idstore: error: {message}", file=sys.stderr)


def warn(message: str) -> None:
    print(f"idstore: warning: {message}", file=sys.stderr)
