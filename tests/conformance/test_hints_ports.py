"""Slot hints and per-node ports, the same on every backend: the allocator over the real
store (memory, etcd, ZooKeeper), and claims of the previous release in the same pool."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from idstore import config, launch
from idstore.allocator import Allocator, Status
from idstore.backends.base import SlotRecord, SlotStore
from idstore.cli.reader import snapshot_from_store
from idstore.config import Settings
from idstore.portpick import PortPicker
from idstore.view import Member
from tests.harness.waiting import wait_for

Factory = Callable[..., SlotStore]
Start = Callable[..., Allocator]


def settings(port: object = "31000-31999", **top: object) -> Settings:
    body = {"pattern": "worker{{.ID}}.tf.internal.", "limit": 5, "port": port}
    return config.load(raw={"pools": {"worker": body}, **top}, environ={})


S = settings()
POOL = S.pool_settings()


@pytest.fixture
def node(open_store: Factory) -> Iterator[Start]:
    made: list[Allocator] = []

    def start(
        node_id: str,
        hint: int | None = None,
        require: bool = False,
        ports: Callable[[Mapping[str, int]], Mapping[str, int]] | None = None,
        store: SlotStore | None = None,
        run: bool = False,
    ) -> Allocator:
        rec = SlotRecord(node_id, uuid.uuid4().hex, ("127.0.0.1",))
        alloc = Allocator(
            store or open_store(), POOL, rec, prefer_slot=hint, require=require, choose_ports=ports
        )
        made.append(alloc)
        if run:
            alloc.start()
        return alloc

    yield start
    for alloc in made:
        if alloc.status is not Status.STOPPED:
            with contextlib.suppress(RuntimeError):  # never started: nothing to join
                alloc.stop()


def test_hinted_claim_takes_exactly_that_slot_in_at_most_two_requests(
    node: Start, open_store: Factory
) -> None:
    store = open_store()
    before = store.ops
    claim = node("a", hint=3, store=store).acquire()
    assert claim is not None and claim.slot == 3
    assert store.ops - before <= 2
    assert set(open_store().list("worker").claims) == {3}


def test_hinted_slot_of_another_identity_falls_back_and_names_the_holder(
    node: Start, caplog: pytest.LogCaptureFixture
) -> None:
    assert node("a", hint=0).acquire() is not None
    with caplog.at_level(logging.WARNING, "idstore.hinted"):
        claim = node("b", hint=0).acquire()
    assert claim is not None and claim.slot == 1
    assert "is held by node a (127.0.0.1); taking a place in line" in caplog.text


def test_require_waits_until_the_hinted_slot_frees(node: Start) -> None:
    a = node("a", hint=2, run=True)
    wait_for(lambda: a.claim is not None, 10)
    b = node("b", hint=2, require=True, run=True)
    wait_for(lambda: b.status is Status.WAITING, 10)
    assert b.claim is None
    a.stop(release=True)
    wait_for(lambda: b.claim is not None and b.claim.slot == 2, 15)


def test_two_nodes_with_the_same_hint_one_wins_the_other_is_refused(node: Start) -> None:
    a, b = node("a", hint=4), node("b", hint=4, require=True)
    results = [a.acquire(), b.acquire()]
    assert [r.slot if r else None for r in results] == [4, None]


def test_restart_with_a_hint_takes_back_its_earlier_claim_and_its_port(
    node: Start, open_store: Factory
) -> None:
    crashed = open_store()
    picker = PortPicker(POOL, ("127.0.0.1",), "a")
    first = node("a", hint=1, ports=picker.choose, store=crashed).acquire()
    assert first is not None
    port = first.record.ports["grpc"]
    assert 31000 <= port <= 31999
    crashed.close(release=False)  # a crash: the claim lives until its TTL
    again = node("a", hint=1, ports=PortPicker(POOL, ("127.0.0.1",), "a").choose).acquire()
    assert again is not None and again.slot == 1
    assert again.record.ports == {"grpc": port}


def test_sticky_port_without_a_hint_comes_from_the_earlier_claim(
    node: Start, open_store: Factory
) -> None:
    crashed = open_store()
    first = node("a", ports=lambda prev: dict(prev) or {"grpc": 31555}, store=crashed).acquire()
    assert first is not None
    crashed.close(release=False)
    again = node("a", ports=lambda prev: dict(prev) or {"grpc": 31777}).acquire()
    assert again is not None and again.slot == first.slot
    assert again.record.ports == {"grpc": 31555}


@pytest.mark.parametrize("hint", [None, 3])
def test_a_restart_whose_earlier_claim_expires_meanwhile_comes_back_as_the_same_name(
    node: Start, open_store: Factory, hint: int | None
) -> None:
    """The restarted node lists its earlier boot's claim, whose session then ends before
    the take-back: the slot is free and comes back to this node, not the next free slot
    its listing pointed at (chaos soak seed 20261201 on ZooKeeper, which always queues:
    every peer answered NXDOMAIN for the node's old name)."""
    crashed = open_store()
    first = node("a", hint=hint, store=crashed).acquire()
    assert first is not None
    for other in ("b", "c"):
        assert node(other).acquire() is not None
    store = open_store()
    reclaim = store.reclaim

    def session_ends_first(previous: Any, record: SlotRecord) -> Any:
        crashed.close(release=True)  # the crashed boot's session expires just now
        return reclaim(previous, record)

    store.reclaim = session_ends_first  # type: ignore[method-assign]
    again = node("a", hint=hint, store=store).acquire()
    assert again is not None and again.slot == first.slot
    assert again.session == store.session_id
    assert len(open_store().list("worker").claims) == 3


def test_published_ports_reach_launch_values_through_the_store(
    node: Start, open_store: Factory
) -> None:
    a = node("a", hint=0, ports=lambda prev: {"grpc": 31001}).acquire()
    b = node("b", hint=1, ports=lambda prev: {"grpc": 31002}).acquire()
    assert a is not None and b is not None
    snap = snapshot_from_store(settings(node_id="b"), open_store())
    tf = launch.tf_config(S.pools, snap)
    assert tf["cluster"]["worker"] == ["worker0.tf.internal:31001", "worker1.tf.internal:31002"]
    assert launch.identity(snap, S.pools)["IDSTORE_PORT"] == "31002"
    assert launch.torchrun(S.pools, snap)["MASTER_PORT"] == "31001"


# The previous release wrote this (its encode, byte for byte) for `port = 2222`.
PREVIOUS_RELEASE_RECORD = (
    b'{"addresses":["192.0.2.9"],"claimed_at":1.5,"node_id":"old","nonce":"n0",'
    b'"ports":{"app":2222}}'
)


def test_rolling_upgrade_old_and_new_claims_share_a_pool(open_store: Factory) -> None:
    """A pool half upgraded: each release reads the other's claims. The previous
    release's reader is this same SlotRecord.decode (the format did not change) and
    its DNS answers SRV with ``ports.get(service, pool port)``: the new claim's port."""
    old_rec = SlotRecord.decode(PREVIOUS_RELEASE_RECORD)
    open_store().claim("worker", 0, old_rec)
    fixed = settings(port=2222)
    new_rec = SlotRecord("new", uuid.uuid4().hex, ("192.0.2.10",), ports={"grpc": 2222})
    open_store().claim("worker", 1, new_rec)
    listing = open_store().list("worker")
    assert listing.claims[0].record == old_rec
    # the bytes a new node writes decode to what the previous release's fields hold
    back = SlotRecord.decode(listing.claims[1].record.encode())
    assert (back.node_id, back.addresses, back.ports) == ("new", ("192.0.2.10",), {"grpc": 2222})
    pool = fixed.pool_settings()
    members = [Member.from_claim(pool, c) for _, c in sorted(listing.claims.items())]
    # what the previous release's SRV answer takes: ports.get(service, pool.port)
    assert [m.ports.get(pool.service, pool.port) for m in members] == [2222, 2222]
    snap = snapshot_from_store(settings(port=2222, node_id="new"), open_store())
    assert launch.tf_config(fixed.pools, snap)["cluster"]["worker"] == [
        "worker0.tf.internal:2222",
        "worker1.tf.internal:2222",
    ]
