"""The SlotStore conformance suite: written once, run unchanged against every backend."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence

import pytest

from idstore.backends.base import (
    Claim,
    ConnectionState,
    EventType,
    SlotEvent,
    SlotRecord,
    SlotStore,
)
from idstore.errors import NotOwner, SlotTaken
from tests.harness.env import BackendEnv
from tests.harness.waiting import wait_for

Factory = Callable[..., SlotStore]
POOL = "worker"
SHORT_TTL = 3.0


def record(node: str = "n1", nonce: str | None = None) -> SlotRecord:
    return SlotRecord(
        node_id=node,
        nonce=nonce or uuid.uuid4().hex,
        addresses=("192.0.2.1", "2001:db8::1"),
        ports={"grpc": 2222},
        claimed_at=time.time(),
    )


def test_open_reports_connected_with_a_session(open_store: Factory) -> None:
    store = open_store()
    assert store.state is ConnectionState.CONNECTED
    assert store.session_id


def test_claim_free_slot_and_list_it(open_store: Factory) -> None:
    store = open_store()
    rec = record()
    claim = store.claim(POOL, 0, rec)
    assert (claim.pool, claim.slot, claim.record) == (POOL, 0, rec)
    assert claim.session == store.session_id
    listing = store.list(POOL)
    assert set(listing.claims) == {0}
    assert listing.claims[0].record == rec
    assert listing.claims[0].version == claim.version
    assert listing.revision >= claim.version


def test_record_fields_round_trip(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    rec = record("node-ü")
    a.claim(POOL, 3, rec)
    seen = b.list(POOL).claims[3].record
    assert seen == rec


def test_taken_slot_is_refused_with_its_owner(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    a.claim(POOL, 0, record("a"))
    with pytest.raises(SlotTaken) as info:
        b.claim(POOL, 0, record("b"))
    owner = info.value.owner
    assert isinstance(owner, Claim) and owner.record.node_id == "a"


def test_claim_is_idempotent_for_the_same_session(open_store: Factory) -> None:
    store = open_store()
    rec = record()
    first = store.claim(POOL, 1, rec)
    again = store.claim(POOL, 1, rec)
    assert again.version == first.version


def test_concurrent_claims_have_exactly_one_winner(open_store: Factory) -> None:
    stores = [open_store() for _ in range(8)]
    winners: list[str] = []
    losers: list[str] = []
    barrier = threading.Barrier(len(stores))

    def race(i: int, store: SlotStore) -> None:
        barrier.wait()
        try:
            store.claim(POOL, 0, record(f"n{i}"))
            winners.append(f"n{i}")
        except SlotTaken:
            losers.append(f"n{i}")

    threads = [threading.Thread(target=race, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(winners) == 1 and len(losers) == 7
    assert stores[0].list(POOL).claims[0].record.node_id == winners[0]


def test_release_frees_the_slot_and_stale_release_is_refused(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    claim = a.claim(POOL, 0, record("a"))
    assert a.release(claim) is True
    assert 0 not in b.list(POOL).claims
    b.claim(POOL, 0, record("b"))
    assert a.release(claim) is False, "a stale claim must not delete the new owner's"
    assert b.list(POOL).claims[0].record.node_id == "b"


def test_clean_close_frees_claims_at_once(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    a.claim(POOL, 0, record("a"))
    a.close(release=True)
    wait_for(lambda: 0 not in b.list(POOL).claims, 2.0, "slot freed by clean close")


def test_crashed_session_keeps_claim_until_ttl(open_store: Factory) -> None:
    a = open_store(ttl=SHORT_TTL)
    b = open_store()
    a.claim(POOL, 0, record("a"))
    a.close(release=False)
    time.sleep(SHORT_TTL / 3)
    assert 0 in b.list(POOL).claims, "a crash must not free the slot before the TTL"
    wait_for(lambda: 0 not in b.list(POOL).claims, SHORT_TTL * 4, "expiry of crashed session")


def test_restarted_node_reclaims_its_own_slot(open_store: Factory) -> None:
    old = open_store(ttl=SHORT_TTL)
    first = old.claim(POOL, 2, record("same-node", "boot1"))
    old.close(release=False)  # crash: the claim lingers under the dead session
    new = open_store()
    previous = new.list(POOL).claims[2]
    assert previous.record.node_id == "same-node"
    taken = new.reclaim(previous, record("same-node", "boot2"))
    assert taken.version != first.version
    assert taken.session == new.session_id
    # The dead session's expiry must not delete the re-taken slot.
    time.sleep(SHORT_TTL * 2.5)
    now = new.list(POOL).claims[2]
    assert now.record.nonce == "boot2"


def test_reclaim_never_takes_another_identity(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    a.claim(POOL, 0, record("a"))
    held = b.list(POOL).claims[0]
    with pytest.raises(NotOwner):
        b.reclaim(held, record("b"))
    assert b.list(POOL).claims[0].record.node_id == "a"


def test_reclaim_is_fenced_by_version(open_store: Factory) -> None:
    a, b, c = open_store(), open_store(), open_store()
    a.claim(POOL, 0, record("x", "boot1"))
    seen = c.list(POOL).claims[0]
    b.reclaim(seen, record("x", "boot2"))
    with pytest.raises(SlotTaken):
        c.reclaim(seen, record("x", "boot3"))
    assert c.list(POOL).claims[0].record.nonce == "boot2"


def test_pools_are_independent(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    a.claim("ps", 0, record("a"))
    b.claim("worker", 0, record("b"))
    assert set(a.list("ps").claims) == {0}
    assert a.list("worker").claims[0].record.node_id == "b"
    assert a.list("empty").claims == {}


class Collector:
    def __init__(self) -> None:
        self.events: list[SlotEvent] = []
        self.broken: list[str] = []
        self.lock = threading.Lock()

    def on_events(self, events: Sequence[SlotEvent]) -> None:
        with self.lock:
            self.events.extend(events)

    def on_broken(self, reason: str) -> None:
        self.broken.append(reason)

    def kinds(self) -> list[tuple[EventType, int]]:
        with self.lock:
            return [(e.type, e.slot) for e in self.events]


def test_watch_delivers_changes_in_order(open_store: Factory) -> None:
    watcher, writer = open_store(), open_store()
    listing = watcher.list(POOL)
    got = Collector()
    handle = watcher.watch(listing, got.on_events, got.on_broken)
    try:
        c0 = writer.claim(POOL, 0, record("w"))
        c1 = writer.claim(POOL, 1, record("w", "n2"))
        # A store without history may merge a claim and release that both happen before
        # it reads (the contract allows that: views converge); wait for the PUTs first.
        wait_for(lambda: len(got.kinds()) >= 2, 5.0, "both PUTs")
        writer.release(c0)
        writer.claim("other-pool", 0, record("w"))
        expected = [(EventType.PUT, 0), (EventType.PUT, 1), (EventType.DELETE, 0)]
        wait_for(lambda: got.kinds() == expected, 5.0, f"events {expected}, got {got.kinds()}")
        put1 = got.events[1]
        assert put1.claim is not None and put1.claim.version == c1.version
        assert put1.claim.record.nonce == "n2"
        revisions = [e.revision for e in got.events]
        assert revisions == sorted(revisions) and revisions[0] > listing.revision
    finally:
        handle.cancel()
    assert got.broken == []


def test_watch_replays_changes_made_after_the_listing(open_store: Factory) -> None:
    watcher, writer = open_store(), open_store()
    listing = watcher.list(POOL)
    writer.claim(POOL, 5, record("w"))  # before the watch starts, after the listing
    got = Collector()
    handle = watcher.watch(listing, got.on_events, got.on_broken)
    try:
        wait_for(
            lambda: got.kinds() == [(EventType.PUT, 5)] or bool(got.broken),
            5.0,
            "the missed claim replayed (or a resync asked for)",
        )
    finally:
        handle.cancel()


def test_watch_sees_session_expiry(open_store: Factory, backend_env: BackendEnv) -> None:
    watcher, victim = open_store(), open_store()
    victim.claim(POOL, 0, record("v"))
    got = Collector()
    handle = watcher.watch(watcher.list(POOL), got.on_events, got.on_broken)
    try:
        backend_env.expire(victim)
        wait_for(lambda: (EventType.DELETE, 0) in got.kinds(), 15.0, "DELETE on expiry")
    finally:
        handle.cancel()


def test_expiry_reports_lost_then_connected_and_allows_new_claims(
    open_store: Factory, backend_env: BackendEnv
) -> None:
    store = open_store()
    states: list[ConnectionState] = []
    store.add_listener(states.append)
    old_session = store.session_id
    store.claim(POOL, 0, record("me", "b1"))
    backend_env.expire(store)
    wait_for(lambda: ConnectionState.LOST in states, 15.0, "LOST after expiry")
    wait_for(lambda: store.state is ConnectionState.CONNECTED, 20.0, "a new session")
    assert store.session_id != old_session
    assert states.index(ConnectionState.LOST) < len(states) - 1
    wait_for(lambda: 0 not in store.list(POOL).claims, 10.0, "claim gone with its session")
    again = store.claim(POOL, 0, record("me", "b1"))
    assert again.session == store.session_id


def test_ops_are_counted(open_store: Factory) -> None:
    store = open_store()
    before = store.ops
    store.claim(POOL, 0, record())
    store.list(POOL)
    assert store.ops - before == 2


# -- waiting queue (boot storms) ------------------------------------------------------

SLOTS = range(0, 10)


def test_enqueue_serves_nodes_in_arrival_order(open_store: Factory) -> None:
    stores = [open_store() for _ in range(3)]
    seen = [s.enqueue(POOL, SLOTS, f"n{i}") for i, s in enumerate(stores)]
    assert [p.ahead for p in seen] == [0, 1, 2]
    tickets = [p.ticket for p in seen]
    assert all(t is not None for t in tickets)
    orders = [t.order for t in tickets if t is not None]
    assert orders == sorted(orders) and len(set(orders)) == 3
    assert [t.session for t in tickets if t is not None] == [s.session_id for s in stores]
    assert all(p.taken == 0 and p.highest is None and p.own == () for p in seen)


def test_claim_with_ticket_leaves_the_queue_in_the_same_step(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    first, second = a.enqueue(POOL, SLOTS, "a"), b.enqueue(POOL, SLOTS, "b")
    assert first.ticket is not None and second.ticket is not None
    claim = a.claim(POOL, 0, record("a"), ticket=first.ticket)
    assert claim.slot == 0 and claim.session == a.session_id
    now = b.position(second.ticket, SLOTS, "b")
    assert (now.ahead, now.taken, now.highest, now.ticket) == (0, 1, 0, second.ticket)
    assert a.position(first.ticket, SLOTS, "a").ticket is None, "a left the queue"


def test_position_counts_claims_in_the_range_only(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    for slot in (0, 2, 5, 12):  # 12 is outside SLOTS
        a.claim(POOL, slot, record(f"x{slot}"))
    pos = b.enqueue(POOL, SLOTS, "b")
    assert (pos.taken, pos.highest, pos.ahead) == (3, 5, 0)
    assert pos.ticket is not None
    exact = b.position(pos.ticket, SLOTS, "b", exact=True)
    assert exact.free_below == (1, 3, 4)
    assert b.enqueue(POOL, range(6, 10), "b").highest is None


def test_queue_entry_leaves_with_its_session(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    a.enqueue(POOL, SLOTS, "a")
    pos = b.enqueue(POOL, SLOTS, "b")
    assert pos.ahead == 1 and pos.ticket is not None
    ticket = pos.ticket
    a.close(release=True)
    wait_for(lambda: b.position(ticket, SLOTS, "b").ahead == 0, 5.0, "a's entry gone")


def test_dequeue_gives_up_the_place(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    first = a.enqueue(POOL, SLOTS, "a")
    second = b.enqueue(POOL, SLOTS, "b")
    assert first.ticket is not None and second.ticket is not None
    a.dequeue(first.ticket)
    assert b.position(second.ticket, SLOTS, "b").ahead == 0
    assert a.position(first.ticket, SLOTS, "a").ticket is None


def test_enqueue_reports_the_identity_s_claim_for_sticky_restart(open_store: Factory) -> None:
    old = open_store(ttl=SHORT_TTL)
    held = old.claim(POOL, 3, record("same", "boot1"))
    old.close(release=False)  # crash: the claim lingers under the dead session
    new, other = open_store(), open_store()
    pos = new.enqueue(POOL, SLOTS, "same")
    assert [(c.slot, c.version, c.record.nonce) for c in pos.own] == [(3, held.version, "boot1")]
    taken = new.reclaim(pos.own[0], record("same", "boot2"))
    assert taken.session == new.session_id
    assert other.enqueue(POOL, SLOTS, "other").own == ()
    # The index moved with the claim: a later boot finds the new one.
    later = other.enqueue(POOL, SLOTS, "same", sticky=True).own
    assert [(c.slot, c.version) for c in later] == [(3, taken.version)]


def test_release_removes_the_claim_from_positions(open_store: Factory) -> None:
    a, b = open_store(), open_store()
    claim = a.claim(POOL, 4, record("a"))
    assert a.release(claim) is True
    pos = b.enqueue(POOL, SLOTS, "a")
    assert (pos.taken, pos.highest, pos.own) == (0, None, ())
