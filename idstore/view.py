"""The cluster as this node sees it: every claimed name of every pool.

Fed by idstore.mirror (store watches, re-listed on any doubt); read by the DNS zone
(a subscriber), /status and /metrics. Subscribers receive batches of changes and must
not block.

Delivery order: a subscriber sees exactly the sequence of states the view went
through, whatever threads call ``apply`` and ``subscribe`` and in what order. Every
batch (and a new subscriber's first batch, the content at that moment) is queued
under the same lock that changes the content, and one thread at a time delivers the
queue in order; an ``apply`` that finds another thread delivering leaves its batch to
that thread rather than overtaking it.

Copies of the claims: the view holds every claim as a Member (what DNS and /status
serve); the DNS zone keeps its own indexes of those Members (by wire name, by
address, with prepared answers) because answering must not take the view's lock or
copy a pool per query. The mirror keeps no copy of its own (see idstore.mirror).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from idstore.backends.base import Claim
from idstore.config import PoolSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)  # slots: a 10,000-name view holds 10,000 of these
class Member:
    """One claimed slot, ready to be served."""

    pool: str
    slot: int
    name: str  # absolute and lower-case: "worker3.tf.local."
    addresses: tuple[str, ...]
    node_id: str
    ports: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_claim(cls, pool: PoolSettings, claim: Claim) -> Member:
        return cls(
            pool=pool.name,
            slot=claim.slot,
            name=pool.name_of(claim.slot),
            addresses=claim.record.addresses,
            node_id=claim.record.node_id,
            ports=claim.record.ports,
        )


# (pool, slot, member) — member None means the slot was freed.
Change = tuple[str, int, Member | None]
Subscriber = Callable[[Sequence[Change]], None]


class ClusterView:
    """Thread-safe map pool -> slot -> Member with ordered change notification."""

    def __init__(self, pools: Iterable[PoolSettings]) -> None:
        self.pools = {p.name: p for p in pools}
        self._members: dict[str, dict[int, Member]] = {name: {} for name in self.pools}
        self._lock = threading.Lock()  # guards everything below
        self._subscribers: list[Subscriber] = []
        # Batches not yet delivered, oldest first, each with the subscribers it is for.
        self._pending: deque[tuple[tuple[Subscriber, ...], list[Change]]] = deque()
        self._delivering = False  # a thread is draining _pending

    def subscribe(self, fn: Subscriber) -> None:
        """``fn`` first receives the current content, then every later change, in order."""
        with self._lock:
            self._subscribers.append(fn)
            current: list[Change] = [
                (m.pool, m.slot, m) for ms in self._members.values() for m in ms.values()
            ]
            if current:
                self._pending.append(((fn,), current))
        self._deliver()

    def members(self, pool: str) -> dict[int, Member]:
        with self._lock:
            return dict(self._members.get(pool, {}))

    def all_members(self) -> list[Member]:
        with self._lock:
            return [m for ms in self._members.values() for m in ms.values()]

    def apply(self, pool: str, claims: Mapping[int, Claim | None], replace: bool = False) -> None:
        """Apply changed slots (None = freed); with ``replace`` the claims are the whole
        pool and every slot not in them is freed. Only real changes reach subscribers."""
        settings = self.pools.get(pool)
        if settings is None:
            return
        changes: list[Change] = []
        with self._lock:
            current = self._members[pool]
            if replace:
                for slot in [s for s in current if s not in claims]:
                    del current[slot]
                    changes.append((pool, slot, None))
            for slot, claim in claims.items():
                if claim is None or slot not in settings.slots():
                    if current.pop(slot, None) is not None:
                        changes.append((pool, slot, None))
                    continue
                old = current.get(slot)
                if old is not None and _same(old, claim):
                    continue  # a re-list repeats every claim: no new Member for those
                member = Member.from_claim(settings, claim)
                if old != member:
                    current[slot] = member
                    changes.append((pool, slot, member))
            if changes and self._subscribers:
                self._pending.append((tuple(self._subscribers), changes))
        self._deliver()

    def _deliver(self) -> None:
        """Deliver queued batches in order, unless another thread is already doing it
        (that thread will deliver ours too, after the ones queued before it)."""
        with self._lock:
            if self._delivering:
                return
            self._delivering = True
        try:
            while True:
                with self._lock:
                    if not self._pending:
                        self._delivering = False
                        return
                    targets, changes = self._pending.popleft()
                for fn in targets:
                    try:
                        fn(changes)
                    except Exception:
                        log.exception("view subscriber %r failed", fn)
        except BaseException:
            with self._lock:
                self._delivering = False
            raise


def _same(member: Member, claim: Claim) -> bool:
    """Whether ``claim`` would make exactly ``member`` (the slot, hence the name, match)."""
    record = claim.record
    return (
        member.addresses == record.addresses
        and member.node_id == record.node_id
        and member.ports == record.ports
    )
