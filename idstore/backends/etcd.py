"""etcd v3 backend: one transaction per claim, the session is a lease.

Keys are ``options.slot_path(pool, slot)``, values ``SlotRecord.encode()``. Every write
is a single transaction whose compare decides ownership (create_revision == 0 for a
claim, mod_revision == the claim's version for a re-claim or release), so nothing here
ever decides by "read, then write".

Beside each slot key, the same transaction writes two index keys under the same lease
(so they live, move and vanish exactly with the claim), and a waiting queue lives
beside the pool (all under ``<prefix>/<cluster>/``; pool names cannot start with "_"):

- ``_slots/<pool>/<9999999999 - slot, 10 digits>``: slots in *descending* numeric order
  as keys ascend, so the highest claimed slot is a range with limit 1 (etcd applies a
  limit early only to ascending key order; a sorted range fetches every key first) and
  the claimed count is a count_only range;
- ``_ids/<pool>/<quoted node id>/<slot>`` holding the record: a restarted node finds its
  claim with a range of a few keys instead of reading the pool; written in the claim's
  transaction, its mod_revision is the claim's version;
- ``_queue/<pool>/<lease>``: a waiting node's entry; its create_revision is its ticket.

These keys only guide the choice of a slot; ownership is still decided by the slot key's
compare alone, so claims written without them (older idstore versions) stay safe: they
only cost lost races, after which the allocator reads the pool itself.

The package etcd3 (0.12) is used only for etcd's API definitions: its own lease refresh
has no timeout and its watch machinery stalls on reconnects, so the keepalive loop, the
watch stream and endpoint failover are driven here on plain gRPC.

The protobuf trap: etcd3's generated modules only import with protobuf's pure-Python
implementation, chosen for the whole process before protobuf is first imported, and
that one is slow: building and serializing a claim-sized transaction 139 us against
8.6 us with upb; parsing a 1,000-key range and reading its fields 15.7 ms against
0.59 ms. So this module never imports them. It reads the file descriptors they embed
(kv.proto, auth.proto, rpc.proto, as etcd3 ships them), builds the message classes in a
private descriptor pool with whichever implementation the process has, and makes the
gRPC method callables itself (see _load_api). A missing or unreadable etcd3 is a
BackendNotFound that says so.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import grpc
from google.protobuf import descriptor_pool, message_factory

from idstore.backends.base import (
    BrokenCallback,
    Claim,
    ConnectionState,
    EventsCallback,
    EventType,
    Listing,
    Position,
    SlotEvent,
    SlotRecord,
    SlotStore,
    StoreOptions,
    Ticket,
)
from idstore.errors import (
    BackendNotFound,
    ConfigError,
    NotOwner,
    SessionLost,
    SlotTaken,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_TTL = 2.0  # etcd's own lease floor with default election settings (1.5 s, rounded up)
DEFAULT_PORT = 2379
_BACKOFF_FIRST = 0.2  # re-grant after LOST: first pause, doubled up to _BACKOFF_MAX
# Kept short: until a LOST node has a new session it serves a stale view, which after a
# partition heals can still name it as the owner of a slot another node now holds.
_BACKOFF_MAX = 1.0
_MIN_REQUEST_TIMEOUT = 0.05  # a renewal sent with less time than this cannot succeed
# A failed renewal is retried after this (doubled per failure, up to the renewal interval),
# not a whole interval later: the failure may be one dead member or an election, and the
# next endpoint is likely to answer. With TTL/3 between attempts, two failed attempts
# after a member loss used up the lease's deadline and the session was presumed LOST.
_RENEW_RETRY_FIRST = 0.1
# gRPC's default reconnect backoff grows to 120 s: after a long store outage the channel
# would sit idle for minutes after etcd is back. Keep reconnect attempts frequent.
# min_reconnect_backoff is gRPC's timeout of one connection attempt (TCP + HTTP/2
# SETTINGS), not a backoff: at 200 ms, 1000 nodes connecting at once to one etcd on a
# 2-core machine saw 3-6 % of their first lease grants fail ("timed out before receiving
# SETTINGS frame"). A refused connection still fails at once.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


# etcd3's generated modules, dependencies first; each embeds its .proto file's descriptor.
_PROTO_MODULES = ("kv_pb2.py", "auth_pb2.py", "rpc_pb2.py")


def _embedded_descriptor(path: Path) -> bytes:
    """The serialized FileDescriptorProto a generated ``*_pb2.py`` module passes as
    ``serialized_pb`` (etcd3 0.12 wraps the literal in ``_b(...)``), read without running
    the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
            literal = node.value.args[0] if isinstance(node.value, ast.Call) else node.value
            data = ast.literal_eval(literal)
            return data.encode("latin-1") if isinstance(data, str) else bytes(data)
    raise ValueError(f"{path} embeds no serialized_pb")


class _Stub:
    """The gRPC callables of one service's methods, made on first use (as etcd3's
    generated stubs, without their protobuf classes)."""

    def __init__(self, service: Any, channel: grpc.Channel) -> None:
        self._methods = {m.name: m for m in service.methods}
        self._service = service.full_name
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        method = self.__dict__.get("_methods", {}).get(name)
        if method is None:
            raise AttributeError(name)
        streams = (method.client_streaming, method.server_streaming)
        make = {
            (False, False): self._channel.unary_unary,
            (False, True): self._channel.unary_stream,
            (True, False): self._channel.stream_unary,
            (True, True): self._channel.stream_stream,
        }[streams]
        call = make(
            f"/{self._service}/{name}",
            request_serializer=message_factory.GetMessageClass(method.input_type).SerializeToString,
            response_deserializer=message_factory.GetMessageClass(method.output_type).FromString,
        )
        setattr(self, name, call)
        return call


def _namespace(file: Any) -> SimpleNamespace:
    """A .proto file's messages as attributes, and a ``<Service>Stub(channel)`` per service."""
    api = SimpleNamespace()
    for name, message in file.message_types_by_name.items():
        setattr(api, name, message_factory.GetMessageClass(message))
    for name, service in file.services_by_name.items():
        setattr(api, f"{name}Stub", functools.partial(_Stub, service))
    return api


def _load_api() -> tuple[Any, Any]:
    """etcd's rpc.proto and kv.proto APIs, built from the descriptors etcd3 ships."""
    try:
        spec = importlib.util.find_spec("etcd3")  # finds the package without importing it
        if spec is None or spec.origin is None:
            raise ImportError("the package etcd3 is not installed")
        folder = Path(spec.origin).parent / "etcdrpc"
        pool = descriptor_pool.DescriptorPool()
        for module in _PROTO_MODULES:
            pool.AddSerializedFile(_embedded_descriptor(folder / module))
        return _namespace(pool.FindFileByName("rpc.proto")), _namespace(
            pool.FindFileByName("kv.proto")
        )
    except Exception as e:  # ImportError, OSError, SyntaxError, ValueError, TypeError
        raise BackendNotFound(
            f"the etcd backend reads etcd's API from the package etcd3 (0.12): {e!r}"
        ) from e


rpc, mvcc = _load_api()


# -- endpoints and channels --------------------------------------------------------------


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


class Connection:
    """One gRPC channel to one endpoint, with its stubs and (when configured) auth token."""

    def __init__(self, endpoint: Endpoint, options: StoreOptions) -> None:
        self.endpoint = endpoint
        self._options = options
        self.channel = self._channel()
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self._auth = rpc.AuthStub(self.channel)
        self._token_lock = threading.Lock()
        self.metadata: tuple[tuple[str, str], ...] | None = None

    def _channel(self) -> Any:
        o = self._options
        if not self.endpoint.secure:
            if o.tls_ca or o.tls_cert:
                log.warning("TLS files are ignored for plain endpoint %s", self.endpoint.url)
            return grpc.insecure_channel(self.endpoint.target, options=_CHANNEL_OPTIONS)
        if bool(o.tls_cert) != bool(o.tls_key):
            raise ConfigError("store.tls_cert", o.tls_cert, "tls_cert and tls_key go together")
        creds = grpc.ssl_channel_credentials(_read(o.tls_ca), _read(o.tls_key), _read(o.tls_cert))
        return grpc.secure_channel(self.endpoint.target, creds, options=_CHANNEL_OPTIONS)

    def ensure_auth(self, timeout: float) -> None:
        """Fetch a token once per connection when user/password are configured."""
        o = self._options
        if o.username is None or self.metadata is not None:
            return
        with self._token_lock:
            if self.metadata is None:
                req = rpc.AuthenticateRequest(name=o.username, password=o.password or "")
                resp = self._auth.Authenticate(req, timeout=timeout)
                self.metadata = (("token", resp.token),)

    def forget_token(self) -> None:
        self.metadata = None

    def close(self) -> None:
        self.channel.close()


# -- errors ------------------------------------------------------------------------------

_UNAVAILABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
# etcd reports some transient failures with other codes, e.g. UNKNOWN "context deadline
# exceeded" from a member that lost its leader during an election.
_TRANSIENT = ("context deadline exceeded", "timed out", "leader changed", "no leader")


def _code(e: grpc.RpcError) -> tuple[str, str]:
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    return (code.name if code is not None else "UNKNOWN"), str(details or "")


def _closed_channel(e: ValueError) -> bool:
    """grpc's error for a request on a channel closed meanwhile (not an RpcError)."""
    return "closed channel" in str(e)


def _token_expired(e: grpc.RpcError) -> bool:
    return "invalid auth token" in _code(e)[1]


def translate(e: grpc.RpcError, what: str, endpoint: str) -> StoreError:
    """The idstore error for a gRPC failure of request ``what`` at ``endpoint``."""
    code, details = _code(e)
    msg = f"etcd {what} at {endpoint}: {code}: {details}"
    if code in _UNAVAILABLE or any(t in details for t in _TRANSIENT):
        return StoreUnavailable(msg)
    if "lease not found" in details:
        return SessionLost(msg)
    return StoreError(msg)


def session_name(lease_id: int) -> str:
    return f"{lease_id:x}"


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a range cover every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])  # prefixes here end in "/", never 0xff


# Index keys hold INDEX_TOP - slot, zero-padded: ascending keys = descending slots.
INDEX_TOP = 10**10 - 1


def index_suffix(slot: int) -> bytes:
    return b"%010d" % (INDEX_TOP - slot)


def parse_slot(key: bytes, prefix: bytes) -> int | None:
    """The slot number of a key directly below the pool prefix; None for any other key."""
    rest = key[len(prefix) :]
    if not rest.isdigit() or (len(rest) > 1 and rest.startswith(b"0")):
        return None
    return int(rest)


# -- the store ---------------------------------------------------------------------------


class EtcdStore(SlotStore):
    """SlotStore on etcd v3; see the module docstring."""

    name = "etcd"

    def __init__(self, options: StoreOptions) -> None:
        super().__init__(options)
        if options.ttl < MIN_TTL:
            raise ConfigError(
                "ttl", options.ttl, f">= {MIN_TTL:g} s: etcd does not grant shorter leases"
            )
        urls = options.endpoints or (f"http://127.0.0.1:{DEFAULT_PORT}",)
        self._endpoints = [parse_endpoint(u) for u in urls]
        self._conn_lock = threading.Lock()
        self._conn: Connection | None = None
        self._conn_index = 0
        # The session. Only the keepalive thread (and open/close) change state; writers
        # read the lease under _lease_lock and hint at a loss through _lost_hint.
        self._lease_lock = threading.Lock()
        self._lease_id: int | None = None
        self._deadline = 0.0  # monotonic time by which the lease surely expired
        self._granted_ttl = math.ceil(options.ttl)
        self._lost_hint: int | None = None
        self._stale_leases: list[int] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._keepalive: threading.Thread | None = None
        self._watches: set[EtcdWatch] = set()
        self._watches_lock = threading.Lock()

    # -- connection ----------------------------------------------------------------------

    def _current(self) -> Connection:
        with self._conn_lock:
            if self._conn is None:
                raise StoreUnavailable("etcd store is not open")
            return self._conn

    def _use(self, index: int) -> Connection:
        conn = Connection(self._endpoints[index % len(self._endpoints)], self.options)
        with self._conn_lock:
            old, self._conn, self._conn_index = self._conn, conn, index % len(self._endpoints)
        if old is not None:
            old.close()
        return conn

    def _moved_on(self, conn: Connection) -> bool:
        """Whether a failover replaced ``conn`` with another open connection."""
        with self._conn_lock:
            return self._conn is not None and self._conn is not conn

    def _failover(self, failed: Connection) -> None:
        """Move to the next endpoint after ``failed`` stopped answering.

        Closing the old channel ends every watch on it, which reports on_broken: the
        watcher re-lists and watches again through the new endpoint.
        """
        if len(self._endpoints) < 2:
            return  # gRPC reconnects a single endpoint's channel by itself
        with self._conn_lock:
            if self._conn is not failed:
                return  # another request already moved on
            index = self._conn_index + 1
        log.warning(
            "etcd endpoint %s failed; trying %s",
            failed.endpoint.url,
            self._endpoints[index % len(self._endpoints)].url,
        )
        self._use(index)

    def _rpc(
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
        attempt is counted in ``ops`` unless ``count`` is False (keepalives).
        """
        timeout = self.options.request_timeout if timeout is None else timeout
        attempts = len(self._endpoints) if failover_retry else 1
        reauthed = rerouted = False
        while True:
            conn = self._current()
            step = f"authentication as user {self.options.username!r}"
            try:
                conn.ensure_auth(timeout)
                step = what
                if count:
                    self._count()
                return call(conn, timeout)
            except ValueError as e:
                # grpc: "Cannot invoke RPC on closed channel!" - another request's failover
                # closed this channel after we took it. Nothing was sent: send it once more
                # on the connection now current. (Escaping, it killed the keepalive thread.)
                if not _closed_channel(e):
                    raise
                if not rerouted and self._moved_on(conn):
                    rerouted = True
                    continue
                raise StoreUnavailable(f"etcd {step} at {conn.endpoint.url}: {e}") from e
            except grpc.RpcError as e:
                if _token_expired(e) and not reauthed:
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

    # -- session -------------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        lease = self._lease_id
        return session_name(lease) if lease is not None else ""

    def session_valid_until(self) -> float:
        # The deadline counts from when the last acknowledged keepalive was sent, so the
        # lease cannot have expired on the server before it.
        with self._lease_lock:
            return self._deadline if self._lease_id is not None else 0.0

    def open(self) -> None:
        if self._keepalive is not None:
            return
        deadline = time.monotonic() + self.options.connect_timeout
        errors: dict[str, str] = {}
        index = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._use(index)
            try:
                sent = time.monotonic()
                lease_id, ttl = self._grant(min(self.options.request_timeout, remaining), False)
            except StoreUnavailable as e:
                errors[self._endpoints[index % len(self._endpoints)].url] = str(e)
                index += 1
                if index % len(self._endpoints) == 0:  # every endpoint failed once: pause
                    time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                continue
            self._start_session(lease_id, ttl, sent)
            return
        self._close_conn()
        tried = "; ".join(errors.get(ep.url, f"{ep.url}: not tried") for ep in self._endpoints)
        raise StoreUnavailable(
            f"no etcd endpoint answered within {self.options.connect_timeout:g} s "
            f"(tried {', '.join(ep.url for ep in self._endpoints)}): {tried}"
        )

    def _start_session(self, lease_id: int, ttl: int, sent: float) -> None:
        with self._lease_lock:
            self._lease_id, self._deadline = lease_id, sent + ttl
        self._stop.clear()
        self._set_state(ConnectionState.CONNECTED)
        self._keepalive = threading.Thread(
            target=self._keepalive_loop, name=f"etcd-keepalive-{lease_id:x}", daemon=True
        )
        self._keepalive.start()

    def close(self, release: bool = True) -> None:
        with self._watches_lock:
            watches, self._watches = list(self._watches), set()
        for w in watches:
            w.cancel()
        self._stop.set()
        self._wake.set()
        thread, self._keepalive = self._keepalive, None
        # A state listener may close the store from the keepalive thread itself.
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.options.request_timeout * 2 + 1)
        with self._lease_lock:
            lease, self._lease_id = self._lease_id, None
        if release and lease is not None:
            self._revoke(lease)
        if release:
            self._revoke_stale()
        self._close_conn()
        self._set_state(ConnectionState.LOST)

    def _close_conn(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _grant(self, timeout: float, failover_retry: bool = True) -> tuple[int, int]:
        want = math.ceil(self.options.ttl)  # etcd leases are whole seconds: never shorter
        resp = self._rpc(
            "lease grant",
            lambda c, t: c.lease.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=want), timeout=t, metadata=c.metadata
            ),
            timeout=timeout,
            failover_retry=failover_retry,
        )
        if resp.error:
            raise StoreError(f"etcd refused a lease of {want} s: {resp.error}")
        granted = int(resp.TTL)
        if granted != want:
            log.warning("asked etcd for a %s s lease, it granted %s s", want, granted)
        self._granted_ttl = granted
        log.info("etcd session %x opened (TTL %s s)", resp.ID, granted)
        return int(resp.ID), granted

    def _revoke(self, lease_id: int) -> bool:
        try:
            self._rpc(
                "lease revoke",
                lambda c, t: c.lease.LeaseRevoke(
                    rpc.LeaseRevokeRequest(ID=lease_id), timeout=t, metadata=c.metadata
                ),
            )
        except SessionLost:
            return True  # already gone: that is what we wanted
        except StoreError as e:
            log.warning("could not revoke etcd lease %x: %s", lease_id, e)
            return False
        return True

    # -- keepalive -----------------------------------------------------------------------

    def _keepalive_loop(self) -> None:
        interval = max(self._granted_ttl / 3.0, 0.1)
        next_at = time.monotonic() + interval
        retry = _RENEW_RETRY_FIRST
        while not self._stop.is_set():
            self._wake.clear()
            with self._lease_lock:
                lease, deadline, hint = self._lease_id, self._deadline, self._lost_hint
            if lease is None:
                self._regain()
                interval = max(self._granted_ttl / 3.0, 0.1)
                next_at = time.monotonic() + interval
                continue
            now = time.monotonic()
            if hint == lease:
                self._lose(lease, "etcd no longer knows the lease")
            elif now >= deadline:
                self._lose(lease, f"no renewal succeeded within the {self._granted_ttl} s TTL")
            elif now < next_at:
                self._wake.wait(min(next_at, deadline) - now)
            elif self._renew(lease, deadline):
                next_at = now + interval  # "at most every TTL/3", counted from each attempt
                retry = _RENEW_RETRY_FIRST
            else:
                next_at = time.monotonic() + random.uniform(retry / 2, retry)
                retry = min(retry * 2, interval)

    def _renew(self, lease: int, deadline: float) -> bool:
        """One renewal attempt; whether it succeeded."""
        timeout = min(self.options.request_timeout, deadline - time.monotonic())
        if timeout < _MIN_REQUEST_TIMEOUT:
            return False  # the deadline check in the loop declares LOST
        sent = time.monotonic()
        try:
            ttl = self._refresh_once(lease, timeout)
        except StoreError as e:
            self.renewal_failures += 1
            log.warning("etcd lease %x renewal failed: %s", lease, e)
            if isinstance(e, SessionLost):
                self._lose(lease, str(e))
            else:
                self._set_state(ConnectionState.SUSPENDED)
            return False
        if ttl <= 0:
            self.renewal_failures += 1
            self._lose(lease, "etcd reports the lease expired (TTL 0)")
            return False
        self.renewals += 1
        with self._lease_lock:
            if self._lease_id == lease:
                self._deadline = sent + ttl  # from when we sent: the server's clock ran later
        self._set_state(ConnectionState.CONNECTED)
        return True

    def _refresh_once(self, lease: int, timeout: float) -> int:
        """One keepalive round trip with its own deadline (not counted as an op)."""

        def call(c: Connection, t: float) -> int:
            stream = c.lease.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease)]), timeout=t, metadata=c.metadata
            )
            try:
                for resp in stream:
                    return int(resp.TTL)
            finally:
                stream.cancel()
            raise StoreUnavailable("etcd closed the keepalive stream without a reply")

        return self._rpc("lease keepalive", call, timeout=timeout, count=False)

    def _lose(self, lease: int, reason: str) -> None:
        with self._lease_lock:
            if self._lease_id != lease:
                return
            self._lease_id = None
            self._stale_leases.append(lease)
        log.warning("etcd session %x lost: %s", lease, reason)
        self._set_state(ConnectionState.LOST)

    def _regain(self) -> None:
        """After LOST: grant a new lease, retrying with bounded backoff and jitter."""
        delay = _BACKOFF_FIRST
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                lease_id, ttl = self._grant(self.options.request_timeout)
            except StoreError as e:
                pause = random.uniform(delay / 2, delay)
                log.info("no new etcd session yet (%s); retrying in %.1f s", e, pause)
                self._stop.wait(pause)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            # The presumed-lost lease is NOT revoked here: a restarted etcd extends every
            # lease, so its claims may still be valid, and revoking would make our name
            # vanish until we claim again. The allocator re-takes our own claims under the
            # new lease (fenced on their version); the old lease then holds nothing and
            # expires by itself, or is revoked on a clean close.
            with self._lease_lock:
                self._lease_id, self._deadline = lease_id, sent + ttl
            self._set_state(ConnectionState.CONNECTED)
            return

    def _revoke_stale(self) -> None:
        """Revoke leases presumed lost (on a clean close: nothing of ours may linger)."""
        with self._lease_lock:
            stale, self._stale_leases = self._stale_leases, []
        for lease in stale:
            self._revoke(lease)

    def _write_lease(self) -> int:
        """The lease new writes go under; SessionLost once its deadline has passed."""
        with self._lease_lock:
            lease, deadline = self._lease_id, self._deadline
        if lease is None:
            raise SessionLost("no etcd session: the lease was lost and no new one yet")
        if time.monotonic() >= deadline:
            self._wake.set()
            raise SessionLost(f"etcd session {lease:x} expired: no renewal within its TTL")
        return lease

    def _lease_gone(self, lease: int) -> None:
        """A write found our lease unknown to etcd: the keepalive thread goes LOST now."""
        with self._lease_lock:
            self._lost_hint = lease
        self._wake.set()

    # -- slots ---------------------------------------------------------------------------

    def _txn(self, what: str, txn: Any, lease: int | None, retry: bool = False) -> Any:
        try:
            return self._rpc(
                what,
                lambda c, t: c.kv.Txn(txn, timeout=t, metadata=c.metadata),
                failover_retry=retry,
            )
        except SessionLost:
            if lease is not None:
                self._lease_gone(lease)
            raise

    def _owner(self, pool: str, slot: int, resp: Any) -> Claim | None:
        """The current claim from a failed txn's range branch."""
        kvs = resp.responses[0].response_range.kvs if resp.responses else []
        if not kvs:
            return None
        return self._claim_of(pool, slot, kvs[0])

    def _claim_of(self, pool: str, slot: int, kv: Any) -> Claim | None:
        try:
            rec = SlotRecord.decode(kv.value)
        except StoreError as e:
            log.warning("skipping %s: %s", kv.key.decode(errors="replace"), e)
            return None
        return Claim(pool, slot, rec, int(kv.mod_revision), session_name(kv.lease))

    def claim(
        self, pool: str, slot: int, record: SlotRecord, ticket: Ticket | None = None
    ) -> Claim:
        lease = self._write_lease()
        key = self.options.slot_path(pool, slot).encode()
        leave = [_delete(ticket.key.encode())] if ticket is not None else []
        txn = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=key,
                    target=rpc.Compare.CREATE,
                    result=rpc.Compare.EQUAL,
                    create_revision=0,
                )
            ],
            success=[*self._claim_puts(pool, slot, record, lease), *leave],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        # Retrying on another endpoint is safe: an applied first attempt comes back as
        # our own claim through the idempotence check below.
        resp = self._txn("claim", txn, lease, retry=True)
        if resp.succeeded:
            return Claim(pool, slot, record, int(resp.header.revision), session_name(lease))
        return self._own_or_taken(pool, slot, record, lease, resp)

    def reclaim(self, previous: Claim, record: SlotRecord) -> Claim:
        pool, slot = previous.pool, previous.slot
        if previous.record.node_id != record.node_id:
            raise NotOwner(
                f"slot {pool}/{slot} belongs to {previous.record.node_id!r}, not {record.node_id!r}"
            )
        lease = self._write_lease()
        key = self.options.slot_path(pool, slot).encode()
        txn = rpc.TxnRequest(
            compare=[_same_version(key, previous.version)],
            # The index keys move to the new lease with the slot.
            success=list(self._claim_puts(pool, slot, record, lease)),
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        # Safe to retry like claim: an applied first attempt comes back as our own claim.
        resp = self._txn("reclaim", txn, lease, retry=True)
        if resp.succeeded:
            return Claim(pool, slot, record, int(resp.header.revision), session_name(lease))
        return self._own_or_taken(pool, slot, record, lease, resp)

    def _own_or_taken(
        self, pool: str, slot: int, record: SlotRecord, lease: int, resp: Any
    ) -> Claim:
        """After a failed compare: our own claim (a retry that had applied), else SlotTaken."""
        owner = self._owner(pool, slot, resp)
        if owner and owner.session == session_name(lease) and owner.record.same_boot(record):
            return owner
        raise SlotTaken(pool, slot, owner)

    def release(self, claim: Claim) -> bool:
        key = self.options.slot_path(claim.pool, claim.slot).encode()
        txn = rpc.TxnRequest(
            compare=[_same_version(key, claim.version)],
            success=[
                _delete(key),
                _delete(self._index_key(claim.pool, claim.slot)),
                _delete(self._id_key(claim.pool, claim.record.node_id, claim.slot)),
            ],
        )
        return bool(self._txn("release", txn, None).succeeded)

    def list(self, pool: str) -> Listing:
        prefix = (self.options.pool_path(pool) + "/").encode()
        req = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix))
        resp = self._rpc(
            "range",
            lambda c, t: c.kv.Range(req, timeout=t, metadata=c.metadata),
            failover_retry=True,
        )
        claims: dict[int, Claim] = {}
        for kv in resp.kvs:
            slot = parse_slot(kv.key, prefix)
            if slot is None:
                continue  # other keys may live below the pool (later features)
            claim = self._claim_of(pool, slot, kv)
            if claim is not None:
                claims[slot] = claim
        return Listing(pool, claims, int(resp.header.revision))

    # -- waiting queue -------------------------------------------------------------------

    def _base(self) -> str:
        return f"{self.options.prefix.rstrip('/')}/{self.options.cluster}"

    def _queue_prefix(self, pool: str) -> bytes:
        return f"{self._base()}/_queue/{pool}/".encode()

    def _index_prefix(self, pool: str) -> bytes:
        return f"{self._base()}/_slots/{pool}/".encode()

    def _index_key(self, pool: str, slot: int) -> bytes:
        return self._index_prefix(pool) + index_suffix(slot)

    def _index_range(self, pool: str, slots: range) -> tuple[bytes, bytes]:
        """[key, range_end) covering exactly the index keys of ``slots``."""
        prefix = self._index_prefix(pool)
        return prefix + index_suffix(slots.stop - 1), prefix + index_suffix(slots.start) + b"\0"

    def _ids_prefix(self, pool: str, node_id: str) -> bytes:
        return f"{self._base()}/_ids/{pool}/{quote(node_id, safe='')}/".encode()

    def _id_key(self, pool: str, node_id: str, slot: int) -> bytes:
        return self._ids_prefix(pool, node_id) + str(slot).encode()

    def _claim_puts(self, pool: str, slot: int, record: SlotRecord, lease: int) -> tuple[Any, ...]:
        """The slot key and its two index keys, all under the claim's lease."""
        index = rpc.PutRequest(key=self._index_key(pool, slot), value=b"%d" % slot, lease=lease)
        return (
            _put(self.options.slot_path(pool, slot).encode(), record, lease),
            rpc.RequestOp(request_put=index),
            _put(self._id_key(pool, record.node_id, slot), record, lease),
        )

    def _counts(self, pool: str, slots: range) -> tuple[Any, ...]:
        """Range ops: claims in ``slots`` (count), then the highest of them (limit 1)."""
        key, end = self._index_range(pool, slots)
        return (_range(key, end, count_only=True), _range(key, end, keys_only=True, limit=1))

    def _highest(self, pool: str, resp: Any) -> int | None:
        kvs = resp.response_range.kvs
        if not kvs:
            return None
        return INDEX_TOP - int(kvs[0].key[len(self._index_prefix(pool)) :])

    def _own(self, pool: str, slots: range, node_id: str, resp: Any) -> tuple[Claim, ...]:
        prefix = self._ids_prefix(pool, node_id)
        own = []
        for kv in resp.response_range.kvs:
            slot = parse_slot(kv.key, prefix)
            claim = self._claim_of(pool, slot, kv) if slot is not None and slot in slots else None
            if claim is not None and claim.record.node_id == node_id:
                own.append(claim)
        return tuple(sorted(own, key=lambda c: c.slot))

    def enqueue(self, pool: str, slots: range, node_id: str, sticky: bool = True) -> Position:
        lease = self._write_lease()
        queue_prefix = self._queue_prefix(pool)
        key = queue_prefix + session_name(lease).encode()
        ids = self._ids_prefix(pool, node_id)
        no_claim = rpc.Compare(
            key=ids,
            range_end=prefix_end(ids),
            target=rpc.Compare.CREATE,
            result=rpc.Compare.EQUAL,
            create_revision=0,
        )  # holds for an empty range: this identity holds no claim
        txn = rpc.TxnRequest(
            compare=[no_claim] if sticky else [],
            # Counted before our put, the queue holds exactly the nodes ahead of us.
            success=[
                _range(queue_prefix, prefix_end(queue_prefix), count_only=True),
                *self._counts(pool, slots),
                rpc.RequestOp(
                    request_put=rpc.PutRequest(
                        key=key, value=node_id.encode(), lease=lease, prev_kv=True
                    )
                ),
            ],
            failure=[_range(ids, prefix_end(ids))],
        )
        # Retrying on another endpoint is safe: an applied first attempt shows as prev_kv.
        resp = self._txn("enqueue", txn, lease, retry=True)
        revision = int(resp.header.revision)
        if not resp.succeeded:
            own = self._own(pool, slots, node_id, resp.responses[0])
            return Position(pool, slots, None, 0, 0, None, None, own, revision)
        put = resp.responses[3].response_put
        if put.HasField("prev_kv"):
            # Already queued (a retried request, or a second round): keep the old place.
            old = Ticket(pool, int(put.prev_kv.create_revision), key.decode(), session_name(lease))
            return self.position(old, slots, node_id)
        ticket = Ticket(pool, revision, key.decode(), session_name(lease))
        count, top = resp.responses[1], resp.responses[2]
        taken = int(count.response_range.count)
        highest = self._highest(pool, top)
        ahead = int(resp.responses[0].response_range.count)
        return Position(pool, slots, ticket, ahead, taken, highest, None, (), revision)

    def position(self, ticket: Ticket, slots: range, node_id: str, exact: bool = False) -> Position:
        pool = ticket.pool
        queue_prefix = self._queue_prefix(pool)
        ids = self._ids_prefix(pool, node_id)
        ops = [
            # count_only would ignore max_create_revision (etcd 3.4): read the keys ahead.
            _range(
                queue_prefix,
                prefix_end(queue_prefix),
                keys_only=True,
                max_create_revision=ticket.order - 1,
            ),
            _range(ticket.key.encode(), keys_only=True),
            *self._counts(pool, slots),
            _range(ids, prefix_end(ids)),
        ]
        if exact:
            ops.append(_range(*self._index_range(pool, slots), keys_only=True))
        resp = self._txn("position", rpc.TxnRequest(success=ops), None, retry=True)
        mine = resp.responses[1].response_range.kvs
        queued = ticket if mine and int(mine[0].create_revision) == ticket.order else None
        highest = self._highest(pool, resp.responses[3])
        free = self._free_below(pool, highest, slots, resp.responses[5]) if exact else None
        return Position(
            pool,
            slots,
            queued,
            len(resp.responses[0].response_range.kvs),
            int(resp.responses[2].response_range.count),
            highest,
            free,
            self._own(pool, slots, node_id, resp.responses[4]),
            int(resp.header.revision),
        )

    def _free_below(
        self, pool: str, highest: int | None, slots: range, resp: Any
    ) -> tuple[int, ...]:
        if highest is None:
            return ()
        prefix = self._index_prefix(pool)
        taken = {INDEX_TOP - int(kv.key[len(prefix) :]) for kv in resp.response_range.kvs}
        return tuple(s for s in range(slots.start, highest) if s not in taken)

    def dequeue(self, ticket: Ticket) -> None:
        key = ticket.key.encode()
        txn = rpc.TxnRequest(
            # Only our entry: a later entry at this key would be another place in line.
            compare=[
                rpc.Compare(
                    key=key,
                    target=rpc.Compare.CREATE,
                    result=rpc.Compare.EQUAL,
                    create_revision=ticket.order,
                )
            ],
            success=[_delete(key)],
        )
        self._txn("dequeue", txn, None, retry=True)

    # -- watch ---------------------------------------------------------------------------

    def watch(
        self,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
    ) -> EtcdWatch:
        self._count()
        conn = self._current()
        w = EtcdWatch(self, conn, since, on_events, on_broken)
        with self._watches_lock:
            self._watches.add(w)
        try:
            w.start()
        except ValueError as e:  # a failover closed the channel meanwhile: the caller retries
            if not _closed_channel(e):
                raise
            self._forget_watch(w)
            raise StoreUnavailable(f"etcd watch at {conn.endpoint.url}: {e}") from e
        return w

    def _forget_watch(self, w: EtcdWatch) -> None:
        with self._watches_lock:
            self._watches.discard(w)

    def _pool_changed_after(self, conn: Connection, pool: str, revision: int) -> bool:
        """Whether a key of ``pool`` was written after ``revision`` (linearizable read on
        ``conn``, so a member cut off from its cluster fails it instead of answering)."""
        self._count()
        prefix = (self.options.pool_path(pool) + "/").encode()
        req = rpc.RangeRequest(
            key=prefix,
            range_end=prefix_end(prefix),
            keys_only=True,
            limit=1,
            min_mod_revision=revision + 1,
        )
        timeout = self.options.request_timeout
        try:
            try:
                resp = conn.kv.Range(req, timeout=timeout, metadata=conn.metadata)
            except grpc.RpcError as e:
                if not _token_expired(e):
                    raise
                # A quiet watch outlives auth tokens: log in again once, as _rpc does.
                conn.forget_token()
                conn.ensure_auth(timeout)
                resp = conn.kv.Range(req, timeout=timeout, metadata=conn.metadata)
        except grpc.RpcError as e:
            raise translate(e, "watch check", conn.endpoint.url) from e
        except ValueError as e:  # the channel was closed by a failover: the watch breaks
            if not _closed_channel(e):
                raise
            raise StoreUnavailable(f"etcd watch check at {conn.endpoint.url}: {e}") from e
        return len(resp.kvs) > 0


def _delete(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def _range(key: bytes, end: bytes | None = None, **options: Any) -> Any:
    req = (
        rpc.RangeRequest(key=key, **options)
        if end is None
        else rpc.RangeRequest(key=key, range_end=end, **options)
    )
    return rpc.RequestOp(request_range=req)


def _put(key: bytes, record: SlotRecord, lease: int) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=record.encode(), lease=lease))


def _same_version(key: bytes, version: int) -> Any:
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=version
    )


# -- watch -------------------------------------------------------------------------------


class EtcdWatch:
    """One pool's watch: a raw gRPC Watch stream read on one thread, dispatched on another.

    The dispatcher also guards against a silent stall (a member cut off from its cluster
    keeps the stream open but sends nothing): after ``check_interval`` without news it
    asks the same member, linearizably, whether the pool changed since the last revision
    delivered; a failed check, or a change the stream then fails to deliver within
    ``check_grace``, breaks the watch so the caller re-lists.
    """

    def __init__(
        self,
        store: EtcdStore,
        conn: Connection,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
    ) -> None:
        self._store = store
        self._conn = conn
        self.pool = since.pool
        self._prefix = (store.options.pool_path(since.pool) + "/").encode()
        self._last = since.revision  # every change up to here has been delivered
        self._on_events = on_events
        self._on_broken = on_broken
        extra = store.options.extra
        self.check_interval = float(extra.get("watch_check_interval", store.options.ttl))
        self.check_grace = float(extra.get("watch_check_grace", 2.0))
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._cancelled = threading.Event()
        self._call: Any = None

    def start(self) -> None:
        create = rpc.WatchCreateRequest(
            key=self._prefix,
            range_end=prefix_end(self._prefix),
            start_revision=self._last + 1,
            progress_notify=True,
        )
        self._call = self._conn.watch.Watch(
            self._requests(rpc.WatchRequest(create_request=create)),
            metadata=self._conn.metadata,
        )
        for target, name in ((self._read, "reader"), (self._dispatch, "dispatch")):
            threading.Thread(
                target=target, name=f"etcd-watch-{self.pool}-{name}", daemon=True
            ).start()

    def cancel(self) -> None:
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        self._inbox.put(("cancel", None))
        if self._call is not None:
            self._call.cancel()
        self._store._forget_watch(self)

    def _requests(self, create: Any) -> Iterator[Any]:
        yield create
        self._cancelled.wait()  # keep the stream open until cancelled

    def _read(self) -> None:
        try:
            for resp in self._call:
                self._inbox.put(("resp", resp))
            self._inbox.put(("broken", "the watch stream ended"))
        except grpc.RpcError as e:
            code, details = _code(e)
            self._inbox.put(
                ("broken", f"watch stream error at {self._conn.endpoint.url}: {code}: {details}")
            )
        except Exception as e:  # never let the reader die silently
            self._inbox.put(("broken", f"watch stream failed: {e!r}"))

    def _dispatch(self) -> None:
        pending: tuple[int, float] | None = None  # (revision, deadline) of an undelivered change
        while not self._cancelled.is_set():
            try:
                kind, item = self._inbox.get(timeout=self._wait_time(pending))
            except queue.Empty:
                pending, reason = self._check(pending)
                if reason:
                    self._break(reason)
                    return
                continue
            if kind == "cancel":
                return
            if kind == "broken":
                self._break(item)
                return
            reason = self._handle(item)
            if reason:
                self._break(reason)
                return
            if pending is not None and self._last > pending[0]:
                pending = None

    def _wait_time(self, pending: tuple[int, float] | None) -> float:
        if pending is None:
            return self.check_interval
        return max(0.01, pending[1] - time.monotonic())

    def _check(self, pending: tuple[int, float] | None) -> tuple[tuple[int, float] | None, str]:
        """A quiet stream: is it quiet because nothing changed?"""
        if pending is not None:
            if self._last > pending[0]:
                return None, ""
            return None, (
                f"watch stalled: the pool changed after revision {pending[0]} "
                f"but nothing arrived within {self.check_grace:g} s"
            )
        try:
            changed = self._store._pool_changed_after(self._conn, self.pool, self._last)
        except StoreError as e:
            return None, f"watch check failed: {e}"
        if changed:
            return (self._last, time.monotonic() + self.check_grace), ""
        return None, ""

    def _handle(self, resp: Any) -> str:
        """Deliver one watch response; a reason string when the watch is broken."""
        if resp.compact_revision:
            return (
                f"revision {self._last + 1} is compacted "
                f"(oldest available: {resp.compact_revision})"
            )
        if resp.canceled:
            return f"etcd canceled the watch: {resp.cancel_reason or 'no reason given'}"
        events = [e for e in map(self._event, resp.events) if e is not None]
        if resp.events:
            self._last = max(self._last, int(resp.events[-1].kv.mod_revision))
        elif not resp.created and resp.header.revision:
            # A progress notification: everything up to this revision was sent.
            self._last = max(self._last, int(resp.header.revision))
        if events and not self._cancelled.is_set():
            try:
                self._on_events(events)
            except Exception:
                log.exception("watch callback failed")
        return ""

    def _event(self, ev: Any) -> SlotEvent | None:
        kv = ev.kv
        slot = parse_slot(kv.key, self._prefix)
        if slot is None:
            return None
        revision = int(kv.mod_revision)
        if ev.type == mvcc.Event.DELETE:
            return SlotEvent(EventType.DELETE, self.pool, slot, None, revision)
        claim = self._store._claim_of(self.pool, slot, kv)
        if claim is None:
            return None
        return SlotEvent(EventType.PUT, self.pool, slot, claim, revision)

    def _break(self, reason: str) -> None:
        if self._cancelled.is_set():
            return  # a cancelled watch reports nothing
        self._cancelled.set()
        if self._call is not None:
            self._call.cancel()
        self._store._forget_watch(self)
        log.info("etcd watch of pool %s broken: %s", self.pool, reason)
        try:
            self._on_broken(reason)
        except Exception:
            log.exception("watch on_broken callback failed")


__all__: Sequence[str] = ["EtcdStore", "EtcdWatch"]
