"""Slot hints and per-node ports in the allocator, on the in-process store (the
conformance suite runs the same on etcd and ZooKeeper)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from idstore.allocator import Allocator, Status
from idstore.backends.base import ConnectionState, SlotRecord, StoreOptions
from idstore.backends.memory import MemoryStore, new_endpoint
from idstore.config import PoolSettings
from idstore.pattern import Pattern
from tests.harness.waiting import wait_for

POOL = PoolSettings("worker", Pattern.parse("worker{{.ID}}.tf.internal."), limit=4)
Start = Callable[..., tuple[MemoryStore, Allocator]]


@pytest.fixture
def node() -> Iterator[Start]:
    endpoint = new_endpoint()
    made: list[tuple[MemoryStore, Allocator]] = []

    def start(
        node_id: str,
        hint: int | None = None,
        require: bool = False,
        ports: Callable[[Mapping[str, int]], Mapping[str, int]] | None = None,
    ) -> tuple[MemoryStore, Allocator]:
        store = MemoryStore(StoreOptions(endpoints=(endpoint,), ttl=2.0))
        store.open()
        rec = SlotRecord(node_id, uuid.uuid4().hex, ("192.0.2.1",))
        alloc = Allocator(store, POOL, rec, prefer_slot=hint, require=require, choose_ports=ports)
        made.append((store, alloc))
        return store, alloc

    yield start
    for store, alloc in made:
        if alloc.status is not Status.STOPPED:
            # Tests that only call acquire() never started the thread stop() joins.
            with contextlib.suppress(RuntimeError):
                alloc.stop()
        store.close()


def test_a_free_hinted_slot_costs_one_claim(node: Start) -> None:
    store, alloc = node("a", hint=2)
    before = store.ops
    claim = alloc.acquire()
    assert claim is not None and claim.slot == 2
    assert store.ops - before == 1


def test_hint_held_by_another_falls_back_to_a_place_in_line_and_says_who(
    node: Start, caplog: pytest.LogCaptureFixture
) -> None:
    _, a = node("a", hint=0)
    assert (c := a.acquire()) is not None and c.slot == 0
    _, b = node("b", hint=0)
    with caplog.at_level(logging.WARNING, "idstore.hinted"):
        claim = b.acquire()
    assert claim is not None and claim.slot == 1
    assert "preferred slot 0 of pool worker (worker0.tf.internal.) is held by node a" in caplog.text
    assert "taking a place in line" in caplog.text


def test_require_waits_for_the_hinted_slot(node: Start) -> None:
    _, a = node("a", hint=1)
    a.start()
    wait_for(lambda: a.claim is not None, 5)
    _, b = node("b", hint=1, require=True)
    assert b.acquire() is None
    b.start()
    wait_for(lambda: b.status is Status.WAITING, 5)
    assert b.claim is None
    a.stop(release=True)
    wait_for(lambda: b.claim is not None and b.claim.slot == 1, 10)


def test_restart_takes_the_hinted_slot_back_from_its_earlier_boot(node: Start) -> None:
    _, a1 = node("a", hint=3)
    assert a1.acquire() is not None
    s2, a2 = node("a", hint=3)  # same identity, new boot, the old claim still alive
    claim = a2.acquire()
    assert claim is not None and claim.slot == 3 and claim.session == s2.session_id


def test_ports_are_chosen_once_preferring_the_earlier_claims(node: Start) -> None:
    seen: list[Mapping[str, int]] = []

    def choose(previous: Mapping[str, int]) -> Mapping[str, int]:
        seen.append(dict(previous))
        return dict(previous) or {"grpc": 20001}

    _, a1 = node("a", ports=choose)
    c1 = a1.acquire()
    assert c1 is not None and c1.record.ports == {"grpc": 20001}
    assert a1.record.ports == {"grpc": 20001}
    _, a2 = node("a", ports=lambda prev: dict(prev) or {"grpc": 29999})
    c2 = a2.acquire()  # the earlier boot's claim is alive: its port comes back
    assert c2 is not None and c2.slot == c1.slot and c2.record.ports == {"grpc": 20001}


def test_a_session_kept_after_a_presumed_loss_leaves_no_second_slot(node: Start) -> None:
    """A ZooKeeper session can outlive its presumed loss and is kept: if the node then
    claims another slot (its hinted one freed meanwhile), the slot it held before is
    released, or the node would hold two for as long as the session lives."""
    _, a = node("a", hint=0)
    a.start()
    wait_for(lambda: a.claim is not None and a.claim.slot == 0, 5)
    store, b = node("b", hint=0)
    b.start()
    wait_for(lambda: b.claim is not None and b.claim.slot == 1, 5)
    a.stop()  # slot 0 frees while b is away
    store._set_state(ConnectionState.LOST)  # presumed lost; the session itself lives
    wait_for(lambda: b.status is Status.LOST, 5)
    store._set_state(ConnectionState.CONNECTED)
    wait_for(lambda: b.claim is not None and b.claim.slot == 0, 5)
    wait_for(lambda: set(store.list("worker").claims) == {0}, 5)
    assert store.list("worker").claims[0].record.node_id == "b"


def test_a_restart_whose_old_claim_expires_meanwhile_gets_that_slot_back(node: Start) -> None:
    """A restarted node lists its earlier boot's claim, which expires before the node
    takes it back: the slot is free and goes to this node again, not to the next free
    slot its listing pointed at (chaos soak: a restarted node came back as another name,
    and every peer answered NXDOMAIN for its old one)."""
    _, old = node("a")
    assert (c := old.acquire()) is not None and c.slot == 0
    for other in ("b", "c"):
        assert node(other)[1].acquire() is not None
    store, new = node("a")
    reclaim, enqueue = store.reclaim, store.enqueue

    def always_queued(pool: str, slots: range, node_id: str, sticky: bool = True) -> Any:
        return enqueue(pool, slots, node_id, False)  # as on ZooKeeper: it cannot skip

    def expiring_first(previous: Any, record: SlotRecord) -> Any:
        assert old.store.release(c)  # the earlier boot's session expires just now
        return reclaim(previous, record)

    store.reclaim = expiring_first  # type: ignore[method-assign]
    store.enqueue = always_queued  # type: ignore[method-assign]
    claim = new.acquire()
    assert claim is not None and claim.slot == 0 and claim.session == store.session_id
    assert sorted(store.list("worker").claims) == [0, 1, 2]


def test_a_hinted_restart_whose_old_claim_expires_meanwhile_keeps_its_hinted_slot(
    node: Start,
) -> None:
    _, old = node("a", hint=2)
    assert (c := old.acquire()) is not None and c.slot == 2
    store, new = node("a", hint=2)
    reclaim = store.reclaim

    def expiring_first(previous: Any, record: SlotRecord) -> Any:
        assert old.store.release(c)  # the earlier boot's session expires just now
        return reclaim(previous, record)

    store.reclaim = expiring_first  # type: ignore[method-assign]
    claim = new.acquire()  # not the lowest free slot (0): the hinted one, free again
    assert claim is not None and claim.slot == 2 and claim.session == store.session_id
