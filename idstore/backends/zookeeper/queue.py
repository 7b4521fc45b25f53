"""The waiting queue: enqueue (with the tree maker), position, dequeue.

A waiting node's entry is an ephemeral sequential ``q<h>-<sequence>`` child of the pool
(paths.py). A waiting entry whose identity has a marker belongs to a node that will take
its old slot back: nobody counts it as ahead of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import ZnodeStat

from idstore.backends.base import Position, Ticket, position_of
from idstore.backends.zookeeper.claims import failed_op
from idstore.backends.zookeeper.paths import SEQUENCE_DIGITS, identity, session_of
from idstore.backends.zookeeper.wire import Wire
from idstore.errors import StoreError

# Every this many sessions, one makes the pool's tree ahead of its queue entry, unasked
# (see enqueue): in a new pool the herd then finds it made after the first few
# arrivals. 0: nobody does.
TREE_MAKER_EVERY = 8


@dataclass(frozen=True)
class TreePlan:
    """How an enqueue makes the pool's tree: per start, one transaction creating the
    components past the first ``start``; or, ``separate``, one create per component
    past ``starts[0]``."""

    starts: tuple[int, ...]
    separate: bool = False


def tree_maker(client: KazooClient) -> bool:
    every = TREE_MAKER_EVERY
    sid = client.client_id[0] if client.client_id else 0
    return every > 0 and int(sid) % every == 0


class WaitQueue:
    """The queue operations of one store, on its Wire."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.paths = wire.paths

    def enqueue(self, pool: str, slots: range, node_id: str) -> Position:
        # Never skips queueing: ZooKeeper cannot make a create depend on a read. A node
        # with an old claim leaves the queue again, and nobody counted it (see above).
        what = f"enqueue {pool}"
        wire = self.wire
        client = wire.connected(what)
        entry = self.paths.entry_prefix(pool, node_id)
        pool_path = self.paths.pool(pool)
        # A new pool meets the whole herd missing: every node whose entry reaches the
        # server before someone's create of the pool does fails and pays a retry.
        # Measured on 1000 nodes: up to 36 % of them. So every TREE_MAKER_EVERY-th
        # session makes the tree ahead of its entry without asking (the server numbers
        # sessions consecutively: a herd's first 8 sessions hold one maker; a random
        # 1 in 16 left ~25 % of 100 nodes failing). Two transactions, one request each:
        # the whole tree (an ensemble's first cluster) and the cluster and pool under
        # the prefix (any later one); in a pool that exists they cost 1/4 of a request
        # per node. After a NoNode the retry makes the tree first (see _next_tree_plan).
        depth = pool_path.count("/")
        below_prefix = max(0, depth - 2)  # <prefix>/<cluster>/<pool>
        plan = TreePlan((0, below_prefix)) if tree_maker(client) else None
        with wire.translated(what):
            for _ in range(depth + 2):
                # Pipelined; one session's requests are served in order, so the listing
                # already holds our entry and every older one.
                made = self._make_tree(client, pool_path, plan) if plan else []
                create = client.create_async(
                    entry, b"", acl=wire.acl, ephemeral=True, sequence=True
                )
                children = client.get_children_async(pool_path, include_data=True)
                wire.send(2)
                try:
                    path = wire.wait(create)
                except NoNodeError:
                    with contextlib.suppress(NoNodeError):
                        wire.wait(children)
                    plan = self._next_tree_plan(made, plan, below_prefix)
                    continue
                for request in made:  # done; whoever made the tree, it is there
                    with contextlib.suppress(KazooException):
                        wire.wait(request)
                order = int(path[-SEQUENCE_DIGITS:])
                ticket = Ticket(pool, order, path, session_of(client))
                names, stat = wire.wait(children)
                return self._position_of(client, ticket, names, stat, slots, node_id)
        raise StoreError(f"{what}: the pool kept vanishing")

    def position(self, ticket: Ticket, slots: range, node_id: str) -> Position:
        # Names are cheap: always exact.
        what = f"position {ticket.pool}"
        wire = self.wire
        client = wire.live(what)
        with wire.translated(what):
            wire.send()
            names, stat = wire.wait(
                client.get_children_async(self.paths.pool(ticket.pool), include_data=True)
            )
            return self._position_of(client, ticket, names, stat, slots, node_id)

    def dequeue(self, ticket: Ticket) -> None:
        what = f"dequeue {ticket.pool}"
        wire = self.wire
        client = wire.live(what)
        with wire.translated(what), contextlib.suppress(NoNodeError):
            wire.send()
            wire.wait(client.delete_async(ticket.key))

    def _position_of(
        self,
        client: KazooClient,
        ticket: Ticket,
        names: Sequence[str],
        stat: ZnodeStat,
        slots: range,
        node_id: str,
    ) -> Position:
        """Read a pool's children: slots, waiting entries, identity markers.

        Runs once per starting node over up to 3 names per node of the pool: written
        as comprehensions over the names, not one loop with branches (3x faster).
        """
        me = identity(node_id)
        taken = [int(n) for n in names if n.isdigit() and (n == "0" or n[0] != "0")]
        waiting = [n for n in names if n[0] == "q"]
        markers = [n[1:].partition(".") for n in names if n[0] == "i"]
        marked = {who for who, _, _ in markers}
        mine = {int(slot) for who, _, slot in markers if who == me and slot.isdigit()}
        entry = ticket.key.rsplit("/", 1)[-1]
        seq = entry[-SEQUENCE_DIGITS:]
        queued = ticket if entry in set(waiting) else None
        # Nodes with a marker take their old slot back: they are nobody's "ahead".
        ahead = sum(1 for q in waiting if q[-SEQUENCE_DIGITS:] < seq and q[1:17] not in marked)
        own = self.wire.fetch(client, ticket.pool, {s for s in mine if s in slots}, None)
        ours = tuple(c for _, c in sorted(own.items()) if c.record.node_id == node_id)
        return position_of(ticket.pool, slots, queued, ahead, taken, int(stat.pzxid), ours)

    # -- making the pool's tree ------------------------------------------------------

    def _make_tree(self, client: KazooClient, path: str, plan: TreePlan) -> Sequence[Any]:
        """Send the plan's creates of the components of ``path`` (see TreePlan)."""
        parts = path.strip("/").split("/")
        acl = self.wire.acl

        def past(known: int) -> list[str]:
            return ["/" + "/".join(parts[:i]) for i in range(known + 1, len(parts) + 1)]

        if plan.separate:
            paths = past(plan.starts[0])
            self.wire.send(len(paths))
            return [client.create_async(p, b"", acl=acl) for p in paths]
        requests = []
        for known in plan.starts:
            tx = client.transaction()
            for p in past(known):
                tx.create(p, b"", acl=acl)
            requests.append(tx.commit_async())
        self.wire.send(len(requests))
        return requests

    def _next_tree_plan(
        self, made: Sequence[Any], plan: TreePlan | None, below_prefix: int
    ) -> TreePlan:
        """The entry met no pool: how to make the tree on the next attempt.

        One transaction for the cluster and pool znodes, the prefix assumed made: one
        request, not one per component. A shared ensemble has the prefix from its first
        cluster on, and every new cluster's herd then either makes the rest or finds it
        made. A transaction fails with NodeExists on a component that exists (a new
        pool in an older cluster): that component and its parents are known, and one
        create per component below follows, each of which may find its znode there.
        All failing with NoNode: the prefix is missing (first use): from the top. A
        tree made and still no pool for the entry: removed meanwhile, start over.
        """
        if plan is None or plan.separate:
            for request in made:
                with contextlib.suppress(NodeExistsError, NoNodeError):
                    self.wire.wait(request)
            return TreePlan((below_prefix,))
        known = -1
        for start, request in zip(plan.starts, made, strict=True):
            results = self.wire.wait(request)
            failed = failed_op(results)
            if failed is None:
                return TreePlan((below_prefix,))
            if isinstance(results[failed], NodeExistsError):
                known = max(known, start + failed + 1)
            elif not isinstance(results[failed], NoNodeError):
                raise results[failed]
        return TreePlan((known,), separate=True) if known >= 0 else TreePlan((0,))
