"""``idstore serve``: claim this node's slot and serve DNS until stopped."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TYPE_CHECKING

from idstore import backends, logs
from idstore.cli.common import EXIT_DUPLICATE, EXIT_FAIL, EXIT_OK, fail, settings_from

if TYPE_CHECKING:
    from idstore.node import Node


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
        fail(str(e))
        return EXIT_FAIL


async def _serve(node: Node) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.request_stop)
    loop.add_signal_handler(signal.SIGHUP, node.request_reload)
    await node.run()
    if node.displaced:
        fail(
            f"duplicate node identity {node.record.node_id!r}: another process took this "
            f"node's slot over; exiting with status {EXIT_DUPLICATE}"
        )
        return EXIT_DUPLICATE
    return EXIT_OK


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
