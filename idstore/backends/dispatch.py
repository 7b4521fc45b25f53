"""Watch delivery, written once for every backend.

A backend learns of changes on its own threads (a gRPC stream reader, kazoo's
completion thread, a store's lock holder). Those threads must never run the watcher's
callbacks: a slow or raising callback would stall or kill them, and a callback run under
a store lock could deadlock. So every watch has an inbox and one dispatch thread:
backend threads only ``post`` what they saw; the dispatch thread turns it into
SlotEvents (the backend's ``_translate``), delivers them in order, and calls
``on_broken`` exactly once when the watch breaks, after which nothing more is delivered.
A cancelled watch reports nothing. A raising callback is logged and ignored.

A store keeps its live watches in a WatchRegistry, so that closing the store (or losing
its session) can cancel or break all of them.
"""

from __future__ import annotations

import abc
import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from idstore.backends.base import BrokenCallback, EventsCallback, SlotEvent

log = logging.getLogger(__name__)

Item = TypeVar("Item")


class WatchBroken(Exception):
    """Raised by a backend's hooks: events may have been missed; the watch must end."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WatchRegistry:
    """A store's live watches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: set[DispatchedWatch[Any]] = set()

    def add(self, watch: DispatchedWatch[Any]) -> None:
        with self._lock:
            self._watches.add(watch)

    def discard(self, watch: DispatchedWatch[Any]) -> None:
        with self._lock:
            self._watches.discard(watch)

    def snapshot(self) -> list[DispatchedWatch[Any]]:
        with self._lock:
            return list(self._watches)

    def cancel_all(self) -> None:
        for w in self.snapshot():
            w.cancel()

    def break_all(self, reason: str) -> None:
        """Every watch breaks (after what it already queued): the caller re-lists."""
        for w in self.snapshot():
            w.post_broken(reason)


class _Stop:
    """Inbox marker: the watch was cancelled."""


class _Broken:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class DispatchedWatch(abc.ABC, Generic[Item]):
    """One pool's watch: an inbox of backend items and the thread that delivers them.

    A backend subclasses it with ``_translate`` (one posted item -> its SlotEvents, or
    WatchBroken), and where needed ``_idle_wait``/``_on_idle`` (what to do when nothing
    arrived for a while), ``_order`` (a batch's final order) and ``_release`` (free the
    transport's resources once the watch ends).
    """

    def __init__(
        self,
        pool: str,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
        registry: WatchRegistry,
        thread_name: str,
    ) -> None:
        self.pool = pool
        self._on_events = on_events
        self._on_broken = on_broken
        self._registry = registry
        self._inbox: queue.Queue[Item | _Stop | _Broken] = queue.Queue()
        self._ended = threading.Event()
        self._end_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    # -- any thread ------------------------------------------------------------------

    def start_dispatch(self) -> None:
        """Register the watch with its store and start delivering."""
        self._registry.add(self)
        self._thread.start()

    def post(self, item: Item) -> None:
        """Hand one item to the dispatch thread (never blocks: callable from any thread)."""
        self._inbox.put(item)

    def post_broken(self, reason: str) -> None:
        """Break the watch once the items posted before are delivered."""
        self._inbox.put(_Broken(reason))

    def cancel(self) -> None:
        """Stop delivering; no callback runs after this returns."""
        if self._end():
            self._inbox.put(_Stop())

    @property
    def ended(self) -> bool:
        """Whether the watch was cancelled or broken (backend threads stop feeding it)."""
        return self._ended.is_set()

    # -- backend hooks ---------------------------------------------------------------

    @abc.abstractmethod
    def _translate(self, item: Item) -> Sequence[SlotEvent]:
        """The events one posted item stands for; WatchBroken when events were missed."""

    def _idle_wait(self) -> float | None:
        """Seconds to wait for an item before ``_on_idle``; None: wait for ever."""
        return None

    def _on_idle(self) -> None:
        """Nothing arrived within ``_idle_wait``; may raise WatchBroken."""

    def _order(self, events: list[SlotEvent]) -> Sequence[SlotEvent]:
        """A batch's events as delivered (default: as translated)."""
        return events

    def _release(self) -> None:
        """Free what the watch holds in the transport (called once, when it ends)."""

    # -- the dispatch thread ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                first = self._inbox.get(timeout=self._idle_wait())
            except queue.Empty:
                try:
                    self._on_idle()
                except WatchBroken as e:
                    self._break(e.reason)
                    return
                continue
            # Take every queued item too: one delivery for a burst.
            batch = [first]
            while not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            events: list[SlotEvent] = []
            for item in batch:
                if isinstance(item, _Stop):
                    return
                reason = self._apply(item, events)
                if reason is not None:
                    self._deliver(events)
                    self._break(reason)
                    return
            self._deliver(events)

    def _apply(self, item: Item | _Broken, events: list[SlotEvent]) -> str | None:
        """Add the item's events; the reason when it breaks the watch."""
        if isinstance(item, _Broken):
            return item.reason
        try:
            events.extend(self._translate(item))
        except WatchBroken as e:
            return e.reason
        except Exception as e:  # a bug or a failed read: re-listing recovers from both
            log.exception("watch of pool %s failed", self.pool)
            return f"watch of pool {self.pool} failed: {e!r}"
        return None

    def _deliver(self, events: list[SlotEvent]) -> None:
        if not events or self.ended:
            return
        try:
            self._on_events(self._order(events))
        except Exception:  # the watcher's bug must not end the watch
            log.exception("watch on_events callback failed")

    def _break(self, reason: str) -> None:
        if not self._end():
            return  # cancelled meanwhile: a cancelled watch reports nothing
        log.info("watch of pool %s broken: %s", self.pool, reason)
        try:
            self._on_broken(reason)
        except Exception:
            log.exception("watch on_broken callback failed")

    def _end(self) -> bool:
        """Mark the watch ended; True only for the one call that did."""
        with self._end_lock:
            if self._ended.is_set():
                return False
            self._ended.set()
        self._registry.discard(self)
        try:
            self._release()
        except Exception:
            log.exception("releasing the watch of pool %s failed", self.pool)
        return True
