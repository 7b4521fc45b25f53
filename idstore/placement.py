"""The slot a place in the pool's waiting queue maps to (pure arithmetic on a Position).

The i-th waiting node takes the i-th lowest free slot: the holes below the highest claim
first (the store lists them in ``free_below`` when asked), then the slots above it.
"""

from __future__ import annotations

from idstore.backends.base import Position


def _holes(pos: Position) -> int:
    """Free slots below the highest claimed one."""
    top = pos.slots.start - 1 if pos.highest is None else pos.highest
    return (top - pos.slots.start + 1) - pos.taken


def needs_holes(pos: Position) -> bool:
    """Our slot is a hole below the highest claim and the store did not say where."""
    return pos.ahead < _holes(pos) and pos.free_below is None


def target(pos: Position) -> int | None:
    """The ``ahead``-th lowest free slot of ``pos.slots``; None when there is none."""
    holes = _holes(pos)
    if pos.ahead < holes:
        free = pos.free_below or ()
        return free[pos.ahead] if pos.ahead < len(free) else None
    top = pos.slots.start - 1 if pos.highest is None else pos.highest
    slot = top + 1 + (pos.ahead - holes)
    return slot if slot < pos.slots.stop else None
