"""Reaching etcd: endpoints, TLS, one gRPC channel at a time, auth, failover, errors.

``Transport.rpc`` runs every request with its own deadline, fails over to the next
endpoint when one stops answering, logs in again when an auth token expired, and turns
every gRPC failure into an idstore error (StoreUnavailable, SessionLost, StoreError).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import grpc

from idstore.backends.base import StoreOptions
from idstore.backends.etcd import messages as m
from idstore.backends.etcd.api import load
from idstore.backends.etcd.requests import authenticate
from idstore.errors import ConfigError, SessionLost, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PORT = 2379
# gRPC's default reconnect backoff grows to 120 s: after a long store outage the channel
# would sit idle for minutes after etcd is back. Keep reconnect attempts frequent.
# min_reconnect_backoff is gRPC's timeout of one connection attempt (TCP + HTTP/2
# SETTINGS), not a backoff: at 200 ms, 1000 nodes connecting at once to one etcd on a
# 2-core machine saw 3-6 % of their first lease grants fail ("timed out before receiving
# SETTINGS frame"). A refused connection still fails at once.
# Sent with every request and stream, as etcd's Go client does with WithRequireLeader: a
# member that has no leader (cut off from its peers, or in an election) refuses such a
# request at once ("etcdserver: no leader") and cancels such a watch, instead of
# accepting a keepalive it cannot forward or a watch it can no longer feed. The refusal
# is transient (translate: StoreUnavailable), so the request fails over to a member of
# the majority long before the lease is in danger (etcd-io/etcd#8980).
REQUIRE_LEADER = ("hasleader", "true")

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclass(frozen=True)
class Endpoint:
    url: str
    target: str  # host:port as gRPC wants it
    secure: bool


def parse_endpoint(url: str) -> Endpoint:
    """``http://host:port``, ``https://host:port`` or a bare ``host[:port]`` (plain)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("store.endpoints", url, "http://host:port or https://host:port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as e:
        raise ConfigError("store.endpoints", url, "a port between 1 and 65535") from e
    return Endpoint(url, f"{host}:{port}", parts.scheme == "https")


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError("store.tls", path, f"a readable PEM file ({e.strerror})") from e


# -- errors ------------------------------------------------------------------------------

_UNAVAILABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
# etcd reports some transient failures with other codes, e.g. UNKNOWN "context deadline
# exceeded" from a member that lost its leader during an election.
_TRANSIENT = ("context deadline exceeded", "timed out", "leader changed", "no leader")


def error_code(e: grpc.RpcError) -> tuple[str, str]:
    """A gRPC error's status code name and details."""
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    return (code.name if code is not None else "UNKNOWN"), str(details or "")


def closed_channel(e: ValueError) -> bool:
    """grpc's error for a request on a channel closed meanwhile (not an RpcError): "Cannot
    invoke RPC on closed channel!", or "Cannot invoke RPC: Channel closed!" from its
    blocking unary path (a lease grant racing the store's close: it killed the keepalive
    thread)."""
    text = str(e).lower()
    return "closed channel" in text or "channel closed" in text


def token_expired(e: grpc.RpcError) -> bool:
    return "invalid auth token" in error_code(e)[1]


def translate(e: grpc.RpcError, what: str, endpoint: str) -> StoreError:
    """The idstore error for a gRPC failure of request ``what`` at ``endpoint``."""
    code, details = error_code(e)
    msg = f"etcd {what} at {endpoint}: {code}: {details}"
    if code in _UNAVAILABLE or any(t in details for t in _TRANSIENT):
        return StoreUnavailable(msg)
    if "lease not found" in details:
        return SessionLost(msg)
    return StoreError(msg)


# -- one endpoint ------------------------------------------------------------------------


class Connection:
    """One gRPC channel to one endpoint, with its stubs and (when configured) auth token."""

    def __init__(self, endpoint: Endpoint, options: StoreOptions) -> None:
        self.endpoint = endpoint
        self._options = options
        self.channel = self._channel()
        api = load()
        self.kv = api.kv(self.channel)
        self.lease = api.lease(self.channel)
        self.watch = api.watch(self.channel)
        self._auth = api.auth(self.channel)
        self._token_lock = threading.Lock()
        self._token: str | None = None

    @property
    def metadata(self) -> m.Metadata:
        """What every request carries: the leader requirement, and the auth token."""
        token = self._token
        return (REQUIRE_LEADER,) if token is None else (REQUIRE_LEADER, ("token", token))

    def _channel(self) -> grpc.Channel:
        o = self._options
        if not self.endpoint.secure:
            if o.tls_ca or o.tls_cert:
                log.warning("TLS files are ignored for plain endpoint %s", self.endpoint.url)
            return grpc.insecure_channel(self.endpoint.target, options=CHANNEL_OPTIONS)
        if bool(o.tls_cert) != bool(o.tls_key):
            raise ConfigError("store.tls_cert", o.tls_cert, "tls_cert and tls_key go together")
        creds = grpc.ssl_channel_credentials(_read(o.tls_ca), _read(o.tls_key), _read(o.tls_cert))
        return grpc.secure_channel(self.endpoint.target, creds, options=CHANNEL_OPTIONS)

    def ensure_auth(self, timeout: float) -> None:
        """Fetch a token once per connection when user/password are configured."""
        o = self._options
        if o.username is None or self._token is not None:
            return
        with self._token_lock:
            if self._token is None:
                req = authenticate(o.username, o.password or "")
                resp = self._auth.Authenticate(req, timeout=timeout)
                self._token = str(resp.token)

    def forget_token(self) -> None:
        self._token = None

    def close(self) -> None:
        self.channel.close()


# -- every endpoint ----------------------------------------------------------------------


class Transport:
    """The store's endpoints and its one current connection; requests go through here.

    ``sent`` is called once per request attempt (the store's ``wire_requests``).
    """

    def __init__(self, options: StoreOptions, sent: Callable[[], None]) -> None:
        self._options = options
        self._sent = sent
        urls = options.endpoints or (f"http://127.0.0.1:{DEFAULT_PORT}",)
        self.endpoints: Sequence[Endpoint] = [parse_endpoint(u) for u in urls]
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._index = 0

    def current(self) -> Connection:
        with self._lock:
            if self._conn is None:
                raise StoreUnavailable("etcd store is not open")
            return self._conn

    @property
    def index(self) -> int:
        """The position of the current endpoint in ``endpoints``."""
        return self._index

    def use(self, index: int) -> Connection:
        """Connect to endpoint ``index`` (modulo their number), closing the current one."""
        conn = Connection(self.endpoints[index % len(self.endpoints)], self._options)
        with self._lock:
            old, self._conn, self._index = self._conn, conn, index % len(self.endpoints)
        if old is not None:
            old.close()
        return conn

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _moved_on(self, conn: Connection) -> bool:
        """Whether a failover replaced ``conn`` with another open connection."""
        with self._lock:
            return self._conn is not None and self._conn is not conn

    def _failover(self, failed: Connection) -> None:
        """Move to the next endpoint after ``failed`` stopped answering.

        Closing the old channel ends every watch on it, which reports on_broken: the
        watcher re-lists and watches again through the new endpoint.
        """
        if len(self.endpoints) < 2:
            return  # gRPC reconnects a single endpoint's channel by itself
        with self._lock:
            if self._conn is not failed:
                return  # another request already moved on
            index = self._index + 1
        log.warning(
            "etcd endpoint %s failed; trying %s",
            failed.endpoint.url,
            self.endpoints[index % len(self.endpoints)].url,
        )
        self.use(index)

    def rpc(
        self,
        what: str,
        call: Callable[[Connection, float], T],
        *,
        timeout: float | None = None,
        failover_retry: bool = False,
        count: bool = True,
    ) -> T:
        """Run one request with its own deadline, translating every gRPC error.

        ``failover_retry`` repeats an idempotent request once per other endpoint. Every
        attempt is counted (``sent``) unless ``count`` is False (keepalives).
        """
        timeout = self._options.request_timeout if timeout is None else timeout
        attempts = len(self.endpoints) if failover_retry else 1
        reauthed = rerouted = False
        while True:
            conn = self.current()
            step = f"authentication as user {self._options.username!r}"
            try:
                conn.ensure_auth(timeout)
                step = what
                if count:
                    self._sent()
                return call(conn, timeout)
            except ValueError as e:
                # grpc: "Cannot invoke RPC on closed channel!" - another request's failover
                # closed this channel after we took it. Nothing was sent: send it once more
                # on the connection now current. (Escaping, it killed the keepalive thread.)
                if not closed_channel(e):
                    raise
                if not rerouted and self._moved_on(conn):
                    rerouted = True
                    continue
                raise StoreUnavailable(f"etcd {step} at {conn.endpoint.url}: {e}") from e
            except grpc.RpcError as e:
                if token_expired(e) and not reauthed:
                    conn.forget_token()  # simple tokens expire; fetch a new one once
                    reauthed = True
                    continue
                err = translate(e, step, conn.endpoint.url)
                if isinstance(err, StoreUnavailable):
                    self._failover(conn)
                    attempts -= 1
                    if attempts > 0:
                        continue
                raise err from e
