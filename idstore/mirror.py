"""Keep a local copy of every pool's claims current, on any backend.

The rule, learnt the hard way with etcd watches that stall or drop events on reconnect:
never trust a watch alone. A pool is re-listed (and watched again from the listing)
whenever its watch breaks, whenever the store comes back to CONNECTED, and periodically
as a safety net. This logic lives here, above the SlotStore line, so no backend repeats it.

The mirror passes claims on and keeps no copy of them: its listeners (the ClusterView,
which holds the one copy of the claims that DNS, /status and /metrics read, and the
allocator, which only looks at its own slot) get each listing as a whole and each
watch batch as a change. Listings and watch batches of a pool reach the listeners one
at a time and in the order the store produced them (``_emit_lock``): a batch from a
watch the mirror has already replaced is dropped, never delivered after the listing
that replaced it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from idstore.backends.base import (
    Claim,
    ConnectionState,
    EventType,
    SlotEvent,
    SlotStore,
    WatchHandle,
)
from idstore.errors import IdstoreError

log = logging.getLogger(__name__)

# A re-list of a big pool replaces every Claim (the store's reply is parsed afresh), and
# the freed memory of the old ones mostly stays with the process: at 10,000 claims each
# periodic re-list left about 4 MB more resident. Handing free heap pages back to the OS
# after such a re-list (glibc's malloc_trim, a few ms) keeps the resident size flat.
_TRIM_AFTER = 1000  # claims in a listing from which a re-list trims the heap


def _load_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_malloc_trim = _load_trim()


def trim_heap() -> None:
    """Return free heap memory to the OS where the C library can (glibc)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


# listener(pool, changed slots (None = freed), replace, revision): with replace=True the
# mapping is the whole pool (after a re-list) and slots missing from it are free; revision
# is the store revision the news reflects.
ClaimsListener = Callable[[str, Mapping[int, Claim | None], bool, int], None]
StaleListener = Callable[[float | None], None]


class PoolMirror:
    """Mirrors the claims of ``pools`` from ``store`` into listeners."""

    def __init__(
        self,
        store: SlotStore,
        pools: Sequence[str],
        relist_interval: float = 30.0,
    ) -> None:
        self.store = store
        self.pools = list(pools)
        self.relist_interval = relist_interval
        self._sizes: dict[str, int] = {p: 0 for p in self.pools}  # claims at the last list
        self._watches: dict[str, WatchHandle] = {}
        self._generation: dict[str, object] = {}  # identifies each pool's current watch
        self._dirty: set[str] = set(self.pools)
        self._listeners: list[ClaimsListener] = []
        self._stale_listeners: list[StaleListener] = []
        self._stale_since: float | None = time.monotonic()
        self._cond = threading.Condition()
        # Held from "is this the pool's current watch?" to the end of the listeners' calls,
        # so a listing and the batches of the watch it replaced cannot overtake each other.
        self._emit_lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="mirror", daemon=True)
        self.resyncs = 0  # full re-lists done (for metrics and tests)

    # -- public ----------------------------------------------------------------------

    def add_listener(self, fn: ClaimsListener) -> None:
        self._listeners.append(fn)

    def add_stale_listener(self, fn: StaleListener) -> None:
        self._stale_listeners.append(fn)

    def start(self) -> None:
        self.store.add_listener(self._on_state)
        self._thread.start()

    def stop(self) -> None:
        self.store.remove_listener(self._on_state)
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for handle in list(self._watches.values()):
            handle.cancel()
        self._thread.join(5)

    @property
    def stale_since(self) -> float | None:
        """time.monotonic() since which the copy is not confirmed by the store, or None."""
        return self._stale_since

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._dirty and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return not self._dirty

    def resync(self, pool: str | None = None, reason: str = "asked") -> None:
        """Re-list ``pool`` (every pool when None) soon, on the mirror's thread."""
        with self._cond:
            targets = [pool] if pool else self.pools
            log.debug("resync %s: %s", targets, reason)
            self._dirty.update(targets)
            self._cond.notify_all()

    # -- store callbacks (backend threads: be quick) --------------------------------------

    def _on_state(self, state: ConnectionState) -> None:
        if state is ConnectionState.CONNECTED:
            self.resync(reason="store connected")
        else:
            self._mark_stale()

    def _on_events(self, pool: str, gen: object, events: Sequence[SlotEvent]) -> None:
        changed: dict[int, Claim | None] = {}
        for ev in events:
            changed[ev.slot] = ev.claim if ev.type is EventType.PUT else None
        revision = max(ev.revision for ev in events)
        with self._emit_lock:
            # Events of a watch we already replaced must not overwrite a newer listing.
            if self._generation.get(pool) is not gen:
                return
            self._emit(pool, changed, False, revision)

    def _on_broken(self, pool: str, reason: str) -> None:
        log.info("watch of pool %s broken (%s): re-listing", pool, reason)
        self.resync(pool, reason)

    # -- the mirror thread ---------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        next_relist = time.monotonic() + self.relist_interval
        while True:
            with self._cond:
                while not self._dirty and not self._stopped:
                    left = next_relist - time.monotonic()
                    if left <= 0:
                        self._dirty.update(self.pools)
                        break
                    self._cond.wait(left)
                if self._stopped:
                    return
                pools = sorted(self._dirty)
            if self.store.state is not ConnectionState.CONNECTED:
                self._sleep(0.2)
                continue
            try:
                for pool in pools:
                    self._relist(pool)
                backoff = 0.1
                next_relist = time.monotonic() + self._relist_pause()
            except IdstoreError as e:
                log.warning("re-listing pools failed (%s); retrying in %.1fs", e, backoff)
                self._sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)

    def _relist_pause(self) -> float:
        """Seconds until the next safety re-list.

        Every node re-lists every pool, so the store serves N full lists per interval:
        with 10,000 nodes a fixed 30 s would be ~333 lists of 10,000 keys per second.
        The pause grows with the number of claims (30 ms per claim: 300 s at 10,000) and
        is jittered so nodes booted together do not re-list together.
        """
        with self._cond:
            claims = sum(self._sizes.values())
        return max(self.relist_interval, claims * 0.03) * random.uniform(0.8, 1.2)

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            if not self._stopped:
                self._cond.wait(seconds)

    def _relist(self, pool: str) -> None:
        old = self._watches.pop(pool, None)
        if old is not None:
            old.cancel()
        with self._cond:
            self._dirty.discard(pool)  # a break reported from now on must list again
        listing = self.store.list(pool)
        gen = object()
        with self._cond:
            self._sizes[pool] = len(listing.claims)
        # Emit the listing before the watch starts, so no event can precede it.
        with self._emit_lock:
            self._generation[pool] = gen
            self._emit(pool, dict(listing.claims), True, listing.revision)
        handle = self.store.watch(
            listing,
            lambda events: self._on_events(pool, gen, events),
            lambda reason: self._on_broken(pool, reason),
        )
        with self._cond:
            self._watches[pool] = handle
            self.resyncs += 1
            fresh = not self._dirty
            self._cond.notify_all()
        if fresh and self.store.state is ConnectionState.CONNECTED:
            self._mark_fresh()
        if len(listing.claims) >= _TRIM_AFTER:
            del listing
            trim_heap()

    # -- notifications ---------------------------------------------------------------

    def _emit(
        self, pool: str, changed: Mapping[int, Claim | None], replace: bool, revision: int
    ) -> None:
        for fn in self._listeners:
            try:
                fn(pool, changed, replace, revision)
            except Exception:
                log.exception("mirror listener %r failed", fn)

    def _mark_stale(self) -> None:
        if self._stale_since is None:
            self._stale_since = time.monotonic()
            self._notify_stale()

    def _mark_fresh(self) -> None:
        if self._stale_since is not None:
            self._stale_since = None
            self._notify_stale()

    def _notify_stale(self) -> None:
        for fn in self._stale_listeners:
            try:
                fn(self._stale_since)
            except Exception:
                log.exception("stale listener %r failed", fn)
