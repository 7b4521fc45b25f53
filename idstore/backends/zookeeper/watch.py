"""Watching a pool: a children watch on the pool plus a data watch per slot.

``PoolWatch`` is ZooKeeper's part: it chains requests from kazoo's threads and posts
their results as ``_Result`` items. The inbox, dispatch thread, batching, break-once and
guarded callbacks are the shared ``DispatchedWatch``'s (idstore.backends.dispatch);
``_translate`` turns a result into events and ``_order`` keeps revisions non-decreasing.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType as ZkEventType
from kazoo.protocol.states import WatchedEvent

from idstore.backends.base import (
    BrokenCallback,
    Claim,
    EventsCallback,
    EventType,
    Listing,
    SlotEvent,
)
from idstore.backends.dispatch import DispatchedWatch, WatchBroken, WatchRegistry
from idstore.backends.records import read_record, slot_number
from idstore.backends.zookeeper.paths import claim_of
from idstore.backends.zookeeper.wire import Wire
from idstore.errors import StoreError

log = logging.getLogger(__name__)

# Free slots read ahead with every re-listing of a pool (see PoolWatch._speculate).
# Each read that misses is one more response the connection thread must take (its
# GIL hand-off costs milliseconds on a busy node) before the read of the slot the
# listing names: the lowest free slot is where a dense pool's next claim lands.
SPECULATIVE_READS = 1


@dataclass(frozen=True)
class _Result:
    """What kazoo's threads hand to a watch's thread."""

    kind: str  # listing | slot | error
    slots: frozenset[int] | set[int] = frozenset()
    slot: int | None = None
    claim: Claim | None = None
    revision: int = 0
    reason: str = ""
    pending: dict[int, Any] = field(default_factory=dict)  # listing: reads of new slots


@dataclass
class _Round:
    """One re-listing and the speculative reads sent right behind it.

    ``lock`` is held while the requests are issued, so the listing's callback (which
    may run before the issuing returns) sees every read; a read the listing adopts as
    one of its new slots is delivered with it (``adopted``), not on its own. Re-entrant:
    a stopped kazoo handler runs a failed request's callback inline, on our thread."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    reads: dict[int, Any] = field(default_factory=dict)
    adopted: set[int] = field(default_factory=set)


def _with_revision(event: SlotEvent, revision: int) -> SlotEvent:
    return SlotEvent(event.type, event.pool, event.slot, event.claim, revision)


class PoolWatch(DispatchedWatch[_Result]):
    """One pool's watch.

    ZooKeeper keeps no history, so a slot created and deleted before we read it is never
    seen; to make that window as short as possible, requests are chained from kazoo's
    own threads without a detour: a fired watch at once re-reads (re-arming itself), and
    a listing at once fetches the slots it has not seen. Responses arrive on kazoo's
    single completion thread in the order the server processed the requests; that thread
    only queues them, and the dispatch thread turns them, in that order, into events.
    """

    def __init__(
        self,
        wire: Wire,
        since: Listing,
        on_events: EventsCallback,
        on_broken: BrokenCallback,
        registry: WatchRegistry,
    ) -> None:
        super().__init__(since.pool, on_events, on_broken, registry, f"zkwatch-{since.pool}")
        self._wire = wire
        self._path = wire.paths.pool(since.pool)
        self._known: dict[int, Claim] = dict(since.claims)  # as delivered (watch thread)
        self._tracked: set[int] = set()  # slots fetched with a data watch (kazoo threads)
        self._tracked_lock = threading.Lock()
        self._revision = since.revision  # the last delivered (dispatch thread)

    def start(self) -> None:
        """Arm the children watch before returning, so that no change made after
        ``watch()`` returns can slip by unseen; the listing is then processed and
        delivered on the dispatch thread. Registered first, so that a session break
        from now on reaches it."""
        self.start_dispatch()
        self._prepare_pool()
        first = self._request_listing()
        if first is not None:
            with contextlib.suppress(Exception):  # its callback reports any failure
                first.get(timeout=self._wire.options.request_timeout)

    # -- kazoo's threads: never block ------------------------------------------------

    def _client(self) -> KazooClient | None:
        return None if self.ended else self._wire.client()

    def _request_listing(self, speculate: bool = False) -> Any:
        client = self._client()
        if client is None:
            return None
        round_ = _Round()
        with round_.lock:
            self._wire.send()
            req = client.get_children_async(self._path, watch=self._on_children, include_data=True)
            req.rawlink(lambda result: self._on_listing(result, round_))
            if speculate:
                self._speculate(round_)
        return req

    def _on_children(self, event: WatchedEvent) -> None:
        # NONE: the connection was reset; the store tells every watch when it is back.
        if event.type != ZkEventType.NONE:
            self._request_listing(speculate=True)

    def _speculate(self, round_: _Round) -> None:
        """Read the lowest free slots along with the listing, in the same round trip.

        Slots are dense, so a new claim is almost always one of the lowest free ones;
        reading them at once, rather than after the listing names them, halves the
        time in which a short-lived claim can come and go unseen. They are sent after
        the listing, so its reply (the deletions, the names of new slots) never waits
        behind them; the listing adopts the read of a slot it names.
        """
        with self._tracked_lock:
            tracked = set(self._tracked)
        free = (s for s in itertools.count() if s not in tracked)
        for slot in itertools.islice(free, SPECULATIVE_READS):
            round_.reads[slot] = self._request_slot(slot, round_=round_)

    def _on_data(self, event: WatchedEvent) -> None:
        # NONE (connection reset) carries no path: the store re-syncs every watch then.
        if event.type == ZkEventType.NONE or not event.path:
            return
        slot = slot_number(event.path.rsplit("/", 1)[-1])
        if slot is not None:
            self._request_slot(slot)

    def _request_slot(
        self, slot: int, *, deliver: bool = True, round_: _Round | None = None
    ) -> Any:
        """Read a slot, arming its data watch; ``deliver``: queue the result when it
        comes (otherwise the caller hands the request to the watch thread itself);
        ``round_``: a speculative read, not delivered on its own if its listing adopted
        it (decided when it completes: kazoo completes requests in the order sent, so
        the listing's callback has run by then)."""
        client = self._client()
        if client is None:
            return None
        self._wire.send()
        req = client.get_async(self._wire.paths.slot(self.pool, slot), watch=self._on_data)

        def done(result: Any) -> None:
            alone = deliver and (round_ is None or slot not in round_.adopted)
            self._on_slot(slot, result, alone)

        req.rawlink(done)
        return req

    def _on_listing(self, result: Any, round_: _Round) -> None:
        with round_.lock:  # every speculative read of this round has been issued
            pass
        try:
            children, stat = result.get_nowait()
        except NoNodeError:
            self._await_pool()
            return
        except Exception as e:
            self.post(_Result("error", reason=f"listing {self.pool} failed: {e!r}"))
            return
        slots = {s for s in (slot_number(n) for n in children) if s is not None}
        with self._tracked_lock:
            new = sorted(slots - self._tracked)
            self._tracked = slots
        # The listing travels with the reads of its new slots, so the watch thread
        # delivers its deletions and creations together, in zxid order.
        pending = {}
        for slot in new:
            if slot in round_.reads:
                round_.adopted.add(slot)
                pending[slot] = round_.reads[slot]
            else:
                pending[slot] = self._request_slot(slot, deliver=False)
        self.post(_Result("listing", slots=slots, revision=int(stat.pzxid), pending=pending))

    def _await_pool(self) -> None:
        """No pool znode yet: an exists watch fires when it is created."""
        client = self._client()
        if client is None:
            return
        self._wire.send()
        req = client.exists_async(self._path, watch=self._on_children)

        def exists(result: Any) -> None:
            try:
                if result.get_nowait() is not None:
                    self._request_listing()  # created in between
            except Exception as e:
                self.post(_Result("error", reason=f"watching {self.pool}: {e!r}"))

        req.rawlink(exists)

    def _on_slot(self, slot: int, result: Any, deliver: bool) -> None:
        try:
            item = self._slot_result(slot, result)
        except NoNodeError:
            # Gone before we could read it (a listing reports the delete); a new znode
            # there must be fetched again. Done here, in the server's order.
            with self._tracked_lock:
                self._tracked.discard(slot)
            return
        except Exception as e:
            item = _Result("error", reason=f"reading {self.pool}/{slot}: {e!r}")
        if isinstance(item, _Result) and item.kind == "slot":
            with self._tracked_lock:
                self._tracked.add(slot)  # it has a data watch now
        if deliver and item is not None:
            self.post(item)

    def _slot_result(self, slot: int, result: Any) -> _Result | None:
        data, stat = result.get(timeout=self._wire.options.request_timeout)
        record = read_record(data, self._wire.paths.slot(self.pool, slot))
        if record is None:
            return None
        claim = claim_of(self.pool, slot, record, stat)
        revision = max(int(stat.czxid), int(stat.mzxid))
        return _Result("slot", slot=slot, claim=claim, revision=revision)

    # -- the dispatch thread ---------------------------------------------------------

    def _prepare_pool(self) -> None:
        """Create the pool znode if we may, so the children watch is armed before the
        first claim (an exists watch would add a round trip to every early event)."""
        client = self._client()
        if client is None:
            return
        try:
            with self._wire.translated(f"watch {self.pool}"):
                self._wire.ensure_pool(client, self.pool)
        except StoreError as e:
            log.debug("watch %s: pool not created (%s); waiting for it", self.pool, e)

    def _translate(self, item: _Result) -> Sequence[SlotEvent]:
        if item.kind == "error":
            raise WatchBroken(item.reason)
        try:
            return self._events_of(item)
        except Exception as e:  # a read of the listing's slots failed
            raise WatchBroken(f"reading {self.pool}: {e!r}") from e

    def _order(self, events: list[SlotEvent]) -> Sequence[SlotEvent]:
        events.sort(key=lambda e: e.revision)
        ordered = []
        for e in events:
            # A slot read after a listing can be newer than a later-delivered one:
            # keep revisions non-decreasing.
            self._revision = max(self._revision, e.revision)
            ordered.append(e if e.revision == self._revision else _with_revision(e, self._revision))
        return ordered

    def _events_of(self, item: _Result) -> list[SlotEvent]:
        if item.kind == "listing":
            # Absent from a listing newer than what we delivered: deleted.
            gone = [
                s
                for s, c in self._known.items()
                if s not in item.slots and c.version <= item.revision
            ]
            for slot in gone:
                del self._known[slot]
            events = [SlotEvent(EventType.DELETE, self.pool, s, None, item.revision) for s in gone]
            for slot, req in item.pending.items():
                try:
                    read = self._slot_result(slot, req) if req is not None else None
                except NoNodeError:
                    continue  # created and deleted before we could read it
                if read is not None:
                    events.extend(self._events_of(read))
            return events
        if item.kind != "slot":
            return []
        claim = item.claim
        if claim is None or item.slot is None:
            return []
        held = self._known.get(item.slot)
        if held == claim or (held is not None and held.version > claim.version):
            return []
        self._known[item.slot] = claim
        return [SlotEvent(EventType.PUT, self.pool, item.slot, claim, item.revision)]
