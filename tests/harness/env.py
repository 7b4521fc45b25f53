"""What the conformance suite needs from a running store, whatever the backend."""

from __future__ import annotations

import abc
import uuid
from dataclasses import replace

from idstore.backends.base import SlotStore, StoreOptions


class BackendEnv(abc.ABC):
    """A reachable store of one backend, plus the fault hooks tests need."""

    backend: str = ""

    def __init__(self, endpoints: tuple[str, ...], **option_overrides: object) -> None:
        self.endpoints = endpoints
        # A fresh cluster name per env keeps tests apart on a shared server.
        self.base = StoreOptions(endpoints=endpoints, cluster=f"t{uuid.uuid4().hex[:10]}")
        self.base = replace(self.base, **option_overrides)  # type: ignore[arg-type]

    def options(self, **overrides: object) -> StoreOptions:
        return replace(self.base, **overrides)  # type: ignore[arg-type]

    @abc.abstractmethod
    def expire(self, store: SlotStore) -> None:
        """Make the server expire ``store``'s current session now (as after a partition
        longer than the TTL). The store must then report LOST and, once it has a new
        session, CONNECTED."""


class MemoryEnv(BackendEnv):
    backend = "memory"

    def __init__(self) -> None:
        from idstore.backends.memory import new_endpoint

        super().__init__((new_endpoint(),))

    def expire(self, store: SlotStore) -> None:
        from idstore.backends.memory import MemoryStore

        assert isinstance(store, MemoryStore)
        store.expire_session()
