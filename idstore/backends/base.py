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
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from idstore.errors import StoreError

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class SlotRecord:
    """What a claim says about its holder; stored as JSON in the slot's key."""

    node_id: str
    nonce: str  # new on every boot: tells a restarted node from its previous life
    addresses: tuple[str, ...] = ()
    ports: Mapping[str, int] = field(default_factory=dict)
    claimed_at: float = 0.0  # wall clock, informational only: never used for timing

    def encode(self) -> bytes:
        return json.dumps(
            {
                "node_id": self.node_id,
                "nonce": self.nonce,
                "addresses": list(self.addresses),
                "ports": dict(self.ports),
                "claimed_at": self.claimed_at,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> SlotRecord:
        """Parse a stored record; a value idstore did not write raises StoreError."""
        try:
            obj = json.loads(data)
            return cls(
                node_id=str(obj["node_id"]),
                nonce=str(obj["nonce"]),
                addresses=tuple(str(a) for a in obj.get("addresses", ())),
                ports={str(k): int(v) for k, v in dict(obj.get("ports", {})).items()},
                claimed_at=float(obj.get("claimed_at", 0.0)),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise StoreError(f"unreadable slot record {data[:80]!r}") from e

    def same_boot(self, other: SlotRecord) -> bool:
        return self.node_id == other.node_id and self.nonce == other.nonce


@dataclass(frozen=True)
class Claim:
    """A slot as the store holds it."""

    pool: str
    slot: int
    record: SlotRecord
    # The store's fencing token for this claim (etcd mod_revision, ZooKeeper czxid):
    # it changes on every claim and re-claim, so a compare on it detects any takeover.
    version: int
    # The session the claim lives under (etcd lease id, ZooKeeper ephemeralOwner).
    session: str


@dataclass(frozen=True)
class Listing:
    """Every claim of a pool, as of the store revision ``revision``."""

    pool: str
    claims: Mapping[int, Claim]
    revision: int


@dataclass(frozen=True)
class Ticket:
    """A node's place in a pool's waiting queue (see ``SlotStore.enqueue``).

    The entry lives under the session that made it, so a node that dies while waiting
    leaves the queue with its session, as its claims would.
    """

    pool: str
    # Assigned by the store, increasing in arrival order: the etcd create_revision of the
    # entry, the ZooKeeper sequence number. Nodes are served in this order.
    order: int
    key: str  # the backend's name for the entry (key, znode path)
    session: str  # the session the entry lives under


@dataclass(frozen=True)
class Position:
    """Where a node stands, all read at one store revision: what the herd algorithm needs.

    Counts cover only the slots of ``slots`` (the pool's configured range). The slots
    above ``highest`` are all free, so a node ``ahead`` places back in line can compute
    its slot from the counts alone unless it must fill a hole below ``highest``; only
    then does it need ``free_below``, which a store fills when it was cheap to read or
    when asked with ``exact=True``.
    """

    pool: str
    slots: range
    ticket: Ticket | None  # None: not waiting in the queue (see SlotStore.enqueue)
    ahead: int  # waiting nodes served before this one
    taken: int  # claims within ``slots``
    highest: int | None  # the highest claimed slot within ``slots``; None when none is
    free_below: tuple[int, ...] | None  # free slots below ``highest``, ascending, if read
    own: tuple[Claim, ...]  # claims in ``slots`` by the asking node identity (sticky restart)
    revision: int


def position_of(
    pool: str,
    slots: range,
    ticket: Ticket | None,
    ahead: int,
    taken: Iterable[int],
    revision: int,
    own: tuple[Claim, ...] = (),
) -> Position:
    """A Position from the set of taken slots (stores that read them all anyway)."""
    used = {s for s in taken if s in slots}
    highest = max(used) if used else slots.start - 1
    free = tuple(s for s in range(slots.start, highest) if s not in used)
    top = highest if used else None
    return Position(pool, slots, ticket, ahead, len(used), top, free, own, revision)


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class SlotEvent:
    type: EventType
    pool: str
    slot: int
    claim: Claim | None  # None for DELETE
    revision: int


EventsCallback = Callable[[Sequence[SlotEvent]], None]
# Called when events may have been missed (compaction, stream error, reconnect): the
# watcher must re-list the pool and watch again from the listing's revision.
BrokenCallback = Callable[[str], None]
StateListener = Callable[[ConnectionState], None]


class WatchHandle(Protocol):
    def cancel(self) -> None: ...


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
        self._ops_lock = threading.Lock()
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

    def position(self, ticket: Ticket, slots: range, node_id: str, exact: bool = False) -> Position:
        """Where ``ticket`` stands now; ``exact`` asks for ``free_below`` whatever it costs.

        ``ticket`` is None in the result when the entry is no longer queued.
        """
        return self._listed_position(ticket.pool, slots, node_id)

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
        """idstore operations sent to the store so far (keepalives excluded).

        A backend whose operation costs several wire requests (ZooKeeper's list: one
        get_children plus one get per slot) also exposes ``wire_requests``."""
        return self._ops

    def _count(self, n: int = 1) -> None:
        with self._ops_lock:
            self._ops += n

    def __enter__(self) -> SlotStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
