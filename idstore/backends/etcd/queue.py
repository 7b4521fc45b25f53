"""The waiting queue of a boot storm: enqueue, position, dequeue (SlotStore's contract).

An entry is ``_queue/<pool>/<lease>`` under the waiting node's lease; its create_revision
is its ticket. Joining the queue, counting the nodes ahead and the claimed slots, and
reading the highest claimed slot are one transaction, so ``ahead`` counts exactly the
entries older than ours.
"""

from __future__ import annotations

from idstore.backends.base import Claim, Position, Ticket
from idstore.backends.etcd import messages as m
from idstore.backends.etcd.claims import Claims, claim_of
from idstore.backends.etcd.keys import parse_slot, prefix_end, session_name
from idstore.backends.etcd.requests import (
    created_at,
    delete_op,
    put_op,
    range_op,
    range_request,
    txn,
)
from idstore.backends.etcd.session import Session


class WaitingQueue:
    def __init__(self, claims: Claims, session: Session) -> None:
        self._claims = claims
        self._session = session
        self._keys = claims.keys

    def enqueue(self, pool: str, slots: range, node_id: str, sticky: bool) -> Position:
        lease = self._session.write_lease()
        queue_prefix = self._keys.queue(pool)
        key = queue_prefix + session_name(lease).encode()
        ids = self._keys.ids(pool, node_id)
        # Holds for an empty range: this identity holds no claim.
        no_claim = created_at(ids, 0, range_end=prefix_end(ids))
        request = txn(
            compare=[no_claim] if sticky else [],
            # Counted before our put, the queue holds exactly the nodes ahead of us.
            success=[
                range_op(range_request(queue_prefix, prefix_end(queue_prefix), count_only=True)),
                *self._counts(pool, slots),
                put_op(key, node_id.encode(), lease, prev_kv=True),
            ],
            failure=[range_op(range_request(ids, prefix_end(ids)))],
        )
        # Retrying on another endpoint is safe: an applied first attempt shows as prev_kv.
        resp = self._claims.txn("enqueue", request, lease, retry=True)
        revision = int(resp.header.revision)
        if not resp.succeeded:
            own = self._own(pool, slots, node_id, resp.responses[0])
            return Position(pool, slots, None, 0, 0, None, None, own, revision)
        put = resp.responses[3].response_put
        if put.HasField("prev_kv"):
            # Already queued (a retried request, or a second round): keep the old place.
            old = Ticket(pool, int(put.prev_kv.create_revision), key.decode(), session_name(lease))
            return self.position(old, slots, node_id, exact=False)
        ticket = Ticket(pool, revision, key.decode(), session_name(lease))
        taken = int(resp.responses[1].response_range.count)
        highest = self._highest(pool, resp.responses[2])
        ahead = int(resp.responses[0].response_range.count)
        return Position(pool, slots, ticket, ahead, taken, highest, None, (), revision)

    def position(self, ticket: Ticket, slots: range, node_id: str, exact: bool) -> Position:
        pool = ticket.pool
        queue_prefix = self._keys.queue(pool)
        ids = self._keys.ids(pool, node_id)
        ops = [
            # count_only would ignore max_create_revision (etcd 3.4): read the keys ahead.
            range_op(
                range_request(
                    queue_prefix,
                    prefix_end(queue_prefix),
                    keys_only=True,
                    max_create_revision=ticket.order - 1,
                )
            ),
            range_op(range_request(ticket.key.encode(), keys_only=True)),
            *self._counts(pool, slots),
            range_op(range_request(ids, prefix_end(ids))),
        ]
        if exact:
            ops.append(
                range_op(range_request(*self._keys.index_range(pool, slots), keys_only=True))
            )
        resp = self._claims.txn("position", txn(success=ops), None, retry=True)
        mine = resp.responses[1].response_range.kvs
        queued = ticket if mine and int(mine[0].create_revision) == ticket.order else None
        highest = self._highest(pool, resp.responses[3])
        free = self._free_below(pool, highest, slots, resp.responses[5]) if exact else None
        return Position(
            pool,
            slots,
            queued,
            len(resp.responses[0].response_range.kvs),
            int(resp.responses[2].response_range.count),
            highest,
            free,
            self._own(pool, slots, node_id, resp.responses[4]),
            int(resp.header.revision),
        )

    def dequeue(self, ticket: Ticket) -> None:
        key = ticket.key.encode()
        # Only our entry: a later entry at this key would be another place in line.
        request = txn(compare=[created_at(key, ticket.order)], success=[delete_op(key)])
        self._claims.txn("dequeue", request, None, retry=True)

    def _counts(self, pool: str, slots: range) -> tuple[m.Message, ...]:
        """Range ops: claims in ``slots`` (count), then the highest of them (limit 1)."""
        key, end = self._keys.index_range(pool, slots)
        return (
            range_op(range_request(key, end, count_only=True)),
            range_op(range_request(key, end, keys_only=True, limit=1)),
        )

    def _highest(self, pool: str, resp: m.ResponseOp) -> int | None:
        kvs = resp.response_range.kvs
        return self._keys.index_slot(pool, kvs[0].key) if kvs else None

    def _free_below(
        self, pool: str, highest: int | None, slots: range, resp: m.ResponseOp
    ) -> tuple[int, ...]:
        if highest is None:
            return ()
        taken = {self._keys.index_slot(pool, kv.key) for kv in resp.response_range.kvs}
        return tuple(s for s in range(slots.start, highest) if s not in taken)

    def _own(self, pool: str, slots: range, node_id: str, resp: m.ResponseOp) -> tuple[Claim, ...]:
        """This node identity's claims in ``slots``, from a range of its identity keys."""
        prefix = self._keys.ids(pool, node_id)
        own = []
        for kv in resp.response_range.kvs:
            slot = parse_slot(kv.key, prefix)
            claim = claim_of(pool, slot, kv) if slot is not None and slot in slots else None
            if claim is not None and claim.record.node_id == node_id:
                own.append(claim)
        return tuple(sorted(own, key=lambda c: c.slot))
