"""What a store holds, and the rules every backend reads it by.

The value types of the SlotStore contract (idstore.backends.base re-exports them), and
the decisions that must come out the same on every backend, so each is written once:
which key names are slots, what to do with a value idstore did not write, when a claim
that "failed" is in fact our own, and who may take a claim back.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from idstore.errors import NotOwner, SlotTaken, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotRecord:
    """What a claim says about its holder; stored as JSON in the slot's key."""

    node_id: str
    nonce: str  # new on every boot: tells a restarted node from its previous life
    addresses: tuple[str, ...] = ()
    ports: Mapping[str, int] = field(default_factory=dict)
    claimed_at: float = 0.0  # wall clock, informational only: never used for timing

    def encode(self) -> bytes:
        return json.dumps(
            {
                "node_id": self.node_id,
                "nonce": self.nonce,
                "addresses": list(self.addresses),
                "ports": dict(self.ports),
                "claimed_at": self.claimed_at,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> SlotRecord:
        """Parse a stored record; a value idstore did not write raises StoreError."""
        try:
            obj = json.loads(data)
            return cls(
                node_id=str(obj["node_id"]),
                nonce=str(obj["nonce"]),
                addresses=tuple(str(a) for a in obj.get("addresses", ())),
                ports={str(k): int(v) for k, v in dict(obj.get("ports", {})).items()},
                claimed_at=float(obj.get("claimed_at", 0.0)),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise StoreError(f"unreadable slot record {data[:80]!r}") from e

    def same_boot(self, other: SlotRecord) -> bool:
        return self.node_id == other.node_id and self.nonce == other.nonce


@dataclass(frozen=True)
class Claim:
    """A slot as the store holds it."""

    pool: str
    slot: int
    record: SlotRecord
    # The store's fencing token for this claim (etcd mod_revision, ZooKeeper czxid):
    # it changes on every claim and re-claim, so a compare on it detects any takeover.
    version: int
    # The session the claim lives under (etcd lease id, ZooKeeper ephemeralOwner).
    session: str


@dataclass(frozen=True)
class Listing:
    """Every claim of a pool, as of the store revision ``revision``."""

    pool: str
    claims: Mapping[int, Claim]
    revision: int


@dataclass(frozen=True)
class Ticket:
    """A node's place in a pool's waiting queue (see ``SlotStore.enqueue``).

    The entry lives under the session that made it, so a node that dies while waiting
    leaves the queue with its session, as its claims would.
    """

    pool: str
    # Assigned by the store, increasing in arrival order: the etcd create_revision of the
    # entry, the ZooKeeper sequence number. Nodes are served in this order.
    order: int
    key: str  # the backend's name for the entry (key, znode path)
    session: str  # the session the entry lives under


@dataclass(frozen=True)
class Position:
    """Where a node stands, all read at one store revision: what the herd algorithm needs.

    Counts cover only the slots of ``slots`` (the pool's configured range). The slots
    above ``highest`` are all free, so a node ``ahead`` places back in line can compute
    its slot from the counts alone unless it must fill a hole below ``highest``; only
    then does it need ``free_below``, which a store fills when it was cheap to read or
    when asked with ``exact=True``.
    """

    pool: str
    slots: range
    ticket: Ticket | None  # None: not waiting in the queue (see SlotStore.enqueue)
    ahead: int  # waiting nodes served before this one
    taken: int  # claims within ``slots``
    highest: int | None  # the highest claimed slot within ``slots``; None when none is
    free_below: tuple[int, ...] | None  # free slots below ``highest``, ascending, if read
    own: tuple[Claim, ...]  # claims in ``slots`` by the asking node identity (sticky restart)
    revision: int


def position_of(
    pool: str,
    slots: range,
    ticket: Ticket | None,
    ahead: int,
    taken: Iterable[int],
    revision: int,
    own: tuple[Claim, ...] = (),
) -> Position:
    """A Position from the set of taken slots (stores that read them all anyway)."""
    used = {s for s in taken if s in slots}
    highest = max(used) if used else slots.start - 1
    free = tuple(s for s in range(slots.start, highest) if s not in used)
    top = highest if used else None
    return Position(pool, slots, ticket, ahead, len(used), top, free, own, revision)


class EventType(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class SlotEvent:
    type: EventType
    pool: str
    slot: int
    claim: Claim | None  # None for DELETE
    revision: int


# -- rules every backend applies -------------------------------------------------------


def slot_number(name: str | bytes) -> int | None:
    """The slot a key or znode name stands for; None for any other name.

    Only canonical decimal numbers are slots ("7", never "07", "+7" or a non-ASCII digit): other
    names may live beside the slots (queues, indexes of later versions), and two names
    for one slot would let two nodes claim it.
    """
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    if not (text.isascii() and text.isdigit()) or (len(text) > 1 and text[0] == "0"):
        return None
    return int(text)


def read_record(data: bytes, where: str) -> SlotRecord | None:
    """The record stored at ``where``; None, logged, for a value idstore did not write.

    A foreign or damaged value must not stop a listing or a watch: it is skipped and
    its slot counts as free to the reader (a claim there still fails atomically).
    """
    try:
        return SlotRecord.decode(data)
    except StoreError as e:
        log.warning("skipping %s: %s", where, e)
        return None


def check_reclaim(previous: Claim, record: SlotRecord) -> None:
    """NotOwner unless ``previous`` was made by the node identity of ``record``.

    Checked before any request: a reclaim never takes over another node's claim, even
    one the store would let us replace.
    """
    if previous.record.node_id != record.node_id:
        raise NotOwner(
            f"slot {previous.pool}/{previous.slot} belongs to "
            f"{previous.record.node_id!r}, not {record.node_id!r}"
        )


def own_or_taken(
    pool: str, slot: int, owner: Claim | None, session: str, record: SlotRecord
) -> Claim:
    """After a claim found the slot held: the holder's claim if it is ours, else SlotTaken.

    "Ours" means this session and this boot (node id and nonce): a retried request whose
    first attempt did apply comes back as our own claim, which makes claims idempotent.
    """
    if owner is not None and owner.session == session and owner.record.same_boot(record):
        return owner
    raise SlotTaken(pool, slot, owner)
