"""The ``idstore`` command.

Exit status: 0 success, 1 runtime failure (store unreachable, no slot), 2 bad usage or
configuration — always a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from idstore import __version__, backends, config, logs
from idstore.backends.base import Claim, SlotStore
from idstore.config import Settings
from idstore.errors import BackendNotFound, ConfigError, IdstoreError

log = logging.getLogger("idstore")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors our way (exit 2, one line, no usage dump)."""

    def error(self, message: str) -> Any:
        raise UsageError(message)


def _store_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("store and node (override the config file and IDSTORE_*)")
    g.add_argument("--config", "-c", help="TOML file, identical on every node")
    g.add_argument("--backend", help="store backend: memory, etcd, zookeeper (see 'backends')")
    g.add_argument("--endpoints", help="comma-separated store endpoints")
    g.add_argument("--cluster", help="cluster name: separates clusters sharing one store")
    g.add_argument("--pool", help="the pool (role) this node joins; default: the first")
    g.add_argument("--pattern", help="name pattern of the pool, e.g. 'worker{{.ID}}.tf.local.'")
    g.add_argument("--limit", help="number of slots in the pool")
    g.add_argument("--ttl", help="session / lease TTL in seconds (default 10, at least 2)")
    g.add_argument("--node-id", dest="node_id", help="node identity (default: /etc/machine-id)")
    g.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    g.add_argument("--log-format", dest="log_format", help="text (default) or json")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="idstore", description="Dense, collision-free node names over DNS.")
    parser.add_argument("--version", action="version", version=f"idstore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    serve = sub.add_parser("serve", help="claim this node's slot and serve DNS")
    _store_flags(serve)
    serve.add_argument(
        "--address",
        action="append",
        default=[],
        help="address to publish (repeatable; default: detected)",
    )
    serve.add_argument(
        "--listen",
        action="append",
        default=[],
        help="DNS listen address HOST:PORT (repeatable; [::1]:53 for IPv6)",
    )
    serve.set_defaults(func=cmd_serve)

    lst = sub.add_parser("list", help="print every claim of every pool")
    _store_flags(lst)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_list)

    bk = sub.add_parser("backends", help="list the installed store backends")
    bk.set_defaults(func=cmd_backends)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    check = cfg_sub.add_parser("check", help="validate a config file and print the settings")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    names = (
        "config",
        "backend",
        "endpoints",
        "cluster",
        "pool",
        "pattern",
        "limit",
        "ttl",
        "node_id",
        "log_level",
        "log_format",
    )
    cli: dict[str, Any] = {n: getattr(args, n, None) for n in names}
    if getattr(args, "endpoints", None):
        cli["endpoints"] = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    cli["address"] = getattr(args, "address", None)
    cli["listen"] = getattr(args, "listen", None)
    return config.load(cli=cli)


# --------------------------------------------------------------------------- commands


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.setup(settings.log_level, settings.log_format)
    backends.backend_class(settings.backend)  # an unknown backend fails before binding DNS
    from idstore.node import Node  # the DNS stack is only needed here

    node = Node(settings)
    _install_uvloop()
    return asyncio.run(_serve(node))


async def _serve(node: Any) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.request_stop)
    await node.run()
    return EXIT_OK


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _with_store(settings: Settings, fn: Callable[[SlotStore], int]) -> int:
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

    return _with_store(settings, run)


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
        (i["pool"], str(i["slot"]), i["name"], i["node_id"], ",".join(i["addresses"]))
        for i in items
    ]
    widths = [max(len(row[k]) for row in table) for k in range(len(headers))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_backends(args: argparse.Namespace) -> int:
    for name in backends.installed():
        print(name)
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = config.load(cli={"config": args.file}, environ={})
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
    }


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        code: int = args.func(args)
        return code
    except UsageError as e:
        _fail(f"{e} (see 'idstore --help')")
        return EXIT_USAGE
    except (ConfigError, BackendNotFound) as e:
        _fail(str(e))
        return EXIT_USAGE
    except IdstoreError as e:
        _fail(str(e))
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


def _fail(message: str) -> None:
    print(f"idstore: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
