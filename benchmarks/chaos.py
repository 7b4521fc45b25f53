"""Chaos soak: a seeded, randomized schedule of faults against real idstore nodes on real
3-member stores, with an independent checker sampling every node and the store.

Per backend (``--backend etcd,zookeeper``): a network-namespace lab (``NetnsLab``) whose
first three hosts run the store's three members (``tests.harness.ns_cluster``: each on
its own host, so a member can be cut off) and whose next ``--nodes`` hosts each run one
``idstore serve`` (address detected in its namespace, its own fake wall clock). Then,
until ``--duration`` seconds have passed, one fault at a time, drawn from ``--seed``:

- ``node_kill``: kill -9 a node, restart it (same identity) after the hold;
- ``node_pause``: SIGSTOP a node past the ttl, then SIGCONT;
- ``node_partition``: cut a node's cable, then restore it;
- ``member_partition``: cut a store member's cable (from clients and peers);
- ``member_isolate``: cut a store member off from its peers only (clients reach it);
- ``member_kill``: kill -9 a store member, restart it on its data;
- ``store_restart``: kill -9 every member, restart them all on their data (ZooKeeper
  sessions expire meanwhile; etcd extends its leases);
- ``clock_jump``: move a node's wall clock by an hour (forward or back), then back.

After each heal the soak waits (at most ``CONVERGE_MAX`` s) until the cluster converged:
every node holds one slot, no claim of a killed process is left (its session expired or
the restarted process took it back), and every node answers the store's view. Meanwhile
``tests.harness.sampler.Sampler`` probes every node's DNS and reads the store every
100 ms, and ``benchmarks.chaos_check.Checker`` turns the samples into violations.

Prints one JSON summary per backend: seed, faults with their convergence times, sample
counts and every violation kind with a count and examples. Exit status 1 when any run
had a violation. Needs root (network namespaces). Usage::

    python benchmarks/chaos.py [--backend etcd,zookeeper] [--duration 120] [--seed N]
                               [--nodes 4] [--reclaim-grace 5] [--keep-logs]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chaos_check import Checker, Fault
from tests.harness.netns import NetnsLab, NetnsNode
from tests.harness.ns_cluster import NsCluster
from tests.harness.sampler import (
    Owner,
    Sampler,
    answers_view,
    dns_probe,
    expected_view,
    observer_store,
    store_owners,
)

TTL = 3.0
GRACE = 5.0  # dns.reclaim_grace of the nodes
LIMIT = 8
POOL, ZONE = "worker", "tf.local"
MEMBERS = 3
CONVERGE_MAX = 60.0  # after a heal: longer is a violation
NO_SLOT_AFTER = 3 * TTL + GRACE + 10  # fault-free seconds after which a node must hold a slot
MAX_DURATION = 3600.0
FAKECLOCK = Path(__file__).resolve().parent.parent / "tests" / "faults" / "fakeclock"
KINDS = (
    "node_kill",
    "node_pause",
    "node_partition",
    "member_partition",
    "member_isolate",
    "member_kill",
    "store_restart",
    "clock_jump",
)
NAMES = [f"{POOL}{s}.{ZONE}" for s in range(LIMIT)]


class Soak:
    """One backend's soak; ``run()`` returns its JSON summary."""

    def __init__(
        self, backend: str, seed: int, duration: float, nodes: int, tmp: Path, grace: float
    ) -> None:
        self.backend, self.seed, self.duration, self.n = backend, seed, duration, nodes
        self.grace = grace
        self.rng = random.Random(seed)
        self.tmp = tmp / backend
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.cluster = f"chaos{uuid.uuid4().hex[:6]}"
        self.faults: list[Fault] = []
        self.nodes: list[NetnsNode] = []
        self.clocks: list[Path] = []
        # Boots of killed nodes: until their claims are gone (expired or taken back by
        # the restarted process) the cluster has not converged, whatever DNS answers.
        self.dead_nonces: set[str] = set()
        self.truth: Callable[[], dict[str, Owner]] = dict  # the store's owners (in _soak)

    # -- setup -----------------------------------------------------------------------

    def _config(self, endpoints: tuple[str, ...]) -> Path:
        path = self.tmp / "idstore.toml"
        path.write_text(
            f'backend = "{self.backend}"\nendpoints = {json.dumps(list(endpoints))}\n'
            f'cluster = "{self.cluster}"\nttl = {TTL}\nconnect_timeout = 2\n'
            f'request_timeout = 1\n[pools.{POOL}]\npattern = "{POOL}{{{{.ID}}}}.{ZONE}."\n'
            f'limit = {LIMIT}\nport = 2222\n[dns]\nlisten = ["0.0.0.0:53"]\nttl = 1\n'
            f"negative_ttl = 1\nreclaim_grace = {self.grace}\n"
        )
        return path

    def _node(self, lab: NetnsLab, i: int, config: Path) -> NetnsNode:
        env = {
            "PYTHONPATH": f"{FAKECLOCK}:{Path.cwd()}",
            "IDSTORE_FAKE_CLOCK_FILE": str(self.clocks[i]),
        }
        return NetnsNode(
            lab,
            MEMBERS + i,
            ["--config", str(config), "--node-id", f"n{i}"],
            f"n{i}",
            self.tmp,
            env=env,
        ).start()

    # -- the run ---------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        with NetnsLab(MEMBERS + self.n) as lab, NsCluster(self.backend, lab) as store:
            config = self._config(store.endpoints)
            for i in range(self.n):
                self.clocks.append(self.tmp / f"clock{i}")
                self.clocks[i].write_text("0")
            self.nodes = [self._node(lab, i, config) for i in range(self.n)]
            observer = observer_store(self.backend, store.endpoints, self.cluster, TTL)
            try:
                return self._soak(lab, store, config, observer)
            finally:
                for n in self.nodes:
                    if n.proc is not None and n.proc.poll() is None:
                        n.send(signal.SIGCONT)
                        n.kill()
                observer.close(release=True)

    def _soak(self, lab: NetnsLab, store: NsCluster, config: Path, observer: Any) -> dict[str, Any]:
        def truth() -> Any:
            return store_owners(observer, POOL, lambda s: f"{POOL}{s}.{ZONE}")

        self.truth = truth

        def probe_of(n: NetnsNode) -> Any:
            inner = dns_probe("127.0.0.1", 53)
            return lambda names: n.host.run(lambda: inner(names)).result(timeout=10)

        def probes() -> dict[str, Any]:
            return {
                n.name: probe_of(n)
                for n in self.nodes
                if n.proc is not None and n.proc.poll() is None
            }

        def converged() -> bool:
            try:
                owners = truth()
                if sorted(o.node_id for o in owners.values()) != [f"n{i}" for i in range(self.n)]:
                    return False
                if any(o.nonce in self.dead_nonces for o in owners.values()):
                    return False
                want = expected_view(owners, NAMES)
                live = probes()
                return len(live) == self.n and all(
                    answers_view(p(NAMES), NAMES, want) for p in live.values()
                )
            except Exception:
                return False

        t_setup = time.monotonic()
        _wait(converged, 120, "the cluster to form")
        setup_s = time.monotonic() - t_setup
        identity = {n.name: n.host.address for n in self.nodes}
        sampler = Sampler(probes, NAMES, truth=truth, identity=identity)
        with sampler:
            t_end = time.monotonic() + self.duration
            while time.monotonic() < t_end:
                fault = self._inject(lab, store, config, sampler)
                self.faults.append(fault)
                self._heal(fault, lab, store, config)
                fault.healed = time.monotonic()
                if _wait(converged, CONVERGE_MAX, None):
                    fault.converged = time.monotonic()
                for n in self.nodes:
                    sampler.isolated.discard(n.name)
                time.sleep(self.rng.uniform(0.5, 2.0))
        checker = Checker(
            sampler,
            self.faults,
            {n.name: i for i, n in enumerate(self.nodes)},
            {i: f"n{i}" for i in range(self.n)},
            NAMES,
            LIMIT,
            TTL,
            self.grace,
            NO_SLOT_AFTER,
        )
        found = checker.run()
        for f in self.faults:
            if f.converged is None:
                found.setdefault("no-convergence", []).append(
                    f"{f.kind} {f.target} {f.detail}: not converged {CONVERGE_MAX:.0f}s after heal"
                )
        return self._summary(sampler, found, setup_s)

    # -- faults ----------------------------------------------------------------------

    def _inject(self, lab: NetnsLab, store: NsCluster, config: Path, s: Sampler) -> Fault:
        kind = self.rng.choice(KINDS)
        target = self.rng.randrange(MEMBERS if kind.startswith("member") else self.n)
        hold = TTL * self.rng.uniform(0.5, 3.0)
        f = Fault(kind, target, time.monotonic(), detail=f"hold {hold:.1f}s")
        node = self.nodes[target] if not kind.startswith("member") else None
        if kind == "node_kill" and node is not None:
            with contextlib.suppress(Exception):  # a store down: its claims die with it
                self.dead_nonces.update(
                    o.nonce for o in self.truth().values() if o.node_id == node.name
                )
            node.kill()
        elif kind == "node_pause" and node is not None:
            s.isolated.add(node.name)
            hold = TTL * self.rng.uniform(1.2, 3.0)  # past the ttl
            f.detail = f"hold {hold:.1f}s"
            node.send(signal.SIGSTOP)
        elif kind == "node_partition" and node is not None:
            s.isolated.add(node.name)
            lab.link_down(MEMBERS + target)
        elif kind == "member_partition":
            lab.link_down(target)
        elif kind == "member_isolate":
            store.isolate_peers(target)
        elif kind == "member_kill":
            store.kill(target)
        elif kind == "store_restart":
            for k in range(MEMBERS):
                store.kill(k)
        elif kind == "clock_jump":
            jump = self.rng.choice((3600, -3600))
            f.detail += f", {jump:+d}s"
            self.clocks[target].write_text(str(jump))
        time.sleep(hold)
        return f

    def _heal(self, f: Fault, lab: NetnsLab, store: NsCluster, config: Path) -> None:
        if f.kind == "node_kill":
            self.nodes[f.target] = self._node(lab, f.target, config)
        elif f.kind == "node_pause":
            self.nodes[f.target].send(signal.SIGCONT)
        elif f.kind == "node_partition":
            lab.link_up(MEMBERS + f.target)
        elif f.kind == "member_partition":
            lab.link_up(f.target)
        elif f.kind == "member_isolate":
            store.heal_peers(f.target)
        elif f.kind == "member_kill":
            store.start(f.target)
        elif f.kind == "store_restart":
            store.start()
        elif f.kind == "clock_jump":
            self.clocks[f.target].write_text("0")

    # -- report ----------------------------------------------------------------------

    def _summary(self, s: Sampler, found: dict[str, list[str]], setup_s: float) -> dict[str, Any]:
        conv = [
            f.converged - f.healed
            for f in self.faults
            if f.converged is not None and f.healed is not None
        ]
        t0 = s.t0
        return {
            "backend": self.backend,
            "seed": self.seed,
            "duration_s": round(self.duration),
            "nodes": self.n,
            "store_members": MEMBERS,
            "ttl_s": TTL,
            "reclaim_grace_s": self.grace,
            "setup_s": round(setup_s, 1),
            "faults": [
                {
                    "t": round(f.start - t0, 1),
                    "kind": f.kind,
                    "target": f.target,
                    "detail": f.detail,
                    "converge_s": None
                    if f.converged is None or f.healed is None
                    else round(f.converged - f.healed, 2),
                }
                for f in self.faults
            ],
            "converge_s": {
                "p50": round(statistics.median(conv), 2) if conv else None,
                "max": round(max(conv), 2) if conv else None,
            },
            "samples": s.samples,
            "dns_probes": len(s.observations),
            "store_reads": len(s.truths),
            "handovers_withdrawn": s.handovers,
            "isolated_conflicts": len(s.isolated_conflicts),
            "violations": {k: len(v) for k, v in sorted(found.items())},
            "violations_total": sum(len(v) for v in found.values()),
            "examples": {k: v[:5] for k, v in sorted(found.items())},
        }


def _wait(pred: Any, timeout: float, what: str | None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.3)
    if what is not None:
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
    return False


def run(
    backend: str,
    seed: int,
    duration: float,
    nodes: int = 4,
    grace: float = GRACE,
    keep_logs: bool = False,
) -> dict[str, Any]:
    """One backend's soak (bounded: ``duration`` at most MAX_DURATION).

    With ``keep_logs`` the working directory (each node's log, the store's data) is left
    in place and named in the summary as ``logs``: a violation in a long soak is only
    worth finding if what the nodes said at that moment can be read afterwards.
    """
    duration = max(1.0, min(duration, MAX_DURATION))
    if keep_logs:
        tmp = tempfile.mkdtemp(prefix="idstore-chaos-")
        return {**Soak(backend, seed, duration, nodes, Path(tmp), grace).run(), "logs": tmp}
    with tempfile.TemporaryDirectory(prefix="idstore-chaos-") as tmp:
        return Soak(backend, seed, duration, nodes, Path(tmp), grace).run()


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--backend", default="etcd,zookeeper")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds per backend")
    ap.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    ap.add_argument("--nodes", type=int, default=4, help="idstore nodes (1-5)")
    ap.add_argument(
        "--reclaim-grace",
        type=float,
        default=GRACE,
        help="the nodes' dns.reclaim_grace (0 shows what the checker finds without it)",
    )
    ap.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the nodes' logs and the store's data; the summary names the directory",
    )
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    bad = 0
    for backend in args.backend.split(","):
        nodes = max(1, min(args.nodes, 5))
        summary = run(
            backend.strip(), seed, args.duration, nodes, args.reclaim_grace, args.keep_logs
        )
        bad += summary["violations_total"]
        print(json.dumps(summary), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
