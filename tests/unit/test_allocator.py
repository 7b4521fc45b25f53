"""Allocator rules, on the in-process store (the conformance suite proves the backends)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from idstore.allocator import Allocator, Status
from idstore.backends.base import SlotRecord, StoreOptions
from idstore.backends.memory import MemoryStore, new_endpoint
from idstore.config import PoolSettings
from idstore.mirror import PoolMirror
from idstore.pattern import Pattern
from tests.harness.waiting import wait_for

POOL = PoolSettings("worker", Pattern.parse("worker{{.ID}}.tf.local."), limit=3)


@dataclass
class Running:
    store: MemoryStore
    mirror: PoolMirror
    alloc: Allocator

    def stop(self, release: bool = True) -> None:
        self.alloc.stop(release=release)
        self.mirror.stop()
        self.store.close(release=release)


@pytest.fixture
def cluster() -> Iterator[Callable[..., Running]]:
    endpoint = new_endpoint()
    started: list[Running] = []

    def start(node_id: str, pool: PoolSettings = POOL, ttl: float = 2.0) -> Running:
        store = MemoryStore(StoreOptions(endpoints=(endpoint,), ttl=ttl))
        store.open()
        mirror = PoolMirror(store, [pool.name])
        alloc = Allocator(store, pool, SlotRecord(node_id, uuid.uuid4().hex, ("192.0.2.1",)))
        mirror.add_listener(alloc.on_claims)
        mirror.start()
        alloc.start()
        r = Running(store, mirror, alloc)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.alloc.status is not Status.STOPPED:
            r.stop()


def held(r: Running) -> int | None:
    return r.alloc.claim.slot if r.alloc.claim else None


def test_nodes_take_the_lowest_free_slots(cluster: Callable[..., Running]) -> None:
    a = cluster("a")
    wait_for(lambda: held(a) == 0)
    b = cluster("b")
    wait_for(lambda: held(b) == 1)
    assert a.alloc.status is Status.HELD


def test_restart_gets_the_old_slot_back(cluster: Callable[..., Running]) -> None:
    a, b = cluster("a"), cluster("b")
    wait_for(lambda: held(a) is not None and held(b) is not None)
    slot_b = held(b)
    b.stop(release=False)  # crash: the claim lingers until the TTL
    b2 = cluster("b")
    wait_for(lambda: held(b2) is not None)
    assert held(b2) == slot_b


def test_freed_lower_slot_is_reused_by_a_new_node(cluster: Callable[..., Running]) -> None:
    a = cluster("a")
    wait_for(lambda: held(a) == 0)
    b = cluster("b")
    wait_for(lambda: held(b) == 1)
    a.stop()
    c = cluster("c")
    wait_for(lambda: held(c) == 0)


def test_full_pool_waits_then_claims_the_freed_slot(cluster: Callable[..., Running]) -> None:
    nodes = [cluster(f"n{i}") for i in range(3)]
    wait_for(lambda: all(held(n) is not None for n in nodes))
    extra = cluster("extra")
    wait_for(lambda: extra.alloc.status is Status.WAITING)
    assert held(extra) is None
    freed = held(nodes[1])  # nodes start concurrently: any of them may hold any slot
    nodes[1].stop()
    wait_for(lambda: held(extra) == freed)


def test_lost_session_stops_asserting_and_claims_again(cluster: Callable[..., Running]) -> None:
    a = cluster("a")
    wait_for(lambda: held(a) == 0)
    seen: list[Status] = []
    a.alloc.add_listener(lambda status, claim: seen.append(status))
    a.store.expire_session()
    wait_for(lambda: Status.LOST in seen)
    wait_for(lambda: held(a) == 0 and a.alloc.status is Status.HELD)
    assert seen.index(Status.LOST) < len(seen) - 1


def test_duplicate_identity_backs_off_without_ping_pong(cluster: Callable[..., Running]) -> None:
    first = cluster("same")
    wait_for(lambda: held(first) == 0)
    second = cluster("same")  # a second live process with the same identity
    wait_for(lambda: held(second) == 0)
    wait_for(lambda: first.alloc.status is Status.DUPLICATE)
    time.sleep(1.0)
    assert held(first) is None and first.alloc.status is Status.DUPLICATE
    assert held(second) == 0
    claims = second.store.list("worker").claims
    assert set(claims) == {0}, "the duplicate never took a second slot"


def test_never_holds_two_slots(cluster: Callable[..., Running]) -> None:
    nodes = [cluster(f"n{i}") for i in range(3)]
    wait_for(lambda: all(held(n) is not None for n in nodes))
    claims = nodes[0].store.list("worker").claims
    assert sorted(c.record.node_id for c in claims.values()) == ["n0", "n1", "n2"]
    assert sorted(claims) == [0, 1, 2]


def test_after_lost_the_previous_slot_wins_over_a_lower_free_one(
    cluster: Callable[..., Running],
) -> None:
    a = cluster("a")
    wait_for(lambda: held(a) == 0)
    b = cluster("b")
    wait_for(lambda: held(b) == 1)
    c = cluster("c")
    wait_for(lambda: held(c) == 2)
    a.stop()  # slot 0 is free now
    seen: list[Status] = []
    c.alloc.add_listener(lambda status, claim: seen.append(status))
    c.store.expire_session()
    wait_for(lambda: Status.LOST in seen and held(c) is not None)
    assert held(c) == 2, "a transient LOST must not rename the node"
