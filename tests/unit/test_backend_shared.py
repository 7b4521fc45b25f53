"""The machinery every backend shares: operation counting, watch dispatch, and the
decisions of idstore.backends.records."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from idstore.backends.base import (
    BrokenCallback,
    Claim,
    EventsCallback,
    EventType,
    Listing,
    SlotEvent,
    SlotRecord,
    SlotStore,
    StoreOptions,
    Ticket,
    WatchHandle,
)
from idstore.backends.dispatch import DispatchedWatch, WatchBroken, WatchRegistry
from idstore.backends.memory import MemoryStore, new_endpoint
from idstore.backends.records import check_reclaim, own_or_taken, read_record, slot_number
from idstore.backends.zookeeper import ZooKeeperStore
from idstore.backends.zookeeper.watch import PoolWatch, _Result
from idstore.errors import NotOwner, SlotTaken, StoreUnavailable

# -- ops and wire_requests -------------------------------------------------------------


class QueuelessStore(SlotStore):
    """A store without a queue: its enqueue is base's, which lists the pool."""

    name = "queueless"

    def open(self) -> None: ...
    def close(self, release: bool = True) -> None: ...

    @property
    def session_id(self) -> str:
        return "s"

    def claim(
        self, pool: str, slot: int, record: SlotRecord, ticket: Ticket | None = None
    ) -> Claim:
        raise StoreUnavailable("down")

    def reclaim(self, previous: Claim, record: SlotRecord) -> Claim:
        raise NotImplementedError

    def release(self, claim: Claim) -> bool:
        return False

    def list(self, pool: str) -> Listing:
        self._sent(3)  # say, one request per page
        return Listing(pool, {}, 1)

    def watch(
        self, since: Listing, on_events: EventsCallback, on_broken: BrokenCallback
    ) -> WatchHandle:
        raise NotImplementedError


def test_an_operation_counts_once_however_many_requests_it_sends() -> None:
    store = QueuelessStore(StoreOptions())
    store.list("p")
    assert (store.ops, store.wire_requests) == (1, 3)
    # base's enqueue calls list: one operation, the list's requests
    store.enqueue("p", range(0, 4), "n")
    assert (store.ops, store.wire_requests) == (2, 6)
    with pytest.raises(StoreUnavailable):  # a failed operation is an operation too
        store.claim("p", 0, SlotRecord("n", "x"))
    assert store.ops == 3
    store.list("p")  # the failure left no operation "running" on this thread
    assert store.ops == 4


def test_memory_counts_one_request_per_operation() -> None:
    store = MemoryStore(StoreOptions(endpoints=(new_endpoint(),)))
    store.open()
    try:
        store.claim("p", 0, SlotRecord("n", "x"))
        store.list("p")
        assert store.ops == store.wire_requests == 3  # open, claim, list
    finally:
        store.close()


def test_zookeeper_counts_through_the_base_class() -> None:
    """ZooKeeper's requests land in base's wire_requests; a reclaim the shared NotOwner
    rule refuses is one operation and sends nothing (no server is needed for either)."""
    store = ZooKeeperStore(StoreOptions(endpoints=("127.0.0.1:1",)))
    previous = Claim("p", 3, SlotRecord("a", "boot1"), 10, "1")
    with pytest.raises(NotOwner, match="belongs to 'a', not 'b'"):
        store.reclaim(previous, SlotRecord("b", "boot2"))
    assert (store.ops, store.wire_requests) == (1, 0)
    store._io.send(2)  # what its Wire reports for a pipelined pair of reads
    assert (store.ops, store.wire_requests) == (1, 2)


# -- the watch dispatcher --------------------------------------------------------------


class ListWatch(DispatchedWatch[object]):
    """Posted ints become PUT events of that slot; "break" breaks; "boom" raises."""

    def _translate(self, item: object) -> Sequence[SlotEvent]:
        if item == "break":
            raise WatchBroken("asked to")
        if item == "boom":
            raise RuntimeError("a bug")
        assert isinstance(item, int)
        return [SlotEvent(EventType.PUT, self.pool, item, None, item)]


class Seen:
    def __init__(self) -> None:
        self.slots: list[int] = []
        self.revisions: list[int] = []
        self.broken: list[str] = []
        self.done = threading.Event()

    def on_events(self, events: Sequence[SlotEvent]) -> None:
        self.slots.extend(e.slot for e in events)
        self.revisions.extend(e.revision for e in events)
        if 99 in self.slots:
            self.done.set()

    def on_broken(self, reason: str) -> None:
        self.broken.append(reason)
        self.done.set()


def _watch(seen: Seen, registry: WatchRegistry) -> ListWatch:
    w = ListWatch("p", seen.on_events, seen.on_broken, registry, "test-watch")
    w.start_dispatch()
    return w


def test_events_are_delivered_in_order_and_a_break_reported_once() -> None:
    seen, registry = Seen(), WatchRegistry()
    w = _watch(seen, registry)
    assert registry.snapshot() == [w]
    for item in (1, 2, 3, "break", 4):
        w.post(item)
    w.post_broken("again")
    assert seen.done.wait(5)
    w._thread.join(5)
    assert seen.slots == [1, 2, 3]
    assert seen.broken == ["asked to"]
    assert registry.snapshot() == []
    assert w.ended


def test_a_failing_translation_breaks_and_a_raising_callback_is_survived() -> None:
    seen, registry = Seen(), WatchRegistry()
    calls: list[int] = []

    def bad_callback(events: Sequence[SlotEvent]) -> None:
        calls.append(len(events))
        raise ValueError("the watcher's bug")

    w = ListWatch("p", bad_callback, seen.on_broken, registry, "test-watch")
    w.start_dispatch()
    w.post(1)
    w.post("boom")
    assert seen.done.wait(5)
    assert calls and seen.broken == ["watch of pool p failed: RuntimeError('a bug')"]


def test_a_cancelled_watch_reports_nothing() -> None:
    seen, registry = Seen(), WatchRegistry()
    w = _watch(seen, registry)
    w.cancel()
    w.post(1)
    w.post_broken("late")
    w._thread.join(5)
    assert not w._thread.is_alive()
    assert (seen.slots, seen.broken, registry.snapshot()) == ([], [], [])


def test_registry_breaks_every_watch() -> None:
    registry = WatchRegistry()
    seen = [Seen(), Seen()]
    for s in seen:
        _watch(s, registry)
    registry.break_all("session lost")
    for s in seen:
        assert s.done.wait(5)
        assert s.broken == ["session lost"]


class FailedRead:
    """A kazoo async result whose read failed."""

    def get(self, timeout: float | None = None) -> object:
        raise RuntimeError("connection dropped")


def _zk_watch(seen: Seen, registry: WatchRegistry, revision: int = 0) -> PoolWatch:
    store = ZooKeeperStore(StoreOptions(endpoints=("127.0.0.1:1",)))
    return PoolWatch(
        store._io, Listing("p", {}, revision), seen.on_events, seen.on_broken, registry
    )


def test_zookeeper_watch_delivers_a_burst_in_revision_order_then_breaks_once() -> None:
    seen, registry = Seen(), WatchRegistry()
    w = _zk_watch(seen, registry, revision=5)
    # Posted before the dispatch thread starts: one burst, delivered in one call.
    for slot, zxid in ((1, 9), (2, 7), (0, 3)):
        claim = Claim("p", slot, SlotRecord("n", str(slot)), zxid, "1")
        w.post(_Result("slot", slot=slot, claim=claim, revision=zxid))
    w.post(_Result("error", reason="listing p failed: boom"))
    w.post(_Result("slot", slot=4, claim=Claim("p", 4, SlotRecord("n", "4"), 11, "1"), revision=11))
    w.start_dispatch()  # start() would arm ZooKeeper watches: there is no server here
    assert seen.done.wait(5)
    w._thread.join(5)
    # Sorted by zxid; a slot older than the listing watched from reports its revision.
    assert (seen.slots, seen.revisions) == ([0, 2, 1], [5, 7, 9])
    assert seen.broken == ["listing p failed: boom"]
    assert registry.snapshot() == [] and w.ended


def test_zookeeper_watch_breaks_on_a_failed_read_and_with_its_store() -> None:
    failed, lost, registry = Seen(), Seen(), WatchRegistry()
    w = _zk_watch(failed, registry)
    w.start_dispatch()
    w.post(_Result("listing", slots={0}, revision=1, pending={0: FailedRead()}))
    assert failed.done.wait(5)
    assert failed.broken == ["reading p: RuntimeError('connection dropped')"]
    _zk_watch(lost, registry).start_dispatch()
    registry.break_all("session lost")
    assert lost.done.wait(5)
    assert (lost.slots, lost.broken) == ([], ["session lost"])


# -- records: the rules ----------------------------------------------------------------


def test_only_canonical_ascii_numbers_are_slots() -> None:
    assert [slot_number(n) for n in ("0", "7", "12", b"12")] == [0, 7, 12, 12]
    for bad in ("07", "+7", "-1", "", "x", "1/q", "\u0667", b"\xd9\xa7", " 1"):
        assert slot_number(bad) is None, bad


def test_unreadable_records_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    record = SlotRecord("n", "x", ("192.0.2.1",))
    assert read_record(record.encode(), "k") == record
    assert read_record(b"not json", "/idstore/c/p/7") is None
    assert "skipping /idstore/c/p/7" in caplog.text


def test_own_claim_only_for_this_session_and_boot() -> None:
    mine = SlotRecord("n", "boot1")
    held = Claim("p", 3, mine, 10, "s1")
    assert own_or_taken("p", 3, held, "s1", mine) is held
    for session, record in (("s2", mine), ("s1", SlotRecord("n", "boot2"))):
        with pytest.raises(SlotTaken) as info:
            own_or_taken("p", 3, held, session, record)
        assert info.value.owner is held
    with pytest.raises(SlotTaken):
        own_or_taken("p", 3, None, "s1", mine)


def test_reclaim_only_by_the_same_identity() -> None:
    previous = Claim("p", 3, SlotRecord("a", "boot1"), 10, "s1")
    check_reclaim(previous, SlotRecord("a", "boot2"))
    with pytest.raises(NotOwner, match="belongs to 'a', not 'b'"):
        check_reclaim(previous, SlotRecord("b", "boot2"))
