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
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from idstore import __version__, backends, config, corefile, launch, logs
from idstore.backends.base import Claim, SlotStore
from idstore.config import Settings
from idstore.errors import BackendNotFound, ConfigError, IdstoreError, StoreError
from idstore.launch import MemberInfo, Snapshot

log = logging.getLogger("idstore")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


class StatusUnavailable(StoreError, OSError):
    """The local server's /status did not answer."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors our way (exit 2, one line, no usage dump)."""

    def error(self, message: str) -> Any:
        raise UsageError(message)


def _store_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("store and node (override the config file and IDSTORE_*)")
    g.add_argument("--config", "-c", help="TOML file, identical on every node")
    g.add_argument("--corefile", help="an idetcd Corefile instead of --config (migration)")
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


def _node_flags(p: argparse.ArgumentParser) -> None:
    """The rest of serve's flags; whoami, wait and env accept them too, so one command
    line can be reused with a different subcommand."""
    _store_flags(p)
    g = p.add_argument_group("node")
    g.add_argument(
        "--address",
        action="append",
        default=[],
        help="address to publish (repeatable; default: detected)",
    )
    g.add_argument(
        "--listen",
        action="append",
        default=[],
        help="DNS listen address HOST:PORT (repeatable; [::1]:53 for IPv6)",
    )
    g.add_argument(
        "--http",
        help="HOST:PORT of the /health /ready /metrics /status listener (serve); "
        "whoami/wait/env ask the local server there instead of the store",
    )
    g.add_argument(
        "--log-queries",
        dest="log_queries",
        action="store_const",
        const=True,
        help="log every DNS query (dns.log_queries)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="idstore", description="Dense, collision-free node names over DNS.")
    parser.add_argument("--version", action="version", version=f"idstore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    serve = sub.add_parser("serve", help="claim this node's slot and serve DNS")
    _node_flags(serve)
    serve.set_defaults(func=cmd_serve)

    who = sub.add_parser("whoami", help="this node's pool, slot, name, addresses and state")
    _node_flags(who)
    who.add_argument("--json", action="store_true", help="machine-readable output")
    who.set_defaults(func=cmd_whoami)

    wait = sub.add_parser("wait", help="block until COUNT members of a pool hold slots")
    _node_flags(wait)
    wait.add_argument("--count", "-n", type=int, help="members to wait for (default: limit)")
    wait.add_argument("--timeout", "-t", type=float, help="give up after S seconds (exit 1)")
    wait.set_defaults(func=cmd_wait)

    env = sub.add_parser("env", help="TF_CONFIG, torchrun values or shell exports")
    _node_flags(env)
    env.add_argument("--format", "-f", choices=launch.FORMATS, default="shell")
    env.set_defaults(func=cmd_env)

    lst = sub.add_parser("list", help="print every claim of every pool")
    _store_flags(lst)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_list)

    bk = sub.add_parser("backends", help="list the installed store backends")
    bk.set_defaults(func=cmd_backends)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    check = cfg_sub.add_parser(
        "check", help="validate a config file (TOML or idetcd Corefile) and print the settings"
    )
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
        "http",
        "log_queries",
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
    return config.load(cli=cli, raw=_read_corefile(path))


def _read_corefile(path: str) -> dict[str, Any]:
    parsed = corefile.read(path)
    if parsed.ignored:
        _warn(f"{path}: CoreDNS plugins idstore ignores: {', '.join(parsed.ignored)}")
    return parsed.raw


# --------------------------------------------------------------------------- commands


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.setup(settings.log_level, settings.log_format)
    backends.backend_class(settings.backend)  # an unknown backend fails before binding DNS
    from idstore.node import Node  # the DNS stack is only needed here

    node = Node(settings, reload_source=lambda: settings_from(args))
    _install_uvloop()
    try:
        return asyncio.run(_serve(node))
    except OSError as e:  # a DNS or HTTP port in use, or not ours to bind
        _fail(str(e))
        return EXIT_FAIL


async def _serve(node: Any) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.request_stop)
    loop.add_signal_handler(signal.SIGHUP, node.request_reload)
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


def cmd_config_check(args: argparse.Namespace) -> int:
    if corefile.looks_like_corefile(args.file):
        settings = config.load(cli={}, environ={}, raw=_read_corefile(args.file))
    else:
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


# --------------------------------------------------------------------------- whoami, wait, env

WAIT_POLL = 1.0  # seconds between two reads of the pool while waiting
WAIT_REPORT = 10.0  # repeat an unchanged progress line this often


def cmd_whoami(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.setup("warning", settings.log_format)
    with cluster_reader(settings, explicit_http=args.http is not None) as read:
        snap = read()
    me = snap.me
    out = {
        "pool": me.pool if me else snap.extra.get("pool", settings.pool),
        "slot": me.slot if me else None,
        "name": me.name if me else None,
        "addresses": list(me.addresses) if me else [],
        "state": snap.state,
        "node_id": snap.node_id,
        "source": snap.source,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key in ("pool", "slot", "name", "addresses", "state", "node_id", "source"):
            value = out[key]
            text = ",".join(value) if isinstance(value, list) else value
            print(f"{key + ':':<11}{'-' if text in (None, '') else text}")
    return EXIT_OK if me is not None and snap.state == "held" else EXIT_FAIL


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
            have, trouble = read().count(pool), ""
        except StoreError as e:  # keep waiting through a store hiccup, and say so
            have, trouble = (last[0] if last else 0), f" (store: {e})"
        now = time.monotonic()
        if (have, trouble) != last or now - reported_at >= WAIT_REPORT:
            print(f"{have}/{count} {pool} slots held{trouble}", file=sys.stderr, flush=True)
            last, reported_at = (have, trouble), now
        if have >= count:
            return EXIT_OK
        if deadline is not None and now >= deadline:
            _fail(f"timed out after {timeout:g}s: {have}/{count} {pool} slots held")
            return EXIT_FAIL
        time.sleep(WAIT_POLL if deadline is None else max(0.0, min(WAIT_POLL, deadline - now)))


def cmd_env(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.setup("warning", settings.log_format)
    with cluster_reader(settings, explicit_http=args.http is not None) as read:
        snap = read()
    try:
        sys.stdout.write(launch.render(args.format, settings.pools, snap))
    except launch.NoSlot as e:
        _fail(str(e))
        return EXIT_FAIL
    return EXIT_OK


@contextmanager
def cluster_reader(settings: Settings, explicit_http: bool) -> Iterator[Callable[[], Snapshot]]:
    """A function returning the cluster as seen now: from the local server's /status when
    its address is known (``--http``, or ``http`` in the config with a server answering
    there), else from the store through a short session of our own."""
    if settings.http is not None:
        url = status_url(*settings.http)
        if _answers(url, explicit_http):
            yield lambda: snapshot_from_status(fetch_status(url), url)
            return
    store = backends.create(settings.backend, settings.store)
    store.open()
    try:
        yield lambda: snapshot_from_store(settings, store)
    finally:
        store.close(release=True)


def status_url(host: str, port: int) -> str:
    """Where the local server answers: a wildcard bind is reached over loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "localhost": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"


def fetch_status(url: str) -> dict[str, Any]:
    """The local server's /status; OSError when it does not answer (as a StoreError
    would from the store, so ``wait`` keeps going through a restart of the server)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
            return data
    except (OSError, ValueError) as e:
        raise StatusUnavailable(f"{url}: {_reason(e)}") from e


def _answers(url: str, required: bool) -> bool:
    try:
        fetch_status(url)
    except (OSError, ValueError) as e:
        if required:
            raise StoreError(f"no idstore serve answers at {_reason(e)}") from None
        return False
    return True


def _reason(e: Exception) -> str:
    return str(e.reason) if isinstance(e, urllib.error.URLError) else str(e)


def snapshot_from_status(status: dict[str, Any], source: str) -> Snapshot:
    members = {
        pool: [MemberInfo.from_dict(m) for m in items]
        for pool, items in dict(status.get("cluster", {})).items()
    }
    me = None
    if status.get("slot") is not None:
        me = MemberInfo(
            pool=str(status["pool"]),
            slot=int(status["slot"]),
            name=str(status["name"]),
            addresses=tuple(status.get("addresses", ())),
            node_id=str(status.get("node_id", "")),
        )
    return Snapshot(
        node_id=str(status.get("node_id", "")),
        members=members,
        me=me,
        state=str(status.get("state", "none")),
        source=source,
        extra={"pool": status.get("pool")},
    )


def snapshot_from_store(settings: Settings, store: SlotStore) -> Snapshot:
    members: dict[str, list[MemberInfo]] = {}
    for p in settings.pools:
        claims = sorted(store.list(p.name).claims.values(), key=lambda c: c.slot)
        members[p.name] = [
            MemberInfo(p.name, c.slot, p.name_of(c.slot), c.record.addresses, c.record.node_id)
            for c in claims
            if c.slot in p.slots()
        ]
    mine = [m for ms in members.values() for m in ms if m.node_id == settings.node_id]
    # The node's own pool first: with a duplicated identity, that is the claim it serves.
    mine.sort(key=lambda m: m.pool != settings.pool)
    me = mine[0] if mine else None
    return Snapshot(
        node_id=settings.node_id,
        members=members,
        me=me,
        state="held" if me else "none",
        source="store",
        extra={"pool": settings.pool},
    )


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


def _warn(message: str) -> None:
    print(f"idstore: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
