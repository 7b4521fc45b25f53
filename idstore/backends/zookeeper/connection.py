"""Reaching ZooKeeper: endpoints, TLS, credentials, and the kazoo client built from them.

Everything here uses kazoo's public API: the ``KazooClient`` constructor's documented
arguments, and a subclass of its threading handler overriding ``create_connection``
(the handler interface kazoo calls to open every socket). Owning socket creation is
what lets idstore use its own TLS context, know when each connection attempt began
(see session.py: the lower bound of a new connection's session deadline), say why an
attempt failed, and drop a connection without closing the session (``drop``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.retry import KazooRetry
from kazoo.security import ACL, make_acl, make_digest_acl

from idstore.backends.base import StoreOptions
from idstore.errors import ConfigError

log = logging.getLogger(__name__)

_SCHEMES = ("zk://", "zookeeper://")


@dataclass(frozen=True)
class ConnectSpec:
    hosts: str  # kazoo connect string, without chroot
    root: str  # path prefix idstore applies itself ("" for none)


def parse_endpoints(options: StoreOptions) -> ConnectSpec:
    """Endpoints -> connect string and chroot.

    Accepts ``host:port``, ``zk://host:port`` and a trailing ``/chroot`` on any entry;
    ``extra["chroot"]`` wins. The chroot is applied as a path prefix by idstore itself,
    so it is created on demand like the rest of the tree (a server-side chroot must
    already exist).
    """
    hosts: list[str] = []
    root = ""
    for entry in options.endpoints:
        for item in entry.split(","):
            item = item.strip()
            for scheme in _SCHEMES:
                item = item.removeprefix(scheme)
            host, sep, path = item.partition("/")
            if sep and path.strip("/"):
                root = "/" + path.strip("/")
            if host:
                hosts.append(host)
    if not hosts:
        hosts = ["127.0.0.1:2181"]
    chroot = options.extra.get("chroot")
    if chroot:
        root = "/" + str(chroot).strip("/")
    return ConnectSpec(",".join(hosts), root.rstrip("/"))


def connect_failure(host: str, port: int, e: BaseException) -> str:
    """``host:port: reason`` of a failed connection attempt, naming a TLS failure as such
    (kazoo would wrap the ssl error into a generic "socket connection error")."""
    cause = e if isinstance(e, ssl.SSLError) else e.__cause__ or e.__context__
    if isinstance(cause, ssl.SSLError):
        return f"{host}:{port}: TLS handshake failed: {cause.strerror or cause}"
    return f"{host}:{port}: {e}"


def make_acls(options: StoreOptions) -> list[ACL] | None:
    """With credentials, only they may change idstore's znodes; everyone may read."""
    if not options.username:
        return None
    return [
        make_digest_acl(options.username, options.password or "", all=True),
        make_acl("world", "anyone", read=True),
    ]


def auth_data(options: StoreOptions) -> list[tuple[str, str]]:
    if not options.username:
        return []
    return [("digest", f"{options.username}:{options.password or ''}")]


def tls_context(options: StoreOptions) -> ssl.SSLContext | None:
    """The TLS context to speak to the servers with, its files loaded once; None: plain.

    kazoo would load the files anew on every connection attempt and treat any failure
    as a dropped connection it retries until connect_timeout: a missing or malformed
    file would read as an unreachable store. Loaded here, it is one configuration error
    naming the key and the file. With ``tls_ca`` only that CA is trusted, as with etcd
    (kazoo's own context adds the system's CAs); without it, the system's. The server's
    certificate must name the host of the endpoint.
    """
    o = options
    if not (o.tls_ca or o.tls_cert or o.tls_key):
        return None
    if bool(o.tls_cert) != bool(o.tls_key):
        raise ConfigError("store.tls_cert", o.tls_cert, "tls_cert and tls_key go together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
    if o.tls_ca:
        try:
            context.load_verify_locations(o.tls_ca)
        except OSError as e:  # ssl.SSLError included
            raise ConfigError(
                "store.tls_ca", o.tls_ca, f"a readable PEM file of CA certificates ({e.strerror})"
            ) from e
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if o.tls_cert and o.tls_key:
        try:
            context.load_cert_chain(o.tls_cert, o.tls_key)
        except OSError as e:
            raise ConfigError(
                "store.tls_cert",
                o.tls_cert,
                f"a readable PEM certificate matching the PEM key {o.tls_key} ({e.strerror})",
            ) from e
    return context


class Handler(SequentialThreadingHandler):  # type: ignore[misc]  # kazoo is untyped
    """kazoo's threading handler, opening every connection itself.

    - TLS with idstore's context (see tls_context): kazoo builds a context per attempt
      from file names, always adds the system's CAs and checks no host name unless told.
    - ``attempt_started``: monotonic time at which the latest attempt began. The server
      can only have (re)validated the session after that moment, so a session that
      comes up CONNECTED on this attempt lives at least a session timeout from then.
    - ``last_error``: why the latest attempt failed (``host:port: reason``), for open();
      kazoo itself only logs it and tries again until start() times out.
    - ``cut()``: cut the live connection (kazoo moves to the next server).
    - ``drop()``: cut the live connection and refuse new ones, as a crash would.
    """

    def __init__(self, tls: ssl.SSLContext | None, connect_cap: float | None = None) -> None:
        super().__init__()
        self.tls = tls
        self.connect_cap = connect_cap  # see connect_cap()
        self.socket_lock = threading.Lock()
        self.live_socket: socket.socket | None = None
        self.refusing = False
        self.attempt_started = 0.0
        self.last_error: str | None = None

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.attempt_started = time.monotonic()
        address = kwargs.get("address") or args[0]
        host = kwargs.get("hostname") or address[0]
        try:
            if self.refusing:
                raise ConnectionRefusedError("idstore dropped this client's connection")
            timeout = kwargs.get("timeout")
            connect = timeout
            if self.connect_cap is not None:
                connect = self.connect_cap if timeout is None else min(timeout, self.connect_cap)
            if self.tls is None or not kwargs.get("use_ssl"):
                conn = super().create_connection(*args, **{**kwargs, "timeout": connect})
            else:
                conn = self.open_tls(address, connect, timeout, host)
        except Exception as e:
            self.last_error = connect_failure(host, int(address[1]), e)
            raise
        with self.socket_lock:
            if self.refusing:  # drop() ran while we connected
                conn.close()
                raise ConnectionRefusedError("idstore dropped this client's connection")
            self.live_socket = conn
        return conn

    def open_tls(
        self, address: Any, connect: float | None, timeout: float | None, host: str
    ) -> ssl.SSLSocket:
        assert self.tls is not None
        sock = socket.create_connection(address, connect)
        sock.settimeout(timeout)  # the handshake needs the server's JVM, not just its kernel
        try:
            conn = self.tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as kazoo does
        return conn

    def cut(self) -> None:
        """Cut the live connection as a network failure would; kazoo then connects to
        the next server, the session intact (see session.FAILOVER_AFTER)."""
        with self.socket_lock:
            sock = self.live_socket
        if sock is not None:
            with contextlib.suppress(OSError):  # closed by kazoo already: nothing to cut
                sock.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        """Cut the live connection without a closeSession and refuse any new one: the
        session (and its ephemeral znodes) lives on on the server until it times out.
        kazoo sees a dropped connection, the path a network failure takes."""
        with self.socket_lock:
            self.refusing = True
            sock, self.live_socket = self.live_socket, None
        if sock is not None:
            with contextlib.suppress(OSError):  # closed by kazoo already: nothing to cut
                sock.shutdown(socket.SHUT_RDWR)


def connect_cap(ttl: float) -> float:
    """How long one TCP connect may take. kazoo allows a whole session timeout and
    shuffles the servers before every pass, so after a server's cable is cut it tried
    that server first again a third of the time and waited there until the session
    expired (chaos soak, ZooKeeper, ttl 3). A live server's kernel answers a connect at
    once, however busy its JVM, so a tenth of the ttl (at least 0.2 s, at most 1 s)
    leaves room for the next server."""
    return min(1.0, max(0.2, ttl / 10))


def connection_retry(ttl: float) -> KazooRetry:
    """How kazoo reconnects: forever, quickly.

    A fresh session must follow an expiry at once, and after an election or a server
    restart the client must be back before the session is presumed lost (see
    session.LOST_AFTER). kazoo sleeps up to 1.4 x max_delay between passes over the
    servers: a 1 s cap made a node on the killed leader of a ttl-3 ensemble reconnect
    0.8 s after the election ended, past that point. So the cap is a tenth of the ttl
    (at most 1 s).
    """
    return KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=min(1.0, ttl / 10))


def new_client(
    options: StoreOptions,
    spec: ConnectSpec,
    handler: Handler,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    acl: list[ACL] | None,
) -> KazooClient:
    """A kazoo client on ``handler``, logging through ``logger`` (see session.SessionLog)."""
    return KazooClient(
        handler=handler,
        hosts=spec.hosts,
        timeout=options.ttl,
        connection_retry=connection_retry(options.ttl),
        auth_data=auth_data(options) or None,
        default_acl=acl,
        use_ssl=handler.tls is not None,  # the handler makes the TLS connections
        logger=logger,
    )
