"""Integration fixtures: replicated stores (a 3-member etcd cluster, a 3-server ZooKeeper
ensemble), started once per test session on loopback and shared by every test that asks.

A test may kill or stop members; ``replicated`` brings every member back before the next
test gets the store. Figures reported through ``tests.harness.replicated.report`` are
printed in pytest's terminal summary at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import replicated as rep
from tests.harness.etcd_server import EtcdCluster
from tests.harness.zk_server import ZooKeeperEnsemble

# Elections sized for the tests' 3 s TTL, as the ZooKeeper harness sizes its ticks: a
# session survives a leader's loss only if a new leader is known before the lease's local
# deadline, at worst 2/3 of the TTL after the kill (renewals every TTL/3). etcd's default
# election timeout (1 s, randomised up to 2 s before a follower campaigns) measured
# elections of ~1.5-2.1 s on this machine: at ttl 3 some nodes then went (safely) LOST.
ETCD_ELECTION = ("--heartbeat-interval=50", "--election-timeout=500")


@pytest.fixture(scope="session")
def etcd_cluster3() -> Iterator[EtcdCluster]:
    """Three etcd members (distinct client and peer ports, temporary data dirs)."""
    with EtcdCluster(size=3, extra_args=ETCD_ELECTION) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def zk_ensemble3() -> Iterator[ZooKeeperEnsemble]:
    """Three ZooKeeper servers (distinct client, peer and election ports, temp dirs)."""
    with ZooKeeperEnsemble(size=3) as ensemble:
        yield ensemble


@pytest.fixture(params=["etcd", "zookeeper"])
def replicated(request: pytest.FixtureRequest) -> rep.ReplicatedStore:
    """The 3-member store of each backend, every member running."""
    backend = str(request.param)
    server = request.getfixturevalue("etcd_cluster3" if backend == "etcd" else "zk_ensemble3")
    store = rep.ReplicatedStore(backend, server)
    store.ensure_all_running()
    return store


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if rep.SUMMARY:
        terminalreporter.section("replicated stores: measured figures")
        for line in rep.SUMMARY:
            terminalreporter.write_line(line)
