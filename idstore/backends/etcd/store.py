"""EtcdStore: the SlotStore on etcd v3, composed of the package's parts.

connection.Transport (endpoints, failover, errors) carries every request;
session.Session keeps the lease; claims.Claims and queue.WaitingQueue write and read the
keys of keys.Keys; watch.EtcdWatch streams a pool's changes. Requests are counted in
``wire_requests`` as they are sent (every attempt, keepalives excluded); ``ops`` counts
SlotStore operations, as on every backend (base.SlotStore).
"""

from __future__ import annotations

from idstore.backends.base import (
    MIN_TTL,
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
from idstore.backends.etcd.api import load
from idstore.backends.etcd.claims import Claims
from idstore.backends.etcd.connection import Transport
from idstore.backends.etcd.keys import Keys
from idstore.backends.etcd.queue import WaitingQueue
from idstore.backends.etcd.session import Session
from idstore.backends.etcd.watch import EtcdWatch
from idstore.errors import ConfigError


class EtcdStore(SlotStore):
    """SlotStore on etcd v3: one transaction per claim, the session is a lease."""

    name = "etcd"

    def __init__(self, options: StoreOptions) -> None:
        super().__init__(options)
        if options.ttl < MIN_TTL:
            raise ConfigError(
                "ttl", options.ttl, f">= {MIN_TTL:g} s: etcd does not grant shorter leases"
            )
        load()  # etcd's API: a missing etcd3 is a BackendNotFound here, not at first use
        self._transport = Transport(options, self._sent)
        self._session = Session(options, self._transport, self._set_state, self._renewed)
        self._claims = Claims(self._transport, self._session, Keys(options))
        self._queue = WaitingQueue(self._claims, self._session)
        self._watches = WatchRegistry()

    def _renewed(self, ok: bool) -> None:
        if ok:
            self.renewals += 1
        else:
            self.renewal_failures += 1

    # -- session -------------------------------------------------------------------------

    def open(self) -> None:
        if not self._session.running:
            self._session.open()

    def close(self, release: bool = True) -> None:
        self._watches.cancel_all()
        self._session.close(release)
        self._transport.close()
        self._set_state(ConnectionState.LOST)

    @property
    def session_id(self) -> str:
        return self._session.id

    def session_valid_until(self) -> float:
        return self._session.valid_until()

    # -- slots ---------------------------------------------------------------------------

    def claim(
        self, pool: str, slot: int, record: SlotRecord, ticket: Ticket | None = None
    ) -> Claim:
        return self._claims.claim(pool, slot, record, ticket)

    def reclaim(self, previous: Claim, record: SlotRecord) -> Claim:
        return self._claims.reclaim(previous, record)

    def release(self, claim: Claim) -> bool:
        return self._claims.release(claim)

    def list(self, pool: str) -> Listing:
        return self._claims.list(pool)

    # -- waiting queue -------------------------------------------------------------------

    def enqueue(self, pool: str, slots: range, node_id: str, sticky: bool = True) -> Position:
        return self._queue.enqueue(pool, slots, node_id, sticky)

    def position(self, ticket: Ticket, slots: range, node_id: str, exact: bool = False) -> Position:
        return self._queue.position(ticket, slots, node_id, exact)

    def dequeue(self, ticket: Ticket) -> None:
        self._queue.dequeue(ticket)

    # -- watch ---------------------------------------------------------------------------

    def watch(
        self,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
    ) -> EtcdWatch:
        extra = self.options.extra
        w = EtcdWatch(
            self._transport.current(),
            since,
            on_events,
            on_broken,
            self._watches,
            prefix=self._claims.keys.pool(since.pool),
            check_interval=float(extra.get("watch_check_interval", self.options.ttl)),
            check_grace=float(extra.get("watch_check_grace", 2.0)),
            request_timeout=self.options.request_timeout,
            sent=self._sent,
        )
        w.start()
        return w
