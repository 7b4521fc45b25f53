"""Taking back this identity's earlier claim: a restart (a new boot of the same node id)
or a hinted node whose hinted slot its earlier boot holds.

A claim of this identity that its old session still holds is re-claimed, fenced on its
version (a slot someone else took meanwhile stays theirs). One that expired between the
caller's read and the re-claim is free and still this node's: it is claimed as a free
slot, so the node comes back under the same name. Without that, a restarted ZooKeeper
node whose killed session expired just then took the next free slot its (stale) place
in line pointed at, and every peer answered NXDOMAIN for its old name (chaos soak, seed
20261201).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from idstore.backends.base import Claim, SlotRecord, SlotStore, Ticket
from idstore.errors import NotOwner, SlotTaken

log = logging.getLogger(__name__)


class TakeBack:
    def __init__(self, store: SlotStore) -> None:
        self.store = store
        self.attempts = 0  # claim requests sent, for the allocator's count

    def one(
        self, previous: Claim, record: SlotRecord, ticket: Ticket | None = None
    ) -> Claim | None:
        """``previous``'s slot for ``record``, or None when another identity took it."""
        self.attempts += 1
        try:
            return self.store.reclaim(previous, record)
        except NotOwner:
            return None
        except SlotTaken as e:
            if e.owner is not None:
                return None
        self.attempts += 1  # it expired meanwhile: free, and this node's to take first
        try:
            return self.store.claim(previous.pool, previous.slot, record, ticket=ticket)
        except SlotTaken:
            return None  # a waiting node was faster: the caller's place in line decides

    def lowest(
        self, own: Iterable[Claim], slots: range, record: SlotRecord, ticket: Ticket | None
    ) -> Claim | None:
        """The lowest of this identity's claims in ``slots`` that comes back."""
        ours = sorted(
            (c for c in own if c.record.node_id == record.node_id and c.slot in slots),
            key=lambda c: c.slot,
        )
        for previous in ours:
            if previous.session == self.store.session_id and previous.record.same_boot(record):
                return previous
            claim = self.one(previous, record, ticket)
            if claim is None:
                continue
            if previous.record.nonce != record.nonce:
                log.info(
                    "took back slot %s of pool %s from an earlier boot of this node",
                    previous.slot,
                    previous.pool,
                )
            return claim
        return None
