"""A process displaced by a duplicate identity is reported by ``wait`` (and ``whoami``)
with its own exit status, which the systemd unit does not restart on."""

from __future__ import annotations

from pathlib import Path

from idstore.cli.cluster import _wait_loop
from idstore.cli.common import EXIT_DUPLICATE, EXIT_FAIL, EXIT_OK, EXIT_USAGE
from idstore.launch import Snapshot

ROOT = Path(__file__).resolve().parents[2]


def test_the_duplicate_status_is_its_own_and_the_unit_does_not_restart_on_it() -> None:
    assert EXIT_DUPLICATE not in (EXIT_OK, EXIT_FAIL, EXIT_USAGE)
    unit = (ROOT / "contrib/systemd/idstore.service").read_text()
    assert f"\nRestartPreventExitStatus={EXIT_DUPLICATE}\n" in unit


def test_wait_stops_at_once_when_the_local_server_was_displaced() -> None:
    reads = iter(
        [Snapshot("n", {"worker": []}, state="waiting"), Snapshot("n", {}, state="duplicate")]
    )
    assert _wait_loop(lambda: next(reads), "worker", 3, None, None) == EXIT_DUPLICATE


def test_wait_still_returns_ok_once_the_pool_is_full() -> None:
    snap = Snapshot("n", {"worker": [object(), object()]}, state="held")  # type: ignore[list-item]
    assert _wait_loop(lambda: snap, "worker", 2, None, None) == EXIT_OK
