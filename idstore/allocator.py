"""Claim this node's slot and keep it, on any backend (depends only on SlotStore).

Rules:
- a node holds at most one slot;
- a restarted node (same node identity) takes its old slot back while that slot still
  holds its identity, or is free; it never takes a slot held by another identity;
- otherwise it claims the lowest free slot; when the pool is full it waits, says so, and
  claims as soon as a slot frees;
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
from collections.abc import Callable, Mapping
from dataclasses import replace

from idstore.backends.base import Claim, ConnectionState, Listing, SlotRecord, SlotStore
from idstore.config import PoolSettings
from idstore.errors import IdstoreError, NotOwner, SessionLost, SlotTaken

log = logging.getLogger(__name__)


class Status(enum.Enum):
    STARTING = "starting"
    WAITING = "waiting"  # pool full, or store not reachable yet
    HELD = "held"
    LOST = "lost"  # session lost: not asserting any slot until claimed again
    DUPLICATE = "duplicate"  # another live process with our identity holds the slot
    STOPPED = "stopped"


HoldListener = Callable[[Status, Claim | None], None]


class Allocator:
    """Runs on its own thread; see the module docstring for what it guarantees."""

    def __init__(
        self,
        store: SlotStore,
        pool: PoolSettings,
        record: SlotRecord,
        max_attempts_per_round: int = 64,
    ) -> None:
        self.store = store
        self.pool = pool
        self.record = record
        self.max_attempts = max_attempts_per_round
        self.status = Status.STARTING
        self.claim: Claim | None = None
        self.claim_attempts = 0
        self._listeners: list[HoldListener] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="allocator", daemon=True)
        self._full_logged_at = 0.0

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
            self._report_full()
            return
        self._set(Status.HELD, claim)
        log.info(
            "claimed slot %s of pool %s: %s -> %s (backend %s)",
            claim.slot,
            self.pool.name,
            self.pool.name_of(claim.slot),
            ", ".join(self.record.addresses) or "-",
            self.store.name,
        )

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
        """One round: our old slot if it is ours to take, else the lowest free one.

        Returns None when the pool is full. Raises IdstoreError on store trouble.
        """
        record = replace(self.record, claimed_at=time.time())
        listing = self.store.list(self.pool.name)
        sticky = self._take_back(listing, record)
        if sticky is not None:
            return sticky
        taken = set(listing.claims)
        for _ in range(self.max_attempts):
            slot = next((s for s in self.pool.slots() if s not in taken), None)
            if slot is None:
                return None
            self.claim_attempts += 1
            try:
                return self.store.claim(self.pool.name, slot, record)
            except SlotTaken:
                taken.add(slot)  # lost a race for it: the next free one
        return None

    def _take_back(self, listing: Listing, record: SlotRecord) -> Claim | None:
        ours = sorted(
            (
                c
                for c in listing.claims.values()
                if c.record.node_id == record.node_id and c.slot in self.pool.slots()
            ),
            key=lambda c: c.slot,
        )
        for previous in ours:
            if previous.session == self.store.session_id and previous.record.same_boot(record):
                return previous
            self.claim_attempts += 1
            try:
                claim = self.store.reclaim(previous, record)
            except (SlotTaken, NotOwner):
                continue
            if previous.record.nonce != record.nonce:
                log.info(
                    "took back slot %s of pool %s from an earlier boot of this node",
                    previous.slot,
                    self.pool.name,
                )
            return claim
        return None
