"""The chaos soak's short variant, on both backends: ``benchmarks/chaos.py`` with a fixed
seed for a bounded time (3-member store on its own namespace hosts, four idstore nodes,
one fault at a time). Fails on any violation its independent checker finds; the JSON
summary goes into the run's closing report.

``SEEDS`` also holds every seed that once found a bug (a regression test each).
"""

from __future__ import annotations

import json

import pytest

from benchmarks import chaos
from tests.faults.conftest import report

pytestmark = pytest.mark.faults

DURATION = 60.0  # seconds of faults per backend and seed: ~75 s each with set-up
# 20261130: the short variant's own seed.
SEEDS = [20261130]


@pytest.mark.parametrize("seed", SEEDS)
def test_chaos_soak_finds_no_violation(backend: str, seed: int) -> None:
    summary = chaos.run(backend, seed, DURATION)
    kinds = sorted({f["kind"] for f in summary["faults"]})
    report(
        backend,
        "chaos",
        f"seed {seed}, {DURATION:.0f}s, {len(summary['faults'])} faults ({', '.join(kinds)}); "
        f"converged after each in p50 {summary['converge_s']['p50']}s, max "
        f"{summary['converge_s']['max']}s; {summary['samples']} samples; violations "
        f"{summary['violations']}",
    )
    assert summary["faults"], "the soak injected no fault"
    assert summary["samples"] > 100, "the checker hardly ran"
    assert summary["violations_total"] == 0, json.dumps(summary["examples"], indent=1)
