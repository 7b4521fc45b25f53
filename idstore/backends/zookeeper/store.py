"""ZooKeeperStore: the SlotStore on ZooKeeper, composed of the package's parts.

- connection.py: endpoints, TLS, credentials, the kazoo client;
- session.py: states, supervision, presumed loss, the session deadline;
- wire.py: request plumbing and kazoo's errors turned into idstore's;
- paths.py: the key schema; claims.py: slots and their fencing; queue.py: the waiting
  queue; watch.py: watching a pool.

``ops`` and ``wire_requests`` are the base class's, as on every backend: one operation
per SlotStore call, and the ZooKeeper requests they sent (a list of N slots is 1 + N
requests), which Wire reports through ``SlotStore._sent``. Keepalives (kazoo's pings,
idstore's heartbeats) are in neither.
"""

from __future__ import annotations

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
from idstore.backends.dispatch import WatchRegistry
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
        self._watches = WatchRegistry()
        self._session = Session(
            self,
            self._set_state,
            self._spec,
            connection.make_acls(options),
            self._watches.break_all,
        )
        self._io = Wire(self._session, Paths(self._spec.root, options), self._sent)
        self._claims = Claims(self._io)
        self._queue = WaitQueue(self._io)

    # -- session ---------------------------------------------------------------------

    def open(self) -> None:
        self._sent()  # the session's creation
        self._session.open()

    def close(self, release: bool = True) -> None:
        self._session.close(release)
        self._watches.cancel_all()
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

    # -- slots -----------------------------------------------------------------------

    def claim(
        self, pool: str, slot: int, record: SlotRecord, ticket: Ticket | None = None
    ) -> Claim:
        return self._claims.claim(pool, slot, record, ticket)

    def reclaim(self, previous: Claim, record: SlotRecord) -> Claim:
        return self._claims.reclaim(previous, record)

    def release(self, claim: Claim) -> bool:
        return self._claims.release(claim)

    def list(self, pool: str) -> Listing:
        return self._claims.list_pool(pool)

    # -- waiting queue ---------------------------------------------------------------

    def enqueue(self, pool: str, slots: range, node_id: str, sticky: bool = True) -> Position:
        return self._queue.enqueue(pool, slots, node_id)

    def position(self, ticket: Ticket, slots: range, node_id: str, exact: bool = False) -> Position:
        return self._queue.position(ticket, slots, node_id)

    def dequeue(self, ticket: Ticket) -> None:
        self._queue.dequeue(ticket)

    # -- watches ---------------------------------------------------------------------

    def watch(
        self,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
    ) -> PoolWatch:
        w = PoolWatch(self._io, since, on_events, on_broken, self._watches)
        w.start()
        return w
