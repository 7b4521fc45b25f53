"""The key schema: where idstore's znodes live and what their names mean.

``<chroot>/<prefix>/<cluster>/<pool>`` is a persistent pool znode; its ephemeral
children, so that one get_children (names only: cheap) shows a starting node the whole
picture — claimed slots, who waits before it, and whether its identity holds a claim:

- ``<slot>``: a claim; its data is ``SlotRecord.encode()``. ``Claim.version`` is the
  znode's czxid (new on every create), ``Claim.session`` its ephemeralOwner in hex;
- ``q<h>-<sequence>``: a waiting node's entry (sequential: its sequence is its ticket);
- ``i<h>.<slot>``: an identity marker, created in the claim's transaction, so it lives
  and dies with the claim (same session, same czxid); a restarted node finds its old
  slot by name.

``<h>`` is a 16-hex-digit hash of the node identity (names stay short; a collision only
costs a read).
"""

from __future__ import annotations

import hashlib

from kazoo.client import KazooClient
from kazoo.protocol.states import ZnodeStat

from idstore.backends.base import Claim, SlotRecord, StoreOptions

# Sequence numbers ZooKeeper appends to sequential znodes: fixed width, so string order
# is numeric order.
SEQUENCE_DIGITS = 10


def identity(node_id: str) -> str:
    """The short stand-in for a node identity in queue and marker names."""
    return hashlib.sha256(node_id.encode()).hexdigest()[:16]


def session_of(client: KazooClient) -> str:
    """The client's current session id as idstore shows it (hex, like ephemeralOwner)."""
    client_id = client.client_id
    return f"{int(client_id[0]):x}" if client_id else ""


def claim_of(pool: str, slot: int, record: SlotRecord, stat: ZnodeStat) -> Claim:
    """The Claim of a slot znode holding ``record`` (decoded by the caller: strictly
    where an unreadable record must fail, with ``records.read_record`` where it is
    skipped)."""
    return Claim(
        pool=pool,
        slot=slot,
        record=record,
        version=int(stat.czxid),
        session=f"{int(stat.ephemeralOwner):x}",
    )


class Paths:
    """Absolute znode paths of one store (its chroot, prefix and cluster)."""

    def __init__(self, root: str, options: StoreOptions) -> None:
        self.root = root
        self.options = options

    def pool(self, pool: str) -> str:
        return self.root + self.options.pool_path(pool)

    def slot(self, pool: str, slot: int) -> str:
        return self.root + self.options.slot_path(pool, slot)

    def marker(self, pool: str, node_id: str, slot: int) -> str:
        return f"{self.pool(pool)}/i{identity(node_id)}.{slot}"

    def entry_prefix(self, pool: str, node_id: str) -> str:
        """A waiting entry's path before ZooKeeper appends its sequence number."""
        return f"{self.pool(pool)}/q{identity(node_id)}-"
