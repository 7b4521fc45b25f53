"""``whoami``, ``wait`` and ``env``: this node and its peers, for scripts and launchers."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from idstore import addresses, launch, logs
from idstore.cli.common import EXIT_DUPLICATE, EXIT_FAIL, EXIT_OK, fail, settings_from, warn
from idstore.cli.reader import cluster_reader
from idstore.errors import ConfigError, StoreError
from idstore.launch import Snapshot

WAIT_POLL = 1.0  # seconds between two reads of the pool while waiting
WAIT_REPORT = 10.0  # repeat an unchanged progress line this often
DUPLICATE = "duplicate"  # the state of a process displaced by its twin (same node id)


def cmd_whoami(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.setup("warning", settings.log_format)
    with cluster_reader(settings, explicit_http=args.http is not None) as read:
        snap = read()
    me = snap.me
    pool = settings.pool_settings(me.pool if me else None)
    ports = {s.name: pool.member_port(me.ports, s.name) for s in pool.ports} if me else {}
    out: dict[str, Any] = {
        "pool": me.pool if me else snap.extra.get("pool", settings.pool),
        "slot": me.slot if me else None,
        "name": me.name if me else None,
        "addresses": list(me.addresses) if me else [],
        "port": pool.member_port(me.ports) if me else None,
        "ports": ports,
        "state": snap.state,
        "node_id": snap.node_id,
        "source": snap.source,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key in ("pool", "slot", "name", "addresses", "port", "state", "node_id", "source"):
            value = out[key]
            text = ",".join(value) if isinstance(value, list) else value
            if key == "port" and len(pool.ports) > 1 and me:
                text = ",".join(f"{k}={v}" for k, v in ports.items())
            print(f"{key + ':':<11}{'-' if text in (None, '') else text}")
    if snap.state == DUPLICATE:
        fail(_duplicate_message(snap.node_id))
        return EXIT_DUPLICATE
    return EXIT_OK if me is not None and snap.state == "held" else EXIT_FAIL


def _duplicate_message(node_id: str) -> str:
    return (
        f"duplicate node identity {node_id!r}: another process with this node id took "
        f"this node's slot over, and this one is exiting (status {EXIT_DUPLICATE}); give "
        "every node its own node_id"
    )


def cmd_wait(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.setup("warning", settings.log_format)
    pool = settings.pool_settings()
    count = pool.limit if args.count is None else args.count
    if not 1 <= count <= pool.limit:
        raise ConfigError("--count", count, f"must be between 1 and the pool's limit {pool.limit}")
    if args.timeout is not None and not args.timeout >= 0:
        raise ConfigError("--timeout", args.timeout, "must be a number of seconds >= 0")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with cluster_reader(settings, explicit_http=args.http is not None) as read:
        return _wait_loop(read, pool.name, count, deadline, args.timeout)


def _wait_loop(
    read: Callable[[], Snapshot],
    pool: str,
    count: int,
    deadline: float | None,
    timeout: float | None,
) -> int:
    last: tuple[int, str] | None = None
    reported_at = 0.0
    while True:
        try:
            snap = read()
            have, trouble = snap.count(pool), ""
            if snap.state == DUPLICATE:
                fail(_duplicate_message(snap.node_id))
                return EXIT_DUPLICATE
        except StoreError as e:  # keep waiting through a store hiccup, and say so
            have, trouble = (last[0] if last else 0), f" (store: {e})"
        now = time.monotonic()
        if (have, trouble) != last or now - reported_at >= WAIT_REPORT:
            print(f"{have}/{count} {pool} slots held{trouble}", file=sys.stderr, flush=True)
            last, reported_at = (have, trouble), now
        if have >= count:
            return EXIT_OK
        if deadline is not None and now >= deadline:
            fail(f"timed out after {timeout:g}s: {have}/{count} {pool} slots held")
            return EXIT_FAIL
        time.sleep(WAIT_POLL if deadline is None else max(0.0, min(WAIT_POLL, deadline - now)))


def cmd_env(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.setup("warning", settings.log_format)
    with cluster_reader(settings, explicit_http=args.http is not None) as read:
        snap = read()
    if args.slots < 1:
        raise ConfigError("--slots", args.slots, "must be at least 1")
    ifname = None
    if snap.me is not None and args.format in ("torchrun", "shell", "json"):
        ifname = addresses.interface_of(snap.me.addresses)
        if ifname is None:
            warn(
                f"no interface on this host holds {','.join(snap.me.addresses) or '-'}: "
                f"{', '.join(launch.IFNAME_VARS)} left out"
            )
    try:
        sys.stdout.write(launch.render(args.format, settings.pools, snap, ifname, args.slots))
    except launch.NoSlot as e:
        fail(str(e))
        return EXIT_FAIL
    return EXIT_OK
