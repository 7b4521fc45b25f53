"""The operations listener (``--http HOST:PORT``): /health, /ready, /metrics, /status.

A stdlib ThreadingHTTPServer on its own thread: a scrape or a probe never waits on the
DNS event loop, and a stalled loop still shows in /metrics. Paths follow CoreDNS's
``health`` / ``ready`` / ``prometheus`` plugins so probes and dashboards carry over:

- ``/health``: 200 ``OK`` while the process runs;
- ``/ready``: 200 ``OK`` only while this node holds its slot and the store is CONNECTED,
  else 503 with the reason (``no slot held (waiting)``, ``store suspended``);
- ``/metrics``: Prometheus text format (see idstore.metrics);
- ``/status``: JSON of this node and of every claimed name, read by ``idstore whoami``,
  ``wait`` and ``env`` when they are given the server's address.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from idstore import metrics
from idstore.status import NodeReport, NodeStatus

log = logging.getLogger(__name__)

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class StatusSource(Protocol):
    """What the listener asks of the node (idstore.node.Node is one): answers only."""

    def ready(self) -> tuple[bool, str]: ...

    def status(self) -> NodeStatus: ...

    def report(self) -> NodeReport: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    node: StatusSource


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "idstore"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        node = self.server.node
        path = self.path.split("?", 1)[0]
        try:
            code, ctype, body = _route(node, path)
        except Exception:  # a bug in one page must not take the listener down
            log.exception("http %s failed", path)
            code, ctype, body = 500, "text/plain", b"internal error\n"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Probes hit these paths every few seconds: keep them out of the normal log.
        log.debug("http %s %s", self.address_string(), format % args)


def _route(node: StatusSource, path: str) -> tuple[int, str, bytes]:
    if path == "/health":
        return 200, "text/plain", b"OK\n"
    if path == "/ready":
        ok, reason = node.ready()
        return (200 if ok else 503), "text/plain", (reason if not ok else "OK").encode() + b"\n"
    if path == "/metrics":
        return 200, PROMETHEUS_TEXT, metrics.render(metrics.collect(node.report())).encode()
    if path == "/status":
        body = json.dumps(node.status().to_json(), indent=2) + "\n"
        return 200, "application/json", body.encode()
    return 404, "text/plain", b"not found: try /health, /ready, /metrics, /status\n"


class OpsServer:
    """Binds at construction (so a taken port fails start-up at once); serves on start()."""

    def __init__(self, node: StatusSource, host: str, port: int) -> None:
        cls = _Server6 if ":" in host else _Server
        try:
            self._server = cls((host, port), _Handler)
        except OSError as e:
            raise OSError(f"cannot bind the HTTP listener on {_fmt(host, port)}: {e}") from e
        self._server.node = node
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True,
            name="http",
        )  # fmt: skip

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("HTTP on %s: /health /ready /metrics /status", _fmt(*self.address))

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
