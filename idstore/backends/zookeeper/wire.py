"""The request layer every operation goes through: the live client, reporting the
requests sent, waiting for replies, and kazoo's exceptions turned into idstore's."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import WatchedEvent

from idstore.backends.base import Claim, ConnectionState, SlotRecord
from idstore.backends.records import read_record, slot_number
from idstore.backends.zookeeper.paths import Paths, claim_of
from idstore.backends.zookeeper.session import Session
from idstore.errors import SessionLost, StoreError, StoreUnavailable


class Wire:
    """Requests on one store's session. ``send`` reports the ZooKeeper requests idstore
    issues to ``sent`` (the store's ``SlotStore._sent``, so ``wire_requests`` means the
    same on every backend); kazoo's pings and idstore's heartbeats are keepalives and
    never reported."""

    def __init__(self, session: Session, paths: Paths, sent: Callable[[int], None]) -> None:
        self.session = session
        self.paths = paths
        self.options = session.options
        self.acl = session.acl
        self._sent = sent
        self._known_pools: set[str] = set()

    @property
    def hosts(self) -> str:
        return self.session.spec.hosts

    def client(self) -> KazooClient | None:
        return self.session.client

    def live(self, what: str) -> KazooClient:
        client = self.session.client
        if client is None:
            raise StoreUnavailable(f"{what}: the ZooKeeper store is not open")
        return client

    def connected(self, what: str) -> KazooClient:
        """Claims need a session we know is alive: none while SUSPENDED or LOST."""
        client = self.live(what)
        state = self.session.store.state
        if state is ConnectionState.LOST:
            raise SessionLost(f"{what}: ZooKeeper session {self.session.session_id} is lost")
        if state is not ConnectionState.CONNECTED:
            raise StoreUnavailable(f"{what}: ZooKeeper {self.hosts} is unreachable")
        return client

    def send(self, n: int = 1) -> None:
        self._sent(n)

    def wait(self, result: Any) -> Any:
        return result.get(timeout=self.options.request_timeout)

    @contextlib.contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """Turn kazoo's exceptions into idstore's at this boundary."""
        try:
            yield
        except (ConnectionClosedError, ConnectionLoss, OperationTimeoutError) as e:
            raise StoreUnavailable(f"{what}: ZooKeeper {self.hosts}: {e!r}") from e
        except KazooTimeoutError as e:
            raise StoreUnavailable(
                f"{what}: no answer from ZooKeeper {self.hosts} "
                f"within {self.options.request_timeout}s"
            ) from e
        except SessionExpiredError as e:
            raise SessionLost(f"{what}: ZooKeeper session {self.session.session_id} expired") from e
        except NoAuthError as e:
            raise StoreError(
                f"{what}: not permitted by the znode's ACL; idstore's tree can only be "
                "modified with the credentials that created it (store username/password)"
            ) from e
        except AuthFailedError as e:
            raise StoreError(f"{what}: ZooKeeper rejected the digest credentials") from e
        except KazooException as e:
            raise StoreError(f"{what}: ZooKeeper error {e!r}") from e

    def ensure_pool(self, client: KazooClient, pool: str) -> None:
        if pool in self._known_pools:
            return
        self.send(2)  # exists + create at the least
        client.ensure_path(self.paths.pool(pool), acl=self.acl)
        self._known_pools.add(pool)

    def forget_pool(self, pool: str) -> None:
        self._known_pools.discard(pool)

    def read_claim(self, client: KazooClient, pool: str, slot: int) -> Claim | None:
        self.send()
        try:
            data, stat = self.wait(client.get_async(self.paths.slot(pool, slot)))
        except NoNodeError:
            return None
        return claim_of(pool, slot, SlotRecord.decode(data), stat)  # a claim must read it

    def fetch(
        self,
        client: KazooClient,
        pool: str,
        names: Sequence[str] | set[int],
        watch: Callable[[WatchedEvent], None] | None,
    ) -> dict[int, Claim]:
        """Read many slots with pipelined gets; slots gone meanwhile are left out."""
        slots = sorted(s for s in (slot_number(str(n)) for n in names) if s is not None)
        pending = [(s, client.get_async(self.paths.slot(pool, s), watch=watch)) for s in slots]
        self.send(len(pending))
        claims: dict[int, Claim] = {}
        for slot, req in pending:
            try:
                data, stat = self.wait(req)
            except NoNodeError:
                continue
            record = read_record(data, self.paths.slot(pool, slot))
            if record is not None:
                claims[slot] = claim_of(pool, slot, record, stat)
        return claims
