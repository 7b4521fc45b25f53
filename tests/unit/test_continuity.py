"""NameKeeper: frees after a store outage wait for re-claims; our own claim shows at once.

A fake clock drives the window; ``tick()`` is what the keeper's thread calls when the
window's time has come, called here directly so no test sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from idstore.backends.base import Claim, SlotRecord
from idstore.config import PoolSettings
from idstore.continuity import NameKeeper
from idstore.pattern import Pattern
from idstore.view import ClusterView

POOL = PoolSettings("worker", Pattern.parse("worker{{.ID}}.tf.local."), 8)
GRACE = 5.0


def claim(slot: int, node: str, version: int = 1, addr: str = "192.0.2.1") -> Claim:
    return Claim("worker", slot, SlotRecord(node, "nonce", (addr,)), version, "s")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def view() -> ClusterView:
    return ClusterView([POOL])


@pytest.fixture
def keeper(view: ClusterView, clock: Clock) -> Iterator[NameKeeper]:
    k = NameKeeper(view, GRACE, clock=clock)
    yield k
    k.close()


def shown(view: ClusterView) -> dict[int, str]:
    return {s: m.node_id for s, m in view.members("worker").items()}


def test_frees_pass_at_once_while_the_store_is_stable(
    keeper: NameKeeper, view: ClusterView
) -> None:
    keeper.on_claims("worker", {0: claim(0, "a"), 1: claim(1, "b")}, True, 1)
    keeper.on_claims("worker", {1: None}, False, 2)
    assert shown(view) == {0: "a"}
    keeper.on_claims("worker", {}, True, 3)  # a listing without slot 0
    assert shown(view) == {}


def test_frees_during_and_after_an_outage_wait_for_the_owner_to_claim_again(
    keeper: NameKeeper, view: ClusterView, clock: Clock
) -> None:
    keeper.on_claims("worker", {0: claim(0, "a"), 1: claim(1, "b"), 2: claim(2, "c")}, True, 1)
    keeper.on_stale(clock.now)  # the store went away
    clock.now += 8
    keeper.on_stale(None)  # back: the window runs GRACE seconds from here
    # The first listing after the outage misses every session that expired meanwhile.
    keeper.on_claims("worker", {2: claim(2, "c")}, True, 5)
    assert shown(view) == {0: "a", 1: "b", 2: "c"}, "a live node's name went during the window"
    keeper.on_claims("worker", {0: claim(0, "a", version=6)}, False, 6)  # a claims again
    clock.now += GRACE - 0.1
    assert keeper.tick() is not None
    assert shown(view) == {0: "a", 1: "b", 2: "c"}
    clock.now += 0.2
    assert keeper.tick() is None
    # b never came back: its name goes when the window closes; a's stays.
    assert shown(view) == {0: "a", 2: "c"}
    keeper.on_claims("worker", {2: None}, False, 7)  # after the window: at once
    assert shown(view) == {0: "a"}


def test_another_node_taking_a_kept_slot_replaces_it_at_once(
    keeper: NameKeeper, view: ClusterView, clock: Clock
) -> None:
    keeper.on_claims("worker", {0: claim(0, "a")}, True, 1)
    keeper.on_stale(clock.now)
    keeper.on_claims("worker", {0: None}, False, 2)
    assert shown(view) == {0: "a"}
    keeper.on_claims("worker", {0: claim(0, "z", version=3)}, False, 3)
    assert shown(view) == {0: "z"}
    keeper.on_stale(None)
    clock.now += GRACE + 1
    keeper.tick()
    assert shown(view) == {0: "z"}, "the window's end removed a slot claimed again"


def test_own_claim_is_served_at_once_and_older_news_does_not_take_it_away(
    keeper: NameKeeper, view: ClusterView
) -> None:
    # Another process with our identity held slot 1 (address .1); we took it over.
    keeper.on_claims("worker", {1: claim(1, "dup", version=4, addr="192.0.2.1")}, True, 4)
    ours = claim(1, "dup", version=9, addr="192.0.2.2")
    keeper.pin("worker", ours)
    assert view.members("worker")[1].addresses == ("192.0.2.2",)
    # A listing read before our claim (revision 8) still shows the old owner, or none.
    keeper.on_claims("worker", {1: claim(1, "dup", version=4, addr="192.0.2.1")}, True, 8)
    assert view.members("worker")[1].addresses == ("192.0.2.2",)
    keeper.on_claims("worker", {}, True, 8)
    assert view.members("worker")[1].addresses == ("192.0.2.2",)
    # News from after our claim is the truth again.
    keeper.on_claims("worker", {1: claim(1, "x", version=12, addr="192.0.2.7")}, False, 12)
    assert view.members("worker")[1].node_id == "x"


def test_unpinned_claim_follows_the_store(keeper: NameKeeper, view: ClusterView) -> None:
    keeper.pin("worker", claim(3, "me", version=5))
    keeper.pin("worker", None)  # LOST / duplicate / stopped
    keeper.on_claims("worker", {}, True, 4)
    assert shown(view) == {}


def test_grace_zero_turns_the_rule_off(view: ClusterView, clock: Clock) -> None:
    k = NameKeeper(view, 0.0, clock=clock)
    try:
        k.on_claims("worker", {0: claim(0, "a")}, True, 1)
        k.on_stale(clock.now)
        k.on_claims("worker", {0: None}, False, 2)
        assert shown(view) == {}
    finally:
        k.close()
