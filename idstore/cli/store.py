"""Subcommands that read the store or the installation: ``list`` and ``backends``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence

from idstore import backends, logs
from idstore.backends.base import Claim, SlotStore
from idstore.cli.common import EXIT_OK, settings_from
from idstore.config import Settings


def with_store(settings: Settings, fn: Callable[[SlotStore], int]) -> int:
    """Run ``fn`` with a short session of our own, released on the way out."""
    store = backends.create(settings.backend, settings.store)
    store.open()
    try:
        return fn(store)
    finally:
        store.close(release=True)


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.setup("warning", settings.log_format)

    def run(store: SlotStore) -> int:
        rows = [
            c
            for p in settings.pools
            for c in sorted(store.list(p.name).claims.values(), key=lambda c: c.slot)
        ]
        print_claims(settings, rows, args.json)
        return EXIT_OK

    return with_store(settings, run)


def print_claims(settings: Settings, claims: Sequence[Claim], as_json: bool) -> None:
    pools = {p.name: p for p in settings.pools}
    items = [
        {
            "pool": c.pool,
            "slot": c.slot,
            "name": pools[c.pool].name_of(c.slot),
            "node_id": c.record.node_id,
            "addresses": list(c.record.addresses),
            "session": c.session,
        }
        for c in claims
    ]
    if as_json:
        print(json.dumps(items, indent=2))
        return
    headers = ("POOL", "SLOT", "NAME", "NODE", "ADDRESSES")
    table = [headers] + [
        (c.pool, str(c.slot), pools[c.pool].name_of(c.slot), c.record.node_id,
         ",".join(c.record.addresses))
        for c in claims
    ]  # fmt: skip
    widths = [max(len(row[k]) for row in table) for k in range(len(headers))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_backends(args: argparse.Namespace) -> int:
    for name in backends.installed():
        print(name)
    return EXIT_OK
