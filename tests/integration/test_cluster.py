"""Many real ``idstore serve`` processes, one config file, a real etcd or ZooKeeper.

Every test runs on both stores. Times measured here are printed (pytest -s shows them)
for the closing notes; tests assert on outcomes and generous bounds, not on speed.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.harness.nodes import NodeProcess, addresses_of, idstore_list, wait_for

TTL = 3.0
LIMIT = 8
PATTERN = "worker{{.ID}}.tf.local."


class Cluster:
    """Nodes sharing one config file; node i publishes 192.0.2.(i+1) (data only)."""

    def __init__(self, server: Any, backend: str, tmp: Path) -> None:
        self.server = server
        self.backend = backend
        self.tmp = tmp
        self.config = tmp / "idstore.toml"
        self.config.write_text(
            f'backend = "{backend}"\n'
            f"endpoints = {json.dumps(list(server.endpoints))}\n"
            f'cluster = "c{uuid.uuid4().hex[:8]}"\n'
            f"ttl = {TTL}\n"
            f"connect_timeout = 2\n"
            f"request_timeout = 1\n"
            f'[pools.worker]\npattern = "{PATTERN}"\nlimit = {LIMIT}\nport = 2222\n'
            f"[dns]\nttl = 1\nnegative_ttl = 1\n"
        )
        self.nodes: dict[str, NodeProcess] = {}

    def node(self, i: int, start: bool = True) -> NodeProcess:
        nid = f"n{i}"
        n = NodeProcess(
            ["--config", str(self.config), "--node-id", nid, "--address", f"192.0.2.{i + 1}"],
            name=f"{nid}-{len(self.nodes)}",
            workdir=self.tmp,
        )
        self.nodes[n.name] = n
        return n.start() if start else n

    def live(self) -> list[NodeProcess]:
        return [n for n in self.nodes.values() if n.proc and n.proc.poll() is None]

    def list_claims(self) -> list[dict[str, Any]]:
        return idstore_list(self.config)

    def view(self, n: NodeProcess) -> dict[str, set[str]]:
        return {
            f"worker{s}.tf.local": addresses_of(n.port, f"worker{s}.tf.local") for s in range(LIMIT)
        }

    def close(self) -> None:
        for n in self.nodes.values():
            n.__exit__()


@pytest.fixture(params=["etcd", "zookeeper"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    server = request.getfixturevalue("etcd_server" if request.param == "etcd" else "zk_server")
    c = Cluster(server, request.param, tmp_path)
    yield c
    c.close()


def start_all(c: Cluster, count: int) -> list[NodeProcess]:
    nodes = [c.node(i) for i in range(count)]
    for n in nodes:
        n.wait_claimed(60)
    return nodes


def slot_of(n: NodeProcess) -> int:
    line = n.wait_claimed()
    return int(line.split("claimed slot ", 1)[1].split()[0])


def test_eight_nodes_at_once_each_name_is_one_distinct_node(cluster: Cluster) -> None:
    nodes = start_all(cluster, LIMIT)
    assert sorted(slot_of(n) for n in nodes) == list(range(LIMIT))
    expected = {f"worker{slot_of(n)}.tf.local": {f"192.0.2.{i + 1}"} for i, n in enumerate(nodes)}
    for n in nodes:
        wait_for(lambda n=n: cluster.view(n) == expected, 15, f"{n.name}'s DNS view")
    claims = cluster.list_claims()
    assert sorted(c["node_id"] for c in claims) == sorted(f"n{i}" for i in range(LIMIT))


def test_killed_node_frees_its_name_and_a_new_node_takes_that_slot(cluster: Cluster) -> None:
    nodes = start_all(cluster, 3)
    victim = nodes[1]
    victim_slot = slot_of(victim)
    name = f"worker{victim_slot}.tf.local"
    others = [nodes[0], nodes[2]]
    for n in others:
        wait_for(lambda n=n: addresses_of(n.port, name) == {"192.0.2.2"}, 10, "name resolves")
    victim.kill()
    t0 = time.monotonic()
    for n in others:
        wait_for(lambda n=n: addresses_of(n.port, name) == set(), TTL + 2 + 5, f"{name} gone")
    gone = time.monotonic() - t0
    print(f"\n[{cluster.backend}] name gone after kill -9: {gone:.2f}s (ttl {TTL}s)")
    newcomer = cluster.node(7)
    assert slot_of(newcomer) == victim_slot
    wait_for(lambda: addresses_of(nodes[0].port, name) == {"192.0.2.8"}, 10, "newcomer's name")


def test_sigterm_removes_the_name_at_once(cluster: Cluster) -> None:
    nodes = start_all(cluster, 2)
    name = f"worker{slot_of(nodes[1])}.tf.local"
    wait_for(lambda: addresses_of(nodes[0].port, name) == {"192.0.2.2"}, 10, "name resolves")
    t0 = time.monotonic()
    assert nodes[1].stop(signal.SIGTERM) == 0
    took = wait_for(lambda: addresses_of(nodes[0].port, name) == set(), 5, "name gone", 0.02)
    print(
        f"\n[{cluster.backend}] name gone after SIGTERM: {took:.2f}s "
        f"(incl. exit: {time.monotonic() - t0:.2f}s)"
    )
    assert took < 5


def test_restart_with_same_node_id_gets_the_same_slot(cluster: Cluster) -> None:
    nodes = start_all(cluster, 3)
    slot = slot_of(nodes[2])
    nodes[2].kill()
    again = cluster.node(2)  # same --node-id n2, well within the TTL
    assert slot_of(again) == slot


def test_ninth_node_waits_then_takes_the_first_freed_slot(cluster: Cluster) -> None:
    nodes = start_all(cluster, LIMIT)
    extra = cluster.node(8)
    wait_for(lambda: "is full" in extra.log(), 20, "the 9th node to say the pool is full")
    assert "claimed slot" not in extra.log()
    freed = slot_of(nodes[5])
    assert nodes[5].stop(signal.SIGTERM) == 0
    assert slot_of(extra) == freed


class Sampler:
    """Every 100 ms: does any name resolve to two different nodes across the cluster?"""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.samples = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with ThreadPoolExecutor(8) as pool:
            while not self._stop.is_set():
                views = list(pool.map(self.cluster.view, self.cluster.live()))
                for s in range(LIMIT):
                    name = f"worker{s}.tf.local"
                    seen = set().union(*(v[name] for v in views)) if views else set()
                    if len(seen) > 1:
                        self.violations.append(f"{name} -> {sorted(seen)}")
                self.samples += 1
                self._stop.wait(0.1)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_store_outage_of_three_ttls(cluster: Cluster) -> None:
    nodes = start_all(cluster, 4)
    expected = {f"worker{slot_of(n)}.tf.local": {f"192.0.2.{i + 1}"} for i, n in enumerate(nodes)}
    expected.update({f"worker{s}.tf.local": set() for s in range(4, LIMIT)})
    for n in nodes:
        wait_for(lambda n=n: cluster.view(n) == expected, 15, "views before the outage")
    with Sampler(cluster) as sampler:
        cluster.server.kill()
        time.sleep(3 * TTL)
        # Serve-stale: the last known view is still answered while the store is down.
        stale_views = [cluster.view(n) for n in nodes]
        cluster.server.start()
        t0 = time.monotonic()

        def settled() -> bool:
            claims = cluster.list_claims()
            ids = sorted(c["node_id"] for c in claims)
            return ids == [f"n{i}" for i in range(4)] and all(
                cluster.view(n) == expected for n in nodes
            )

        wait_for(settled, 60, "every node back with exactly one slot and converged views", 0.5)
        recovered = time.monotonic() - t0
    print(
        f"\n[{cluster.backend}] outage {3 * TTL:.0f}s: recovered {recovered:.2f}s after the "
        f"store restarted; {sampler.samples} samples, {len(sampler.violations)} violations"
    )
    assert sampler.violations == []
    assert sampler.samples > 10
    for v in stale_views:
        assert v == expected, "a node stopped answering its last known view during the outage"
    for n in nodes:
        assert "Traceback" not in n.log()
