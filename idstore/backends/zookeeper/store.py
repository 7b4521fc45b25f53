"""ZooKeeperStore: the SlotStore on ZooKeeper, composed of the package's parts.

- connection.py: endpoints, TLS, credentials, the kazoo client;
- session.py: states, supervision, presumed loss, the session deadline;
- wire.py: request plumbing and kazoo's errors turned into idstore's;
- paths.py: the key schema; claims.py: slots and their fencing; queue.py: the waiting
  queue; watch.py: watching a pool.

``ops`` counts idstore operations (open, claim, reclaim, release, list, watch, and the
queue's), one each like every backend; ``wire_requests`` counts the ZooKeeper requests
they sent (a list of N slots is 1 + N requests), for benchmarks that want the raw
figure. Keepalives (kazoo's pings, idstore's heartbeats) are in neither.
"""

from __future__ import annotations

import builtins
import threading

from idstore.backends.base import (
    BrokenCallback,
    Claim,
    ConnectionState,
    EventsCallback,
    Listing,
    Position,
    SlotRecord,
    SlotStore,
    StoreOptions,
    Ticket,
)
from idstore.backends.zookeeper import connection
from idstore.backends.zookeeper.claims import Claims
from idstore.backends.zookeeper.paths import Paths
from idstore.backends.zookeeper.queue import WaitQueue
from idstore.backends.zookeeper.session import Session
from idstore.backends.zookeeper.watch import PoolWatch
from idstore.backends.zookeeper.wire import Wire


class ZooKeeperStore(SlotStore):
    """SlotStore on ZooKeeper through kazoo's public API."""

    name = "zookeeper"

    def __init__(self, options: StoreOptions) -> None:
        super().__init__(options)
        self._spec = connection.parse_endpoints(options)
        self._session = Session(
            self,
            self._set_state,
            self._spec,
            connection.make_acls(options),
            self._break_watches,
        )
        self._wire = Wire(self._session, Paths(self._spec.root, options))
        self._claims = Claims(self._wire)
        self._queue = WaitQueue(self._wire)
        self._lock = threading.Lock()
        self._watches: set[PoolWatch] = set()

    # -- session ---------------------------------------------------------------------

    def open(self) -> None:
        self._count()
        self._wire.send()  # the session's creation
        self._session.open()

    def close(self, release: bool = True) -> None:
        self._session.close(release)
        for w in self._watch_list():
            w.cancel()
        self._set_state(ConnectionState.LOST)

    @property
    def session_id(self) -> str:
        return self._session.session_id

    def session_valid_until(self) -> float:
        return self._session.valid_until()

    def auth_data(self) -> list[tuple[str, str]]:
        """The digest credentials a second client needs to act as this store (tests)."""
        return connection.auth_data(self.options)

    def client_id(self) -> tuple[int, bytes] | None:
        """Test hook: the (session id, password) pair, to expire the session remotely."""
        client = self._session.client
        if client is None or client.client_id is None:
            return None
        sid, passwd = client.client_id
        return int(sid), bytes(passwd)

    @property
    def wire_requests(self) -> int:
        """ZooKeeper requests sent (keepalives excluded); ``ops`` counts idstore operations."""
        return self._wire.sent

    # -- slots -----------------------------------------------------------------------

    def claim(
        self, pool: str, slot: int, record: SlotRecord, ticket: Ticket | None = None
    ) -> Claim:
        self._count()
        return self._claims.claim(pool, slot, record, ticket)

    def reclaim(self, previous: Claim, record: SlotRecord) -> Claim:
        self._count()
        return self._claims.reclaim(previous, record)

    def release(self, claim: Claim) -> bool:
        self._count()
        return self._claims.release(claim)

    def list(self, pool: str) -> Listing:
        self._count()
        return self._claims.list_pool(pool)

    # -- waiting queue ---------------------------------------------------------------

    def enqueue(self, pool: str, slots: range, node_id: str, sticky: bool = True) -> Position:
        self._count()
        return self._queue.enqueue(pool, slots, node_id)

    def position(self, ticket: Ticket, slots: range, node_id: str, exact: bool = False) -> Position:
        self._count()
        return self._queue.position(ticket, slots, node_id)

    def dequeue(self, ticket: Ticket) -> None:
        self._count()
        self._queue.dequeue(ticket)

    # -- watches ---------------------------------------------------------------------

    def watch(
        self,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
    ) -> PoolWatch:
        self._count()
        w = PoolWatch(self._wire, since, on_events, on_broken, self._forget_watch)
        with self._lock:
            self._watches.add(w)
        w.start()
        return w

    def _forget_watch(self, w: PoolWatch) -> None:
        with self._lock:
            self._watches.discard(w)

    def _watch_list(self) -> builtins.list[PoolWatch]:
        with self._lock:
            return list(self._watches)

    def _break_watches(self, reason: str) -> None:
        for w in self._watch_list():
            w.broken(reason)
