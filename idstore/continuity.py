"""Between the mirror and the view: names of live nodes survive a store outage, and
this node's own claim is in its own answers the moment it is made.

Why. A store outage ends with a burst of frees that are not departures: ZooKeeper
sessions that expired while the store was down (or that a node presumed lost and
replaced) take their ephemeral slots with them, and the nodes behind them claim the
same slots again a moment later, once their new sessions exist. Passed on as they come,
those frees make every peer answer NXDOMAIN for a live node's name for the length of a
reconnect and a claim, and resolvers cache that NXDOMAIN for the negative TTL.

The rule. From the moment this node's copy of the claims is no longer confirmed by the
store (the mirror reports it stale: the connection dropped, the session was lost) until
the store has been confirmed again for ``grace`` seconds (``dns.reclaim_grace``), a
freed slot keeps its last confirmed owner in the view. A claim of the slot (by the same
node or another) replaces it at once; when the window closes, every slot still freed
is removed. Outside such a window frees pass at once, so a crashed node's name goes
when the store frees it (its ttl) and a cleanly stopped node's at once; a departure
during or just after an outage goes at most ``grace`` seconds after the store came
back. ``grace = 0`` turns the rule off.

Own claim. A node that has just claimed a slot serves it at once, before its watch
reports it (a node that just started may be minutes of listing behind under load), and
news older than that claim (a listing read before it) does not take it away again.

The allocator keeps listening to the mirror directly: it must see frees as they are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from idstore.backends.base import Claim
from idstore.view import ClusterView

log = logging.getLogger(__name__)


class NameKeeper:
    """Feeds mirror news into ``view``; see the module docstring."""

    def __init__(
        self, view: ClusterView, grace: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.view = view
        self.grace = grace
        self._clock = clock
        self._lock = threading.Lock()  # guards everything below and orders view.apply calls
        self._stale = False  # the mirror's copy is unconfirmed right now
        self._window_ends: float | None = None  # monotonic end of the grace after fresh
        self._deferred: dict[str, set[int]] = {}  # pool -> freed slots still shown
        self._pinned: dict[str, Claim] = {}  # pool -> this node's own claim
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="name-keeper", daemon=True)
        self._thread.start()
        self.kept = 0  # frees held back (for tests and logs)

    # -- inputs ----------------------------------------------------------------------

    def on_claims(
        self, pool: str, changed: Mapping[int, Claim | None], replace: bool, revision: int
    ) -> None:
        """Mirror listener: pass the news on, holding back frees inside the window."""
        with self._lock:
            claims = dict(changed)
            own = self._pinned.get(pool)
            if own is not None and revision < own.version:
                # Older than our own claim: it cannot know about it, so it says nothing
                # of our slot (a listing without it is not a free).
                claims[own.slot] = own
            if replace:
                shown = set(self.view.members(pool))
                freed = {s for s in shown if s not in claims}
                claims.update(dict.fromkeys(freed))
            deferred = self._deferred.setdefault(pool, set())
            for slot, claim in list(claims.items()):
                if claim is not None:
                    deferred.discard(slot)
                elif self._holding():
                    if slot not in deferred:
                        self.kept += 1
                    deferred.add(slot)
                    del claims[slot]
            if claims:
                self.view.apply(pool, claims)

    def on_stale(self, since: float | None) -> None:
        """Mirror stale listener: None once the store confirms the copy again."""
        with self._lock:
            if since is not None:
                self._stale = True
                self._window_ends = None
                return
            if not self._stale:
                return
            self._stale = False
            self._window_ends = self._clock() + self.grace
            self._wake.notify_all()

    def pin(self, pool: str, claim: Claim | None) -> None:
        """This node's claim of ``pool`` (None: it holds none now): served at once."""
        with self._lock:
            if claim is None:
                self._pinned.pop(pool, None)
                return
            self._pinned[pool] = claim
            self._deferred.get(pool, set()).discard(claim.slot)
            self.view.apply(pool, {claim.slot: claim})

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(5)

    # -- the window ------------------------------------------------------------------

    def _holding(self) -> bool:
        """Inside the window; the caller holds the lock."""
        if self.grace <= 0:
            return False
        return self._stale or (self._window_ends is not None and self._clock() < self._window_ends)

    def tick(self) -> float | None:
        """Close the window if its time has come; seconds until it closes, or None."""
        with self._lock:
            ends = self._window_ends
            if ends is None:
                return None
            left = ends - self._clock()
            if left > 0:
                return left
            self._window_ends = None
            self._flush()
            return None

    def _run(self) -> None:
        while True:
            left = self.tick()
            with self._lock:
                if self._closed:
                    return
                if left is None and self._window_ends is None:
                    self._wake.wait()
                elif left is not None:
                    self._wake.wait(left)

    def _flush(self) -> None:
        """The window closed: remove every slot still freed; the caller holds the lock."""
        for pool, slots in self._deferred.items():
            if slots:
                log.info(
                    "store stable for %.1fs: %d name(s) of pool %s not claimed again, removed",
                    self.grace,
                    len(slots),
                    pool,
                )
                self.view.apply(pool, dict.fromkeys(slots))
                slots.clear()
