"""Claims: create, commit, reclaim, release and list the slots of a pool.

Fencing. ZooKeeper cannot compare a znode's czxid in a transaction, and a versioned
delete is no fence (every fresh znode has data version 0, so ``delete(path, 0)`` could
remove a newer owner's znode). So every create idstore makes in a pool is a transaction
that also bumps the pool znode's data version: the pool version is a pool-wide "a slot
was created" counter. ``reclaim`` and ``release`` read the pool's version *before* the
slot's stat (one session's requests are processed in order), check the slot's czxid,
then commit ``check(pool, version)`` with their delete (and create). If the check holds,
no znode was created in the pool since the slot was read, so the znode at the path is
the one read or none at all: the delete can only hit the claim the caller meant.
Deletions need no bump: a slot deleted in between makes the delete fail with NoNode.
Only idstore may create znodes in a pool (the ACL enforces it when credentials are set).
Queue entries and identity markers are not at slot paths, so they need no bump: the
fence only guards the znode at a slot's path.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from kazoo.protocol.states import ZnodeStat

from idstore.backends.base import Claim, Listing, SlotRecord, Ticket
from idstore.backends.records import check_reclaim, own_or_taken
from idstore.backends.zookeeper.paths import claim_of, session_of
from idstore.backends.zookeeper.wire import Wire
from idstore.errors import SlotTaken, StoreError, StoreUnavailable


def failed_op(results: Sequence[Any]) -> int | None:
    """Index of the operation that failed a transaction (kazoo marks the others)."""
    for i, r in enumerate(results):
        if isinstance(r, Exception) and not isinstance(r, RolledBackError):
            return i
    return None


def raise_first_failure(results: Sequence[Any]) -> None:
    """kazoo returns a failed transaction's errors as result values: raise the cause."""
    failures = [r for r in results if isinstance(r, Exception)]
    causes = [r for r in failures if not isinstance(r, RolledBackError)]
    if causes:
        raise causes[0]
    if failures:
        raise failures[0]


class Claims:
    """The slot operations of one store, on its Wire."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.paths = wire.paths

    def claim(self, pool: str, slot: int, record: SlotRecord, ticket: Ticket | None) -> Claim:
        what = f"claim {pool}/{slot}"
        wire = self.wire
        client = wire.connected(what)
        with wire.translated(what):
            for _ in range(5):
                try:
                    return self._create_slot(client, pool, slot, record, None, ticket)
                except NoNodeError:
                    wire.forget_pool(pool)
                    wire.ensure_pool(client, pool)
                except NodeExistsError:
                    owner = wire.read_claim(client, pool, slot)
                    if owner is None:
                        continue  # freed between our create and our read: try again
                    # Ours: an earlier create of ours that we never heard back from.
                    return own_or_taken(pool, slot, owner, session_of(client), record)
            raise StoreError(f"{what}: the slot kept changing; giving up")

    def reclaim(self, previous: Claim, record: SlotRecord) -> Claim:
        pool, slot = previous.pool, previous.slot
        what = f"reclaim {pool}/{slot}"
        check_reclaim(previous, record)  # refused here, before any request
        client = self.wire.connected(what)

        def attempt() -> Claim:
            fence, current = self._fence_and_read(client, pool, slot)
            if current is None:
                raise SlotTaken(pool, slot, None)
            data, stat = current
            held = claim_of(pool, slot, SlotRecord.decode(data), stat)  # strict: it fences
            if held.version != previous.version:
                raise SlotTaken(pool, slot, held)
            try:
                return self._create_slot(client, pool, slot, record, fence)
            except NoNodeError:
                raise SlotTaken(pool, slot, None) from None  # it expired meanwhile

        with self.wire.translated(what):
            result = self._retry_fenced(what, attempt)
        assert isinstance(result, Claim)
        return result

    def release(self, claim: Claim) -> bool:
        pool, slot = claim.pool, claim.slot
        what = f"release {pool}/{slot}"
        wire = self.wire
        client = wire.live(what)

        def attempt() -> bool:
            fence, current = self._fence_and_read(client, pool, slot)
            if current is None or int(current[1].czxid) != claim.version:
                return False
            marker = self.paths.marker(pool, claim.record.node_id, slot)
            for with_marker in (True, False):  # claims by older versions have no marker
                tx = client.transaction()
                tx.check(self.paths.pool(pool), fence)
                tx.delete(self.paths.slot(pool, slot))
                if with_marker:
                    tx.delete(marker)
                wire.send()
                results = wire.wait(tx.commit_async())
                failed = failed_op(results)
                if failed == 2 and isinstance(results[2], NoNodeError):
                    continue
                try:
                    raise_first_failure(results)
                except NoNodeError:
                    return False
                return True
            return False

        with wire.translated(what):
            result = self._retry_fenced(what, attempt)
        assert isinstance(result, bool)
        return result

    def list_pool(self, pool: str) -> Listing:
        what = f"list {pool}"
        wire = self.wire
        client = wire.live(what)
        with wire.translated(what):
            try:
                wire.send()
                names, pool_stat = wire.wait(
                    client.get_children_async(self.paths.pool(pool), include_data=True)
                )
            except NoNodeError:
                return Listing(pool, {}, 0)
            claims = wire.fetch(client, pool, names, None)
        revision = max([int(pool_stat.pzxid), *(c.version for c in claims.values())])
        return Listing(pool, {s: c for s, c in claims.items() if c is not None}, revision)

    # -- the transactions ------------------------------------------------------------

    def _create_slot(
        self,
        client: KazooClient,
        pool: str,
        slot: int,
        record: SlotRecord,
        fence: int | None,
        ticket: Ticket | None = None,
    ) -> Claim:
        """One transaction: [check pool version, delete slot, delete our old marker,]
        create slot and marker, [leave the queue,] bump pool.

        ``fence`` given: the slot is replaced only if no slot was created in the pool
        since the pool version ``fence`` was read. The marker and queue steps adapt to
        what is there (claims by older versions have no marker; a queue entry may be
        gone): a failure of those alone is retried without them.
        """
        old_marker = fence is not None  # a take-back replaces the earlier boot's marker
        for _ in range(4):
            results, steps = self._commit_claim(
                client, pool, slot, record, fence, ticket, old_marker
            )
            failed = failed_op(results)
            if failed is None:
                # Everything in one transaction shares its zxid: the pool's new mzxid is
                # the slot's czxid, so no extra read is needed.
                return Claim(pool, slot, record, int(results[-1].mzxid), session_of(client))
            step, error = steps[failed], results[failed]
            if step == "old-marker" and isinstance(error, NoNodeError):
                old_marker = False
            elif step == "marker" and isinstance(error, NodeExistsError):
                old_marker = True  # a stale marker of ours: replace it
            elif step == "ticket" and isinstance(error, NoNodeError):
                ticket = None  # no longer queued: the claim stands on its own
            else:
                raise error
        raise StoreError(f"claim {pool}/{slot}: the pool kept changing; giving up")

    def _commit_claim(
        self,
        client: KazooClient,
        pool: str,
        slot: int,
        record: SlotRecord,
        fence: int | None,
        ticket: Ticket | None,
        old_marker: bool,
    ) -> tuple[Sequence[Any], list[str]]:
        acl = self.wire.acl
        pool_path, path = self.paths.pool(pool), self.paths.slot(pool, slot)
        marker = self.paths.marker(pool, record.node_id, slot)
        tx = client.transaction()
        steps: list[str] = []
        if fence is not None:
            tx.check(pool_path, fence)
            tx.delete(path)
            steps += ["fence", "slot"]
        if old_marker:
            tx.delete(marker)
            steps.append("old-marker")
        tx.create(path, record.encode(), acl=acl, ephemeral=True)
        tx.create(marker, b"", acl=acl, ephemeral=True)
        steps += ["slot", "marker"]
        if ticket is not None:
            tx.delete(ticket.key)
            steps.append("ticket")
        tx.set_data(pool_path, b"")
        steps.append("pool")
        self.wire.send()
        return self.wire.wait(tx.commit_async()), steps

    def _fence_and_read(
        self, client: KazooClient, pool: str, slot: int
    ) -> tuple[int, tuple[bytes, ZnodeStat] | None]:
        """The pool's version, then the slot: pipelined, and in that order on the server."""
        pool_req = client.exists_async(self.paths.pool(pool))
        slot_req = client.get_async(self.paths.slot(pool, slot))
        self.wire.send(2)
        pool_stat = self.wire.wait(pool_req)
        try:
            slot_data = self.wire.wait(slot_req)
        except NoNodeError:
            slot_data = None
        if pool_stat is None:
            return -1, None
        return int(pool_stat.version), slot_data

    def _retry_fenced(self, what: str, attempt: Callable[[], Claim | bool]) -> Claim | bool:
        """Run a fenced operation until its fence holds (unrelated creates in the pool
        break the fence without changing our slot) or request_timeout passes."""
        deadline = time.monotonic() + self.wire.options.request_timeout
        delay = 0.001
        while True:
            try:
                return attempt()
            except BadVersionError:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"{what}: the pool is too busy to fence") from None
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, 0.05)
