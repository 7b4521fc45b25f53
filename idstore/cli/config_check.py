"""``idstore config check FILE``: validate a TOML file or an idetcd Corefile."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from idstore import config, corefile
from idstore.cli.common import EXIT_OK, read_corefile
from idstore.config import Settings


def cmd_config_check(args: argparse.Namespace) -> int:
    if corefile.looks_like_corefile(args.file):
        settings = config.load(cli={}, environ={}, raw=read_corefile(args.file))
    else:
        # No IDSTORE_* overrides: the file alone is checked; but an env: slot hint is
        # read where the node would read it.
        settings = config.load(cli={"config": args.file}, environ={}, hints_from=os.environ)
    print(json.dumps(effective(settings), indent=2))
    return EXIT_OK


def effective(s: Settings) -> dict[str, Any]:
    """The settings as a plain dict (secrets masked), for 'config check'."""
    store = {k: v for k, v in vars(s.store).items() if k != "extra"}
    if store.get("password"):
        store["password"] = "***"
    store["endpoints"] = list(s.store.endpoints)
    dns = dict(vars(s.dns))
    dns["listen"] = [f"{h}:{p}" for h, p in s.dns.listen]
    return {
        "backend": s.backend,
        "store": store,
        "pool": s.pool,
        "pools": {
            p.name: {
                "pattern": p.pattern.source,
                "limit": p.limit,
                "first": p.first,
                "port": p.port,
                "ports": {s.name: s.text() for s in p.ports},
                "service": p.service,
                "protocol": p.protocol,
                "names": f"{p.name_of(p.first)} .. {p.name_of(p.first + p.limit - 1)}",
            }
            for p in s.pools
        },
        "node_id": s.node_id,
        "addresses": list(s.addresses) or "detected at start-up",
        "dns": {k: list(v) if isinstance(v, tuple) else v for k, v in dns.items()},
        "http": f"{s.http[0]}:{s.http[1]}" if s.http else None,
        "log_level": s.log_level,
        "log_format": s.log_format,
        "prefer_slot": s.prefer_slot,
        "prefer": s.prefer,
    }
