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
from collections.abc import Callable
from dataclasses import replace

from idstore import addresses as addrs
from idstore import backends, logs
from idstore.allocator import Allocator, Status
from idstore.backends.base import Claim, ConnectionState, SlotRecord, SlotStore
from idstore.config import DnsSettings, Settings
from idstore.continuity import NameKeeper
from idstore.dns.forward import Forwarder
from idstore.dns.server import DnsServer
from idstore.dns.zone import Zone
from idstore.errors import ConfigError, IdstoreError, StoreUnavailable
from idstore.http import OpsServer
from idstore.metrics import Counters
from idstore.mirror import PoolMirror
from idstore.portpick import PortPicker
from idstore.status import MemberInfo, NodeReport, NodeStatus, PoolUsage
from idstore.systemd import Notifier
from idstore.view import ClusterView

# What SIGHUP can change without giving up the slot; everything else needs a restart.
RELOADABLE_DNS = (
    "ttl",
    "negative_ttl",
    "stale_ttl",
    "max_stale",
    "forward",
    "forward_timeout",
    "log_queries",
    "transfer_allow",
)

# How long a process displaced by a duplicate identity keeps answering /status (state
# "duplicate") before it exits: ``idstore wait`` / ``whoami`` polling it see why it went.
DUPLICATE_LINGER = 3.0

# The zone's "stale since" before the store ever confirmed the view (see _wire).
NEVER_CONFIRMED = float("-inf")

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
    def __init__(
        self, settings: Settings, reload_source: Callable[[], Settings] | None = None
    ) -> None:
        self.settings = settings
        self.reload_source = reload_source
        self.pool = settings.pool_settings()
        self.addresses = resolve_addresses(settings)
        self.ports = PortPicker(self.pool, self.addresses, settings.node_id)
        # Fixed ports are published as they are; auto / range ones are chosen at start
        # and again, sticky, before the first claim (the allocator asks self.ports).
        fixed = {s.name: s.fixed for s in self.pool.ports if s.fixed is not None}
        self.record = SlotRecord(
            node_id=settings.node_id,
            nonce=uuid.uuid4().hex,
            addresses=self.addresses,
            ports=fixed,
        )
        self.store: SlotStore = backends.create(settings.backend, settings.store)
        self.view = ClusterView(settings.pools)
        self.keeper = NameKeeper(self.view, settings.dns.reclaim_grace)
        self.counters = Counters()
        self.notifier = Notifier()
        self.started_at = time.time()
        self.http: OpsServer | None = None
        self._mirroring = False
        self.zone = Zone(settings.dns, settings.pools)
        # Timed by the DNS server itself, one answer in N: timing every answer costs ~12 %.
        self.dns_durations = self.zone.stats.durations
        self.mirror = PoolMirror(self.store, [p.name for p in settings.pools])
        self.allocator = Allocator(
            self.store,
            self.pool,
            self.record,
            prefer_slot=settings.prefer_slot,
            require=settings.prefer == "require",
            choose_ports=self.ports.choose if self.ports.needed else None,
        )
        self.dns = DnsServer(self.zone, settings.dns)
        self.started = time.monotonic()
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set when another process with our identity took our slot over: the process then
        # exits with its own status (cli.common.EXIT_DUPLICATE), so that a supervisor
        # does not restart it into the same conflict.
        self.displaced = False
        self._wire()

    def _wire(self) -> None:
        # The view is fed through the keeper (names survive a store outage, our own claim
        # shows at once); the allocator hears the mirror directly, frees included.
        self.mirror.add_listener(self.keeper.on_claims)
        self.mirror.add_listener(self.allocator.on_claims)
        # Until the first listing the view is empty, not confirmed: answering NXDOMAIN for
        # every name would tell resolvers that live nodes do not exist (and they would
        # cache it). Stale since forever is past any max_stale: SERVFAIL until the mirror
        # is fresh.
        self.zone.set_stale(NEVER_CONFIRMED)
        self.mirror.add_stale_listener(self.zone.set_stale)
        self.mirror.add_stale_listener(self.keeper.on_stale)
        self.view.subscribe(self.zone.update)
        self.allocator.add_listener(self._on_hold)
        self.store.add_listener(self._on_store_state)

    def _on_hold(self, status: Status, claim: Claim | None) -> None:
        name = self.pool.name_of(claim.slot) if claim else None
        self.keeper.pin(self.pool.name, claim if status is Status.HELD else None)
        self.zone.set_identity(name, self.holds_live_session)
        if status is Status.DUPLICATE:
            self._displaced()
        if claim is not None:
            # DNS is bound before the store is even contacted, so a claim means both.
            self.notifier.ready(f"holding {name} (slot {claim.slot} of pool {self.pool.name})")
        elif status is Status.WAITING:
            self.notifier.status(f"waiting: pool {self.pool.name} is full")
        elif status in (Status.LOST, Status.DUPLICATE):
            self.notifier.status(f"{status.value}: no slot held")

    def _on_store_state(self, state: ConnectionState) -> None:
        self.counters.inc("store_state_changes", {"state": state.value})
        if state is not ConnectionState.CONNECTED:
            self.notifier.status(f"store {state.value}")
        elif self.allocator.claim is not None:
            name = self.pool.name_of(self.allocator.claim.slot)
            self.notifier.status(f"holding {name} (slot {self.allocator.claim.slot})")

    # -- lifecycle -------------------------------------------------------------------

    def _displaced(self) -> None:
        """Another live process with our identity holds the slot: say so, then exit."""
        self.displaced = True
        self.notifier.status(
            f"duplicate node identity {self.record.node_id!r}: another process holds the "
            f"slot; exiting in {DUPLICATE_LINGER:g}s"
        )
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.call_later, DUPLICATE_LINGER, self._stop.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.ports.needed:
            # A range with no free port fails here (exit 1), before DNS or the store;
            # the claim re-checks, preferring an earlier claim's port.
            log.info("free ports now: %s", self.ports.choose())
        await self.dns.start()
        log.info("DNS for zone %s on %s", self.settings.dns.zone, _fmt_listen(self.dns.bound))
        try:
            self._start_http()
            self.notifier.status("connecting to the store")
            if not await self._connect():
                return
            self.mirror.start()
            self._mirroring = True
            self.allocator.start()
            await self._stop.wait()
        finally:
            await self.shutdown()

    def _start_http(self) -> None:
        if self.settings.http is not None:
            self.http = OpsServer(self, *self.settings.http)
            self.http.start()

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
        self.notifier.stopping()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown_store)
        await self.dns.stop()
        if self.http is not None:
            self.http.stop()

    def _shutdown_store(self) -> None:
        self.keeper.close()
        held = self.allocator.claim
        if self.allocator.status is not Status.STARTING or held is not None:
            self.allocator.stop(release=True)
        if held is not None:
            log.info("released %s", self.pool.name_of(held.slot))
        if not self._mirroring:
            # Stopped before the store answered (or a port was taken): nothing to release,
            # and the mirror's thread never started, so it cannot be joined.
            return
        self.mirror.stop()
        try:
            self.store.close(release=True)
        except IdstoreError as e:
            log.warning("closing the store session: %s", e)

    # -- introspection (whoami, /ready) ----------------------------------------------

    def status(self) -> NodeStatus:
        """This node and every claimed name of every pool: the /status document."""
        claim = self.allocator.claim
        if claim is not None and not self.holds_live_session():
            claim = None  # whoami must not claim a slot the session may have lost
        state = self.allocator.status.value if claim or self.allocator.claim is None else "lost"
        cluster = {
            p.name: tuple(
                MemberInfo(m.pool, m.slot, m.name, m.addresses, m.node_id, dict(m.ports))
                for _, m in sorted(self.view.members(p.name).items())
            )
            for p in self.settings.pools
        }
        return NodeStatus(
            pool=self.pool.name,
            slot=claim.slot if claim else None,
            name=self.pool.name_of(claim.slot) if claim else None,
            addresses=self.addresses,
            node_id=self.record.node_id,
            ports=dict(claim.record.ports) if claim else {},
            state=state,
            store=self.store.state.value,
            backend=self.store.name,
            cluster=cluster,
        )

    def report(self) -> NodeReport:
        """Every figure /metrics renders, read now."""
        claim = self.allocator.claim
        store = self.store
        return NodeReport(
            started_at=self.started_at,
            pool=self.pool.name,
            slot=claim.slot if claim is not None else None,
            allocation=self.allocator.status.value,
            claim_attempts=self.allocator.claim_attempts,
            pools=tuple(
                PoolUsage(p.name, len(self.view.members(p.name)), p.limit)
                for p in self.settings.pools
            ),
            backend=store.name,
            store_state=store.state.value,
            store_ops=store.ops,
            renewals=_counted(getattr(store, "renewals", None)),
            renewal_failures=_counted(getattr(store, "renewal_failures", None)),
            state_changes={
                lbl.get("state", ""): v for lbl, v in self.counters.items("store_state_changes")
            },
            mirror_resyncs=self.mirror.resyncs,
            dns=self.zone.stats.snapshot(),
            dns_durations=self.dns_durations.samples(),
        )

    def holds_live_session(self) -> bool:
        """Is the session behind our claim surely alive right now? Asked before asserting
        our identity, so a resumed (paused) process never asserts a slot it may have lost
        in the moment before its backend reports LOST."""
        return time.monotonic() < self.store.session_valid_until()

    def ready(self) -> tuple[bool, str]:
        if self.allocator.claim is None:
            return False, f"no slot held ({self.allocator.status.value})"
        if not self.holds_live_session():
            return False, "session past its deadline (LOST pending)"
        if self.store.state is not ConnectionState.CONNECTED:
            return False, f"store {self.store.state.value}"
        return True, "ok"

    # -- SIGHUP ----------------------------------------------------------------------

    def request_reload(self) -> None:
        """Re-read the configuration and apply what can change while the slot is held."""
        if self.reload_source is None:
            log.warning("SIGHUP: nothing to reload from")
            return
        self.notifier.reloading()
        try:
            new = self.reload_source()
        except IdstoreError as e:  # a broken file must not cost the running node
            log.error("SIGHUP: configuration not reloaded: %s", e)
        else:
            changed, ignored = self.reload(new)
            if ignored:
                log.warning("SIGHUP: changed but needs a restart: %s", ", ".join(ignored))
            if changed:
                log.info("SIGHUP: reloaded %s", "; ".join(changed))
            else:
                log.info("SIGHUP: nothing to reload (log level, DNS TTLs, forwarders unchanged)")
        self.notifier.reloaded()

    def reload(self, new: Settings) -> tuple[list[str], list[str]]:
        """Apply ``new``'s reloadable settings; return (what changed, what was ignored)."""
        old = self.settings
        changed = [
            f"{key} {getattr(old, key)} -> {getattr(new, key)}"
            for key in ("log_level", "log_format")
            if getattr(old, key) != getattr(new, key)
        ]
        if changed:
            logs.setup(new.log_level, new.log_format)
        dns = replace(old.dns, **{k: getattr(new.dns, k) for k in RELOADABLE_DNS})
        changed += [
            f"dns.{k} {_show(getattr(old.dns, k))} -> {_show(getattr(dns, k))}"
            for k in RELOADABLE_DNS
            if getattr(old.dns, k) != getattr(dns, k)
        ]
        if dns != old.dns:
            self._apply_dns(dns)
        self.settings = replace(old, log_level=new.log_level, log_format=new.log_format, dns=dns)
        return changed, _needs_restart(self.settings, new)

    def _apply_dns(self, dns: DnsSettings) -> None:
        self.zone.reconfigure(dns)
        self.dns.forwarder = Forwarder.from_settings(dns.forward, dns.forward_timeout, dns.listen)


def _needs_restart(running: Settings, new: Settings) -> list[str]:
    out = [
        key
        for key in (
            "backend",
            "store",
            "pools",
            "pool",
            "node_id",
            "addresses",
            "http",
            "prefer_slot",
            "prefer",
        )
        if getattr(running, key) != getattr(new, key)
    ]
    out += [f"dns.{k}" for k, v in vars(new.dns).items() if getattr(running.dns, k) != v]
    return out


def _counted(value: object) -> float | None:
    """A backend's counter, or None where it keeps none (not every backend counts its
    lease / session renewals; a zero would read as "no renewals happened")."""
    return value if isinstance(value, int | float) else None


def _show(value: object) -> str:
    return ",".join(value) or "none" if isinstance(value, tuple) else str(value)


def _fmt_listen(bound: list[tuple[str, int]]) -> str:
    return ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in bound)
