"""idstore's exception hierarchy.

Every error idstore raises derives from :class:`IdstoreError`. Backends translate
their client library's exceptions into these at the backend boundary
(``raise StoreUnavailable(...) from e``), so the allocator, the DNS frontend and the
CLI never see a kazoo, grpc or etcd3 exception.
"""

from __future__ import annotations


class IdstoreError(Exception):
    """Root of every error idstore raises."""


class ConfigError(IdstoreError):
    """Invalid configuration; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid {key} = {value!r}: {allowed}")


class BackendNotFound(IdstoreError):
    """No backend with that name is installed."""


class StoreError(IdstoreError):
    """Any failure reported by, or while talking to, the slot store."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (the message names the endpoints tried).

    Transient: the operation may or may not have been applied; retrying is safe
    because every SlotStore write is idempotent for the same session.
    """


class SessionLost(StoreError):
    """This node's session (etcd lease / ZooKeeper session) has expired.

    Every slot held under it is gone or about to be given away; claim again.
    """


class SlotTaken(StoreError):
    """The slot is held by someone else; ``owner`` is their claim when known."""

    def __init__(self, pool: str, slot: int, owner: object | None = None) -> None:
        self.pool = pool
        self.slot = slot
        self.owner = owner
        super().__init__(f"slot {pool}/{slot} is taken" + (f" by {owner}" if owner else ""))


class NotOwner(StoreError):
    """A release or re-claim found the slot no longer holds what we expected (fencing)."""


class PoolFull(IdstoreError):
    """Every slot of the pool is claimed."""

    def __init__(self, pool: str, limit: int) -> None:
        self.pool = pool
        self.limit = limit
        super().__init__(f"pool {pool!r} is full: all {limit} slots are claimed")
