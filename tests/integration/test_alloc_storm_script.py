"""benchmarks/alloc_storm.py keeps its contract: its flags and its JSON output keys.

A small storm (20 nodes in 2 worker processes) against the real stores, with idetcd's
baseline in the same invocation: the output is three JSON lines, the idstore run is dense
and unique with the exact request counts of the storm test, and the last line carries
the speedup. Counts only; the timings are the benchmark's business.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "backend",
    "algorithm",
    "nodes",
    "wall_s",
    "store_ops_total",
    "ops_per_node_mean",
    "ops_per_node_max",
    "duplicates",
    "dense",
}
NODES = 20


def run_storm(backend: str, endpoints: tuple[str, ...], *extra: str) -> list[dict[str, Any]]:
    cmd = [sys.executable, "benchmarks/alloc_storm.py", "--backend", backend]
    cmd += ["--nodes", str(NODES), "--procs", "2", "--endpoints", *endpoints, *extra]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["etcd", "zookeeper"])
def test_alloc_storm_prints_its_figures(backend: str, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("etcd_server" if backend == "etcd" else "zk_server")
    ours, baseline, speedup = run_storm(backend, tuple(server.endpoints))
    for line in (ours, baseline):
        assert set(line) >= KEYS, f"missing keys: {KEYS - set(line)}"
        assert line["backend"] == backend and line["nodes"] == NODES
    assert ours["algorithm"] == "idstore" and baseline["algorithm"] == "idetcd"
    assert ours["dense"] is True and ours["duplicates"] == 0
    if backend == "etcd":
        assert ours["store_ops_total"] == 3 * NODES
    else:  # 4 each; + 3 for a tree maker or a node that met the new pool missing
        assert ours["ops_per_node_mean"] >= 4 and ours["ops_per_node_max"] <= 11
    if backend == "etcd":  # idetcd's get-then-put: nodes that start together share IDs
        assert baseline["duplicates"] > 0 or baseline["store_ops_total"] > 3 * NODES
    else:  # ZooKeeper refuses a second create: unique, but every node probes past the taken
        assert baseline["duplicates"] == 0
        assert baseline["store_ops_total"] >= NODES * (NODES + 1) // 2
    assert set(speedup) == {"backend", "nodes", "speedup", "baseline_extrapolated"}
    assert speedup["baseline_extrapolated"] is False


@pytest.mark.timeout(120)
def test_alloc_storm_no_baseline(etcd_server: Any) -> None:
    lines = run_storm("etcd", tuple(etcd_server.endpoints), "--no-baseline")
    assert [line["algorithm"] for line in lines] == ["idstore"]
