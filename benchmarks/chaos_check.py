"""The chaos soak's independent checker: what the samples say about a run.

Input: a ``tests.harness.sampler.Sampler`` that probed every node's DNS (answers, rcodes,
the NSID each node asserts) and read the store every 100 ms, and the soak's fault log.
Output: violations by kind, each with examples. Kinds:

- ``dup-resolution`` / ``dup-assert`` / ``assert-vs-store`` — the sampler's own checks
  (one name answered as two owners, two nodes asserting one name, a node asserting a
  name the store gives to another: past its deadline). Probes of a node while it is cut
  off or paused, and until the cluster converged after that fault, are set aside as the
  sampler's ``isolated`` (nobody can reach such a node; its conflicts are counted apart);
- ``nxdomain-live`` — a node that is not under a fault answered NXDOMAIN for a name
  whose last owner in the store is a node that was under no fault for ttl + 2 s +
  ``reclaim_grace`` before, and that holds the name again afterwards: a live node's
  name, answered as nonexistent;
- ``no-slot`` — a node that answers, with no fault anywhere for ``NO_SLOT_AFTER`` s,
  asserts no name while the pool has a free slot;
- ``no-convergence`` — after a fault healed, the cluster did not converge (every node
  holding one slot, no killed process's claim left, every live node answering the
  store's view) within the soak's bound.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tests.harness.sampler import Observation, Owner, Sampler, TruthSample

NODE_FAULTS = frozenset({"node_kill", "node_pause", "node_partition"})


@dataclass
class Fault:
    kind: str
    target: int  # node index (node faults, clock jumps) or store member index
    start: float  # monotonic, when injected
    healed: float | None = None  # when undone
    converged: float | None = None  # when the cluster converged after the heal
    detail: str = ""

    def active(self, t: float, settle: float = 0.0) -> bool:
        """Injected and not yet converged (plus ``settle``) at ``t``."""
        end = self.converged if self.converged is not None else self.healed
        return self.start <= t and (end is None or t <= end + settle)


def node_faulted(faults: Iterable[Fault], node: int, t0: float, t1: float) -> bool:
    """Did a node fault of ``node`` overlap [t0, t1] (until its convergence)?"""
    for f in faults:
        if f.kind not in NODE_FAULTS or f.target != node:
            continue
        end = f.converged if f.converged is not None else f.healed
        if f.start <= t1 and (end is None or end >= t0):
            return True
    return False


def any_fault(faults: Iterable[Fault], t0: float, t1: float) -> bool:
    for f in faults:
        end = f.converged if f.converged is not None else f.healed
        if f.start <= t1 and (end is None or end >= t0):
            return True
    return False


@dataclass
class History:
    """The store's reads indexed for the checks (a 30-minute soak has ~20,000 reads and
    ~60,000 probes: each question is a binary search, not a scan)."""

    truths: Sequence[TruthSample]
    ends: list[float] = field(default_factory=list)  # end of each read, in order
    # name -> (end of each read that gave it an owner, that read's start, the owner)
    owned: dict[str, tuple[list[float], list[float], list[Owner]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ends = [t.end for t in self.truths]
        for t in self.truths:
            assert t.owners is not None
            for name, owner in t.owners.items():
                ends, starts, owners = self.owned.setdefault(name, ([], [], []))
                ends.append(t.end)
                starts.append(t.start)
                owners.append(owner)

    def owner_before(self, name: str, t: float) -> Owner | None:
        """The last owner of ``name`` in a read that ended before ``t``."""
        ends, _, owners = self.owned.get(name, ([], [], []))
        i = bisect.bisect_right(ends, t)
        return owners[i - 1] if i else None

    def holds_after(self, name: str, node_id: str, t: float) -> bool:
        """Does a read that started after ``t`` give ``name`` to ``node_id``?"""
        ends, starts, owners = self.owned.get(name, ([], [], []))
        # Reads end in order and each starts before it ends: only those ending after t
        # can have started after it.
        for i in range(bisect.bisect_right(ends, t), len(ends)):
            if starts[i] >= t and owners[i].node_id == node_id:
                return True
        return False

    def free_before(self, t: float, limit: int) -> int | None:
        """Free slots in the last read that ended before ``t`` (None: no read yet)."""
        i = bisect.bisect_right(self.ends, t)
        if not i:
            return None
        owners = self.truths[i - 1].owners
        assert owners is not None
        return limit - len(owners)


@dataclass
class Checker:
    sampler: Sampler
    faults: list[Fault]
    node_of: Mapping[str, int]  # probe (node) name -> node index
    node_ids: Mapping[int, str]  # node index -> its node_id
    names: Sequence[str]
    limit: int
    ttl: float
    grace: float
    no_slot_after: float

    def run(self) -> dict[str, list[str]]:
        s = self.sampler
        s.analyse()
        found: dict[str, list[str]] = {}
        for line in s.violations:
            kind = line.split()[1] if len(line.split()) > 1 else "?"
            found.setdefault(kind, []).append(line)
        history = History([t for t in s.truths if t.owners is not None])
        for ob in list(s.observations):
            if ob.answer is None:
                continue
            me = self.node_of.get(ob.probe)
            if me is None or node_faulted(self.faults, me, ob.start, ob.end):
                continue
            self._nxdomain(ob, history, found)
            self._no_slot(ob, history, found)
        return found

    def _nxdomain(self, ob: Observation, history: History, found: dict[str, list[str]]) -> None:
        assert ob.answer is not None
        window = self.ttl + 2.0 + self.grace
        for name in self.names:
            if ob.answer.rcodes.get(name) != "NXDOMAIN":
                continue
            owner = history.owner_before(name, ob.start)
            if owner is None:
                continue
            idx = next((i for i, nid in self.node_ids.items() if nid == owner.node_id), None)
            if idx is None or node_faulted(self.faults, idx, ob.start - window, ob.end):
                continue
            if history.holds_after(name, owner.node_id, ob.end):
                found.setdefault("nxdomain-live", []).append(
                    f"+{ob.start - self.sampler.t0:.2f}s nxdomain-live {ob.probe} answered "
                    f"NXDOMAIN for {name} of live {owner.node_id}"
                )

    def _no_slot(self, ob: Observation, history: History, found: dict[str, list[str]]) -> None:
        assert ob.answer is not None
        if ob.answer.nsid is not None:
            return
        if any_fault(self.faults, ob.start - self.no_slot_after, ob.end):
            return
        free = history.free_before(ob.start, self.limit)
        if not free:
            return
        found.setdefault("no-slot", []).append(
            f"+{ob.start - self.sampler.t0:.2f}s no-slot {ob.probe} asserts no name "
            f"with {free} slot(s) free"
        )
