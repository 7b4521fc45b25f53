"""In-process slot store: the embedded default backend.

One MemoryServer per endpoint name lives in this process, so several MemoryStore
instances (several simulated nodes in a test) share it. It keeps the same guarantees as
the real stores: atomic claim-if-free, claims bound to a session, ordered watches with
revisions. Sessions never lapse while their store is open (there is no network to fail);
a store closed with ``release=False`` leaves its session to expire after the TTL, as a
crashed node's would.

Each operation is one call into the server, counted as one request in
``wire_requests``, so tests of request counts read the same on every backend.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

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
from idstore.backends.dispatch import DispatchedWatch, WatchRegistry
from idstore.backends.records import check_reclaim, own_or_taken
from idstore.errors import SessionLost, SlotTaken, StoreUnavailable

log = logging.getLogger(__name__)

_REAP_INTERVAL = 0.05
_HISTORY = 10_000  # events kept for watches that start from an older revision


@dataclass
class _Session:
    id: str
    deadline: float | None = None  # monotonic; None while its store keeps it alive


class _Watch(DispatchedWatch[Sequence[SlotEvent]]):
    """A pool's watch: the server posts each change, the shared dispatcher delivers it
    on the watch's own thread, so callbacks never run under the server's lock."""

    def _translate(self, item: Sequence[SlotEvent]) -> Sequence[SlotEvent]:
        return item


class MemoryServer:
    """The shared state behind every MemoryStore with the same endpoint name."""

    _servers: ClassVar[dict[str, MemoryServer]] = {}
    _servers_lock = threading.Lock()

    @classmethod
    def named(cls, name: str) -> MemoryServer:
        with cls._servers_lock:
            if name not in cls._servers:
                cls._servers[name] = cls()
            return cls._servers[name]

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.revision = 1
        self.slots: dict[tuple[str, int], Claim] = {}
        self.sessions: dict[str, _Session] = {}
        self.watches = WatchRegistry()  # every store's watches of this server
        self.history: deque[SlotEvent] = deque(maxlen=_HISTORY)
        # Waiting queues: pool -> session -> ticket; an entry leaves with its session.
        self.queues: dict[str, dict[str, Ticket]] = {}
        self._ids = itertools.count(1)
        self._tickets = itertools.count(1)
        reaper = threading.Thread(target=self._reap_forever, name="memory-reaper", daemon=True)
        reaper.start()

    # All methods below run with self.lock held by the caller or take it themselves.

    def new_session(self) -> str:
        with self.lock:
            sid = f"{next(self._ids):x}"
            self.sessions[sid] = _Session(sid)
            return sid

    def end_session(self, sid: str, ttl: float | None) -> None:
        """Drop a session now (ttl None) or let it expire after ttl seconds."""
        with self.lock:
            session = self.sessions.get(sid)
            if session is None:
                return
            if ttl is None:
                self._expire(sid)
            else:
                session.deadline = time.monotonic() + ttl

    def put(self, pool: str, slot: int, record: SlotRecord, sid: str) -> Claim:
        with self.lock:
            if sid not in self.sessions:
                raise SessionLost(f"session {sid} has expired")
            self.revision += 1
            claim = Claim(pool, slot, record, self.revision, sid)
            self.slots[(pool, slot)] = claim
            self._notify(SlotEvent(EventType.PUT, pool, slot, claim, self.revision))
            return claim

    def delete(self, pool: str, slot: int) -> None:
        with self.lock:
            self.revision += 1
            del self.slots[(pool, slot)]
            self._notify(SlotEvent(EventType.DELETE, pool, slot, None, self.revision))

    def enqueue(self, pool: str, sid: str) -> Ticket:
        with self.lock:
            if sid not in self.sessions:
                raise SessionLost(f"session {sid} has expired")
            line = self.queues.setdefault(pool, {})
            if sid not in line:  # joining again keeps the first place in line
                line[sid] = Ticket(pool, next(self._tickets), sid, sid)
            return line[sid]

    def dequeue(self, ticket: Ticket) -> None:
        with self.lock:
            line = self.queues.get(ticket.pool, {})
            if line.get(ticket.key) == ticket:
                del line[ticket.key]

    def position(self, ticket: Ticket | None, pool: str, slots: range, node_id: str) -> Position:
        with self.lock:
            line = self.queues.get(pool, {})
            queued = ticket if ticket is not None and line.get(ticket.key) == ticket else None
            ahead = sum(1 for t in line.values() if queued is not None and t.order < queued.order)
            claims = {s: c for (p, s), c in self.slots.items() if p == pool and s in slots}
            own = tuple(c for _, c in sorted(claims.items()) if c.record.node_id == node_id)
            return position_of(pool, slots, queued, ahead, claims, self.revision, own)

    def _expire(self, sid: str) -> None:
        self.sessions.pop(sid, None)
        for line in self.queues.values():
            line.pop(sid, None)
        for (pool, slot), claim in list(self.slots.items()):
            if claim.session == sid:
                self.delete(pool, slot)

    def _notify(self, event: SlotEvent) -> None:
        self.history.append(event)
        for w in self.watches.snapshot():
            if w.pool == event.pool:
                w.post([event])

    def _reap_forever(self) -> None:
        while True:
            time.sleep(_REAP_INTERVAL)
            now = time.monotonic()
            with self.lock:
                for s in list(self.sessions.values()):
                    if s.deadline is not None and s.deadline <= now:
                        self._expire(s.id)


class MemoryStore(SlotStore):
    """SlotStore over a MemoryServer; the endpoint (default ``default``) names the server."""

    name = "memory"

    def __init__(self, options: StoreOptions) -> None:
        super().__init__(options)
        endpoint = options.endpoints[0] if options.endpoints else "default"
        self._server = MemoryServer.named(endpoint.removeprefix("memory://"))
        self._sid: str | None = None

    def open(self) -> None:
        self._sent()
        self._sid = self._server.new_session()
        self._set_state(ConnectionState.CONNECTED)

    def close(self, release: bool = True) -> None:
        if self._sid is not None:
            self._server.end_session(self._sid, None if release else self.options.ttl)
            self._sid = None
        self._set_state(ConnectionState.LOST)

    @property
    def session_id(self) -> str:
        return self._sid or ""

    def expire_session(self) -> None:
        """Test hook: the server expires this session now, as after a long partition.

        The store reports LOST, then opens a new session and reports CONNECTED.
        """
        if self._sid is not None:
            self._server.end_session(self._sid, None)
        self._set_state(ConnectionState.LOST)
        self._sid = self._server.new_session()
        self._set_state(ConnectionState.CONNECTED)

    def _live_sid(self) -> str:
        if self._sid is None:
            raise StoreUnavailable("memory store is not open")
        return self._sid

    def claim(
        self, pool: str, slot: int, record: SlotRecord, ticket: Ticket | None = None
    ) -> Claim:
        self._sent()
        sid = self._live_sid()
        with self._server.lock:
            held = self._server.slots.get((pool, slot))
            if held is not None:
                return own_or_taken(pool, slot, held, sid, record)
            claim = self._server.put(pool, slot, record, sid)
            if ticket is not None:  # under the same lock: one atomic step
                self._server.dequeue(ticket)
            return claim

    def enqueue(self, pool: str, slots: range, node_id: str, sticky: bool = True) -> Position:
        self._sent()
        sid = self._live_sid()
        with self._server.lock:
            if sticky:
                seen = self._server.position(None, pool, slots, node_id)
                if seen.own:
                    return seen
            ticket = self._server.enqueue(pool, sid)
            return self._server.position(ticket, pool, slots, node_id)

    def position(self, ticket: Ticket, slots: range, node_id: str, exact: bool = False) -> Position:
        self._sent()
        return self._server.position(ticket, ticket.pool, slots, node_id)

    def dequeue(self, ticket: Ticket) -> None:
        self._sent()
        self._server.dequeue(ticket)

    def reclaim(self, previous: Claim, record: SlotRecord) -> Claim:
        check_reclaim(previous, record)  # refused here, before any request
        self._sent()
        sid = self._live_sid()
        with self._server.lock:
            held = self._server.slots.get((previous.pool, previous.slot))
            if held is None or held.version != previous.version:
                raise SlotTaken(previous.pool, previous.slot, held)
            return self._server.put(previous.pool, previous.slot, record, sid)

    def release(self, claim: Claim) -> bool:
        self._sent()
        with self._server.lock:
            held = self._server.slots.get((claim.pool, claim.slot))
            if held is None or held.version != claim.version:
                return False
            self._server.delete(claim.pool, claim.slot)
            return True

    def list(self, pool: str) -> Listing:
        self._sent()
        with self._server.lock:
            claims = {s: c for (p, s), c in self._server.slots.items() if p == pool}
            return Listing(pool, claims, self._server.revision)

    def watch(
        self,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
    ) -> _Watch:
        pool, start_revision = since.pool, since.revision
        server = self._server
        self._sent()
        with server.lock:
            w = _Watch(pool, on_events, on_broken, server.watches, f"memwatch-{pool}")
            oldest = server.history[0].revision if server.history else server.revision + 1
            if start_revision < server.revision and oldest > start_revision + 1:
                # Like a compacted etcd revision: the changes since cannot be replayed.
                w.post_broken(f"revision {start_revision} is compacted (oldest kept: {oldest})")
            else:
                missed = [
                    e for e in server.history if e.revision > start_revision and e.pool == pool
                ]
                if missed:
                    w.post(missed)
            w.start_dispatch()  # registered under the lock: no change slips between
            return w


def new_endpoint() -> str:
    """A fresh, private memory server name (for tests that want isolation)."""
    return f"memory://{uuid.uuid4().hex}"
