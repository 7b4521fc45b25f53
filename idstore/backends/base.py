"""The SlotStore contract: what every backend provides and all of idstore relies on.

A *pool* (a role such as ``worker`` or ``ps``) has numbered *slots*. A node claims one
slot under a *session* (an etcd lease, a ZooKeeper session) that lives exactly as long
as the node keeps it alive. Only the store's atomic operations decide who owns a slot:
``claim`` succeeds only if the slot is free, ``reclaim`` only if the slot still holds
exactly the claim the caller read. Nothing above this line ever decides ownership by
"read, then write".

Threading: every method is blocking and thread-safe. Watch callbacks and state listeners
run on a backend thread; they must return quickly and must not raise (a raising callback
is logged and ignored).

Connection states, by what they mean for a slot this node holds:

``CONNECTED``
    The session is alive and the store is reachable. A held slot is ours.
``SUSPENDED``
    The store cannot be reached, but the session may still be alive. A held slot is still
    ours until the session's deadline (last successful renewal + TTL), which the backend
    enforces: keep serving, make no new claims.
``LOST``
    The session has expired, or the backend presumes so because no renewal succeeded within
    the TTL. A held slot is no longer ours: stop asserting it at once. The backend keeps
    trying to open a new session; when it has one it reports ``CONNECTED`` again (with a new
    ``session_id``) and the holder must claim again.
"""

from __future__ import annotations

import abc
import enum
import functools
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from idstore.backends.records import (
    Claim,
    EventType,
    Listing,
    Position,
    SlotEvent,
    SlotRecord,
    Ticket,
    position_of,
)

__all__ = [
    "MIN_TTL",
    "OPERATIONS",
    "BrokenCallback",
    "Claim",
    "ConnectionState",
    "EventType",
    "EventsCallback",
    "Listing",
    "Position",
    "SlotEvent",
    "SlotRecord",
    "SlotStore",
    "StateListener",
    "StoreOptions",
    "Ticket",
    "WatchHandle",
    "position_of",
]

log = logging.getLogger(__name__)

# The shortest session idstore accepts, on every store: renewals go out every ttl/3, and
# a shorter lease lapses on any pause of a busy host; etcd itself grants nothing under
# 1.5 s with its default election settings.
MIN_TTL = 2.0

#: The SlotStore calls ``ops`` counts, one per call (see SlotStore.ops).
OPERATIONS = (
    "open",
    "claim",
    "reclaim",
    "release",
    "list",
    "enqueue",
    "position",
    "dequeue",
    "watch",
)

F = TypeVar("F", bound=Callable[..., Any])


class ConnectionState(enum.Enum):
    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


@dataclass(frozen=True)
class StoreOptions:
    """How to reach a store; backends ignore what does not apply to them."""

    endpoints: tuple[str, ...] = ()
    ttl: float = 10.0
    prefix: str = "/idstore"
    cluster: str = "default"
    # Each request's own deadline; a store that does not answer in time is unavailable.
    request_timeout: float = 5.0
    # How long open() keeps trying before it reports the store unreachable.
    connect_timeout: float = 30.0
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    username: str | None = None
    password: str | None = None
    # Backend-specific settings ([store.<backend>] in the config file).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def pool_path(self, pool: str) -> str:
        """The key prefix under which a pool's slots live (no trailing slash)."""
        return f"{self.prefix.rstrip('/')}/{self.cluster}/{pool}"

    def slot_path(self, pool: str, slot: int) -> str:
        return f"{self.pool_path(pool)}/{slot}"


EventsCallback = Callable[[Sequence[SlotEvent]], None]
# Called when events may have been missed (compaction, stream error, reconnect): the
# watcher must re-list the pool and watch again from the listing's revision.
BrokenCallback = Callable[[str], None]
StateListener = Callable[[ConnectionState], None]


class WatchHandle(Protocol):
    def cancel(self) -> None: ...


def _counted(method: F) -> F:
    """``method`` counting one operation in ``ops`` per outermost call."""

    @functools.wraps(method)
    def run(self: SlotStore, *args: Any, **kwargs: Any) -> Any:
        outer = self._operation_started()
        try:
            return method(self, *args, **kwargs)
        finally:
            if outer:
                self._operation_ended()

    run._counted = True  # type: ignore[attr-defined]
    return run  # type: ignore[return-value]


class SlotStore(abc.ABC):
    """Abstract slot store; see the module docstring for the states and guarantees."""

    #: The short, user-visible name the backend is registered under.
    name: ClassVar[str] = ""

    def __init__(self, options: StoreOptions) -> None:
        self.options = options
        self._state = ConnectionState.LOST
        self._listeners: list[StateListener] = []
        self._listener_lock = threading.Lock()
        self._ops = 0
        self._wire = 0
        self._count_lock = threading.Lock()
        self._in_operation = threading.local()  # see _counted: nested calls count once
        # Session liveness, for metrics: renewals the store acknowledged (etcd keepalive
        # replies, ZooKeeper server packets) and renewals that failed (a failed keepalive,
        # a ZooKeeper connection suspended). Written by the backend's own thread only.
        self.renewals = 0
        self.renewal_failures = 0

    # -- session ---------------------------------------------------------------------

    @abc.abstractmethod
    def open(self) -> None:
        """Connect and start a session; block until CONNECTED.

        Raises StoreUnavailable naming the endpoints when none answers within
        ``options.connect_timeout``.
        """

    @abc.abstractmethod
    def close(self, release: bool = True) -> None:
        """End the session. ``release=True`` revokes it so every claim under it vanishes at
        once (clean shutdown); ``release=False`` only disconnects, as a crash would, and the
        claims expire with the TTL."""

    @property
    @abc.abstractmethod
    def session_id(self) -> str:
        """The current session's id; it changes whenever a new session is opened."""

    # -- slots -----------------------------------------------------------------------

    @abc.abstractmethod
    def claim(
        self, pool: str, slot: int, record: SlotRecord, ticket: Ticket | None = None
    ) -> Claim:
        """Atomically take ``slot`` under the current session, only if it is free.

        Idempotent: if the current session already holds the slot with this record's
        node_id and nonce (say, a retry after a timeout whose request did apply), that
        claim is returned. With ``ticket`` the same atomic write also removes that queue
        entry (a claim and its leaving the queue are one step, which keeps every other
        waiting node's place valid). Raises SlotTaken (with the owner's Claim when known),
        SessionLost, StoreUnavailable.
        """

    @abc.abstractmethod
    def reclaim(self, previous: Claim, record: SlotRecord) -> Claim:
        """Take over ``previous`` (a claim by this node identity from an earlier boot).

        Atomic: succeeds only if the slot still holds exactly ``previous`` (same version).
        Raises NotOwner if ``previous`` belongs to another node identity (never taken over),
        SlotTaken if the slot changed since it was read.
        """

    @abc.abstractmethod
    def release(self, claim: Claim) -> bool:
        """Delete ``claim`` only if the slot still holds it; False when it no longer did."""

    @abc.abstractmethod
    def list(self, pool: str) -> Listing:
        """Every claim of ``pool`` with the store revision it reflects."""

    # -- waiting queue (many nodes starting at once) ---------------------------------
    #
    # A store without a queue keeps these defaults: every node is first in line and
    # reads the whole pool, which is correct but costs O(pool) per node.

    @_counted
    def enqueue(self, pool: str, slots: range, node_id: str, sticky: bool = True) -> Position:
        """Join ``pool``'s waiting queue under the current session; where we then stand.

        The entry and the returned Position are one atomic step where the store allows
        (etcd), else the Position is read right after the entry was made (ZooKeeper), so
        ``ahead`` counts exactly the entries older than ours. With ``sticky``, a store
        may skip queueing when ``node_id`` already holds a claim in ``slots``: it then
        returns ``ticket=None`` and those claims in ``own``. Raises SessionLost,
        StoreUnavailable.
        """
        return self._listed_position(pool, slots, node_id)

    @_counted
    def position(self, ticket: Ticket, slots: range, node_id: str, exact: bool = False) -> Position:
        """Where ``ticket`` stands now; ``exact`` asks for ``free_below`` whatever it costs.

        ``ticket`` is None in the result when the entry is no longer queued.
        """
        return self._listed_position(ticket.pool, slots, node_id)

    @_counted
    def dequeue(self, ticket: Ticket) -> None:
        """Leave the queue without claiming (stop, or a node that took its slot back)."""
        return None  # a store without a queue has nothing to leave

    def _listed_position(self, pool: str, slots: range, node_id: str) -> Position:
        """The queue-less Position: first in line, from a listing of the whole pool."""
        listing = self.list(pool)
        claims = {s: c for s, c in listing.claims.items() if s in slots}
        own = tuple(c for _, c in sorted(claims.items()) if c.record.node_id == node_id)
        return position_of(pool, slots, None, 0, claims, listing.revision, own)

    @abc.abstractmethod
    def watch(
        self,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
    ) -> WatchHandle:
        """Deliver, in order, every change to ``since.pool`` after the listing ``since``.

        A store that keeps history (etcd) replays from ``since.revision``; one that does
        not (ZooKeeper) reads the pool afresh and first delivers its differences from
        ``since.claims``; such a store may merge changes that happen faster than it can
        read them (a claim and its release both before the read: neither is reported),
        so what is guaranteed is convergence to the store's content, in revision order.
        Whenever events may have been missed the backend calls
        ``on_broken`` and stops delivering on this handle; the caller re-lists and watches
        again (idstore.mirror.PoolMirror does that for everyone).
        """

    def session_valid_until(self) -> float:
        """time.monotonic() until which the current session is surely alive on the server.

        A holder must not assert its slot past this moment, even before LOST is reported:
        a process that was paused (SIGSTOP, a VM freeze) resumes with stale state, and its
        backend thread needs a moment to notice. Stores whose sessions cannot lapse while
        the process runs (memory) return infinity; a store with no session returns 0.
        """
        return math.inf if self._state is not ConnectionState.LOST else 0.0

    # -- connection state ------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    def add_listener(self, listener: StateListener) -> None:
        with self._listener_lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        with self._listener_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _set_state(self, state: ConnectionState) -> None:
        """Backends call this on every transition; listeners hear only real changes."""
        with self._listener_lock:
            if state is self._state:
                return
            old, self._state = self._state, state
            listeners = list(self._listeners)
        log.info("store %s: %s -> %s", self.name, old.value, state.value)
        for listener in listeners:
            try:
                listener(state)
            except Exception:  # a listener's bug must not break the backend's thread
                log.exception("state listener %r failed", listener)

    # -- accounting ------------------------------------------------------------------

    @property
    def ops(self) -> int:
        """idstore operations so far: one per call of a SlotStore operation (OPERATIONS:
        open, claim, reclaim, release, list, enqueue, position, dequeue, watch), however
        many requests it took, and whether or not it succeeded. Renewals are not counted.

        Counted here, for every backend alike: a backend's methods of those names are
        wrapped when its class is defined (__init_subclass__), and an operation that calls
        another (etcd's enqueue reading its place) counts once."""
        return self._ops

    @property
    def wire_requests(self) -> int:
        """Requests sent to the store so far, every attempt and retry (keepalives and
        pings excluded): what an operation cost on the wire (a ZooKeeper list of N slots
        is 1 + N requests, an etcd claim retried on another member 2). The backend counts
        them with ``_sent`` as it sends them."""
        return self._wire

    def _sent(self, n: int = 1) -> None:
        """Backends call this once per request they send (not for keepalives)."""
        with self._count_lock:
            self._wire += n

    def _operation_started(self) -> bool:
        """Count an operation unless one is already running on this thread; whether this
        call is the outermost one (and must call _operation_ended)."""
        if getattr(self._in_operation, "active", False):
            return False
        self._in_operation.active = True
        with self._count_lock:
            self._ops += 1
        return True

    def _operation_ended(self) -> None:
        self._in_operation.active = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in OPERATIONS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_counted", False):
                setattr(cls, name, _counted(method))

    def __enter__(self) -> SlotStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
