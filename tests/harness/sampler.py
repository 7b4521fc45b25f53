"""Violation sampling while a fault is under way.

A ``Sampler`` polls, every ``interval`` seconds on its own threads:

- every node's DNS server (a *probe*): what each name resolves to, the rcode and TTL of
  each answer, and the identity the node asserts (the NSID option of its replies,
  RFC 5001: the name of the slot it believes it holds, empty while it holds none);
- optionally the store itself (a *truth* function: name -> owner), on a separate thread
  so a store outage never slows the DNS sampling down.

Checked per sample (``violations``):

- ``dup-resolution``: one name resolves to two different addresses across the DNS
  servers of the cluster (probes in ``isolated`` — a partitioned host nobody can reach —
  are checked separately and reported as ``isolated_conflicts``);
- ``dup-assert``: two nodes assert the same name at the same moment.

Checked after the run (``analyse``), with the truth history:

- ``assert-vs-store``: a node asserted a name while the store, read both before and
  after that probe with the same result, gave that name to another node.
- A ``dup-resolution`` or ``dup-assert`` sample is withdrawn when it is exactly one
  handover in flight: the store moved the name straight from one owner to the other
  (a restarted node taking its slot back, the latest of two processes with one
  identity winning), the two answers are those two owners, and the sample started
  within ``HANDOVER_LAG`` of the store reads that bracket the move. Nodes learn of a
  change through their own watches, one after the other; what must not happen is two
  owners that the store never had back to back, or an old owner outliving the bound.

Everything is measured on ``time.monotonic()`` of the test process.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from idstore import backends
from idstore.backends.base import SlotStore, StoreOptions


@dataclass(frozen=True)
class Answer:
    """One probe of one DNS server: every name at about the same moment."""

    nsid: str | None  # the name the server asserts as its own; None when it asserts none
    addrs: Mapping[str, frozenset[str]]  # name -> A addresses (empty: none)
    rcodes: Mapping[str, str]  # only the names asked before the server went silent
    max_ttl: int
    complete: bool = True  # every name was answered


@dataclass(frozen=True)
class Owner:
    """Who the store gives a name to."""

    node_id: str
    nonce: str
    version: int
    addresses: tuple[str, ...]


# How long after a direct handover (owner A -> owner B in the store) a node may still
# answer or assert A: the bound the issue sets for a name to follow a clean stop.
HANDOVER_LAG = 1.0

Probe = Callable[[Sequence[str]], Answer | None]  # None: the server did not answer
Truth = Callable[[], Mapping[str, Owner]]  # raises when the store cannot be read


def dns_probe(host: str, port: int, timeout: float = 0.5, tries: int = 1) -> Probe:
    """A probe of the DNS server at ``host:port`` over UDP, asking for NSID.

    A query unanswered after ``timeout`` is sent again, up to ``tries`` times. One try is
    the default: the checker judges a sample as one moment, and a probe stretched by
    retries spans a handover (two owners "at once" that were not). A server silent to
    every try ends the probe; the names not asked are absent from the answer
    (``complete`` False), so a test counts them as unanswered, not as wrong answers.
    """

    def probe(names: Sequence[str]) -> Answer | None:
        nsids: set[str] = set()
        addrs: dict[str, frozenset[str]] = {}
        rcodes: dict[str, str] = {}
        max_ttl = 0
        answered = False
        for name in names:
            q = dns.message.make_query(
                name, "A", use_edns=0, options=[dns.edns.GenericOption(dns.edns.NSID, b"")]
            )
            r = _ask(q, host, port, timeout, tries)
            if r is None:
                break  # not answering now: the next sample asks again
            answered = True
            rcodes[name] = dns.rcode.to_text(r.rcode())
            found: set[str] = set()
            for rrset in r.answer:
                if rrset.rdtype == dns.rdatatype.A:
                    max_ttl = max(max_ttl, rrset.ttl)
                    found.update(rd.to_text() for rd in rrset)
            addrs[name] = frozenset(found)
            for opt in r.options:
                if opt.otype == dns.edns.NSID:
                    data = opt.to_wire() or b""
                    nsids.add(data.decode("ascii", "replace").rstrip("."))
        if not answered:
            return None
        nsids.discard("")
        # Asserting two names within one probe would itself be a change mid-probe.
        nsid = sorted(nsids)[-1] if nsids else None
        return Answer(nsid, addrs, rcodes, max_ttl, complete=len(rcodes) == len(names))

    return probe


def _ask(
    q: dns.message.Message, host: str, port: int, timeout: float, tries: int
) -> dns.message.Message | None:
    for _ in range(tries):
        try:
            return dns.query.udp(q, host, port=port, timeout=timeout)
        except dns.exception.Timeout:
            continue
        except OSError:
            return None  # refused or unreachable: no retry can help
    return None


@dataclass
class Observation:
    start: float
    end: float
    probe: str
    answer: Answer | None


@dataclass
class TruthSample:
    start: float
    end: float
    owners: Mapping[str, Owner] | None  # None: the store could not be read


@dataclass(frozen=True)
class _Dup:
    """A dup-resolution / dup-assert sample, kept for the handover check."""

    text: str
    start: float
    end: float
    name: str
    addresses: frozenset[str]  # the addresses answered, or of the asserting nodes


@dataclass
class Report:
    samples: int = 0
    violations: list[str] = field(default_factory=list)
    isolated_conflicts: list[str] = field(default_factory=list)


class Sampler:
    """See the module docstring. A context manager: sampling runs inside the ``with``."""

    def __init__(
        self,
        probes: Callable[[], Mapping[str, Probe]],
        names: Sequence[str],
        truth: Truth | None = None,
        identity: Mapping[str, str] | None = None,
        interval: float = 0.1,
    ) -> None:
        self.probes = probes
        self.names = list(names)
        self.truth = truth
        # probe name -> the address it publishes (who it is, for assert-vs-store)
        self.identity = dict(identity or {})
        self.interval = interval
        self.isolated: set[str] = set()
        self.observations: list[Observation] = []
        self.truths: list[TruthSample] = []
        self.samples = 0
        self.violations: list[str] = []
        self.isolated_conflicts: list[str] = []
        self.isolated_conflict_times: list[tuple[str, float]] = []  # (probe, sample start)
        self._dups: list[_Dup] = []
        self.handovers = 0  # dup samples withdrawn as one handover in flight
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name="sampler", daemon=True)]
        if truth is not None:
            self._threads.append(
                threading.Thread(target=self._run_truth, name="sampler-truth", daemon=True)
            )

    # -- sampling --------------------------------------------------------------------

    def _run(self) -> None:
        with ThreadPoolExecutor(8) as pool:
            while not self._stop.is_set():
                started = time.monotonic()
                # Judged by who was isolated when the sample began, not when its answers
                # are in: a test that ends a host's isolation while a sample is in flight
                # must not have answers asked of the isolated host checked as the
                # cluster's (a partition test, clean-clone run 5 at 337e903).
                isolated = frozenset(self.isolated)
                probes = dict(self.probes())
                futures = {k: pool.submit(p, self.names) for k, p in probes.items()}
                answers: dict[str, Answer | None] = {}
                for k, f in futures.items():
                    try:
                        answers[k] = f.result(timeout=10)
                    except Exception:
                        answers[k] = None
                ended = time.monotonic()
                with self._lock:
                    for k, a in answers.items():
                        self.observations.append(Observation(started, ended, k, a))
                    self._check(started, ended, answers, isolated)
                    self.samples += 1
                self._stop.wait(max(0.0, self.interval - (ended - started)))

    def _run_truth(self) -> None:
        assert self.truth is not None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                owners: Mapping[str, Owner] | None = dict(self.truth())
            except Exception:
                owners = None
            ended = time.monotonic()
            with self._lock:
                self.truths.append(TruthSample(started, ended, owners))
            self._stop.wait(max(0.0, self.interval - (ended - started)))

    def _check(
        self,
        t: float,
        end: float,
        answers: Mapping[str, Answer | None],
        isolated: frozenset[str] = frozenset(),
    ) -> None:
        at = f"+{t - self.t0:.2f}s"
        for name in self.names:
            seen: dict[str, str] = {}
            for k, a in answers.items():
                if a is None or k in isolated:
                    continue
                for addr in a.addrs.get(name, ()):
                    seen.setdefault(addr, k)
            if len(seen) > 1:
                text = f"{at} dup-resolution {name} -> {seen}"
                self.violations.append(text)
                self._dups.append(_Dup(text, t, end, name, frozenset(seen)))
            for k in isolated:
                a = answers.get(k)
                theirs = set(a.addrs.get(name, ())) if a else set()
                if seen and theirs and not theirs <= set(seen):
                    self.isolated_conflict_times.append((k, t))
                    self.isolated_conflicts.append(
                        f"{at} {k} (isolated) answers {name} -> {sorted(theirs)}, "
                        f"the cluster -> {sorted(seen)}"
                    )
        asserted: dict[str, str] = {}
        for k, a in answers.items():
            if a is None or a.nsid is None:
                continue
            if a.nsid in asserted:
                text = f"{at} dup-assert {a.nsid} by {asserted[a.nsid]} and {k} at once"
                self.violations.append(text)
                who = {self.identity.get(asserted[a.nsid]), self.identity.get(k)}
                if None not in who:
                    addrs = frozenset(x for x in who if x is not None)
                    self._dups.append(_Dup(text, t, end, f"{a.nsid}.", addrs))
            asserted[a.nsid] = k

    # -- results ---------------------------------------------------------------------

    def analyse(self) -> list[str]:
        """Post-run check of assertions against the store; adds to and returns violations."""
        with self._lock:
            truths = [s for s in self.truths if s.owners is not None]
            found: list[str] = []
            for ob in self.observations:
                if ob.answer is None or ob.answer.nsid is None:
                    continue
                me = self.identity.get(ob.probe)
                if me is None:
                    continue
                before = [s for s in truths if s.end <= ob.start]
                after = [s for s in truths if s.start >= ob.end]
                if not before or not after:
                    continue
                o1 = before[-1].owners.get(ob.answer.nsid) if before[-1].owners else None
                o2 = after[0].owners.get(ob.answer.nsid) if after[0].owners else None
                if o1 is None or o2 is None or o1 != o2:
                    continue
                if me not in o1.addresses:
                    found.append(
                        f"+{ob.start - self.t0:.2f}s assert-vs-store {ob.probe} asserts "
                        f"{ob.answer.nsid}, the store gives it to {o1.node_id} {o1.addresses}"
                    )
            self.violations.extend(found)
            for dup in self._dups:
                if dup.text in self.violations and _handover(truths, dup):
                    self.violations.remove(dup.text)
                    self.handovers += 1
            self._dups = []
            return list(self.violations)

    def asserted_times(self, probe: str, name: str) -> list[tuple[float, float]]:
        """(start, end) of every probe of ``probe`` in which it asserted ``name``."""
        with self._lock:
            return [
                (o.start, o.end)
                for o in self.observations
                if o.probe == probe and o.answer is not None and o.answer.nsid == name
            ]

    def store_changes(self, name: str) -> list[tuple[float, Owner | None]]:
        """(end time of the read, owner) each time the store's owner of ``name`` changed."""
        out: list[tuple[float, Owner | None]] = []
        with self._lock:
            for s in self.truths:
                if s.owners is None:
                    continue
                owner = s.owners.get(name)
                if not out or out[-1][1] != owner:
                    out.append((s.end, owner))
        return out

    def rcodes(self, probe: str | None = None) -> Counter[str]:
        c: Counter[str] = Counter()
        with self._lock:
            for o in self.observations:
                if (probe is None or o.probe == probe) and o.answer is not None:
                    c.update(o.answer.rcodes.values())
                elif probe is None or o.probe == probe:
                    c["no-answer"] += 1
        return c

    def observations_of(self, probe: str) -> list[Observation]:
        with self._lock:
            return [o for o in self.observations if o.probe == probe]

    def __enter__(self) -> Sampler:
        self.t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            with contextlib.suppress(RuntimeError):
                t.join(30)


def _handover(truths: Sequence[TruthSample], dup: _Dup) -> bool:
    """Is ``dup`` one direct move of its name between two owners, seen within
    HANDOVER_LAG of the store reads that bracket the move? (see the module docstring)"""
    name = dup.name if dup.name.endswith(".") else dup.name + "."
    bare = name.rstrip(".")
    previous: tuple[TruthSample, Owner] | None = None
    for sample in truths:
        assert sample.owners is not None
        owner = sample.owners.get(name) or sample.owners.get(bare)
        if owner is None:
            previous = None  # freed in between: not a direct handover
            continue
        if previous is not None and previous[1] != owner:
            moved = {*previous[1].addresses, *owner.addresses}
            if (
                dup.addresses <= moved
                and previous[0].start <= dup.end
                and dup.start <= sample.end + HANDOVER_LAG
            ):
                return True
        previous = (sample, owner)
    return False


def observer_store(backend: str, endpoints: tuple[str, ...], cluster: str, ttl: float) -> SlotStore:
    """An opened store with short request timeouts, for a test to read the truth from
    (it never claims: it only lists)."""
    opts = StoreOptions(
        endpoints=endpoints, ttl=ttl, cluster=cluster, request_timeout=0.5, connect_timeout=5
    )
    store = backends.create(backend, opts)
    store.open()
    return store


def store_owners(store: SlotStore, pool: str, name_of: Callable[[int], str]) -> dict[str, Owner]:
    """Who the store gives each claimed name of ``pool`` to, right now."""
    return {
        name_of(s): Owner(c.record.node_id, c.record.nonce, c.version, c.record.addresses)
        for s, c in store.list(pool).claims.items()
    }


def expected_view(owners: Mapping[str, Owner], names: Sequence[str]) -> dict[str, frozenset[str]]:
    """What every DNS server should answer for ``names``, per the store's owners."""
    return {n: frozenset(owners[n].addresses) if n in owners else frozenset() for n in names}


def answers_view(
    answer: Answer | None, names: Sequence[str], want: Mapping[str, frozenset[str]]
) -> bool:
    """Did one server's answer match ``want`` for every name (no answer: no)?"""
    return answer is not None and {n: answer.addrs.get(n, frozenset()) for n in names} == want
