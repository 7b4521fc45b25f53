"""Claims: one transaction each, whose compare decides ownership.

A claim compares create_revision == 0 (the slot is free), a re-claim or release
mod_revision == the claim's version; nothing here decides by "read, then write". The
claim's transaction also writes the slot's two index keys (keys.py) under the same lease.
"""

from __future__ import annotations

from idstore.backends.base import Claim, Listing, SlotRecord, Ticket
from idstore.backends.etcd import messages as m
from idstore.backends.etcd.connection import Transport
from idstore.backends.etcd.keys import Keys, parse_slot, prefix_end, session_name
from idstore.backends.etcd.requests import (
    created_at,
    delete_op,
    modified_at,
    put_op,
    range_op,
    range_request,
    txn,
)
from idstore.backends.etcd.session import Session
from idstore.backends.records import check_reclaim, own_or_taken, read_record
from idstore.errors import SessionLost


def claim_of(pool: str, slot: int, kv: m.KeyValue) -> Claim | None:
    """The claim a slot key holds; None (logged) for a value idstore did not write."""
    record = read_record(kv.value, kv.key.decode(errors="replace"))
    if record is None:
        return None
    return Claim(pool, slot, record, int(kv.mod_revision), session_name(kv.lease))


class Claims:
    def __init__(self, transport: Transport, session: Session, keys: Keys) -> None:
        self._transport = transport
        self._session = session
        self.keys = keys

    def txn(
        self, what: str, request: m.Message, lease: int | None, retry: bool = False
    ) -> m.TxnResponse:
        """Send a transaction; a SessionLost for ``lease`` tells the session at once."""
        try:
            return self._transport.rpc(
                what,
                lambda c, t: c.kv.Txn(request, timeout=t, metadata=c.metadata),
                failover_retry=retry,
            )
        except SessionLost:
            if lease is not None:
                self._session.lease_gone(lease)
            raise

    def claim_puts(
        self, pool: str, slot: int, record: SlotRecord, lease: int
    ) -> tuple[m.Message, ...]:
        """The slot key and its two index keys, all under the claim's lease."""
        value = record.encode()
        return (
            put_op(self.keys.slot(pool, slot), value, lease),
            put_op(self.keys.index_key(pool, slot), b"%d" % slot, lease),
            put_op(self.keys.id_key(pool, record.node_id, slot), value, lease),
        )

    def claim(self, pool: str, slot: int, record: SlotRecord, ticket: Ticket | None) -> Claim:
        lease = self._session.write_lease()
        key = self.keys.slot(pool, slot)
        leave = [delete_op(ticket.key.encode())] if ticket is not None else []
        request = txn(
            compare=[created_at(key, 0)],
            success=[*self.claim_puts(pool, slot, record, lease), *leave],
            failure=[range_op(range_request(key))],
        )
        # Retrying on another endpoint is safe: an applied first attempt comes back as
        # our own claim through the idempotence check below.
        resp = self.txn("claim", request, lease, retry=True)
        if resp.succeeded:
            return Claim(pool, slot, record, int(resp.header.revision), session_name(lease))
        return self._own_or_taken(pool, slot, record, lease, resp)

    def reclaim(self, previous: Claim, record: SlotRecord) -> Claim:
        check_reclaim(previous, record)
        pool, slot = previous.pool, previous.slot
        lease = self._session.write_lease()
        key = self.keys.slot(pool, slot)
        request = txn(
            compare=[modified_at(key, previous.version)],
            # The index keys move to the new lease with the slot.
            success=self.claim_puts(pool, slot, record, lease),
            failure=[range_op(range_request(key))],
        )
        # Safe to retry like claim: an applied first attempt comes back as our own claim.
        resp = self.txn("reclaim", request, lease, retry=True)
        if resp.succeeded:
            return Claim(pool, slot, record, int(resp.header.revision), session_name(lease))
        return self._own_or_taken(pool, slot, record, lease, resp)

    def _own_or_taken(
        self, pool: str, slot: int, record: SlotRecord, lease: int, resp: m.TxnResponse
    ) -> Claim:
        """After a failed compare: our own claim (a retry that had applied), else SlotTaken."""
        kvs = resp.responses[0].response_range.kvs if resp.responses else []
        owner = claim_of(pool, slot, kvs[0]) if kvs else None
        return own_or_taken(pool, slot, owner, session_name(lease), record)

    def release(self, claim: Claim) -> bool:
        key = self.keys.slot(claim.pool, claim.slot)
        request = txn(
            compare=[modified_at(key, claim.version)],
            success=[
                delete_op(key),
                delete_op(self.keys.index_key(claim.pool, claim.slot)),
                delete_op(self.keys.id_key(claim.pool, claim.record.node_id, claim.slot)),
            ],
        )
        return bool(self.txn("release", request, None).succeeded)

    def list(self, pool: str) -> Listing:
        prefix = self.keys.pool(pool)
        req = range_request(prefix, prefix_end(prefix))
        resp = self._transport.rpc(
            "range",
            lambda c, t: c.kv.Range(req, timeout=t, metadata=c.metadata),
            failover_retry=True,
        )
        claims: dict[int, Claim] = {}
        for kv in resp.kvs:
            slot = parse_slot(kv.key, prefix)
            if slot is None:
                continue  # other keys may live below the pool (later features)
            claim = claim_of(pool, slot, kv)
            if claim is not None:
                claims[slot] = claim
        return Listing(pool, claims, int(resp.header.revision))
