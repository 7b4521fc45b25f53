"""ClusterView delivers every change to every subscriber, in order, whatever the threads.

Each test forces one interleaving with threads and joins (no sleeps): a subscriber that,
while handling one batch, makes another thread apply the next change. A subscriber
applies a batch to its own copy when it returns from the call (as the DNS zone does),
so a batch delivered early (overtaking) shows as a copy that ends in the wrong state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from idstore.backends.base import Claim, SlotRecord
from idstore.config import PoolSettings
from idstore.pattern import Pattern
from idstore.view import Change, ClusterView, Member

POOL = PoolSettings("worker", Pattern.parse("worker{{.ID}}.tf.local."), 8)


def claim(slot: int, node: str) -> Claim:
    return Claim("worker", slot, SlotRecord(node, "nonce", ("192.0.2.1",)), 1, "s")


class Copy:
    """A subscriber keeping its own map slot -> node id; ``during_first`` runs inside
    its first call, before that batch is applied to the copy."""

    def __init__(self, during_first: Callable[[], None] | None = None) -> None:
        self.batches: list[list[tuple[int, str | None]]] = []
        self.state: dict[int, str] = {}
        self._during_first = during_first

    def __call__(self, changes: Sequence[Change]) -> None:
        batch = [(slot, m.node_id if m else None) for _, slot, m in changes]
        if self._during_first is not None:
            run, self._during_first = self._during_first, None
            run()
        for slot, node in batch:
            if node is None:
                self.state.pop(slot, None)
            else:
                self.state[slot] = node
        self.batches.append(batch)


def in_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` on another thread and wait for it (bounded only against a hang)."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "apply() on another thread blocked on the subscriber"


def nodes(view: ClusterView) -> dict[int, str]:
    return {slot: m.node_id for slot, m in view.members("worker").items()}


def test_a_change_applied_while_the_first_content_is_delivered_is_not_lost() -> None:
    view = ClusterView([POOL])
    view.apply("worker", {0: claim(0, "a")})
    sub = Copy(during_first=lambda: in_thread(lambda: view.apply("worker", {0: None})))
    view.subscribe(sub)
    assert nodes(view) == {}
    assert sub.state == nodes(view)
    assert sub.batches == [[(0, "a")], [(0, None)]]


def test_batches_of_two_threads_reach_a_subscriber_in_the_order_applied() -> None:
    view = ClusterView([POOL])
    sub = Copy(during_first=lambda: in_thread(lambda: view.apply("worker", {0: claim(0, "b")})))
    view.subscribe(sub)
    view.apply("worker", {0: claim(0, "a")})
    assert nodes(view) == {0: "b"}
    assert sub.state == nodes(view)
    assert sub.batches == [[(0, "a")], [(0, "b")]]


def test_every_subscriber_sees_the_same_sequence_and_later_ones_start_from_the_content() -> None:
    view = ClusterView([POOL])
    first = Copy()
    view.subscribe(first)
    late = Copy(during_first=lambda: in_thread(lambda: view.apply("worker", {1: claim(1, "c")})))
    view.apply("worker", {0: claim(0, "a")})
    view.subscribe(late)
    view.apply("worker", {}, replace=True)
    assert nodes(view) == {} and first.state == {} and late.state == {}
    assert first.batches == [[(0, "a")], [(1, "c")], [(0, None), (1, None)]]
    assert late.batches == [[(0, "a")], [(1, "c")], [(0, None), (1, None)]]


def test_a_failing_subscriber_does_not_stop_delivery_to_the_others() -> None:
    view = ClusterView([POOL])

    def broken(changes: Sequence[Change]) -> None:
        raise RuntimeError("subscriber bug")

    after = Copy()
    view.subscribe(broken)
    view.subscribe(after)
    view.apply("worker", {0: claim(0, "a")})
    view.apply("worker", {0: None})
    assert after.batches == [[(0, "a")], [(0, None)]]


def test_a_repeated_claim_is_not_a_change() -> None:
    view = ClusterView([POOL])
    sub = Copy()
    view.subscribe(sub)
    view.apply("worker", {0: claim(0, "a")})
    member = view.members("worker")[0]
    view.apply("worker", {0: claim(0, "a")}, replace=True)
    assert sub.batches == [[(0, "a")]]
    assert view.members("worker")[0] is member  # the long-lived object is kept
    assert isinstance(member, Member)
