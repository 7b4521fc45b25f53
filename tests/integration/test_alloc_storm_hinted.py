"""``benchmarks/alloc_storm.py --hinted``: every node with its own slot hint claims that
slot directly. Request counts only (a node opens its session, then sends one claim):
exactly 2 per node on etcd, and on ZooKeeper once the pool's tree exists."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_alloc_storm_script import NODES, run_storm


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["etcd", "zookeeper"])
def test_hinted_storm_costs_two_requests_per_node(
    backend: str, request: pytest.FixtureRequest
) -> None:
    server: Any = request.getfixturevalue("etcd_server" if backend == "etcd" else "zk_server")
    (line,) = run_storm(backend, tuple(server.endpoints), "--hinted", "--existing-pool")
    assert line["algorithm"] == "idstore-hinted" and line["nodes"] == NODES
    assert line["dense"] is True and line["duplicates"] == 0
    assert line["on_hinted_slot"] == NODES  # node i holds slot first + i
    assert line["store_ops_total"] == 2 * NODES
