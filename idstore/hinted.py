"""A slot hint (``prefer_slot``): claim exactly that slot, or say who holds it.

The allocator (idstore.allocator) asks here first when the node has a hint. The claim
is the store's ordinary atomic claim, fenced like any other; a hinted node never joins
the waiting queue for it, so a boot storm of hinted nodes costs one claim per node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from idstore.backends.base import Claim, SlotRecord, SlotStore
from idstore.config import PoolSettings
from idstore.errors import SlotTaken
from idstore.takeback import TakeBack

log = logging.getLogger(__name__)

# record -> the record with this node's ports, given its identity's earlier claims
WithPorts = Callable[[SlotRecord, Iterable[Claim]], SlotRecord]


class SlotHint:
    def __init__(self, pool: PoolSettings, slot: int, require: bool) -> None:
        self.pool = pool
        self.slot = slot
        self.require = require
        self.attempts = 0  # claim requests sent, for the allocator's count
        self._reported: tuple[str, str] | None = None  # the holder last logged

    def claim(self, store: SlotStore, record: SlotRecord, with_ports: WithPorts) -> Claim | None:
        """The hinted slot, or None when another identity holds it (logged once per
        holder: a waiting node retries every second or two). An earlier boot of this
        identity holding it is taken back (sticky)."""
        self.attempts += 1
        try:
            claim = store.claim(self.pool.name, self.slot, with_ports(record, ()))
        except SlotTaken as e:
            owner = e.owner if isinstance(e.owner, Claim) else None
        else:
            self._reported = None
            return claim
        if owner is not None and owner.record.node_id == record.node_id:
            back = TakeBack(store)
            taken = back.one(owner, with_ports(record, (owner,)))
            self.attempts += back.attempts
            if taken is not None:
                return taken
        self._report(owner)
        return None

    def _report(self, owner: Claim | None) -> None:
        who = (owner.record.node_id, ",".join(owner.record.addresses)) if owner else ("?", "")
        if who == self._reported:
            return
        self._reported = who
        log.warning(
            "preferred slot %s of pool %s (%s) is held by node %s (%s); %s",
            self.slot,
            self.pool.name,
            self.pool.name_of(self.slot),
            who[0],
            who[1] or "-",
            "waiting for it (prefer = require)" if self.require else "taking a place in line",
        )
