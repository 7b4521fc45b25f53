"""One running idstore node: store session, mirror, allocator and DNS, wired together.

Order of start-up: bind DNS first (a port in use fails fast, before any slot is taken),
then connect to the store (retrying with progress on stderr), then mirror the pools and
claim. Shutdown releases the slot before the session is revoked, so peers see the name
go at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from typing import Any

from idstore import addresses as addrs
from idstore import backends
from idstore.allocator import Allocator, Status
from idstore.backends.base import Claim, ConnectionState, SlotRecord, SlotStore
from idstore.config import Settings
from idstore.dns.server import DnsServer
from idstore.dns.zone import Zone
from idstore.errors import ConfigError, IdstoreError, StoreUnavailable
from idstore.mirror import PoolMirror
from idstore.view import ClusterView

log = logging.getLogger(__name__)


def resolve_addresses(settings: Settings) -> tuple[str, ...]:
    if settings.addresses:
        return settings.addresses
    found = addrs.detect(settings.store.endpoints)
    if not found:
        raise ConfigError(
            "addresses", [], "none given and no usable address detected; pass --address"
        )
    return found


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = settings.pool_settings()
        self.addresses = resolve_addresses(settings)
        ports = {"app": self.pool.port} if self.pool.port else {}
        self.record = SlotRecord(
            node_id=settings.node_id,
            nonce=uuid.uuid4().hex,
            addresses=self.addresses,
            ports=ports,
        )
        self.store: SlotStore = backends.create(settings.backend, settings.store)
        self.view = ClusterView(settings.pools)
        self.zone = Zone(settings.dns, settings.pools)
        self.mirror = PoolMirror(self.store, [p.name for p in settings.pools])
        self.allocator = Allocator(self.store, self.pool, self.record)
        self.dns = DnsServer(self.zone, settings.dns)
        self.started = time.monotonic()
        self._stop = asyncio.Event()
        self._wire()

    def _wire(self) -> None:
        self.mirror.add_listener(
            lambda pool, changed, replace, _rev: self.view.apply(pool, changed, replace=replace)
        )
        self.mirror.add_listener(self.allocator.on_claims)
        self.mirror.add_stale_listener(self.zone.set_stale)
        self.view.subscribe(self.zone.update)
        self.allocator.add_listener(self._on_hold)

    def _on_hold(self, status: Status, claim: Claim | None) -> None:
        self.zone.set_identity(self.pool.name_of(claim.slot) if claim else None)

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        await self.dns.start()
        log.info("DNS for zone %s on %s", self.settings.dns.zone, _fmt_listen(self.dns.bound))
        try:
            if not await self._connect():
                return
            self.mirror.start()
            self.allocator.start()
            await self._stop.wait()
        finally:
            await self.shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def _connect(self) -> bool:
        """Open the store session, retrying with backoff until it works or we are stopped."""
        delay = 1.0
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                await loop.run_in_executor(None, self.store.open)
                return True
            except StoreUnavailable as e:
                log.warning("store not reachable (%s); retrying in %.0fs", e, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 15.0)
        return False

    async def shutdown(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown_store)
        await self.dns.stop()

    def _shutdown_store(self) -> None:
        held = self.allocator.claim
        if self.allocator.status is not Status.STARTING or held is not None:
            self.allocator.stop(release=True)
        if held is not None:
            log.info("released %s", self.pool.name_of(held.slot))
        self.mirror.stop()
        try:
            self.store.close(release=True)
        except IdstoreError as e:
            log.warning("closing the store session: %s", e)

    # -- introspection (whoami, /ready) ----------------------------------------------

    def status(self) -> dict[str, Any]:
        claim = self.allocator.claim
        return {
            "pool": self.pool.name,
            "slot": claim.slot if claim else None,
            "name": self.pool.name_of(claim.slot) if claim else None,
            "addresses": list(self.addresses),
            "node_id": self.record.node_id,
            "state": self.allocator.status.value,
            "store": self.store.state.value,
            "backend": self.store.name,
        }

    def ready(self) -> tuple[bool, str]:
        if self.allocator.claim is None:
            return False, f"no slot held ({self.allocator.status.value})"
        if self.store.state is not ConnectionState.CONNECTED:
            return False, f"store {self.store.state.value}"
        return True, "ok"


def _fmt_listen(bound: list[tuple[str, int]]) -> str:
    return ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in bound)
