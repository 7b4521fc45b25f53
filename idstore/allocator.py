"""Claim this node's slot and keep it, on any backend (depends only on SlotStore).

Rules:
- a node holds at most one slot;
- a restarted node (same node identity) takes its old slot back while that slot still
  holds its identity, or is free; it never takes a slot held by another identity;
- with a slot hint (``prefer_slot``) it claims exactly that slot, with the same atomic
  claim as any other, without joining the queue (a hinted boot storm costs one claim per
  node); when another identity holds it the node says who, and takes its place in line
  (``prefer = "fallback"``) or waits for that slot (``"require"``);
- otherwise it claims the lowest free slot; when the pool is full it waits, says so, and
  claims as soon as a slot frees;
- its ports (``auto``, a range) are chosen once, before its first claim, preferring those
  of its identity's earlier claim, and kept for the life of the process;
- on LOST it stops asserting its slot at once, and claims again when the store is back;
- if another live process with the same node identity takes the slot over, this one
  reports the duplicate and stops claiming (no ping-pong: the latest boot wins).
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from idstore.backends.base import (
    Claim,
    ConnectionState,
    Position,
    SlotRecord,
    SlotStore,
    Ticket,
)
from idstore.config import PoolSettings
from idstore.errors import IdstoreError, SessionLost, SlotTaken
from idstore.hinted import SlotHint
from idstore.placement import needs_holes, target
from idstore.takeback import TakeBack

log = logging.getLogger(__name__)

# Claims from our place in line before falling back to reading the whole pool: a boot
# storm needs one; only churn needs more.
QUEUE_ATTEMPTS = 6


class Status(enum.Enum):
    STARTING = "starting"
    WAITING = "waiting"  # pool full, or store not reachable yet
    HELD = "held"
    LOST = "lost"  # session lost: not asserting any slot until claimed again
    DUPLICATE = "duplicate"  # another live process with our identity holds the slot
    STOPPED = "stopped"


HoldListener = Callable[[Status, Claim | None], None]
# Given the ports of this identity's earlier claim (empty when none), this node's ports.
PortChooser = Callable[[Mapping[str, int]], Mapping[str, int]]


class Allocator:
    """Runs on its own thread; see the module docstring for what it guarantees."""

    def __init__(
        self,
        store: SlotStore,
        pool: PoolSettings,
        record: SlotRecord,
        max_attempts_per_round: int = 64,
        prefer_slot: int | None = None,
        require: bool = False,
        choose_ports: PortChooser | None = None,
    ) -> None:
        self.store = store
        self.pool = pool
        self.record = record
        self.max_attempts = max_attempts_per_round
        self.hint = SlotHint(pool, prefer_slot, require) if prefer_slot is not None else None
        self._sticky = TakeBack(store)
        # None once the ports are chosen (they then live in self.record)
        self._choose_ports = choose_ports
        self.status = Status.STARTING
        self.claim: Claim | None = None
        self.claim_attempts = 0
        self._listeners: list[HoldListener] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="allocator", daemon=True)
        self._full_logged_at = 0.0
        self._ticket: Ticket | None = None  # our place in the pool's waiting queue
        # The slot held when the session was lost: tried first when claiming again, so
        # that nodes that all lost their sessions at once (a store election, a quorum
        # loss) each get their own slot back instead of racing for the lowest ones and
        # swapping names.
        self._previous: int | None = None
        # The claim itself: if the session outlived its presumed loss (a ZooKeeper session
        # can) and we claim another slot (a hint freed meanwhile), this one is released,
        # or it would live as long as the session.
        self._given_up: Claim | None = None

    # -- public ----------------------------------------------------------------------

    def add_listener(self, fn: HoldListener) -> None:
        self._listeners.append(fn)

    def start(self) -> None:
        self.store.add_listener(self._on_state)
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        """Stop claiming; with ``release`` delete our claim (the caller then closes the
        session, which would free it anyway — this makes the name go at once)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(10)
        self.store.remove_listener(self._on_state)
        if self._ticket is not None and self.store.state is ConnectionState.CONNECTED:
            self._leave(self._ticket)
        held, self.claim = self.claim, None
        if release and held is not None and self.store.state is ConnectionState.CONNECTED:
            try:
                self.store.release(held)
            except IdstoreError as e:
                log.warning("could not release %s/%s: %s", held.pool, held.slot, e)
        self._set(Status.STOPPED, None)

    def on_claims(
        self, pool: str, changed: Mapping[int, Claim | None], replace: bool, revision: int
    ) -> None:
        """Mirror listener: notice frees (a waiting node claims) and takeovers of our slot."""
        if pool != self.pool.name:
            return
        held = self.claim
        # News older than our claim (a listing read before we claimed) says nothing of it.
        if held is not None and revision >= held.version:
            now = changed.get(held.slot) if held.slot in changed or replace else held
            if now is None or now.version != held.version:
                self._lost_slot(held, now)
        if self.status is Status.WAITING and (replace or None in changed.values()):
            self._wake.set()

    # -- internals -------------------------------------------------------------------

    def _set(self, status: Status, claim: Claim | None) -> None:
        self.status, self.claim = status, claim
        for fn in self._listeners:
            try:
                fn(status, claim)
            except Exception:
                log.exception("allocator listener %r failed", fn)

    def _on_state(self, state: ConnectionState) -> None:
        if state is ConnectionState.LOST and self.claim is not None:
            log.warning(
                "LOST: session gone; no longer asserting %s (slot %s of pool %s)",
                self.pool.name_of(self.claim.slot),
                self.claim.slot,
                self.pool.name,
            )
            self._previous = self.claim.slot
            self._given_up = self.claim
            self._set(Status.LOST, None)
        if state is ConnectionState.CONNECTED:
            self._wake.set()

    def _lost_slot(self, held: Claim, now: Claim | None) -> None:
        if (
            now is not None
            and now.record.node_id == self.record.node_id
            and now.record.nonce != self.record.nonce
        ):
            log.error(
                "duplicate node identity %r: another process (boot %s) took over %s; this "
                "process stops claiming. Give every node its own --node-id.",
                self.record.node_id,
                now.record.nonce[:8],
                self.pool.name_of(held.slot),
            )
            self._set(Status.DUPLICATE, None)
            return
        if now is not None and now.record.same_boot(self.record):
            self.claim = now  # our own re-claim, seen through the watch
            return
        log.warning(
            "slot %s of pool %s is no longer ours; claiming again", held.slot, self.pool.name
        )
        self._set(Status.LOST, None)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if (
                self.claim is None
                and self.status is not Status.DUPLICATE
                and self.store.state is ConnectionState.CONNECTED
            ):
                self._try_acquire()
            self._wake.wait(self._idle_wait())
            self._wake.clear()

    def _idle_wait(self) -> float:
        if self.claim is not None or self.status is Status.DUPLICATE:
            return 5.0
        return 1.0 + random.random()  # a waiting node re-checks even without a wake-up

    def _try_acquire(self) -> None:
        try:
            claim = self.acquire()
        except SessionLost:
            return  # the state listener will wake us once a new session exists
        except IdstoreError as e:
            log.warning("claiming a slot of pool %s failed: %s; retrying", self.pool.name, e)
            return
        if claim is None:
            if self.hint is None or not self.hint.require:
                self._report_full()
            return
        self._set(Status.HELD, claim)
        self._release_given_up(claim)
        log.info(
            "claimed slot %s of pool %s: %s -> %s (backend %s)",
            claim.slot,
            self.pool.name,
            self.pool.name_of(claim.slot),
            ", ".join(self.record.addresses) or "-",
            self.store.name,
        )

    def _release_given_up(self, claim: Claim) -> None:
        given_up, self._given_up = self._given_up, None
        if given_up is None or given_up.slot == claim.slot:
            return
        try:
            # Fenced on the claim's version: a slot someone else took meanwhile stays theirs.
            if self.store.release(given_up):
                log.info(
                    "released slot %s of pool %s, held before the session was presumed lost",
                    given_up.slot,
                    self.pool.name,
                )
        except IdstoreError as e:  # it goes with its session or lease anyway
            log.debug("could not release given-up slot %s: %s", given_up.slot, e)

    def _report_full(self) -> None:
        if self.status is not Status.WAITING:
            self._set(Status.WAITING, None)
        now = time.monotonic()
        if now - self._full_logged_at > 30:
            self._full_logged_at = now
            log.warning(
                "pool %s is full: all %s slots are claimed; waiting for one to free",
                self.pool.name,
                self.pool.limit,
            )

    def acquire(self) -> Claim | None:
        """One round: our old slot if it is ours to take, else our place in line's slot.

        Returns None when the pool is full (this node stays in line and is served first
        when a slot frees). Raises IdstoreError on store trouble.
        """
        record = replace(self.record, claimed_at=time.time())
        if self.hint is not None:
            hinted = self._claim_hinted(self.hint, record)
            if hinted is not None or self.hint.require:
                return self._settle(hinted)
        pos = self._join()
        record = self._with_ports(record, pos.own)
        if pos.own:
            before = self._sticky.attempts
            sticky = self._sticky.lowest(pos.own, self.pool.slots(), record, pos.ticket)
            self.claim_attempts += self._sticky.attempts - before
            if sticky is not None:
                if pos.ticket is not None:
                    self._leave(pos.ticket)  # queued before it knew of its old claim
                return self._settle(sticky)
            if pos.ticket is None:  # not queued because of the old claim: queue now
                pos = self.store.enqueue(self.pool.name, self.pool.slots(), record.node_id, False)
        claim = self._claim_previous(pos, record) or self._claim_in_line(pos, record)
        if claim is not None:
            self._ticket = None
            self._previous = None
        return self._settle(claim)

    def _claim_hinted(self, hint: SlotHint, record: SlotRecord) -> Claim | None:
        before = hint.attempts
        claim = hint.claim(self.store, record, self._with_ports)
        self.claim_attempts += hint.attempts - before
        if claim is not None and self._ticket is not None:
            self._leave(self._ticket)  # in line from an earlier round: leave it
        if claim is None and hint.require and self.status is not Status.WAITING:
            self._set(Status.WAITING, None)
        return claim

    def _settle(self, claim: Claim | None) -> Claim | None:
        """A claim fixes this process's ports: a re-claim after LOST publishes the same."""
        if claim is not None and self._choose_ports is not None:
            self.record = replace(self.record, ports=claim.record.ports)
            self._choose_ports = None
        return claim

    def _with_ports(self, record: SlotRecord, own: Iterable[Claim]) -> SlotRecord:
        """``record`` with this node's ports, the earlier claim's preferred (sticky)."""
        if self._choose_ports is None:
            return record
        earlier = next((c for c in own if c.record.node_id == record.node_id), None)
        ports = self._choose_ports(earlier.record.ports if earlier is not None else {})
        return replace(record, ports=dict(ports))

    def _claim_previous(self, pos: Position, record: SlotRecord) -> Claim | None:
        """After a LOST: the slot we held, if it is still free (one attempt)."""
        slot, self._previous = self._previous, None
        if slot is None or slot not in self.pool.slots():
            return None
        self.claim_attempts += 1
        try:
            return self.store.claim(self.pool.name, slot, record, ticket=pos.ticket)
        except SlotTaken:
            return None

    def _join(self) -> Position:
        """Our place in line: kept across rounds while its session lives (a waiting node
        keeps its turn), else a new entry."""
        slots, node_id = self.pool.slots(), self.record.node_id
        ticket = self._ticket
        if ticket is not None and ticket.session == self.store.session_id:
            pos = self.store.position(ticket, slots, node_id)
            if pos.ticket is not None or pos.own:
                return self._keep(pos)
        return self._keep(self.store.enqueue(self.pool.name, slots, node_id))

    def _keep(self, pos: Position) -> Position:
        self._ticket = pos.ticket
        return pos

    def _claim_in_line(self, pos: Position, record: SlotRecord) -> Claim | None:
        """Claim the slot our place in line maps to; re-read and retry on a lost race.

        The i-th waiting node (by ticket) takes the i-th lowest free slot. A claim by a
        waiting node removes one waiting node and one free slot, both before or both
        after any other node's place, so that mapping never changes while nodes only
        join and claim: a boot storm has no lost races at all. Only churn (a node dying
        in line, a slot freed, a claim by a node outside the queue) moves places; the
        store's atomic claim catches that, and the node reads its place again.
        """
        for attempt in range(QUEUE_ATTEMPTS):
            if needs_holes(pos) and pos.ticket is not None:
                pos = self.store.position(pos.ticket, pos.slots, record.node_id, exact=True)
            slot = target(pos)
            if slot is None:
                return None
            self.claim_attempts += 1
            try:
                if pos.ticket is None:
                    return self.store.claim(self.pool.name, slot, record)
                return self.store.claim(self.pool.name, slot, record, ticket=pos.ticket)
            except SlotTaken:
                log.debug("slot %s of pool %s was taken; reading our place again", slot, pos.pool)
            if pos.ticket is None:
                break  # not in line (a store without a queue): probe instead
            # Jitter: nodes that lost a race to churn must not meet again at once.
            time.sleep(random.uniform(0, min(0.05, 0.002 * 2**attempt)))
            pos = self._keep(self.store.position(pos.ticket, pos.slots, record.node_id))
            if pos.ticket is None:
                pos = self._keep(self.store.enqueue(self.pool.name, pos.slots, record.node_id))
        # Places keep moving (or claims come from nodes that write no index, such as an
        # older idstore): fall back to reading the pool and probing its lowest free slots.
        return self._probe_lowest(record)

    def _probe_lowest(self, record: SlotRecord) -> Claim | None:
        taken = set(self.store.list(self.pool.name).claims)
        for _ in range(self.max_attempts):
            slot = next((s for s in self.pool.slots() if s not in taken), None)
            if slot is None:
                return None
            self.claim_attempts += 1
            try:
                if self._ticket is None:
                    return self.store.claim(self.pool.name, slot, record)
                return self.store.claim(self.pool.name, slot, record, ticket=self._ticket)
            except SlotTaken:
                taken.add(slot)  # lost a race for it: the next free one
        return None

    def _leave(self, ticket: Ticket) -> None:
        self._ticket = None
        try:
            self.store.dequeue(ticket)
        except IdstoreError as e:  # it leaves with our session anyway
            log.debug("could not leave the queue of pool %s: %s", ticket.pool, e)
