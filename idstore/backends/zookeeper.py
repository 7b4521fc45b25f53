"""ZooKeeper backend: a slot is an ephemeral znode, a session is a ZooKeeper session.

Layout: ``<chroot>/<prefix>/<cluster>/<pool>/<slot>`` holds ``SlotRecord.encode()``; the
pool znode and its parents are persistent. ``Claim.version`` is the slot znode's czxid
(new on every create), ``Claim.session`` its ephemeralOwner in hex (``session_id``).

Fencing. ZooKeeper cannot compare a znode's czxid in a transaction, and a versioned
delete is no fence (every fresh znode has data version 0, so ``delete(path, 0)`` could
remove a newer owner's znode). So every create idstore makes in a pool is a transaction
that also bumps the pool znode's data version: the pool version is a pool-wide "a slot
was created" counter. ``reclaim`` and ``release`` read the pool's version *before* the
slot's stat (one session's requests are processed in order), check the slot's czxid,
then commit ``check(pool, version)`` with their delete (and create). If the check holds,
no znode was created in the pool since the slot was read, so the znode at the path is
the one read or none at all: the delete can only hit the claim the caller meant.
Deletions need no bump: a slot deleted in between makes the delete fail with NoNode.
Only idstore may create znodes in a pool (the ACL enforces it when credentials are set).

Waiting queue and identity markers. Two more kinds of ephemeral children live in the
pool znode, so that one get_children (names only: cheap) shows a starting node the whole
picture — claimed slots, who waits before it, and whether its identity holds a claim:

- ``q<h>-<sequence>``: a waiting node's entry (sequential: its sequence is its ticket);
- ``i<h>.<slot>``: created in the claim's transaction, so it lives and dies with the
  claim (same session, same czxid); a restarted node finds its old slot by name.

``<h>`` is a 16-hex-digit hash of the node identity (names stay short; a collision only
costs a read). They are not at slot paths, so they need no pool-version bump: the fence
only guards the znode at a slot's path. A waiting entry whose identity has a marker
belongs to a node that will take its old slot back: nobody counts it as ahead of them.

Session states. kazoo reports SUSPENDED on a lost connection but learns of expiry only
after it reconnects, while the server expires the session a session timeout after it
last heard from us and may hand our slot to another node. Like Curator, this backend
presumes the session LOST once nothing has been heard from the server for 80% of the
negotiated session timeout. If the session then turns out to have survived, it is
closed and a new one opened: once a holder was told LOST it claims again under a new
session, and nothing of the old one lingers.

``ops`` counts idstore operations (open, claim, reclaim, release, list, watch), one
each like every backend; ``wire_requests`` counts the ZooKeeper requests they sent
(a list of N slots is 1 + N requests), for benchmarks that want the raw figure.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import queue
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    RolledBackError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler
from kazoo.protocol.states import EventType as ZkEventType
from kazoo.protocol.states import KazooState, WatchedEvent, ZnodeStat
from kazoo.retry import KazooRetry
from kazoo.security import ACL, make_acl, make_digest_acl

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
    position_of,
)
from idstore.errors import (
    ConfigError,
    NotOwner,
    SessionLost,
    SlotTaken,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

# Presume the session lost once the server has been silent this fraction of the session
# timeout: the rest is the margin for clock rate, scheduling and the holder's reaction.
LOST_AFTER = 0.8
_PING_XID = -2  # kazoo.protocol.connection.PING_XID: the xid of ping replies
# Free slots read ahead with every re-listing of a pool (see _PoolWatch._speculate).
SPECULATIVE_READS = 4
# How long open() waits for the state machine to see the new session.
_STATE_SETTLE = 5.0
# Every this many sessions, one makes the pool's tree ahead of its queue entry, unasked
# (see enqueue): in a new pool the herd then finds it made after the first few
# arrivals. 0: nobody does.
TREE_MAKER_EVERY = 8
_SCHEMES = ("zk://", "zookeeper://")


def _connect_failure(host: str, port: int, e: Exception) -> str:
    """``host:port: reason`` of a failed connection attempt, naming a TLS failure as such
    (kazoo wraps the ssl error into a generic "socket connection error")."""
    cause = e if isinstance(e, ssl.SSLError) else e.__cause__ or e.__context__
    if isinstance(cause, ssl.SSLError):
        return f"{host}:{port}: TLS handshake failed: {cause.strerror or cause}"
    return f"{host}:{port}: {e}"


@dataclass(frozen=True)
class _ConnectSpec:
    hosts: str  # kazoo connect string, without chroot
    root: str  # path prefix idstore applies itself ("" for none)


def parse_endpoints(options: StoreOptions) -> _ConnectSpec:
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
    return _ConnectSpec(",".join(hosts), root.rstrip("/"))


def _slot_of(name: str) -> int | None:
    """The slot number a child name stands for; None for anything idstore did not make."""
    if not name.isdigit() or (len(name) > 1 and name[0] == "0"):
        return None
    return int(name)


def _session_of(client: KazooClient) -> str:
    """The client's current session id as idstore shows it (hex, like ephemeralOwner)."""
    client_id = client.client_id
    return f"{int(client_id[0]):x}" if client_id else ""


def _identity(node_id: str) -> str:
    """The short stand-in for a node identity in queue and marker names."""
    return hashlib.sha256(node_id.encode()).hexdigest()[:16]


def _failed_op(results: Sequence[Any]) -> int | None:
    """Index of the operation that failed a transaction (kazoo marks the others)."""
    for i, r in enumerate(results):
        if isinstance(r, Exception) and not isinstance(r, RolledBackError):
            return i
    return None


def _raise_first_failure(results: Sequence[Any]) -> None:
    """kazoo returns a failed transaction's errors as result values: raise the cause."""
    failures = [r for r in results if isinstance(r, Exception)]
    causes = [r for r in failures if not isinstance(r, RolledBackError)]
    if causes:
        raise causes[0]
    if failures:
        raise failures[0]


class _Handler(SequentialThreadingHandler):  # type: ignore[misc]  # kazoo is untyped
    """kazoo's threading handler, making TLS connections with idstore's context.

    kazoo builds a context per attempt from file names, always adds the system's CAs
    and checks no host name unless told; the store's context (see _tls_context) trusts
    what the configuration says and checks the server's name.
    """

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        super().__init__()
        self._tls = tls

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._tls is None or not kwargs.get("use_ssl"):
            return super().create_connection(*args, **kwargs)
        address = kwargs["address"]
        sock = socket.create_connection(address, kwargs.get("timeout"))
        try:
            conn = self._tls.wrap_socket(sock, server_hostname=kwargs.get("hostname"))
        except BaseException:
            sock.close()
            raise
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as kazoo does
        return conn


class ZooKeeperStore(SlotStore):
    """SlotStore on ZooKeeper through kazoo."""

    name = "zookeeper"

    def __init__(self, options: StoreOptions) -> None:
        super().__init__(options)
        self._spec = parse_endpoints(options)
        self._client: KazooClient | None = None
        self._lock = threading.Lock()
        self._inbox: queue.Queue[str | None] = queue.Queue()
        self._supervisor: threading.Thread | None = None
        self._closing = False
        self._sid: int | None = None
        # A session we told the holder is lost; if it reappears it is closed, not used.
        self._given_up_sid: int | None = None
        self._silent_since: float | None = None  # monotonic; set while SUSPENDED
        self._last_heard = 0.0  # monotonic time of the last packet from the server
        self._stamped = False  # are _last_heard and _confirmed kept current?
        self._ping_sent = 0.0  # monotonic send time of the latest ping
        self._confirmed = 0.0  # send time of the latest ping the server answered
        self._negotiated = options.ttl  # session timeout the server granted, seconds
        # Why the latest connection attempt failed ("host:port: reason"), for open().
        self._last_connect_error: str | None = None
        self._connected = threading.Event()
        self._watches: set[_PoolWatch] = set()
        self._known_pools: set[str] = set()
        self._wire = 0
        self._acl = self._make_acl()

    # -- connection ------------------------------------------------------------------

    def _make_acl(self) -> list[ACL] | None:
        o = self.options
        if not o.username:
            return None
        return [
            make_digest_acl(o.username, o.password or "", all=True),
            make_acl("world", "anyone", read=True),
        ]

    def auth_data(self) -> list[tuple[str, str]]:
        o = self.options
        if not o.username:
            return []
        return [("digest", f"{o.username}:{o.password or ''}")]

    def _tls_context(self) -> ssl.SSLContext | None:
        """The TLS context to speak to the servers with, its files loaded once; None: plain.

        kazoo would load the files anew on every connection attempt and treat any
        failure as a dropped connection it retries until connect_timeout: a missing or
        malformed file would read as an unreachable store. Loaded here, it is one
        configuration error naming the key and the file. With ``tls_ca`` only that CA is
        trusted, as with etcd (kazoo's own context adds the system's CAs); without it,
        the system's. The server's certificate must name the host of the endpoint.
        """
        o = self.options
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
                    "store.tls_ca",
                    o.tls_ca,
                    f"a readable PEM file of CA certificates ({e.strerror})",
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

    def _new_client(self) -> KazooClient:
        o = self.options
        tls = self._tls_context()
        self._last_connect_error = None
        client = KazooClient(
            handler=_Handler(tls),
            hosts=self._spec.hosts,
            timeout=o.ttl,
            # Reconnect forever, quickly: a fresh session must follow an expiry at once, and
            # after an election or a server restart the client must be back before the
            # session is presumed lost (LOST_AFTER of the timeout). kazoo sleeps up to
            # 1.4 x max_delay between passes over the servers: a 1 s cap made a node on
            # the killed leader of a ttl-3 ensemble reconnect 0.8 s after the election
            # ended, past that point. So the cap is a tenth of the ttl (at most 1 s).
            connection_retry=KazooRetry(
                max_tries=-1, delay=0.05, backoff=2, max_delay=min(1.0, o.ttl / 10)
            ),
            auth_data=self.auth_data() or None,
            default_acl=self._acl,
            use_ssl=tls is not None,  # the handler makes the TLS connections
            logger=logging.getLogger("kazoo.client"),
        )
        self._instrument(client)
        client.add_listener(self._on_kazoo_state)
        return client

    def _instrument(self, client: KazooClient) -> None:
        """Learn when the server last spoke and the session timeout it granted.

        kazoo exposes neither, and both bound how long a silent session may still be
        alive on the server. Wrapping two of its connection's methods is the only way
        in; if a kazoo version lacks them, the backend falls back to the worst case
        (SUSPENDED is reported up to 2/3 of the timeout after the server went quiet).
        """
        conn = getattr(client, "_connection", None)
        read_socket = getattr(conn, "_read_socket", None)
        connect = getattr(conn, "_connect", None)
        read_header = getattr(conn, "_read_header", None)
        send_ping = getattr(conn, "_send_ping", None)
        if conn is None or None in (read_socket, connect, read_header, send_ping):
            log.warning("kazoo internals changed: using worst-case session deadlines")
            return
        assert read_socket and connect and read_header and send_ping  # for mypy

        def read_socket_stamped(*args: Any, **kwargs: Any) -> Any:
            result = read_socket(*args, **kwargs)
            # Only after a packet was read: a closed socket is readable too (EOF).
            self._last_heard = time.monotonic()
            return result

        def send_ping_stamped(*args: Any, **kwargs: Any) -> Any:
            self._ping_sent = time.monotonic()
            return send_ping(*args, **kwargs)

        def read_header_checked(*args: Any, **kwargs: Any) -> Any:
            result = read_header(*args, **kwargs)
            if getattr(result[0], "xid", None) == _PING_XID:
                # The server heard our ping no earlier than we sent it, so the session
                # lives at least a timeout from then. A reply's arrival time would not do:
                # after a pause (SIGSTOP) stale replies are read from the socket buffer.
                self._confirmed = self._ping_sent
                self.renewals += 1
            return result

        def connect_measured(host: str, hostip: str, port: int) -> Any:
            started = time.monotonic()
            try:
                read_timeout, connect_timeout = connect(host, hostip, port)
            except Exception as e:
                # kazoo only logs the failure and tries again until start() times out;
                # kept, so that open() can say why (a refused TLS handshake, say).
                self._last_connect_error = _connect_failure(host, port, e)
                raise
            self._last_heard = time.monotonic()
            self._confirmed = started
            # kazoo derives its read timeout as 2/3 of the negotiated timeout (ms).
            granted = read_timeout * 1.5 / 1000.0
            if abs(granted - self.options.ttl) > 0.05:
                log.warning(
                    "ZooKeeper granted a session timeout of %.1fs instead of ttl %.1fs "
                    "(the server's min/maxSessionTimeout)",
                    granted,
                    self.options.ttl,
                )
            self._negotiated = granted
            return read_timeout, connect_timeout

        conn._read_socket = read_socket_stamped
        conn._connect = connect_measured
        conn._read_header = read_header_checked
        conn._send_ping = send_ping_stamped
        self._stamped = True

    def open(self) -> None:
        self._count()
        self._wire += 1
        self._closing = False
        self._connected.clear()
        if self._supervisor is None or not self._supervisor.is_alive():
            self._supervisor = threading.Thread(
                target=self._supervise, name="zk-supervisor", daemon=True
            )
            self._supervisor.start()
        client = self._new_client()
        self._client = client
        try:
            client.start(timeout=self.options.connect_timeout)
        except (KazooTimeoutError, KazooException, OSError) as e:
            self._client = None
            failure = self._last_connect_error
            raise StoreUnavailable(
                f"no ZooKeeper session within {self.options.connect_timeout}s "
                f"(tried {self._spec.hosts})" + (f"; last attempt: {failure}" if failure else "")
            ) from e
        if not self._connected.wait(_STATE_SETTLE):
            raise StoreUnavailable(f"ZooKeeper session on {self._spec.hosts} did not settle")

    def close(self, release: bool = True) -> None:
        self._closing = True
        client, self._client = self._client, None
        if client is not None:
            try:
                if release:
                    client.stop()  # sends closeSession: our ephemerals vanish at once
                else:
                    self._drop_connection(client)
                client.close()
            except Exception:  # closing must not fail; the session ends either way
                log.warning("closing the ZooKeeper client failed", exc_info=True)
        self._inbox.put(None)
        for w in self._watch_list():
            w.cancel()
        self._sid = None
        self._set_state(ConnectionState.LOST)

    @staticmethod
    def _drop_connection(client: KazooClient) -> None:
        """Disconnect without closeSession, as a crash would: the session (and its
        ephemeral znodes) lives on on the server until it times out.

        kazoo has no public call for this. Marking the client stopped keeps it from
        reconnecting; kazoo's own test sentinel ``_CONNECTION_DROP`` makes its connection
        thread drop the socket (the path a network error takes), and ``_safe_close``
        waits for that thread to end.
        """
        from kazoo.protocol.connection import _CONNECTION_DROP

        client._stopped.set()
        client._call(_CONNECTION_DROP, client.handler.async_result())
        client._safe_close()

    @property
    def session_id(self) -> str:
        sid = self._sid
        return f"{sid:x}" if sid else ""

    def client_id(self) -> tuple[int, bytes] | None:
        """Test hook: the (session id, password) pair, to expire the session remotely."""
        client = self._client
        if client is None or client.client_id is None:
            return None
        sid, passwd = client.client_id
        return int(sid), bytes(passwd)

    @property
    def wire_requests(self) -> int:
        """ZooKeeper requests sent (pings excluded); ``ops`` counts idstore operations."""
        return self._wire

    # -- state machine (supervisor thread) -------------------------------------------

    def _on_kazoo_state(self, state: str) -> None:
        """kazoo's listener, on its connection thread: must not block, so only queue."""
        if state == KazooState.CONNECTED:
            self._last_heard = time.monotonic()
        elif state == KazooState.SUSPENDED:
            self.renewal_failures += 1
        self._inbox.put(state)

    def _supervise(self) -> None:
        while True:
            try:
                item = self._inbox.get(timeout=self._time_to_presumed_loss())
            except queue.Empty:
                self._presume_lost()
                continue
            if item is None:
                if self._closing:
                    return
                continue
            try:
                self._handle(item)
            except Exception:  # the state machine must outlive any bug in one step
                log.exception("ZooKeeper state handling failed for %s", item)

    def session_valid_until(self) -> float:
        # The server expires the session a full timeout after it last heard from us; we
        # last heard from it no earlier than that, so this bound is conservative.
        if self._state is ConnectionState.LOST:
            return 0.0
        if not self._stamped:  # no packet times: only the supervisor's LOST can tell
            return math.inf
        return self._confirmed + self._negotiated * LOST_AFTER

    def _time_to_presumed_loss(self) -> float | None:
        if self._silent_since is None:
            return None
        # Without kazoo's packet times, assume the worst: SUSPENDED is reported up to
        # 2/3 of the timeout after the server's last word.
        heard = self._last_heard or self._silent_since - self._negotiated * 2 / 3
        deadline = heard + self._negotiated * LOST_AFTER
        return max(0.0, deadline - time.monotonic())

    def _presume_lost(self) -> None:
        if self._silent_since is None or self._state is not ConnectionState.SUSPENDED:
            self._silent_since = None
            return
        silent = time.monotonic() - self._last_heard
        log.warning(
            "ZooKeeper silent for %.1fs of a %.1fs session: presuming session %s lost",
            silent,
            self._negotiated,
            self.session_id,
        )
        self._silent_since = None
        self._given_up_sid = self._sid
        self._set_state(ConnectionState.LOST)
        self._break_watches("session presumed lost (ZooKeeper unreachable)")

    def _handle(self, state: str) -> None:
        if self._closing:
            return
        if state == KazooState.CONNECTED:
            self._on_connected()
        elif state == KazooState.SUSPENDED:
            if self._state is ConnectionState.CONNECTED:
                self._silent_since = time.monotonic()
                self._set_state(ConnectionState.SUSPENDED)
        elif state == KazooState.LOST:
            self._silent_since = None
            self._set_state(ConnectionState.LOST)
            self._break_watches("ZooKeeper session lost")

    def _on_connected(self) -> None:
        client = self._client
        if client is None or client.client_id is None:
            return
        sid = int(client.client_id[0])
        self._silent_since = None
        if sid == self._given_up_sid:
            self._replace_session(client, sid)
            return
        previous = self._state
        if self._sid is not None and sid != self._sid and previous is not ConnectionState.LOST:
            # A new session means the old one expired, even if kazoo never said so.
            self._set_state(ConnectionState.LOST)
        if previous is not ConnectionState.CONNECTED:
            # Before anyone hears CONNECTED: a watch made after that is valid.
            self._break_watches("reconnected to ZooKeeper: watches were reset")
        self._sid = sid
        self._set_state(ConnectionState.CONNECTED)
        self._connected.set()

    def _replace_session(self, client: KazooClient, sid: int) -> None:
        """The session we gave up survived: close it (its ephemerals go) and start anew."""
        log.info("session %x survived the outage but was given up: opening a new one", sid)
        try:
            client.stop()
            client.start_async()  # kazoo keeps retrying; CONNECTED arrives via the listener
        except Exception:
            log.exception("could not replace ZooKeeper session %x", sid)

    def _watch_list(self) -> list[_PoolWatch]:
        with self._lock:
            return list(self._watches)

    def _break_watches(self, reason: str) -> None:
        for w in self._watch_list():
            w.broken(reason)

    # -- requests --------------------------------------------------------------------

    def _live_client(self, what: str) -> KazooClient:
        client = self._client
        if client is None:
            raise StoreUnavailable(f"{what}: the ZooKeeper store is not open")
        return client

    def _require_connected(self, what: str) -> KazooClient:
        """Claims need a session we know is alive: none while SUSPENDED or LOST."""
        client = self._live_client(what)
        if self._state is ConnectionState.LOST:
            raise SessionLost(f"{what}: ZooKeeper session {self.session_id} is lost")
        if self._state is not ConnectionState.CONNECTED:
            raise StoreUnavailable(f"{what}: ZooKeeper {self._spec.hosts} is unreachable")
        return client

    def _wait(self, result: Any) -> Any:
        return result.get(timeout=self.options.request_timeout)

    def _send(self, n: int = 1) -> None:
        self._wire += n

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Turn kazoo's exceptions into idstore's at this boundary."""
        try:
            yield
        except (ConnectionClosedError, ConnectionLoss, OperationTimeoutError) as e:
            raise StoreUnavailable(f"{what}: ZooKeeper {self._spec.hosts}: {e!r}") from e
        except KazooTimeoutError as e:
            raise StoreUnavailable(
                f"{what}: no answer from ZooKeeper {self._spec.hosts} "
                f"within {self.options.request_timeout}s"
            ) from e
        except SessionExpiredError as e:
            raise SessionLost(f"{what}: ZooKeeper session {self.session_id} expired") from e
        except NoAuthError as e:
            raise StoreError(
                f"{what}: not permitted by the znode's ACL; idstore's tree can only be "
                "modified with the credentials that created it (store username/password)"
            ) from e
        except AuthFailedError as e:
            raise StoreError(f"{what}: ZooKeeper rejected the digest credentials") from e
        except KazooException as e:
            raise StoreError(f"{what}: ZooKeeper error {e!r}") from e

    def _pool_path(self, pool: str) -> str:
        return self._spec.root + self.options.pool_path(pool)

    def _slot_path(self, pool: str, slot: int) -> str:
        return self._spec.root + self.options.slot_path(pool, slot)

    def _ensure_pool(self, client: KazooClient, pool: str) -> None:
        if pool in self._known_pools:
            return
        self._send(2)  # exists + create at the least
        client.ensure_path(self._pool_path(pool), acl=self._acl)
        self._known_pools.add(pool)

    def _claim_of(self, pool: str, slot: int, data: bytes, stat: ZnodeStat) -> Claim:
        return Claim(
            pool=pool,
            slot=slot,
            record=SlotRecord.decode(data),
            version=int(stat.czxid),
            session=f"{int(stat.ephemeralOwner):x}",
        )

    def _read_claim(self, client: KazooClient, pool: str, slot: int) -> Claim | None:
        self._send()
        try:
            data, stat = self._wait(client.get_async(self._slot_path(pool, slot)))
        except NoNodeError:
            return None
        return self._claim_of(pool, slot, data, stat)

    def _marker_path(self, pool: str, node_id: str, slot: int) -> str:
        return f"{self._pool_path(pool)}/i{_identity(node_id)}.{slot}"

    def _create_slot(
        self,
        client: KazooClient,
        pool: str,
        slot: int,
        record: SlotRecord,
        fence: int | None,
        ticket: Ticket | None = None,
    ) -> Claim:
        """One transaction: [check pool version, delete slot, delete our old marker,]
        create slot and marker, [leave the queue,] bump pool.

        ``fence`` given: the slot is replaced only if no slot was created in the pool
        since the pool version ``fence`` was read. The marker and queue steps adapt to
        what is there (claims by older versions have no marker; a queue entry may be
        gone): a failure of those alone is retried without them.
        """
        old_marker = fence is not None  # a take-back replaces the earlier boot's marker
        for _ in range(4):
            results, steps = self._commit_claim(
                client, pool, slot, record, fence, ticket, old_marker
            )
            failed = _failed_op(results)
            if failed is None:
                # Everything in one transaction shares its zxid: the pool's new mzxid is
                # the slot's czxid, so no extra read is needed.
                return Claim(pool, slot, record, int(results[-1].mzxid), _session_of(client))
            step, error = steps[failed], results[failed]
            if step == "old-marker" and isinstance(error, NoNodeError):
                old_marker = False
            elif step == "marker" and isinstance(error, NodeExistsError):
                old_marker = True  # a stale marker of ours: replace it
            elif step == "ticket" and isinstance(error, NoNodeError):
                ticket = None  # no longer queued: the claim stands on its own
            else:
                raise error
        raise StoreError(f"claim {pool}/{slot}: the pool kept changing; giving up")

    def _commit_claim(
        self,
        client: KazooClient,
        pool: str,
        slot: int,
        record: SlotRecord,
        fence: int | None,
        ticket: Ticket | None,
        old_marker: bool,
    ) -> tuple[Sequence[Any], list[str]]:
        pool_path, path = self._pool_path(pool), self._slot_path(pool, slot)
        marker = self._marker_path(pool, record.node_id, slot)
        tx = client.transaction()
        steps: list[str] = []
        if fence is not None:
            tx.check(pool_path, fence)
            tx.delete(path)
            steps += ["fence", "slot"]
        if old_marker:
            tx.delete(marker)
            steps.append("old-marker")
        tx.create(path, record.encode(), acl=self._acl, ephemeral=True)
        tx.create(marker, b"", acl=self._acl, ephemeral=True)
        steps += ["slot", "marker"]
        if ticket is not None:
            tx.delete(ticket.key)
            steps.append("ticket")
        tx.set_data(pool_path, b"")
        steps.append("pool")
        self._send()
        return self._wait(tx.commit_async()), steps

    # -- slots -----------------------------------------------------------------------

    def claim(
        self, pool: str, slot: int, record: SlotRecord, ticket: Ticket | None = None
    ) -> Claim:
        self._count()
        what = f"claim {pool}/{slot}"
        client = self._require_connected(what)
        with self._translated(what):
            for _ in range(5):
                try:
                    return self._create_slot(client, pool, slot, record, None, ticket)
                except NoNodeError:
                    self._known_pools.discard(pool)
                    self._ensure_pool(client, pool)
                except NodeExistsError:
                    owner = self._read_claim(client, pool, slot)
                    if owner is None:
                        continue  # freed between our create and our read: try again
                    mine = owner.session == _session_of(client)
                    if mine and owner.record.same_boot(record):
                        return owner  # our own earlier create that we never heard back from
                    raise SlotTaken(pool, slot, owner) from None
            raise StoreError(f"{what}: the slot kept changing; giving up")

    def _fence_and_read(
        self, client: KazooClient, pool: str, slot: int
    ) -> tuple[int, tuple[bytes, ZnodeStat] | None]:
        """The pool's version, then the slot: pipelined, and in that order on the server."""
        pool_req = client.exists_async(self._pool_path(pool))
        slot_req = client.get_async(self._slot_path(pool, slot))
        self._send(2)
        pool_stat = self._wait(pool_req)
        try:
            slot_data = self._wait(slot_req)
        except NoNodeError:
            slot_data = None
        if pool_stat is None:
            return -1, None
        return int(pool_stat.version), slot_data

    def _retry_fenced(self, what: str, attempt: Callable[[], Claim | bool]) -> Claim | bool:
        """Run a fenced operation until its fence holds (unrelated creates in the pool
        break the fence without changing our slot) or request_timeout passes."""
        deadline = time.monotonic() + self.options.request_timeout
        delay = 0.001
        while True:
            try:
                return attempt()
            except BadVersionError:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"{what}: the pool is too busy to fence") from None
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 0.05)

    def reclaim(self, previous: Claim, record: SlotRecord) -> Claim:
        self._count()
        pool, slot = previous.pool, previous.slot
        what = f"reclaim {pool}/{slot}"
        if previous.record.node_id != record.node_id:
            raise NotOwner(f"slot {pool}/{slot} belongs to node {previous.record.node_id!r}")
        client = self._require_connected(what)

        def attempt() -> Claim:
            fence, current = self._fence_and_read(client, pool, slot)
            if current is None:
                raise SlotTaken(pool, slot, None)
            held = self._claim_of(pool, slot, *current)
            if held.version != previous.version:
                raise SlotTaken(pool, slot, held)
            try:
                return self._create_slot(client, pool, slot, record, fence)
            except NoNodeError:
                raise SlotTaken(pool, slot, None) from None  # it expired meanwhile

        with self._translated(what):
            result = self._retry_fenced(what, attempt)
        assert isinstance(result, Claim)
        return result

    def release(self, claim: Claim) -> bool:
        self._count()
        pool, slot = claim.pool, claim.slot
        what = f"release {pool}/{slot}"
        client = self._live_client(what)

        def attempt() -> bool:
            fence, current = self._fence_and_read(client, pool, slot)
            if current is None or int(current[1].czxid) != claim.version:
                return False
            marker = self._marker_path(pool, claim.record.node_id, slot)
            for with_marker in (True, False):  # claims by older versions have no marker
                tx = client.transaction()
                tx.check(self._pool_path(pool), fence)
                tx.delete(self._slot_path(pool, slot))
                if with_marker:
                    tx.delete(marker)
                self._send()
                results = self._wait(tx.commit_async())
                failed = _failed_op(results)
                if failed == 2 and isinstance(results[2], NoNodeError):
                    continue
                try:
                    _raise_first_failure(results)
                except NoNodeError:
                    return False
                return True
            return False

        with self._translated(what):
            result = self._retry_fenced(what, attempt)
        assert isinstance(result, bool)
        return result

    def list(self, pool: str) -> Listing:
        self._count()
        what = f"list {pool}"
        client = self._live_client(what)
        with self._translated(what):
            try:
                self._send()
                names, pool_stat = self._wait(
                    client.get_children_async(self._pool_path(pool), include_data=True)
                )
            except NoNodeError:
                return Listing(pool, {}, 0)
            claims = self._fetch(client, pool, names, None)
        revision = max([int(pool_stat.pzxid), *(c.version for c in claims.values())])
        return Listing(pool, {s: c for s, c in claims.items() if c is not None}, revision)

    # -- waiting queue ---------------------------------------------------------------

    def enqueue(self, pool: str, slots: range, node_id: str, sticky: bool = True) -> Position:
        # Never skips queueing: ZooKeeper cannot make a create depend on a read. A node
        # with an old claim leaves the queue again, and nobody counted it (see above).
        self._count()
        what = f"enqueue {pool}"
        client = self._require_connected(what)
        entry = f"{self._pool_path(pool)}/q{_identity(node_id)}-"
        pool_path = self._pool_path(pool)
        # A new pool meets the whole herd missing: every node whose entry reaches the
        # server before someone's create of the pool does fails and pays a retry.
        # Measured on 1000 nodes: up to 36 % of them. So every TREE_MAKER_EVERY-th
        # session makes the tree ahead of its entry without asking (the server numbers
        # sessions consecutively: a herd's first 8 sessions hold one maker; a random
        # 1 in 16 left ~25 % of 100 nodes failing). Two transactions, one request each:
        # the whole tree (an ensemble's first cluster) and the cluster and pool under
        # the prefix (any later one); in a pool that exists they cost 1/4 of a request
        # per node. After a NoNode the retry makes the tree first (see _next_tree_plan).
        depth = pool_path.count("/")
        below_prefix = max(0, depth - 2)  # <prefix>/<cluster>/<pool>
        plan = _TreePlan((0, below_prefix)) if self._tree_maker(client) else None
        with self._translated(what):
            for _ in range(depth + 2):
                # Pipelined; one session's requests are served in order, so the listing
                # already holds our entry and every older one.
                made = self._make_tree(client, pool_path, plan) if plan else []
                create = client.create_async(
                    entry, b"", acl=self._acl, ephemeral=True, sequence=True
                )
                children = client.get_children_async(pool_path, include_data=True)
                self._send(2)
                try:
                    path = self._wait(create)
                except NoNodeError:
                    with contextlib.suppress(NoNodeError):
                        self._wait(children)
                    plan = self._next_tree_plan(made, plan, below_prefix)
                    continue
                for request in made:  # done; whoever made the tree, it is there
                    with contextlib.suppress(KazooException):
                        self._wait(request)
                ticket = Ticket(pool, int(path[-10:]), path, _session_of(client))
                names, stat = self._wait(children)
                return self._position_of(client, ticket, names, stat, slots, node_id)
        raise StoreError(f"{what}: the pool kept vanishing")

    @staticmethod
    def _tree_maker(client: KazooClient) -> bool:
        every = TREE_MAKER_EVERY
        sid = client.client_id[0] if client.client_id else 0
        return every > 0 and int(sid) % every == 0

    def _make_tree(self, client: KazooClient, path: str, plan: _TreePlan) -> Sequence[Any]:
        """Send the plan's creates of the components of ``path`` (see _TreePlan)."""
        parts = path.strip("/").split("/")

        def past(known: int) -> list[str]:
            return ["/" + "/".join(parts[:i]) for i in range(known + 1, len(parts) + 1)]

        if plan.separate:
            paths = past(plan.starts[0])
            self._send(len(paths))
            return [client.create_async(p, b"", acl=self._acl) for p in paths]
        requests = []
        for known in plan.starts:
            tx = client.transaction()
            for p in past(known):
                tx.create(p, b"", acl=self._acl)
            requests.append(tx.commit_async())
        self._send(len(requests))
        return requests

    def _next_tree_plan(
        self, made: Sequence[Any], plan: _TreePlan | None, below_prefix: int
    ) -> _TreePlan:
        """The entry met no pool: how to make the tree on the next attempt.

        One transaction for the cluster and pool znodes, the prefix assumed made: one
        request, not one per component. A shared ensemble has the prefix from its first
        cluster on, and every new cluster's herd then either makes the rest or finds it
        made. A transaction fails with NodeExists on a component that exists (a new
        pool in an older cluster): that component and its parents are known, and one
        create per component below follows, each of which may find its znode there.
        All failing with NoNode: the prefix is missing (first use): from the top. A
        tree made and still no pool for the entry: removed meanwhile, start over.
        """
        if plan is None or plan.separate:
            for request in made:
                with contextlib.suppress(NodeExistsError, NoNodeError):
                    self._wait(request)
            return _TreePlan((below_prefix,))
        known = -1
        for start, request in zip(plan.starts, made, strict=True):
            results = self._wait(request)
            failed = _failed_op(results)
            if failed is None:
                return _TreePlan((below_prefix,))
            if isinstance(results[failed], NodeExistsError):
                known = max(known, start + failed + 1)
            elif not isinstance(results[failed], NoNodeError):
                raise results[failed]
        return _TreePlan((known,), separate=True) if known >= 0 else _TreePlan((0,))

    def position(self, ticket: Ticket, slots: range, node_id: str, exact: bool = False) -> Position:
        # Names are cheap: always exact.
        self._count()
        what = f"position {ticket.pool}"
        client = self._live_client(what)
        with self._translated(what):
            self._send()
            names, stat = self._wait(
                client.get_children_async(self._pool_path(ticket.pool), include_data=True)
            )
            return self._position_of(client, ticket, names, stat, slots, node_id)

    def dequeue(self, ticket: Ticket) -> None:
        self._count()
        what = f"dequeue {ticket.pool}"
        client = self._live_client(what)
        with self._translated(what), contextlib.suppress(NoNodeError):
            self._send()
            self._wait(client.delete_async(ticket.key))

    def _position_of(
        self,
        client: KazooClient,
        ticket: Ticket,
        names: Sequence[str],
        stat: ZnodeStat,
        slots: range,
        node_id: str,
    ) -> Position:
        """Read a pool's children: slots, waiting entries, identity markers.

        Runs once per starting node over up to 3 names per node of the pool: written
        as comprehensions over the names, not one loop with branches (3x faster).
        """
        me = _identity(node_id)
        taken = [int(n) for n in names if n.isdigit() and (n == "0" or n[0] != "0")]
        waiting = [n for n in names if n[0] == "q"]
        markers = [n[1:].partition(".") for n in names if n[0] == "i"]
        marked = {who for who, _, _ in markers}
        mine = {int(slot) for who, _, slot in markers if who == me and slot.isdigit()}
        entry = ticket.key.rsplit("/", 1)[-1]
        seq = entry[-10:]  # fixed width: string order is numeric order
        queued = ticket if entry in set(waiting) else None
        # Nodes with a marker take their old slot back: they are nobody's "ahead".
        ahead = sum(1 for q in waiting if q[-10:] < seq and q[1:17] not in marked)
        own = self._fetch(client, ticket.pool, {s for s in mine if s in slots}, None)
        ours = tuple(c for _, c in sorted(own.items()) if c.record.node_id == node_id)
        return position_of(ticket.pool, slots, queued, ahead, taken, int(stat.pzxid), ours)

    def _fetch(
        self,
        client: KazooClient,
        pool: str,
        names: Sequence[str] | set[int],
        watch: Callable[[WatchedEvent], None] | None,
    ) -> dict[int, Claim]:
        """Read many slots with pipelined gets; slots gone meanwhile are left out."""
        slots = sorted(s for s in (_slot_of(str(n)) for n in names) if s is not None)
        pending = [(s, client.get_async(self._slot_path(pool, s), watch=watch)) for s in slots]
        self._send(len(pending))
        claims: dict[int, Claim] = {}
        for slot, req in pending:
            try:
                data, stat = self._wait(req)
            except NoNodeError:
                continue
            try:
                claims[slot] = self._claim_of(pool, slot, data, stat)
            except StoreError:
                log.warning("ignoring unreadable slot %s/%s: %r", pool, slot, data[:80])
        return claims

    def watch(
        self,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
    ) -> _PoolWatch:
        self._count()
        w = _PoolWatch(self, since, on_events, on_broken)
        with self._lock:
            self._watches.add(w)
        w.start()
        return w

    def _forget_watch(self, w: _PoolWatch) -> None:
        with self._lock:
            self._watches.discard(w)


class _PoolWatch:
    """One pool's watch: a children watch on the pool plus a data watch per slot.

    ZooKeeper keeps no history, so a slot created and deleted before we read it is never
    seen; to make that window as short as possible, requests are chained from kazoo's
    own threads without a detour: a fired watch at once re-reads (re-arming itself), and
    a listing at once fetches the slots it has not seen. Responses arrive on kazoo's
    single completion thread in the order the server processed the requests; that thread
    only queues them, and this watch's thread turns them, in that order, into events.
    """

    def __init__(
        self,
        store: ZooKeeperStore,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
    ) -> None:
        self._store = store
        self.pool = since.pool
        self._path = store._pool_path(since.pool)
        self._known: dict[int, Claim] = dict(since.claims)  # as delivered (watch thread)
        self._tracked: set[int] = set()  # slots fetched with a data watch (kazoo threads)
        self._tracked_lock = threading.Lock()
        self._revision = since.revision
        self._on_events = on_events
        self._on_broken = on_broken
        self._results: queue.Queue[_Result] = queue.Queue()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"zkwatch-{self.pool}", daemon=True)

    def start(self) -> None:
        """Arm the children watch before returning, so that no change made after
        ``watch()`` returns can slip by unseen; the listing is then processed and
        delivered on this watch's thread."""
        self._prepare_pool()
        first = self._request_listing()
        self._thread.start()
        if first is not None:
            with contextlib.suppress(Exception):  # its callback reports any failure
                first.get(timeout=self._store.options.request_timeout)

    def cancel(self) -> None:
        self._done.set()
        self._results.put(_Result("stop"))
        self._store._forget_watch(self)

    def broken(self, reason: str) -> None:
        self._results.put(_Result("broken", reason=reason))

    # -- kazoo's threads: never block ------------------------------------------------

    def _client(self) -> KazooClient | None:
        return None if self._done.is_set() else self._store._client

    def _request_listing(self) -> Any:
        client = self._client()
        if client is None:
            return None
        self._store._send()
        req = client.get_children_async(self._path, watch=self._on_children, include_data=True)
        req.rawlink(self._on_listing)
        return req

    def _on_children(self, event: WatchedEvent) -> None:
        # NONE: the connection was reset; the store tells every watch when it is back.
        if event.type != ZkEventType.NONE:
            self._speculate()
            self._request_listing()

    def _speculate(self) -> None:
        """Read the lowest free slots along with the listing, in the same round trip.

        Slots are dense, so a new claim is almost always one of the lowest free ones;
        reading them at once, rather than after the listing names them, halves the
        time in which a short-lived claim can come and go unseen.
        """
        with self._tracked_lock:
            tracked = set(self._tracked)
        free = (s for s in itertools.count() if s not in tracked)
        for slot in itertools.islice(free, SPECULATIVE_READS):
            self._request_slot(slot)

    def _on_data(self, event: WatchedEvent) -> None:
        # NONE (connection reset) carries no path: the store re-syncs every watch then.
        if event.type == ZkEventType.NONE or not event.path:
            return
        slot = _slot_of(event.path.rsplit("/", 1)[-1])
        if slot is not None:
            self._request_slot(slot)

    def _request_slot(self, slot: int, *, deliver: bool = True) -> Any:
        """Read a slot, arming its data watch; ``deliver``: queue the result when it
        comes (otherwise the caller hands the request to the watch thread itself)."""
        client = self._client()
        if client is None:
            return None
        self._store._send()
        req = client.get_async(self._store._slot_path(self.pool, slot), watch=self._on_data)
        req.rawlink(lambda result: self._on_slot(slot, result, deliver))
        return req

    def _on_listing(self, result: Any) -> None:
        try:
            children, stat = result.get_nowait()
        except NoNodeError:
            self._await_pool()
            return
        except Exception as e:
            self._results.put(_Result("error", reason=f"listing {self.pool} failed: {e!r}"))
            return
        slots = {s for s in (_slot_of(n) for n in children) if s is not None}
        with self._tracked_lock:
            new = sorted(slots - self._tracked)
            self._tracked = slots
        # The listing travels with the reads of its new slots, so the watch thread
        # delivers its deletions and creations together, in zxid order.
        pending = {slot: self._request_slot(slot, deliver=False) for slot in new}
        self._results.put(
            _Result("listing", slots=slots, revision=int(stat.pzxid), pending=pending)
        )

    def _await_pool(self) -> None:
        """No pool znode yet: an exists watch fires when it is created."""
        client = self._client()
        if client is None:
            return
        self._store._send()
        req = client.exists_async(self._path, watch=self._on_children)

        def exists(result: Any) -> None:
            try:
                if result.get_nowait() is not None:
                    self._request_listing()  # created in between
            except Exception as e:
                self._results.put(_Result("error", reason=f"watching {self.pool}: {e!r}"))

        req.rawlink(exists)

    def _on_slot(self, slot: int, result: Any, deliver: bool) -> None:
        try:
            item = self._slot_result(slot, result)
        except NoNodeError:
            # Gone before we could read it (a listing reports the delete); a new znode
            # there must be fetched again. Done here, in the server's order.
            with self._tracked_lock:
                self._tracked.discard(slot)
            return
        except Exception as e:
            item = _Result("error", reason=f"reading {self.pool}/{slot}: {e!r}")
        if isinstance(item, _Result) and item.kind == "slot":
            with self._tracked_lock:
                self._tracked.add(slot)  # it has a data watch now
        if deliver and item is not None:
            self._results.put(item)

    def _slot_result(self, slot: int, result: Any) -> _Result | None:
        data, stat = result.get(timeout=self._store.options.request_timeout)
        try:
            claim = self._store._claim_of(self.pool, slot, data, stat)
        except StoreError:
            log.warning("ignoring unreadable slot %s/%s: %r", self.pool, slot, data[:80])
            return None
        revision = max(int(stat.czxid), int(stat.mzxid))
        return _Result("slot", slot=slot, claim=claim, revision=revision)

    # -- this watch's thread ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            # Block for one result, then take every queued one: one delivery for a burst.
            batch = [self._results.get()]
            while not self._results.empty():
                batch.append(self._results.get_nowait())
            events: list[SlotEvent] = []
            for item in batch:
                if item.kind == "stop":
                    return
                try:
                    events.extend(self._apply(item))
                except Exception as e:  # a read of the listing's slots failed
                    item = _Result("error", reason=f"reading {self.pool}: {e!r}")
                if item.kind in ("broken", "error"):
                    self._deliver(events)
                    self._break(item.reason)
                    return
            self._deliver(events)

    def _prepare_pool(self) -> None:
        """Create the pool znode if we may, so the children watch is armed before the
        first claim (an exists watch would add a round trip to every early event)."""
        store = self._store
        client = self._client()
        if client is None:
            return
        try:
            with store._translated(f"watch {self.pool}"):
                store._ensure_pool(client, self.pool)
        except StoreError as e:
            log.debug("watch %s: pool not created (%s); waiting for it", self.pool, e)

    def _apply(self, item: _Result) -> list[SlotEvent]:
        if item.kind == "listing":
            # Absent from a listing newer than what we delivered: deleted.
            gone = [
                s
                for s, c in self._known.items()
                if s not in item.slots and c.version <= item.revision
            ]
            for slot in gone:
                del self._known[slot]
            events = [SlotEvent(EventType.DELETE, self.pool, s, None, item.revision) for s in gone]
            for slot, req in item.pending.items():
                try:
                    read = self._slot_result(slot, req) if req is not None else None
                except NoNodeError:
                    continue  # created and deleted before we could read it
                if read is not None:
                    events.extend(self._apply(read))
            return events
        if item.kind != "slot":
            return []
        claim = item.claim
        if claim is None or item.slot is None:
            return []
        held = self._known.get(item.slot)
        if held == claim or (held is not None and held.version > claim.version):
            return []
        self._known[item.slot] = claim
        return [SlotEvent(EventType.PUT, self.pool, item.slot, claim, item.revision)]

    def _break(self, reason: str) -> None:
        if self._done.is_set():
            return
        self._done.set()
        self._store._forget_watch(self)
        try:
            self._on_broken(reason)
        except Exception:
            log.exception("watch on_broken callback failed")

    def _deliver(self, events: list[SlotEvent]) -> None:
        if not events or self._done.is_set():
            return
        events.sort(key=lambda e: e.revision)
        ordered = []
        for e in events:
            # A slot read after a listing can be newer than a later-delivered one:
            # keep revisions non-decreasing.
            self._revision = max(self._revision, e.revision)
            ordered.append(e if e.revision == self._revision else _with_revision(e, self._revision))
        try:
            self._on_events(ordered)
        except Exception:
            log.exception("watch on_events callback failed")


@dataclass(frozen=True)
class _TreePlan:
    """How an enqueue makes the pool's tree: per start, one transaction creating the
    components past the first ``start``; or, ``separate``, one create per component
    past ``starts[0]``."""

    starts: tuple[int, ...]
    separate: bool = False


@dataclass(frozen=True)
class _Result:
    """What kazoo's threads hand to a watch's thread."""

    kind: str  # listing | slot | error | broken | stop
    slots: frozenset[int] | set[int] = frozenset()
    slot: int | None = None
    claim: Claim | None = None
    revision: int = 0
    reason: str = ""
    pending: dict[int, Any] = field(default_factory=dict)  # listing: reads of new slots


def _with_revision(event: SlotEvent, revision: int) -> SlotEvent:
    return SlotEvent(event.type, event.pool, event.slot, event.claim, revision)
