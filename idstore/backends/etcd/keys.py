"""Where idstore's data lives in etcd's key space.

All under ``<prefix>/<cluster>/`` (pool names cannot start with "_"):

- ``<pool>/<slot>``: the claim, value ``SlotRecord.encode()``, under the holder's lease;
- ``_slots/<pool>/<9999999999 - slot, 10 digits>``: slots in *descending* numeric order
  as keys ascend, so the highest claimed slot is a range with limit 1 (etcd applies a
  limit early only to ascending key order; a sorted range fetches every key first) and
  the claimed count is a count_only range;
- ``_ids/<pool>/<quoted node id>/<slot>`` holding the record: a restarted node finds its
  claim with a range of a few keys instead of reading the pool; written in the claim's
  transaction, its mod_revision is the claim's version;
- ``_queue/<pool>/<lease>``: a waiting node's entry; its create_revision is its ticket.

The two index keys are written in the claim's transaction under the same lease, so they
live, move and vanish exactly with the claim. They only guide the choice of a slot;
ownership is decided by the slot key's compare alone, so claims written without them
(older idstore versions) stay safe: they only cost lost races, after which the
allocator reads the pool itself.
"""

from __future__ import annotations

from urllib.parse import quote

from idstore.backends.base import StoreOptions
from idstore.backends.records import slot_number

# Index keys hold INDEX_TOP - slot, zero-padded: ascending keys = descending slots.
INDEX_TOP = 10**10 - 1


def session_name(lease_id: int) -> str:
    """A lease as idstore names sessions (hex, as etcdctl prints it)."""
    return f"{lease_id:x}"


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a range cover every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])  # prefixes here end in "/", never 0xff


def index_suffix(slot: int) -> bytes:
    return b"%010d" % (INDEX_TOP - slot)


def parse_slot(key: bytes, prefix: bytes) -> int | None:
    """The slot number of a key directly below the pool prefix; None for any other key."""
    return slot_number(key[len(prefix) :])


class Keys:
    """The keys of one idstore cluster (``options.prefix`` and ``options.cluster``)."""

    def __init__(self, options: StoreOptions) -> None:
        self._options = options
        self._base = f"{options.prefix.rstrip('/')}/{options.cluster}"

    def slot(self, pool: str, slot: int) -> bytes:
        return self._options.slot_path(pool, slot).encode()

    def pool(self, pool: str) -> bytes:
        """The prefix of a pool's slot keys (and of nothing else)."""
        return (self._options.pool_path(pool) + "/").encode()

    def queue(self, pool: str) -> bytes:
        return f"{self._base}/_queue/{pool}/".encode()

    def index(self, pool: str) -> bytes:
        return f"{self._base}/_slots/{pool}/".encode()

    def index_key(self, pool: str, slot: int) -> bytes:
        return self.index(pool) + index_suffix(slot)

    def index_range(self, pool: str, slots: range) -> tuple[bytes, bytes]:
        """[key, range_end) covering exactly the index keys of ``slots``."""
        prefix = self.index(pool)
        return prefix + index_suffix(slots.stop - 1), prefix + index_suffix(slots.start) + b"\0"

    def index_slot(self, pool: str, key: bytes) -> int:
        """The slot an index key stands for."""
        return INDEX_TOP - int(key[len(self.index(pool)) :])

    def ids(self, pool: str, node_id: str) -> bytes:
        return f"{self._base}/_ids/{pool}/{quote(node_id, safe='')}/".encode()

    def id_key(self, pool: str, node_id: str, slot: int) -> bytes:
        return self.ids(pool, node_id) + str(slot).encode()
