"""The command line: every subcommand, its flags and the function that runs it."""

from __future__ import annotations

import argparse
from typing import Any

from idstore import __version__, launch
from idstore.cli.cluster import cmd_env, cmd_wait, cmd_whoami
from idstore.cli.common import UsageError
from idstore.cli.config_check import cmd_config_check
from idstore.cli.serve import cmd_serve
from idstore.cli.store import cmd_backends, cmd_list


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
    g.add_argument(
        "--port",
        help="the pool's (primary) port: a number, 'auto' (each node picks a free one) "
        "or a range such as 20000-20999",
    )
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
        "--prefer-slot",
        dest="prefer_slot",
        help="slot to claim first: a number, env:NAME (SLURM_PROCID, JOB_COMPLETION_INDEX) "
        "or file:PATH (a cloud launch index)",
    )
    g.add_argument(
        "--prefer",
        choices=("fallback", "require"),
        help="when another node holds the preferred slot: take a place in line "
        "(fallback, default) or wait for that slot (require)",
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

    env = sub.add_parser(
        "env", help="TF_CONFIG, torchrun values, shell exports, a hostfile or JSON"
    )
    _node_flags(env)
    env.add_argument("--format", "-f", choices=launch.FORMATS, default="shell")
    env.add_argument(
        "--slots", type=int, default=1, help="hostfile: slots (GPUs, processes) per host"
    )
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
