"""Fault-suite infrastructure: a netns lab, stores on its bridge, clusters of real nodes.

Every measured figure a scenario produces goes through ``report()`` and is printed in
pytest's terminal summary at the end of the run (no file is written).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from idstore.backends.base import SlotStore
from tests.harness.netns import BridgeEtcd, BridgeZooKeeper, NetnsLab, NetnsNode
from tests.harness.nodes import HOST, NodeProcess, idstore_list, wait_for
from tests.harness.sampler import (
    Owner,
    Probe,
    Sampler,
    answers_view,
    dns_probe,
    expected_view,
    observer_store,
    store_owners,
)

TTL = 3.0
LIMIT = 8
POOL = "worker"
ZONE = "tf.local"
FAKECLOCK = Path(__file__).parent / "fakeclock"
N = TypeVar("N", bound=NodeProcess)

_SUMMARY: list[str] = []


def report(backend: str, scenario: str, text: str) -> None:
    """A measured figure for the closing note (printed at the end of the run)."""
    line = f"[{scenario} / {backend}] {text}"
    _SUMMARY.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SUMMARY:
        terminalreporter.section("fault suite: measured figures")
        for line in _SUMMARY:
            terminalreporter.write_line(line)


def name_of(slot: int) -> str:
    return f"{POOL}{slot}.{ZONE}"


NAMES = [name_of(s) for s in range(LIMIT)]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def lab() -> Iterator[NetnsLab]:
    """Five namespace hosts on one bridge, for the whole run; removed even on failure."""
    with NetnsLab(5) as lab:
        yield lab


@pytest.fixture(scope="session")
def lab_etcd(lab: NetnsLab) -> Iterator[BridgeEtcd]:
    server = BridgeEtcd(lab.gateway)
    with server:
        yield server


@pytest.fixture(scope="session")
def lab_zk(lab: NetnsLab) -> Iterator[BridgeZooKeeper]:
    server = BridgeZooKeeper(lab.gateway)
    with server:
        yield server


@pytest.fixture(params=["etcd", "zookeeper"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --------------------------------------------------------------------------- helpers


class LogMarks:
    """Polls node logs; remembers the monotonic time each marker was first seen."""

    def __init__(self) -> None:
        self._watched: dict[str, tuple[NodeProcess, list[str]]] = {}
        self.seen: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logmarks", daemon=True)
        self._thread.start()

    def watch(self, node: NodeProcess, *markers: str) -> None:
        self._watched[node.name] = (node, list(markers))

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, (node, markers) in list(self._watched.items()):
                text = node.log()
                for m in markers:
                    if (name, m) not in self.seen and m in text:
                        self.seen[(name, m)] = time.monotonic()
            self._stop.wait(0.05)

    def first(self, node: NodeProcess, marker: str) -> float | None:
        return self.seen.get((node.name, marker))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


_CLAIMED = re.compile(r"claimed slot (\d+) of pool \S+: (\S+) -> (\S+)")


def claims_in_log(node: NodeProcess) -> list[tuple[int, str]]:
    """Every (slot, address) the node logged claiming, in order."""
    return [(int(m[1]), m[3].rstrip(",")) for m in _CLAIMED.finditer(node.log())]


class FaultCluster:
    """Nodes sharing one config file on one store, plus a store client of the test's own.

    Nodes run either on loopback (``node()``, publishing 192.0.2.x as data) or in a netns
    lab host (``host_node()``, no --address: the namespace's address is detected).
    """

    def __init__(
        self,
        backend: str,
        endpoints: tuple[str, ...],
        tmp: Path,
        netns: bool = False,
        dns_extra: str = "",
    ) -> None:
        self.backend = backend
        self.endpoints = endpoints
        self.tmp = tmp
        self.cluster_name = f"f{uuid.uuid4().hex[:8]}"
        self.config = tmp / "idstore.toml"
        listen = 'listen = ["0.0.0.0:53"]\n' if netns else ""
        self.config.write_text(
            f'backend = "{backend}"\n'
            f"endpoints = {json.dumps(list(endpoints))}\n"
            f'cluster = "{self.cluster_name}"\n'
            f"ttl = {TTL}\n"
            "connect_timeout = 2\n"
            "request_timeout = 1\n"
            f'[pools.{POOL}]\npattern = "{POOL}{{{{.ID}}}}.{ZONE}."\nlimit = {LIMIT}\n'
            "port = 2222\n"
            f"[dns]\n{listen}ttl = 1\nnegative_ttl = 1\n{dns_extra}"
        )
        self.nodes: dict[str, NodeProcess] = {}
        self.address: dict[str, str] = {}  # node name -> the address it publishes
        self.marks = LogMarks()
        self._store: SlotStore | None = None

    # -- nodes ---------------------------------------------------------------------------

    def node(
        self,
        node_id: str,
        address: str,
        env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> NodeProcess:
        n = NodeProcess(
            ["--config", str(self.config), "--node-id", node_id, "--address", address],
            name=name or node_id,
            env=env,
            workdir=self.tmp,
        )
        return self._add(n, address)

    def host_node(self, lab: NetnsLab, index: int, env: dict[str, str] | None = None) -> NetnsNode:
        n = NetnsNode(
            lab,
            index,
            ["--config", str(self.config), "--node-id", f"host{index}"],
            name=f"host{index}",
            workdir=self.tmp,
            env=env,
        )
        self._add(n, lab.hosts[index].address)
        return n

    def _add(self, n: N, address: str) -> N:
        self.nodes[n.name] = n
        self.address[n.name] = address
        self.marks.watch(n, "claimed slot", "LOST", "no longer ours", "duplicate node identity")
        n.start()
        return n

    def probe_of(self, n: NodeProcess) -> Probe:
        if isinstance(n, NetnsNode):
            inner = dns_probe("127.0.0.1", 53)
            host = n.host
            return lambda names: host.run(lambda: inner(names)).result(timeout=10)
        return dns_probe(HOST, n.port)

    def probes(self) -> dict[str, Probe]:
        return {
            k: self.probe_of(n)
            for k, n in list(self.nodes.items())
            if n.proc is not None and n.proc.poll() is None
        }

    def sampler(self) -> Sampler:
        return Sampler(self.probes, NAMES, truth=self.truth, identity=dict(self.address))

    # -- the store, as the test sees it ----------------------------------------------------

    def store(self) -> SlotStore:
        if self._store is None:
            self._store = observer_store(self.backend, self.endpoints, self.cluster_name, TTL)
        return self._store

    def truth(self) -> Mapping[str, Owner]:
        return store_owners(self.store(), POOL, name_of)

    def holders(self) -> dict[str, list[int]]:
        """node_id -> slots it holds in the store."""
        out: dict[str, list[int]] = {}
        for s, c in self.store().list(POOL).claims.items():
            out.setdefault(c.record.node_id, []).append(s)
        return out

    def list_json(self) -> list[dict[str, Any]]:
        """``idstore list --json`` against the same config (the CLI's own view)."""
        return idstore_list(self.config)

    def expected_view(self) -> dict[str, frozenset[str]]:
        """What every DNS server should answer, per the store."""
        return expected_view(self.truth(), NAMES)

    def converged(self) -> bool:
        """Every live node answers exactly the store's view."""
        try:
            want = self.expected_view()
            return all(answers_view(p(NAMES), NAMES, want) for p in self.probes().values())
        except Exception:
            return False

    def wait_converged(self, timeout: float, what: str = "every view converged") -> float:
        return wait_for(self.converged, timeout, what, 0.2)

    def close(self) -> None:
        self.marks.close()
        for n in self.nodes.values():
            with contextlib.suppress(Exception):
                n.send(18)  # SIGCONT, in case a test left one stopped
                n.__exit__()
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
